//! The typed `v1/Pod` model: the subset of Kubernetes' core/v1 types that peapod runs.
//!
//! The doc comments are the field descriptions `peapod explain` prints, and the JSON schema
//! derived from these structs (see `schema`) is the field list unknown-field detection walks:
//! one source for both.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::quantity::Quantity;

/// Pod is a collection of containers that can run on a host. peapod runs each Pod inside its
/// own KVM microVM.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Pod {
    /// APIVersion defines the versioned schema of this representation of an object. peapod
    /// runs `v1`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub api_version: String,
    /// Kind is a string value representing the REST resource this object represents. peapod
    /// runs `Pod` (and reads `List` documents whose items are Pods).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
    /// Standard object's metadata.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// Specification of the desired behavior of the pod.
    #[serde(default)]
    pub spec: PodSpec,
}

/// ObjectMeta is metadata that all persisted resources must have.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    /// Name must be unique within a namespace. It must be a DNS-1123 subdomain (lower case
    /// alphanumeric characters, '-' or '.', at most 253 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// GenerateName is an optional prefix used to generate a unique name when name is not
    /// provided; a random suffix of 5 characters is appended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generate_name: Option<String>,
    /// Namespace defines the space within which each name must be unique. Defaults to
    /// `default`. Must be a DNS-1123 label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// UID is the unique in time and space value for this object. It is generated when the pod
    /// is created and distinguishes a re-created pod from an old one of the same name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// Map of string keys and values that can be used to organize and categorize objects and
    /// to select them (`peapod get pods -l key=value`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations is an unstructured key value map to store arbitrary metadata.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// PodSpec is a description of a pod.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodSpec {
    /// List of initialization containers. They run one at a time, in order, each to
    /// successful completion, before any app container starts. A failing init container is
    /// retried according to restartPolicy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub init_containers: Vec<Container>,
    /// List of containers belonging to the pod. There must be at least one. All containers
    /// share the pod's network namespace (one IP, `localhost` between them).
    #[schemars(required)]
    pub containers: Vec<Container>,
    /// List of volumes that can be mounted by containers belonging to the pod.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<Volume>,
    /// Restart policy for all containers within the pod: one of `Always`, `OnFailure`,
    /// `Never`. Default `Always`. Restarts back off exponentially (10s doubling, capped at 5
    /// minutes, reset after 10 minutes of running).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_policy: Option<String>,
    /// Specifies the hostname of the Pod. If not specified, the pod's hostname is the pod's
    /// name. Must be a DNS-1123 label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// If specified, the fully qualified Pod hostname is "<hostname>.<subdomain>.<namespace>".
    /// Must be a DNS-1123 label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subdomain: Option<String>,
    /// Share a single process namespace between all of the containers in a pod: processes of
    /// one container are visible to the others, and the infra process is PID 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub share_process_namespace: Option<bool>,
    /// Optional duration in seconds the pod may be active before the system actively tries to
    /// mark it failed and kill its containers. Must be a positive integer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_deadline_seconds: Option<i64>,
    /// Optional duration in seconds the pod needs to terminate gracefully: containers get
    /// SIGTERM, then SIGKILL once the grace period is over. Defaults to 30 seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub termination_grace_period_seconds: Option<i64>,
}

/// A single application container that you want to run within a pod.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    /// Name of the container specified as a DNS_LABEL. Each container in a pod must have a
    /// unique name. Cannot be updated.
    #[schemars(required)]
    pub name: String,
    /// Container image name (an OCI image reference such as `busybox:latest`).
    #[schemars(required)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Image pull policy: one of `Always`, `Never`, `IfNotPresent`. Defaults to `Always` if
    /// the `:latest` tag is specified or no tag is given, or `IfNotPresent` otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<String>,
    /// Entrypoint array. Not executed within a shell. The image's ENTRYPOINT is used if this
    /// is not provided. `$(VAR_NAME)` references are expanded using the container's
    /// environment; `$$(VAR_NAME)` yields the literal `$(VAR_NAME)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// Arguments to the entrypoint. The image's CMD is used if this is not provided.
    /// `$(VAR_NAME)` references are expanded as for command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    /// Container's working directory. If not specified, the image's WorkingDir is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// List of environment variables to set in the container. The image's Env is the base;
    /// these override it. Values may reference earlier variables with `$(VAR_NAME)`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    /// List of ports to expose from the container. All containers share the pod's network
    /// namespace, so a port bound by one is busy for the others.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<ContainerPort>,
    /// Compute resources required by this container. They size the pod's microVM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Pod volumes to mount into the container's filesystem.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volume_mounts: Vec<VolumeMount>,
    /// Whether this container should allocate a buffer for stdin in the container runtime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin: Option<bool>,
    /// Whether this container should allocate a TTY for itself (also requires stdin to be
    /// useful interactively).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tty: Option<bool>,
}

/// EnvVar represents an environment variable present in a Container.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EnvVar {
    /// Name of the environment variable. Must be a C_IDENTIFIER-like name: letters, digits,
    /// '_', '-' or '.', not starting with a digit.
    #[schemars(required)]
    pub name: String,
    /// Variable value. `$(VAR_NAME)` references to variables defined earlier are expanded; an
    /// unresolvable reference is left unchanged; `$$` escapes. Defaults to "".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Source for the environment variable's value. Cannot be used if value is not empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_from: Option<EnvVarSource>,
}

/// EnvVarSource represents a source for the value of an EnvVar.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EnvVarSource {
    /// Selects a field of the pod: supports `metadata.name`, `metadata.namespace`,
    /// `metadata.uid` and `status.podIP`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field_ref: Option<ObjectFieldSelector>,
}

/// ObjectFieldSelector selects an APIVersioned field of an object.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObjectFieldSelector {
    /// Version of the schema the FieldPath is written in terms of, defaults to "v1".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// Path of the field to select in the specified API version.
    #[schemars(required)]
    pub field_path: String,
}

/// ContainerPort represents a network port in a single container.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContainerPort {
    /// If specified, this must be an IANA_SVC_NAME and unique within the pod. Each named port
    /// in a pod must have a unique name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Number of port to expose on the pod's IP address. This must be a valid port number,
    /// 0 < x < 65536.
    #[schemars(required)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_port: Option<i64>,
    /// Number of port to expose on the host. If specified, this must be a valid port number,
    /// 0 < x < 65536. peapod forwards it to the pod's containerPort.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_port: Option<i64>,
    /// Protocol for port. Must be UDP, TCP, or SCTP. Defaults to "TCP".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
}

/// ResourceRequirements describes the compute resource requirements.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourceRequirements {
    /// Limits describes the maximum amount of compute resources allowed (`cpu`, `memory`).
    /// They size the pod's microVM.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub limits: BTreeMap<String, Quantity>,
    /// Requests describes the minimum amount of compute resources required. If requests are
    /// omitted for a container, they default to its limits.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub requests: BTreeMap<String, Quantity>,
}

/// VolumeMount describes a mounting of a Volume within a container.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VolumeMount {
    /// This must match the Name of a Volume.
    #[schemars(required)]
    pub name: String,
    /// Path within the container at which the volume should be mounted. Must be absolute and
    /// must not contain ':'.
    #[schemars(required)]
    pub mount_path: String,
    /// Mounted read-only if true, read-write otherwise (false or unspecified).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only: Option<bool>,
    /// Path within the volume from which the container's volume should be mounted. Defaults
    /// to "" (volume's root). Must be relative and must not contain '..'.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_path: Option<String>,
}

/// Volume represents a named volume in a pod that may be accessed by any container in the pod.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Volume {
    /// Name of the volume. Must be a DNS_LABEL and unique within the pod.
    #[schemars(required)]
    pub name: String,
    /// emptyDir represents a temporary directory that shares a pod's lifetime: created empty
    /// when the pod starts, kept across container restarts, deleted with the pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub empty_dir: Option<EmptyDirVolumeSource>,
    /// hostPath represents a pre-existing file or directory on the host that is shared into
    /// the pod (through virtio-fs). Writes are visible on the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_path: Option<HostPathVolumeSource>,
}

/// Represents an empty directory for a pod.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EmptyDirVolumeSource {
    /// medium represents what type of storage medium should back this directory: "" (the
    /// default, the pod's disk) or `Memory` (a tmpfs inside the microVM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub medium: Option<String>,
    /// sizeLimit is the total amount of local storage required for this EmptyDir volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_limit: Option<Quantity>,
}

/// Represents a host path mapped into a pod.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HostPathVolumeSource {
    /// path of the directory or file on the host. If the path is a symlink, it follows the
    /// link to the real path.
    #[schemars(required)]
    pub path: String,
    /// type for HostPath Volume: "" (no check, the default), `DirectoryOrCreate` (created
    /// 0755), `Directory`, `FileOrCreate` (created 0644), `File`, `Socket`, `CharDevice`,
    /// `BlockDevice`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
}
