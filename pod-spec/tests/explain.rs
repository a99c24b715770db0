//! `peapod explain` output for several paths, compared with `tests/explain/*.txt` (set
//! `PEAPOD_BLESS=1` to rewrite them after a deliberate change).

use std::path::Path;

use pod_spec::explain::{explain, ExplainError};
use pod_spec::schema::Schema;

fn golden(path: &str, recursive: bool, file: &str) {
    let got = explain(&Schema::new(), path, recursive).unwrap();
    let f = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/explain")
        .join(file);
    if std::env::var_os("PEAPOD_BLESS").is_some() {
        std::fs::write(&f, &got).unwrap();
        return;
    }
    assert_eq!(got, std::fs::read_to_string(&f).unwrap(), "explain {path}");
}

#[test]
fn explain_containers() {
    golden("pod.spec.containers", false, "pod.spec.containers.txt");
}

#[test]
fn explain_host_path() {
    golden(
        "pod.spec.volumes.hostPath",
        false,
        "pod.spec.volumes.hostPath.txt",
    );
}

#[test]
fn explain_restart_policy() {
    golden(
        "pods.spec.restartPolicy",
        false,
        "pod.spec.restartPolicy.txt",
    );
}

#[test]
fn explain_pod_recursive() {
    golden("pod", true, "pod.recursive.txt");
}

#[test]
fn explain_lists_every_model_field() {
    // The output is generated from the model: every field of every type shows up.
    let schema = Schema::new();
    let all = explain(&schema, "pod", true).unwrap();
    for t in schema.objects() {
        for f in &t.fields {
            assert!(
                all.contains(&format!("{}\t<", f.name)),
                "{}.{}",
                t.name,
                f.name
            );
        }
    }
}

#[test]
fn explain_errors_name_the_field() {
    let s = Schema::new();
    assert_eq!(
        explain(&s, "pod.spec.containers.livenessProbe", false),
        Err(ExplainError::Unsupported {
            field: "livenessProbe".into()
        })
    );
    assert_eq!(
        explain(&s, "pod.spec.nodeName", false),
        Err(ExplainError::Informational {
            field: "nodeName".into()
        })
    );
    assert_eq!(
        explain(&s, "pod.spec.bogus", false),
        Err(ExplainError::NoSuchField {
            field: "bogus".into()
        })
    );
    assert_eq!(
        explain(&s, "pod.spec.restartPolicy.x", false),
        Err(ExplainError::NotAnObject {
            field: "restartPolicy".into()
        })
    );
    assert_eq!(
        explain(&s, "deployment", false),
        Err(ExplainError::UnknownResource("deployment".into()))
    );
}
