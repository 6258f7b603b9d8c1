//! Project tasks: `cargo xtask setup | demo | test | bench`.
//!
//! `./x.sh demo` and `./x.sh test` (the README's quick start) bootstrap the toolchain and packages
//! first, then land here.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

mod bench;
mod demo;

#[derive(Parser)]
#[command(about = "capture-daemon project tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install the pinned toolchain, bpf-linker and the packages the lab and tests use.
    Setup,
    /// Run the daemon on a built-in lab: a network namespace, a veth pair and fake VMs' traffic.
    Demo(demo::Args),
    /// Run every test: unit tests, then the root-only integration tests in network namespaces.
    Test {
        /// Only run integration tests whose name contains this.
        filter: Option<String>,
    },
    /// Benchmark: capture-daemon vs tcpdump, dumpcap, netsniff-ng and an XDP_DROP ceiling on
    /// the same traffic (`bench capture`, the default), or the offline writer (`bench writer`).
    /// See docs/bench.md.
    Bench(Box<bench::Args>),
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").to_owned()
}

/// Runs a command in the workspace root, failing with its command line if it fails.
pub fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let status =
        cmd.current_dir(workspace_root()).status().with_context(|| format!("starting {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// Removes what interrupted runs of the tests, the demo or the benchmark left on this machine
/// (their network namespaces and tmpfs mounts, once their process is gone), saying what.
/// The host's own namespaces and mounts are never touched (see `capture_lab::remove_leftovers`).
pub fn remove_leftovers() -> anyhow::Result<()> {
    let removed = capture_lab::remove_leftovers().context("removing leftovers of earlier runs")?;
    for ns in &removed.namespaces {
        eprintln!("xtask: removed network namespace {ns}, left by an interrupted run");
    }
    for dir in &removed.mounts {
        eprintln!("xtask: unmounted {}, left by an interrupted run", dir.display());
    }
    Ok(())
}

/// Builds the release daemon and returns the path of the binary.
pub fn build_daemon() -> anyhow::Result<PathBuf> {
    run(cargo().args(["build", "--release", "--package", "capture-daemon"]))?;
    Ok(workspace_root().join("target/release/capture-daemon"))
}

/// Runs `cargo test ...`, passing its output through, and adds up its "test result" lines.
fn cargo_test(cmd: &mut Command, totals: &mut (u64, u64)) -> anyhow::Result<()> {
    use std::io::BufRead as _;
    let mut child = cmd
        .current_dir(workspace_root())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {cmd:?}"))?;
    let stdout = child.stdout.take().context("cargo test stdout")?;
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line?;
        println!("{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            let count = |word: &str| {
                rest.split(';')
                    .find_map(|part| {
                        part.trim()
                            .strip_suffix(word)?
                            .trim()
                            .rsplit(' ')
                            .next()?
                            .parse::<u64>()
                            .ok()
                    })
                    .unwrap_or(0)
            };
            totals.0 += count("passed");
            totals.1 += count("failed");
        }
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

fn test(filter: Option<&str>) -> anyhow::Result<()> {
    capture_lab::require_root()
        .context("the integration tests create network namespaces and attach XDP programs")?;
    remove_leftovers()?;
    let mut totals = (0, 0);
    let result = (|| {
        eprintln!("== formatting and lints");
        run(cargo().args(["fmt", "--all", "--check"]))?;
        run(cargo().args([
            "clippy",
            "--all-targets",
            "--workspace",
            "--exclude",
            "capture-ebpf",
            "--",
            "-D",
            "warnings",
        ]))?;
        // The default members: everything but the eBPF crate (bpfel only) and the root-only tests.
        eprintln!("== unit tests");
        // Some of them need root tools (systemd-analyze): here they must run, not skip.
        cargo_test(cargo().arg("test").env("CAPTURE_REQUIRE_ROOT", "1"), &mut totals)?;
        let bin = build_daemon()?;
        eprintln!("== integration tests (root: network namespaces, veth, XDP, AF_XDP)");
        let mut cmd = cargo();
        cmd.args(["test", "--package", "capture-tests", "--tests", "--"]);
        if let Some(f) = filter {
            cmd.arg(f);
        }
        cmd.env("CAPTURE_DAEMON_BIN", &bin).env("CAPTURE_REQUIRE_ROOT", "1");
        cargo_test(&mut cmd, &mut totals)?;
        if filter.is_none() {
            // The README's other quick-start command must keep working: both modes, briefly.
            for mode in ["tap", "mirror"] {
                eprintln!("== demo --mode {mode}");
                let result = demo::demo(&demo::Args::short(mode));
                let passed = result.is_ok();
                totals.0 += u64::from(passed);
                totals.1 += u64::from(!passed);
                result.with_context(|| format!("the demo (--mode {mode}) failed"))?;
            }
        }
        Ok(())
    })();
    // One closing line for the whole suite, whatever ran last.
    println!("{} passed, {} failed", totals.0, totals.1);
    result
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.task {
        Task::Setup => run(Command::new("bash").arg("scripts/bootstrap.sh")),
        Task::Demo(args) => demo::demo(&args),
        Task::Test { filter } => test(filter.as_deref()),
        Task::Bench(args) => bench::bench(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::from(2)
        }
    }
}
