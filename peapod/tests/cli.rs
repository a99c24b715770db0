//! CLI tests for `validate`, `apply --dry-run` and `explain`: exit codes, stdin, directories.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

fn peapod(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_peapod"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        // A command that does not read stdin may exit before the write: a closed pipe is fine.
        if let Err(e) = input.write_all(text.as_bytes()) {
            assert_eq!(
                e.kind(),
                std::io::ErrorKind::BrokenPipe,
                "writing stdin: {e}"
            );
        }
    }
    drop(input);
    child.wait_with_output().unwrap()
}

fn testdata(rel: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../pod-spec/tests")
        .join(rel)
        .display()
        .to_string()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

const VALID: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  containers:\n  - name: web\n    image: nginx:1.25\n";
const INVALID: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: Web\nspec:\n  restartPolicy: Sometimes\n  containers:\n  - name: web\n";

#[test]
fn validate_a_valid_file_prints_the_normalised_pod() {
    let out = peapod(
        &["validate", "-f", &testdata("examples/busy-pod.yaml")],
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.starts_with(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: busy-pod\n  namespace: default\n"
        ),
        "{stdout}"
    );
    assert!(stdout.contains("restartPolicy: Always"));
    assert!(stdout.contains("terminationGracePeriodSeconds: 30"));
}

#[test]
fn validate_an_invalid_file_lists_every_error_and_exits_1() {
    let out = peapod(
        &[
            "validate",
            "-f",
            &testdata("invalid/22-port-out-of-range.yaml"),
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let want = std::fs::read_to_string(testdata("invalid/22-port-out-of-range.out")).unwrap();
    let want = want.replace(
        "(22-port-out-of-range.yaml",
        &format!("({}", testdata("invalid/22-port-out-of-range.yaml")),
    );
    assert_eq!(text(&out.stderr), want);
}

#[test]
fn stdin_with_dash() {
    let out = peapod(&["validate", "-f", "-"], Some(VALID));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("imagePullPolicy: IfNotPresent"));

    let out = peapod(&["apply", "--dry-run", "-f", "-"], Some(INVALID));
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "The Pod \"Web\" is invalid:\n\
         * metadata.name: Invalid value: \"Web\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*') (<stdin>:4)\n\
         * spec.containers[0].image: Required value (<stdin>:8)\n\
         * spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"OnFailure\", \"Never\" (<stdin>:6)\n"
    );
}

#[test]
fn directories_and_several_files() {
    let out = peapod(
        &[
            "validate",
            "-f",
            &testdata("examples"),
            "-f",
            &testdata("valid"),
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.starts_with("apiVersion: v1\nkind: List\nitems:\n"),
        "{stdout}"
    );
    assert!(stdout.contains("name: twocontainers") && stdout.contains("name: listed-b"));

    let out = peapod(&["validate", "-f", &testdata("invalid")], None);
    assert_eq!(out.status.code(), Some(1));
    // A file with a syntax error is reported and the other files are still checked.
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("The Pod \"no-image\" is invalid:"),
        "{stderr}"
    );
    assert!(
        stderr.contains("43-syntax-error.yaml:9: while parsing a flow sequence"),
        "{stderr}"
    );
    assert!(
        stderr.contains("The Pod \"json-pod\" is invalid:"),
        "{stderr}"
    );
    // Valid documents among them are still printed.
    assert!(text(&out.stdout).contains("name: first-ok"));
}

#[test]
fn apply_dry_run_json_and_plain_apply() {
    let out = peapod(
        &["apply", "--dry-run=client", "-o", "json", "-f", "-"],
        Some(VALID),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["metadata"]["namespace"], "default");
    assert_eq!(
        v["spec"]["containers"][0]["imagePullPolicy"],
        "IfNotPresent"
    );

    let out = peapod(&["apply", "-f", "-"], Some(VALID));
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("not implemented yet"));
}

#[test]
fn warnings_go_to_stderr_and_do_not_fail() {
    let with_status = format!("{VALID}status:\n  phase: Running\n");
    let out = peapod(&["validate", "-f", "-"], Some(&with_status));
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        text(&out.stderr),
        "Warning: <stdin>:9: status: ignored: informational field\n"
    );
    assert!(!text(&out.stdout).contains("status"));
}

#[test]
fn unreadable_input_exits_1() {
    let out = peapod(&["validate", "-f", "/nonexistent/pod.yaml"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).starts_with("error: cannot read /nonexistent/pod.yaml"));
    let out = peapod(&["validate", "-f", "-"], Some("a: [1\n"));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).starts_with("error: <stdin>:"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn explain_paths() {
    let out = peapod(&["explain", "pod.spec.containers"], None);
    assert_eq!(out.status.code(), Some(0));
    let want = std::fs::read_to_string(testdata("explain/pod.spec.containers.txt")).unwrap();
    assert_eq!(text(&out.stdout), want);
    let out = peapod(&["explain", "pod.spec.containers.livenessProbe"], None);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "error: field \"livenessProbe\" exists in Kubernetes but is not supported by peapod\n"
    );
}
