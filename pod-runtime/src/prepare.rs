//! Everything `peapod run` checks before it creates anything: the manifest, the images
//! (pulled as the policy says) and the hostPath volumes. A failure here leaves nothing behind.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use image_store::{ensure_image, EnsureOptions, ImageHandle, Outcome, PullPolicy, Store};
use pod_spec::load::load_path;
use pod_spec::model::Pod;
use pod_spec::plan::{plan_pod, ImageConfigView, PodPlan};

use crate::volumes::{check_host_paths, HostPathCheck, VolumeError};

/// Errors found before the pod is created.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    /// The manifest could not be read or parsed.
    #[error("{0}")]
    Load(#[from] pod_spec::load::LoadError),
    /// The manifest is not exactly one Pod.
    #[error("{0}")]
    NotOnePod(String),
    /// The pod is invalid (kubectl-style rendering, several lines).
    #[error("{0}")]
    Invalid(String),
    /// `-n` and `metadata.namespace` disagree.
    #[error(
        "the namespace from the provided object {object:?} does not match the namespace {flag:?}; \
         you must pass '--namespace={object}' to perform this operation"
    )]
    Namespace {
        /// From the manifest.
        object: String,
        /// From the flag.
        flag: String,
    },
    /// An image could not be made available.
    #[error("container {container:?}: {source}")]
    Image {
        /// Container.
        container: String,
        /// Cause.
        #[source]
        source: Box<image_store::EnsureError>,
    },
    /// The image store failed.
    #[error("image store: {0}")]
    Store(#[from] image_store::StoreError),
    /// A bad image pull policy (validation should have caught it).
    #[error("container {container:?}: {message}")]
    Policy {
        /// Container.
        container: String,
        /// Parser message.
        message: String,
    },
    /// The plan could not be made.
    #[error("{0}")]
    Plan(#[from] pod_spec::plan::PlanError),
    /// A hostPath check failed.
    #[error(transparent)]
    Volume(#[from] VolumeError),
    /// Async runtime start-up failed.
    #[error("cannot start the pull runtime: {0}")]
    Runtime(std::io::Error),
}

/// A manifest read from disk.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// The defaulted, validated pod.
    pub pod: Pod,
    /// The text as given.
    pub text: String,
}

/// Reads `path`, which must hold exactly one valid Pod; `namespace` (from `-n`) fills a
/// missing namespace and must match a given one. Warnings are returned for printing.
pub fn load_manifest(
    path: &Path,
    namespace: Option<&str>,
) -> Result<(Manifest, String), PrepareError> {
    let docs = load_path(path)?;
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let [doc] = docs.as_slice() else {
        return Err(PrepareError::NotOnePod(format!(
            "{}: expected exactly one Pod, found {} objects (run one pod per file)",
            path.display(),
            docs.len()
        )));
    };
    let warnings = doc.render_warnings();
    let mut pod = match &doc.outcome {
        Ok(p) => p.clone(),
        Err(_) => return Err(PrepareError::Invalid(doc.render_errors())),
    };
    if let Some(ns) = namespace {
        match pod.metadata.namespace.as_deref() {
            Some(o) if o != ns && !(o == "default" && doc_namespace_defaulted(&text)) => {
                return Err(PrepareError::Namespace {
                    object: o.into(),
                    flag: ns.into(),
                })
            }
            _ => pod.metadata.namespace = Some(ns.into()),
        }
    }
    if pod.metadata.name.is_none() {
        if let Some(prefix) = pod.metadata.generate_name.clone() {
            let suffix: String = uuid::Uuid::new_v4().simple().to_string()[..5].to_string();
            pod.metadata.name = Some(format!("{prefix}{suffix}"));
        }
    }
    Ok((Manifest { pod, text }, warnings))
}

/// Whether the text never names a namespace (so `default` came from defaulting).
fn doc_namespace_defaulted(text: &str) -> bool {
    !text
        .lines()
        .any(|l| l.trim_start().starts_with("namespace:"))
}

/// What a pull step reports, for progress lines.
#[derive(Debug, Clone)]
pub struct ImageEvent {
    /// Container.
    pub container: String,
    /// Reference.
    pub image: String,
    /// What happened.
    pub outcome: Outcome,
}

/// A pod ready to be created.
#[derive(Debug)]
pub struct Prepared {
    /// The plan (uid assigned).
    pub plan: PodPlan,
    /// The manifest.
    pub manifest: Manifest,
    /// Host image roots of the init containers then the app containers.
    pub image_roots: Vec<PathBuf>,
    /// Checked hostPaths.
    pub host_paths: Vec<HostPathCheck>,
}

fn view(h: &ImageHandle) -> ImageConfigView {
    ImageConfigView {
        entrypoint: h.config.entrypoint.clone(),
        cmd: h.config.cmd.clone(),
        env: h
            .config
            .env
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect(),
        working_dir: h.config.working_dir.clone().unwrap_or_default(),
        user: h.config.user.clone().unwrap_or_default(),
    }
}

/// Resolves every image (as each container's pull policy says), plans the pod with a fresh
/// uid and checks its hostPaths. `on_image` hears about each image.
pub fn prepare(
    manifest: Manifest,
    store: &Store,
    on_image: &mut dyn FnMut(&ImageEvent),
) -> Result<Prepared, PrepareError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(PrepareError::Runtime)?;
    let opts = EnsureOptions::default();
    let spec = &manifest.pod.spec;
    let mut handles: BTreeMap<String, ImageHandle> = BTreeMap::new();
    let mut roots = Vec::new();
    for c in spec.init_containers.iter().chain(&spec.containers) {
        let image = c.image.clone().unwrap_or_default();
        if let Some(h) = handles.get(&image) {
            roots.push(h.rootfs.clone());
            continue;
        }
        let policy = match c.image_pull_policy.as_deref() {
            None | Some("") => None,
            Some(p) => Some(
                p.parse::<PullPolicy>()
                    .map_err(|message| PrepareError::Policy {
                        container: c.name.clone(),
                        message,
                    })?,
            ),
        };
        let (h, outcome) = rt
            .block_on(ensure_image(store, &image, policy, &opts))
            .map_err(|source| PrepareError::Image {
                container: c.name.clone(),
                source: Box::new(source),
            })?;
        on_image(&ImageEvent {
            container: c.name.clone(),
            image: image.clone(),
            outcome,
        });
        roots.push(h.rootfs.clone());
        handles.insert(image, h);
    }
    let views: BTreeMap<String, ImageConfigView> =
        handles.iter().map(|(k, h)| (k.clone(), view(h))).collect();
    let uid = uuid::Uuid::new_v4().to_string();
    let mut plan = plan_pod(&manifest.pod, &uid, &views)?;
    if plan.needs_pod_ip() {
        // No network interface until the network issue lands: the pod's address is loopback.
        plan.fill_pod_ip("127.0.0.1");
    }
    let host_paths = check_host_paths(&plan)?;
    Ok(Prepared {
        plan,
        manifest,
        image_roots: roots,
        host_paths,
    })
}
