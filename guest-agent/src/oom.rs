//! The guest OOM killer's view of the pod: the agent shields itself (`oom_score_adj` -1000,
//! since PID 1 dying panics the guest kernel) and every container and exec process gets the
//! kubelet's QoS-based `oom_score_adj` (`pkg/kubelet/qos/policy.go`), set in the child before
//! execve so the agent's -1000 never reaches user code.

use std::path::Path;

use agent_protocol::Resources;

use crate::sys::{Sys, SysError};

/// The agent's own score: never chosen by the OOM killer.
pub const AGENT_OOM_SCORE_ADJ: i32 = -1000;
/// Guaranteed pods (kubelet's `guaranteedOOMScoreAdj`).
pub const GUARANTEED_OOM_SCORE_ADJ: i32 = -997;
/// BestEffort pods (kubelet's `besteffortOOMScoreAdj`): the first to go.
pub const BEST_EFFORT_OOM_SCORE_ADJ: i32 = 1000;
/// Lowest Burstable value: above what a Guaranteed container using all memory scores.
pub const BURSTABLE_MIN_OOM_SCORE_ADJ: i32 = 1000 + GUARANTEED_OOM_SCORE_ADJ;
/// Highest Burstable value: below BestEffort.
pub const BURSTABLE_MAX_OOM_SCORE_ADJ: i32 = BEST_EFFORT_OOM_SCORE_ADJ - 1;

/// The process's own `oom_score_adj`.
pub const OWN_OOM_SCORE_ADJ: &str = "/proc/self/oom_score_adj";

/// Errors applying a score.
#[derive(Debug, thiserror::Error)]
pub enum OomError {
    /// Writing `oom_score_adj` failed.
    #[error("set oom_score_adj {value}: {source}")]
    Write {
        /// The value.
        value: i32,
        /// Cause.
        source: SysError,
    },
    /// `/proc/meminfo` could not be read or parsed.
    #[error("guest memory size: {0}")]
    MemTotal(String),
}

/// A pod's Kubernetes quality-of-service class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QosClass {
    /// Every container has cpu and memory limits equal to its requests.
    Guaranteed,
    /// Neither Guaranteed nor BestEffort.
    Burstable,
    /// No container has any cpu or memory request or limit.
    BestEffort,
}

/// A quantity that counts for QoS: set and above zero (Kubernetes ignores zero quantities).
fn positive(v: Option<u64>) -> Option<u64> {
    v.filter(|n| *n > 0)
}

/// The pod's QoS class from every container's resources (init and app), as the kubelet's
/// `ComputePodQOS` (without pod-level resources, which the pod model does not have): requests
/// and limits of cpu and memory are summed over the containers; no quantity at all is
/// BestEffort; Guaranteed needs cpu and memory limits on every container and summed requests
/// equal to summed limits.
pub fn pod_qos<'a>(containers: impl IntoIterator<Item = &'a Resources>) -> QosClass {
    #[derive(Default)]
    struct Sum {
        cpu: Option<u64>,
        mem: Option<u64>,
    }
    fn add(to: &mut Option<u64>, v: Option<u64>) {
        if let Some(v) = positive(v) {
            *to = Some(to.unwrap_or(0).saturating_add(v));
        }
    }
    let (mut req, mut lim) = (Sum::default(), Sum::default());
    let mut all_limited = true;
    for r in containers {
        add(&mut req.cpu, r.effective_cpu_request());
        add(&mut req.mem, r.effective_memory_request());
        add(&mut lim.cpu, r.cpu_millis);
        add(&mut lim.mem, r.memory_bytes);
        if positive(r.cpu_millis).is_none() || positive(r.memory_bytes).is_none() {
            all_limited = false;
        }
    }
    let none = |s: &Sum| s.cpu.is_none() && s.mem.is_none();
    if none(&req) && none(&lim) {
        return QosClass::BestEffort;
    }
    // With limits on every container both limit sums are set; Kubernetes then wants every
    // request sum equal to its limit sum and as many request as limit resources.
    if all_limited && req.cpu == lim.cpu && req.mem == lim.mem {
        return QosClass::Guaranteed;
    }
    QosClass::Burstable
}

/// The kubelet's `oom_score_adj` for a container of a `qos` pod that requests
/// `memory_request` bytes on a machine with `memory_capacity` bytes (the guest's `MemTotal`):
/// Guaranteed -997, BestEffort 1000, Burstable `1000 - 1000 * request / capacity` kept within
/// [3, 999]. An unknown capacity (0) gives Burstable containers 999.
pub fn score_adj(qos: QosClass, memory_request: u64, memory_capacity: u64) -> i32 {
    match qos {
        QosClass::Guaranteed => GUARANTEED_OOM_SCORE_ADJ,
        QosClass::BestEffort => BEST_EFFORT_OOM_SCORE_ADJ,
        QosClass::Burstable => {
            if memory_capacity == 0 {
                return BURSTABLE_MAX_OOM_SCORE_ADJ;
            }
            let share = u128::from(memory_request) * 1000 / u128::from(memory_capacity);
            let adj = 1000 - i128::try_from(share).unwrap_or(i128::MAX);
            let adj = adj.clamp(
                i128::from(BURSTABLE_MIN_OOM_SCORE_ADJ),
                i128::from(BURSTABLE_MAX_OOM_SCORE_ADJ),
            );
            i32::try_from(adj).unwrap_or(BURSTABLE_MAX_OOM_SCORE_ADJ)
        }
    }
}

/// The score of one container (init or app) of a `qos` pod.
pub fn container_score_adj(qos: QosClass, res: &Resources, memory_capacity: u64) -> i32 {
    let request = positive(res.effective_memory_request()).unwrap_or(0);
    score_adj(qos, request, memory_capacity)
}

/// The guest's memory capacity: `MemTotal` of `/proc/meminfo`, in bytes.
pub fn mem_total(sys: &dyn Sys) -> Result<u64, OomError> {
    let text = sys
        .read_file(Path::new("/proc/meminfo"))
        .map_err(|e| OomError::MemTotal(e.to_string()))?;
    crate::guestinfo::parse_meminfo(&text)
        .map(|(total, _)| total)
        .map_err(|e| OomError::MemTotal(e.to_string()))
}

/// Sets the calling process's `oom_score_adj` (all its threads share it). Used by the agent
/// for itself and by a forked child before execve.
pub fn set_own(sys: &dyn Sys, value: i32) -> Result<(), OomError> {
    sys.write_file(Path::new(OWN_OOM_SCORE_ADJ), &value.to_string())
        .map_err(|source| OomError::Write { value, source })
}

/// Sets a forked child's score before execve; returns the score in effect. Without
/// `CAP_SYS_RESOURCE` (host mode in an unprivileged container) the kernel refuses a value
/// below the last one a privileged process set (`EACCES`): the child then keeps the score it
/// inherited, which is higher than asked, i.e. it is killed sooner, never later. That is never
/// the agent's -1000: an agent that could set -1000 lets its children set any value.
pub fn set_child(sys: &dyn Sys, value: i32) -> Result<i32, OomError> {
    let denied = match set_own(sys, value) {
        Ok(()) => return Ok(value),
        Err(e @ OomError::Write { .. }) if e.is_permission() => e,
        Err(e) => return Err(e),
    };
    let current = sys
        .read_file(Path::new(OWN_OOM_SCORE_ADJ))
        .ok()
        .and_then(|t| t.trim().parse::<i32>().ok());
    match current {
        Some(c) if c > value && c != AGENT_OOM_SCORE_ADJ => Ok(c),
        _ => Err(denied),
    }
}

impl OomError {
    /// The kernel refused the value (`EACCES`, no `CAP_SYS_RESOURCE`).
    fn is_permission(&self) -> bool {
        let OomError::Write {
            source: SysError::Call { source, .. },
            ..
        } = self
        else {
            return false;
        };
        source.raw_os_error() == Some(libc::EACCES)
    }
}

/// Shields the agent from the OOM killer. A failure (e.g. host mode without
/// `CAP_SYS_RESOURCE`) is returned for the caller to log; it is never fatal.
pub fn protect_agent(sys: &dyn Sys) -> Result<(), OomError> {
    set_own(sys, AGENT_OOM_SCORE_ADJ)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::fake::FakeSys;

    const GIB: u64 = 1 << 30;
    const MIB: u64 = 1 << 20;

    fn res(
        cpu: Option<u64>,
        mem: Option<u64>,
        cpu_req: Option<u64>,
        mem_req: Option<u64>,
    ) -> Resources {
        Resources {
            cpu_millis: cpu,
            memory_bytes: mem,
            pids: None,
            cpu_request_millis: cpu_req,
            memory_request_bytes: mem_req,
        }
    }

    #[test]
    fn qos_classes_follow_the_kubelet() {
        let none = Resources::default();
        let full = res(Some(500), Some(GIB), None, None);
        let exact = res(Some(500), Some(GIB), Some(500), Some(GIB));
        let less_mem = res(Some(500), Some(GIB), Some(500), Some(GIB / 2));
        let mem_only = res(None, Some(GIB), None, None);
        let req_only = res(None, None, None, Some(GIB));
        let pids_only = Resources {
            pids: Some(10),
            ..Resources::default()
        };
        assert_eq!(pod_qos([&none]), QosClass::BestEffort);
        assert_eq!(pod_qos([&none, &none]), QosClass::BestEffort);
        // pids do not count, zero quantities do not count.
        assert_eq!(pod_qos([&pids_only]), QosClass::BestEffort);
        assert_eq!(
            pod_qos([&res(Some(0), Some(0), Some(0), Some(0))]),
            QosClass::BestEffort
        );
        // Limits only: requests default to them.
        assert_eq!(pod_qos([&full]), QosClass::Guaranteed);
        assert_eq!(pod_qos([&exact, &full]), QosClass::Guaranteed);
        assert_eq!(pod_qos([&less_mem]), QosClass::Burstable);
        assert_eq!(pod_qos([&mem_only]), QosClass::Burstable);
        assert_eq!(pod_qos([&req_only]), QosClass::Burstable);
        // One container without limits makes the pod Burstable.
        assert_eq!(pod_qos([&full, &none]), QosClass::Burstable);
        // A zero request with a limit is "no request": sums differ.
        assert_eq!(
            pod_qos([&res(Some(500), Some(GIB), Some(0), None)]),
            QosClass::Burstable
        );
    }

    #[test]
    fn init_containers_count_for_the_class() {
        // The agent passes init and app containers alike: an init container without limits
        // makes an otherwise Guaranteed pod Burstable (ComputePodQOS walks both lists).
        let full = res(Some(500), Some(GIB), None, None);
        let init = Resources::default();
        assert_eq!(pod_qos([&init, &full]), QosClass::Burstable);
        let init_full = res(Some(100), Some(64 * MIB), None, None);
        assert_eq!(pod_qos([&init_full, &full]), QosClass::Guaranteed);
        // Its own score then follows its own request.
        let cap = 4 * GIB;
        assert_eq!(
            container_score_adj(QosClass::Burstable, &init_full, cap),
            1000 - (1000 * 64 * MIB / cap) as i32
        );
        assert_eq!(container_score_adj(QosClass::Burstable, &init, cap), 999);
    }

    #[test]
    fn scores_per_class() {
        let cap = 4 * GIB;
        assert_eq!(score_adj(QosClass::Guaranteed, GIB, cap), -997);
        assert_eq!(score_adj(QosClass::Guaranteed, 0, cap), -997);
        assert_eq!(score_adj(QosClass::BestEffort, 0, cap), 1000);
        assert_eq!(score_adj(QosClass::BestEffort, cap, cap), 1000);
        // 1 GiB of 4 GiB: 1000 - 250.
        assert_eq!(score_adj(QosClass::Burstable, GIB, cap), 750);
        // 10% of memory -> 900 (the kubelet's own example).
        assert_eq!(score_adj(QosClass::Burstable, 100 * MIB, 1000 * MIB), 900);
        // Integer division as in Go: 1000 * 1 / 3 = 333.
        assert_eq!(score_adj(QosClass::Burstable, 1, 3), 667);
    }

    #[test]
    fn burstable_scores_are_clamped() {
        let cap = 4 * GIB;
        // No request: 1000 would equal BestEffort, so 999.
        assert_eq!(score_adj(QosClass::Burstable, 0, cap), 999);
        // A tiny request rounds to 1000 - 0 as well.
        assert_eq!(score_adj(QosClass::Burstable, 1, cap), 999);
        // The whole machine, or more: never below 3 (above a Guaranteed container).
        assert_eq!(score_adj(QosClass::Burstable, cap, cap), 3);
        assert_eq!(score_adj(QosClass::Burstable, cap - 1, cap), 3);
        assert_eq!(score_adj(QosClass::Burstable, 2 * cap, cap), 3);
        assert_eq!(score_adj(QosClass::Burstable, u64::MAX, cap), 3);
        // 99.6% of memory -> 1000 - 996 = 4, inside the range.
        assert_eq!(score_adj(QosClass::Burstable, 996, 1000), 4);
        assert_eq!(score_adj(QosClass::Burstable, 997, 1000), 3);
        // Unknown capacity.
        assert_eq!(score_adj(QosClass::Burstable, GIB, 0), 999);
    }

    #[test]
    fn container_scores_use_the_defaulted_memory_request() {
        let cap = 1000 * MIB;
        let limit_only = res(None, Some(200 * MIB), None, None);
        assert_eq!(
            container_score_adj(QosClass::Burstable, &limit_only, cap),
            800
        );
        let with_req = res(None, Some(500 * MIB), None, Some(100 * MIB));
        assert_eq!(
            container_score_adj(QosClass::Burstable, &with_req, cap),
            900
        );
        let zero_req = res(None, Some(500 * MIB), None, Some(0));
        assert_eq!(
            container_score_adj(QosClass::Burstable, &zero_req, cap),
            999
        );
        assert_eq!(
            container_score_adj(QosClass::Guaranteed, &with_req, cap),
            -997
        );
        assert_eq!(
            container_score_adj(QosClass::BestEffort, &Resources::default(), cap),
            1000
        );
    }

    #[test]
    fn writes_the_score_to_proc_self() {
        let sys = FakeSys::default();
        set_own(&sys, 750).unwrap();
        protect_agent(&sys).unwrap();
        assert_eq!(
            sys.calls(),
            vec![
                "write /proc/self/oom_score_adj 750".to_string(),
                "write /proc/self/oom_score_adj -1000".to_string(),
            ]
        );
    }

    #[test]
    fn child_keeps_a_higher_inherited_score_when_lowering_is_refused() {
        let sys = FakeSys::default();
        let own = std::path::PathBuf::from(OWN_OOM_SCORE_ADJ);
        assert_eq!(set_child(&sys, -997).unwrap(), -997);
        // No CAP_SYS_RESOURCE: -997 is refused, the inherited 0 stays.
        *sys.denied.lock().unwrap() = Some(own.clone());
        sys.files.lock().unwrap().insert(own.clone(), "0\n".into());
        assert_eq!(set_child(&sys, -997).unwrap(), 0);
        // Never accepted: an inherited -1000, a lower inherited value, an unreadable one.
        sys.files
            .lock()
            .unwrap()
            .insert(own.clone(), "-1000\n".into());
        assert!(set_child(&sys, 500).is_err());
        sys.files
            .lock()
            .unwrap()
            .insert(own.clone(), "100\n".into());
        assert!(set_child(&sys, 500).is_err());
        sys.files.lock().unwrap().remove(&own);
        assert!(set_child(&sys, -997).is_err());
        // The agent's own protection reports the refusal.
        assert!(protect_agent(&sys).is_err());
    }

    #[test]
    fn reads_mem_total() {
        let sys = FakeSys::default();
        assert!(mem_total(&sys).is_err());
        sys.files.lock().unwrap().insert(
            "/proc/meminfo".into(),
            "MemTotal: 1000 kB\nMemFree: 10 kB\nMemAvailable: 500 kB\n".into(),
        );
        assert_eq!(mem_total(&sys).unwrap(), 1000 * 1024);
    }
}
