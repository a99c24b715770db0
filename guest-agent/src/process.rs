//! Process launching shared by containers and exec sessions: argv/env/PATH preparation done
//! before the fork, the child's last steps (identity, stdio, execve) and the error pipe that
//! reports a failed start to the parent.

use std::ffi::CString;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use nix::fcntl::OFlag;
use nix::sys::signal::{sigprocmask, SigSet, SigmaskHow};
use nix::unistd::{dup2, execve, pipe2, setgid, setgroups, setuid, Gid, Uid};

use crate::users::Ids;

/// Default `PATH` when the environment has none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Errors preparing or starting a process.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// A string has a nul byte.
    #[error("argument or environment contains a nul byte")]
    Nul,
    /// A system call in the parent failed.
    #[error("{0}: {1}")]
    Sys(&'static str, nix::Error),
    /// The child failed before execve.
    #[error("start failed: {0}")]
    Start(String),
}

/// Everything the child needs, allocated before the fork.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// argv.
    pub argv: Vec<CString>,
    /// Paths to try for argv[0], in order.
    pub candidates: Vec<CString>,
    /// `KEY=VALUE` entries.
    pub env: Vec<CString>,
    /// Working directory.
    pub workdir: CString,
    /// Identity.
    pub ids: Ids,
}

fn cstr(s: &str) -> Result<CString, ProcessError> {
    CString::new(s).map_err(|_| ProcessError::Nul)
}

/// Builds the argv, env and PATH candidates.
pub fn prepare(
    argv: &[String],
    env: &[(String, String)],
    workdir: &str,
    ids: Ids,
) -> Result<Prepared, ProcessError> {
    let first = argv
        .first()
        .ok_or(ProcessError::Start("empty argv".into()))?;
    let path = env
        .iter()
        .rev()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.as_str())
        .unwrap_or(DEFAULT_PATH);
    let candidates = if first.contains('/') {
        vec![cstr(first)?]
    } else {
        path.split(':')
            .filter(|d| !d.is_empty())
            .map(|d| cstr(&format!("{}/{}", d.trim_end_matches('/'), first)))
            .collect::<Result<_, _>>()?
    };
    let mut envc = Vec::with_capacity(env.len() + 1);
    if !env.iter().any(|(k, _)| k == "PATH") {
        envc.push(cstr(&format!("PATH={DEFAULT_PATH}"))?);
    }
    for (k, v) in env {
        envc.push(cstr(&format!("{k}={v}"))?);
    }
    Ok(Prepared {
        argv: argv.iter().map(|a| cstr(a)).collect::<Result<_, _>>()?,
        candidates,
        env: envc,
        workdir: cstr(workdir)?,
        ids,
    })
}

/// The error pipe: the child writes a message on failure; close-on-exec makes success silent.
pub struct ErrorPipe {
    read: OwnedFd,
    write: OwnedFd,
}

impl ErrorPipe {
    /// Creates the pipe.
    pub fn new() -> Result<Self, ProcessError> {
        let (read, write) = pipe2(OFlag::O_CLOEXEC).map_err(|e| ProcessError::Sys("pipe", e))?;
        Ok(Self { read, write })
    }

    /// Child side: the write end.
    pub fn child_fd(&self) -> RawFd {
        self.write.as_raw_fd()
    }

    /// Parent side after the fork: waits for execve or a failure message.
    pub fn wait(self) -> Result<(), ProcessError> {
        drop(self.write);
        let mut msg = String::new();
        let mut f = File::from(self.read);
        let _ = f.by_ref().take(4096).read_to_string(&mut msg);
        if msg.is_empty() {
            Ok(())
        } else {
            Err(ProcessError::Start(msg))
        }
    }
}

/// Child: reports `msg` on the error pipe and exits 127.
pub fn child_fail(err_fd: RawFd, msg: &str) -> ! {
    let _ = nix::unistd::write(
        // SAFETY: the fd is the error pipe's write end, open for the child's lifetime.
        unsafe { std::os::fd::BorrowedFd::borrow_raw(err_fd) },
        msg.as_bytes(),
    );
    // SAFETY: _exit is async-signal-safe and ends the forked child without unwinding.
    unsafe { libc::_exit(127) }
}

/// Child: moves the given fds to 0, 1 and 2.
pub fn child_stdio(stdin: RawFd, stdout: RawFd, stderr: RawFd) -> Result<(), String> {
    for (fd, target) in [(stdin, 0), (stdout, 1), (stderr, 2)] {
        if fd != target {
            dup2(fd, target).map_err(|e| format!("dup2: {e}"))?;
        }
    }
    Ok(())
}

/// Child: drops to the identity, unblocks signals, changes directory and execs. Returns only
/// on failure.
pub fn child_exec(p: &Prepared) -> String {
    let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
    if let Err(e) = std::fs::create_dir_all(p.workdir.to_string_lossy().as_ref()) {
        return format!("working directory {:?}: {e}", p.workdir);
    }
    if let Err(e) = nix::unistd::chdir(p.workdir.as_c_str()) {
        return format!("chdir {:?}: {e}", p.workdir);
    }
    if let Err(e) = setgroups(&[Gid::from_raw(p.ids.gid)]) {
        return format!("setgroups: {e}");
    }
    if let Err(e) = setgid(Gid::from_raw(p.ids.gid)) {
        return format!("setgid: {e}");
    }
    if let Err(e) = setuid(Uid::from_raw(p.ids.uid)) {
        return format!("setuid: {e}");
    }
    let mut last = nix::errno::Errno::ENOENT;
    for c in &p.candidates {
        let Err(e) = execve(c, &p.argv, &p.env);
        if e != nix::errno::Errno::ENOENT || last == nix::errno::Errno::ENOENT {
            last = e;
        }
    }
    format!(
        "exec {:?}: {}",
        p.argv
            .first()
            .map(|a| a.to_string_lossy())
            .unwrap_or_default(),
        last
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prepares_path_candidates_and_env() {
        let ids = Ids { uid: 0, gid: 0 };
        let p = prepare(
            &["sh".into(), "-c".into(), "echo".into()],
            &[("PATH".into(), "/a:/b/".into()), ("X".into(), "1".into())],
            "/",
            ids,
        )
        .unwrap();
        assert_eq!(
            p.candidates,
            vec![cstr("/a/sh").unwrap(), cstr("/b/sh").unwrap()]
        );
        assert_eq!(
            p.env,
            vec![cstr("PATH=/a:/b/").unwrap(), cstr("X=1").unwrap()]
        );
        let q = prepare(&["/bin/true".into()], &[], "/", ids).unwrap();
        assert_eq!(q.candidates, vec![cstr("/bin/true").unwrap()]);
        assert_eq!(q.env[0].to_str().unwrap(), format!("PATH={DEFAULT_PATH}"));
        assert!(prepare(&["a\0b".into()], &[], "/", ids).is_err());
        assert!(prepare(&[], &[], "/", ids).is_err());
    }
}
