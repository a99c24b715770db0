//! Finding the files a microVM needs: the VMM binary, the guest kernel and the initramfs.

use std::path::{Path, PathBuf};

/// Errors of asset lookup.
#[derive(Debug, thiserror::Error)]
pub enum AssetError {
    /// An asset file is missing.
    #[error("{what} not found at {path} ({hint})")]
    Missing {
        /// Which asset.
        what: &'static str,
        /// Where it was looked for.
        path: PathBuf,
        /// How to get it.
        hint: &'static str,
    },
}

/// Paths given on the command line (they win over the environment and the defaults).
#[derive(Debug, Clone, Default)]
pub struct AssetOverrides {
    /// `--vmm`.
    pub vmm: Option<PathBuf>,
    /// `--kernel`.
    pub kernel: Option<PathBuf>,
    /// `--initrd`.
    pub initrd: Option<PathBuf>,
}

/// The files a pod's microVM is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assets {
    /// The `peapod-vmm` binary.
    pub vmm: PathBuf,
    /// The guest kernel (`vmlinux`).
    pub kernel: PathBuf,
    /// The initramfs whose `/init` is the guest agent.
    pub initrd: PathBuf,
}

const BUILD_HINT: &str = "build it with scripts/demo.sh, or pass --kernel/--initrd/--vmm \
or set PEAPOD_KERNEL/PEAPOD_INITRD/PEAPOD_VMM";

impl Assets {
    /// Looks up each asset: the override, then `PEAPOD_VMM`/`PEAPOD_KERNEL`/`PEAPOD_INITRD`,
    /// then the default (`peapod-vmm` next to `self_exe`, `ROOT/assets/vmlinux`,
    /// `ROOT/assets/initramfs.cpio.gz`).
    pub fn locate(
        root: &Path,
        overrides: &AssetOverrides,
        env: &dyn Fn(&str) -> Option<String>,
        self_exe: Option<&Path>,
    ) -> Result<Self, AssetError> {
        let pick = |o: &Option<PathBuf>, var: &str, default: PathBuf| {
            o.clone()
                .or_else(|| env(var).filter(|v| !v.is_empty()).map(PathBuf::from))
                .unwrap_or(default)
        };
        let vmm_default = self_exe
            .and_then(Path::parent)
            .map_or_else(|| PathBuf::from("peapod-vmm"), |d| d.join("peapod-vmm"));
        let assets = Self {
            vmm: pick(&overrides.vmm, "PEAPOD_VMM", vmm_default),
            kernel: pick(
                &overrides.kernel,
                "PEAPOD_KERNEL",
                root.join("assets/vmlinux"),
            ),
            initrd: pick(
                &overrides.initrd,
                "PEAPOD_INITRD",
                root.join("assets/initramfs.cpio.gz"),
            ),
        };
        for (what, path) in [
            ("the VMM binary (peapod-vmm)", &assets.vmm),
            ("the guest kernel", &assets.kernel),
            ("the guest initramfs", &assets.initrd),
        ] {
            if !path.is_file() {
                return Err(AssetError::Missing {
                    what,
                    path: path.clone(),
                    hint: BUILD_HINT,
                });
            }
        }
        Ok(assets)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn override_then_env_then_default() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("assets")).unwrap();
        std::fs::create_dir_all(root.join("bin")).unwrap();
        for f in [
            "assets/vmlinux",
            "assets/initramfs.cpio.gz",
            "bin/peapod-vmm",
            "k2",
        ] {
            std::fs::write(root.join(f), b"x").unwrap();
        }
        let exe = root.join("bin/peapod");
        let none = |_: &str| None;
        let a = Assets::locate(root, &AssetOverrides::default(), &none, Some(&exe)).unwrap();
        assert_eq!(a.vmm, root.join("bin/peapod-vmm"));
        assert_eq!(a.kernel, root.join("assets/vmlinux"));
        let k2 = root.join("k2").display().to_string();
        let env = move |v: &str| (v == "PEAPOD_KERNEL").then(|| k2.clone());
        let a = Assets::locate(root, &AssetOverrides::default(), &env, Some(&exe)).unwrap();
        assert_eq!(a.kernel, root.join("k2"));
        let o = AssetOverrides {
            kernel: Some(root.join("nope")),
            ..Default::default()
        };
        let e = Assets::locate(root, &o, &env, Some(&exe)).unwrap_err();
        let msg = e.to_string();
        assert!(msg.starts_with("the guest kernel not found at "), "{msg}");
        assert!(msg.contains("nope"), "{msg}");
    }
}
