//! CLI tests for `peapod logs` on a fake pod directory (no VM): `-f` follows lines appended
//! while the test holds the pod's lock and ends once it is released; `--tail`,
//! `--all-containers`, `--prefix` and the error cases.

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use pod_runtime::state::{PodDir, PodRecord};

/// A temporary `PEAPOD_ROOT`, removed on drop.
struct Root(PathBuf);

impl Root {
    fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!("peapod-logs-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Creates pod `default/p` with the given containers; the returned `PodDir` holds the lock.
fn make_pod(root: &Root, init: &[&str], apps: &[&str]) -> PodDir {
    let dir = PodDir::create(&root.0, "default", "p").unwrap();
    dir.write_json(
        "pod.json",
        &PodRecord {
            namespace: "default".into(),
            name: "p".into(),
            uid: "uid".into(),
            init_containers: init.iter().map(|s| s.to_string()).collect(),
            containers: apps.iter().map(|s| s.to_string()).collect(),
            owner_pid: std::process::id(),
        },
    )
    .unwrap();
    std::fs::create_dir_all(dir.path().join("logs")).unwrap();
    dir
}

fn append(dir: &Path, container: &str, data: &str) {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("logs").join(format!("{container}.log")))
        .unwrap();
    f.write_all(data.as_bytes()).unwrap();
}

fn cmd(root: &Root, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_peapod"));
    c.env("PEAPOD_ROOT", &root.0)
        .arg("logs")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

fn run(root: &Root, args: &[&str]) -> Output {
    cmd(root, args).output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Lines of the child's stdout, read on a thread.
fn lines_of(out: ChildStdout) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines() {
            if tx.send(l.unwrap()).is_err() {
                break;
            }
        }
    });
    rx
}

fn next(rx: &Receiver<String>) -> String {
    rx.recv_timeout(Duration::from_secs(10))
        .expect("a line within 10 s")
}

fn wait_exit(child: &mut Child, within: Duration) -> i32 {
    let start = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s.code().unwrap_or(-1);
        }
        if start.elapsed() > within {
            let _ = child.kill();
            panic!("peapod logs -f did not exit within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

const T: &str = "2026-11-22T10:00:00.000000000Z";

#[test]
fn follow_prints_appended_lines_and_ends_when_the_pod_stops() {
    let root = Root::new("follow");
    let pod = make_pod(&root, &[], &["app"]);
    let dir = pod.path().to_path_buf();
    append(
        &dir,
        "app",
        &format!("{T} stdout F old1\n{T} stdout F old2\n"),
    );
    let mut child = cmd(&root, &["p", "-f", "--timestamps"]).spawn().unwrap();
    let rx = lines_of(child.stdout.take().unwrap());
    assert_eq!(next(&rx), format!("{T} old1"));
    assert_eq!(next(&rx), format!("{T} old2"));
    // A partial record joined with the next full one.
    append(&dir, "app", &format!("{T} stdout P hello \n"));
    std::thread::sleep(Duration::from_millis(400));
    append(&dir, "app", &format!("{T} stdout F world\n"));
    assert_eq!(next(&rx), format!("{T} hello world"));
    // One record written in two writes.
    append(&dir, "app", &format!("{T} stderr F spl"));
    std::thread::sleep(Duration::from_millis(400));
    assert!(rx.try_recv().is_err(), "half a line was printed");
    append(&dir, "app", "it\n");
    assert_eq!(next(&rx), format!("{T} split"));
    // Still running: the command waits.
    std::thread::sleep(Duration::from_millis(400));
    assert!(
        child.try_wait().unwrap().is_none(),
        "exited while the pod runs"
    );
    append(&dir, "app", &format!("{T} stdout F last\n"));
    drop(pod); // the pod's `peapod run` is gone
    let start = Instant::now();
    assert_eq!(wait_exit(&mut child, Duration::from_secs(5)), 0);
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(next(&rx), format!("{T} last"));
    assert!(rx.recv_timeout(Duration::from_secs(1)).is_err());
}

#[test]
fn follow_waits_for_a_log_file_that_does_not_exist_yet() {
    let root = Root::new("wait");
    let pod = make_pod(&root, &["init"], &["app"]);
    let dir = pod.path().to_path_buf();
    let mut child = cmd(&root, &["p", "-f", "--all-containers", "--tail", "1"])
        .spawn()
        .unwrap();
    let rx = lines_of(child.stdout.take().unwrap());
    std::thread::sleep(Duration::from_millis(300));
    append(&dir, "init", &format!("{T} stdout F i1\n"));
    assert_eq!(next(&rx), "[init] i1");
    append(&dir, "app", &format!("{T} stdout F a1\n{T} stdout F a2\n"));
    assert_eq!(next(&rx), "[app] a1");
    assert_eq!(next(&rx), "[app] a2");
    drop(pod);
    assert_eq!(wait_exit(&mut child, Duration::from_secs(5)), 0);
}

#[test]
fn tail_all_containers_prefix_and_a_stopped_pod() {
    let root = Root::new("tail");
    let pod = make_pod(&root, &["init"], &["web", "side"]);
    let dir = pod.path().to_path_buf();
    drop(pod); // finished pod: -f prints and exits
    append(&dir, "init", &format!("{T} stdout F i1\n{T} stdout F i2\n"));
    append(
        &dir,
        "web",
        &format!("{T} stdout F w1\n{T} stderr F w2\n{T} stdout P w\n{T} stdout F 3\n"),
    );
    append(&dir, "side", &format!("{T} stdout F s1\n"));

    let out = run(&root, &["p", "--tail", "2"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "w2\nw3\n");

    let out = run(&root, &["p", "--tail", "-1", "-c", "init"]);
    assert_eq!(text(&out.stdout), "i1\ni2\n");

    let out = run(&root, &["p", "--tail", "0"]);
    assert_eq!(text(&out.stdout), "");

    let out = run(&root, &["p", "--all-containers", "-f"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "[init] i1\n[init] i2\n[web] w1\n[web] w2\n[web] w3\n[side] s1\n"
    );

    let out = run(&root, &["p", "--all-containers", "--tail", "1"]);
    assert_eq!(text(&out.stdout), "[init] i2\n[web] w3\n[side] s1\n");

    let out = run(&root, &["p", "-c", "side", "--prefix", "--timestamps"]);
    assert_eq!(text(&out.stdout), format!("[side] {T} s1\n"));
}

#[test]
fn bad_input_is_reported() {
    let root = Root::new("errors");
    let pod = make_pod(&root, &[], &["app"]);

    // (arguments, exit code, what stderr must say). A missing pod or container is an error
    // like `exec`'s (1); usage errors are clap's (2), like every other misused flag.
    let cases: [(&[&str], i32, &str); 5] = [
        (&["nope"], 1, "pod default/nope not found"),
        (&["p", "-c", "db"], 1, "container db is not valid for pod p"),
        (
            &["p", "-c", "app", "--all-containers"],
            2,
            "cannot be used with",
        ),
        (&["p", "--tail", "-5"], 2, "-1 (all) or a count >= 0"),
        (&["p", "--tail", "many"], 2, "not a number"),
    ];
    for (args, code, message) in cases {
        let out = run(&root, args);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {stderr}");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
    }

    drop(pod);
}
