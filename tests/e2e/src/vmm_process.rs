//! The `peapod-vmm` child process of the end-to-end tests: spawning it with the test's
//! options, keeping its stderr and its timing line, optionally sampling its memory, waiting
//! for it with a deadline, and killing it if the test ends early.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use thiserror::Error;

/// Prefix of the VMM's timing line on stderr (see `peapod-vmm --help`).
pub const TIMING_PREFIX: &str = "peapod-vmm: timing setup_us=";

/// How often the memory sampler reads `/proc/PID/status`.
const SAMPLE_EVERY: Duration = Duration::from_millis(2);

/// How often the waits poll the child.
const POLL_EVERY: Duration = Duration::from_millis(10);

/// Errors around the VMM process.
#[derive(Debug, Error)]
pub enum VmmProcessError {
    /// The VMM could not be started.
    #[error("spawn {path}")]
    Spawn {
        /// Binary.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// Waiting for the VMM failed.
    #[error("wait for the vmm")]
    Wait(#[source] std::io::Error),
    /// The VMM did not exit before the deadline (it was killed).
    #[error("the vmm did not exit within {0:?}")]
    Timeout(Duration),
}

/// What to start.
#[derive(Debug, Clone)]
pub struct VmmArgs {
    /// `peapod-vmm` binary.
    pub vmm: PathBuf,
    /// Guest kernel (ELF vmlinux).
    pub kernel: PathBuf,
    /// Initramfs (its `/init` is the program under test).
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

/// Peak memory of the VMM process, in KiB.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoryPeak {
    /// Peak of RssAnon + RssFile: the VMM's own memory, guest memory excluded.
    pub rss_anon_file_kib: u64,
    /// Peak of RssShmem: guest memory (memfd) the guest touched.
    pub rss_shmem_kib: u64,
    /// Number of samples taken.
    pub samples: u64,
}

/// A running VMM with its stderr reader and, if asked for, its memory sampler.
pub struct VmmProcess {
    child: Child,
    /// When the process was spawned.
    pub spawned_at: Instant,
    setup_us: Arc<Mutex<Option<u64>>>,
    stderr_lines: Arc<Mutex<Vec<String>>>,
    stop_sampler: Arc<AtomicBool>,
    sampler: Option<JoinHandle<MemoryPeak>>,
    stderr_reader: Option<JoinHandle<()>>,
}

impl VmmProcess {
    /// Spawns the VMM with `PEAPOD_VMM_TIMING=1`; its stderr is echoed with a `[vmm]` prefix
    /// and kept, and its timing line is picked out.
    pub fn spawn(args: &VmmArgs) -> Result<Self, VmmProcessError> {
        let mut cmd = Command::new(&args.vmm);
        cmd.args(args.argv())
            .env("PEAPOD_VMM_TIMING", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::inherit())
            .stderr(Stdio::piped());
        let spawned_at = Instant::now();
        let mut child = cmd.spawn().map_err(|source| VmmProcessError::Spawn {
            path: args.vmm.clone(),
            source,
        })?;

        let setup_us = Arc::new(Mutex::new(None));
        let stderr_lines = Arc::new(Mutex::new(Vec::new()));
        let stderr_reader = child.stderr.take().map(|stderr| {
            let setup_us = Arc::clone(&setup_us);
            let lines = Arc::clone(&stderr_lines);
            thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    eprintln!("[vmm] {line}");
                    if let Some(v) = parse_timing(&line) {
                        if let Ok(mut s) = setup_us.lock() {
                            *s = Some(v);
                        }
                    }
                    if let Ok(mut l) = lines.lock() {
                        l.push(line);
                    }
                }
            })
        });

        Ok(Self {
            child,
            spawned_at,
            setup_us,
            stderr_lines,
            stop_sampler: Arc::new(AtomicBool::new(false)),
            sampler: None,
            stderr_reader,
        })
    }

    /// Starts sampling the VMM's memory every 2 ms (call right after [`Self::spawn`]); the
    /// peak comes out of [`Self::finish`].
    pub fn with_memory_sampler(mut self) -> Self {
        if self.sampler.is_none() {
            let pid = self.child.id();
            let stop = Arc::clone(&self.stop_sampler);
            self.sampler = Some(thread::spawn(move || sample_memory(pid, &stop)));
        }
        self
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status if the VMM already exited.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>, VmmProcessError> {
        self.child.try_wait().map_err(VmmProcessError::Wait)
    }

    /// Waits up to `timeout`; `None` if it still runs then (it is left running). Once it
    /// exited, its stderr has been read to the end.
    pub fn wait_timeout(
        &mut self,
        timeout: Duration,
    ) -> Result<Option<ExitStatus>, VmmProcessError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait()? {
                if let Some(h) = self.stderr_reader.take() {
                    let _ = h.join();
                }
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            thread::sleep(POLL_EVERY);
        }
    }

    /// Waits up to `timeout` for the VMM to exit; kills it on timeout.
    pub fn wait_or_kill(&mut self, timeout: Duration) -> Result<ExitStatus, VmmProcessError> {
        match self.wait_timeout(timeout)? {
            Some(status) => Ok(status),
            None => {
                self.kill();
                Err(VmmProcessError::Timeout(timeout))
            }
        }
    }

    /// Kills and reaps the VMM (idempotent).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops the sampler and the stderr reader (the VMM must have exited) and returns the
    /// timing figure and the memory peak (all zero without [`Self::with_memory_sampler`]).
    pub fn finish(&mut self) -> (Option<u64>, MemoryPeak) {
        self.stop_sampler.store(true, Ordering::Relaxed);
        let peak = self
            .sampler
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        if let Some(h) = self.stderr_reader.take() {
            let _ = h.join();
        }
        (self.setup_us(), peak)
    }

    /// `setup_us` from the VMM's timing line, if it printed one so far.
    pub fn setup_us(&self) -> Option<u64> {
        self.setup_us.lock().ok().and_then(|s| *s)
    }

    /// The VMM's stderr so far.
    pub fn stderr_lines(&self) -> Vec<String> {
        self.stderr_lines
            .lock()
            .map(|l| l.clone())
            .unwrap_or_default()
    }
}

impl Drop for VmmProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.kill();
        }
        self.stop_sampler.store(true, Ordering::Relaxed);
    }
}

/// `setup_us` from a `peapod-vmm: timing setup_us=N` line.
pub fn parse_timing(line: &str) -> Option<u64> {
    let rest = line.trim().strip_prefix(TIMING_PREFIX)?;
    rest.split_whitespace().next()?.parse().ok()
}

/// `(RssAnon + RssFile, RssShmem)` in KiB from the text of `/proc/PID/status`.
pub fn parse_status(status: &str) -> Option<(u64, u64)> {
    let field = |name: &str| -> Option<u64> {
        status.lines().find_map(|l| {
            let v = l.strip_prefix(name)?.trim();
            v.strip_suffix("kB")?.trim().parse().ok()
        })
    };
    Some((field("RssAnon:")? + field("RssFile:")?, field("RssShmem:")?))
}

fn sample_memory(pid: u32, stop: &AtomicBool) -> MemoryPeak {
    let path = format!("/proc/{pid}/status");
    let mut peak = MemoryPeak::default();
    while !stop.load(Ordering::Relaxed) {
        let Ok(text) = std::fs::read_to_string(&path) else {
            break;
        };
        // A zombie has no Rss lines: keep polling until told to stop or the entry is gone.
        if let Some((own, shmem)) = parse_status(&text) {
            peak.rss_anon_file_kib = peak.rss_anon_file_kib.max(own);
            peak.rss_shmem_kib = peak.rss_shmem_kib.max(shmem);
            peak.samples += 1;
        }
        thread::sleep(SAMPLE_EVERY);
    }
    peak
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

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

    /// A fake VMM: a shell script running `body`, in a fresh directory under /tmp.
    fn fake_vmm(name: &str, body: &str) -> (PathBuf, PathBuf) {
        let dir = std::env::temp_dir().join(format!("peapod-e2e-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let script = dir.join("fake-vmm");
        std::fs::write(&script, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        (dir, script)
    }

    #[test]
    fn timing_line() {
        assert_eq!(parse_timing("peapod-vmm: timing setup_us=4321"), Some(4321));
        assert_eq!(
            parse_timing("peapod-vmm: timing setup_us=12 x=1\n"),
            Some(12)
        );
        assert_eq!(parse_timing("peapod-vmm: timing setup_us=abc"), None);
        assert_eq!(parse_timing("peapod-vmm: something else"), None);
    }

    #[test]
    fn status_fields() {
        let s = "Name:\tpeapod-vmm\nVmRSS:\t  300 kB\nRssAnon:\t    1200 kB\nRssFile:\t     800 kB\nRssShmem:\t   65536 kB\n";
        assert_eq!(parse_status(s), Some((2000, 65536)));
        assert_eq!(parse_status("Name:\tzombie\nState:\tZ\n"), None);
    }

    #[test]
    fn samples_own_process() {
        let stop = Arc::new(AtomicBool::new(false));
        let s = Arc::clone(&stop);
        let h = thread::spawn(move || sample_memory(std::process::id(), &s));
        thread::sleep(Duration::from_millis(50));
        stop.store(true, Ordering::Relaxed);
        let peak = h.join().unwrap();
        assert!(peak.samples > 0);
        assert!(peak.rss_anon_file_kib > 0);
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
        assert!(matches!(
            VmmProcess::spawn(&a),
            Err(VmmProcessError::Spawn { .. })
        ));
        let (dir, script) = fake_vmm("wait", "echo started >&2\nexec sleep 30");
        let mut v = VmmProcess::spawn(&args(&script.display().to_string())).unwrap();
        assert!(v
            .wait_timeout(Duration::from_millis(200))
            .unwrap()
            .is_none());
        let t0 = Instant::now();
        while v.stderr_lines().is_empty() && t0.elapsed() < Duration::from_secs(5) {
            thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(v.stderr_lines(), vec!["started".to_string()]);
        assert!(Path::new(&format!("/proc/{}", v.pid())).exists());
        v.kill();
        assert!(v.try_wait().unwrap().is_some());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn wait_or_kill_kills_on_timeout() {
        let (dir, script) = fake_vmm("kill", "exec sleep 30");
        let mut v = VmmProcess::spawn(&args(&script.display().to_string())).unwrap();
        let t = Duration::from_millis(100);
        assert!(matches!(
            v.wait_or_kill(t),
            Err(VmmProcessError::Timeout(d)) if d == t
        ));
        assert!(v.try_wait().unwrap().is_some(), "killed and reaped");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn timing_line_exit_status_and_memory_peak() {
        let (dir, script) = fake_vmm(
            "timing",
            "echo 'peapod-vmm: timing setup_us=1500' >&2\nsleep 0.2\nexit 3",
        );
        let mut v = VmmProcess::spawn(&args(&script.display().to_string()))
            .unwrap()
            .with_memory_sampler();
        let status = v.wait_or_kill(Duration::from_secs(10)).unwrap();
        assert_eq!(status.code(), Some(3));
        // The stderr reader was joined on exit: the timing line is there.
        assert_eq!(v.setup_us(), Some(1500));
        let (setup_us, peak) = v.finish();
        assert_eq!(setup_us, Some(1500));
        assert!(peak.samples > 0, "{peak:?}");
        assert!(peak.rss_anon_file_kib > 0, "{peak:?}");
        std::fs::remove_dir_all(&dir).unwrap();

        // Without the sampler there is no peak, and no timing line means no figure.
        let (dir, script) = fake_vmm("notiming", "echo other >&2");
        let mut v = VmmProcess::spawn(&args(&script.display().to_string())).unwrap();
        assert!(v.wait_or_kill(Duration::from_secs(10)).unwrap().success());
        assert_eq!(v.finish(), (None, MemoryPeak::default()));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
