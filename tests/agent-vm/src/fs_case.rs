//! The virtio-fs case: a pod whose containers run from an image root shared over virtio-fs
//! (overlayfs on a virtiofs lower layer), with an emptyDir on a read-write share, a `subPath`,
//! and a scratch limit; plus `GetGuestInfo`.

use std::time::Instant;

use agent_protocol::GuestInfo;
use anyhow::{ensure, Context, Result};

use crate::pods::{self, FROM_GUEST, IMAGE_MOUNT, ROOT_FILE, SCRATCH_BYTES, SUB_PATH};
use crate::scenario::{control, exec, follow_log_until, wait_status, Figures, Settings};
use crate::shares::{FROM_HOST_TEXT, IMAGE_TAG};

/// Checks `GetGuestInfo` against the VM's size; returns it.
pub fn guest_info(s: &Settings, memory_mib: u32) -> Result<GuestInfo> {
    let g = control(s)?.guest_info().context("get guest info")?;
    ensure!(
        g.agent_ready_ns > 0 && g.agent_ready_ns <= g.uptime_ns,
        "guest info: agent ready at {} ns, uptime {} ns",
        g.agent_ready_ns,
        g.uptime_ns
    );
    let ram = u64::from(memory_mib) << 20;
    // The kernel keeps some memory for itself; MemTotal is below the VM's RAM, not far below.
    ensure!(
        g.mem_total_bytes <= ram && g.mem_total_bytes > ram / 2,
        "guest info: MemTotal {} for a {memory_mib} MiB VM",
        g.mem_total_bytes
    );
    ensure!(
        g.mem_available_bytes > 0 && g.mem_available_bytes <= g.mem_total_bytes,
        "guest info: MemAvailable {} of {}",
        g.mem_available_bytes,
        g.mem_total_bytes
    );
    Ok(g)
}

/// The virtio-fs pod; see [`pods::virtiofs_pod`].
pub fn virtiofs_pod(s: &Settings, f: &mut Figures) -> Result<()> {
    let shares = &s.shares;
    let mut ctl = control(s)?;
    let t0 = Instant::now();
    ctl.create_pod(&pods::virtiofs_pod())
        .context("create the virtio-fs pod")?;
    let st = wait_status(s, &mut ctl, "both virtio-fs containers running", |st| {
        crate::scenario::all_running(st)
    })?;
    f.virtiofs_create_to_running = t0.elapsed();
    println!(
        "agent-vm: ok: containers running from the virtio-fs image root after {:.2?} (phase {:?})",
        f.virtiofs_create_to_running, st.phase
    );
    follow_log_until(s, "writer", "writer-done")
        .and_then(|log| {
            ensure!(
                log.contains(FROM_HOST_TEXT),
                "the writer did not print the host's file: {log:?}"
            );
            Ok(())
        })
        .context("writer")?;
    follow_log_until(s, "reader", FROM_GUEST).context("reader")?;
    println!("agent-vm: ok: emptyDir over virtio-fs: host -> guest and writer -> reader");

    // The root is an overlay whose lower layer is the virtio-fs share.
    let (mounts, _, code) = exec(s, "writer", &["cat", "/proc/mounts"])?;
    let root = mounts
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some("/"))
        .unwrap_or_default()
        .to_string();
    ensure!(
        code == 0
            && root.starts_with("overlay / overlay")
            && root.contains(&format!("lowerdir={IMAGE_MOUNT}")),
        "the writer's root is not an overlay on {IMAGE_MOUNT}: {root:?}"
    );

    // Private writable roots; nothing reaches the image share on the host.
    let (out, err, code) = exec(s, "writer", &["cat", ROOT_FILE])?;
    ensure!(
        (code, out.as_str()) == (0, "private\n"),
        "writer's {ROOT_FILE}: code {code} {out:?} {err:?}"
    );
    let (_, _, code) = exec(s, "reader", &["test", "-e", ROOT_FILE])?;
    ensure!(
        code == 1,
        "the reader sees the writer's {ROOT_FILE} (code {code})"
    );
    let leaked = shares.image.join(ROOT_FILE.trim_start_matches('/'));
    ensure!(
        !leaked.exists(),
        "a write to a container root reached the host: {}",
        leaked.display()
    );

    // Guest writes in the emptyDir and its subPath land on the host.
    let host_file = shares.empty_dir().join(FROM_GUEST);
    let text = std::fs::read_to_string(&host_file)
        .with_context(|| format!("read {} on the host", host_file.display()))?;
    ensure!(
        text == format!("{FROM_GUEST}\n"),
        "{}: {text:?}",
        host_file.display()
    );
    let sub = shares.empty_dir().join(SUB_PATH).join("x");
    let text = std::fs::read_to_string(&sub)
        .with_context(|| format!("read the subPath file {} on the host", sub.display()))?;
    ensure!(text == "in-subpath\n", "{}: {text:?}", sub.display());
    let (_, _, code) = exec(s, "reader", &["touch", "/data/ro-test"])?;
    ensure!(code != 0, "a read-only emptyDir mount accepted a write");
    println!("agent-vm: ok: private roots ({ROOT_FILE} not on the host), emptyDir and subPath writes on the host, readOnly enforced");

    // 1 GiB into the root: ENOSPC at the scratch limit; the pod and the agent go on.
    let t = Instant::now();
    let (_, err, code) = exec(
        s,
        "writer",
        &["dd", "if=/dev/zero", "of=/big", "bs=1M", "count=1024"],
    )?;
    f.fill_scratch = t.elapsed();
    ensure!(
        code != 0 && err.contains("No space left on device"),
        "writing 1 GiB over a {} MiB scratch: code {code}, stderr {err:?}",
        SCRATCH_BYTES >> 20
    );
    let (size, _, _) = exec(s, "writer", &["stat", "-c", "%s", "/big"])?;
    let size: u64 = size.trim().parse().unwrap_or(u64::MAX);
    ensure!(size <= SCRATCH_BYTES, "/big grew to {size} bytes");
    ctl.ping().context("ping after ENOSPC")?;
    let (out, _, code) = exec(s, "reader", &["echo", "alive"])?;
    ensure!(
        (code, out.as_str()) == (0, "alive\n"),
        "reader after ENOSPC: {code} {out:?}"
    );
    ensure!(
        !shares.image.join("big").exists() && !shares.empty_dir().join("big").exists(),
        "the 1 GiB write reached a share on the host"
    );
    let (_, _, code) = exec(s, "writer", &["rm", "/big"])?;
    ensure!(code == 0, "rm /big: {code}");
    println!(
        "agent-vm: ok: 1 GiB write -> ENOSPC at {size} bytes ({} MiB scratch) after {:.2?}; agent and pod still answer",
        SCRATCH_BYTES >> 20,
        f.fill_scratch
    );

    ctl.stop_pod(Some(2)).context("stop the virtio-fs pod")?;
    println!("agent-vm: ok: virtio-fs pod stopped ({IMAGE_TAG} shared read-only)");
    Ok(())
}

/// After the virtio-fs pod: the agent's mount table (seen as `/proc/1/mountinfo` from a
/// `shareProcessNamespace` container) has no virtiofs mount and no scratch tmpfs left.
pub fn check_unmounted(s: &Settings, container: &str) -> Result<()> {
    let (out, err, code) = exec(s, container, &["cat", "/proc/1/mountinfo"])?;
    ensure!(code == 0, "cat /proc/1/mountinfo: {code} {err:?}");
    let left: Vec<&str> = out
        .lines()
        .filter(|l| l.contains(" - virtiofs ") || l.contains("/run/peapod/images"))
        .collect();
    ensure!(
        left.is_empty(),
        "virtio-fs mounts left after StopPod: {left:#?}"
    );
    println!("agent-vm: ok: no virtio-fs mount left in the agent after StopPod");
    Ok(())
}
