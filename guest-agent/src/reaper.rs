//! Reaps every child (containers, exec processes and, as PID 1, every orphan) and hands the
//! exit status of the processes the agent started to whoever waits for them.

use std::collections::HashMap;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    /// Exit code; 128+signal when killed.
    pub code: i32,
    /// Killing signal.
    pub signal: Option<i32>,
}

impl Exit {
    /// From a wait status; `None` for stops and continues.
    pub fn from_status(s: WaitStatus) -> Option<(Pid, Exit)> {
        match s {
            WaitStatus::Exited(pid, code) => Some((pid, Exit { code, signal: None })),
            WaitStatus::Signaled(pid, sig, _) => Some((
                pid,
                Exit {
                    code: 128 + sig as i32,
                    signal: Some(sig as i32),
                },
            )),
            _ => None,
        }
    }
}

#[derive(Default)]
struct State {
    waiters: HashMap<i32, Sender<Exit>>,
}

/// The reaper; clone the `Arc` to share it.
#[derive(Default)]
pub struct Reaper {
    state: Mutex<State>,
    spawned: Condvar,
}

/// Held while forking a child so the reaper cannot reap it before it is registered.
pub struct SpawnGuard<'a> {
    reaper: &'a Reaper,
    state: MutexGuard<'a, State>,
}

impl SpawnGuard<'_> {
    /// Registers the new child; its exit arrives on the receiver.
    pub fn register(mut self, pid: i32) -> Receiver<Exit> {
        let (tx, rx) = channel();
        self.state.waiters.insert(pid, tx);
        drop(self.state);
        self.reaper.spawned.notify_all();
        rx
    }
}

impl Reaper {
    /// A new reaper (start its loop with [`Reaper::run`]).
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Locks the reaper for a fork; call [`SpawnGuard::register`] with the child's PID.
    pub fn lock_for_spawn(&self) -> SpawnGuard<'_> {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        SpawnGuard {
            reaper: self,
            state,
        }
    }

    fn deliver(&self, pid: Pid, exit: Exit) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = st.waiters.remove(&pid.as_raw()) {
            let _ = tx.send(exit);
        }
    }

    /// The reaping loop; never returns.
    pub fn run(&self) -> ! {
        loop {
            match waitpid(None::<Pid>, None) {
                Ok(s) => {
                    if let Some((pid, exit)) = Exit::from_status(s) {
                        self.deliver(pid, exit);
                    }
                }
                Err(Errno::EINTR) => {}
                Err(_) => {
                    // No children: sleep until something is spawned (or poll for orphans).
                    let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
                    let _ = self.spawned.wait_timeout(st, Duration::from_millis(200));
                }
            }
        }
    }
}
