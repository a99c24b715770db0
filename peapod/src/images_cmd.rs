//! `peapod image …`, `peapod pull`, `peapod images` and `peapod rmi`: the local image store.

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use image_store::import::{import_path, ImportOptions};
use image_store::progress::ProgressMode;
use image_store::{Credentials, ImageRef, RegistryOptions, Store};
use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `peapod image SUBCOMMAND`.
#[derive(Debug, Args)]
pub struct ImageArgs {
    #[command(subcommand)]
    command: ImageCommand,
}

#[derive(Debug, Subcommand)]
enum ImageCommand {
    /// Import an OCI image layout (directory or tar) or a `docker save` archive.
    Import(ImportArgs),
    /// Pull an image from a registry (same as `peapod pull`).
    Pull(PullArgs),
    /// List images (same as `peapod images`).
    #[command(alias = "list")]
    Ls(ListArgs),
    /// Remove image references (same as `peapod rmi`); blobs go at the next `image gc`.
    #[command(alias = "remove")]
    Rm(RmArgs),
    /// Delete blobs and unpacked root filesystems that no image references.
    Gc,
}

/// `peapod image import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// OCI layout directory, OCI layout tar, or docker-save tar.
    path: PathBuf,
    /// Repository for index entries that carry only a tag (e.g. `localhost:5000/app`).
    #[arg(long)]
    name: Option<String>,
}

/// `peapod pull`.
#[derive(Debug, Args)]
pub struct PullArgs {
    /// Image reference, e.g. `busybox:1.36` or `127.0.0.1:5000/team/app@sha256:…`.
    reference: String,
    /// Use plain HTTP (loopback registries always do).
    #[arg(long)]
    insecure: bool,
    /// Registry user name.
    #[arg(long, short = 'u')]
    username: Option<String>,
    /// Registry password (prefer --password-stdin).
    #[arg(long, short = 'p', conflicts_with = "password_stdin")]
    password: Option<String>,
    /// Read the password from the first line of standard input.
    #[arg(long)]
    password_stdin: bool,
    /// Plain progress lines even on a terminal.
    #[arg(long, conflicts_with = "quiet")]
    plain: bool,
    /// No progress output.
    #[arg(long, short = 'q')]
    quiet: bool,
    /// Connect timeout in seconds.
    #[arg(long, default_value_t = 10)]
    connect_timeout: u64,
}

/// `peapod images`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Print only image references.
    #[arg(long, short = 'q')]
    quiet: bool,
}

/// `peapod rmi`.
#[derive(Debug, Args)]
pub struct RmArgs {
    /// References to remove.
    #[arg(required = true)]
    references: Vec<String>,
}

fn open() -> Result<Store> {
    Store::open_default()
        .context("opening the image store (set PEAPOD_ROOT to change its location)")
}

/// Runs `peapod image …`.
pub fn run_image(args: ImageArgs) -> Result<ExitCode> {
    match args.command {
        ImageCommand::Import(a) => run_import(a),
        ImageCommand::Pull(a) => run_pull(a),
        ImageCommand::Ls(a) => run_images(a),
        ImageCommand::Rm(a) => run_rmi(a),
        ImageCommand::Gc => run_gc(),
    }
}

fn run_import(a: ImportArgs) -> Result<ExitCode> {
    let store = open()?;
    let refs = import_path(&store, &a.path, &ImportOptions { name: a.name })?;
    for r in refs {
        println!("imported {r}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `peapod pull`.
pub fn run_pull(a: PullArgs) -> Result<ExitCode> {
    let reference = ImageRef::parse(&a.reference)?;
    let password = if a.password_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("reading the password from standard input")?;
        Some(line.trim_end_matches(['\r', '\n']).to_string())
    } else {
        a.password
    };
    let credentials = match (a.username, password) {
        (Some(username), Some(password)) => Credentials::Basic { username, password },
        (None, None) => Credentials::Anonymous,
        (Some(_), None) => bail!("--username needs --password or --password-stdin"),
        (None, Some(_)) => bail!("a password needs --username"),
    };
    let opts = RegistryOptions {
        insecure: a.insecure,
        credentials,
        connect_timeout: Duration::from_secs(a.connect_timeout),
        progress: if a.quiet {
            ProgressMode::Quiet
        } else if a.plain {
            ProgressMode::Plain
        } else {
            ProgressMode::Auto
        },
        ..RegistryOptions::default()
    };
    let store = open()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let rec = rt
        .block_on(image_store::pull::pull(&store, &reference, &opts))
        .with_context(|| format!("ErrImagePull: pulling {reference}"))?;
    store
        .rootfs(&rec.manifest)
        .with_context(|| format!("unpacking {reference}"))?;
    println!("{reference}");
    println!("digest: {}", rec.digest);
    Ok(ExitCode::SUCCESS)
}

fn age(created: u64) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(created);
    let s = now.saturating_sub(created);
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        7200..=172_799 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

fn human(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "kB", "MB", "GB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1000.0 && u < UNITS.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes}B")
    } else {
        format!("{v:.1}{}", UNITS[u])
    }
}

/// Runs `peapod images`.
pub fn run_images(a: ListArgs) -> Result<ExitCode> {
    let store = open()?;
    let list = store.list()?;
    if a.quiet {
        for i in list {
            println!("{}", i.reference);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<[String; 5]> = list
        .into_iter()
        .map(|i| {
            let (repo, tag) = match i.reference.rsplit_once('@') {
                Some((repo, _)) => (repo.to_string(), "<none>".to_string()),
                None => match i.reference.rsplit_once(':') {
                    Some((repo, tag)) if !tag.contains('/') => (repo.to_string(), tag.to_string()),
                    _ => (i.reference.clone(), "<none>".to_string()),
                },
            };
            [
                repo,
                tag,
                i.record.config.short().to_string(),
                age(i.record.created),
                human(i.size),
            ]
        })
        .collect();
    let header = ["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"];
    let mut widths = header.map(str::len);
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r.iter()) {
            *w = (*w).max(c.len());
        }
    }
    let line = |cells: [&str; 5]| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}   ", w = widths[i]));
            }
        }
        println!("{}", s.trim_end());
    };
    line(header);
    for r in &rows {
        line([&r[0], &r[1], &r[2], &r[3], &r[4]]);
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `peapod rmi`.
pub fn run_rmi(a: RmArgs) -> Result<ExitCode> {
    let store = open()?;
    let mut code = ExitCode::SUCCESS;
    for r in a.references {
        match ImageRef::parse(&r)
            .map_err(anyhow::Error::from)
            .and_then(|x| Ok(store.remove(&x)?))
        {
            Ok(rec) => println!("Untagged: {r} ({})", rec.digest),
            Err(e) => {
                eprintln!("error: {e:#}");
                code = ExitCode::FAILURE;
            }
        }
    }
    Ok(code)
}

fn run_gc() -> Result<ExitCode> {
    let store = open()?;
    let r = store.gc()?;
    println!(
        "removed {} blobs ({}) and {} root filesystems",
        r.blobs_removed,
        human(r.bytes_freed),
        r.rootfs_removed
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(human(999), "999B");
        assert_eq!(human(1_500_000), "1.5MB");
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert_eq!(age(now - 3 * 86_400), "3d");
    }
}
