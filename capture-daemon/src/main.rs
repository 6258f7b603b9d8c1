//! The `capture-daemon` command line. All the work is in the library; this file parses
//! arguments, wires signals, and prints errors once.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use capture_daemon::commands::{check, oneshot, status};
use capture_daemon::config::{self, Config};
use capture_daemon::stop::Stop;
use capture_daemon::{daemon, logging, watch};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    version,
    about = "Capture chosen VMs' frames on a hypervisor NIC into rotating pcapng files"
)]
struct Cli {
    /// Log level: off, error, warn, info, debug or trace, or a usual synonym (warning, err,
    /// crit, notice, verbose, none...). RUST_LOG, if set, wins. Default: info; warn for
    /// `capture`.
    #[arg(long, global = true, value_parser = logging::parse_level)]
    log_level: Option<log::LevelFilter>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Capture until SIGINT or SIGTERM; SIGHUP reloads the configuration.
    Run {
        /// Configuration file.
        #[arg(short, long, default_value = config::DEFAULT_PATH)]
        config: PathBuf,
        /// Also reload when the configuration file's content changes (as SIGHUP does).
        #[arg(long)]
        watch_config: bool,
    },
    /// Show what a running daemon is doing (reads its metrics endpoint twice, a second apart);
    /// exits non-zero when none answers.
    Status {
        /// Configuration file (for the metrics address).
        #[arg(short, long, default_value = config::DEFAULT_PATH)]
        config: PathBuf,
    },
    /// One-shot capture for troubleshooting, no config file: dumpcap-style flags, the daemon's
    /// data path. Ctrl-C (SIGINT), SIGTERM or SIGHUP (its terminal gone) stops it and prints
    /// what was received and dropped.
    Capture(oneshot::CaptureArgs),
    /// Check the configuration and the host (interfaces, privileges, kernel support) without
    /// capturing; exits non-zero when something would stop `run`.
    Check {
        /// Configuration file.
        #[arg(short, long, default_value = config::DEFAULT_PATH)]
        config: PathBuf,
    },
}

/// What SIGHUP does.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Hangup {
    /// The daemon: read the configuration again.
    Reload,
    /// The one-shot capture: stop as SIGTERM does, like tcpdump when its terminal goes away
    /// (left ignored under `nohup`, as tcpdump leaves it).
    Stop,
}

/// SIGINT/SIGTERM stop (a second one ends the process at once), SIGHUP as `hangup` says; each
/// also wakes the main loop, which otherwise sleeps.
fn install_signals(control: &daemon::Control, hangup: Hangup) -> anyhow::Result<()> {
    let hooks = || -> std::io::Result<()> {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
        for sig in [SIGINT, SIGTERM] {
            signal_hook::flag::register_conditional_shutdown(sig, 1, control.shutdown.clone())?;
            signal_hook::flag::register(sig, control.shutdown.clone())?;
        }
        let hup_flag = match hangup {
            Hangup::Reload => Some(&control.reload),
            Hangup::Stop if hangup_ignored() => None,
            Hangup::Stop => Some(&control.shutdown),
        };
        if let Some(flag) = hup_flag {
            signal_hook::flag::register(SIGHUP, flag.clone())?;
            signal_hook::low_level::pipe::register(SIGHUP, control.waker()?)?;
        }
        for sig in [SIGINT, SIGTERM] {
            signal_hook::low_level::pipe::register(sig, control.waker()?)?;
        }
        Ok(())
    };
    hooks().context("installing signal handlers")
}

/// True when SIGHUP was ignored when the process started (`nohup`).
fn hangup_ignored() -> bool {
    // SAFETY: queries the disposition only (no new action); `old` is plain data.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(libc::SIGHUP, std::ptr::null(), &mut old) == 0
            && old.sa_sigaction == libc::SIG_IGN
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run { config, watch_config } => {
            let cfg = Config::load(&config)?;
            let control = daemon::Control::new().context("creating the control socket")?;
            install_signals(&control, Hangup::Reload)?;
            let watch_stop = Stop::new().context("creating the watcher's stop signal")?;
            let watcher = if watch_config {
                let control = control.clone();
                let handle = watch::spawn(&config, watch_stop.clone(), move || {
                    control.request_reload();
                })
                .with_context(|| format!("watching {}", config.display()))?;
                log::info!("reloading when {} changes", config.display());
                Some(handle)
            } else {
                None
            };
            let path = config.clone();
            let reload = Box::new(move || Config::load(&path).map_err(anyhow::Error::from));
            let summary = daemon::run(cfg, &control, daemon::Job::Service { reload });
            watch_stop.raise();
            if let Some(w) = watcher {
                let _ = w.join();
            }
            let summary = summary?;
            log::info!(
                "stopped: {} frame(s) written, {} file(s) closed",
                summary.frames_written,
                summary.files_closed
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Capture(args) => {
            let control = daemon::Control::new().context("creating the control socket")?;
            install_signals(&control, Hangup::Stop)?;
            let summary = oneshot::run(&args, &control)?;
            // Not eprint!: after a hangup the terminal is gone, and the capture still ended
            // well.
            let _ = std::io::stderr().write_all(oneshot::report(&summary).as_bytes());
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { config } => {
            let cfg = Config::load(&config)?;
            status::print(&cfg, &config)
        }
        Command::Check { config } => {
            let cfg = Config::load(&config)?;
            let report = check::check(&cfg, &config);
            print!("{}", report.render());
            if cfg.interfaces.iter().any(|i| i.mode == capture_daemon::config::Mode::Mirror) {
                println!("\n{}", check::MIRROR_WARNING);
            }
            if report.problems == 0 {
                println!("\nall checks passed");
                Ok(ExitCode::SUCCESS)
            } else {
                println!("\n{} problem(s) found", report.problems);
                Ok(ExitCode::from(1))
            }
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The one-shot capture is quiet like dumpcap, but says when it is capturing and how.
    let default_level = if matches!(cli.command, Command::Capture(_)) {
        "warn,capture_daemon::daemon::iface=info"
    } else {
        "info"
    };
    if let Err(e) = logging::init(cli.log_level, default_level) {
        eprintln!("capture-daemon: error: {e}");
        return ExitCode::from(2);
    }
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("capture-daemon: error: {e:#}");
            ExitCode::from(2)
        }
    }
}
