//! cgroup v2: the pod cgroup, one child per container, the cpu/memory/pids limits written from
//! `resources`, OOM-kill detection and removal. Without controllers (these hosts mount cgroup2
//! without any) limits are skipped with a logged warning; grouping and `cgroup.kill` still work.

use std::path::{Path, PathBuf};
use std::time::Duration;

use agent_protocol::Resources;

use crate::sys::{Sys, SysError};

/// CFS period used for `cpu.max`, in microseconds.
pub const CPU_PERIOD_US: u64 = 100_000;
/// Smallest quota the kernel accepts, in microseconds.
pub const CPU_MIN_QUOTA_US: u64 = 1_000;

/// Errors of cgroup management.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// No cgroup2 hierarchy is mounted.
    #[error("no cgroup2 hierarchy is mounted")]
    NoCgroup2,
    /// A cgroup operation failed.
    #[error(transparent)]
    Sys(#[from] SysError),
    /// The cgroup still has processes after killing them.
    #[error("cgroup {0} is still busy")]
    Busy(String),
}

/// `cpu.max` value for a limit in millicores.
pub fn cpu_max(millis: u64) -> String {
    let quota = millis
        .saturating_mul(CPU_PERIOD_US)
        .checked_div(1000)
        .unwrap_or(0)
        .max(CPU_MIN_QUOTA_US);
    format!("{quota} {CPU_PERIOD_US}")
}

/// The (controller, file, value) writes for `resources`.
pub fn limit_writes(res: &Resources) -> Vec<(&'static str, &'static str, String)> {
    let mut w = Vec::new();
    if let Some(m) = res.cpu_millis {
        w.push(("cpu", "cpu.max", cpu_max(m)));
    }
    if let Some(b) = res.memory_bytes {
        w.push(("memory", "memory.max", b.to_string()));
        // No swap: a container at its limit is OOM-killed instead of swapping.
        w.push(("memory", "memory.swap.max", "0".to_string()));
    }
    if let Some(p) = res.pids {
        w.push(("pids", "pids.max", p.to_string()));
    }
    w
}

/// Whether `memory.events` reports an OOM kill.
pub fn oom_killed(memory_events: &str) -> bool {
    memory_events.lines().any(|l| {
        let mut it = l.split_whitespace();
        it.next() == Some("oom_kill") && it.next().and_then(|v| v.parse::<u64>().ok()) > Some(0)
    })
}

/// Finds the cgroup2 mount point in a `/proc/self/mountinfo` text.
pub fn cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|l| {
        let (pre, post) = l.split_once(" - ")?;
        if post.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        pre.split_whitespace().nth(4).map(PathBuf::from)
    })
}

/// The process' own cgroup2 path from a `/proc/self/cgroup` text.
pub fn own_cgroup(proc_cgroup: &str) -> Option<String> {
    proc_cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::").map(|p| p.trim().to_string()))
}

/// The pod's cgroup.
#[derive(Debug, Clone)]
pub struct PodCgroup {
    /// Directory of the pod cgroup.
    pub dir: PathBuf,
    /// Controllers enabled for the containers.
    pub controllers: Vec<String>,
}

impl PodCgroup {
    /// Creates `name` under `parent` and enables the controllers the parent offers.
    pub fn create(sys: &dyn Sys, parent: &Path, name: &str) -> Result<Self, CgroupError> {
        let available = sys
            .read_file(&parent.join("cgroup.controllers"))
            .unwrap_or_default();
        let wanted: Vec<String> = available
            .split_whitespace()
            .filter(|c| matches!(*c, "cpu" | "memory" | "pids"))
            .map(str::to_string)
            .collect();
        let enable = |dir: &Path| -> Vec<String> {
            let mut ok = Vec::new();
            for c in &wanted {
                match sys.write_file(&dir.join("cgroup.subtree_control"), &format!("+{c}")) {
                    Ok(()) => ok.push(c.clone()),
                    Err(e) => eprintln!("peapod-agent: warning: cannot enable {c}: {e}"),
                }
            }
            ok
        };
        let _ = enable(parent);
        let dir = parent.join(name);
        sys.mkdir_all(&dir)?;
        let controllers = enable(&dir);
        if controllers.len() < 3 {
            eprintln!(
                "peapod-agent: warning: cgroup2 at {} offers controllers {:?}: cpu/memory/pids limits without a controller are skipped",
                parent.display(),
                controllers
            );
        }
        Ok(Self { dir, controllers })
    }

    /// Creates a container's cgroup and writes its limits; returns the directory.
    pub fn create_container(
        &self,
        sys: &dyn Sys,
        name: &str,
        res: &Resources,
    ) -> Result<PathBuf, CgroupError> {
        let dir = self.dir.join(name);
        sys.mkdir_all(&dir)?;
        for (controller, file, value) in limit_writes(res) {
            if self.controllers.iter().any(|c| c == controller) {
                // Kernels without swap (CONFIG_SWAP off, as in the guest) have no
                // memory.swap.max: nothing can be swapped, so there is nothing to limit.
                if file == "memory.swap.max" && !sys.exists(&dir.join(file)) {
                    continue;
                }
                match sys.write_file(&dir.join(file), &value) {
                    Ok(()) => {}
                    // Kernels without swap accounting have no memory.swap.max.
                    Err(e) if file == "memory.swap.max" => {
                        eprintln!("peapod-agent: warning: {e}");
                    }
                    Err(e) => return Err(e.into()),
                }
            } else {
                eprintln!(
                    "peapod-agent: warning: {controller} controller missing, {file}={value} not applied to {name}"
                );
            }
        }
        Ok(dir)
    }
}

/// Whether the container's cgroup recorded an OOM kill.
pub fn container_oom_killed(sys: &dyn Sys, dir: &Path) -> bool {
    sys.read_file(&dir.join("memory.events"))
        .map(|t| oom_killed(&t))
        .unwrap_or(false)
}

/// Kills whatever is left in a cgroup and removes it, retrying while it drains.
pub fn remove(sys: &dyn Sys, dir: &Path) -> Result<(), CgroupError> {
    if !sys.exists(dir) {
        return Ok(());
    }
    let kill = dir.join("cgroup.kill");
    for _ in 0..200 {
        if sys.exists(&kill) {
            let _ = sys.write_file(&kill, "1");
        }
        match sys.remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
    Err(CgroupError::Busy(dir.display().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::fake::FakeSys;

    #[test]
    fn cpu_max_from_millicores() {
        assert_eq!(cpu_max(1000), "100000 100000");
        assert_eq!(cpu_max(250), "25000 100000");
        assert_eq!(cpu_max(2500), "250000 100000");
        assert_eq!(cpu_max(1), "1000 100000");
        assert_eq!(cpu_max(u64::MAX), format!("{} 100000", u64::MAX / 1000));
    }

    #[test]
    fn limits_written_where_controllers_exist() {
        let sys = FakeSys::default();
        sys.write_file(
            Path::new("/cg/cgroup.controllers"),
            "cpuset cpu memory pids",
        )
        .unwrap();
        let pod = PodCgroup::create(&sys, Path::new("/cg"), "pod").unwrap();
        assert_eq!(pod.controllers, vec!["cpu", "memory", "pids"]);
        let res = Resources {
            cpu_millis: Some(500),
            memory_bytes: Some(64 << 20),
            pids: Some(100),
            // Requests only feed the QoS class: no knob uses them.
            cpu_request_millis: Some(100),
            memory_request_bytes: Some(1 << 20),
        };
        // A kernel with swap creates memory.swap.max with the cgroup.
        sys.write_file(Path::new("/cg/pod/app/memory.swap.max"), "max")
            .unwrap();
        let dir = pod.create_container(&sys, "app", &res).unwrap();
        let files = sys.files.lock().unwrap().clone();
        assert_eq!(files[&dir.join("cpu.max")], "50000 100000");
        assert_eq!(files[&dir.join("memory.max")], "67108864");
        assert_eq!(files[&dir.join("memory.swap.max")], "0");
        assert_eq!(files[&dir.join("pids.max")], "100");
        assert!(sys
            .calls()
            .contains(&"write /cg/pod/cgroup.subtree_control +memory".to_string()));
    }

    #[test]
    fn swap_limit_skipped_without_swap() {
        let sys = FakeSys::default();
        sys.write_file(Path::new("/cg/cgroup.controllers"), "memory")
            .unwrap();
        let pod = PodCgroup::create(&sys, Path::new("/cg"), "pod").unwrap();
        let res = Resources {
            cpu_millis: None,
            memory_bytes: Some(32 << 20),
            ..Resources::default()
        };
        let dir = pod.create_container(&sys, "hog", &res).unwrap();
        let files = sys.files.lock().unwrap().clone();
        assert_eq!(files[&dir.join("memory.max")], "33554432");
        assert!(!files.contains_key(&dir.join("memory.swap.max")));
        assert!(!sys.calls().iter().any(|c| c.contains("memory.swap.max")));
    }

    #[test]
    fn limits_skipped_without_controllers() {
        let sys = FakeSys::default();
        sys.write_file(Path::new("/cg/cgroup.controllers"), "")
            .unwrap();
        let pod = PodCgroup::create(&sys, Path::new("/cg"), "pod").unwrap();
        assert!(pod.controllers.is_empty());
        let res = Resources {
            cpu_millis: Some(500),
            memory_bytes: None,
            pids: Some(3),
            ..Resources::default()
        };
        let dir = pod.create_container(&sys, "app", &res).unwrap();
        assert!(!sys
            .files
            .lock()
            .unwrap()
            .contains_key(&dir.join("pids.max")));
    }

    #[test]
    fn parses_oom_events_mounts_and_own_cgroup() {
        assert!(oom_killed("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n"));
        assert!(!oom_killed("oom 1\noom_kill 0\n"));
        assert!(!oom_killed("garbage"));
        let mi = "22 1 0:21 / /sys rw - sysfs sysfs rw\n35 25 0:30 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw\n";
        assert_eq!(
            cgroup2_mount(mi),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        assert_eq!(cgroup2_mount("x"), None);
        assert_eq!(
            own_cgroup("12:pids:/a\n0::/user.slice/x\n").as_deref(),
            Some("/user.slice/x")
        );
    }
}
