//! Table-driven invalid manifests: each `tests/invalid/NAME.yaml` must produce exactly the
//! text in `tests/invalid/NAME.out` (warnings, then `The Pod "x" is invalid:` blocks, as
//! `peapod validate` prints them to stderr). Set `PEAPOD_BLESS=1` to rewrite the `.out` files
//! after a deliberate change, then review the diff.

use std::path::{Path, PathBuf};

use pod_spec::load::load_str;

fn render(name: &str, text: &str) -> String {
    match load_str(name, text) {
        Err(e) => format!("error: {e}\n"),
        Ok(docs) => {
            let mut out = String::new();
            for d in &docs {
                out.push_str(&d.render_warnings());
                out.push_str(&d.render_errors());
            }
            out
        }
    }
}

#[test]
fn invalid_manifests_report_exact_errors() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/invalid");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    cases.sort();
    assert!(cases.len() >= 40, "only {} invalid cases", cases.len());
    let bless = std::env::var_os("PEAPOD_BLESS").is_some();
    let mut failures = Vec::new();
    for case in &cases {
        let name = case.file_name().unwrap().to_str().unwrap();
        let text = std::fs::read_to_string(case).unwrap();
        let got = render(name, &text);
        assert!(
            got.contains("invalid") || got.starts_with("error:"),
            "{name} is valid:\n{got}"
        );
        let expected_path = case.with_extension("out");
        if bless {
            std::fs::write(&expected_path, &got).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&expected_path).unwrap_or_default();
        if got != want {
            failures.push(format!("--- {name}\nwant:\n{want}got:\n{got}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
