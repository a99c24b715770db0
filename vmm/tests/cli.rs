//! End-to-end checks of the `peapod-vmm` binary that need no bootable guest: argument errors,
//! help text, and the refusal of an unusable host within a second.

use std::process::Command;
use std::time::{Duration, Instant};

fn vmm() -> Command {
    Command::new(env!("CARGO_BIN_EXE_peapod-vmm"))
}

#[test]
fn help_documents_exit_statuses() {
    let out = vmm().arg("--help").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    for line in [
        "130  stopped by SIGINT",
        "143  stopped by SIGTERM",
        "PEAPOD_VMM_TIMING",
    ] {
        assert!(text.contains(line), "--help lacks {line:?}");
    }
}

#[test]
fn bad_arguments_are_a_setup_error() {
    for args in [
        &[][..],
        &["--kernel", "k", "--vcpus", "0"],
        &["--kernel", "k", "--nope"],
    ] {
        let out = vmm().args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(!out.stderr.is_empty());
    }
}

#[test]
fn an_unbootable_setup_ends_within_a_second() {
    // On a PVM host (like the development machines) this is the PVM refusal (status 2); with
    // no usable /dev/kvm it is status 2 too; on a real KVM host the missing kernel is a setup
    // error (status 1). It must never hang.
    let started = Instant::now();
    let out = vmm()
        .args(["--kernel", "/nonexistent/vmlinux"])
        .output()
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    match out.status.code() {
        Some(2) => assert!(stderr.contains("tests/kvm-host/run.sh"), "{stderr}"),
        Some(1) => assert!(stderr.contains("/nonexistent/vmlinux"), "{stderr}"),
        other => panic!("unexpected status {other:?}: {stderr}"),
    }
    if vmm::host_check::is_pvm(std::path::Path::new("/sys")) {
        assert_eq!(out.status.code(), Some(2));
        assert!(stderr.contains("PVM"), "{stderr}");
    }
}
