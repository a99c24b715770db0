//! The `peapod-vmm` child process: spawning it, capturing its timing line from stderr,
//! sampling its memory, and waiting for it with a deadline.

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
    /// The VMM did not exit before the deadline.
    #[error("the vmm did not exit within {0:?}")]
    Timeout(Duration),
}

/// What to start.
#[derive(Debug, Clone)]
pub struct VmmArgs {
    /// `peapod-vmm` binary.
    pub vmm: PathBuf,
    /// Guest kernel.
    pub kernel: PathBuf,
    /// Initramfs.
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

/// A running VMM with its stderr reader and memory sampler.
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
    /// Spawns the VMM with `PEAPOD_VMM_TIMING=1` and starts the stderr reader and the sampler.
    pub fn spawn(args: &VmmArgs) -> Result<Self, VmmProcessError> {
        let mut cmd = Command::new(&args.vmm);
        cmd.arg("--kernel")
            .arg(&args.kernel)
            .arg("--initrd")
            .arg(&args.initrd)
            .arg("--vsock-uds")
            .arg(&args.vsock_uds)
            .arg("--console")
            .arg(&args.console)
            .arg("--memory-mib")
            .arg(args.memory_mib.to_string())
            .arg("--vcpus")
            .arg(args.vcpus.to_string());
        if let Some(c) = &args.cmdline {
            cmd.arg("--cmdline").arg(c);
        }
        cmd.env("PEAPOD_VMM_TIMING", "1")
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

        let stop_sampler = Arc::new(AtomicBool::new(false));
        let pid = child.id();
        let stop = Arc::clone(&stop_sampler);
        let sampler = thread::spawn(move || sample_memory(pid, &stop));

        Ok(Self {
            child,
            spawned_at,
            setup_us,
            stderr_lines,
            stop_sampler,
            sampler: Some(sampler),
            stderr_reader,
        })
    }

    /// The exit status if the VMM already exited.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>, VmmProcessError> {
        self.child.try_wait().map_err(VmmProcessError::Wait)
    }

    /// Waits up to `timeout` for the VMM to exit; kills it on timeout.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<ExitStatus, VmmProcessError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait()? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                self.kill();
                return Err(VmmProcessError::Timeout(timeout));
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Kills and reaps the VMM (idempotent).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops the sampler and the stderr reader (the VMM must have exited) and returns the
    /// timing figure and the memory peak.
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
        let setup = self.setup_us.lock().ok().and_then(|s| *s);
        (setup, peak)
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
}
