//! Tests of the reconnecting control connection against a fake agent that drops connections
//! at chosen points.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::thread;

use agent_protocol::frame::{read_frame, read_preamble, write_frame, write_preamble};
use agent_protocol::{
    ContainerSpec, Message, PodPhase, PodSpec, PodStatus, Resources, RestartPolicy,
};

use super::*;

/// What a fake agent connection does with the request it drops on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Drop {
    /// Closes before reading the request (it never arrives).
    BeforeRequest,
    /// Carries the request out, then closes without answering.
    AfterHandling,
}

/// One connection's script: answer `answered` requests, then drop as `how`.
#[derive(Clone, Copy, Debug)]
struct Script {
    answered: usize,
    how: Drop,
}

#[derive(Default)]
struct Agent {
    pod: bool,
    creates: u32,
    connections: u32,
    /// Scripts for the next connections; later ones answer forever.
    scripts: VecDeque<Script>,
    /// Every connection is refused by something else than the VMM.
    refuse: bool,
    /// The VMM's socket is gone (the VM stopped).
    gone: bool,
    /// Connections tried.
    attempts: u32,
}

fn handle(agent: &Mutex<Agent>, msg: &Message) -> Message {
    let mut a = agent.lock().unwrap();
    match msg {
        Message::GetStatus if a.pod => Message::Status(PodStatus {
            phase: PodPhase::Running,
            reason: None,
            init_containers: vec![],
            containers: vec![],
        }),
        Message::GetStatus => Message::Error {
            kind: ErrorKind::NotFound,
            message: "no pod".into(),
        },
        Message::CreatePod(_) if a.pod => Message::Error {
            kind: ErrorKind::InvalidRequest,
            message: "a pod is already running".into(),
        },
        Message::CreatePod(_) => {
            a.pod = true;
            a.creates += 1;
            Message::Ok
        }
        Message::Ping => Message::Pong,
        _ => Message::Error {
            kind: ErrorKind::InvalidRequest,
            message: "not supported by the fake".into(),
        },
    }
}

fn serve(agent: Arc<Mutex<Agent>>, mut s: UnixStream, script: Option<Script>) {
    write_preamble(&mut s).unwrap();
    read_preamble(&mut s).unwrap();
    assert!(matches!(read_frame(&mut s).unwrap(), Message::Hello(_)));
    write_frame(
        &mut s,
        &Message::HelloOk {
            agent: "fake".into(),
        },
    )
    .unwrap();
    let mut answered = 0;
    loop {
        if let Some(sc) = script {
            if answered == sc.answered && sc.how == Drop::BeforeRequest {
                return;
            }
        }
        let Ok(msg) = read_frame(&mut s) else { return };
        let reply = handle(&agent, &msg);
        if let Some(sc) = script {
            if answered == sc.answered {
                return;
            }
        }
        if write_frame(&mut s, &reply).is_err() {
            return;
        }
        answered += 1;
    }
}

fn control(agent: &Arc<Mutex<Agent>>) -> Control {
    let agent = agent.clone();
    let connect: Connector = Box::new(move || {
        let script = {
            let mut a = agent.lock().unwrap();
            a.attempts += 1;
            if a.gone {
                return Err(AgentError::Vsock(
                    agent_protocol::hybrid_vsock::HybridVsockError::Connect {
                        path: "/gone".into(),
                        source: std::io::ErrorKind::NotFound.into(),
                    },
                ));
            }
            if a.refuse {
                return Err(AgentError::Aborted("refused".into()));
            }
            a.connections += 1;
            a.scripts.pop_front()
        };
        let (ours, theirs) = UnixStream::pair()?;
        let agent = agent.clone();
        thread::spawn(move || serve(agent, theirs, script));
        Ok(ControlClient::new(ours)?)
    });
    let mut c = Control::with_connector(connect, None);
    c.set_delay(Duration::from_millis(1));
    c
}

fn spec() -> PodSpec {
    PodSpec {
        name: "p".into(),
        namespace: "default".into(),
        uid: "u".into(),
        hostname: "p".into(),
        init_containers: vec![],
        containers: vec![ContainerSpec {
            name: "c".into(),
            rootfs: "/run/c".into(),
            argv: vec!["sh".into()],
            env: vec![],
            working_dir: None,
            user: None,
            mounts: vec![],
            resources: Resources::default(),
            tty: false,
            stdin: false,
        }],
        restart_policy: RestartPolicy::Never,
        share_process_namespace: false,
        termination_grace_seconds: 1,
        active_deadline_seconds: None,
        resolv_conf: None,
        test_backoff_base_ms: None,
        filesystems: vec![],
        scratch_bytes: None,
    }
}

fn agent(scripts: &[Script], pod: bool) -> Arc<Mutex<Agent>> {
    Arc::new(Mutex::new(Agent {
        pod,
        scripts: scripts.iter().copied().collect(),
        ..Agent::default()
    }))
}

#[test]
fn a_dropped_connection_is_reopened_and_the_status_request_sent_again() {
    let a = agent(
        &[Script {
            answered: 2,
            how: Drop::BeforeRequest,
        }],
        true,
    );
    let mut c = control(&a);
    for _ in 0..5 {
        assert_eq!(c.status().unwrap().phase, PodPhase::Running);
    }
    assert_eq!(a.lock().unwrap().connections, 2);
    assert_eq!(c.reconnects(), 1);
    let notes = c.take_notes().join("\n");
    assert!(notes.contains("lost during a status request"), "{notes}");
    assert!(c.take_notes().is_empty());
}

#[test]
fn create_pod_whose_answer_was_lost_is_not_sent_twice() {
    let a = agent(
        &[Script {
            answered: 0,
            how: Drop::AfterHandling,
        }],
        false,
    );
    let mut c = control(&a);
    c.create_pod(&spec()).unwrap();
    let a = a.lock().unwrap();
    assert_eq!((a.creates, a.connections), (1, 2));
}

#[test]
fn create_pod_lost_before_the_agent_saw_it_is_sent_again() {
    let a = agent(
        &[Script {
            answered: 0,
            how: Drop::BeforeRequest,
        }],
        false,
    );
    let mut c = control(&a);
    c.create_pod(&spec()).unwrap();
    let a = a.lock().unwrap();
    assert_eq!((a.creates, a.connections, a.pod), (1, 2, true));
}

#[test]
fn reconnects_are_bounded() {
    let drop_all = Script {
        answered: 0,
        how: Drop::BeforeRequest,
    };
    let a = agent(&[drop_all; 20], true);
    let mut c = control(&a);
    let e = c.status().unwrap_err();
    assert!(
        matches!(&e, AgentError::Client(ce) if connection_lost(ce)),
        "{e}"
    );
    assert_eq!(a.lock().unwrap().connections, RECONNECT_ATTEMPTS);
    // Connecting fails: also a bounded number of times.
    a.lock().unwrap().refuse = true;
    let before = a.lock().unwrap().attempts;
    assert!(c.status().is_err());
    assert_eq!(a.lock().unwrap().attempts - before, RECONNECT_ATTEMPTS);
}

#[test]
fn a_vmm_that_is_gone_ends_the_reconnects_at_once() {
    let a = agent(
        &[Script {
            answered: 1,
            how: Drop::BeforeRequest,
        }],
        true,
    );
    let mut c = control(&a);
    c.status().unwrap();
    a.lock().unwrap().gone = true;
    let e = c.status().unwrap_err();
    assert!(e.vmm_gone(), "{e}");
    // The first connection, then one reconnect that found the socket gone.
    assert_eq!(a.lock().unwrap().attempts, 2);
}

#[test]
fn agent_errors_are_answers_not_lost_connections() {
    let a = agent(&[], false);
    let mut c = control(&a);
    let e = c.status().unwrap_err();
    assert!(e.to_string().contains("no pod"), "{e}");
    assert_eq!(a.lock().unwrap().connections, 1);
}

#[test]
fn only_transport_failures_count_as_lost() {
    use std::io::{Error, ErrorKind as IoKind};
    let io = |k| ClientError::Frame(FrameError::Io(Error::from(k)));
    assert!(connection_lost(&io(IoKind::BrokenPipe)));
    assert!(connection_lost(&io(IoKind::ConnectionReset)));
    assert!(connection_lost(&ClientError::Frame(FrameError::Closed)));
    assert!(connection_lost(&ClientError::Frame(FrameError::Truncated)));
    assert!(!connection_lost(&io(IoKind::WouldBlock)), "a timeout");
    assert!(!connection_lost(&io(IoKind::TimedOut)), "a timeout");
    assert!(!connection_lost(&ClientError::Unexpected("x".into())));
    assert!(!connection_lost(&ClientError::Frame(FrameError::TooLarge(
        9
    ))));
}
