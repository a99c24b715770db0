//! The exit status of `peapod run`: what a finished pod's status means for the shell.
//!
//! 0 when the pod `Succeeded`; when it `Failed`, the exit code of the container that failed
//! first (earliest finish time; init containers count; an OOM kill is 137), or 1 when no
//! container carries a failing code (e.g. the deadline was exceeded before any exited).

use agent_protocol::{ContainerState, PodPhase, PodStatus};

/// Exit code for bad input found before the VM boots.
pub const EXIT_BAD_INPUT: u8 = 2;
/// Exit code for a runtime failure (VMM or agent died, I/O error).
pub const EXIT_RUNTIME: u8 = 1;

/// The exit code for a pod that reached a final phase.
pub fn exit_code(status: &PodStatus) -> u8 {
    match status.phase {
        PodPhase::Succeeded => 0,
        PodPhase::Pending | PodPhase::Running => EXIT_RUNTIME,
        PodPhase::Failed => {
            let failed = status
                .init_containers
                .iter()
                .chain(&status.containers)
                .filter_map(|c| {
                    // The current state, else the last termination (a container that is
                    // waiting to restart).
                    [Some(&c.state), c.last_state.as_ref()]
                        .into_iter()
                        .flatten()
                        .find_map(|s| match s {
                            ContainerState::Terminated {
                                exit_code,
                                finished_at_ns,
                                ..
                            } if *exit_code != 0 => Some((*finished_at_ns, *exit_code)),
                            _ => None,
                        })
                })
                .min_by_key(|(t, _)| *t);
            match failed {
                Some((_, code)) => u8::try_from(code.rem_euclid(256)).unwrap_or(1).max(1),
                None => EXIT_RUNTIME,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agent_protocol::ContainerStatus;

    fn term(name: &str, code: i32, finished: i64) -> ContainerStatus {
        ContainerStatus {
            name: name.into(),
            state: ContainerState::Terminated {
                exit_code: code,
                signal: None,
                reason: if code == 0 { "Completed" } else { "Error" }.into(),
                message: String::new(),
                started_at_ns: 0,
                finished_at_ns: finished,
            },
            last_state: None,
            restart_count: 0,
            pid: None,
        }
    }

    #[test]
    fn first_failure_wins() {
        let mut s = PodStatus {
            phase: PodPhase::Succeeded,
            reason: None,
            init_containers: vec![],
            containers: vec![term("a", 0, 1), term("b", 0, 2)],
        };
        assert_eq!(exit_code(&s), 0);
        s.phase = PodPhase::Failed;
        s.containers = vec![term("a", 3, 20), term("b", 7, 10), term("c", 0, 5)];
        assert_eq!(exit_code(&s), 7);
        s.containers = vec![term("a", 137, 20)];
        assert_eq!(exit_code(&s), 137);
        s.containers = vec![term("a", 256, 20)];
        assert_eq!(
            exit_code(&s),
            1,
            "a code that wraps to 0 must not look like success"
        );
        s.containers = vec![];
        assert_eq!(exit_code(&s), EXIT_RUNTIME);
    }
}
