//! Property tests: quantity parsing against an independent exact computation, canonical
//! forms, rejection of malformed strings, and `$(VAR)` expansion through load + plan.

use std::collections::BTreeMap;

use pod_spec::load::load_str;
use pod_spec::plan::{plan_pod, ImageConfigView};
use pod_spec::quantity::Quantity;
use proptest::prelude::*;

/// (suffix, numerator, denominator, binary) of every suffix Kubernetes accepts.
const SUFFIXES: &[(&str, u128, u128, bool)] = &[
    ("n", 1, 1_000_000_000, false),
    ("u", 1, 1_000_000, false),
    ("m", 1, 1_000, false),
    ("", 1, 1, false),
    ("k", 1_000, 1, false),
    ("M", 1_000_000, 1, false),
    ("G", 1_000_000_000, 1, false),
    ("T", 1_000_000_000_000, 1, false),
    ("P", 1_000_000_000_000_000, 1, false),
    ("E", 1_000_000_000_000_000_000, 1, false),
    ("Ki", 1 << 10, 1, true),
    ("Mi", 1 << 20, 1, true),
    ("Gi", 1 << 30, 1, true),
    ("Ti", 1 << 40, 1, true),
    ("Pi", 1 << 50, 1, true),
    ("Ei", 1 << 60, 1, true),
];

fn expected_nanos(int: u64, frac: &str, suffix: usize, negative: bool) -> i128 {
    let (_, num, den, binary) = SUFFIXES[suffix];
    let scale = 10u128.pow(frac.len() as u32);
    let mantissa = u128::from(int) * scale + frac.parse::<u128>().unwrap_or(0);
    // value = mantissa / scale * num / den; nanos rounded up (away from zero).
    let top = mantissa * num * 1_000_000_000;
    let bottom = scale * den;
    let mut nanos = top.div_ceil(bottom);
    if binary {
        nanos = nanos.min(i64::MAX as u128 * 1_000_000_000);
    }
    let nanos = nanos as i128;
    if negative {
        -nanos
    } else {
        nanos
    }
}

proptest! {
    #[test]
    fn parses_like_kubernetes(
        negative in any::<bool>(),
        int in 0u64..100_000,
        frac in "[0-9]{0,5}",
        suffix in 0usize..SUFFIXES.len(),
    ) {
        let sign = if negative { "-" } else { "" };
        let dot = if frac.is_empty() { String::new() } else { format!(".{frac}") };
        let text = format!("{sign}{int}{dot}{}", SUFFIXES[suffix].0);
        let q = Quantity::parse(&text).map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
        prop_assert_eq!(q.nanos(), expected_nanos(int, &frac, suffix, negative), "{}", text);
    }

    #[test]
    fn exponent_form_equals_decimal(m in 0u64..1_000_000, e in -9i32..=9) {
        let q = Quantity::parse(&format!("{m}e{e}")).unwrap();
        let upper = Quantity::parse(&format!("{m}E{e}")).unwrap();
        prop_assert_eq!(q, upper);
        prop_assert_eq!(q.nanos(), i128::from(m) * 10i128.pow((e + 9) as u32));
    }

    #[test]
    fn canonical_form_round_trips(
        int in 0u64..100_000,
        frac in "[0-9]{0,4}",
        suffix in 0usize..SUFFIXES.len(),
    ) {
        let dot = if frac.is_empty() { String::new() } else { format!(".{frac}") };
        let q = Quantity::parse(&format!("{int}{dot}{}", SUFFIXES[suffix].0)).unwrap();
        let canon = q.canonical();
        let again = Quantity::parse(&canon).unwrap();
        prop_assert_eq!(q, again, "{}", canon);
        prop_assert_eq!(again.canonical(), canon);
        // Value() and MilliValue() round up consistently.
        prop_assert_eq!(q.value(), (q.milli_value() + 999) / 1000);
    }

    #[test]
    fn foreign_characters_are_rejected(s in "[0-9]{1,3}[^0-9.+\\-eEinumkKMGTP][0-9a-zA-Z]{0,3}") {
        prop_assert!(Quantity::parse(&s).is_err(), "{} parsed", s);
    }

    #[test]
    fn env_expansion_through_the_plan(
        values in proptest::collection::vec("[a-zA-Z0-9 ,:/._-]{0,12}", 1..6),
        pick in any::<proptest::sample::Index>(),
        prefix in "[a-z]{0,4}",
    ) {
        let names: Vec<String> = (0..values.len()).map(|i| format!("VAR_{i}")).collect();
        let target = pick.index(values.len());
        let mut env: Vec<serde_json::Value> = names
            .iter()
            .zip(&values)
            .map(|(n, v)| serde_json::json!({"name": n, "value": v}))
            .collect();
        let r = &names[target];
        env.push(serde_json::json!({"name": "REF", "value": format!("{prefix}$({r})")}));
        env.push(serde_json::json!({"name": "ESC", "value": format!("$$({r})")}));
        env.push(serde_json::json!({"name": "FWD", "value": "$(LATER)"}));
        env.push(serde_json::json!({"name": "LATER", "value": "x"}));
        let pod = serde_json::json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            "spec": {"containers": [{
                "name": "c", "image": "img", "env": env,
                "command": ["echo", format!("$({r})"), format!("$$({r})")]
            }]}
        });
        let docs = load_str("p.json", &pod.to_string()).unwrap();
        let pod = docs[0].outcome.clone().unwrap();
        let images = BTreeMap::from([("img".to_string(), ImageConfigView::default())]);
        let plan = plan_pod(&pod, "u", &images).unwrap();
        let c = &plan.containers[0];
        let got: BTreeMap<&str, &str> = c.env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        for (n, v) in names.iter().zip(&values) {
            prop_assert_eq!(got[n.as_str()], v.as_str());
        }
        let expected_ref = format!("{prefix}{}", values[target]);
        let expected_esc = format!("$({r})");
        prop_assert_eq!(got["REF"], expected_ref.as_str());
        prop_assert_eq!(got["ESC"], expected_esc.as_str());
        prop_assert_eq!(got["FWD"], "$(LATER)");
        prop_assert_eq!(c.argv.clone(), vec!["echo".to_string(), values[target].clone(), expected_esc]);
    }
}
