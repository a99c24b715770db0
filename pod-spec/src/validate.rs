//! Semantic validation of a defaulted Pod, in the order and wording of Kubernetes'
//! `ValidatePodCreate` for the fields peapod models, plus a few peapod rules (documented in
//! docs/pod-spec.md): absolute mount and host paths, no NUL bytes in what reaches `execve`.

use std::collections::{BTreeSet, HashSet};

use crate::errors::FieldError;
use crate::model::{Container, ObjectMeta, Pod, ResourceRequirements, Volume};
use crate::names;

/// Restart policies, in Kubernetes' order.
pub const RESTART_POLICIES: &[&str] = &["Always", "OnFailure", "Never"];
/// Image pull policies (sorted, as Kubernetes prints them).
pub const PULL_POLICIES: &[&str] = &["Always", "IfNotPresent", "Never"];
/// Port protocols (sorted).
pub const PROTOCOLS: &[&str] = &["SCTP", "TCP", "UDP"];
/// hostPath types (sorted, as Kubernetes prints them).
pub const HOST_PATH_TYPES: &[&str] = &[
    "",
    "BlockDevice",
    "CharDevice",
    "Directory",
    "DirectoryOrCreate",
    "File",
    "FileOrCreate",
    "Socket",
];
/// emptyDir media peapod implements.
pub const EMPTY_DIR_MEDIA: &[&str] = &["", "Memory"];
/// Resource names peapod understands.
pub const RESOURCE_NAMES: &[&str] = &["cpu", "ephemeral-storage", "memory"];
/// `valueFrom.fieldRef.fieldPath` values peapod resolves.
pub const FIELD_PATHS: &[&str] = &[
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
    "status.podIP",
];

/// Every validation error of `pod` (already defaulted), in Kubernetes' order.
pub fn validate_pod(pod: &Pod) -> Vec<FieldError> {
    let mut errs = Vec::new();
    validate_metadata(&pod.metadata, &mut errs);
    let spec = &pod.spec;
    let volumes = validate_volumes(&spec.volumes, &mut errs);

    if spec.containers.is_empty() {
        errs.push(FieldError::required("spec.containers"));
    }
    let mut names: HashSet<String> = HashSet::new();
    for (i, c) in spec.containers.iter().enumerate() {
        validate_container(
            c,
            &format!("spec.containers[{i}]"),
            &volumes,
            &mut names,
            &mut errs,
        );
    }
    check_host_ports(&spec.containers, &mut errs);
    for (i, c) in spec.init_containers.iter().enumerate() {
        validate_container(
            c,
            &format!("spec.initContainers[{i}]"),
            &volumes,
            &mut names,
            &mut errs,
        );
    }

    let rp = spec.restart_policy.as_deref().unwrap_or("");
    if rp.is_empty() {
        errs.push(FieldError::required("spec.restartPolicy"));
    } else if !RESTART_POLICIES.contains(&rp) {
        errs.push(FieldError::not_supported(
            "spec.restartPolicy",
            rp,
            RESTART_POLICIES,
        ));
    }
    if let Some(d) = spec.active_deadline_seconds {
        if !(1..=i64::from(i32::MAX)).contains(&d) {
            errs.push(FieldError::invalid_int(
                "spec.activeDeadlineSeconds",
                d,
                "must be between 1 and 2147483647, inclusive",
            ));
        }
    }
    for (field, value) in [("hostname", &spec.hostname), ("subdomain", &spec.subdomain)] {
        if let Some(v) = value.as_deref().filter(|v| !v.is_empty()) {
            for msg in names::dns1123_label(v) {
                errs.push(FieldError::invalid(format!("spec.{field}"), v, msg));
            }
        }
    }
    if let Some(g) = spec.termination_grace_period_seconds {
        if g < 0 {
            errs.push(FieldError::invalid_int(
                "spec.terminationGracePeriodSeconds",
                g,
                "must be greater than or equal to 0",
            ));
        }
    }
    errs
}

fn validate_metadata(m: &ObjectMeta, errs: &mut Vec<FieldError>) {
    let name = m.name.as_deref().unwrap_or("");
    let generate = m.generate_name.as_deref().unwrap_or("");
    if name.is_empty() {
        if generate.is_empty() {
            errs.push(FieldError::new(
                "metadata.name",
                crate::errors::ErrorKind::Required(Some(
                    "name or generateName is required".to_string(),
                )),
            ));
        }
    } else {
        for msg in names::dns1123_subdomain(name) {
            errs.push(FieldError::invalid("metadata.name", name, msg));
        }
    }
    if !generate.is_empty() {
        for msg in names::dns1123_subdomain_prefix(generate) {
            errs.push(FieldError::invalid("metadata.generateName", generate, msg));
        }
    }
    if let Some(ns) = m.namespace.as_deref() {
        for msg in names::dns1123_label(ns) {
            errs.push(FieldError::invalid("metadata.namespace", ns, msg));
        }
    }
    for (k, v) in &m.labels {
        for msg in names::qualified_name(k) {
            errs.push(FieldError::invalid("metadata.labels", k, msg));
        }
        for msg in names::label_value(v) {
            errs.push(FieldError::invalid("metadata.labels", v, msg));
        }
    }
    for k in m.annotations.keys() {
        for msg in names::qualified_name(&k.to_lowercase()) {
            errs.push(FieldError::invalid("metadata.annotations", k, msg));
        }
    }
}

/// Validates the volumes; returns the names of the valid ones.
fn validate_volumes(volumes: &[Volume], errs: &mut Vec<FieldError>) -> BTreeSet<String> {
    let mut all = BTreeSet::new();
    for (i, v) in volumes.iter().enumerate() {
        let path = format!("spec.volumes[{i}]");
        let mut ok = true;
        if v.name.is_empty() {
            errs.push(FieldError::required(format!("{path}.name")));
            ok = false;
        } else {
            for msg in names::dns1123_label(&v.name) {
                errs.push(FieldError::invalid(format!("{path}.name"), &v.name, msg));
                ok = false;
            }
            if all.contains(&v.name) {
                errs.push(FieldError::duplicate(format!("{path}.name"), &v.name));
                ok = false;
            }
        }
        let mut sources = 0;
        if let Some(hp) = &v.host_path {
            sources += 1;
            let p = format!("{path}.hostPath");
            if hp.path.is_empty() {
                errs.push(FieldError::required(format!("{p}.path")));
            } else {
                if !hp.path.starts_with('/') {
                    errs.push(FieldError::invalid(
                        format!("{p}.path"),
                        &hp.path,
                        "must be an absolute path",
                    ));
                }
                if hp.path.split('/').any(|c| c == "..") {
                    errs.push(FieldError::invalid(
                        format!("{p}.path"),
                        &hp.path,
                        "must not contain '..'",
                    ));
                }
            }
            let t = hp.type_.as_deref().unwrap_or("");
            if !HOST_PATH_TYPES.contains(&t) {
                errs.push(FieldError::not_supported(
                    format!("{p}.type"),
                    t,
                    HOST_PATH_TYPES,
                ));
            }
        }
        if let Some(ed) = &v.empty_dir {
            let p = format!("{path}.emptyDir");
            if sources > 0 {
                errs.push(FieldError::forbidden(
                    &p,
                    "may not specify more than 1 volume type",
                ));
            } else {
                let medium = ed.medium.as_deref().unwrap_or("");
                if !EMPTY_DIR_MEDIA.contains(&medium) {
                    errs.push(FieldError::not_supported(
                        format!("{p}.medium"),
                        medium,
                        EMPTY_DIR_MEDIA,
                    ));
                }
                if let Some(q) = ed.size_limit.filter(|q| q.is_negative()) {
                    errs.push(FieldError::invalid(
                        format!("{p}.sizeLimit"),
                        &q.canonical(),
                        "must be greater than or equal to 0",
                    ));
                }
            }
        }
        if ok {
            all.insert(v.name.clone());
        }
    }
    all
}

fn validate_container(
    c: &Container,
    path: &str,
    volumes: &BTreeSet<String>,
    names_seen: &mut HashSet<String>,
    errs: &mut Vec<FieldError>,
) {
    if c.name.is_empty() {
        errs.push(FieldError::required(format!("{path}.name")));
    } else {
        let msgs = names::dns1123_label(&c.name);
        for msg in &msgs {
            errs.push(FieldError::invalid(
                format!("{path}.name"),
                &c.name,
                msg.clone(),
            ));
        }
        if msgs.is_empty() && !names_seen.insert(c.name.clone()) {
            errs.push(FieldError::duplicate(format!("{path}.name"), &c.name));
        }
    }
    let image = c.image.as_deref().unwrap_or("");
    if image.is_empty() {
        errs.push(FieldError::required(format!("{path}.image")));
    } else if image.trim() != image {
        errs.push(FieldError::invalid(
            format!("{path}.image"),
            image,
            "must not have leading or trailing whitespace",
        ));
    }
    let pp = c.image_pull_policy.as_deref().unwrap_or("");
    if pp.is_empty() {
        errs.push(FieldError::required(format!("{path}.imagePullPolicy")));
    } else if !PULL_POLICIES.contains(&pp) {
        errs.push(FieldError::not_supported(
            format!("{path}.imagePullPolicy"),
            pp,
            PULL_POLICIES,
        ));
    }
    for (field, list) in [("command", &c.command), ("args", &c.args)] {
        for (i, a) in list.iter().flatten().enumerate() {
            if a.contains('\0') {
                errs.push(FieldError::invalid(
                    format!("{path}.{field}[{i}]"),
                    a,
                    "must not contain a NUL byte",
                ));
            }
        }
    }
    validate_env(c, path, errs);
    validate_ports(c, path, errs);
    if let Some(r) = &c.resources {
        validate_resources(r, &format!("{path}.resources"), errs);
    }
    let mut mount_paths = HashSet::new();
    for (i, m) in c.volume_mounts.iter().enumerate() {
        let p = format!("{path}.volumeMounts[{i}]");
        if m.name.is_empty() {
            errs.push(FieldError::required(format!("{p}.name")));
        } else if !volumes.contains(&m.name) {
            errs.push(FieldError::not_found(format!("{p}.name"), &m.name));
        }
        if m.mount_path.is_empty() {
            errs.push(FieldError::required(format!("{p}.mountPath")));
        } else {
            if !m.mount_path.starts_with('/') {
                errs.push(FieldError::invalid(
                    format!("{p}.mountPath"),
                    &m.mount_path,
                    "must be an absolute path",
                ));
            }
            if !mount_paths.insert(m.mount_path.trim_end_matches('/').to_string()) {
                errs.push(FieldError::invalid(
                    format!("{p}.mountPath"),
                    &m.mount_path,
                    "must be unique",
                ));
            }
        }
        if let Some(sp) = m.sub_path.as_deref().filter(|s| !s.is_empty()) {
            if sp.starts_with('/') {
                errs.push(FieldError::invalid(
                    format!("{p}.subPath"),
                    sp,
                    "must be a relative path",
                ));
            }
            if sp.split('/').any(|c| c == "..") {
                errs.push(FieldError::invalid(
                    format!("{p}.subPath"),
                    sp,
                    "must not contain '..'",
                ));
            }
        }
    }
}

fn validate_env(c: &Container, path: &str, errs: &mut Vec<FieldError>) {
    for (i, e) in c.env.iter().enumerate() {
        let p = format!("{path}.env[{i}]");
        if e.name.is_empty() {
            errs.push(FieldError::required(format!("{p}.name")));
        } else {
            for msg in names::env_var_name(&e.name) {
                errs.push(FieldError::invalid(format!("{p}.name"), &e.name, msg));
            }
        }
        let value = e.value.as_deref().unwrap_or("");
        if value.contains('\0') {
            errs.push(FieldError::invalid(
                format!("{p}.value"),
                value,
                "must not contain a NUL byte",
            ));
        }
        let Some(from) = &e.value_from else { continue };
        let vp = format!("{p}.valueFrom");
        if !value.is_empty() {
            errs.push(FieldError::invalid(
                &vp,
                "",
                "may not be specified when `value` is not empty",
            ));
        }
        match &from.field_ref {
            None => errs.push(FieldError::invalid(
                &vp,
                "",
                "must specify one of: `fieldRef`",
            )),
            Some(fr) => {
                let fp = format!("{vp}.fieldRef");
                let av = fr.api_version.as_deref().unwrap_or("");
                if av.is_empty() {
                    errs.push(FieldError::required(format!("{fp}.apiVersion")));
                } else if av != "v1" {
                    errs.push(FieldError::not_supported(
                        format!("{fp}.apiVersion"),
                        av,
                        &["v1"],
                    ));
                }
                if fr.field_path.is_empty() {
                    errs.push(FieldError::required(format!("{fp}.fieldPath")));
                } else if !FIELD_PATHS.contains(&fr.field_path.as_str()) {
                    errs.push(FieldError::not_supported(
                        format!("{fp}.fieldPath"),
                        &fr.field_path,
                        FIELD_PATHS,
                    ));
                }
            }
        }
    }
}

fn validate_ports(c: &Container, path: &str, errs: &mut Vec<FieldError>) {
    let mut port_names = HashSet::new();
    for (i, port) in c.ports.iter().enumerate() {
        let p = format!("{path}.ports[{i}]");
        if let Some(name) = port.name.as_deref().filter(|n| !n.is_empty()) {
            let msgs = names::port_name(name);
            for msg in &msgs {
                errs.push(FieldError::invalid(format!("{p}.name"), name, msg.clone()));
            }
            if msgs.is_empty() && !port_names.insert(name.to_string()) {
                errs.push(FieldError::duplicate(format!("{p}.name"), name));
            }
        }
        match port.container_port {
            None => errs.push(FieldError::required(format!("{p}.containerPort"))),
            Some(n) => {
                for msg in names::port_num(n) {
                    errs.push(FieldError::invalid_int(
                        format!("{p}.containerPort"),
                        n,
                        msg,
                    ));
                }
            }
        }
        if let Some(h) = port.host_port.filter(|h| *h != 0) {
            for msg in names::port_num(h) {
                errs.push(FieldError::invalid_int(format!("{p}.hostPort"), h, msg));
            }
        }
        let proto = port.protocol.as_deref().unwrap_or("");
        if proto.is_empty() {
            errs.push(FieldError::required(format!("{p}.protocol")));
        } else if !PROTOCOLS.contains(&proto) {
            errs.push(FieldError::not_supported(
                format!("{p}.protocol"),
                proto,
                PROTOCOLS,
            ));
        }
    }
}

/// `checkHostPortConflicts`: a host port (with its protocol) may be used once per pod.
fn check_host_ports(containers: &[Container], errs: &mut Vec<FieldError>) {
    let mut seen = HashSet::new();
    for (ci, c) in containers.iter().enumerate() {
        for (pi, port) in c.ports.iter().enumerate() {
            let Some(h) = port.host_port.filter(|h| *h != 0) else {
                continue;
            };
            let key = format!("{}//{h}", port.protocol.as_deref().unwrap_or(""));
            if !seen.insert(key.clone()) {
                errs.push(FieldError::duplicate(
                    format!("spec.containers[{ci}].ports[{pi}].hostPort"),
                    &key,
                ));
            }
        }
    }
}

fn validate_resources(r: &ResourceRequirements, path: &str, errs: &mut Vec<FieldError>) {
    for (field, map) in [("limits", &r.limits), ("requests", &r.requests)] {
        for (name, q) in map {
            let p = format!("{path}.{field}[{name}]");
            if !RESOURCE_NAMES.contains(&name.as_str()) {
                errs.push(FieldError::not_supported(&p, name, RESOURCE_NAMES));
            }
            if q.is_negative() {
                errs.push(FieldError::invalid(
                    &p,
                    &q.canonical(),
                    "must be greater than or equal to 0",
                ));
            }
        }
    }
    for (name, req) in &r.requests {
        if let Some(lim) = r.limits.get(name) {
            if req.nanos() > lim.nanos() {
                errs.push(FieldError::invalid(
                    format!("{path}.requests[{name}]"),
                    &req.canonical(),
                    format!(
                        "must be less than or equal to {name} limit of {}",
                        lim.canonical()
                    ),
                ));
            }
        }
    }
}
