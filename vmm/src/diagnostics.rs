//! The state dump the VMM prints to stderr on SIGUSR1: every thread's scheduler state and wait
//! channel, then each vCPU's registers, events and LAPIC timer as its own thread reads them. A
//! vCPU that does not answer is stuck outside KVM_RUN (in a device or a lock), which the thread
//! list then shows.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::vcpu::VcpuHandle;
use crate::virtio::counters::Counters;
use crate::virtio::mmio::MmioTransport;

/// How long the vCPU threads get to print their state.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(1);

/// Prints the state dump to stderr (lines start with `peapod-vmm: state:`).
pub fn dump_state(
    vcpus: &[VcpuHandle],
    counters: &[Arc<Counters>],
    transports: &[Arc<Mutex<MmioTransport>>],
) {
    eprintln!("peapod-vmm: state: dump requested (SIGUSR1)");
    for thread in threads() {
        eprintln!("peapod-vmm: state: thread {thread}");
    }
    for c in counters {
        eprintln!("peapod-vmm: state: device {} {}", c.device(), c.summary());
    }
    for (i, t) in transports.iter().enumerate() {
        let line = t
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .state_summary();
        eprintln!("peapod-vmm: state: virtio-mmio {i} {line}");
    }
    vcpus.iter().for_each(VcpuHandle::request_dump);
    let deadline = Instant::now() + ANSWER_TIMEOUT;
    while Instant::now() < deadline && !vcpus.iter().all(VcpuHandle::dumped) {
        std::thread::sleep(Duration::from_millis(10));
    }
    for v in vcpus.iter().filter(|v| !v.dumped()) {
        eprintln!(
            "peapod-vmm: state: vcpu{} did not answer within {} ms: its thread is outside KVM_RUN",
            v.id(),
            ANSWER_TIMEOUT.as_millis()
        );
    }
}

/// `TID NAME state=S wchan=W` for each thread of this process.
fn threads() -> Vec<String> {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return vec!["list unavailable (/proc/self/task unreadable)".into()];
    };
    let mut out: Vec<(u32, String)> = dir
        .filter_map(Result::ok)
        .filter_map(|e| {
            let tid: u32 = e.file_name().to_str()?.parse().ok()?;
            let path = e.path();
            let read = |f: &str| std::fs::read_to_string(path.join(f)).unwrap_or_default();
            let comm = read("comm").trim().to_string();
            let state = stat_state(&read("stat")).unwrap_or('?');
            let wchan = read("wchan");
            let wchan = if wchan.is_empty() || wchan == "0" {
                "-"
            } else {
                wchan.trim()
            };
            Some((tid, format!("{tid} {comm} state={state} wchan={wchan}")))
        })
        .collect();
    out.sort();
    out.into_iter().map(|(_, line)| line).collect()
}

/// The state letter of a `/proc/PID/stat` line (the field after the parenthesised name, which
/// may itself hold spaces and parentheses).
fn stat_state(stat: &str) -> Option<char> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.trim_start().chars().next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_state_skips_names_with_parentheses() {
        assert_eq!(stat_state("12 (vcpu0) S 1 2 3"), Some('S'));
        assert_eq!(stat_state("12 (a) b) R 1"), Some('R'));
        assert_eq!(stat_state("garbage"), None);
    }

    #[test]
    fn the_thread_list_names_this_thread() {
        std::thread::Builder::new()
            .name("dump-probe".into())
            .spawn(|| {
                let list = threads();
                assert!(
                    list.iter().any(|l| l.contains(" dump-probe state=R")),
                    "{list:?}"
                );
            })
            .unwrap()
            .join()
            .unwrap();
    }
}
