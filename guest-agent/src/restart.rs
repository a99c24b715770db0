//! The restart decision: policy, back-off (from `container-semantics`) and `CrashLoopBackOff`.

use std::time::Duration;

use agent_protocol::RestartPolicy;
use container_semantics::backoff::{RestartBackoff, BACKOFF_BASE, BACKOFF_CAP, BACKOFF_RESET};

/// What to do after a container exited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Wait this long in `CrashLoopBackOff`, then restart.
    Restart(Duration),
    /// The container stays terminated.
    Stay,
}

/// Whether `policy` restarts a container that exited with `code`.
pub fn restarts(policy: RestartPolicy, code: i32) -> bool {
    match policy {
        RestartPolicy::Always => true,
        RestartPolicy::OnFailure => code != 0,
        RestartPolicy::Never => false,
    }
}

/// Per-container restart state.
#[derive(Debug, Clone)]
pub struct RestartState {
    policy: RestartPolicy,
    backoff: RestartBackoff,
    /// Restarts so far.
    pub restart_count: u32,
}

impl RestartState {
    /// New state; `test_base` shortens the schedule (test knob), scaling cap and reset alike.
    pub fn new(policy: RestartPolicy, test_base: Option<Duration>) -> Self {
        let backoff = match test_base {
            Some(base) => {
                let scale = |d: Duration| {
                    let f = d.as_secs_f64() / BACKOFF_BASE.as_secs_f64();
                    base.mul_f64(f)
                };
                RestartBackoff::new(base, scale(BACKOFF_CAP), scale(BACKOFF_RESET))
            }
            None => RestartBackoff::default(),
        };
        Self {
            policy,
            backoff,
            restart_count: 0,
        }
    }

    /// Decides after an exit with `code` of a run that lasted `ran_for`.
    pub fn on_exit(&mut self, code: i32, ran_for: Duration) -> Decision {
        if !restarts(self.policy, code) {
            return Decision::Stay;
        }
        self.restart_count = self.restart_count.saturating_add(1);
        Decision::Restart(self.backoff.next_delay(ran_for))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies() {
        assert!(restarts(RestartPolicy::Always, 0));
        assert!(restarts(RestartPolicy::Always, 1));
        assert!(!restarts(RestartPolicy::OnFailure, 0));
        assert!(restarts(RestartPolicy::OnFailure, 137));
        assert!(!restarts(RestartPolicy::Never, 1));
    }

    #[test]
    fn always_backs_off_doubling_to_the_cap_and_resets() {
        let mut s = RestartState::new(RestartPolicy::Always, None);
        let short = Duration::from_secs(1);
        let delays: Vec<u64> = (0..7)
            .map(|_| match s.on_exit(1, short) {
                Decision::Restart(d) => d.as_secs(),
                Decision::Stay => panic!("must restart"),
            })
            .collect();
        assert_eq!(delays, vec![10, 20, 40, 80, 160, 300, 300]);
        assert_eq!(s.restart_count, 7);
        assert_eq!(
            s.on_exit(0, Duration::from_secs(600)),
            Decision::Restart(Duration::from_secs(10))
        );
    }

    #[test]
    fn on_failure_and_never() {
        let mut s = RestartState::new(RestartPolicy::OnFailure, None);
        assert_eq!(s.on_exit(0, Duration::ZERO), Decision::Stay);
        assert_eq!(
            s.on_exit(2, Duration::ZERO),
            Decision::Restart(Duration::from_secs(10))
        );
        let mut n = RestartState::new(RestartPolicy::Never, None);
        assert_eq!(n.on_exit(1, Duration::ZERO), Decision::Stay);
        assert_eq!(n.restart_count, 0);
    }

    #[test]
    fn test_knob_scales_the_schedule() {
        let mut s = RestartState::new(RestartPolicy::Always, Some(Duration::from_millis(100)));
        let d: Vec<u128> = (0..7)
            .map(|_| match s.on_exit(1, Duration::ZERO) {
                Decision::Restart(d) => d.as_millis(),
                Decision::Stay => 0,
            })
            .collect();
        assert_eq!(d, vec![100, 200, 400, 800, 1600, 3000, 3000]);
        // Reset after 60 s (600 s scaled by 1/100).
        assert_eq!(
            s.on_exit(1, Duration::from_secs(60)),
            Decision::Restart(Duration::from_millis(100))
        );
    }
}
