//! The host directories shared with the guest over virtio-fs: a copy of the busybox image root
//! (read-only tag `img0`) and the pod's emptyDir directory (read-write tag `podvol`), and the
//! `peapod-vmm` wrapper that adds their `--fs` arguments.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// virtio-fs tag of the image root.
pub const IMAGE_TAG: &str = "img0";
/// virtio-fs tag of the pod's emptyDir share.
pub const VOLUMES_TAG: &str = "podvol";
/// The emptyDir's directory inside the `podvol` share.
pub const EMPTY_DIR: &str = "data";
/// File the host puts into the emptyDir before boot; the guest must read it.
pub const FROM_HOST: &str = "from-host";
/// Its content.
pub const FROM_HOST_TEXT: &str = "written on the host before boot";

/// Host paths of the shares.
#[derive(Debug, Clone)]
pub struct Shares {
    /// Copy of the image root (`img0`, read-only).
    pub image: PathBuf,
    /// The `podvol` share.
    pub volumes: PathBuf,
}

impl Shares {
    /// The emptyDir directory on the host.
    pub fn empty_dir(&self) -> PathBuf {
        self.volumes.join(EMPTY_DIR)
    }

    /// `peapod-vmm` arguments exporting the shares; halt probing is off as in `peapod run`
    /// (the agent ends the VM with an i8042 reset).
    pub fn vmm_args(&self) -> Vec<String> {
        vec![
            "--no-halt-detection".into(),
            "--fs".into(),
            format!("{IMAGE_TAG}={}:ro", self.image.display()),
            "--fs".into(),
            format!("{VOLUMES_TAG}={}", self.volumes.display()),
        ]
    }
}

/// Copies a directory tree: directories, regular files (with their modes) and symlinks.
pub fn copy_tree(src: &Path, dst: &Path) -> Result<()> {
    std::fs::create_dir_all(dst).with_context(|| format!("create {}", dst.display()))?;
    let mode = std::fs::metadata(src)
        .with_context(|| format!("stat {}", src.display()))?
        .permissions();
    std::fs::set_permissions(dst, mode).with_context(|| format!("chmod {}", dst.display()))?;
    for entry in std::fs::read_dir(src).with_context(|| format!("read {}", src.display()))? {
        let entry = entry?;
        let (from, to) = (entry.path(), dst.join(entry.file_name()));
        let ft = entry.file_type()?;
        if ft.is_symlink() {
            let target = std::fs::read_link(&from)?;
            std::os::unix::fs::symlink(&target, &to)
                .with_context(|| format!("symlink {}", to.display()))?;
        } else if ft.is_dir() {
            copy_tree(&from, &to)?;
        } else if ft.is_file() {
            std::fs::copy(&from, &to)
                .with_context(|| format!("copy {} to {}", from.display(), to.display()))?;
        }
    }
    Ok(())
}

/// Makes the shares under `work`: the image copy and `podvol/data` holding [`FROM_HOST`].
pub fn prepare(work: &Path, image_dir: &Path) -> Result<Shares> {
    let shares = Shares {
        image: work.join(IMAGE_TAG),
        volumes: work.join(VOLUMES_TAG),
    };
    let _ = std::fs::remove_dir_all(&shares.image);
    let _ = std::fs::remove_dir_all(&shares.volumes);
    copy_tree(image_dir, &shares.image)
        .with_context(|| format!("copy the image root {}", image_dir.display()))?;
    let data = shares.empty_dir();
    std::fs::create_dir_all(&data).with_context(|| format!("create {}", data.display()))?;
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o777))?;
    std::fs::write(data.join(FROM_HOST), format!("{FROM_HOST_TEXT}\n"))?;
    Ok(shares)
}

/// Text of a `/bin/sh` script that runs `vmm` with its arguments plus `extra`.
/// (`peapod_e2e::vmm_process::VmmArgs` has no field for extra VMM arguments.)
pub fn wrapper_script(vmm: &Path, extra: &[String]) -> String {
    let quote = |s: &str| format!("'{}'", s.replace('\'', r"'\''"));
    let extra: Vec<String> = extra.iter().map(|a| quote(a)).collect();
    format!(
        "#!/bin/sh\nexec {} \"$@\" {}\n",
        quote(&vmm.display().to_string()),
        extra.join(" ")
    )
}

/// Writes the wrapper into `work` and returns its path.
pub fn write_wrapper(work: &Path, vmm: &Path, extra: &[String]) -> Result<PathBuf> {
    let path = work.join("peapod-vmm-with-fs");
    std::fs::write(&path, wrapper_script(vmm, extra))
        .with_context(|| format!("write {}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_trees_with_links_and_modes() {
        let dir = std::env::temp_dir().join(format!("agent-vm-shares-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let src = dir.join("src");
        std::fs::create_dir_all(src.join("bin")).unwrap();
        std::fs::write(src.join("bin/busybox"), "x").unwrap();
        std::fs::set_permissions(
            src.join("bin/busybox"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        std::os::unix::fs::symlink("busybox", src.join("bin/sh")).unwrap();
        std::fs::create_dir_all(src.join("tmp")).unwrap();
        std::fs::set_permissions(src.join("tmp"), std::fs::Permissions::from_mode(0o1777)).unwrap();
        let s = prepare(&dir.join("work"), &src).unwrap();
        assert_eq!(
            std::fs::read_link(s.image.join("bin/sh")).unwrap(),
            Path::new("busybox")
        );
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(&s.image.join("bin/busybox")), 0o755);
        assert_eq!(mode(&s.image.join("tmp")), 0o1777);
        assert_eq!(mode(&s.empty_dir()), 0o777);
        assert_eq!(
            std::fs::read_to_string(s.empty_dir().join(FROM_HOST)).unwrap(),
            format!("{FROM_HOST_TEXT}\n")
        );
        assert_eq!(
            s.vmm_args(),
            vec![
                "--no-halt-detection".to_string(),
                "--fs".to_string(),
                format!("img0={}:ro", s.image.display()),
                "--fs".to_string(),
                format!("podvol={}", s.volumes.display()),
            ]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn wrapper_passes_arguments_through() {
        let dir = std::env::temp_dir().join(format!("agent-vm-wrapper-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let w = write_wrapper(
            &dir,
            Path::new("/bin/echo"),
            &["--fs".into(), "a=/x y:ro".into(), "it's".into()],
        )
        .unwrap();
        let out = std::process::Command::new(&w)
            .args(["--kernel", "k"])
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "--kernel k --fs a=/x y:ro it's\n"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
