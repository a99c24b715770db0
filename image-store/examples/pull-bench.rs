//! Benchmark: pull + unpack of a ~50 MB image from a loopback `docker-registry`, compared with
//! `skopeo copy` + `tar -x` of the same image in the same run.
//! `cargo run --release -p image-store --example pull-bench [-- SIZE_MB]`
//! Needs the Debian packages docker-registry and skopeo.

use image_store::digest::Digest;
use image_store::manifest::{
    Descriptor, Index, Manifest, OCI_CONFIG, OCI_INDEX, OCI_LAYER_GZIP, OCI_MANIFEST,
};
use image_store::progress::ProgressMode;
use image_store::{ImageRef, RegistryOptions, Store};
use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn desc(mt: &str, data: &[u8]) -> Descriptor {
    Descriptor {
        media_type: mt.to_string(),
        digest: Digest::of(data),
        size: data.len() as u64,
        platform: None,
        annotations: BTreeMap::new(),
    }
}

/// A layer of `files` files of `size` bytes each: half random, half text-like.
fn layer(seed: u64, files: usize, size: usize) -> Vec<u8> {
    let mut x = seed | 1;
    let mut b = tar::Builder::new(Vec::new());
    for i in 0..files {
        let mut data = Vec::with_capacity(size);
        while data.len() < size {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if (data.len() / 4096) % 2 == 0 {
                data.extend_from_slice(&x.to_le_bytes());
            } else {
                data.extend_from_slice(format!("line {} of file {i}\n", data.len()).as_bytes());
            }
        }
        data.truncate(size);
        let mut h = tar::Header::new_gnu();
        h.set_size(size as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, format!("data/l{seed}/f{i}"), &data[..])
            .expect("append");
    }
    let tar = b.into_inner().expect("tar");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).expect("gzip");
    gz.finish().expect("gzip")
}

fn build_layout(dir: &Path, total_mb: usize) -> u64 {
    fs::create_dir_all(dir.join("blobs/sha256")).expect("mkdir");
    fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).expect("write");
    let put = |data: &[u8]| {
        fs::write(dir.join("blobs/sha256").join(Digest::of(data).hex()), data).expect("blob");
    };
    let mut layers = Vec::new();
    let per_layer_raw = total_mb * 1_000_000 * 5 / 3 / 4; // gzip of the mix is ~0.6 of raw
    for i in 0..4u64 {
        let l = layer(i + 11, 64, per_layer_raw / 64);
        put(&l);
        layers.push(desc(OCI_LAYER_GZIP, &l));
    }
    let config = serde_json::json!({"architecture":"amd64","os":"linux","config":{"Cmd":["sh"]},
        "rootfs":{"type":"layers","diff_ids":[]}})
    .to_string()
    .into_bytes();
    put(&config);
    let total: u64 = layers.iter().map(|l| l.size).sum();
    let m = Manifest {
        schema_version: 2,
        media_type: Some(OCI_MANIFEST.to_string()),
        config: desc(OCI_CONFIG, &config),
        layers,
    };
    let mb = serde_json::to_vec(&m).expect("json");
    put(&mb);
    let mut d = desc(OCI_MANIFEST, &mb);
    d.annotations
        .insert("org.opencontainers.image.ref.name".into(), "bench".into());
    let idx = Index {
        schema_version: 2,
        media_type: Some(OCI_INDEX.to_string()),
        manifests: vec![d],
        annotations: BTreeMap::new(),
    };
    fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&idx).expect("json"),
    )
    .expect("index");
    total
}

fn run(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e} (install docker-registry and skopeo)"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn main() {
    let size_mb: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(50);
    let work = tempfile::tempdir().expect("tempdir");
    let w = work.path();
    let total = build_layout(&w.join("layout"), size_mb);
    let mb = total as f64 / 1e6;

    let port = TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    fs::create_dir(w.join("reg")).expect("mkdir");
    fs::write(
        w.join("reg.yml"),
        format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            w.join("reg").display()
        ),
    )
    .expect("config");
    let mut reg = Command::new("docker-registry")
        .arg("serve")
        .arg(w.join("reg.yml"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("docker-registry (Debian package docker-registry) must be installed");
    let t = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() && t.elapsed() < Duration::from_secs(20)
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    let host = format!("127.0.0.1:{port}");
    run(Command::new("skopeo")
        .args(["--insecure-policy", "copy", "-q", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:bench", w.join("layout").display()))
        .arg(format!("docker://{host}/bench/image:v1")));

    // peapod: pull + unpack.
    let store = Store::open(&w.join("peapod")).expect("store");
    let r = ImageRef::parse(&format!("{host}/bench/image:v1")).expect("ref");
    let opts = RegistryOptions {
        progress: ProgressMode::Quiet,
        ..Default::default()
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let t0 = Instant::now();
    let rec = rt
        .block_on(image_store::pull::pull(&store, &r, &opts))
        .expect("pull");
    let t_pull = t0.elapsed();
    let t1 = Instant::now();
    store.rootfs(&rec.manifest).expect("unpack");
    let t_unpack = t1.elapsed();
    let t_peapod = t0.elapsed();

    // Reference: skopeo copy to an OCI layout, then tar -x of each layer.
    let t2 = Instant::now();
    run(Command::new("skopeo")
        .args(["--insecure-policy", "copy", "-q", "--src-tls-verify=false"])
        .arg(format!("docker://{host}/bench/image:v1"))
        .arg(format!("oci:{}:v1", w.join("sk").display())));
    let t_sk_pull = t2.elapsed();
    let t3 = Instant::now();
    let root = w.join("sk-root");
    fs::create_dir(&root).expect("mkdir");
    let m: Manifest = serde_json::from_slice(
        &fs::read(w.join("sk/blobs/sha256").join(rec.manifest.hex())).expect("manifest"),
    )
    .expect("json");
    for l in &m.layers {
        run(Command::new("tar")
            .arg("-xzf")
            .arg(w.join("sk/blobs/sha256").join(l.digest.hex()))
            .arg("-C")
            .arg(&root));
    }
    let t_sk_unpack = t3.elapsed();
    let t_sk = t2.elapsed();
    let _ = reg.kill();
    let _ = reg.wait();

    let rate = |d: Duration| mb / d.as_secs_f64();
    println!("image: {mb:.1} MB compressed in 4 gzip layers, loopback docker-registry");
    println!(
        "{:<28} {:>9} {:>9} {:>9} {:>9}",
        "", "pull s", "unpack s", "total s", "MB/s"
    );
    println!(
        "{:<28} {:>9.3} {:>9.3} {:>9.3} {:>9.1}",
        "peapod (oci-client + store)",
        t_pull.as_secs_f64(),
        t_unpack.as_secs_f64(),
        t_peapod.as_secs_f64(),
        rate(t_peapod)
    );
    println!(
        "{:<28} {:>9.3} {:>9.3} {:>9.3} {:>9.1}",
        "skopeo copy + tar -x",
        t_sk_pull.as_secs_f64(),
        t_sk_unpack.as_secs_f64(),
        t_sk.as_secs_f64(),
        rate(t_sk)
    );
}
