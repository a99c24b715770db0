//! Pod volumes on the host and in the guest: hostPath type checks, emptyDir directories, and
//! the virtio-fs shares and guest file systems that carry images and volumes into the VM.
//!
//! Guest layout (agent mount points): image roots at `/run/peapod/images/<i>` (read-only
//! shares `img<i>`, one per distinct image), disk emptyDirs under `/run/peapod/volumes/<name>`
//! (one read-write share `podvol` of the pod's `volumes/` directory), `medium: Memory`
//! emptyDirs as tmpfs at `/run/peapod/memvol/<name>`, hostPath directories at
//! `/run/peapod/hostpath/<i>` (share `hp<i>`), hostPath files inside
//! `/run/peapod/hostfile/<i>` (share `hf<i>` of a per-pod directory holding a bind mount of
//! the one file, so no sibling of the file is reachable).

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use agent_protocol::{FsSource, PodFilesystem};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use pod_spec::plan::{PodPlan, VolumeSourcePlan};

/// Guest directory of image roots.
pub const GUEST_IMAGES: &str = "/run/peapod/images";
/// Guest directory of disk emptyDirs.
pub const GUEST_VOLUMES: &str = "/run/peapod/volumes";
/// Guest directory of memory emptyDirs.
pub const GUEST_MEMVOL: &str = "/run/peapod/memvol";
/// Guest directory of hostPath directories.
pub const GUEST_HOSTPATH: &str = "/run/peapod/hostpath";
/// Guest directory of hostPath files.
pub const GUEST_HOSTFILE: &str = "/run/peapod/hostfile";
/// Tag of the emptyDir share.
pub const PODVOL_TAG: &str = "podvol";

/// Errors of volume checks and set-up.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    /// A hostPath type check failed.
    #[error("hostPath volume {volume:?}: {path}: {problem}")]
    HostPath {
        /// Volume name.
        volume: String,
        /// Host path.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// A file operation failed.
    #[error("volume {volume:?}: {op} {path}: {source}")]
    Io {
        /// Volume name ("" for images).
        volume: String,
        /// What was done.
        op: &'static str,
        /// On what.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
}

/// A host directory shared into the guest over virtio-fs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Share {
    /// virtio-fs tag.
    pub tag: String,
    /// Host directory.
    pub host_path: PathBuf,
    /// Read-only share.
    pub read_only: bool,
}

impl Share {
    /// The VMM's `--fs` argument.
    pub fn vmm_arg(&self) -> String {
        let ro = if self.read_only { ":ro" } else { "" };
        format!("{}={}{ro}", self.tag, self.host_path.display())
    }
}

/// What a hostPath check found and what set-up will do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostAction {
    /// Share the existing directory.
    UseDir,
    /// Share the existing file.
    UseFile,
    /// Create the directory (0755), then share it.
    CreateDir,
    /// Create the file (0644), then share it.
    CreateFile,
}

impl HostAction {
    /// Whether the hostPath is a file, shared through a bind mount made on the host.
    pub fn is_file(self) -> bool {
        matches!(self, HostAction::UseFile | HostAction::CreateFile)
    }
}

/// Whether setting up these hostPaths makes host mounts (bind mounts of hostPath files), so
/// the run needs a private mount namespace (see [`crate::mount_ns`]).
pub fn needs_host_mounts(host_paths: &[HostPathCheck]) -> bool {
    host_paths.iter().any(|c| c.action.is_file())
}

/// A checked hostPath volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPathCheck {
    /// Volume name.
    pub volume: String,
    /// Host path.
    pub path: PathBuf,
    /// What to do.
    pub action: HostAction,
}

fn hp_err(volume: &str, path: &Path, problem: impl Into<String>) -> VolumeError {
    VolumeError::HostPath {
        volume: volume.into(),
        path: path.to_path_buf(),
        problem: problem.into(),
    }
}

fn kind_of(t: fs::FileType) -> &'static str {
    if t.is_dir() {
        "a directory"
    } else if t.is_file() {
        "a regular file"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else {
        "a special file"
    }
}

/// Checks one hostPath against its `type` as Kubernetes does, without changing anything.
pub fn check_host_path(
    volume: &str,
    path: &Path,
    path_type: &str,
) -> Result<HostAction, VolumeError> {
    let meta = match fs::metadata(path) {
        Ok(m) => Some(m),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(hp_err(volume, path, format!("cannot inspect: {e}"))),
    };
    let special = |what: &str| {
        hp_err(
            volume,
            path,
            format!(
                "type {what} cannot be shared into a microVM: virtio-fs carries directories and \
                 regular files only"
            ),
        )
    };
    let ft = meta.as_ref().map(|m| m.file_type());
    match (path_type, ft) {
        ("" | "DirectoryOrCreate", None) => Ok(HostAction::CreateDir),
        ("FileOrCreate", None) => {
            let parent_ok = path.parent().is_some_and(Path::is_dir);
            if parent_ok {
                Ok(HostAction::CreateFile)
            } else {
                Err(hp_err(
                    volume,
                    path,
                    "type FileOrCreate does not create parent directories, and the parent does not exist",
                ))
            }
        }
        (t, None) => Err(hp_err(volume, path, format!("does not exist (type {t})"))),
        ("" | "DirectoryOrCreate" | "Directory", Some(t)) if t.is_dir() => Ok(HostAction::UseDir),
        ("" | "FileOrCreate" | "File", Some(t)) if t.is_file() => Ok(HostAction::UseFile),
        ("Socket", Some(t)) if t.is_socket() => Err(special("Socket")),
        ("CharDevice", Some(t)) if t.is_char_device() => Err(special("CharDevice")),
        ("BlockDevice", Some(t)) if t.is_block_device() => Err(special("BlockDevice")),
        ("", Some(t)) => Err(special(kind_of(t))),
        (want, Some(t)) => Err(hp_err(
            volume,
            path,
            format!("is {}, not what type {want} requires", kind_of(t)),
        )),
    }
}

/// Checks every hostPath volume of the plan that some container mounts.
pub fn check_host_paths(plan: &PodPlan) -> Result<Vec<HostPathCheck>, VolumeError> {
    let mut out = Vec::new();
    for v in &plan.volumes {
        if let VolumeSourcePlan::HostPath { path, path_type } = &v.source {
            let path = PathBuf::from(path);
            let action = check_host_path(&v.name, &path, path_type)?;
            out.push(HostPathCheck {
                volume: v.name.clone(),
                path,
                action,
            });
        }
    }
    Ok(out)
}

/// Where a volume appears in the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestVolume {
    /// Path of the directory (or file) in the agent's view.
    pub path: String,
}

/// Everything set up for the pod's volumes and images.
#[derive(Debug, Default)]
pub struct Layout {
    /// virtio-fs shares, in device order.
    pub shares: Vec<Share>,
    /// File systems the agent mounts, in order.
    pub filesystems: Vec<PodFilesystem>,
    /// Volume name -> guest path.
    pub volumes: BTreeMap<String, GuestVolume>,
    /// Host image root -> guest path.
    pub images: BTreeMap<PathBuf, String>,
    /// Bind mounts made on the host (hostPath files), detached by [`Layout::teardown`].
    pub bind_mounts: Vec<PathBuf>,
    /// The emptyDir directory, removed by [`Layout::teardown`].
    pub empty_dir_root: Option<PathBuf>,
}

fn io_err(volume: &str, op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> VolumeError {
    let volume = volume.to_string();
    let path = path.to_path_buf();
    move |source| VolumeError::Io {
        volume,
        op,
        path,
        source,
    }
}

fn mkdir_mode(volume: &str, path: &Path, mode: u32) -> Result<(), VolumeError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(path)
        .map_err(io_err(volume, "create", path))?;
    // The umask may have narrowed it.
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(io_err(volume, "chmod", path))
}

/// Whether every mount of `volume` is read-only (and there is at least one).
fn all_read_only(plan: &PodPlan, volume: &str) -> bool {
    let mut mounts = plan
        .init_containers
        .iter()
        .chain(&plan.containers)
        .flat_map(|c| &c.mounts)
        .filter(|m| m.volume == volume)
        .peekable();
    mounts.peek().is_some() && mounts.all(|m| m.read_only)
}

impl Layout {
    /// Sets up the shares and guest file systems of `plan`: images (host root file systems
    /// in container order), emptyDirs under `pod_dir`, hostPaths as checked. On error,
    /// whatever was made is undone.
    pub fn build(
        plan: &PodPlan,
        image_roots: &[PathBuf],
        host_paths: &[HostPathCheck],
        pod_dir: &Path,
    ) -> Result<Self, VolumeError> {
        let mut layout = Self::default();
        match layout.fill(plan, image_roots, host_paths, pod_dir) {
            Ok(()) => Ok(layout),
            Err(e) => {
                layout.teardown();
                Err(e)
            }
        }
    }

    fn fill(
        &mut self,
        plan: &PodPlan,
        image_roots: &[PathBuf],
        host_paths: &[HostPathCheck],
        pod_dir: &Path,
    ) -> Result<(), VolumeError> {
        for root in image_roots {
            if self.images.contains_key(root) {
                continue;
            }
            let i = self.images.len();
            let guest = format!("{GUEST_IMAGES}/{i}");
            self.add_share(format!("img{i}"), root.clone(), true, &guest);
            self.images.insert(root.clone(), guest);
        }
        let vol_root = pod_dir.join("volumes");
        let mut hp_index = 0;
        for v in &plan.volumes {
            match &v.source {
                VolumeSourcePlan::EmptyDir {
                    memory: false,
                    size_limit_bytes: _,
                } => {
                    if self.empty_dir_root.is_none() {
                        mkdir_mode(&v.name, &vol_root, 0o700)?;
                        self.empty_dir_root = Some(vol_root.clone());
                        self.add_share(PODVOL_TAG.into(), vol_root.clone(), false, GUEST_VOLUMES);
                    }
                    mkdir_mode(&v.name, &vol_root.join(&v.name), 0o777)?;
                    self.volumes.insert(
                        v.name.clone(),
                        GuestVolume {
                            path: format!("{GUEST_VOLUMES}/{}", v.name),
                        },
                    );
                }
                VolumeSourcePlan::EmptyDir {
                    memory: true,
                    size_limit_bytes,
                } => {
                    let guest = format!("{GUEST_MEMVOL}/{}", v.name);
                    self.filesystems.push(PodFilesystem {
                        mount_point: guest.clone(),
                        source: FsSource::Tmpfs {
                            size_bytes: *size_limit_bytes,
                        },
                        read_only: false,
                    });
                    self.volumes
                        .insert(v.name.clone(), GuestVolume { path: guest });
                }
                VolumeSourcePlan::HostPath { .. } => {
                    let Some(check) = host_paths.iter().find(|c| c.volume == v.name) else {
                        continue;
                    };
                    let ro = all_read_only(plan, &v.name);
                    let i = hp_index;
                    hp_index += 1;
                    let guest = self.host_path(check, i, ro, pod_dir)?;
                    self.volumes
                        .insert(v.name.clone(), GuestVolume { path: guest });
                }
            }
        }
        Ok(())
    }

    fn add_share(&mut self, tag: String, host_path: PathBuf, read_only: bool, guest: &str) {
        self.filesystems.push(PodFilesystem {
            mount_point: guest.to_string(),
            source: FsSource::VirtioFs { tag: tag.clone() },
            read_only,
        });
        self.shares.push(Share {
            tag,
            host_path,
            read_only,
        });
    }

    fn host_path(
        &mut self,
        check: &HostPathCheck,
        i: usize,
        read_only: bool,
        pod_dir: &Path,
    ) -> Result<String, VolumeError> {
        let name = &check.volume;
        let path = &check.path;
        match check.action {
            HostAction::CreateDir => mkdir_mode(name, path, 0o755)?,
            HostAction::CreateFile => {
                fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .mode(0o644)
                    .open(path)
                    .map_err(io_err(name, "create", path))?;
            }
            HostAction::UseDir | HostAction::UseFile => {}
        }
        if !check.action.is_file() {
            let guest = format!("{GUEST_HOSTPATH}/{i}");
            self.add_share(format!("hp{i}"), path.clone(), read_only, &guest);
            return Ok(guest);
        }
        // A file: share a private directory holding a bind mount of just that file.
        let dir = pod_dir.join("files").join(i.to_string());
        mkdir_mode(name, &dir, 0o755)?;
        let base = path
            .file_name()
            .map_or_else(|| "file".into(), |b| b.to_string_lossy().into_owned());
        let target = dir.join(&base);
        fs::File::create(&target).map_err(io_err(name, "create", &target))?;
        mount(
            Some(path.as_path()),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| io_err(name, "bind-mount", &target)(io::Error::from(e)))?;
        self.bind_mounts.push(target);
        let guest = format!("{GUEST_HOSTFILE}/{i}");
        self.add_share(format!("hf{i}"), dir, read_only, &guest);
        Ok(format!("{guest}/{base}"))
    }

    /// Detaches host bind mounts and removes the emptyDir data; safe to call twice.
    pub fn teardown(&mut self) {
        for m in self.bind_mounts.drain(..) {
            detach_tree(&m);
        }
        if let Some(root) = self.empty_dir_root.take() {
            if let Err(e) = fs::remove_dir_all(&root) {
                if e.kind() != io::ErrorKind::NotFound {
                    eprintln!("peapod: warning: cannot remove {}: {e}", root.display());
                }
            }
        }
    }
}

/// Detaches whatever is mounted at `path` (repeatedly, for stacked mounts) and removes the
/// placeholder. Never follows into the mounted file.
pub fn detach_tree(path: &Path) {
    for _ in 0..8 {
        if umount2(path, MntFlags::MNT_DETACH | MntFlags::UMOUNT_NOFOLLOW).is_err() {
            break;
        }
    }
    if path.is_dir() {
        if let Ok(entries) = fs::read_dir(path) {
            for e in entries.flatten() {
                detach_tree(&e.path());
            }
        }
        let _ = fs::remove_dir(path);
    } else {
        let _ = fs::remove_file(path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pod_spec::plan::{ContainerPlan, MountPlan, VmSizing, VolumePlan};

    fn check(path: &Path, t: &str) -> Result<HostAction, String> {
        check_host_path("v", path, t).map_err(|e| e.to_string())
    }

    #[test]
    fn host_path_types_are_checked_like_kubernetes() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("dir");
        let file = d.path().join("file");
        let missing = d.path().join("missing");
        fs::create_dir(&dir).unwrap();
        fs::write(&file, b"x").unwrap();
        let sock = d.path().join("sock");
        let _l = std::os::unix::net::UnixListener::bind(&sock).unwrap();

        assert_eq!(check(&dir, ""), Ok(HostAction::UseDir));
        assert_eq!(check(&file, ""), Ok(HostAction::UseFile));
        assert_eq!(check(&missing, ""), Ok(HostAction::CreateDir));
        assert_eq!(
            check(&missing, "DirectoryOrCreate"),
            Ok(HostAction::CreateDir)
        );
        assert_eq!(check(&dir, "DirectoryOrCreate"), Ok(HostAction::UseDir));
        assert_eq!(check(&dir, "Directory"), Ok(HostAction::UseDir));
        assert_eq!(check(&missing, "FileOrCreate"), Ok(HostAction::CreateFile));
        assert_eq!(check(&file, "File"), Ok(HostAction::UseFile));

        let e = check(&missing, "Directory").unwrap_err();
        assert!(e.contains("does not exist (type Directory)"), "{e}");
        assert!(e.starts_with("hostPath volume \"v\": "), "{e}");
        let e = check(&file, "Directory").unwrap_err();
        assert!(
            e.contains("is a regular file, not what type Directory requires"),
            "{e}"
        );
        let e = check(&dir, "FileOrCreate").unwrap_err();
        assert!(e.contains("is a directory"), "{e}");
        let e = check(&d.path().join("no/such"), "FileOrCreate").unwrap_err();
        assert!(e.contains("does not create parent directories"), "{e}");
        let e = check(&file, "Socket").unwrap_err();
        assert!(e.contains("not what type Socket requires"), "{e}");
        let e = check(&sock, "Socket").unwrap_err();
        assert!(e.contains("cannot be shared into a microVM"), "{e}");
        let e = check(&sock, "").unwrap_err();
        assert!(e.contains("a socket cannot be shared"), "{e}");
        let e = check(Path::new("/dev/null"), "CharDevice").unwrap_err();
        assert!(e.contains("type CharDevice cannot be shared"), "{e}");
    }

    fn ctr(name: &str, mounts: Vec<(&str, bool)>) -> ContainerPlan {
        ContainerPlan {
            name: name.into(),
            image: "busybox".into(),
            image_pull_policy: "IfNotPresent".into(),
            argv: vec!["true".into()],
            env: vec![],
            working_dir: String::new(),
            user: String::new(),
            mounts: mounts
                .into_iter()
                .map(|(v, ro)| MountPlan {
                    volume: v.into(),
                    mount_path: format!("/{v}"),
                    read_only: ro,
                    sub_path: String::new(),
                })
                .collect(),
            ports: vec![],
            stdin: false,
            tty: false,
            cpu_limit_millis: None,
            memory_limit_bytes: None,
            cpu_request_millis: None,
            memory_request_bytes: None,
        }
    }

    fn plan(volumes: Vec<VolumePlan>, containers: Vec<ContainerPlan>) -> PodPlan {
        PodPlan {
            name: "p".into(),
            namespace: "default".into(),
            uid: "u".into(),
            hostname: "p".into(),
            subdomain: String::new(),
            restart_policy: "Never".into(),
            share_process_namespace: false,
            active_deadline_seconds: None,
            termination_grace_period_seconds: 30,
            vm: VmSizing {
                vcpus: 1,
                memory_mib: 256,
                effective_cpu_millis: 0,
                effective_memory_bytes: 0,
            },
            volumes,
            init_containers: vec![],
            containers,
        }
    }

    #[test]
    fn layout_shares_images_once_and_lays_out_every_volume_kind() {
        let d = tempfile::tempdir().unwrap();
        let pod_dir = d.path().join("pod");
        fs::create_dir(&pod_dir).unwrap();
        let host_dir = d.path().join("hp-new");
        let host_ro = d.path().join("hp-ro");
        fs::create_dir(&host_ro).unwrap();
        let vols = vec![
            VolumePlan {
                name: "cache".into(),
                source: VolumeSourcePlan::EmptyDir {
                    memory: false,
                    size_limit_bytes: None,
                },
            },
            VolumePlan {
                name: "mem".into(),
                source: VolumeSourcePlan::EmptyDir {
                    memory: true,
                    size_limit_bytes: Some(1 << 20),
                },
            },
            VolumePlan {
                name: "out".into(),
                source: VolumeSourcePlan::HostPath {
                    path: host_dir.display().to_string(),
                    path_type: "DirectoryOrCreate".into(),
                },
            },
            VolumePlan {
                name: "conf".into(),
                source: VolumeSourcePlan::HostPath {
                    path: host_ro.display().to_string(),
                    path_type: "Directory".into(),
                },
            },
        ];
        let p = plan(
            vols,
            vec![
                ctr("a", vec![("cache", false), ("out", false), ("conf", true)]),
                ctr("b", vec![("cache", false), ("mem", false), ("conf", true)]),
            ],
        );
        let checks = check_host_paths(&p).unwrap();
        let img = d.path().join("rootfs");
        let mut l = Layout::build(&p, &[img.clone(), img.clone()], &checks, &pod_dir).unwrap();
        let tags: Vec<String> = l.shares.iter().map(Share::vmm_arg).collect();
        assert_eq!(
            tags,
            vec![
                format!("img0={}:ro", img.display()),
                format!("podvol={}", pod_dir.join("volumes").display()),
                format!("hp0={}", host_dir.display()),
                format!("hp1={}:ro", host_ro.display()),
            ]
        );
        assert_eq!(l.images[&img], "/run/peapod/images/0");
        assert_eq!(l.volumes["cache"].path, "/run/peapod/volumes/cache");
        assert_eq!(l.volumes["mem"].path, "/run/peapod/memvol/mem");
        assert_eq!(l.volumes["out"].path, "/run/peapod/hostpath/0");
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(&host_dir), 0o755, "DirectoryOrCreate makes 0755");
        assert_eq!(mode(&pod_dir.join("volumes/cache")), 0o777);
        assert!(l
            .filesystems
            .iter()
            .any(|f| f.mount_point == "/run/peapod/memvol/mem"
                && f.source
                    == FsSource::Tmpfs {
                        size_bytes: Some(1 << 20)
                    }));
        l.teardown();
        assert!(
            !pod_dir.join("volumes").exists(),
            "emptyDir data goes with the pod"
        );
        assert!(host_dir.is_dir(), "hostPath data stays");
    }

    #[test]
    fn a_host_file_is_shared_alone_through_a_bind_mount() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: bind mounts need root");
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let pod_dir = d.path().join("pod");
        fs::create_dir(&pod_dir).unwrap();
        let file = d.path().join("app.conf");
        fs::write(&file, b"v=1").unwrap();
        fs::write(d.path().join("secret"), b"sibling").unwrap();
        let p = plan(
            vec![VolumePlan {
                name: "conf".into(),
                source: VolumeSourcePlan::HostPath {
                    path: file.display().to_string(),
                    path_type: "File".into(),
                },
            }],
            vec![ctr("a", vec![("conf", false)])],
        );
        let checks = check_host_paths(&p).unwrap();
        let mut l = Layout::build(&p, &[d.path().join("r")], &checks, &pod_dir).unwrap();
        let share = l.shares[1].clone();
        assert_eq!(share.tag, "hf0");
        let names: Vec<_> = fs::read_dir(&share.host_path)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("app.conf")]);
        assert_eq!(fs::read(share.host_path.join("app.conf")).unwrap(), b"v=1");
        fs::write(share.host_path.join("app.conf"), b"v=2").unwrap();
        assert_eq!(
            fs::read(&file).unwrap(),
            b"v=2",
            "writes reach the host file"
        );
        assert_eq!(l.volumes["conf"].path, "/run/peapod/hostfile/0/app.conf");
        l.teardown();
        assert!(!share.host_path.join("app.conf").exists());
        assert_eq!(
            fs::read(&file).unwrap(),
            b"v=2",
            "teardown leaves the host file alone"
        );
    }
}
