//! The pods the test creates in the guest: a two-container web pod (httpd + wget over
//! `localhost`), a pod whose image root and emptyDir come over virtio-fs, a one-container pod
//! that exceeds its memory limit, and a pod in the agent's PID namespace.

use agent_protocol::{
    ContainerSpec, EnvVar, FsSource, MountSpec, PodFilesystem, PodSpec, RestartPolicy,
};

use crate::shares::{EMPTY_DIR, FROM_HOST, IMAGE_TAG, VOLUMES_TAG};

/// Hostname of the web pod (checked with `exec hostname`).
pub const HOSTNAME: &str = "agent-vm-web";
/// The page the server serves and the client must print.
pub const PAGE: &str = "peapod-agent-vm: hello over localhost";
/// Memory limit of the hog container.
pub const HOG_LIMIT_BYTES: u64 = 32 << 20;
/// Bytes the hog tries to hold in a shell variable (far above the limit).
pub const HOG_BYTES: u64 = 200_000_000;
const _: () = assert!(HOG_BYTES > 4 * HOG_LIMIT_BYTES);

fn container(name: &str, rootfs: &str, script: String) -> ContainerSpec {
    ContainerSpec::new(
        name,
        rootfs,
        vec!["sh".into(), "-c".into(), script],
        vec![EnvVar {
            name: "PATH".into(),
            value: "/usr/sbin:/usr/bin:/sbin:/bin".into(),
        }],
    )
}

fn pod(name: &str, hostname: &str, containers: Vec<ContainerSpec>) -> PodSpec {
    PodSpec {
        name: name.into(),
        namespace: "default".into(),
        uid: format!("{name}-{}", std::process::id()),
        hostname: hostname.into(),
        init_containers: vec![],
        containers,
        restart_policy: RestartPolicy::Never,
        share_process_namespace: false,
        termination_grace_seconds: 2,
        active_deadline_seconds: None,
        resolv_conf: Some("nameserver 127.0.0.1\n".into()),
        test_backoff_base_ms: None,
        filesystems: Vec::new(),
        scratch_bytes: None,
    }
}

/// Where the agent mounts the `img0` share (the host runtime's layout).
pub const IMAGE_MOUNT: &str = "/run/peapod/images/0";
/// Where the agent mounts the `podvol` share.
pub const VOLUMES_MOUNT: &str = "/run/peapod/volumes";
/// Size of the virtio-fs pod's scratch tmpfs (the containers' writable layers).
pub const SCRATCH_BYTES: u64 = 64 << 20;
/// The sub path of the emptyDir the writer also mounts (created by the agent).
pub const SUB_PATH: &str = "nested/dir";
/// What the writer puts into its own root (must stay in the guest).
pub const ROOT_FILE: &str = "/root-file";
/// File the writer creates in the emptyDir (must appear on the host).
pub const FROM_GUEST: &str = "from-guest";

/// Two containers of one image shared over virtio-fs (`img0` at [`IMAGE_MOUNT`], read-only),
/// with the emptyDir `data` of the read-write `podvol` share and a 64 MiB scratch tmpfs.
/// `writer` writes its root, the emptyDir and a `subPath` of it, and prints the host's file;
/// `reader` (emptyDir read-only) waits for the writer's file.
pub fn virtiofs_pod() -> PodSpec {
    let data = format!("{VOLUMES_MOUNT}/{EMPTY_DIR}");
    let mount = |dst: &str, ro: bool, sub: Option<&str>| MountSpec {
        source: data.clone(),
        destination: dst.into(),
        read_only: ro,
        sub_path: sub.map(str::to_string),
    };
    let mut writer = container(
        "writer",
        IMAGE_MOUNT,
        format!(
            "echo private > {ROOT_FILE} && echo {FROM_GUEST} > /data/{FROM_GUEST} \
             && echo in-subpath > /nested/x && cat /data/{FROM_HOST} && echo writer-done; \
             exec sleep 100000"
        ),
    );
    writer.mounts = vec![
        mount("/data", false, None),
        mount("/nested", false, Some(SUB_PATH)),
    ];
    let mut reader = container(
        "reader",
        IMAGE_MOUNT,
        format!("until cat /data/{FROM_GUEST}; do sleep 0.2; done; exec sleep 100000"),
    );
    reader.mounts = vec![mount("/data", true, None)];
    let mut p = pod("virtiofs", "agent-vm-virtiofs", vec![writer, reader]);
    p.filesystems = vec![
        PodFilesystem {
            mount_point: IMAGE_MOUNT.into(),
            source: FsSource::VirtioFs {
                tag: IMAGE_TAG.into(),
            },
            read_only: true,
        },
        PodFilesystem {
            mount_point: VOLUMES_MOUNT.into(),
            source: FsSource::VirtioFs {
                tag: VOLUMES_TAG.into(),
            },
            read_only: false,
        },
    ];
    p.scratch_bytes = Some(SCRATCH_BYTES);
    p
}

/// `server` serves [`PAGE`] with `httpd -f -p 8080`; `client` fetches it from
/// `localhost:8080` (retrying while the server starts), prints it and stays up.
pub fn web_pod(rootfs: &str) -> PodSpec {
    let server = container(
        "server",
        rootfs,
        format!(
            "mkdir -p /tmp/www && echo '{PAGE}' > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www"
        ),
    );
    let client = container(
        "client",
        rootfs,
        "i=0; until wget -qO- http://localhost:8080/index.html; do \
           i=$((i+1)); [ $i -lt 300 ] || { echo 'no answer on localhost:8080' >&2; exit 1; }; \
           sleep 0.2; \
         done; exec sleep 100000"
            .into(),
    );
    pod("web", HOSTNAME, vec![server, client])
}

/// `hog` holds [`HOG_BYTES`] in a shell variable under a [`HOG_LIMIT_BYTES`] `memory.max`.
pub fn oom_pod(rootfs: &str) -> PodSpec {
    let mut hog = container(
        "hog",
        rootfs,
        format!(
            "echo allocating; x=$(head -c {HOG_BYTES} /dev/zero | tr '\\0' a); echo \"survived holding ${{#x}} bytes\""
        ),
    );
    hog.resources.memory_bytes = Some(HOG_LIMIT_BYTES);
    pod("oom", "agent-vm-oom", vec![hog])
}

/// One container sharing the agent's PID namespace (`shareProcessNamespace`), so `/proc/1`
/// inside it is the agent: used to read the agent's memory, and left running for the
/// shutdown.
pub fn inspect_pod(rootfs: &str) -> PodSpec {
    let mut p = pod(
        "inspect",
        "agent-vm-inspect",
        vec![container("idle", rootfs, "exec sleep 100000".into())],
    );
    p.share_process_namespace = true;
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_pass_protocol_validation() {
        for p in [
            web_pod("/images/busybox/rootfs"),
            oom_pod("/images/busybox/rootfs"),
            inspect_pod("/images/busybox/rootfs"),
            virtiofs_pod(),
        ] {
            agent_protocol::Message::CreatePod(Box::new(p.clone()))
                .validate()
                .unwrap_or_else(|e| panic!("{}: {e}", p.name));
        }
    }

    #[test]
    fn hog_exceeds_its_limit_and_server_serves_the_page() {
        let p = oom_pod("/r");
        assert_eq!(p.containers[0].resources.memory_bytes, Some(32 << 20));
        assert!(p.containers[0].argv[2].contains("head -c 200000000 /dev/zero"));
        let w = web_pod("/r");
        assert!(w.containers[0].argv[2].contains(PAGE));
        assert!(w.containers[1].argv[2].contains("localhost:8080"));
        assert_eq!(w.hostname, HOSTNAME);
    }

    #[test]
    fn virtiofs_pod_uses_the_shares() {
        let p = virtiofs_pod();
        assert_eq!(p.scratch_bytes, Some(64 << 20));
        assert_eq!(p.filesystems.len(), 2);
        assert!(p.filesystems[0].read_only && !p.filesystems[1].read_only);
        for c in &p.containers {
            assert_eq!(c.rootfs, IMAGE_MOUNT);
            assert!(c
                .mounts
                .iter()
                .all(|m| m.source == "/run/peapod/volumes/data"));
        }
        assert!(p.containers[1].mounts[0].read_only);
        assert_eq!(
            p.containers[0].mounts[1].sub_path.as_deref(),
            Some(SUB_PATH)
        );
    }
}
