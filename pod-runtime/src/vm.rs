//! The pod's VMM process: spawned in its own process group (a terminal's Ctrl-C reaches
//! `peapod`, which stops the pod gracefully, not the VMM), killed if `peapod` dies
//! (`PR_SET_PDEATHSIG`), and always reaped. Its stderr goes to a log file in the pod directory
//! (and its last lines into error reports); SIGUSR1 makes it print a state dump there.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::volumes::Share;

/// Errors of the VMM process.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// The VMM could not be started.
    #[error("cannot start {path}: {source}")]
    Spawn {
        /// Binary.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Waiting for the VMM failed.
    #[error("waiting for the vmm: {0}")]
    Wait(std::io::Error),
    /// The VMM's log file could not be created.
    #[error("cannot create {path}: {source}")]
    Log {
        /// File.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// How to start the VMM.
#[derive(Debug, Clone)]
pub struct VmSpec {
    /// `peapod-vmm`.
    pub vmm: PathBuf,
    /// Guest kernel.
    pub kernel: PathBuf,
    /// Initramfs.
    pub initrd: PathBuf,
    /// vCPUs.
    pub vcpus: u32,
    /// Guest memory.
    pub memory_mib: u64,
    /// Hybrid vsock socket.
    pub vsock_uds: PathBuf,
    /// Console log file.
    pub console: PathBuf,
    /// Where the VMM's stderr is written.
    pub stderr_log: PathBuf,
    /// virtio-fs shares.
    pub shares: Vec<Share>,
    /// Extra kernel parameters appended to the VMM's default command line.
    pub extra_cmdline: Option<String>,
}

impl VmSpec {
    /// The VMM's arguments.
    pub fn args(&self) -> Vec<String> {
        let mut a = vec![
            "--kernel".to_string(),
            self.kernel.display().to_string(),
            "--initrd".into(),
            self.initrd.display().to_string(),
            "--vcpus".into(),
            self.vcpus.to_string(),
            "--memory-mib".into(),
            self.memory_mib.to_string(),
            "--vsock-uds".into(),
            self.vsock_uds.display().to_string(),
            "--console".into(),
            self.console.display().to_string(),
            // The agent ends the VM with an i8042 reset; halt probing could only misfire.
            "--no-halt-detection".into(),
        ];
        if let Some(extra) = &self.extra_cmdline {
            a.push("--cmdline-append".into());
            a.push(extra.clone());
        }
        for s in &self.shares {
            a.push("--fs".into());
            a.push(s.vmm_arg());
        }
        a
    }
}

/// A running VMM.
pub struct Vm {
    child: Child,
    /// When it was spawned.
    pub spawned_at: Instant,
    setup_us: Arc<Mutex<Option<u64>>>,
    stderr_tail: Arc<Mutex<Vec<String>>>,
    reader: Option<JoinHandle<()>>,
    status: Option<ExitStatus>,
}

/// Most VMM stderr lines kept for error reports.
const STDERR_TAIL: usize = 20;

impl Vm {
    /// Starts the VMM (with `PEAPOD_VMM_TIMING=1`). Must be called from the thread that lives
    /// as long as the pod (the parent-death signal follows the spawning thread).
    pub fn spawn(spec: &VmSpec) -> Result<Self, VmError> {
        let mut cmd = Command::new(&spec.vmm);
        cmd.args(spec.args())
            .env("PEAPOD_VMM_TIMING", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0);
        // SAFETY: the closure runs in the forked child before exec and only makes
        // async-signal-safe calls (prctl, sigprocmask) on the child's own state.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // `peapod` blocks SIGINT/SIGTERM to handle them in a thread; the VMM must not
                // inherit that mask.
                let mut empty: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut empty);
                if libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut()) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut log = File::create(&spec.stderr_log).map_err(|source| VmError::Log {
            path: spec.stderr_log.clone(),
            source,
        })?;
        let spawned_at = Instant::now();
        let mut child = cmd.spawn().map_err(|source| VmError::Spawn {
            path: spec.vmm.clone(),
            source,
        })?;
        let setup_us = Arc::new(Mutex::new(None));
        let stderr_tail = Arc::new(Mutex::new(Vec::new()));
        let reader = child.stderr.take().map(|stderr| {
            let setup_us = Arc::clone(&setup_us);
            let tail = Arc::clone(&stderr_tail);
            thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    // The log is for diagnosis only: a full disk must not stop the pod.
                    let _ = writeln!(log, "{line}");
                    if let Some(v) = parse_timing(&line) {
                        if let Ok(mut s) = setup_us.lock() {
                            *s = Some(v);
                        }
                        continue;
                    }
                    if let Ok(mut t) = tail.lock() {
                        if t.len() == STDERR_TAIL {
                            t.remove(0);
                        }
                        t.push(line);
                    }
                }
            })
        });
        Ok(Self {
            child,
            spawned_at,
            setup_us,
            stderr_tail,
            reader,
            status: None,
        })
    }

    /// The VMM's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status once it exited.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>, VmError> {
        if self.status.is_none() {
            self.status = self.child.try_wait().map_err(VmError::Wait)?;
        }
        Ok(self.status)
    }

    /// Waits up to `timeout` for the exit.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<Option<ExitStatus>, VmError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_wait()? {
                return Ok(Some(s));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the VMM (SIGKILL) and reaps it.
    pub fn kill(&mut self) -> Result<ExitStatus, VmError> {
        if let Some(s) = self.try_wait()? {
            return Ok(s);
        }
        let _ = self.child.kill();
        let s = self.child.wait().map_err(VmError::Wait)?;
        self.status = Some(s);
        Ok(s)
    }

    /// Microseconds from exec to the first `KVM_RUN`, as the VMM reported it.
    pub fn setup_us(&self) -> Option<u64> {
        self.setup_us.lock().ok().and_then(|s| *s)
    }

    /// Asks a running VMM for its state dump (SIGUSR1) and gives it `wait` to print it; the
    /// dump then is in the stderr log and [`Vm::stderr_tail`].
    pub fn dump_state(&mut self, wait: Duration) {
        if !matches!(self.try_wait(), Ok(None)) {
            return;
        }
        let Ok(pid) = i32::try_from(self.pid()) else {
            return;
        };
        // SAFETY: kill(2) with a valid signal on our own child, which has not been reaped (it
        // was still running above), so the pid cannot have been reused.
        if unsafe { libc::kill(pid, libc::SIGUSR1) } == 0 {
            thread::sleep(wait);
        }
    }

    /// The last lines the VMM wrote to stderr.
    pub fn stderr_tail(&mut self) -> Vec<String> {
        if self.status.is_some() {
            if let Some(r) = self.reader.take() {
                let _ = r.join();
            }
        }
        self.stderr_tail
            .lock()
            .map(|t| t.clone())
            .unwrap_or_default()
    }

    /// Host memory of the VMM in KiB: (RssAnon + RssFile, RssShmem = guest memory touched).
    pub fn rss_kib(&self) -> Option<(u64, u64)> {
        let text = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        };
        Some((
            field("RssAnon:")?.saturating_add(field("RssFile:")?),
            field("RssShmem:")?,
        ))
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.kill();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

/// Parses `peapod-vmm: timing setup_us=N`.
pub fn parse_timing(line: &str) -> Option<u64> {
    line.strip_prefix("peapod-vmm: timing setup_us=")?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_carry_shares_and_cmdline() {
        let spec = VmSpec {
            vmm: "/v".into(),
            kernel: "/k".into(),
            initrd: "/i".into(),
            vcpus: 2,
            memory_mib: 300,
            vsock_uds: "/s".into(),
            console: "/c".into(),
            stderr_log: "/l".into(),
            shares: vec![Share {
                tag: "img0".into(),
                host_path: "/r".into(),
                read_only: true,
            }],
            extra_cmdline: Some("quiet".into()),
        };
        let a = spec.args().join(" ");
        assert!(a.contains("--vcpus 2 --memory-mib 300"), "{a}");
        assert!(a.contains("--fs img0=/r:ro"), "{a}");
        assert!(a.contains("--cmdline-append quiet"), "{a}");
        assert_eq!(parse_timing("peapod-vmm: timing setup_us=42"), Some(42));
        assert_eq!(parse_timing("other"), None);
    }
}
