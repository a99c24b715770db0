//! Manifest commands: `validate -f`, `apply --dry-run -f` and `explain`.

use std::io::{Read, Write};
use std::path::Path;
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use pod_spec::load::{load_path_each, load_str, Document};
use pod_spec::schema::Schema;

/// Exit code for invalid manifests.
const EXIT_INVALID: u8 = 1;
/// Exit code for something not implemented yet.
const EXIT_NOT_IMPLEMENTED: u8 = 2;

/// Output format of normalised pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// YAML (the default).
    Yaml,
    /// Pretty-printed JSON.
    Json,
}

/// Where manifests come from.
#[derive(Debug, Args)]
pub struct FileArgs {
    /// A manifest file, a directory (every .yaml, .yml and .json in it, in name order) or `-`
    /// for stdin. May be repeated.
    #[arg(short = 'f', long = "filename", required = true)]
    pub filenames: Vec<String>,
    /// Output format of the normalised pods.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Yaml)]
    pub output: OutputFormat,
}

/// `peapod validate`.
#[derive(Debug, Args)]
pub struct ValidateArgs {
    #[command(flatten)]
    pub files: FileArgs,
}

/// `kubectl`'s dry-run strategies; peapod has no server, so all of them validate locally.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DryRun {
    /// Validate locally (the default of a bare `--dry-run`).
    Client,
    /// Accepted for kubectl compatibility: the same as client.
    Server,
    /// Not a dry run.
    None,
}

/// `peapod apply`.
#[derive(Debug, Args)]
pub struct ApplyArgs {
    #[command(flatten)]
    pub files: FileArgs,
    /// Only validate and print what would be applied.
    #[arg(long = "dry-run", value_enum, num_args = 0..=1, require_equals = true, default_missing_value = "client")]
    pub dry_run: Option<DryRun>,
}

/// `peapod explain`.
#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// A field path such as `pod.spec.containers` or `pod.spec.volumes.hostPath`.
    pub path: String,
    /// Print every sub-field, recursively, with its type.
    #[arg(long)]
    pub recursive: bool,
}

/// Runs `validate`.
pub fn run_validate(args: ValidateArgs) -> anyhow::Result<ExitCode> {
    check_and_print(&args.files)
}

/// Runs `apply`.
pub fn run_apply(args: ApplyArgs) -> anyhow::Result<ExitCode> {
    match args.dry_run {
        Some(DryRun::Client | DryRun::Server) => check_and_print(&args.files),
        Some(DryRun::None) | None => {
            eprintln!(
                "error: background pods (apply/create) are not implemented yet; run a pod in the \
                 foreground with `peapod run -f FILE`, or validate with `peapod apply --dry-run -f FILE`"
            );
            Ok(ExitCode::from(EXIT_NOT_IMPLEMENTED))
        }
    }
}

/// Runs `explain`.
pub fn run_explain(args: ExplainArgs) -> anyhow::Result<ExitCode> {
    let text = pod_spec::explain::explain(&Schema::new(), &args.path, args.recursive)?;
    print!("{text}");
    Ok(ExitCode::SUCCESS)
}

/// Reads every manifest; a file that cannot be read or parsed is reported and skipped.
/// Returns the documents and whether some input failed.
fn read_all(files: &FileArgs) -> (Vec<Document>, bool) {
    let mut docs = Vec::new();
    let mut failed = false;
    let mut report = |e: &dyn std::fmt::Display| {
        eprintln!("error: {e}");
        failed = true;
    };
    for f in &files.filenames {
        if f == "-" {
            let mut text = String::new();
            match std::io::stdin().read_to_string(&mut text) {
                Ok(_) => match load_str("<stdin>", &text) {
                    Ok(d) => docs.extend(d),
                    Err(e) => report(&e),
                },
                Err(e) => report(&format!("cannot read manifests from stdin: {e}")),
            }
            continue;
        }
        match load_path_each(Path::new(f)) {
            Ok(each) => {
                for (_, loaded) in each {
                    match loaded {
                        Ok(d) => docs.extend(d),
                        Err(e) => report(&e),
                    }
                }
            }
            Err(e) => report(&e),
        }
    }
    (docs, failed)
}

/// Loads, validates, prints the valid pods to stdout and the errors and warnings to stderr.
fn check_and_print(files: &FileArgs) -> anyhow::Result<ExitCode> {
    let (docs, failed) = read_all(files);
    let mut stderr = std::io::stderr().lock();
    let mut valid = Vec::new();
    let mut invalid = 0;
    for d in &docs {
        stderr.write_all(d.render_warnings().as_bytes())?;
        match &d.outcome {
            Ok(pod) => valid.push(pod.clone()),
            Err(_) => {
                invalid += 1;
                stderr.write_all(d.render_errors().as_bytes())?;
            }
        }
    }
    if docs.is_empty() {
        if !failed {
            writeln!(stderr, "error: no objects passed to validate")?;
        }
        return Ok(ExitCode::from(EXIT_INVALID));
    }
    if !valid.is_empty() {
        let text = match files.output {
            OutputFormat::Yaml => pod_spec::output::to_yaml(&valid)?,
            OutputFormat::Json => pod_spec::output::to_json(&valid)?,
        };
        std::io::stdout().lock().write_all(text.as_bytes())?;
    }
    Ok(if invalid == 0 && !failed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_INVALID)
    })
}
