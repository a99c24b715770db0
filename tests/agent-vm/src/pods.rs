//! The pods the test creates in the guest: a two-container web pod (httpd + wget over
//! `localhost`) and a one-container pod that exceeds its memory limit.

use agent_protocol::{ContainerSpec, EnvVar, PodSpec, RestartPolicy};

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
}
