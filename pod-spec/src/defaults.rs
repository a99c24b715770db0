//! Kubernetes defaulting for the fields peapod models (`SetDefaults_*` in `k8s.io/kubernetes`):
//! what `apply --dry-run` prints and what validation and the plan see.

use crate::model::{Container, Pod, Volume};

/// The namespace of a pod that names none.
pub const DEFAULT_NAMESPACE: &str = "default";
/// The restart policy of a pod that names none.
pub const DEFAULT_RESTART_POLICY: &str = "Always";
/// The grace period between SIGTERM and SIGKILL, in seconds.
pub const DEFAULT_TERMINATION_GRACE_PERIOD_SECONDS: i64 = 30;

/// Applies the defaults in place.
pub fn apply_defaults(pod: &mut Pod) {
    if pod.metadata.namespace.as_deref().unwrap_or("").is_empty() {
        pod.metadata.namespace = Some(DEFAULT_NAMESPACE.to_string());
    }
    let spec = &mut pod.spec;
    if spec.restart_policy.as_deref().unwrap_or("").is_empty() {
        spec.restart_policy = Some(DEFAULT_RESTART_POLICY.to_string());
    }
    if spec.termination_grace_period_seconds.is_none() {
        spec.termination_grace_period_seconds = Some(DEFAULT_TERMINATION_GRACE_PERIOD_SECONDS);
    }
    for c in spec
        .init_containers
        .iter_mut()
        .chain(spec.containers.iter_mut())
    {
        default_container(c);
    }
    for v in &mut spec.volumes {
        default_volume(v);
    }
}

/// `Always` for `:latest` or an untagged name, `IfNotPresent` otherwise (a digest without a
/// tag counts as tagged), as Kubernetes decides.
pub fn default_pull_policy(image: &str) -> &'static str {
    let (name, digest) = match image.split_once('@') {
        Some((n, _)) => (n, true),
        None => (image, false),
    };
    let last = name.rsplit('/').next().unwrap_or(name);
    let tag = last.split_once(':').map(|(_, t)| t);
    match tag {
        Some("latest") => "Always",
        None if !digest => "Always",
        _ => "IfNotPresent",
    }
}

fn default_container(c: &mut Container) {
    if c.image_pull_policy.as_deref().unwrap_or("").is_empty() {
        let image = c.image.as_deref().unwrap_or("");
        c.image_pull_policy = Some(default_pull_policy(image).to_string());
    }
    for p in &mut c.ports {
        if p.protocol.as_deref().unwrap_or("").is_empty() {
            p.protocol = Some("TCP".to_string());
        }
    }
    for e in &mut c.env {
        if let Some(fr) = e.value_from.as_mut().and_then(|v| v.field_ref.as_mut()) {
            if fr.api_version.as_deref().unwrap_or("").is_empty() {
                fr.api_version = Some("v1".to_string());
            }
        }
    }
    if let Some(r) = c.resources.as_mut() {
        for (k, v) in &r.limits {
            r.requests.entry(k.clone()).or_insert(*v);
        }
    }
}

fn default_volume(v: &mut Volume) {
    if v.empty_dir.is_none() && v.host_path.is_none() {
        v.empty_dir = Some(Default::default());
    }
    if let Some(hp) = v.host_path.as_mut() {
        if hp.type_.is_none() {
            hp.type_ = Some(String::new());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pull_policy_follows_the_tag() {
        assert_eq!(default_pull_policy("busybox"), "Always");
        assert_eq!(default_pull_policy("busybox:latest"), "Always");
        assert_eq!(default_pull_policy("busybox:1.36"), "IfNotPresent");
        assert_eq!(default_pull_policy("localhost:5000/busybox"), "Always");
        assert_eq!(
            default_pull_policy("localhost:5000/busybox:1"),
            "IfNotPresent"
        );
        assert_eq!(default_pull_policy("busybox@sha256:abc"), "IfNotPresent");
    }
}
