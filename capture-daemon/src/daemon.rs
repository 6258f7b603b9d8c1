//! Wires the data path together and runs it until told to stop.
//!
//! Start-up order is chosen so that a failure leaves nothing behind: everything that can fail
//! (config, interfaces, program load, sockets, output directory) happens before the XDP program
//! is attached, and attaching is the last step. Shutdown runs the other way: detach first (the
//! NIC is back to normal at once), then drain the rings, then close the file.
//!
//! - `iface`: one interface as a unit (program, sockets, workers), started and stopped alone;
//! - `reload`: applying a new configuration, and interfaces that vanish and come back;
//! - `stats`: the counters, as metrics, pcapng statistics and health;
//! - `write_loop`: the writer thread.

use std::io::{Read as _, Write as _};
use std::os::fd::AsRawFd as _;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::bpf::{Slots, TargetTables, VmMacs};
use crate::config::{
    Config, InterfaceConfig, MetricsConfig, Mode, TargetConfig, TargetOutput, format_mac,
};
use crate::handoff::Waker;
use crate::metrics;
use crate::notify::Notifier;
use crate::stop::{self, Stop};
use crate::sys;
use crate::writer::merge::DEFAULT_WINDOW_NS;
use crate::writer::{
    Comments, InterfaceInfo, Merger, Output, SectionInfo, Source, StreamWriter, Streams,
    SystemClock, TargetRoute, WriterClock,
};

mod iface;
mod reload;
mod stats;
mod vms;
mod write_loop;

use iface::{IfaceRun, SocketSettings, finish_all};
pub use iface::{
    ResolvedInterface, resolve_interface, resolve_interfaces, resolve_present_interfaces,
};
use reload::{Missing, apply_reload, check_interfaces};
use stats::{FileStats, IfaceStats, Stats, View, render_metrics};
use write_loop::{Ends, InterfaceChange, Reconfigure, WriterState, write_loop, writer_nap};

/// What stops or reloads a running daemon. `main` wires signals to it (the flags, and a byte on
/// the wake-up socket so the main loop need not poll); in-process callers use its methods.
#[derive(Clone)]
pub struct Control {
    pub shutdown: Arc<AtomicBool>,
    pub reload: Arc<AtomicBool>,
    wake: Arc<(UnixStream, UnixStream)>,
}

impl Control {
    pub fn new() -> std::io::Result<Self> {
        let (rx, tx) = UnixStream::pair()?;
        rx.set_nonblocking(true)?;
        tx.set_nonblocking(true)?;
        Ok(Control { shutdown: Arc::default(), reload: Arc::default(), wake: Arc::new((rx, tx)) })
    }

    /// A handle on the wake-up socket for a signal handler to write a byte to
    /// (`signal_hook::low_level::pipe::register`).
    pub fn waker(&self) -> std::io::Result<UnixStream> {
        self.wake.1.try_clone()
    }

    pub fn request_shutdown(&self) {
        self.shutdown.store(true, Relaxed);
        let _ = (&self.wake.1).write(&[1]);
    }

    /// Wakes the main loop (for news from another thread, e.g. a VM that started).
    fn wake(&self) {
        let _ = (&self.wake.1).write(&[1]);
    }

    pub fn request_reload(&self) {
        self.reload.store(true, Relaxed);
        let _ = (&self.wake.1).write(&[1]);
    }

    /// Sleeps until woken or `timeout` passes, then empties the wake-up socket.
    fn wait(&self, timeout: Duration) {
        stop::wait_readable([self.wake.0.as_raw_fd()], timeout);
        let mut buf = [0u8; 64];
        while matches!((&self.wake.0).read(&mut buf), Ok(n) if n > 0) {}
    }
}

/// How often systemd's STATUS= line is refreshed.
const NOTIFY_STATUS_EVERY: Duration = Duration::from_secs(5);

/// How often the main loop logs a one-line status (and checks for reloads, every 100 ms).
const STATUS_EVERY: Duration = Duration::from_secs(60);

/// What a finished run reports.
#[derive(Debug, Default)]
pub struct Summary {
    pub frames_written: u64,
    pub files_closed: u64,
    pub last_file: Option<PathBuf>,
    /// Per interface: name, frames matched (received by the capture), frames lost on the way.
    pub interfaces: Vec<(String, u64, u64)>,
}

/// What a run is for. The service and the one-shot `capture` share the data path but start,
/// write and end differently: each is a variant here, not a set of optional knobs.
pub enum Job {
    /// `run`: rotating files as `[output]` says; `reload` reads the configuration again on
    /// SIGHUP; an interface the host does not have yet is waited for (at boot a NIC can come up
    /// after the service); runs until stopped.
    Service { reload: Box<dyn Fn() -> anyhow::Result<Config>> },
    /// `capture`: a dumpcap-style capture that ends; its interfaces must exist.
    OneShot(OneShot),
}

/// How a one-shot capture writes and ends.
pub struct OneShot {
    pub output: OneShotOutput,
    /// Stop after writing this many frames.
    pub stop_after_packets: Option<u64>,
    /// Stop after this long.
    pub stop_after: Option<Duration>,
}

/// Where a one-shot capture writes.
pub enum OneShotOutput {
    /// One pcapng stream (`-w FILE`, `-w -`): its interfaces cannot change, so it ends if one
    /// goes.
    Stream(Box<dyn std::io::Write + Send>),
    /// dumpcap's ring buffer (`-b`): rotating files as `[output]` says, with `keep_files`
    /// counting the file being written, as `-b files:N` does.
    Ring,
}

/// "web01 (mac 52:54:00:12:34:56, vlan 100)", "app07 (vm app07, in vni 5001, own files)"
pub fn describe_target(t: &TargetConfig) -> String {
    let mut parts = Vec::new();
    if let Some(vm) = &t.vm {
        parts.push(format!("vm {vm}"));
    }
    if let Some(mac) = &t.mac {
        parts.push(format!("mac {}", format_mac(mac)));
    }
    if let Some(vlan) = t.vlan {
        parts.push(format!("vlan {vlan}"));
    }
    if let Some(vni) = t.vni {
        parts.push(format!("in vni {vni}"));
    }
    if parts.is_empty() {
        parts.push("all frames".into());
    }
    if t.output == TargetOutput::Own {
        parts.push("own files".into());
    }
    format!("{} ({})", t.name, parts.join(", "))
}

/// The Interface Description Blocks' contents for the interfaces `names`: name, host,
/// targets, snap length.
fn interface_infos(config: &Config, names: &[&str], host: &str) -> Vec<InterfaceInfo> {
    let targets = describe_targets(config);
    names
        .iter()
        .map(|name| InterfaceInfo {
            name: (*name).to_owned(),
            description: format!(
                "{name} on {host}, captured by capture-daemon; targets: {targets}"
            ),
            snaplen: config.capture.snaplen,
        })
        .collect()
}

fn section_info() -> SectionInfo {
    SectionInfo {
        hardware: sys::cpu_model().unwrap_or_else(|| std::env::consts::ARCH.to_owned()),
        os: sys::os_release(),
        application: format!("capture-daemon {}", env!("CARGO_PKG_VERSION")),
    }
}

struct Running {
    ifaces: Vec<IfaceRun>,
    /// Configured interfaces not captured now.
    missing: Vec<Missing>,
    /// What the maps of every interface hold (for interfaces started later).
    tables: TargetTables,
    /// The MACs of the `vm` targets' VMs present on this host, as libvirt last said.
    vms: VmMacs,
    /// Their tap devices, likewise (for `vm_taps`).
    vm_taps: vms::VmTaps,
    /// The interfaces `vm_taps` last failed to capture on.
    vm_taps_failed: Option<Vec<String>>,
    /// The output is one stream (`capture -w`): its interfaces cannot change.
    stream: bool,
    writer: JoinHandle<anyhow::Result<Summary>>,
    writer_stop: Arc<AtomicBool>,
    /// Ends the writer's pause (with `writer_stop`: at once).
    writer_wake: Arc<Waker>,
    reconfigure: mpsc::Sender<Reconfigure>,
    stats: Arc<Stats>,
}

fn describe_targets(config: &Config) -> String {
    config.targets.iter().map(describe_target).collect::<Vec<_>>().join("; ")
}

/// The one warning mirror mode deserves, for the interfaces in it.
fn warn_mirror_mode(interfaces: &[&InterfaceConfig]) {
    let names: Vec<&str> =
        (interfaces.iter()).filter(|i| i.mode == Mode::Mirror).map(|i| i.name.as_str()).collect();
    if !names.is_empty() {
        log::warn!(
            "mirror mode: matched frames are taken out of the kernel's path on {}; use a NIC fed \
             by a SPAN/TAP port, not a live uplink",
            names.join(", ")
        );
    }
}

/// Runs the capture described by `config` for `job` until `control.shutdown` is set (or the
/// one-shot capture's end).
pub fn run(config: Config, control: &Control, job: Job) -> anyhow::Result<Summary> {
    let (reload, wait_for_missing_interfaces, output, stop_after) = match job {
        Job::Service { reload } => {
            let output = OutputOptions {
                stream: None,
                stop_after_packets: None,
                keep_files_include_current: false,
            };
            (Some(reload), true, output, None)
        }
        Job::OneShot(OneShot { output, stop_after_packets, stop_after }) => {
            let stream = match output {
                OneShotOutput::Stream(out) => Some(out),
                OneShotOutput::Ring => None,
            };
            let output =
                OutputOptions { stream, stop_after_packets, keep_files_include_current: true };
            (None, false, output, stop_after)
        }
    };
    // `file_config` is what the file says; `config` what runs: with `vm_taps`, the taps of the
    // VMs present join its interfaces.
    let mut file_config = config;
    let missing = sys::missing_caps();
    if !missing.is_empty() {
        let list: Vec<String> =
            missing.iter().map(|(cap, why)| format!("{cap} (to {why})")).collect();
        bail!("missing privileges: {}; run as root or grant these capabilities", list.join(", "));
    }
    let found_vms = vms::resolve_at_start(&file_config);
    let mut config = vms::with_taps(&file_config, &found_vms.1);
    let (ifaces, absent) = if wait_for_missing_interfaces {
        resolve_present_interfaces(&config)?
    } else {
        (resolve_interfaces(&config)?, Vec::new())
    };
    sys::raise_memlock_limit();
    let mut slots = Slots::default();
    let assigned = slots.assign(&config.targets)?;
    let tables =
        TargetTables::build_with_vms(&config.capture, &config.targets, &assigned, &found_vms.0)?;
    let routes = target_routes(&config, &View::of(&config, &slots, &found_vms.0).targets);
    let mut running = start(&config, ifaces, &tables, &routes, output, control)?;
    (running.vms, running.vm_taps) = found_vms;
    let (vm_updates, vm_updated) = mpsc::channel();
    let mut watcher = vms::start_watcher(&config, &vm_updates, control);
    let started = Instant::now();
    let present: Vec<&InterfaceConfig> =
        config.interfaces.iter().filter(|i| !absent.contains(i)).collect();
    warn_mirror_mode(&present);

    if let Ok(mut view) = running.stats.view.write() {
        *view = View::of(&config, &slots, &running.vms);
    }
    // Waited for as the interfaces that vanish while running are (see `check_interfaces`).
    for i in &absent {
        log::error!(
            "{}: no such interface on this host (yet); capturing the others, and it as soon as it \
             appears (if it never does, check its name: `ip link`)",
            i.name
        );
    }
    running.missing = (absent.into_iter())
        .map(|config| Missing { config, logged: Some(Instant::now()) })
        .collect();
    running.publish_missing();
    let mut metrics = Metrics::start(&config.metrics, &running.stats);
    let notifier = Notifier::from_env();
    notifier.ready(&running.stats.summary());
    // Signals wake the loop; otherwise it looks around once a second, or more often if
    // systemd's watchdog wants pings sooner.
    let mut period = notifier
        .watchdog_interval()
        .map_or(Duration::from_secs(1), |w| w.min(Duration::from_secs(1)));
    if stop_after.is_some() {
        period = period.min(Duration::from_millis(100));
    }
    let mut last_status = Instant::now();
    let mut last_notify_status = Instant::now();
    let mut last_health_log: Option<Instant> = None;
    while !control.shutdown.load(Relaxed) {
        control.wait(period);
        if control.shutdown.load(Relaxed) || stop_after.is_some_and(|d| started.elapsed() >= d) {
            break;
        }
        if control.reload.swap(false, Relaxed)
            && let Some(reload) = &reload
        {
            log::info!("reloading the configuration");
            notifier.reloading();
            let applied = reload().and_then(|new| {
                let with_taps = vms::with_taps(&new, &running.vm_taps);
                apply_reload(&mut running, &mut config, &mut slots, with_taps).map(|()| new)
            });
            match applied {
                Ok(new) => {
                    file_config = new;
                    running.stats.reloaded(true);
                    vms::rewatch(&mut watcher, &config, &vm_updates, control);
                    if config.metrics != metrics.config {
                        metrics.stop();
                        metrics = Metrics::start(&config.metrics, &running.stats);
                    }
                }
                Err(e) => {
                    running.stats.reloaded(false);
                    log::error!("reload rejected, the running configuration stays: {e:#}");
                }
            }
            notifier.ready(&running.stats.summary());
        }
        vms::apply_updates(&mut running, &config, &slots, &vm_updated);
        vms::follow_taps(&mut running, &mut config, &file_config, &mut slots);
        if check_interfaces(&mut running, &config) {
            break;
        }
        running.ifaces.iter_mut().for_each(IfaceRun::check_metadata);
        match running.stats.unhealthy() {
            None => notifier.watchdog(),
            Some(why) => {
                if last_health_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                    log::error!("unhealthy, not pinging the watchdog: {why}");
                    last_health_log = Some(Instant::now());
                }
            }
        }
        if last_notify_status.elapsed() >= NOTIFY_STATUS_EVERY {
            notifier.status(&running.stats.summary());
            last_notify_status = Instant::now();
        }
        if last_status.elapsed() >= STATUS_EVERY {
            log_status(&config, &slots, &running.stats);
            last_status = Instant::now();
        }
        if running.writer.is_finished() {
            log::error!("the writer stopped unexpectedly; shutting down");
            break;
        }
    }
    log::info!("stopping: detaching the programs, draining the rings, closing the file");
    notifier.stopping();
    drop(watcher);
    metrics.stop();
    stop(running, &config, &slots)
}

/// The metrics endpoint, as configured; restarted by a reload that changes `[metrics]`.
struct Metrics {
    config: MetricsConfig,
    /// The server and what stops it, while it runs.
    server: Option<(Stop, JoinHandle<()>)>,
}

impl Metrics {
    /// Starts the endpoint if enabled. Whatever fails costs the endpoint, not the capture.
    fn start(config: &MetricsConfig, stats: &Arc<Stats>) -> Metrics {
        let server = if config.enabled {
            Self::serve(config.listen, stats)
                .map_err(|e| log::error!("metrics: {e:#}; capturing without the endpoint"))
                .ok()
        } else {
            None
        };
        Metrics { config: config.clone(), server }
    }

    fn serve(
        listen: std::net::SocketAddr,
        stats: &Arc<Stats>,
    ) -> anyhow::Result<(Stop, JoinHandle<()>)> {
        let stop = Stop::new().context("creating the server's stop signal")?;
        let listener = std::net::TcpListener::bind(listen)
            .with_context(|| format!("cannot listen on {listen}"))?;
        let stats = Arc::clone(stats);
        let handle =
            metrics::server::serve(listener, stop.clone(), move || render_metrics(&stats))?;
        log::info!("metrics: http://{listen}/metrics");
        Ok((stop, handle))
    }

    fn stop(&mut self) {
        if let Some((stop, server)) = self.server.take() {
            stop.raise();
            let _ = server.join();
        }
    }
}

/// The parts of a [`Job`] that shape the output.
struct OutputOptions {
    stream: Option<Box<dyn std::io::Write + Send>>,
    stop_after_packets: Option<u64>,
    keep_files_include_current: bool,
}

/// The targets as the writer sees them, in config order: name, slot (from `slots`, the
/// (name, slot) pairs of [`View`]) and whether they have files of their own.
pub(super) fn target_routes(config: &Config, slots: &[(String, usize)]) -> Vec<TargetRoute> {
    config
        .targets
        .iter()
        .filter_map(|t| {
            let slot = slots.iter().find(|(name, _)| *name == t.name)?.1;
            let own = t.output == crate::config::TargetOutput::Own;
            Some(TargetRoute { slot, name: t.name.clone(), own })
        })
        .collect()
}

fn start(
    config: &Config,
    ifaces: Vec<ResolvedInterface>,
    tables: &TargetTables,
    routes: &[TargetRoute],
    output: OutputOptions,
    control: &Control,
) -> anyhow::Result<Running> {
    let OutputOptions { stream, stop_after_packets, keep_files_include_current } = output;
    let settings = SocketSettings::of(&config.capture);
    let mut runs = Vec::new();
    let mut sources = Vec::new();
    for (id, spec) in (0u32..).zip(ifaces) {
        match IfaceRun::open(spec, settings, tables) {
            Ok((run, s)) => {
                runs.push(run);
                sources.extend(s.into_iter().map(|s| Source { interface_id: id, ..s }));
            }
            Err(e) => {
                finish_all(runs);
                return Err(e);
            }
        }
    }
    let file_ifaces: Vec<Arc<IfaceStats>> = runs.iter().map(|r| Arc::clone(&r.stats)).collect();
    let stats = Arc::new(Stats::new(file_ifaces.clone()));
    let host = sys::hostname();
    let names: Vec<&str> = runs.iter().map(|r| r.spec.name.as_str()).collect();
    let interfaces = interface_infos(config, &names, &host);
    let stats_source =
        Box::new(FileStats { stats: Arc::clone(&stats), ifaces: file_ifaces.clone() });
    let is_stream = stream.is_some();
    let mut clock = WriterClock::new(Box::new(SystemClock));
    let writer = match stream {
        Some(out) => StreamWriter::open(out, &section_info(), &interfaces, stats_source)
            .map(|w| Output::Stream(w, Comments::new(routes))),
        None => Streams::open(
            config.output.clone(),
            section_info(),
            interfaces,
            stats_source,
            clock.now(),
            routes,
            keep_files_include_current,
        )
        .map(Output::Files),
    };
    let writer = match writer {
        Ok(w) => w,
        Err(e) => {
            finish_all(runs);
            return Err(anyhow::Error::new(e).context("opening the output file"));
        }
    };
    let writer_stop = Arc::new(AtomicBool::new(false));
    let writer_wake = match Waker::new() {
        Ok(w) => w,
        Err(e) => {
            finish_all(runs);
            return Err(anyhow::Error::new(e).context("creating the writer's wake-up eventfd"));
        }
    };
    let (reconfigure, reconfigured) = mpsc::channel();
    let writer = {
        let nap = writer_nap(config.capture.buffer_bytes);
        let stop = Arc::clone(&writer_stop);
        let stats = Arc::clone(&stats);
        let control = control.clone();
        let waker = Arc::clone(&writer_wake);
        std::thread::Builder::new()
            .name("writer".into())
            .spawn(move || {
                let merger = Merger::new(sources, DEFAULT_WINDOW_NS);
                let ends = Ends { limit: stop_after_packets, control };
                let state =
                    WriterState { output: writer, merger, ifaces: file_ifaces, clock, nap, waker };
                write_loop(state, &reconfigured, &stop, &stats, &ends)
            })
            .context("spawning the writer thread")?
    };

    // Last step: attach. Until here a failure changed nothing on the NICs.
    let mut running = Running {
        ifaces: runs,
        missing: Vec::new(),
        tables: tables.clone(),
        vms: VmMacs::new(),
        vm_taps: vms::VmTaps::new(),
        vm_taps_failed: None,
        stream: is_stream,
        writer,
        writer_stop,
        writer_wake,
        reconfigure,
        stats,
    };
    let targets = describe_targets(config);
    for i in 0..running.ifaces.len() {
        if let Err(e) = running.ifaces[i].attach(&targets) {
            let _ = stop(running, config, &Slots::default());
            return Err(e);
        }
    }
    Ok(running)
}

fn stop(running: Running, config: &Config, slots: &Slots) -> anyhow::Result<Summary> {
    finish_all(running.ifaces);
    running.writer_stop.store(true, Relaxed);
    running.writer_wake.wake();
    let summary = match running.writer.join() {
        Ok(r) => r,
        Err(_) => Err(anyhow::anyhow!("the writer thread panicked")),
    };
    log_status(config, slots, &running.stats);
    summary.map(|mut s| {
        s.interfaces = (running.stats.interfaces().iter().enumerate())
            .map(|(i, iface)| {
                let st = running.stats.interface_stats(iface, i == 0);
                (iface.name.clone(), st.accepted, st.kernel_drops + st.user_drops)
            })
            .collect();
        s
    })
}

fn log_status(config: &Config, slots: &Slots, stats: &Stats) {
    for (i, s) in stats.interfaces().iter().enumerate() {
        let k = s.kernel.totals();
        let isb = stats.interface_stats(s, i == 0);
        let hits = s.kernel.target_frames();
        let per_target: Vec<String> = config
            .targets
            .iter()
            .map(|t| format!("{}={}", t.name, slots.slot_of(&t.name).map_or(0, |s| hits[s])))
            .collect();
        let queue_drops: u64 = s.queues.iter().map(|(_, q)| q.handoff_drops.load(Relaxed)).sum();
        log::info!(
            "{}: seen {} matched {} written {} | drops: kernel {} writer-queue {} write-errors {} \
             | no-socket {} runts {} cut-tags {} | encapsulated {} encap-malformed {} | per \
             target: {}",
            s.name,
            k.seen,
            k.matched,
            isb.delivered,
            isb.kernel_drops,
            queue_drops,
            stats.write_losses.load(Relaxed),
            k.no_socket,
            k.runts,
            k.truncated_tags,
            k.encapsulated,
            k.encap_malformed,
            per_target.join(" ")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_is_described_by_every_key_it_sets() {
        let t = TargetConfig {
            vm: Some("app07".into()),
            vni: Some(5001),
            vlan: Some(7),
            output: TargetOutput::Own,
            ..TargetConfig::named("app07")
        };
        assert_eq!(describe_target(&t), "app07 (vm app07, vlan 7, in vni 5001, own files)");
        let web = TargetConfig { mac: Some([0x52, 0x54, 0, 0, 0, 1]), ..TargetConfig::named("w") };
        assert_eq!(describe_target(&web), "w (mac 52:54:00:00:00:01)");
        assert_eq!(describe_target(&TargetConfig::named("all")), "all (all frames)");
    }
}
