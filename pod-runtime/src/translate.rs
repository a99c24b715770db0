//! Turning a [`PodPlan`] and its volume [`Layout`] into the agent's [`PodSpec`].

use std::path::PathBuf;

use agent_protocol::{ContainerSpec, EnvVar, MountSpec, PodSpec, Resources, RestartPolicy};
use pod_spec::plan::{ContainerPlan, PodPlan};

use crate::volumes::Layout;

/// Errors of the translation.
#[derive(Debug, thiserror::Error)]
pub enum TranslateError {
    /// A container asks for something the agent cannot do yet.
    #[error("container {container:?}: {what} is not supported yet")]
    Unsupported {
        /// Container.
        container: String,
        /// Feature.
        what: &'static str,
    },
    /// A mount names a volume with no guest path (a bug in the layout).
    #[error("container {container:?}: volume {volume:?} has no guest path")]
    NoVolume {
        /// Container.
        container: String,
        /// Volume.
        volume: String,
    },
    /// A container's image root was not shared (a bug in the layout).
    #[error("container {container:?}: image root {rootfs} is not shared into the guest")]
    NoImage {
        /// Container.
        container: String,
        /// Host path.
        rootfs: PathBuf,
    },
}

fn restart_policy(p: &str) -> RestartPolicy {
    match p {
        "Never" => RestartPolicy::Never,
        "OnFailure" => RestartPolicy::OnFailure,
        _ => RestartPolicy::Always,
    }
}

fn container(
    c: &ContainerPlan,
    rootfs: &PathBuf,
    layout: &Layout,
) -> Result<ContainerSpec, TranslateError> {
    if c.tty {
        return Err(TranslateError::Unsupported {
            container: c.name.clone(),
            what: "tty: true",
        });
    }
    if c.stdin {
        return Err(TranslateError::Unsupported {
            container: c.name.clone(),
            what: "stdin: true",
        });
    }
    let rootfs = layout
        .images
        .get(rootfs)
        .ok_or_else(|| TranslateError::NoImage {
            container: c.name.clone(),
            rootfs: rootfs.clone(),
        })?;
    let mounts = c
        .mounts
        .iter()
        .map(|m| {
            let v = layout
                .volumes
                .get(&m.volume)
                .ok_or_else(|| TranslateError::NoVolume {
                    container: c.name.clone(),
                    volume: m.volume.clone(),
                })?;
            Ok(MountSpec {
                source: v.path.clone(),
                destination: m.mount_path.clone(),
                read_only: m.read_only,
                sub_path: (!m.sub_path.is_empty()).then(|| m.sub_path.clone()),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ContainerSpec {
        name: c.name.clone(),
        rootfs: rootfs.clone(),
        argv: c.argv.clone(),
        env: c
            .env
            .iter()
            .map(|(name, value)| EnvVar {
                name: name.clone(),
                value: value.clone(),
            })
            .collect(),
        working_dir: (!c.working_dir.is_empty()).then(|| c.working_dir.clone()),
        user: (!c.user.is_empty()).then(|| c.user.clone()),
        mounts,
        resources: Resources {
            cpu_millis: c.cpu_limit_millis,
            memory_bytes: c.memory_limit_bytes,
            pids: None,
            cpu_request_millis: c.cpu_request_millis,
            memory_request_bytes: c.memory_request_bytes,
        },
        tty: false,
        stdin: false,
    })
}

/// The agent's pod. `image_roots` are the host root file systems of the init containers then
/// the app containers, in order; `scratch_bytes` bounds the containers' writable layers.
pub fn pod_spec(
    plan: &PodPlan,
    image_roots: &[PathBuf],
    layout: &Layout,
    scratch_bytes: Option<u64>,
) -> Result<PodSpec, TranslateError> {
    let all: Vec<&ContainerPlan> = plan
        .init_containers
        .iter()
        .chain(&plan.containers)
        .collect();
    let mut specs = Vec::with_capacity(all.len());
    for (c, root) in all.iter().zip(image_roots) {
        specs.push(container(c, root, layout)?);
    }
    let containers = specs.split_off(plan.init_containers.len());
    Ok(PodSpec {
        name: plan.name.clone(),
        namespace: plan.namespace.clone(),
        uid: plan.uid.clone(),
        hostname: plan.hostname.clone(),
        init_containers: specs,
        containers,
        restart_policy: restart_policy(&plan.restart_policy),
        share_process_namespace: plan.share_process_namespace,
        termination_grace_seconds: u32::try_from(plan.termination_grace_period_seconds)
            .unwrap_or(u32::MAX),
        active_deadline_seconds: plan.active_deadline_seconds,
        resolv_conf: Some(String::new()),
        test_backoff_base_ms: None,
        filesystems: layout.filesystems.clone(),
        scratch_bytes,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use pod_spec::plan::{plan_pod, ImageConfigView};

    use super::*;

    #[test]
    fn limits_and_requests_reach_the_agent() {
        let text = concat!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n",
            "  initContainers:\n",
            "  - {name: i, image: busybox:latest, resources: {requests: {memory: 32Mi}}}\n",
            "  containers:\n",
            "  - {name: a, image: busybox:latest, resources: {limits: {cpu: 500m, memory: 256Mi}, requests: {cpu: 100m, memory: 64Mi}}}\n",
            "  - {name: b, image: busybox:latest, resources: {limits: {cpu: 1, memory: 128Mi}}}\n",
            "  - {name: c, image: busybox:latest}\n",
        );
        let pod = pod_spec::load_str("t.yaml", text)
            .unwrap()
            .remove(0)
            .outcome
            .unwrap();
        let images = BTreeMap::from([(
            "busybox:latest".to_string(),
            ImageConfigView {
                entrypoint: vec![],
                cmd: vec!["sh".into()],
                env: vec![],
                working_dir: String::new(),
                user: String::new(),
            },
        )]);
        let plan = plan_pod(&pod, "uid", &images).unwrap();
        let root = PathBuf::from("/host/img");
        let layout = Layout {
            images: BTreeMap::from([(root.clone(), "/run/peapod/images/0".to_string())]),
            ..Layout::default()
        };
        let spec = pod_spec(
            &plan,
            &[root.clone(), root.clone(), root.clone(), root],
            &layout,
            None,
        )
        .unwrap();
        let res = |c: &ContainerSpec| c.resources;
        let mib = 1u64 << 20;
        assert_eq!(
            res(&spec.init_containers[0]),
            Resources {
                memory_request_bytes: Some(32 * mib),
                ..Resources::default()
            }
        );
        assert_eq!(
            res(&spec.containers[0]),
            Resources {
                cpu_millis: Some(500),
                memory_bytes: Some(256 * mib),
                pids: None,
                cpu_request_millis: Some(100),
                memory_request_bytes: Some(64 * mib),
            }
        );
        assert_eq!(
            res(&spec.containers[1]),
            Resources {
                cpu_millis: Some(1000),
                memory_bytes: Some(128 * mib),
                pids: None,
                cpu_request_millis: Some(1000),
                memory_request_bytes: Some(128 * mib),
            }
        );
        assert_eq!(res(&spec.containers[2]), Resources::default());
    }
}
