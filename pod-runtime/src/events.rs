//! Turning successive pod statuses into the events a user sees (`Running`, `Terminated`,
//! `CrashLoopBackOff`, `OOMKilled`), each reported once.

use std::collections::BTreeMap;

use agent_protocol::{ContainerState, ContainerStatus, PodPhase, PodStatus};

/// A container's state reduced to what makes an event new.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Key {
    Waiting(String),
    Running(i64),
    Terminated(i64),
}

fn key(s: &ContainerState) -> Key {
    match s {
        ContainerState::Waiting { reason, .. } => Key::Waiting(reason.clone()),
        ContainerState::Running { started_at_ns } => Key::Running(*started_at_ns),
        ContainerState::Terminated { finished_at_ns, .. } => Key::Terminated(*finished_at_ns),
    }
}

/// Remembers what was reported.
#[derive(Debug, Default)]
pub struct EventTracker {
    seen: BTreeMap<String, Key>,
    phase: Option<PodPhase>,
}

/// Describes one container state for a progress line.
pub fn describe(c: &ContainerStatus) -> String {
    match &c.state {
        ContainerState::Waiting { reason, message } => {
            if message.is_empty() {
                format!("Waiting ({reason})")
            } else {
                format!("Waiting ({reason}: {message})")
            }
        }
        ContainerState::Running { .. } => {
            if c.restart_count > 0 {
                format!("Running (restarts: {})", c.restart_count)
            } else {
                "Running".into()
            }
        }
        ContainerState::Terminated {
            exit_code,
            reason,
            message,
            ..
        } => {
            let mut s = format!("Terminated (exit {exit_code}, {reason}");
            if !message.is_empty() {
                s.push_str(": ");
                s.push_str(message);
            }
            s.push(')');
            s
        }
    }
}

impl EventTracker {
    /// The new events in `status`, as `container X: ...` / `pod: ...` lines.
    pub fn update(&mut self, status: &PodStatus) -> Vec<String> {
        let mut out = Vec::new();
        for c in status.init_containers.iter().chain(&status.containers) {
            let k = key(&c.state);
            // The first sight of a container that is still being created says nothing.
            let initial =
                matches!(&k, Key::Waiting(r) if r == "PodInitializing" || r == "ContainerCreating");
            let changed = self.seen.get(&c.name) != Some(&k);
            if changed {
                if !initial || self.seen.contains_key(&c.name) {
                    out.push(format!("container {}: {}", c.name, describe(c)));
                }
                self.seen.insert(c.name.clone(), k);
            }
        }
        if self.phase != Some(status.phase) {
            self.phase = Some(status.phase);
            let reason = status
                .reason
                .as_ref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default();
            out.push(format!("pod phase {:?}{reason}", status.phase));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(name: &str, state: ContainerState, restarts: u32) -> ContainerStatus {
        ContainerStatus {
            name: name.into(),
            state,
            last_state: None,
            restart_count: restarts,
            pid: None,
        }
    }

    fn pod(phase: PodPhase, c: Vec<ContainerStatus>) -> PodStatus {
        PodStatus {
            phase,
            reason: None,
            init_containers: vec![],
            containers: c,
        }
    }

    #[test]
    fn each_transition_is_reported_once() {
        let mut t = EventTracker::default();
        let creating = ContainerState::Waiting {
            reason: "ContainerCreating".into(),
            message: String::new(),
        };
        let ev = t.update(&pod(PodPhase::Pending, vec![st("a", creating, 0)]));
        assert_eq!(ev, vec!["pod phase Pending"]);
        let running = ContainerState::Running { started_at_ns: 5 };
        let ev = t.update(&pod(PodPhase::Running, vec![st("a", running.clone(), 0)]));
        assert_eq!(ev, vec!["container a: Running", "pod phase Running"]);
        assert!(t
            .update(&pod(PodPhase::Running, vec![st("a", running, 0)]))
            .is_empty());
        let backoff = ContainerState::Waiting {
            reason: "CrashLoopBackOff".into(),
            message: "back-off 10s".into(),
        };
        let ev = t.update(&pod(PodPhase::Running, vec![st("a", backoff, 1)]));
        assert_eq!(
            ev,
            vec!["container a: Waiting (CrashLoopBackOff: back-off 10s)"]
        );
        let oom = ContainerState::Terminated {
            exit_code: 137,
            signal: Some(9),
            reason: "OOMKilled".into(),
            message: String::new(),
            started_at_ns: 5,
            finished_at_ns: 9,
        };
        let ev = t.update(&pod(PodPhase::Failed, vec![st("a", oom, 1)]));
        assert_eq!(
            ev,
            vec![
                "container a: Terminated (exit 137, OOMKilled)",
                "pod phase Failed"
            ]
        );
    }
}
