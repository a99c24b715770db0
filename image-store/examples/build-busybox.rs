//! Writes the built-in busybox image as an OCI image layout:
//! `cargo run -p image-store --example build-busybox -- OUT_DIR [BUSYBOX_BINARY]`.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let Some(out) = args.next().map(PathBuf::from) else {
        eprintln!("usage: build-busybox OUT_DIR [BUSYBOX_BINARY]");
        return ExitCode::from(2);
    };
    let bin = args
        .next()
        .map(PathBuf::from)
        .unwrap_or_else(image_store::busybox::busybox_path);
    match image_store::busybox::build(&bin).and_then(|img| {
        img.write_layout(&out)?;
        Ok(img)
    }) {
        Ok(img) => {
            println!("{} -> {}", img.manifest.digest, out.display());
            for r in image_store::busybox::BUILTIN_REFS {
                println!("tagged {r}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
