//! The `peapod-vmm` child process: spawn it with the test's options, keep its stderr, wait for
//! its exit with a deadline, and kill it if the test ends early.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Errors around the VMM process.
#[derive(Debug, thiserror::Error)]
pub enum VmmError {
    /// The VMM could not be started.
    #[error("spawn {path}: {source}")]
    Spawn {
        /// Binary.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// Waiting for the VMM failed.
    #[error("wait for the vmm: {0}")]
    Wait(#[source] std::io::Error),
}

/// What to start.
#[derive(Debug, Clone)]
pub struct VmmArgs {
    /// `peapod-vmm` binary.
    pub vmm: PathBuf,
    /// Guest kernel (ELF vmlinux).
    pub kernel: PathBuf,
    /// Initramfs with the agent as `/init`.
    pub initrd: PathBuf,
    /// Hybrid vsock Unix socket.
    pub vsock_uds: PathBuf,
    /// Console log file.
    pub console: PathBuf,
    /// Guest memory.
    pub memory_mib: u32,
    /// vCPUs.
    pub vcpus: u32,
    /// Kernel command line override.
    pub cmdline: Option<String>,
}

impl VmmArgs {
    /// The command line arguments.
    pub fn argv(&self) -> Vec<String> {
        let mut a: Vec<String> = vec![
            "--kernel".into(),
            self.kernel.display().to_string(),
            "--initrd".into(),
            self.initrd.display().to_string(),
            "--vsock-uds".into(),
            self.vsock_uds.display().to_string(),
            "--console".into(),
            self.console.display().to_string(),
            "--memory-mib".into(),
            self.memory_mib.to_string(),
            "--vcpus".into(),
            self.vcpus.to_string(),
        ];
        if let Some(c) = &self.cmdline {
            a.push("--cmdline".into());
            a.push(c.clone());
        }
        a
    }
}

/// A running VMM.
pub struct Vmm {
    child: Child,
    /// When it was spawned.
    pub spawned_at: Instant,
    stderr: Arc<Mutex<Vec<String>>>,
    reader: Option<JoinHandle<()>>,
}

impl Vmm {
    /// Spawns the VMM; its stderr is echoed with a `[vmm]` prefix and kept.
    pub fn spawn(args: &VmmArgs) -> Result<Self, VmmError> {
        let spawned_at = Instant::now();
        let mut child = Command::new(&args.vmm)
            .args(args.argv())
            .env("PEAPOD_VMM_TIMING", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::inherit())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| VmmError::Spawn {
                path: args.vmm.clone(),
                source,
            })?;
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let reader = child.stderr.take().map(|pipe| {
            let lines = Arc::clone(&stderr);
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    eprintln!("[vmm] {line}");
                    if let Ok(mut l) = lines.lock() {
                        l.push(line);
                    }
                }
            })
        });
        Ok(Self {
            child,
            spawned_at,
            stderr,
            reader,
        })
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status if the VMM has exited.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>, VmmError> {
        self.child.try_wait().map_err(VmmError::Wait)
    }

    /// Waits up to `timeout`; `None` if it is still running then (it is left running).
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<Option<ExitStatus>, VmmError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_wait()? {
                if let Some(h) = self.reader.take() {
                    let _ = h.join();
                }
                return Ok(Some(s));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills and reaps the VMM (idempotent).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The VMM's stderr so far.
    pub fn stderr_lines(&self) -> Vec<String> {
        self.stderr.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

impl Drop for Vmm {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.kill();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(vmm: &str) -> VmmArgs {
        VmmArgs {
            vmm: vmm.into(),
            kernel: "/k".into(),
            initrd: "/i".into(),
            vsock_uds: "/u".into(),
            console: "/c".into(),
            memory_mib: 512,
            vcpus: 2,
            cmdline: None,
        }
    }

    #[test]
    fn argv_has_every_option() {
        let a = args("/bin/vmm").argv().join(" ");
        assert_eq!(
            a,
            "--kernel /k --initrd /i --vsock-uds /u --console /c --memory-mib 512 --vcpus 2"
        );
        let mut b = args("/bin/vmm");
        b.cmdline = Some("console=ttyS0".into());
        assert!(b
            .argv()
            .ends_with(&["--cmdline".into(), "console=ttyS0".into()]));
    }

    #[test]
    fn waits_kills_and_reports_spawn_errors() {
        let mut a = args("/bin/sh");
        a.vmm = "/nonexistent/peapod-vmm".into();
        assert!(matches!(Vmm::spawn(&a), Err(VmmError::Spawn { .. })));
        let dir = std::env::temp_dir().join(format!("agent-vm-vmm-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let script = dir.join("fake-vmm");
        std::fs::write(&script, "#!/bin/sh\necho started >&2\nexec sleep 30\n").unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let mut v = Vmm::spawn(&args(&script.display().to_string())).unwrap();
        assert!(v
            .wait_timeout(Duration::from_millis(200))
            .unwrap()
            .is_none());
        let t0 = Instant::now();
        while v.stderr_lines().is_empty() && t0.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(v.stderr_lines(), vec!["started".to_string()]);
        v.kill();
        assert!(v.try_wait().unwrap().is_some());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
