//! Container restart back-off as kubelet applies it: 10 s, doubling, capped at 5 min, and
//! forgotten once a container has run for 10 min.

use std::time::Duration;

/// The first restart delay.
pub const BACKOFF_BASE: Duration = Duration::from_secs(10);
/// The longest restart delay.
pub const BACKOFF_CAP: Duration = Duration::from_secs(300);
/// A container that ran at least this long starts the schedule again from the base.
pub const BACKOFF_RESET: Duration = Duration::from_secs(600);

/// The restart back-off state of one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestartBackoff {
    base: Duration,
    cap: Duration,
    reset_after: Duration,
    /// Consecutive restarts counted by the schedule since the last reset.
    steps: u32,
}

impl Default for RestartBackoff {
    fn default() -> Self {
        Self::new(BACKOFF_BASE, BACKOFF_CAP, BACKOFF_RESET)
    }
}

impl RestartBackoff {
    /// A schedule with other constants (tests shorten it; the product uses [`Default`]).
    pub fn new(base: Duration, cap: Duration, reset_after: Duration) -> Self {
        Self {
            base,
            cap: cap.max(base),
            reset_after,
            steps: 0,
        }
    }

    /// The delay before the next restart of a container that just exited after running for
    /// `ran_for`; advances the schedule.
    pub fn next_delay(&mut self, ran_for: Duration) -> Duration {
        if ran_for >= self.reset_after {
            self.steps = 0;
        }
        let delay = self.delay_for(self.steps);
        self.steps = self.steps.saturating_add(1);
        delay
    }

    /// The delay of step `n` (0-based) of the schedule, without changing state.
    pub fn delay_for(&self, n: u32) -> Duration {
        let factor = 1u32.checked_shl(n.min(31)).unwrap_or(u32::MAX);
        self.base
            .checked_mul(factor)
            .map_or(self.cap, |d| d.min(self.cap))
    }

    /// Forgets the schedule (for example when the pod is re-created).
    pub fn reset(&mut self) {
        self.steps = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_doubles_and_caps() {
        let mut b = RestartBackoff::default();
        let got: Vec<u64> = (0..8)
            .map(|_| b.next_delay(Duration::from_secs(1)).as_secs())
            .collect();
        assert_eq!(got, vec![10, 20, 40, 80, 160, 300, 300, 300]);
    }

    #[test]
    fn long_run_resets_the_schedule() {
        let mut b = RestartBackoff::default();
        b.next_delay(Duration::ZERO);
        b.next_delay(Duration::ZERO);
        assert_eq!(
            b.next_delay(Duration::from_secs(599)),
            Duration::from_secs(40)
        );
        assert_eq!(
            b.next_delay(Duration::from_secs(600)),
            Duration::from_secs(10)
        );
        assert_eq!(b.next_delay(Duration::ZERO), Duration::from_secs(20));
    }

    #[test]
    fn huge_step_counts_saturate_at_the_cap() {
        let b = RestartBackoff::default();
        assert_eq!(b.delay_for(40), BACKOFF_CAP);
        assert_eq!(b.delay_for(u32::MAX), BACKOFF_CAP);
    }

    #[test]
    fn custom_schedule() {
        let mut b = RestartBackoff::new(
            Duration::from_millis(100),
            Duration::from_millis(250),
            Duration::from_secs(1),
        );
        let got: Vec<u128> = (0..4)
            .map(|_| b.next_delay(Duration::ZERO).as_millis())
            .collect();
        assert_eq!(got, vec![100, 200, 250, 250]);
    }
}
