//! Manifests built to amplify (YAML aliases, size) are refused with an error naming the limit.

use pod_spec::limits::{LimitError, MAX_EXPANDED_BYTES, MAX_MANIFEST_BYTES};
use pod_spec::load::{load_path, load_str, LoadError};

/// The shape of the CVE-2019-11253 payload, as a Pod: 9^9 strings once expanded, in 1 KB.
fn bomb() -> String {
    let mut text = String::from("apiVersion: v1\nkind: Pod\nmetadata:\n  name: lol\n  labels:\n");
    text.push_str(
        "    a0: &a0 [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    for i in 1..9 {
        let refs = vec![format!("*a{}", i - 1); 9].join(",");
        text.push_str(&format!("    a{i}: &a{i} [{refs}]\n"));
    }
    text.push_str("spec:\n  containers:\n  - name: c\n    image: busybox\n");
    text
}

#[test]
fn alias_bomb_is_refused_with_the_bound() {
    let text = bomb();
    assert!(text.len() <= 1024, "{}", text.len());
    let err = load_str("manifest.yaml", &text).unwrap_err();
    assert!(
        matches!(
            &err,
            LoadError::Limit {
                error: LimitError::Expanded {
                    max: MAX_EXPANDED_BYTES
                },
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!(
            "manifest.yaml: YAML expands past {MAX_EXPANDED_BYTES} bytes in memory \
             (aliases counted at their expanded size)"
        )
    );
}

#[test]
fn legitimate_anchors_still_load() {
    let text = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers:\n  \
                - name: a\n    image: busybox\n    env: &env\n    - name: X\n      value: \"1\"\n  \
                - name: b\n    image: busybox\n    env: *env\n";
    let docs = load_str("p.yaml", text).unwrap();
    let pod = docs[0].outcome.as_ref().unwrap();
    assert_eq!(pod.spec.containers[1].env, pod.spec.containers[0].env);
}

#[test]
fn oversized_file_is_refused_without_reading_it_all() {
    let dir = std::env::temp_dir().join(format!("pod-spec-limits-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("big.yaml");
    std::fs::write(&f, "#".repeat(MAX_MANIFEST_BYTES + 1)).unwrap();
    let err = load_path(&f).unwrap_err();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(
        err.to_string(),
        format!(
            "{}: manifest is larger than {MAX_MANIFEST_BYTES} bytes",
            f.display()
        )
    );
}
