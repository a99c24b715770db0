//! Host-mode integration tests of the OOM policy: the agent runs at `oom_score_adj` -1000 and
//! every container and exec process at the kubelet's value for the pod's QoS class (as root,
//! with a busybox root filesystem).

mod common;

use std::time::Duration;

use agent_protocol::*;
use common::*;

const T: Duration = Duration::from_secs(20);
const MIB: u64 = 1 << 20;
/// `CAP_SYS_RESOURCE` (linux/capability.h).
const CAP_SYS_RESOURCE: u32 = 24;
const PRINT_SCORE: &str = "echo score=$(cat /proc/self/oom_score_adj)";

/// `MemTotal` in bytes (the sandbox sees the host's memory).
fn mem_total() -> u64 {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap();
    let kb: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    kb * 1024
}

/// The kubelet's Burstable formula, written out independently of the agent's code.
fn burstable(request: u64) -> i64 {
    let v = 1000 - (1000 * request / mem_total()) as i64;
    v.clamp(3, 999)
}

/// Whether this process may lower `oom_score_adj` (`CAP_SYS_RESOURCE`, bit 24). Some CI
/// containers run root without it: then the agent keeps the score it inherited from the test
/// and a container that should score lower keeps that one (the guest's PID 1 has every
/// capability).
fn may_lower() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
        .unwrap();
    eff & (1 << CAP_SYS_RESOURCE) != 0
}

/// The agent's score: -1000, or without `CAP_SYS_RESOURCE` the one it inherited from us.
fn agent_score() -> i64 {
    if may_lower() {
        -1000
    } else {
        score_of(std::process::id())
    }
}

fn score_of(pid: u32) -> i64 {
    std::fs::read_to_string(format!("/proc/{pid}/oom_score_adj"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

fn exec_score(a: &Agent, container: &str) -> i64 {
    let (out, err, code) = a.exec(container, &["cat", "/proc/self/oom_score_adj"]);
    assert_eq!(code, 0, "{err}");
    out.trim().parse().unwrap()
}

fn resources(cpu: Option<u64>, mem: Option<u64>, mem_request: Option<u64>) -> Resources {
    Resources {
        cpu_millis: cpu,
        memory_bytes: mem,
        memory_request_bytes: mem_request,
        ..Resources::default()
    }
}

#[test]
fn agent_is_shielded_and_burstable_containers_follow_their_request() {
    let a = Agent::start();
    let agent = a.sandbox_pid().expect("sandbox pid 1");
    assert_eq!(score_of(agent as u32), agent_score(), "the agent");
    assert_eq!(
        score_of(a.child.id()),
        agent_score(),
        "the sandbox's waiting parent"
    );

    let mut app = a.container("app", &format!("{PRINT_SCORE}; exec sleep 1000"));
    // A limit only: the request defaults to it.
    app.resources = resources(None, Some(256 * MIB), None);
    let mut side = a.container("side", &format!("{PRINT_SCORE}; exec sleep 1000"));
    // No request at all in a Burstable pod: 999, below BestEffort.
    side.resources = Resources::default();
    let mut init = a.container("init", PRINT_SCORE);
    init.resources = resources(None, Some(64 * MIB), Some(32 * MIB));
    let mut p = pod("burstable", vec![app, side]);
    p.init_containers = vec![init];
    a.control().create_pod(&p).unwrap();
    a.wait_status("running", T, |s| running(s, "app") && running(s, "side"));

    let want_app = burstable(256 * MIB);
    assert!(
        (3..=999).contains(&want_app),
        "Burstable is never the agent's or BestEffort's score"
    );
    assert!(a
        .wait_log("init", "score=")
        .contains(&format!("score={}\n", burstable(32 * MIB))));
    assert!(a
        .wait_log("app", "score=")
        .contains(&format!("score={want_app}\n")));
    assert!(a.wait_log("side", "score=").contains("score=999\n"));
    assert_eq!(
        exec_score(&a, "app"),
        want_app,
        "exec gets the container's score"
    );
    assert_eq!(exec_score(&a, "side"), 999);
    // The agent keeps its score after starting children.
    assert_eq!(score_of(agent as u32), agent_score());
}

#[test]
fn guaranteed_and_best_effort_pods() {
    // Without CAP_SYS_RESOURCE a Guaranteed container keeps the agent's higher score.
    let guaranteed = if may_lower() {
        -997
    } else {
        agent_score().max(-997)
    };
    for (name, res, want) in [
        (
            "guaranteed",
            resources(Some(500), Some(64 * MIB), Some(64 * MIB)),
            guaranteed,
        ),
        ("besteffort", Resources::default(), 1000),
    ] {
        let a = Agent::start();
        let mut c = a.container("c", &format!("{PRINT_SCORE}; exec sleep 1000"));
        c.resources = res;
        a.control().create_pod(&pod(name, vec![c])).unwrap();
        a.wait_status("running", T, |s| running(s, "c"));
        assert!(
            a.wait_log("c", "score=")
                .contains(&format!("score={want}\n")),
            "{name}"
        );
        assert_eq!(exec_score(&a, "c"), want, "{name} exec");
    }
}
