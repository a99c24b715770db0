//! Drives the `boot-e2e` binary against a fake `peapod-vmm` (this test binary re-executed with
//! `FAKE_VMM_MODE` set) that plays the guest's side of the boot probe protocol over hybrid vsock
//! Unix sockets: checks that boot-e2e passes a correct boot and fails loudly on a wrong payload,
//! a wrong exit status, a silent guest and a missing console line.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::process::{Command, Output};

use boot_probe::console::{self, figure_line};
use boot_probe::{
    GUEST_PING, GUEST_PONG, GUEST_TO_HOST_PORT, HOST_PING, HOST_PONG, HOST_TO_GUEST_PORT,
};

const MODE_ENV: &str = "FAKE_VMM_MODE";

fn main() {
    if let Ok(mode) = std::env::var(MODE_ENV) {
        std::process::exit(fake_vmm(&mode));
    }
    let cases: [(&str, fn()); 5] = [
        ("passes_a_correct_boot", passes_a_correct_boot),
        ("fails_on_wrong_payload", fails_on_wrong_payload),
        ("fails_on_wrong_exit_status", fails_on_wrong_exit_status),
        ("fails_on_silent_guest", fails_on_silent_guest),
        (
            "fails_on_missing_console_line",
            fails_on_missing_console_line,
        ),
    ];
    for (name, case) in cases {
        eprint!("test {name} ... ");
        case();
        eprintln!("ok");
    }
}

fn arg_value(args: &[String], name: &str) -> PathBuf {
    let i = args.iter().position(|a| a == name).unwrap();
    PathBuf::from(&args[i + 1])
}

fn read_line(s: &mut UnixStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut b = [0u8; 1];
    while s.read(&mut b).unwrap() == 1 {
        out.push(b[0]);
        if b[0] == b'\n' {
            break;
        }
    }
    out
}

/// The fake VMM: the guest side of the protocol, console lines, timing line, exit status.
fn fake_vmm(mode: &str) -> i32 {
    let args: Vec<String> = std::env::args().collect();
    let uds = arg_value(&args, "--vsock-uds");
    let console_path = arg_value(&args, "--console");
    assert_eq!(std::env::var("PEAPOD_VMM_TIMING").unwrap(), "1");
    eprintln!("peapod-vmm: timing setup_us=1234");
    let mut con = std::fs::File::create(&console_path).unwrap();
    let mut line = |l: &str| writeln!(con, "{l}\r").unwrap();
    line("[    0.000000] Linux version 6.1.0-peapod");
    line(console::HELLO);
    line(&figure_line(console::KEY_UPTIME_MS, 120));
    line(&figure_line(console::KEY_BOOTTIME_US, 119_500));
    if mode == "silent" {
        std::thread::sleep(std::time::Duration::from_secs(30));
        return 0;
    }
    let listener = UnixListener::bind(&uds).unwrap();
    let mut to_host =
        UnixStream::connect(format!("{}_{GUEST_TO_HOST_PORT}", uds.display())).unwrap();
    to_host.write_all(GUEST_PING).unwrap();
    assert_eq!(read_line(&mut to_host), HOST_PONG);
    line(console::GUEST_TO_HOST_OK);
    let (mut from_host, _) = listener.accept().unwrap();
    assert_eq!(
        read_line(&mut from_host),
        format!("CONNECT {HOST_TO_GUEST_PORT}\n").as_bytes()
    );
    from_host.write_all(b"OK 1073741824\n").unwrap();
    assert_eq!(read_line(&mut from_host), HOST_PING);
    if mode == "bad-pong" {
        from_host.write_all(b"something else\n").unwrap();
        return 0;
    }
    from_host.write_all(GUEST_PONG).unwrap();
    if mode != "no-host-to-guest-line" {
        line(console::HOST_TO_GUEST_OK);
    }
    line(&figure_line(console::KEY_INIT_TO_VSOCK_US, 3_000));
    line(console::SHUTDOWN);
    if mode == "exit3" {
        3
    } else {
        0
    }
}

fn run_e2e(mode: &str, extra: &[&str]) -> Output {
    let dir = std::env::temp_dir().join(format!("peapod-fake-vmm-{}-{mode}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kernel = dir.join("vmlinux");
    let initrd = dir.join("initrd");
    std::fs::write(&kernel, b"not a kernel").unwrap();
    std::fs::write(&initrd, b"not an initrd").unwrap();
    let me = std::env::current_exe().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_boot-e2e"))
        .args(["--vmm".as_ref(), me.as_os_str()])
        .args(["--kernel".as_ref(), kernel.as_os_str()])
        .args(["--initrd".as_ref(), initrd.as_os_str()])
        .args(["--workdir".as_ref(), dir.join("work").as_os_str()])
        .args(extra)
        .env(MODE_ENV, mode)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    out
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn assert_fails(out: &Output, needle: &str) {
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {err}");
    assert!(err.contains("boot-e2e: FAIL"), "stderr: {err}");
    assert!(err.contains(needle), "expected {needle:?} in stderr: {err}");
    assert!(
        err.contains("===== guest console"),
        "console not dumped: {err}"
    );
}

fn passes_a_correct_boot() {
    let out = run_e2e("ok", &[]);
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "stdout: {stdout}\nstderr: {}",
        text(&out.stderr)
    );
    assert!(stdout.contains("boot-e2e: PASS"), "{stdout}");
    assert!(stdout.contains("setup_us=1234 uptime_at_init_ms=120 boottime_at_init_us=119500 init_to_first_vsock_us=3000"), "{stdout}");
    assert!(stdout.contains("vmm_peak_rss_kib="), "{stdout}");
}

fn fails_on_wrong_payload() {
    assert_fails(&run_e2e("bad-pong", &[]), "host->guest reply");
}

fn fails_on_wrong_exit_status() {
    assert_fails(&run_e2e("exit3", &[]), "vmm exit status");
}

fn fails_on_silent_guest() {
    assert_fails(&run_e2e("silent", &["--timeout-secs", "2"]), "guest->host");
}

fn fails_on_missing_console_line() {
    assert_fails(
        &run_e2e("no-host-to-guest-line", &[]),
        console::HOST_TO_GUEST_OK,
    );
}
