//! Checks that the host's `/dev/kvm` can boot a standard guest, before any VM is built.
//!
//! Three environments are refused with a plain message: no `/dev/kvm`, a `/dev/kvm` that this
//! user may not open, and a `/dev/kvm` served by the PVM software hypervisor (detected through
//! `<sysfs>/module/kvm_pvm`), which only runs guests built as PVM guests.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Where to point users whose host cannot boot a standard guest.
pub const KVM_TEST_HOST_HINT: &str = "run it inside the emulated KVM test host instead: \
tests/kvm-host/run.sh -- CMD (see docs/vmm.md)";

/// Errors of the host environment check.
#[derive(Debug, thiserror::Error)]
pub enum HostCheckError {
    /// The KVM device does not exist.
    #[error("{path} does not exist: this host has no KVM (load kvm-intel/kvm-amd or enable virtualization); {hint}", path = .0.display(), hint = KVM_TEST_HOST_HINT)]
    Missing(PathBuf),
    /// The KVM device exists but may not be opened.
    #[error("{path} is not accessible ({source}): add this user to the kvm group or run as root; {hint}", path = .path.display(), hint = KVM_TEST_HOST_HINT)]
    NotAccessible { path: PathBuf, source: io::Error },
    /// The KVM device could not be opened for another reason.
    #[error("cannot open {path}: {source}", path = .path.display())]
    Open { path: PathBuf, source: io::Error },
    /// The KVM device is served by the PVM software hypervisor.
    #[error("{path} is served by the PVM software hypervisor ({marker} exists): a standard Linux guest cannot boot there (it runs 100x slower and dies on emulation failures); {hint}; pass --allow-pvm only to measure host-side setup cost", path = .path.display(), marker = .marker.display(), hint = KVM_TEST_HOST_HINT)]
    Pvm { path: PathBuf, marker: PathBuf },
}

/// What the check looks at; both paths can be overridden for tests.
#[derive(Debug, Clone)]
pub struct HostCheck {
    /// The KVM device node, normally `/dev/kvm`.
    pub kvm_path: PathBuf,
    /// The sysfs mount point, normally `/sys`.
    pub sysfs_root: PathBuf,
    /// Accept a PVM-backed `/dev/kvm` (host-side measurements only).
    pub allow_pvm: bool,
}

impl Default for HostCheck {
    fn default() -> Self {
        HostCheck {
            kvm_path: PathBuf::from("/dev/kvm"),
            sysfs_root: PathBuf::from("/sys"),
            allow_pvm: false,
        }
    }
}

/// True when `<sysfs_root>/module/kvm_pvm` exists, i.e. KVM is the PVM software hypervisor.
pub fn is_pvm(sysfs_root: &Path) -> bool {
    pvm_marker(sysfs_root).exists()
}

fn pvm_marker(sysfs_root: &Path) -> PathBuf {
    sysfs_root.join("module").join("kvm_pvm")
}

impl HostCheck {
    /// Runs the check and returns the opened KVM device (close-on-exec, read-write).
    pub fn run(&self) -> Result<File, HostCheckError> {
        if !self.kvm_path.exists() {
            return Err(HostCheckError::Missing(self.kvm_path.clone()));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(&self.kvm_path)
            .map_err(|source| match source.kind() {
                io::ErrorKind::PermissionDenied => HostCheckError::NotAccessible {
                    path: self.kvm_path.clone(),
                    source,
                },
                io::ErrorKind::NotFound => HostCheckError::Missing(self.kvm_path.clone()),
                _ => HostCheckError::Open {
                    path: self.kvm_path.clone(),
                    source,
                },
            })?;
        if !self.allow_pvm && is_pvm(&self.sysfs_root) {
            return Err(HostCheckError::Pvm {
                path: self.kvm_path.clone(),
                marker: pvm_marker(&self.sysfs_root),
            });
        }
        Ok(file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn fake_host(pvm: bool) -> (tempfile::TempDir, HostCheck) {
        let dir = tempfile::tempdir().unwrap();
        let kvm = dir.path().join("kvm");
        std::fs::write(&kvm, b"").unwrap();
        let sys = dir.path().join("sys");
        std::fs::create_dir_all(sys.join("module").join("kvm")).unwrap();
        if pvm {
            std::fs::create_dir_all(sys.join("module").join("kvm_pvm")).unwrap();
        }
        let check = HostCheck {
            kvm_path: kvm,
            sysfs_root: sys,
            allow_pvm: false,
        };
        (dir, check)
    }

    #[test]
    fn pvm_is_detected_from_sysfs() {
        let (_dir, check) = fake_host(true);
        assert!(is_pvm(&check.sysfs_root));
        let err = check.run().unwrap_err();
        assert!(matches!(err, HostCheckError::Pvm { .. }));
        let msg = err.to_string();
        assert!(msg.contains("standard Linux guest cannot boot"), "{msg}");
        assert!(msg.contains("tests/kvm-host/run.sh"), "{msg}");
    }

    #[test]
    fn pvm_is_accepted_with_escape_hatch() {
        let (_dir, mut check) = fake_host(true);
        check.allow_pvm = true;
        assert!(check.run().is_ok());
    }

    #[test]
    fn plain_kvm_passes() {
        let (_dir, check) = fake_host(false);
        assert!(!is_pvm(&check.sysfs_root));
        assert!(check.run().is_ok());
    }

    #[test]
    fn missing_device_is_reported() {
        let (_dir, mut check) = fake_host(false);
        check.kvm_path = check.kvm_path.with_file_name("nope");
        let err = check.run().unwrap_err();
        assert!(matches!(err, HostCheckError::Missing(_)));
        assert!(err.to_string().contains("does not exist"));
    }

    #[test]
    fn unreadable_device_is_reported() {
        // Root bypasses file permissions, so this only shows something as another user.
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            eprintln!("note: running as root, EACCES cannot be provoked; skipped");
            return;
        }
        let (_dir, check) = fake_host(false);
        std::fs::set_permissions(&check.kvm_path, std::fs::Permissions::from_mode(0o000)).unwrap();
        let err = check.run().unwrap_err();
        assert!(matches!(err, HostCheckError::NotAccessible { .. }), "{err}");
    }
}
