//! Pulls from a real `docker-registry` on loopback populated with `skopeo`: by tag, by digest,
//! through a manifest list, with htpasswd (basic) auth, a corrupted blob, ten concurrent pulls,
//! and the imagePullPolicy matrix including the built-in busybox and an unreachable registry.

mod common;

use common::*;
use image_store::busybox;
use image_store::manifest::{OCI_LAYER_GZIP, OCI_LAYER_TAR};
use image_store::progress::ProgressMode;
use image_store::pull::{pull, PullError};
use image_store::{
    ensure_image, Credentials, Digest, EnsureError, EnsureOptions, ImageRef, Outcome, PullPolicy,
    RegistryOptions, Store, StoreError,
};
use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

fn opts() -> RegistryOptions {
    RegistryOptions {
        progress: ProgressMode::Quiet,
        connect_timeout: Duration::from_secs(2),
        ..Default::default()
    }
}

fn ensure_opts(builtin: bool) -> EnsureOptions {
    EnsureOptions {
        registry: opts(),
        builtin,
    }
}

fn busybox_layout(dir: &Path) {
    busybox::build(Path::new(busybox::DEFAULT_BUSYBOX))
        .unwrap()
        .write_layout(dir)
        .unwrap();
}

fn simple_layout(dir: &Path, tag: &str, content: &[u8]) -> (Layout, Digest) {
    let mut l = Layout::new(dir);
    let m = l.image(
        &[(
            OCI_LAYER_GZIP,
            gzip(&LayerBuilder::default().file("content", content).tar()),
        )],
        config(&["cat", "/content"]),
    );
    l.tag(&m, tag);
    (l, m.digest)
}

#[tokio::test]
async fn pull_by_tag_by_digest_and_through_a_manifest_list() {
    let reg = Registry::start(None);
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("bb");
    busybox_layout(&layout);
    reg.push(&layout, "1.36", "library/busybox:1.36", false);

    // By tag.
    let store = Store::open(&work.path().join("root")).unwrap();
    let r = ImageRef::parse(&format!("{}/library/busybox:1.36", reg.host())).unwrap();
    let rec = pull(&store, &r, &opts()).await.unwrap();
    let h = store.image(&r).unwrap();
    assert_eq!(h.config.cmd, vec!["sh"]);
    assert!(h.rootfs.join("bin/busybox").is_file());
    assert_eq!(count(&store.dir().join("tmp")), 0);

    // By digest, into a fresh store.
    let store2 = Store::open(&work.path().join("root2")).unwrap();
    let rd = ImageRef::parse(&format!("{}/library/busybox@{}", reg.host(), rec.digest)).unwrap();
    let rec2 = pull(&store2, &rd, &opts()).await.unwrap();
    assert_eq!(rec2.digest, rec.digest);
    assert!(store2.image(&rd).unwrap().rootfs.join("bin/sh").exists());
    // A digest that is not there fails and names the registry.
    let missing = ImageRef::parse(&format!(
        "{}/library/busybox@{}",
        reg.host(),
        Digest::of(b"nope")
    ))
    .unwrap();
    let err = pull(&store2, &missing, &opts()).await.unwrap_err();
    assert!(err.to_string().contains(&reg.host()), "{err}");

    // Through a manifest list: amd64 and arm64 entries, amd64 must be chosen.
    let mut ml = Layout::new(&work.path().join("multi"));
    let amd = ml.image(
        &[(
            OCI_LAYER_TAR,
            LayerBuilder::default().file("arch", b"amd64").tar(),
        )],
        config(&["x"]),
    );
    let arm = ml.image(
        &[(
            OCI_LAYER_TAR,
            LayerBuilder::default().file("arch", b"arm64").tar(),
        )],
        config(&["y"]),
    );
    let idx = ml.index(&[("arm64", arm), ("amd64", amd.clone())]);
    ml.tag(&idx, "multi");
    reg.push(&ml.dir, "multi", "team/multi:1", true);
    let rm = ImageRef::parse(&format!("{}/team/multi:1", reg.host())).unwrap();
    let rec = pull(&store, &rm, &opts()).await.unwrap();
    assert_eq!(rec.digest, idx.digest, "reference points at the index");
    assert_eq!(rec.manifest, amd.digest, "linux/amd64 selected");
    let h = store.image(&rm).unwrap();
    assert_eq!(fs::read(h.rootfs.join("arch")).unwrap(), b"amd64");
}

#[tokio::test]
async fn htpasswd_basic_auth() {
    let reg = Registry::start(Some(("peapod", "s3cret")));
    let work = tempfile::tempdir().unwrap();
    let (l, _) = simple_layout(&work.path().join("l"), "v1", b"private");
    reg.push(&l.dir, "v1", "team/private:v1", false);
    let store = Store::open(&work.path().join("root")).unwrap();
    let r = ImageRef::parse(&format!("{}/team/private:v1", reg.host())).unwrap();
    // Anonymous: refused.
    let err = pull(&store, &r, &opts()).await.unwrap_err();
    assert!(matches!(err, PullError::Registry { .. }), "{err}");
    // Wrong password: refused.
    let mut o = opts();
    o.credentials = Credentials::Basic {
        username: "peapod".into(),
        password: "wrong".into(),
    };
    assert!(pull(&store, &r, &o).await.is_err());
    assert!(store.list().unwrap().is_empty());
    // Right password: pulled.
    o.credentials = Credentials::Basic {
        username: "peapod".into(),
        password: "s3cret".into(),
    };
    pull(&store, &r, &o).await.unwrap();
    assert_eq!(
        fs::read(store.image(&r).unwrap().rootfs.join("content")).unwrap(),
        b"private"
    );
}

#[tokio::test]
async fn corrupted_blob_in_registry_is_rejected() {
    let reg = Registry::start(None);
    let work = tempfile::tempdir().unwrap();
    let layer = gzip(
        &LayerBuilder::default()
            .file("big", &vec![1u8; 200_000])
            .tar(),
    );
    let mut l = Layout::new(&work.path().join("l"));
    let m = l.image(&[(OCI_LAYER_GZIP, layer.clone())], config(&["x"]));
    l.tag(&m, "v1");
    reg.push(&l.dir, "v1", "team/corrupt:v1", false);
    let data = reg.blob_data(&Digest::of(&layer));
    let mut bytes = fs::read(&data).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    fs::write(&data, bytes).unwrap();
    let store = Store::open(&work.path().join("root")).unwrap();
    let r = ImageRef::parse(&format!("{}/team/corrupt:v1", reg.host())).unwrap();
    let err = pull(&store, &r, &opts()).await.unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, PullError::Store(StoreError::DigestMismatch { .. }))
            || msg.contains("digest"),
        "{msg}"
    );
    assert!(
        store.list().unwrap().is_empty(),
        "no reference for a partial image"
    );
    assert!(!store.has_blob(&Digest::of(&layer)));
    assert!(
        !store.has_blob(&m.digest),
        "manifest is only stored once everything verified"
    );
    assert_eq!(count(&store.dir().join("tmp")), 0);
    assert_eq!(count(&store.dir().join("rootfs")), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_concurrent_pulls_store_one_copy() {
    let reg = Registry::start(None);
    let work = tempfile::tempdir().unwrap();
    let mut l = Layout::new(&work.path().join("l"));
    let layers: Vec<(&str, Vec<u8>)> = (0..3)
        .map(|i| {
            let data: Vec<u8> = (0..300_000u32)
                .map(|x| (x.wrapping_mul(2654435761) >> (i + 3)) as u8)
                .collect();
            (
                OCI_LAYER_GZIP,
                gzip(&LayerBuilder::default().file(&format!("f{i}"), &data).tar()),
            )
        })
        .collect();
    let m = l.image(&layers, config(&["x"]));
    l.tag(&m, "v1");
    reg.push(&l.dir, "v1", "team/conc:v1", false);
    let root = work.path().join("root");
    let reference = format!("{}/team/conc:v1", reg.host());
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let root = root.clone();
        let reference = reference.clone();
        tasks.push(tokio::spawn(async move {
            // Each task opens its own store handle, as separate processes would.
            let store = Store::open(&root).unwrap();
            let r = ImageRef::parse(&reference).unwrap();
            pull(&store, &r, &opts()).await.map(|rec| rec.digest)?;
            let h = tokio::task::spawn_blocking(move || store.image(&r))
                .await
                .unwrap()?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(h.rootfs)
        }));
    }
    let mut roots = Vec::new();
    for t in tasks {
        roots.push(t.await.unwrap().unwrap());
    }
    roots.dedup();
    assert_eq!(roots.len(), 1, "one shared rootfs");
    let store = Store::open(&root).unwrap();
    assert_eq!(
        count(&store.dir().join("blobs/sha256")),
        5,
        "manifest + config + 3 layers, once each"
    );
    assert_eq!(count(&store.dir().join("rootfs")), 1);
    assert_eq!(count(&store.dir().join("tmp")), 0);
    assert_eq!(store.list().unwrap().len(), 1);
}

#[tokio::test]
async fn pull_policy_matrix() {
    let work = tempfile::tempdir().unwrap();
    let store = Store::open(&work.path().join("root")).unwrap();
    let (l1, d1) = simple_layout(&work.path().join("l1"), "v1", b"one");
    let (l2, d2) = simple_layout(&work.path().join("l2"), "v1", b"two");
    let reg = Registry::start(None);
    let port = reg.port;
    let host = reg.host();
    reg.push(&l1.dir, "v1", "team/app:latest", false);
    reg.push(&l1.dir, "v1", "team/app:v1", false);
    let latest = format!("{host}/team/app:latest");
    let v1 = format!("{host}/team/app:v1");
    let o = ensure_opts(false);
    let read = |h: &image_store::ImageHandle| fs::read(h.rootfs.join("content")).unwrap();

    // Never + absent.
    let err = ensure_image(&store, &v1, Some(PullPolicy::Never), &o)
        .await
        .unwrap_err();
    assert!(matches!(err, EnsureError::ErrImageNeverPull(_)), "{err}");
    assert!(err.to_string().starts_with("ErrImageNeverPull"));
    // IfNotPresent + absent: pulled.
    let (h, out) = ensure_image(&store, &v1, Some(PullPolicy::IfNotPresent), &o)
        .await
        .unwrap();
    assert_eq!((out, read(&h)), (Outcome::Pulled, b"one".to_vec()));
    // Default for :latest is Always: pulled.
    let (h, out) = ensure_image(&store, &latest, None, &o).await.unwrap();
    assert_eq!((out, read(&h)), (Outcome::Pulled, b"one".to_vec()));

    // The tags move to new content.
    reg.push(&l2.dir, "v1", "team/app:latest", false);
    reg.push(&l2.dir, "v1", "team/app:v1", false);
    // Default for :v1 is IfNotPresent: keeps the old content, no registry contact.
    let (h, out) = ensure_image(&store, &v1, None, &o).await.unwrap();
    assert_eq!(
        (out, read(&h), h.manifest_digest),
        (Outcome::Present, b"one".to_vec(), d1.clone())
    );
    // Never + present.
    let (_, out) = ensure_image(&store, &v1, Some(PullPolicy::Never), &o)
        .await
        .unwrap();
    assert_eq!(out, Outcome::Present);
    // Always re-pulls and sees the new content (explicit and default for :latest).
    let (h, out) = ensure_image(&store, &v1, Some(PullPolicy::Always), &o)
        .await
        .unwrap();
    assert_eq!(
        (out, read(&h), h.manifest_digest),
        (Outcome::Pulled, b"two".to_vec(), d2.clone())
    );
    let (h, _) = ensure_image(&store, &latest, None, &o).await.unwrap();
    assert_eq!(read(&h), b"two");

    // Registry gone.
    drop(reg);
    let by_digest = format!("{host}/team/app@{d1}");
    // A stored digest is never re-pulled, even with Always.
    let (h, out) = ensure_image(&store, &by_digest, Some(PullPolicy::Always), &o)
        .await
        .unwrap();
    assert_eq!((out, read(&h)), (Outcome::Present, b"one".to_vec()));
    // IfNotPresent + present: fine offline.
    let (_, out) = ensure_image(&store, &v1, Some(PullPolicy::IfNotPresent), &o)
        .await
        .unwrap();
    assert_eq!(out, Outcome::Present);
    // Always + unreachable: ErrImagePull naming the registry, quickly.
    let t = Instant::now();
    let err = ensure_image(&store, &latest, None, &o).await.unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, EnsureError::ErrImagePull { .. }), "{msg}");
    assert!(
        msg.starts_with("ErrImagePull") && msg.contains(&format!("127.0.0.1:{port}")),
        "{msg}"
    );
    assert!(t.elapsed() < Duration::from_secs(5));
    // IfNotPresent + absent + unreachable.
    let err = ensure_image(&store, &format!("{host}/team/other:v1"), None, &o)
        .await
        .unwrap_err();
    assert!(matches!(err, EnsureError::ErrImagePull { .. }), "{err}");
    // A blackholed, non-loopback registry fails within the connect timeout, never hangs.
    let t = Instant::now();
    let err = ensure_image(
        &store,
        "10.255.255.1:5000/x:y",
        Some(PullPolicy::Always),
        &o,
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("10.255.255.1:5000"), "{err}");
    assert!(
        t.elapsed() < Duration::from_secs(8),
        "took {:?}",
        t.elapsed()
    );
}

#[tokio::test]
async fn builtin_busybox_satisfies_every_policy_without_registry() {
    let work = tempfile::tempdir().unwrap();
    let store = Store::open(&work.path().join("root")).unwrap();
    let on = ensure_opts(true);
    let (h, out) = ensure_image(&store, "busybox", Some(PullPolicy::Never), &on)
        .await
        .unwrap();
    assert_eq!(out, Outcome::Builtin);
    assert_eq!(h.config.cmd, vec!["sh"]);
    assert!(h.rootfs.join("bin/busybox").is_file());
    let (_, out) = ensure_image(&store, "busybox:latest", None, &on)
        .await
        .unwrap();
    assert_eq!(out, Outcome::Present);
    let (h2, out) = ensure_image(
        &store,
        "docker.io/library/busybox:1.36",
        Some(PullPolicy::Always),
        &on,
    )
    .await
    .unwrap();
    assert_eq!(out, Outcome::Builtin);
    assert_eq!(h2.rootfs, h.rootfs, "both tags share one rootfs");
    // Other tags are ordinary references.
    let off = ensure_opts(false);
    let err = ensure_image(&store, "busybox:1.35", Some(PullPolicy::Never), &on)
        .await
        .unwrap_err();
    assert!(matches!(err, EnsureError::ErrImageNeverPull(_)));
    // With the built-in disabled, an absent busybox is just absent.
    let store2 = Store::open(&work.path().join("root2")).unwrap();
    let err = ensure_image(&store2, "busybox:1.36", Some(PullPolicy::Never), &off)
        .await
        .unwrap_err();
    assert!(matches!(err, EnsureError::ErrImageNeverPull(_)));
}
