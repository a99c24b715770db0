//! Translation of a valid Pod into the runtime plan the VMM and the guest agent consume: VM
//! sizing, per-container env and argv (through `container-semantics`, the implementation the
//! agent shares), and volume wiring.

use std::collections::BTreeMap;

use container_semantics::command::{resolve_command, CommandError};
use container_semantics::env::{parse_env_list, resolve_env};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::defaults::apply_defaults;
use crate::errors::FieldError;
use crate::model::{Container, Pod};
use crate::validate::validate_pod;

/// vCPUs of a pod that sets no cpu limit or request.
pub const DEFAULT_VCPUS: u32 = 1;
/// Guest memory of a pod that sets no memory limit or request, in MiB (overhead included).
pub const DEFAULT_MEMORY_MIB: u64 = 256;
/// Guest memory added on top of the containers' memory for the kernel, the agent and page
/// cache, in MiB.
pub const MEMORY_OVERHEAD_MIB: u64 = 128;
/// The text that stands for `status.podIP` until the runtime knows the address; see
/// [`PodPlan::fill_pod_ip`]. It holds NUL bytes, which validation forbids in manifests, so
/// it cannot collide with user text, and no `$`, so `$(VAR)` expansion copies it verbatim.
pub const POD_IP_PLACEHOLDER: &str = "\u{0}peapod:status.podIP\u{0}";

const MIB: u64 = 1024 * 1024;

/// The parts of an OCI image config the plan needs (pod-spec does not depend on the image
/// store; the caller fills this from it).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfigView {
    /// `Entrypoint`.
    pub entrypoint: Vec<String>,
    /// `Cmd`.
    pub cmd: Vec<String>,
    /// `Env`, as `KEY=VALUE` strings.
    pub env: Vec<String>,
    /// `WorkingDir` ("" when unset).
    pub working_dir: String,
    /// `User` ("" when unset).
    pub user: String,
}

/// Why a pod cannot be planned.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PlanError {
    /// The pod does not validate.
    #[error("the pod is invalid: {}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<FieldError>),
    /// No image config was supplied for a container's image.
    #[error("no image config for image {image:?} of container {container:?}")]
    MissingImageConfig {
        /// The container.
        container: String,
        /// Its image.
        image: String,
    },
    /// Neither the spec nor the image says what a container runs.
    #[error("container {container:?}: {source}")]
    Command {
        /// The container.
        container: String,
        /// The reason.
        #[source]
        source: CommandError,
    },
}

/// The microVM's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmSizing {
    /// vCPUs: ceil(effective cpu) with a minimum of 1.
    pub vcpus: u32,
    /// Guest memory in MiB: effective memory (rounded up to MiB) plus the overhead, or the
    /// default when no container sets memory.
    pub memory_mib: u64,
    /// The effective cpu in millicores: max(sum over app containers, max over init
    /// containers), each container counting its limit, else its request.
    pub effective_cpu_millis: u64,
    /// The effective memory in bytes, computed like the cpu, plus `Memory` emptyDir size
    /// limits (tmpfs lives in guest RAM).
    pub effective_memory_bytes: u64,
}

/// A pod volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumePlan {
    /// The volume name.
    pub name: String,
    /// What backs it.
    pub source: VolumeSourcePlan,
}

/// What backs a volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum VolumeSourcePlan {
    /// A directory created empty for the pod's lifetime.
    EmptyDir {
        /// `medium: Memory`: a tmpfs in the guest.
        memory: bool,
        /// `sizeLimit` in bytes.
        size_limit_bytes: Option<u64>,
    },
    /// A host path shared through virtio-fs.
    HostPath {
        /// The host path.
        path: String,
        /// The type check ("" for none).
        path_type: String,
    },
}

/// A mount of a pod volume into a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountPlan {
    /// The pod volume.
    pub volume: String,
    /// Where in the container.
    pub mount_path: String,
    /// Read-only.
    pub read_only: bool,
    /// The sub-path inside the volume ("" for the root).
    pub sub_path: String,
}

/// A container port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortPlan {
    /// Port name ("" when none).
    pub name: String,
    /// Port inside the pod.
    pub container_port: u16,
    /// Host port to forward, if any.
    pub host_port: Option<u16>,
    /// `TCP`, `UDP` or `SCTP`.
    pub protocol: String,
}

/// Everything the agent needs to start one container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerPlan {
    /// Container name.
    pub name: String,
    /// Image reference.
    pub image: String,
    /// `Always`, `IfNotPresent` or `Never`.
    pub image_pull_policy: String,
    /// The argv, resolved from command/args/ENTRYPOINT/CMD and `$(VAR)`-expanded.
    pub argv: Vec<String>,
    /// The final environment (image env overridden by the spec, spec values expanded).
    pub env: Vec<(String, String)>,
    /// Working directory (spec, else image, else "/").
    pub working_dir: String,
    /// User from the image ("" for root).
    pub user: String,
    /// Volume mounts, in spec order.
    pub mounts: Vec<MountPlan>,
    /// Ports.
    pub ports: Vec<PortPlan>,
    /// Keep stdin open.
    pub stdin: bool,
    /// Allocate a TTY.
    pub tty: bool,
    /// cpu limit in millicores, if set.
    pub cpu_limit_millis: Option<u64>,
    /// memory limit in bytes, if set.
    pub memory_limit_bytes: Option<u64>,
    /// cpu request in millicores, if set (defaulting copies a missing one from the limit).
    /// Only for the guest's QoS class and `oom_score_adj`.
    #[serde(default)]
    pub cpu_request_millis: Option<u64>,
    /// memory request in bytes, if set (defaulting copies a missing one from the limit).
    /// Only for the guest's QoS class and `oom_score_adj`.
    #[serde(default)]
    pub memory_request_bytes: Option<u64>,
}

/// The runtime plan of one pod.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodPlan {
    /// Pod name.
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// The uid given at creation.
    pub uid: String,
    /// Guest hostname (spec.hostname, else the pod name cut to 63 characters).
    pub hostname: String,
    /// spec.subdomain ("" when none).
    pub subdomain: String,
    /// `Always`, `OnFailure` or `Never`.
    pub restart_policy: String,
    /// Share one PID namespace between containers.
    pub share_process_namespace: bool,
    /// spec.activeDeadlineSeconds.
    pub active_deadline_seconds: Option<u64>,
    /// Grace period between SIGTERM and SIGKILL.
    pub termination_grace_period_seconds: u64,
    /// VM size.
    pub vm: VmSizing,
    /// Pod volumes.
    pub volumes: Vec<VolumePlan>,
    /// Init containers, in order.
    pub init_containers: Vec<ContainerPlan>,
    /// App containers.
    pub containers: Vec<ContainerPlan>,
}

impl PodPlan {
    /// Whether some env value or argument waits for the pod IP.
    pub fn needs_pod_ip(&self) -> bool {
        self.all_containers().any(|c| {
            c.env.iter().any(|(_, v)| v.contains(POD_IP_PLACEHOLDER))
                || c.argv.iter().any(|a| a.contains(POD_IP_PLACEHOLDER))
        })
    }

    /// Replaces the `status.podIP` placeholder with the pod's address once it is known.
    pub fn fill_pod_ip(&mut self, ip: &str) {
        for c in self
            .init_containers
            .iter_mut()
            .chain(self.containers.iter_mut())
        {
            for (_, v) in &mut c.env {
                *v = v.replace(POD_IP_PLACEHOLDER, ip);
            }
            for a in &mut c.argv {
                *a = a.replace(POD_IP_PLACEHOLDER, ip);
            }
        }
    }

    fn all_containers(&self) -> impl Iterator<Item = &ContainerPlan> {
        self.init_containers.iter().chain(self.containers.iter())
    }
}

fn to_u64(v: i128) -> u64 {
    u64::try_from(v.max(0)).unwrap_or(u64::MAX)
}

/// (cpu millicores, memory bytes) a container counts for sizing: its limit, else its request.
fn container_size(c: &Container) -> (u64, u64) {
    let Some(r) = &c.resources else { return (0, 0) };
    let pick = |name: &str| r.limits.get(name).or_else(|| r.requests.get(name)).copied();
    let cpu = pick("cpu").map_or(0, |q| to_u64(q.milli_value()));
    let mem = pick("memory").map_or(0, |q| to_u64(q.value()));
    (cpu, mem)
}

/// Sizes the VM for `pod` (defaults applied).
pub fn size_vm(pod: &Pod) -> VmSizing {
    let app = pod.spec.containers.iter().map(container_size);
    let (app_cpu, app_mem) = app.fold((0u64, 0u64), |(a, b), (c, m)| {
        (a.saturating_add(c), b.saturating_add(m))
    });
    let init = pod.spec.init_containers.iter().map(container_size);
    let (init_cpu, init_mem) = init.fold((0u64, 0u64), |(a, b), (c, m)| (a.max(c), b.max(m)));
    let tmpfs: u64 = pod
        .spec
        .volumes
        .iter()
        .filter_map(|v| v.empty_dir.as_ref())
        .filter(|e| e.medium.as_deref() == Some("Memory"))
        .filter_map(|e| e.size_limit)
        .map(|q| to_u64(q.value()))
        .fold(0u64, u64::saturating_add);
    let cpu = app_cpu.max(init_cpu);
    let mem = app_mem.max(init_mem).saturating_add(tmpfs);
    let vcpus = if cpu == 0 {
        DEFAULT_VCPUS
    } else {
        u32::try_from(cpu.div_ceil(1000)).unwrap_or(u32::MAX).max(1)
    };
    let memory_mib = if mem == 0 {
        DEFAULT_MEMORY_MIB
    } else {
        mem.div_ceil(MIB).saturating_add(MEMORY_OVERHEAD_MIB)
    };
    VmSizing {
        vcpus,
        memory_mib,
        effective_cpu_millis: cpu,
        effective_memory_bytes: mem,
    }
}

/// Builds the plan of `pod` with the uid given at creation and the config of every image
/// the pod uses, keyed by the image reference as written in the manifest.
pub fn plan_pod(
    pod: &Pod,
    uid: &str,
    images: &BTreeMap<String, ImageConfigView>,
) -> Result<PodPlan, PlanError> {
    let mut pod = pod.clone();
    apply_defaults(&mut pod);
    let errors = validate_pod(&pod);
    if !errors.is_empty() {
        return Err(PlanError::Invalid(errors));
    }
    let name = pod.metadata.name.clone().unwrap_or_default();
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let plan_container = |c: &Container| plan_container(c, &name, &namespace, uid, images);
    let init_containers = pod
        .spec
        .init_containers
        .iter()
        .map(plan_container)
        .collect::<Result<Vec<_>, _>>()?;
    let containers = pod
        .spec
        .containers
        .iter()
        .map(plan_container)
        .collect::<Result<Vec<_>, _>>()?;
    let volumes = pod
        .spec
        .volumes
        .iter()
        .map(|v| VolumePlan {
            name: v.name.clone(),
            source: match (&v.host_path, &v.empty_dir) {
                (Some(hp), _) => VolumeSourcePlan::HostPath {
                    path: hp.path.clone(),
                    path_type: hp.type_.clone().unwrap_or_default(),
                },
                (None, ed) => {
                    let ed = ed.clone().unwrap_or_default();
                    VolumeSourcePlan::EmptyDir {
                        memory: ed.medium.as_deref() == Some("Memory"),
                        size_limit_bytes: ed.size_limit.map(|q| to_u64(q.value())),
                    }
                }
            },
        })
        .collect();
    let spec = &pod.spec;
    let hostname = match spec.hostname.as_deref().filter(|h| !h.is_empty()) {
        Some(h) => h.to_string(),
        None => name
            .chars()
            .take(63)
            .collect::<String>()
            .trim_end_matches(['-', '.'])
            .to_string(),
    };
    Ok(PodPlan {
        vm: size_vm(&pod),
        name,
        namespace,
        uid: uid.to_string(),
        hostname,
        subdomain: spec.subdomain.clone().unwrap_or_default(),
        restart_policy: spec.restart_policy.clone().unwrap_or_default(),
        share_process_namespace: spec.share_process_namespace.unwrap_or(false),
        active_deadline_seconds: spec.active_deadline_seconds.map(|d| d.max(0) as u64),
        termination_grace_period_seconds: spec
            .termination_grace_period_seconds
            .map_or(30, |g| g.max(0) as u64),
        volumes,
        init_containers,
        containers,
    })
}

fn plan_container(
    c: &Container,
    pod_name: &str,
    namespace: &str,
    uid: &str,
    images: &BTreeMap<String, ImageConfigView>,
) -> Result<ContainerPlan, PlanError> {
    let image_ref = c.image.clone().unwrap_or_default();
    let image = images
        .get(&image_ref)
        .ok_or_else(|| PlanError::MissingImageConfig {
            container: c.name.clone(),
            image: image_ref.clone(),
        })?;
    let spec_env: Vec<(String, String)> = c
        .env
        .iter()
        .map(|e| {
            let value = match e.value_from.as_ref().and_then(|f| f.field_ref.as_ref()) {
                Some(fr) => match fr.field_path.as_str() {
                    "metadata.name" => pod_name.to_string(),
                    "metadata.namespace" => namespace.to_string(),
                    "metadata.uid" => uid.to_string(),
                    "status.podIP" => POD_IP_PLACEHOLDER.to_string(),
                    _ => String::new(),
                },
                None => e.value.clone().unwrap_or_default(),
            };
            (e.name.clone(), value)
        })
        .collect();
    let image_env = parse_env_list(&image.env);
    let env = resolve_env(&image_env, &spec_env);
    let spec_only = resolve_env(&[], &spec_env);
    let argv = resolve_command(
        &image.entrypoint,
        &image.cmd,
        c.command.as_deref(),
        c.args.as_deref(),
        &spec_only,
    )
    .map_err(|source| PlanError::Command {
        container: c.name.clone(),
        source,
    })?;
    let working_dir = [c.working_dir.as_deref(), Some(image.working_dir.as_str())]
        .into_iter()
        .flatten()
        .find(|w| !w.is_empty())
        .unwrap_or("/")
        .to_string();
    let limit = |name: &str| {
        c.resources
            .as_ref()
            .and_then(|r| r.limits.get(name).copied())
    };
    let request = |name: &str| {
        c.resources
            .as_ref()
            .and_then(|r| r.requests.get(name).copied())
    };
    Ok(ContainerPlan {
        name: c.name.clone(),
        image: image_ref,
        image_pull_policy: c.image_pull_policy.clone().unwrap_or_default(),
        argv,
        env,
        working_dir,
        user: image.user.clone(),
        mounts: c
            .volume_mounts
            .iter()
            .map(|m| MountPlan {
                volume: m.name.clone(),
                mount_path: m.mount_path.clone(),
                read_only: m.read_only.unwrap_or(false),
                sub_path: m.sub_path.clone().unwrap_or_default(),
            })
            .collect(),
        ports: c
            .ports
            .iter()
            .map(|p| PortPlan {
                name: p.name.clone().unwrap_or_default(),
                container_port: u16::try_from(p.container_port.unwrap_or(0)).unwrap_or(0),
                host_port: p
                    .host_port
                    .filter(|h| *h != 0)
                    .and_then(|h| u16::try_from(h).ok()),
                protocol: p.protocol.clone().unwrap_or_else(|| "TCP".to_string()),
            })
            .collect(),
        stdin: c.stdin.unwrap_or(false),
        tty: c.tty.unwrap_or(false),
        cpu_limit_millis: limit("cpu").map(|q| to_u64(q.milli_value())),
        memory_limit_bytes: limit("memory").map(|q| to_u64(q.value())),
        cpu_request_millis: request("cpu").map(|q| to_u64(q.milli_value())),
        memory_request_bytes: request("memory").map(|q| to_u64(q.value())),
    })
}
