//! The peapod command line: a kubectl-like front end for pods in microVMs.
//!
//! Each command family lives in its own module with its own clap `Args`/`Subcommand` type and
//! a `run` function returning the process exit code; adding a family is one enum variant and
//! one match arm here.

mod bench_cmd;
mod images_cmd;
mod logs_cmd;
mod manifest_cmds;
mod pod_cmds;
mod run_cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// peapod runs Kubernetes-style Pods, each inside its own KVM microVM.
#[derive(Debug, Parser)]
#[command(name = "peapod", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate manifests and print the normalised pods (defaults applied) or every error.
    Validate(manifest_cmds::ValidateArgs),
    /// Create or update pods from manifests (only --dry-run is implemented so far).
    Apply(manifest_cmds::ApplyArgs),
    /// Describe a field of the Pod model: its type, description and sub-fields.
    Explain(manifest_cmds::ExplainArgs),
    /// Manage the local image store: import, pull, ls, rm, gc.
    Image(images_cmd::ImageArgs),
    /// Pull an image from a registry into the local store.
    Pull(images_cmd::PullArgs),
    /// List the images in the local store.
    Images(images_cmd::ListArgs),
    /// Remove image references from the local store.
    Rmi(images_cmd::RmArgs),
    /// Run a pod in a microVM in the foreground: stream its logs, exit with its result.
    Run(run_cmd::RunArgs),
    /// Run a command in a container of a running pod.
    Exec(pod_cmds::ExecArgs),
    /// Print a container's logs (-f to follow, --tail, --all-containers).
    Logs(logs_cmd::LogsArgs),
    /// Delete a pod (stopping it first when it runs).
    Delete(pod_cmds::DeleteArgs),
    /// Benchmarks: `bench boot` times each phase of a pod's start.
    Bench(bench_cmd::BenchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Validate(args) => manifest_cmds::run_validate(args),
        Command::Apply(args) => manifest_cmds::run_apply(args),
        Command::Explain(args) => manifest_cmds::run_explain(args),
        Command::Image(args) => images_cmd::run_image(args),
        Command::Pull(args) => images_cmd::run_pull(args),
        Command::Images(args) => images_cmd::run_images(args),
        Command::Rmi(args) => images_cmd::run_rmi(args),
        Command::Run(args) => run_cmd::run(args),
        Command::Exec(args) => pod_cmds::run_exec(args),
        Command::Logs(args) => logs_cmd::run_logs(args),
        Command::Delete(args) => pod_cmds::run_delete(args),
        Command::Bench(args) => bench_cmd::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
