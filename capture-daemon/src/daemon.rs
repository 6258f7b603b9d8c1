//! Wires the data path together and runs it until told to stop.
//!
//! Start-up order is chosen so that a failure leaves nothing behind: everything that can fail
//! (config, interfaces, program load, sockets, output directory) happens before the XDP program
//! is attached, and attaching is the last step. Shutdown runs the other way: detach first (the
//! NIC is back to normal at once), then drain the rings, then close the file.

use std::io::{Read as _, Write as _};
use std::os::fd::AsRawFd as _;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, RwLock, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::bpf::{Filter, KernelCounters, Slots, TargetTables};
use crate::config::{
    CaptureConfig, Config, InterfaceConfig, MetricsConfig, OutputConfig, Queues, TargetConfig,
    XdpMode, ZeroCopy, format_mac,
};
use crate::handoff;
use crate::metrics::{self, Exposition};
use crate::nap::Nap;
use crate::notify::Notifier;
use crate::stop::{self, Stop};
use crate::writer::merge::DEFAULT_WINDOW_NS;
use crate::writer::{
    InterfaceInfo, InterfaceStats, Merger, Output, PacketSink, RECORDS_PER_ROUND, RotatingWriter,
    SectionInfo, Source, StatsSource, StreamWriter, WriterError, write_round,
};
use crate::xsk::{self, QueueStats, Worker, WorkerSpec, realtime_ns};
use crate::{netdev, sys};

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

/// Longest pause of the writer once it has caught up with every queue. The hand-off rings hold
/// far more than this at any rate (the pause shrinks when they fill faster than a quarter per
/// pause), and the output is flushed once a second anyway.
const WRITER_MAX_NAP_NS: u64 = 100_000_000;
/// Takes records and keeps none (frames beyond `capture -c`).
struct Discard;

impl PacketSink for Discard {
    fn write_packet(&mut self, _: u32, _: u64, _: &[u8], _: u32) -> Result<(), WriterError> {
        Ok(())
    }
}

/// Bytes a record takes in a hand-off ring besides the frame (header and padding, roughly).
const HANDOFF_RECORD_OVERHEAD: u64 = 20;

/// How often systemd's STATUS= line is refreshed.
const NOTIFY_STATUS_EVERY: Duration = Duration::from_secs(5);

/// How often the main loop logs a one-line status (and checks for reloads, every 100 ms).
const STATUS_EVERY: Duration = Duration::from_secs(60);

/// Per-interface statistics, shared by the writer (pcapng ISB), the metrics and the status log.
/// An interface that a reload adds or restarts gets new ones.
struct IfaceStats {
    name: String,
    kernel: Arc<KernelCounters>,
    /// Per captured RX queue: its number and its worker's counters.
    queues: Vec<(u32, Arc<QueueStats>)>,
    /// Frames of this interface written to files.
    delivered: AtomicU64,
}

struct Stats {
    start_ns: u64,
    /// The interfaces captured now, in the config's order; replaced on reload.
    ifaces: RwLock<Vec<Arc<IfaceStats>>>,
    /// CLOCK_MONOTONIC ms when the writer last went round its loop (see `QueueStats`).
    writer_heartbeat_ms: AtomicU64,
    /// The file being written, for status lines.
    current_file: std::sync::Mutex<Option<PathBuf>>,
    /// Frames the writer could not write (full disk, I/O errors), all interfaces together.
    write_losses: AtomicU64,
    files_closed: AtomicU64,
    bytes_written: AtomicU64,
    /// Names for the metrics' labels; replaced on reload.
    view: RwLock<View>,
}

/// What the metrics call things: targets with their slots, and where files go.
#[derive(Default)]
struct View {
    targets: Vec<(String, usize)>,
    directory: PathBuf,
    /// Configured interfaces not captured now.
    missing: Vec<String>,
}

impl View {
    fn of(config: &Config, slots: &Slots) -> View {
        View {
            targets: config
                .targets
                .iter()
                .filter_map(|t| Some((t.name.clone(), slots.slot_of(&t.name)?)))
                .collect(),
            directory: config.output.directory.clone(),
            missing: Vec::new(),
        }
    }
}

/// The Prometheus exposition of every counter (docs/operations.md lists them).
fn render_metrics(stats: &Stats) -> String {
    let mut e = Exposition::default();
    let view =
        stats.view.read().map(|v| (v.targets.clone(), v.directory.clone(), v.missing.clone()));
    let Ok((targets, directory, missing)) = view else { return String::new() };
    e.sample("capture_up", "gauge", "1 while the daemon captures.", &[], 1.0);
    let up_help = "1 while the interface is captured, 0 while it is configured but missing.";
    for name in &missing {
        e.sample("capture_interface_up", "gauge", up_help, &[("interface", name)], 0.0);
    }
    for s in stats.interfaces() {
        let name = &s.name;
        e.sample("capture_interface_up", "gauge", up_help, &[("interface", name)], 1.0);
        let k = s.kernel.totals();
        let iface = [("interface", name.as_str())];
        let counter = |e: &mut Exposition, metric, help, v: u64| {
            e.sample(metric, "counter", help, &iface, v as f64);
        };
        counter(&mut e, "capture_frames_seen_total", "Frames the XDP program ran on.", k.seen);
        counter(&mut e, "capture_frames_matched_total", "Frames matching a target.", k.matched);
        counter(
            &mut e,
            "capture_bytes_matched_total",
            "Bytes on the wire of the frames matching a target.",
            k.matched_bytes,
        );
        counter(&mut e, "capture_frames_sliced_total", "Matched frames cut to snaplen.", k.sliced);
        counter(
            &mut e,
            "capture_frames_no_socket_total",
            "Matched frames on a queue not captured (passed).",
            k.no_socket,
        );
        counter(
            &mut e,
            "capture_frames_written_total",
            "Frames handed to the file writer.",
            s.delivered.load(Relaxed),
        );
        counter(
            &mut e,
            "capture_frames_runt_total",
            "Frames shorter than an Ethernet header.",
            k.runts,
        );
        counter(
            &mut e,
            "capture_frames_cut_tag_total",
            "Frames whose VLAN tag was cut short.",
            k.truncated_tags,
        );
        let hits = s.kernel.target_hits();
        for (target, slot) in &targets {
            let labels = [("interface", name.as_str()), ("target", target.as_str())];
            e.sample(
                "capture_target_frames_total",
                "counter",
                "Frames matching each target.",
                &labels,
                hits.frames[*slot] as f64,
            );
            e.sample(
                "capture_target_bytes_total",
                "counter",
                "Bytes on the wire of the frames matching each target.",
                &labels,
                hits.bytes[*slot] as f64,
            );
        }
        let sum = |f: fn(&QueueStats) -> u64| s.queues.iter().map(|(_, q)| f(q)).sum::<u64>();
        for (stage, v) in [
            ("xdp_redirect_failed", k.redirect_failed),
            ("xdp_adjust_failed", k.adjust_failed),
            ("xsk_rx_dropped", sum(|q| q.kernel_rx_dropped.load(Relaxed))),
            ("xsk_rx_ring_full", sum(|q| q.kernel_rx_ring_full.load(Relaxed))),
            ("xsk_fill_ring_empty", sum(|q| q.kernel_fill_ring_empty.load(Relaxed))),
            ("xsk_invalid_descs", sum(|q| q.kernel_invalid_descs.load(Relaxed))),
            ("writer_queue_full", sum(|q| q.handoff_drops.load(Relaxed))),
        ] {
            e.sample(
                "capture_drops_total",
                "counter",
                "Frames lost, by the stage that lost them.",
                &[("interface", name), ("stage", stage)],
                v as f64,
            );
        }
        for (q, qs) in &s.queues {
            let queue = q.to_string();
            let labels = [("interface", name.as_str()), ("queue", queue.as_str())];
            e.sample(
                "capture_queue_frames_total",
                "counter",
                "Frames read from each AF_XDP socket.",
                &labels,
                qs.frames.load(Relaxed) as f64,
            );
            e.sample(
                "capture_queue_bytes_total",
                "counter",
                "Bytes read from each AF_XDP socket.",
                &labels,
                qs.bytes.load(Relaxed) as f64,
            );
        }
    }
    e.sample(
        "capture_write_error_frames_total",
        "counter",
        "Frames lost to write errors (full disk).",
        &[],
        stats.write_losses.load(Relaxed) as f64,
    );
    e.sample(
        "capture_files_closed_total",
        "counter",
        "Capture files finished.",
        &[],
        stats.files_closed.load(Relaxed) as f64,
    );
    e.sample(
        "capture_bytes_written_total",
        "counter",
        "Bytes written to capture files.",
        &[],
        stats.bytes_written.load(Relaxed) as f64,
    );
    if let Ok(Some(file)) = stats.current_file.lock().map(|f| f.clone()) {
        let path = file.display().to_string();
        e.sample(
            "capture_current_file",
            "gauge",
            "The file being written (label path).",
            &[("path", &path)],
            1.0,
        );
    }
    if let Some(free) = sys::free_bytes(&directory) {
        e.sample(
            "capture_disk_free_bytes",
            "gauge",
            "Free space where the files go.",
            &[],
            free as f64,
        );
    }
    e.finish()
}

/// A thread that has not gone round its loop for this long is taken as hung: the daemon stops
/// pinging systemd's watchdog, which then restarts it (and the bpf_link detaches the program).
const HEARTBEAT_STALE_MS: u64 = 10_000;

impl Stats {
    /// The interfaces captured now.
    fn interfaces(&self) -> Vec<Arc<IfaceStats>> {
        self.ifaces.read().map(|v| v.clone()).unwrap_or_default()
    }

    /// Why the daemon is unhealthy, if it is: a worker or the writer stopped going round.
    fn unhealthy(&self) -> Option<String> {
        let now = xsk::monotonic_ns() / 1_000_000;
        let stale = |beat: u64| now.saturating_sub(beat) > HEARTBEAT_STALE_MS;
        if stale(self.writer_heartbeat_ms.load(Relaxed)) {
            return Some("the writer thread has not run for 10 s".into());
        }
        for s in self.interfaces() {
            for (queue, q) in &s.queues {
                if stale(q.heartbeat_ms.load(Relaxed)) {
                    return Some(format!(
                        "the worker of {} RX queue {queue} has not run for 10 s",
                        s.name
                    ));
                }
            }
        }
        None
    }

    /// One line for systemd's STATUS= and `systemctl status`.
    fn summary(&self) -> String {
        let (mut written, mut drops) = (0, 0);
        for (i, s) in self.interfaces().iter().enumerate() {
            let s = self.interface_stats(s, i == 0);
            written += s.delivered;
            drops += s.kernel_drops + s.user_drops;
        }
        let file = self.current_file.lock().ok().and_then(|f| f.clone());
        let missing = self.view.read().map(|v| v.missing.join(", ")).unwrap_or_default();
        format!(
            "{written} frames written, {drops} dropped; {}{}",
            file.map_or_else(|| "no file open".to_owned(), |f| format!("writing {}", f.display())),
            if missing.is_empty() { String::new() } else { format!("; NOT CAPTURED: {missing}") }
        )
    }

    /// The pcapng statistics of one interface; `first` is the first of its file.
    fn interface_stats(&self, s: &IfaceStats, first: bool) -> InterfaceStats {
        let k = s.kernel.totals();
        // pcapng has no per-interface field for frames lost in user space: the hand-off drops of
        // this interface, plus (on the first interface, where a reader looks) the write losses,
        // which the writer cannot attribute to an interface.
        let mut user_drops: u64 = s.queues.iter().map(|(_, q)| q.handoff_drops.load(Relaxed)).sum();
        if first {
            user_drops += self.write_losses.load(Relaxed);
        }
        let socket_drops: u64 = s.queues.iter().map(|(_, q)| q.kernel_drops()).sum();
        InterfaceStats {
            start_ns: self.start_ns,
            end_ns: realtime_ns(),
            received: k.seen,
            kernel_drops: socket_drops + k.redirect_failed + k.adjust_failed,
            accepted: k.matched,
            delivered: s.delivered.load(Relaxed),
            user_drops,
        }
    }
}

/// The statistics behind one file's Interface Statistics Blocks: its interfaces, by file id.
struct FileStats {
    stats: Arc<Stats>,
    ifaces: Vec<Arc<IfaceStats>>,
}

impl StatsSource for FileStats {
    fn stats(&self, interface_id: u32) -> InterfaceStats {
        self.ifaces
            .get(interface_id as usize)
            .map(|s| self.stats.interface_stats(s, interface_id == 0))
            .unwrap_or_default()
    }
}

/// What a finished run reports.
#[derive(Debug, Default)]
pub struct Summary {
    pub frames_written: u64,
    pub files_closed: u64,
    pub last_file: Option<PathBuf>,
    /// Per interface: name, frames matched (received by the capture), frames lost on the way.
    pub interfaces: Vec<(String, u64, u64)>,
}

/// How a run is driven besides its config: by the daemon (reloads) or by the one-shot
/// `capture` command (a stream output, stop conditions).
#[derive(Default)]
pub struct RunOptions {
    /// Reads the configuration again on SIGHUP.
    pub reload: Option<Box<dyn Fn() -> anyhow::Result<Config>>>,
    /// Write one pcapng stream here instead of rotating files.
    pub stream: Option<Box<dyn std::io::Write + Send>>,
    /// Stop after writing this many frames.
    pub stop_after_packets: Option<u64>,
    /// Stop after this long.
    pub stop_after: Option<Duration>,
}

/// One capture interface, resolved and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedInterface {
    pub name: String,
    pub queues: Vec<u32>,
    pub rx_queues: u32,
    pub xdp_mode: XdpMode,
    pub zero_copy: ZeroCopy,
}

/// Checks that each interface exists and has the queues the config asks for.
pub fn resolve_interfaces(config: &Config) -> anyhow::Result<Vec<ResolvedInterface>> {
    config.interfaces.iter().map(resolve_interface).collect()
}

/// Checks that the interface exists and has the queues asked for.
pub fn resolve_interface(i: &InterfaceConfig) -> anyhow::Result<ResolvedInterface> {
    let rx_queues = netdev::rx_queue_count(&i.name)?;
    let queues = match &i.queues {
        Queues::All => (0..rx_queues).collect(),
        Queues::List(list) => {
            if let Some(q) = list.iter().find(|q| **q >= rx_queues) {
                bail!(
                    "interface {}: RX queue {q} does not exist (it has {rx_queues} RX queue{})",
                    i.name,
                    if rx_queues == 1 { "" } else { "s" }
                );
            }
            list.clone()
        }
    };
    Ok(ResolvedInterface {
        name: i.name.clone(),
        queues,
        rx_queues,
        xdp_mode: i.xdp_mode,
        zero_copy: i.zero_copy,
    })
}

/// "web01 (mac 52:54:00:12:34:56, vlan 100)"
pub fn describe_target(t: &TargetConfig) -> String {
    let mut parts = Vec::new();
    if let Some(mac) = &t.mac {
        parts.push(format!("mac {}", format_mac(mac)));
    }
    if let Some(vlan) = t.vlan {
        parts.push(format!("vlan {vlan}"));
    }
    if parts.is_empty() {
        parts.push("all frames".into());
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

/// The settings every socket of a run shares (`[capture]`); sockets opened with other settings
/// are reopened (their interface restarted) to apply new ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SocketSettings {
    ring_size: u32,
    buffer_bytes: u64,
    busy_poll_us: u32,
    batch_delay_us: u32,
}

impl SocketSettings {
    fn of(c: &CaptureConfig) -> Self {
        SocketSettings {
            ring_size: c.ring_size,
            buffer_bytes: c.buffer_bytes,
            busy_poll_us: c.busy_poll_us,
            batch_delay_us: c.batch_delay_us,
        }
    }
}

/// Everything that captures on one interface: its XDP program, one socket and worker per RX
/// queue, and a stop signal of its own, so that a reload can stop one interface alone.
struct IfaceRun {
    spec: ResolvedInterface,
    /// The interface's index when it was opened: another index under the same name means the
    /// interface was deleted and another one created.
    ifindex: u32,
    settings: SocketSettings,
    filter: Filter,
    workers: Vec<Worker>,
    stop: Stop,
    stats: Arc<IfaceStats>,
}

impl IfaceRun {
    /// Loads the program, opens and registers the sockets. Nothing is attached: a failure here
    /// changes nothing on the NIC. Also returns the hand-off rings for the writer (their
    /// interface id is set by the caller).
    fn open(
        spec: ResolvedInterface,
        settings: SocketSettings,
        tables: &TargetTables,
    ) -> anyhow::Result<(IfaceRun, Vec<Source>)> {
        let stop = Stop::new().context("creating the workers' stop signal")?;
        let ifindex = netdev::ifindex(&spec.name)?;
        let mut filter = Filter::load(&spec.name, tables)
            .with_context(|| format!("preparing the XDP program for {}", spec.name))?;
        let mut workers = Vec::new();
        let mut sources = Vec::new();
        let mut queues = Vec::new();
        // On an error, the stop signal ends the workers started so far.
        let result = (|| -> anyhow::Result<()> {
            for &queue in &spec.queues {
                let buffer = usize::try_from(settings.buffer_bytes).unwrap_or(usize::MAX);
                let (producer, consumer) = handoff::channel(buffer);
                let watermark = Arc::new(AtomicU64::new(0));
                let worker_spec = WorkerSpec {
                    iface: spec.name.clone(),
                    queue,
                    ring_size: settings.ring_size,
                    watermark: Arc::clone(&watermark),
                    zero_copy: spec.zero_copy,
                    busy_poll_us: settings.busy_poll_us,
                    batch_delay_us: settings.batch_delay_us,
                };
                let (worker, fd, mode) = xsk::spawn(worker_spec, producer, stop.clone())
                    .map_err(anyhow::Error::msg)
                    .with_context(|| {
                        format!("opening the AF_XDP socket for {} RX queue {queue}", spec.name)
                    })?;
                log::info!(
                    "{} RX queue {queue}: AF_XDP socket bound in {} mode",
                    spec.name,
                    mode.as_str()
                );
                queues.push((queue, Arc::clone(&worker.stats)));
                workers.push(worker);
                filter.register_socket(queue, fd).with_context(|| {
                    format!("registering the AF_XDP socket of {} queue {queue}", spec.name)
                })?;
                sources.push(Source { interface_id: 0, consumer, watermark });
            }
            Ok(())
        })();
        if let Err(e) = result {
            stop.raise();
            workers.into_iter().for_each(Worker::join);
            return Err(e);
        }
        let stats = Arc::new(IfaceStats {
            name: spec.name.clone(),
            kernel: filter.counters(),
            queues,
            delivered: AtomicU64::new(0),
        });
        Ok((IfaceRun { spec, ifindex, settings, filter, workers, stop, stats }, sources))
    }

    /// Attaches the program: from here on matched frames are captured.
    fn attach(&mut self, targets: &str) -> anyhow::Result<()> {
        let mode = self.filter.attach(self.spec.xdp_mode)?;
        log::info!(
            "capturing on {} (XDP {mode}, RX queues {:?} of {}): {targets}",
            self.spec.name,
            self.spec.queues,
            self.spec.rx_queues,
        );
        Ok(())
    }

    /// [`IfaceRun::open`] then [`IfaceRun::attach`], undone if attaching fails.
    fn start(
        spec: ResolvedInterface,
        settings: SocketSettings,
        tables: &TargetTables,
        targets: &str,
    ) -> anyhow::Result<(IfaceRun, Vec<Source>)> {
        let (mut run, sources) = IfaceRun::open(spec, settings, tables)?;
        if let Err(e) = run.attach(targets) {
            finish_all(vec![run]);
            return Err(e);
        }
        Ok((run, sources))
    }
}

/// Stops capturing on `runs`: every program is detached first (each NIC is back to normal at
/// once), then the workers drain their rings and exit, closing their sockets.
fn finish_all(mut runs: Vec<IfaceRun>) {
    for r in &mut runs {
        r.filter.detach();
    }
    for r in &runs {
        r.stop.raise();
    }
    for r in runs {
        r.workers.into_iter().for_each(Worker::join);
    }
}

/// What the main thread tells the writer after a reload.
struct Reconfigure {
    output: OutputConfig,
    infos: Vec<InterfaceInfo>,
    /// Set when interfaces were added, removed or restarted.
    interfaces: Option<InterfaceChange>,
}

struct InterfaceChange {
    /// The interfaces from now on, in file order: an interface's pcapng id is its index here.
    ifaces: Vec<Arc<IfaceStats>>,
    /// The rings of the interfaces new to the list, with their ids set.
    sources: Vec<Source>,
}

struct Running {
    ifaces: Vec<IfaceRun>,
    /// Configured interfaces not captured now.
    missing: Vec<Missing>,
    /// What the maps of every interface hold (for interfaces started later).
    tables: TargetTables,
    writer: JoinHandle<anyhow::Result<Summary>>,
    writer_stop: Arc<AtomicBool>,
    reconfigure: mpsc::Sender<Reconfigure>,
    stats: Arc<Stats>,
}

fn describe_targets(config: &Config) -> String {
    config.targets.iter().map(describe_target).collect::<Vec<_>>().join("; ")
}

fn warn_mirror_mode(names: &[&str]) {
    log::warn!(
        "mirror mode: matched frames are taken out of the kernel's path on {}; use a NIC fed by a \
         SPAN/TAP port, not a live uplink",
        names.join(", ")
    );
}

/// Runs the capture described by `config` until `control.shutdown` is set. `reload` reads the
/// configuration again when `control.reload` is set (SIGHUP).
pub fn run(config: Config, control: &Control, opts: RunOptions) -> anyhow::Result<Summary> {
    let RunOptions { reload, stream, stop_after_packets, stop_after } = opts;
    let mut config = config;
    let missing = sys::missing_caps();
    if !missing.is_empty() {
        let list: Vec<String> =
            missing.iter().map(|(cap, why)| format!("{cap} (to {why})")).collect();
        bail!("missing privileges: {}; run as root or grant these capabilities", list.join(", "));
    }
    let ifaces = resolve_interfaces(&config)?;
    sys::raise_memlock_limit();
    let mut slots = Slots::default();
    let assigned = slots.assign(&config.targets)?;
    let tables = TargetTables::build(&config.capture, &config.targets, &assigned)?;
    let mut running = start(&config, ifaces, &tables, stream, stop_after_packets, control)?;
    let started = Instant::now();
    warn_mirror_mode(&config.interfaces.iter().map(|i| i.name.as_str()).collect::<Vec<_>>());

    if let Ok(mut view) = running.stats.view.write() {
        *view = View::of(&config, &slots);
    }
    let mut metrics = Metrics::start(&config.metrics, &running.stats)?;
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
            match reload().and_then(|new| apply_reload(&mut running, &mut config, &mut slots, new))
            {
                Ok(()) => {
                    if config.metrics != metrics.config {
                        metrics.stop();
                        metrics = Metrics::start(&config.metrics, &running.stats)?;
                    }
                }
                Err(e) => log::error!("reload rejected, the running configuration stays: {e:#}"),
            }
            notifier.ready(&running.stats.summary());
        }
        check_interfaces(&mut running, &config);
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
    log::info!("stopping: detaching XDP, draining rings, closing the file");
    notifier.stopping();
    metrics.stop();
    stop(running, &config, &slots)
}

/// The metrics endpoint, as configured; restarted by a reload that changes `[metrics]`.
struct Metrics {
    config: MetricsConfig,
    stop: Stop,
    server: Option<JoinHandle<()>>,
}

impl Metrics {
    /// Binds the endpoint if enabled; a taken port costs the endpoint, not the capture.
    fn start(config: &MetricsConfig, stats: &Arc<Stats>) -> anyhow::Result<Metrics> {
        let stop = Stop::new().context("creating the metrics server's stop signal")?;
        let server = if config.enabled {
            let listen = config.listen;
            match std::net::TcpListener::bind(listen) {
                Ok(listener) => {
                    let stats = Arc::clone(stats);
                    match metrics::serve(listener, stop.clone(), move || render_metrics(&stats)) {
                        Ok(handle) => {
                            log::info!("metrics: http://{listen}/metrics");
                            Some(handle)
                        }
                        Err(e) => {
                            log::error!("metrics: {e}; capturing without the endpoint");
                            None
                        }
                    }
                }
                Err(e) => {
                    log::error!(
                        "metrics: cannot listen on {listen}: {e}; capturing without the endpoint"
                    );
                    None
                }
            }
        } else {
            None
        };
        Ok(Metrics { config: config.clone(), stop, server })
    }

    fn stop(&mut self) {
        self.stop.raise();
        if let Some(server) = self.server.take() {
            let _ = server.join();
        }
    }
}

/// A configured interface that is not captured now: gone from the host, or it failed to
/// (re)start. The main loop tries it again every second ([`check_interfaces`]).
struct Missing {
    config: InterfaceConfig,
    /// When its last failure to come back was logged.
    logged: Option<Instant>,
}

/// How often a missing interface's failure to come back is logged again.
const MISSING_LOG_EVERY: Duration = Duration::from_secs(60);

/// Makes `runs` the captured interfaces, in the order of `config.interfaces`: the rings of
/// those just started get their index as interface id, the writer finishes its file and starts
/// one describing them, the metrics follow.
fn install_interfaces(
    running: &mut Running,
    config: &Config,
    runs: Vec<(IfaceRun, Option<Vec<Source>>)>,
) {
    let mut runs = runs;
    runs.sort_by_key(|(r, _)| config.interfaces.iter().position(|i| i.name == r.spec.name));
    let mut new_sources = Vec::new();
    for (id, (_, sources)) in (0u32..).zip(&mut runs) {
        for mut source in sources.take().unwrap_or_default() {
            source.interface_id = id;
            new_sources.push(source);
        }
    }
    running.ifaces = runs.into_iter().map(|(r, _)| r).collect();
    let ifaces: Vec<Arc<IfaceStats>> =
        running.ifaces.iter().map(|r| Arc::clone(&r.stats)).collect();
    if let Ok(mut list) = running.stats.ifaces.write() {
        list.clone_from(&ifaces);
    }
    let names: Vec<&str> = running.ifaces.iter().map(|r| r.spec.name.as_str()).collect();
    let _ = running.reconfigure.send(Reconfigure {
        output: config.output.clone(),
        infos: interface_infos(config, &names, &sys::hostname()),
        interfaces: Some(InterfaceChange { ifaces, sources: new_sources }),
    });
    running.publish_missing();
}

impl Running {
    /// Names of the missing interfaces, for the metrics and the status line.
    fn publish_missing(&self) {
        if let Ok(mut view) = self.stats.view.write() {
            view.missing = self.missing.iter().map(|m| m.config.name.clone()).collect();
        }
    }
}

/// Once a second: an interface that vanished (deleted, renamed, its driver reloaded) is
/// dropped from the capture, with an error in the log, and captured again as soon as an
/// interface of that name is back. Without this the daemon would capture nothing from it,
/// silently, for as long as it runs.
fn check_interfaces(running: &mut Running, config: &Config) {
    let (kept, gone): (Vec<IfaceRun>, Vec<IfaceRun>) = std::mem::take(&mut running.ifaces)
        .into_iter()
        .partition(|r| netdev::ifindex(&r.spec.name).ok() == Some(r.ifindex));
    for r in &gone {
        log::error!(
            "{}: the interface is gone (deleted, renamed or its driver reloaded); not captured \
             until it is back",
            r.spec.name
        );
        if let Some(c) = config.interfaces.iter().find(|i| i.name == r.spec.name) {
            running.missing.push(Missing { config: c.clone(), logged: Some(Instant::now()) });
        }
    }
    let changed = !gone.is_empty();
    finish_all(gone);

    let settings = SocketSettings::of(&config.capture);
    let targets = describe_targets(config);
    let mut started = Vec::new();
    let mut still_missing = Vec::new();
    for mut m in std::mem::take(&mut running.missing) {
        if netdev::ifindex(&m.config.name).is_err() {
            still_missing.push(m);
            continue;
        }
        let spec = resolve_interface(&m.config);
        match spec.and_then(|spec| IfaceRun::start(spec, settings, &running.tables, &targets)) {
            Ok(s) => {
                log::info!("{}: back; capturing it again", m.config.name);
                warn_mirror_mode(&[m.config.name.as_str()]);
                started.push(s);
            }
            Err(e) => {
                if m.logged.is_none_or(|t| t.elapsed() >= MISSING_LOG_EVERY) {
                    log::warn!("{}: still not captured: {e:#}", m.config.name);
                    m.logged = Some(Instant::now());
                }
                still_missing.push(m);
            }
        }
    }
    running.missing = still_missing;
    if changed || !started.is_empty() {
        let runs = kept.into_iter().map(|r| (r, None));
        let runs = runs.chain(started.into_iter().map(|(r, s)| (r, Some(s)))).collect();
        install_interfaces(running, config, runs);
    } else {
        running.ifaces = kept;
    }
}

/// Applies a reloaded configuration, changing only what changed:
/// - targets, `snaplen` and `unmatched` go into the BPF maps of the interfaces that stay, in
///   place ([`Filter::update`]): no detach, no new program, no frame of an unchanged target lost;
/// - interfaces added are opened and attached before anything else changes (if one fails, the
///   reload is rejected as a whole); interfaces removed are detached and drained;
/// - an interface whose settings changed (`queues`, `xdp_mode`, `zero_copy`, or the socket
///   settings of `[capture]`) is restarted: its sockets must be reopened, which leaves a gap of
///   a few milliseconds on it (frames then pass to the host, counted as `no_socket`);
/// - an interface missing from the host may stay configured: it is captured when it is back;
/// - `[output]` settings apply from the next file, or at once when the interfaces changed (a
///   file describes a fixed set of interfaces);
/// - `[metrics]` changes restart the endpoint (in the caller).
fn apply_reload(
    running: &mut Running,
    config: &mut Config,
    slots: &mut Slots,
    new: Config,
) -> anyhow::Result<()> {
    // Check everything that can be checked before changing anything. An interface that is
    // captured or missing now may be absent from the host (it is then missing); a new one may
    // not: that is most likely a typo.
    let known = |name: &str| {
        running.ifaces.iter().any(|r| r.spec.name == name)
            || running.missing.iter().any(|m| m.config.name == name)
    };
    let mut specs = Vec::new();
    let mut absent = Vec::new();
    for i in &new.interfaces {
        match resolve_interface(i) {
            Ok(spec) => specs.push(spec),
            Err(_) if known(&i.name) && netdev::ifindex(&i.name).is_err() => absent.push(i.clone()),
            Err(e) => return Err(e),
        }
    }
    let mut new_slots = slots.clone();
    let assigned = new_slots.assign(&new.targets)?;
    let tables = TargetTables::build(&new.capture, &new.targets, &assigned)?;
    let settings = SocketSettings::of(&new.capture);
    let targets = describe_targets(&new);
    let unchanged = |r: &IfaceRun| specs.contains(&r.spec) && r.settings == settings;
    let was_missing = |name: &str| running.missing.iter().any(|m| m.config.name == name);

    // Interfaces new to the capture: opened and attached first, so that a failure (a busy NIC,
    // a queue that cannot be bound) rejects the reload with nothing changed. One that was
    // missing and fails again just stays missing.
    let mut started: Vec<(IfaceRun, Vec<Source>)> = Vec::new();
    let mut failed = Vec::new();
    for spec in specs.iter().filter(|s| !running.ifaces.iter().any(|r| r.spec.name == s.name)) {
        match IfaceRun::start(spec.clone(), settings, &tables, &targets) {
            Ok(s) => started.push(s),
            Err(e) if was_missing(&spec.name) => {
                log::warn!("reload: {} is still not captured: {e:#}", spec.name);
                failed.push(spec.name.clone());
            }
            Err(e) => {
                finish_all(started.into_iter().map(|(r, _)| r).collect());
                return Err(e.context(format!("adding interface {}", spec.name)));
            }
        }
    }
    if !started.is_empty() {
        warn_mirror_mode(&started.iter().map(|(r, _)| r.spec.name.as_str()).collect::<Vec<_>>());
    }

    // The interfaces that stay: new tables in place.
    for r in running.ifaces.iter_mut().filter(|r| unchanged(r)) {
        if let Err(e) = r.filter.update(&tables) {
            finish_all(started.into_iter().map(|(r, _)| r).collect());
            return Err(
                anyhow::Error::new(e).context(format!("updating the maps of {}", r.spec.name))
            );
        }
    }

    // The others are stopped; those still configured start again with their new settings.
    let (keep, gone): (Vec<IfaceRun>, Vec<IfaceRun>) =
        std::mem::take(&mut running.ifaces).into_iter().partition(|r| unchanged(r));
    let mut restarts = Vec::new();
    for r in &gone {
        match specs.iter().find(|s| s.name == r.spec.name) {
            Some(spec) => {
                log::warn!(
                    "reload: restarting the capture on {} to apply {}: its frames are not captured \
                     for a few milliseconds",
                    r.spec.name,
                    what_changed(&r.spec, r.settings, spec, settings)
                );
                restarts.push((spec.clone(), r.spec.clone(), r.settings));
            }
            None if absent.iter().any(|a| a.name == r.spec.name) => {
                log::error!("reload: {} is gone from the host; detaching", r.spec.name);
            }
            None => log::info!("reload: {} is no longer captured; detaching", r.spec.name),
        }
    }
    let interfaces_changed = !gone.is_empty() || !started.is_empty();
    finish_all(gone);
    for (spec, old_spec, old_settings) in restarts {
        let name = spec.name.clone();
        match IfaceRun::start(spec, settings, &tables, &targets) {
            Ok(s) => started.push(s),
            Err(e) => {
                log::error!("reload: cannot restart the capture on {name}: {e:#}");
                match IfaceRun::start(old_spec, old_settings, &tables, &targets) {
                    Ok(s) => {
                        log::warn!("reload: {name} captures with its previous settings");
                        started.push(s);
                    }
                    Err(e) => {
                        log::error!("reload: {name} is not captured: {e:#}");
                        failed.push(name);
                    }
                }
            }
        }
    }

    *slots = new_slots;
    running.tables = tables;
    running.missing = new
        .interfaces
        .iter()
        .filter(|i| absent.iter().any(|a| a.name == i.name) || failed.contains(&i.name))
        .map(|i| Missing { config: i.clone(), logged: Some(Instant::now()) })
        .collect();
    *config = new;
    let new_view = View::of(config, slots);
    if let Ok(mut view) = running.stats.view.write() {
        *view = new_view;
    }
    if interfaces_changed {
        let runs = keep.into_iter().map(|r| (r, None));
        let runs = runs.chain(started.into_iter().map(|(r, s)| (r, Some(s)))).collect();
        install_interfaces(running, config, runs);
    } else {
        running.ifaces = keep;
        running.publish_missing();
        let names: Vec<&str> = running.ifaces.iter().map(|r| r.spec.name.as_str()).collect();
        let _ = running.reconfigure.send(Reconfigure {
            output: config.output.clone(),
            infos: interface_infos(config, &names, &sys::hostname()),
            interfaces: None,
        });
    }
    let missing: Vec<&str> = running.missing.iter().map(|m| m.config.name.as_str()).collect();
    log::info!(
        "reloaded: snaplen {}, unmatched {}, interfaces {}{}, targets: {}; output settings apply \
         from the {} file",
        config.capture.snaplen,
        config.capture.unmatched,
        running.ifaces.iter().map(|r| r.spec.name.as_str()).collect::<Vec<_>>().join(", "),
        if missing.is_empty() {
            String::new()
        } else {
            format!(" (missing: {})", missing.join(", "))
        },
        describe_targets(config),
        if interfaces_changed { "new" } else { "next" }
    );
    Ok(())
}

/// "queues, ring_size" — the settings of an interface that differ between two configs.
fn what_changed(
    old: &ResolvedInterface,
    old_settings: SocketSettings,
    new: &ResolvedInterface,
    settings: SocketSettings,
) -> String {
    let mut what = Vec::new();
    if old.queues != new.queues || old.rx_queues != new.rx_queues {
        what.push("queues");
    }
    if old.xdp_mode != new.xdp_mode {
        what.push("xdp_mode");
    }
    if old.zero_copy != new.zero_copy {
        what.push("zero_copy");
    }
    for (name, changed) in [
        ("ring_size", old_settings.ring_size != settings.ring_size),
        ("buffer_bytes", old_settings.buffer_bytes != settings.buffer_bytes),
        ("busy_poll_us", old_settings.busy_poll_us != settings.busy_poll_us),
        ("batch_delay_us", old_settings.batch_delay_us != settings.batch_delay_us),
    ] {
        if changed {
            what.push(name);
        }
    }
    what.join(", ")
}

fn start(
    config: &Config,
    ifaces: Vec<ResolvedInterface>,
    tables: &TargetTables,
    stream: Option<Box<dyn std::io::Write + Send>>,
    stop_after_packets: Option<u64>,
    control: &Control,
) -> anyhow::Result<Running> {
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
    let stats = Arc::new(Stats {
        start_ns: realtime_ns(),
        ifaces: RwLock::new(file_ifaces.clone()),
        writer_heartbeat_ms: AtomicU64::new(xsk::monotonic_ns() / 1_000_000),
        current_file: std::sync::Mutex::new(None),
        write_losses: AtomicU64::new(0),
        files_closed: AtomicU64::new(0),
        bytes_written: AtomicU64::new(0),
        view: RwLock::new(View::default()),
    });
    let host = sys::hostname();
    let names: Vec<&str> = runs.iter().map(|r| r.spec.name.as_str()).collect();
    let interfaces = interface_infos(config, &names, &host);
    let stats_source =
        Box::new(FileStats { stats: Arc::clone(&stats), ifaces: file_ifaces.clone() });
    let writer = match stream {
        Some(out) => {
            StreamWriter::open(out, &section_info(), &interfaces, stats_source).map(Output::Stream)
        }
        None => RotatingWriter::open(
            config.output.clone(),
            section_info(),
            interfaces,
            stats_source,
            realtime_ns(),
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
    let (reconfigure, reconfigured) = mpsc::channel();
    let writer = {
        let buffer_bytes = config.capture.buffer_bytes;
        let stop = Arc::clone(&writer_stop);
        let stats = Arc::clone(&stats);
        let control = control.clone();
        std::thread::Builder::new()
            .name("writer".into())
            .spawn(move || {
                let merger = Merger::new(sources, DEFAULT_WINDOW_NS);
                let ends = Ends { limit: stop_after_packets, control };
                let state = WriterState { output: writer, merger, ifaces: file_ifaces };
                write_loop(state, buffer_bytes, &reconfigured, &stop, &stats, &ends)
            })
            .context("spawning the writer thread")?
    };

    // Last step: attach. Until here a failure changed nothing on the NICs.
    let mut running = Running {
        ifaces: runs,
        missing: Vec::new(),
        tables: tables.clone(),
        writer,
        writer_stop,
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
             | no-socket {} runts {} cut-tags {} | per target: {}",
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
            per_target.join(" ")
        );
    }
}

/// When the writer itself ends a run: after `limit` frames (`capture -c`), or when the reader
/// of its stream went away. It then asks the main loop to shut down, as a signal would.
struct Ends {
    limit: Option<u64>,
    control: Control,
}

/// What the writer thread owns: the output, the rings it merges, and the interfaces of the
/// current file (a ring's interface id indexes `ifaces`).
struct WriterState {
    output: Output,
    merger: Merger,
    ifaces: Vec<Arc<IfaceStats>>,
}

/// How long the writer waits for the rings of removed interfaces to empty before it switches
/// files without their last frames.
const DRAIN_REMOVED_TIMEOUT: Duration = Duration::from_secs(10);

impl WriterState {
    /// Moves to a new set of interfaces, once the rings of the removed ones have been written
    /// out (their workers are gone, so that happens within the merge window). Returns the
    /// command back while that is not done yet.
    fn switch_interfaces(
        &mut self,
        cmd: Reconfigure,
        since: Instant,
        stats: &Arc<Stats>,
    ) -> Option<Reconfigure> {
        let change = cmd.interfaces.as_ref()?;
        let new_ids: Vec<Option<u32>> = self
            .ifaces
            .iter()
            .map(|old| {
                let pos = change.ifaces.iter().position(|n| Arc::ptr_eq(n, old));
                pos.and_then(|p| u32::try_from(p).ok())
            })
            .collect();
        let removed = (0u32..).zip(&new_ids).filter(|(_, n)| n.is_none()).map(|(id, _)| id);
        let drained = removed.clone().all(|id| self.merger.is_drained(id));
        if !drained {
            if since.elapsed() < DRAIN_REMOVED_TIMEOUT {
                return Some(cmd);
            }
            log::warn!("reload: the frames still queued for removed interfaces are dropped");
        }
        let Reconfigure { output, infos, interfaces } = cmd;
        let change = interfaces?;
        let file_stats =
            Box::new(FileStats { stats: Arc::clone(stats), ifaces: change.ifaces.clone() });
        if let Err(e) = self.output.switch_interfaces(output, &infos, file_stats) {
            log::error!("reload: the new interfaces are not described in the files: {e}");
        }
        self.merger
            .change_sources(|id| new_ids.get(id as usize).copied().flatten(), change.sources);
        self.ifaces = change.ifaces;
        None
    }
}

/// The writer thread: merges every queue's hand-off ring into the rotating pcapng writer.
fn write_loop(
    mut state: WriterState,
    buffer_bytes: u64,
    reconfigured: &mpsc::Receiver<Reconfigure>,
    stop: &AtomicBool,
    stats: &Arc<Stats>,
    ends: &Ends,
) -> anyhow::Result<Summary> {
    let mut total = 0u64;
    let mut ended = false;
    let mut nap = Nap::new(buffer_bytes / 4, WRITER_MAX_NAP_NS);
    // Bytes taken from the rings since the writer last slept.
    let mut round_bytes = 0u64;
    let mut last_tick = Instant::now();
    let mut reported_error = false;
    // Frames written per interface id since they were last added to the shared counters.
    let mut delivered = vec![0u64; state.ifaces.len()];
    // Frames handed to the output over the whole run, interfaces removed since included.
    let mut handed = 0u64;
    // A change of interfaces waiting for the rings of removed ones to empty, and since when.
    let mut switching: Option<(Reconfigure, Instant)> = None;
    loop {
        stats.writer_heartbeat_ms.store(xsk::monotonic_ns() / 1_000_000, Relaxed);
        let counters = state.output.counters();
        stats.write_losses.store(counters.packets_lost_to_errors, Relaxed);
        stats.files_closed.store(counters.files_closed, Relaxed);
        stats.bytes_written.store(counters.bytes_written, Relaxed);
        // Before taking frames: the next file started after a reload follows the new settings.
        if switching.is_none()
            && let Ok(cmd) = reconfigured.try_recv()
        {
            if cmd.interfaces.is_some() {
                switching = Some((cmd, Instant::now()));
            } else if let Err(e) = state.output.reconfigure(cmd.output, &cmd.infos) {
                log::error!("reload: output settings not applied: {e}");
            }
        }
        if let Some((cmd, since)) = switching.take() {
            handed += add_delivered(&state.ifaces, &mut delivered);
            switching = state.switch_interfaces(cmd, since, stats).map(|c| (c, since));
            delivered.resize(state.ifaces.len(), 0);
        }
        if let Ok(mut current) = stats.current_file.try_lock()
            && current.as_deref() != state.output.current_path()
        {
            *current = state.output.current_path().map(PathBuf::from);
        }
        // Past the frame limit, frames are taken and discarded: the run is ending.
        let room = ends
            .limit
            .map_or(usize::MAX, |l| usize::try_from(l.saturating_sub(total)).unwrap_or(usize::MAX));
        let round = if room == 0 {
            let mut discarded = vec![0u64; state.ifaces.len()];
            write_round(
                &mut state.merger,
                &mut Discard,
                realtime_ns(),
                RECORDS_PER_ROUND,
                &mut discarded,
            )
        } else {
            write_round(
                &mut state.merger,
                &mut state.output,
                realtime_ns(),
                RECORDS_PER_ROUND.min(room),
                &mut delivered,
            )
        };
        let n = round.records;
        if room != 0 {
            total += n as u64;
        }
        if !ended && (ends.limit.is_some_and(|l| total >= l) || state.output.finished()) {
            ended = true;
            ends.control.request_shutdown();
        }
        round_bytes += round.bytes + n as u64 * HANDOFF_RECORD_OVERHEAD;
        if let Some(e) = round.error
            && !reported_error
        {
            log::error!("writing a frame: {}", crate::bpf::error_chain(&e));
            reported_error = true;
        }
        if n > 0 {
            handed += add_delivered(&state.ifaces, &mut delivered);
        }
        if last_tick.elapsed() >= Duration::from_millis(100) {
            if let Err(e) = state.output.tick(realtime_ns()) {
                log::error!("rotating the output file: {}", crate::bpf::error_chain(&e));
            }
            last_tick = Instant::now();
        }
        if n < RECORDS_PER_ROUND {
            // Workers are joined before `stop` is set, so finished rings stay finished.
            if stop.load(Relaxed) && state.merger.is_finished() {
                break;
            }
            // Caught up: let records gather instead of waking for every few of them. An empty
            // round lengthens the pause too: idle, the writer wakes only for its ticks. While
            // removed interfaces drain, it looks again soon.
            let mut pause = nap.after_round(std::mem::take(&mut round_bytes));
            if switching.is_some() {
                pause = pause.min(Duration::from_millis(1));
            }
            std::thread::sleep(pause);
        }
    }
    stats.write_losses.store(state.output.counters().packets_lost_to_errors, Relaxed);
    let closed_before = state.output.counters().files_closed;
    let last_file = state.output.close(realtime_ns()).context("closing the output file")?;
    let frames_written = handed.saturating_sub(stats.write_losses.load(Relaxed));
    Ok(Summary {
        frames_written,
        files_closed: closed_before + u64::from(last_file.is_some()),
        last_file,
        interfaces: Vec::new(),
    })
}

/// Adds the writer's per-interface counts to the shared counters and zeroes them. Returns
/// how many frames that was.
fn add_delivered(ifaces: &[Arc<IfaceStats>], delivered: &mut [u64]) -> u64 {
    let mut sum = 0;
    for (s, d) in ifaces.iter().zip(delivered.iter_mut()) {
        if *d > 0 {
            sum += *d;
            s.delivered.fetch_add(std::mem::take(d), Relaxed);
        }
    }
    sum
}
