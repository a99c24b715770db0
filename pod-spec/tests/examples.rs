//! Every example pod validates (copies of ../shared/examples, kept in the repository because CI
//! clones only the repository), and the normalised output round-trips through YAML.

use std::path::{Path, PathBuf};

use pod_spec::load::{load_path, load_str};
use pod_spec::output::{to_json, to_yaml};

fn dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(name)
}

fn yaml_files(d: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    v.sort();
    v
}

#[test]
fn every_example_validates() {
    let files = yaml_files(&dir("examples"));
    assert!(files.len() >= 7, "examples missing: {files:?}");
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let name = f.file_name().unwrap().to_str().unwrap();
        let docs = load_str(name, &text).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(docs.len(), 1, "{name}");
        for d in &docs {
            assert!(d.outcome.is_ok(), "{name}:\n{}", d.render_errors());
            assert!(d.warnings.is_empty(), "{name}: {:?}", d.warnings);
        }
    }
}

#[test]
fn copies_match_the_shared_examples_when_present() {
    let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/examples");
    if !shared.is_dir() {
        return; // CI: only the repository copies exist.
    }
    for f in yaml_files(&shared) {
        let copy = dir("examples").join(f.file_name().unwrap());
        assert_eq!(
            std::fs::read_to_string(&f).unwrap(),
            std::fs::read_to_string(&copy).unwrap_or_default(),
            "{} changed: refresh pod-spec/tests/examples",
            f.display()
        );
    }
}

#[test]
fn normalised_pods_round_trip_through_yaml_and_json() {
    let mut files = yaml_files(&dir("examples"));
    files.push(dir("valid").join("everything.yaml"));
    for f in files {
        let docs = load_path(&f).unwrap();
        let pods: Vec<_> = docs.into_iter().map(|d| d.outcome.unwrap()).collect();
        let yaml = to_yaml(&pods).unwrap();
        let again: Vec<_> = load_str("again.yaml", &yaml)
            .unwrap()
            .into_iter()
            .map(|d| d.outcome.unwrap_or_else(|e| panic!("{yaml}\n{e:?}")))
            .collect();
        assert_eq!(pods, again, "{} through YAML:\n{yaml}", f.display());
        // Defaulting is idempotent: the output prints the same again.
        assert_eq!(yaml, to_yaml(&again).unwrap());
        let json = to_json(&pods).unwrap();
        let from_json: Vec<_> = load_str("again.json", &json)
            .unwrap()
            .into_iter()
            .map(|d| d.outcome.unwrap())
            .collect();
        assert_eq!(pods, from_json, "{} through JSON", f.display());
    }
}

#[test]
fn kubectl_get_output_loads_with_warnings() {
    let docs = load_path(&dir("valid").join("kubectl-get-output.yaml")).unwrap();
    assert!(docs[0].outcome.is_ok(), "{}", docs[0].render_errors());
    let warned: Vec<&str> = docs[0].warnings.iter().map(|w| w.path.as_str()).collect();
    assert_eq!(
        warned,
        [
            "metadata.creationTimestamp",
            "metadata.resourceVersion",
            "metadata.managedFields",
            "spec.containers[0].terminationMessagePath",
            "spec.containers[0].terminationMessagePolicy",
            "spec.dnsPolicy",
            "spec.enableServiceLinks",
            "spec.nodeName",
            "spec.preemptionPolicy",
            "spec.priority",
            "spec.schedulerName",
            "spec.securityContext",
            "spec.serviceAccount",
            "spec.serviceAccountName",
            "spec.tolerations",
            "status",
        ]
    );
    let pod = docs[0].outcome.as_ref().unwrap();
    assert_eq!(
        pod.metadata.uid.as_deref(),
        Some("6f1c2f52-4c7d-4b3c-9d59-2a2b8f0a1e11")
    );
    // `resources: {}` is kept as an empty object.
    assert!(pod.spec.containers[0].resources.is_some());
}
