//! Pod phase computation from container states (pure, unit-tested).

use agent_protocol::{ContainerState, PodPhase};

/// Inputs of the phase of one container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Not started yet.
    NotStarted,
    /// Running, or waiting to be restarted.
    Active,
    /// Terminated for good with this exit code.
    Done(i32),
}

/// Classifies a container state; `will_restart` tells whether a terminated container is
/// waiting for its back-off.
pub fn progress(state: &ContainerState, ever_started: bool, will_restart: bool) -> Progress {
    match state {
        ContainerState::Running { .. } => Progress::Active,
        ContainerState::Terminated { exit_code, .. } if !will_restart => Progress::Done(*exit_code),
        ContainerState::Terminated { .. } => Progress::Active,
        ContainerState::Waiting { .. } if ever_started => Progress::Active,
        ContainerState::Waiting { .. } => Progress::NotStarted,
    }
}

/// The pod phase from its init and app containers.
pub fn phase(init: &[Progress], apps: &[Progress], deadline_exceeded: bool) -> PodPhase {
    if deadline_exceeded {
        return PodPhase::Failed;
    }
    if init
        .iter()
        .any(|p| matches!(p, Progress::Done(c) if *c != 0))
    {
        return PodPhase::Failed;
    }
    if init.iter().any(|p| !matches!(p, Progress::Done(0))) {
        return PodPhase::Pending;
    }
    if apps.contains(&Progress::NotStarted) {
        return PodPhase::Pending;
    }
    if apps.contains(&Progress::Active) {
        return PodPhase::Running;
    }
    if apps.iter().all(|p| *p == Progress::Done(0)) {
        PodPhase::Succeeded
    } else {
        PodPhase::Failed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Progress::*;

    #[test]
    fn phases() {
        assert_eq!(
            phase(&[NotStarted], &[NotStarted], false),
            PodPhase::Pending
        );
        assert_eq!(phase(&[Active], &[NotStarted], false), PodPhase::Pending);
        assert_eq!(phase(&[Done(1)], &[NotStarted], false), PodPhase::Failed);
        assert_eq!(
            phase(&[Done(0)], &[Active, NotStarted], false),
            PodPhase::Pending
        );
        assert_eq!(
            phase(&[Done(0)], &[Active, Done(0)], false),
            PodPhase::Running
        );
        assert_eq!(phase(&[], &[Done(0), Done(0)], false), PodPhase::Succeeded);
        assert_eq!(phase(&[], &[Done(0), Done(2)], false), PodPhase::Failed);
        assert_eq!(phase(&[], &[Active], true), PodPhase::Failed);
    }

    #[test]
    fn progress_of_states() {
        let t = ContainerState::Terminated {
            exit_code: 1,
            signal: None,
            reason: "Error".into(),
            message: String::new(),
            started_at_ns: 0,
            finished_at_ns: 0,
        };
        assert_eq!(progress(&t, true, true), Active);
        assert_eq!(progress(&t, true, false), Done(1));
        let w = ContainerState::Waiting {
            reason: "CrashLoopBackOff".into(),
            message: String::new(),
        };
        assert_eq!(progress(&w, true, true), Active);
        assert_eq!(progress(&w, false, false), NotStarted);
    }
}
