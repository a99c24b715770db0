//! Import of OCI layouts (directory and tar) and docker-save archives, refusal of escaping
//! layers, corrupted blobs, and whiteouts across three layers.

mod common;

use common::*;
use image_store::busybox;
use image_store::import::{import_path, ImportError, ImportOptions};
use image_store::manifest::{OCI_LAYER_GZIP, OCI_LAYER_TAR, OCI_LAYER_ZSTD};
use image_store::{ImageRef, Store, StoreError};
use std::fs;
use std::path::Path;
use std::process::Command;

fn busybox_layout(dir: &Path) {
    busybox::build(Path::new(busybox::DEFAULT_BUSYBOX))
        .unwrap()
        .write_layout(dir)
        .unwrap();
}

fn tar_dir(src: &Path, dest: &Path) {
    let f = fs::File::create(dest).unwrap();
    let mut b = tar::Builder::new(f);
    b.append_dir_all(".", src).unwrap();
    b.finish().unwrap();
}

fn check_busybox(store: &Store, r: &str) {
    let h = store.image(&ImageRef::parse(r).unwrap()).unwrap();
    assert_eq!(h.config.cmd, vec!["sh"]);
    assert!(h.config.env.iter().any(|(k, _)| k == "PATH"));
    let sh = fs::read_link(h.rootfs.join("bin/sh")).unwrap();
    assert_eq!(sh, Path::new("/bin/busybox"));
    for a in [
        "usr/sbin/httpd",
        "usr/bin/wget",
        "usr/bin/nc",
        "bin/sleep",
        "usr/bin/tail",
        "bin/date",
    ] {
        assert!(
            fs::symlink_metadata(h.rootfs.join(a)).is_ok(),
            "{a} missing"
        );
    }
    use std::os::unix::fs::PermissionsExt;
    let tmp_mode = fs::metadata(h.rootfs.join("tmp"))
        .unwrap()
        .permissions()
        .mode()
        & 0o7777;
    assert_eq!(tmp_mode, 0o1777);
    assert!(fs::read_to_string(h.rootfs.join("etc/passwd"))
        .unwrap()
        .starts_with("root:x:0:0:"));
    // The binary really runs, through the applet symlink, from the unpacked tree.
    let out = Command::new(h.rootfs.join("bin/busybox"))
        .args(["echo", "hi"])
        .output()
        .unwrap();
    assert_eq!(out.stdout, b"hi\n");
}

#[test]
fn import_oci_layout_dir_and_tar() {
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("layout");
    busybox_layout(&layout);
    let store = Store::open(&work.path().join("root")).unwrap();
    let refs = import_path(&store, &layout, &ImportOptions::default()).unwrap();
    assert_eq!(
        refs,
        vec![
            "docker.io/library/busybox:latest",
            "docker.io/library/busybox:1.36"
        ]
    );
    check_busybox(&store, "busybox:1.36");

    // The same layout as a tar, into a fresh store.
    let tarball = work.path().join("layout.tar");
    tar_dir(&layout, &tarball);
    let store2 = Store::open(&work.path().join("root2")).unwrap();
    let refs = import_path(&store2, &tarball, &ImportOptions::default()).unwrap();
    assert_eq!(refs.len(), 2);
    check_busybox(&store2, "busybox");
    assert_eq!(
        count(&store2.dir().join("tmp")),
        0,
        "temp files left behind"
    );
    // The store itself is a valid OCI layout that skopeo can read.
    let out = Command::new("skopeo")
        .args(["--insecure-policy", "inspect", "--raw"])
        .arg(format!("oci:{}:1.36", store2.dir().display()))
        .output()
        .expect("skopeo must be installed");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn import_docker_save_archive_and_tag_only_layout() {
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("layout");
    busybox_layout(&layout);
    let archive = work.path().join("docker.tar");
    let out = Command::new("skopeo")
        .args(["--insecure-policy", "copy", "--quiet"])
        .arg(format!("oci:{}:1.36", layout.display()))
        .arg(format!(
            "docker-archive:{}:example.com/team/bb:v1",
            archive.display()
        ))
        .output()
        .expect("skopeo must be installed (Debian package skopeo)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let store = Store::open(&work.path().join("root")).unwrap();
    let refs = import_path(&store, &archive, &ImportOptions::default()).unwrap();
    assert_eq!(refs, vec!["example.com/team/bb:v1"]);
    check_busybox(&store, "example.com/team/bb:v1");

    // A layout whose index names only a tag needs a repository name.
    let mut l2 = Layout::new(&work.path().join("l2"));
    let m = l2.image(
        &[(
            OCI_LAYER_TAR,
            LayerBuilder::default().file("hello", b"hi").tar(),
        )],
        config(&["x"]),
    );
    l2.tag(&m, "v3");
    let err = import_path(&store, &l2.dir, &ImportOptions::default()).unwrap_err();
    assert!(matches!(err, ImportError::NoName(_)), "{err}");
    let refs = import_path(
        &store,
        &l2.dir,
        &ImportOptions {
            name: Some("localhost:5000/app".into()),
        },
    )
    .unwrap();
    assert_eq!(refs, vec!["localhost:5000/app:v3"]);
}

#[test]
fn corrupted_blob_is_rejected_and_leaves_nothing() {
    let work = tempfile::tempdir().unwrap();
    let mut l = Layout::new(&work.path().join("l"));
    let layer = gzip(&LayerBuilder::default().file("a", &vec![7u8; 100_000]).tar());
    let m = l.image(&[(OCI_LAYER_GZIP, layer.clone())], config(&["x"]));
    l.tag(&m, "example.com/x:1");
    // Flip one byte of the layer blob.
    let p = l
        .dir
        .join("blobs/sha256")
        .join(image_store::Digest::of(&layer).hex());
    let mut bad = fs::read(&p).unwrap();
    let mid = bad.len() / 2;
    bad[mid] ^= 0xff;
    fs::write(&p, &bad).unwrap();
    let store = Store::open(&work.path().join("root")).unwrap();
    let err = import_path(&store, &l.dir, &ImportOptions::default()).unwrap_err();
    assert!(
        matches!(err, ImportError::Store(StoreError::DigestMismatch { .. })),
        "{err}"
    );
    assert!(store.list().unwrap().is_empty());
    assert!(!store.has_blob(&image_store::Digest::of(&layer)));
    assert_eq!(count(&store.dir().join("tmp")), 0);
    assert_eq!(count(&store.dir().join("rootfs")), 0);
}

#[test]
fn layer_with_dotdot_is_refused_and_leaves_nothing() {
    let work = tempfile::tempdir().unwrap();
    let mut l = Layout::new(&work.path().join("l"));
    let ok = LayerBuilder::default()
        .file("etc/passwd", b"root:x:0:0::/:/bin/sh\n")
        .tar();
    let evil = raw_layer("../../etc/passwd", b"pwned\n");
    let m = l.image(
        &[(OCI_LAYER_TAR, ok), (OCI_LAYER_TAR, evil)],
        config(&["x"]),
    );
    l.tag(&m, "example.com/evil:1");
    let store = Store::open(&work.path().join("root")).unwrap();
    import_path(&store, &l.dir, &ImportOptions::default()).unwrap();
    let err = store
        .image(&ImageRef::parse("example.com/evil:1").unwrap())
        .unwrap_err();
    assert!(err.to_string().contains("escapes the root"), "{err}");
    assert_eq!(count(&store.dir().join("rootfs")), 0);
    assert_eq!(count(&store.dir().join("tmp")), 0);
    assert_eq!(
        count(work.path()),
        2,
        "something was written beside the store"
    );
}

#[test]
fn whiteouts_resolve_across_three_layers() {
    let work = tempfile::tempdir().unwrap();
    let mut l = Layout::new(&work.path().join("l"));
    let l1 = LayerBuilder::default()
        .dir("app")
        .file("app/a", b"1")
        .file("app/b", b"1")
        .file("data/old1", b"1")
        .file("data/sub/old2", b"1")
        .file("gone-later", b"1")
        .tar();
    let l2 = LayerBuilder::default()
        .file("app/.wh.a", b"")
        .file("app/c", b"2")
        .file("data/mid", b"2")
        .tar();
    let l3 = LayerBuilder::default()
        .file("data/.wh..wh..opq", b"")
        .file("data/new", b"3")
        .file(".wh.gone-later", b"")
        .file("app/a", b"3")
        .tar();
    let m = l.image(
        &[
            (OCI_LAYER_TAR, l1),
            (OCI_LAYER_GZIP, gzip(&l2)),
            (OCI_LAYER_ZSTD, zstd(&l3)),
        ],
        config(&["x"]),
    );
    l.tag(&m, "example.com/wh:1");
    let store = Store::open(&work.path().join("root")).unwrap();
    import_path(&store, &l.dir, &ImportOptions::default()).unwrap();
    let h = store
        .image(&ImageRef::parse("example.com/wh:1").unwrap())
        .unwrap();
    assert_eq!(
        tree(&h.rootfs),
        vec!["app", "app/a", "app/b", "app/c", "data", "data/new"]
    );
    assert_eq!(fs::read(h.rootfs.join("app/a")).unwrap(), b"3");
}

#[test]
fn rmi_and_gc_remove_unreferenced_content() {
    let work = tempfile::tempdir().unwrap();
    let mut l = Layout::new(&work.path().join("l"));
    let shared = LayerBuilder::default().file("shared", b"s").tar();
    let m1 = l.image(&[(OCI_LAYER_TAR, shared.clone())], config(&["one"]));
    let m2 = l.image(
        &[
            (OCI_LAYER_TAR, shared),
            (
                OCI_LAYER_TAR,
                LayerBuilder::default().file("own", b"o").tar(),
            ),
        ],
        config(&["two"]),
    );
    l.tag(&m1, "example.com/a:1");
    l.tag(&m2, "example.com/b:1");
    let store = Store::open(&work.path().join("root")).unwrap();
    import_path(&store, &l.dir, &ImportOptions::default()).unwrap();
    store
        .image(&ImageRef::parse("example.com/a:1").unwrap())
        .unwrap();
    store
        .image(&ImageRef::parse("example.com/b:1").unwrap())
        .unwrap();
    let blobs = store.dir().join("blobs/sha256");
    assert_eq!(count(&blobs), 6); // 2 manifests, 2 configs, 2 distinct layers
    store
        .remove(&ImageRef::parse("example.com/b:1").unwrap())
        .unwrap();
    assert!(store
        .remove(&ImageRef::parse("example.com/b:1").unwrap())
        .is_err());
    let report = store.gc().unwrap();
    assert_eq!((report.blobs_removed, report.rootfs_removed), (3, 1));
    assert_eq!(count(&blobs), 3);
    // The survivor still works and index.json lists only it.
    store
        .image(&ImageRef::parse("example.com/a:1").unwrap())
        .unwrap();
    let index = fs::read_to_string(store.dir().join("index.json")).unwrap();
    assert!(index.contains("example.com/a:1") && !index.contains("example.com/b:1"));
}

#[test]
fn leftover_temp_files_are_cleaned_at_open() {
    let work = tempfile::tempdir().unwrap();
    let store = Store::open(work.path()).unwrap();
    let junk = store.tmp_path("blob");
    fs::write(&junk, b"partial").unwrap();
    fs::create_dir(store.tmp_path("rootfs")).unwrap();
    drop(store);
    let store = Store::open(work.path()).unwrap();
    assert_eq!(count(&store.dir().join("tmp")), 0);
}
