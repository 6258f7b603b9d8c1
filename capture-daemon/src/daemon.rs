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
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::bpf::{Filter, KernelCounters, Slots, TargetTables};
use crate::config::{Config, OutputConfig, Queues, TargetConfig, XdpMode, ZeroCopy, format_mac};
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

/// Per-interface statistics, shared by the writer (pcapng ISB) and the status log.
struct IfaceStats {
    kernel: Arc<KernelCounters>,
    queues: Vec<Arc<QueueStats>>,
    /// Frames of this interface written to files.
    delivered: AtomicU64,
}

struct Stats {
    start_ns: u64,
    ifaces: Vec<IfaceStats>,
    /// CLOCK_MONOTONIC ms when the writer last went round its loop (see `QueueStats`).
    writer_heartbeat_ms: AtomicU64,
    /// The file being written, for status lines.
    current_file: std::sync::Mutex<Option<PathBuf>>,
    /// Frames the writer could not write (full disk, I/O errors), all interfaces together.
    write_losses: AtomicU64,
    files_closed: AtomicU64,
    bytes_written: AtomicU64,
    /// Names for the metrics' labels; replaced on reload.
    view: std::sync::RwLock<View>,
}

/// What the metrics call things: interfaces in order, targets with their slots.
#[derive(Default)]
struct View {
    interfaces: Vec<String>,
    targets: Vec<(String, usize)>,
    directory: PathBuf,
}

impl View {
    fn of(config: &Config, slots: &Slots) -> View {
        View {
            interfaces: config.interfaces.iter().map(|i| i.name.clone()).collect(),
            targets: config
                .targets
                .iter()
                .filter_map(|t| Some((t.name.clone(), slots.slot_of(&t.name)?)))
                .collect(),
            directory: config.output.directory.clone(),
        }
    }
}

/// The Prometheus exposition of every counter (docs/operations.md lists them).
fn render_metrics(stats: &Stats) -> String {
    let mut e = Exposition::default();
    let view =
        stats.view.read().map(|v| (v.interfaces.clone(), v.targets.clone(), v.directory.clone()));
    let Ok((interfaces, targets, directory)) = view else { return String::new() };
    e.sample("capture_up", "gauge", "1 while the daemon captures.", &[], 1.0);
    for (i, (name, s)) in interfaces.iter().zip(&stats.ifaces).enumerate() {
        let k = s.kernel.totals();
        let iface = [("interface", name.as_str())];
        let counter = |e: &mut Exposition, metric, help, v: u64| {
            e.sample(metric, "counter", help, &iface, v as f64);
        };
        counter(&mut e, "capture_frames_seen_total", "Frames the XDP program ran on.", k.seen);
        counter(&mut e, "capture_frames_matched_total", "Frames matching a target.", k.matched);
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
        let hits = s.kernel.target_frames();
        for (target, slot) in &targets {
            e.sample(
                "capture_target_frames_total",
                "counter",
                "Frames matching each target.",
                &[("interface", name), ("target", target)],
                hits[*slot] as f64,
            );
        }
        let sum = |f: fn(&QueueStats) -> u64| s.queues.iter().map(|q| f(q)).sum::<u64>();
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
        for (q, qs) in s.queues.iter().enumerate() {
            let queue = q.to_string();
            let labels = [("interface", name.as_str()), ("socket", queue.as_str())];
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
        let _ = i;
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
    /// Why the daemon is unhealthy, if it is: a worker or the writer stopped going round.
    fn unhealthy(&self, config: &Config) -> Option<String> {
        let now = xsk::monotonic_ns() / 1_000_000;
        let stale = |beat: u64| now.saturating_sub(beat) > HEARTBEAT_STALE_MS;
        if stale(self.writer_heartbeat_ms.load(Relaxed)) {
            return Some("the writer thread has not run for 10 s".into());
        }
        for (iface, s) in config.interfaces.iter().zip(&self.ifaces) {
            for (i, q) in s.queues.iter().enumerate() {
                if stale(q.heartbeat_ms.load(Relaxed)) {
                    return Some(format!(
                        "the worker of {} (socket {i}) has not run for 10 s",
                        iface.name
                    ));
                }
            }
        }
        None
    }

    /// One line for systemd's STATUS= and `systemctl status`.
    fn summary(&self) -> String {
        let (mut written, mut drops) = (0, 0);
        for i in 0..self.ifaces.len() {
            let s = self.interface(i);
            written += s.delivered;
            drops += s.kernel_drops + s.user_drops;
        }
        let file = self.current_file.lock().ok().and_then(|f| f.clone());
        format!(
            "{written} frames written, {drops} dropped; {}",
            file.map_or_else(|| "no file open".to_owned(), |f| format!("writing {}", f.display()))
        )
    }
}

impl Stats {
    fn interface(&self, i: usize) -> InterfaceStats {
        let s = &self.ifaces[i];
        let k = s.kernel.totals();
        // pcapng has no per-interface field for frames lost in user space: the hand-off drops of
        // this interface, plus (on the first interface, where a reader looks) the write losses,
        // which the writer cannot attribute to an interface.
        let mut user_drops: u64 = s.queues.iter().map(|q| q.handoff_drops.load(Relaxed)).sum();
        if i == 0 {
            user_drops += self.write_losses.load(Relaxed);
        }
        let socket_drops: u64 = s.queues.iter().map(|q| q.kernel_drops()).sum();
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

struct SharedStats(Arc<Stats>);

impl StatsSource for SharedStats {
    fn stats(&self, interface_id: u32) -> InterfaceStats {
        self.0.interface(interface_id as usize)
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
pub struct ResolvedInterface {
    pub name: String,
    pub queues: Vec<u32>,
    pub rx_queues: u32,
    pub xdp_mode: XdpMode,
    pub zero_copy: ZeroCopy,
}

/// Checks that each interface exists and has the queues the config asks for.
pub fn resolve_interfaces(config: &Config) -> anyhow::Result<Vec<ResolvedInterface>> {
    config
        .interfaces
        .iter()
        .map(|i| {
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
        })
        .collect()
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

/// The Interface Description Blocks' contents: name, host, targets, snap length.
fn interface_infos(config: &Config, host: &str) -> Vec<InterfaceInfo> {
    let targets = config.targets.iter().map(describe_target).collect::<Vec<_>>().join("; ");
    config
        .interfaces
        .iter()
        .map(|i| InterfaceInfo {
            name: i.name.clone(),
            description: format!(
                "{} on {host}, captured by capture-daemon; targets: {targets}",
                i.name
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
    filters: Vec<Filter>,
    workers: Vec<Worker>,
    stop_workers: Stop,
    writer: JoinHandle<anyhow::Result<Summary>>,
    writer_stop: Arc<AtomicBool>,
    /// New output settings and interface descriptions for the writer (config reloads).
    reconfigure: mpsc::Sender<(OutputConfig, Vec<InterfaceInfo>)>,
    stats: Arc<Stats>,
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
    let mut running = start(&config, &ifaces, &tables, stream, stop_after_packets, control)?;
    let started = Instant::now();
    for (iface, filter) in ifaces.iter().zip(&running.filters) {
        log::info!(
            "capturing on {} (XDP {}, RX queues {:?} of {}): {}",
            iface.name,
            filter.mode().unwrap_or("?"),
            iface.queues,
            iface.rx_queues,
            config.targets.iter().map(describe_target).collect::<Vec<_>>().join("; ")
        );
    }
    log::warn!(
        "mirror mode: matched frames are taken out of the kernel's path on {}; use a NIC fed by a \
         SPAN/TAP port, not a live uplink",
        ifaces.iter().map(|i| i.name.as_str()).collect::<Vec<_>>().join(", ")
    );

    if let Ok(mut view) = running.stats.view.write() {
        *view = View::of(&config, &slots);
    }
    let metrics_stop = Stop::new().context("creating the metrics server's stop signal")?;
    let metrics = if config.metrics.enabled {
        start_metrics(config.metrics.listen, &metrics_stop, Arc::clone(&running.stats))
    } else {
        None
    };
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
                Ok(()) => {}
                Err(e) => log::error!("reload rejected, the running configuration stays: {e:#}"),
            }
            notifier.ready(&running.stats.summary());
        }
        match running.stats.unhealthy(&config) {
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
    metrics_stop.raise();
    if let Some(m) = metrics {
        let _ = m.join();
    }
    stop(running, &config, &slots)
}

/// Binds the metrics endpoint; a taken port costs the endpoint, not the capture.
fn start_metrics(
    listen: std::net::SocketAddr,
    stop: &Stop,
    stats: Arc<Stats>,
) -> Option<JoinHandle<()>> {
    let listener = match std::net::TcpListener::bind(listen) {
        Ok(l) => l,
        Err(e) => {
            log::error!("metrics: cannot listen on {listen}: {e}; capturing without the endpoint");
            return None;
        }
    };
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

/// Applies a reloaded configuration without detaching anything: targets, `snaplen` and
/// `unmatched` go into the BPF maps in place at once ([`Filter::update`]); `[output]` settings
/// and the interface descriptions apply from the next file. Settings fixed at start-up (the
/// interfaces, ring and buffer sizes, polling) are left as they are, with a warning.
fn apply_reload(
    running: &mut Running,
    config: &mut Config,
    slots: &mut Slots,
    new: Config,
) -> anyhow::Result<()> {
    let mut fixed = Vec::new();
    if new.interfaces != config.interfaces {
        fixed.push("[[interface]]");
    }
    let (old_c, new_c) = (&config.capture, &new.capture);
    if (old_c.ring_size, old_c.buffer_bytes, old_c.busy_poll_us, old_c.batch_delay_us)
        != (new_c.ring_size, new_c.buffer_bytes, new_c.busy_poll_us, new_c.batch_delay_us)
    {
        fixed.push("ring_size, buffer_bytes, busy_poll_us, batch_delay_us");
    }
    // Check everything before changing anything.
    let mut new_slots = slots.clone();
    let assigned = new_slots.assign(&new.targets)?;
    let tables = TargetTables::build(&new.capture, &new.targets, &assigned)?;
    for filter in &mut running.filters {
        filter.update(&tables).context("updating the BPF maps")?;
    }
    *slots = new_slots;
    config.targets = new.targets;
    config.capture.snaplen = new.capture.snaplen;
    config.capture.unmatched = new.capture.unmatched;
    config.output = new.output;
    let new_view = View::of(config, slots);
    if let Ok(mut view) = running.stats.view.write() {
        *view = new_view;
    }
    let _ = running
        .reconfigure
        .send((config.output.clone(), interface_infos(config, &sys::hostname())));
    log::info!(
        "reloaded: snaplen {}, unmatched {}, targets: {}; output settings apply from the next file",
        config.capture.snaplen,
        config.capture.unmatched,
        config.targets.iter().map(describe_target).collect::<Vec<_>>().join("; ")
    );
    if !fixed.is_empty() {
        log::warn!("reload: changes to {} take effect only after a restart", fixed.join("; "));
    }
    Ok(())
}

fn start(
    config: &Config,
    ifaces: &[ResolvedInterface],
    tables: &TargetTables,
    stream: Option<Box<dyn std::io::Write + Send>>,
    stop_after_packets: Option<u64>,
    control: &Control,
) -> anyhow::Result<Running> {
    let stop_workers = Stop::new().context("creating the workers' stop signal")?;
    let mut filters = Vec::new();
    let mut workers = Vec::new();
    let mut sources: Vec<Source> = Vec::new();
    let mut iface_stats = Vec::new();
    // On any error below, dropping `filters` and `workers` undoes what was done: nothing has
    // been attached yet, and the stop flag ends the workers.
    let result = (|| -> anyhow::Result<()> {
        for (if_id, iface) in (0u32..).zip(ifaces) {
            let mut filter = Filter::load(&iface.name, tables)
                .with_context(|| format!("preparing the XDP program for {}", iface.name))?;
            let mut queue_stats = Vec::new();
            for &queue in &iface.queues {
                let buffer = usize::try_from(config.capture.buffer_bytes).unwrap_or(usize::MAX);
                let (producer, consumer) = handoff::channel(buffer);
                let watermark = Arc::new(AtomicU64::new(0));
                let spec = WorkerSpec {
                    iface: iface.name.clone(),
                    queue,
                    ring_size: config.capture.ring_size,
                    watermark: Arc::clone(&watermark),
                    zero_copy: iface.zero_copy,
                    busy_poll_us: config.capture.busy_poll_us,
                    batch_delay_us: config.capture.batch_delay_us,
                };
                let (worker, fd, mode) = xsk::spawn(spec, producer, stop_workers.clone())
                    .map_err(anyhow::Error::msg)
                    .with_context(|| {
                        format!("opening the AF_XDP socket for {} RX queue {queue}", iface.name)
                    })?;
                log::info!(
                    "{} RX queue {queue}: AF_XDP socket bound in {} mode",
                    iface.name,
                    mode.as_str()
                );
                queue_stats.push(Arc::clone(&worker.stats));
                workers.push(worker);
                filter.register_socket(queue, fd).with_context(|| {
                    format!("registering the AF_XDP socket of {} queue {queue}", iface.name)
                })?;
                sources.push(Source { interface_id: if_id, consumer, watermark });
            }
            iface_stats.push(IfaceStats {
                kernel: filter.counters(),
                queues: queue_stats,
                delivered: AtomicU64::new(0),
            });
            filters.push(filter);
        }
        Ok(())
    })();
    if let Err(e) = result {
        stop_workers.raise();
        workers.into_iter().for_each(Worker::join);
        return Err(e);
    }

    let stats = Arc::new(Stats {
        start_ns: realtime_ns(),
        ifaces: iface_stats,
        writer_heartbeat_ms: AtomicU64::new(xsk::monotonic_ns() / 1_000_000),
        current_file: std::sync::Mutex::new(None),
        write_losses: AtomicU64::new(0),
        files_closed: AtomicU64::new(0),
        bytes_written: AtomicU64::new(0),
        view: std::sync::RwLock::new(View::default()),
    });
    let host = sys::hostname();
    let interfaces = interface_infos(config, &host);
    let stats_source = Box::new(SharedStats(Arc::clone(&stats)));
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
            stop_workers.raise();
            workers.into_iter().for_each(Worker::join);
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
                write_loop(writer, merger, buffer_bytes, &reconfigured, &stop, &stats, &ends)
            })
            .context("spawning the writer thread")?
    };

    // Last step: attach. Until here a failure changed nothing on the NICs.
    for (iface, filter) in ifaces.iter().zip(filters.iter_mut()) {
        if let Err(e) = filter.attach(iface.xdp_mode) {
            let running =
                Running { filters, workers, stop_workers, writer, writer_stop, reconfigure, stats };
            let _ = stop(running, config, &Slots::default());
            return Err(anyhow::Error::new(e));
        }
    }
    Ok(Running { filters, workers, stop_workers, writer, writer_stop, reconfigure, stats })
}

fn stop(mut running: Running, config: &Config, slots: &Slots) -> anyhow::Result<Summary> {
    for f in &mut running.filters {
        f.detach();
    }
    running.stop_workers.raise();
    for w in running.workers.drain(..) {
        w.join();
    }
    running.writer_stop.store(true, Relaxed);
    let summary = match running.writer.join() {
        Ok(r) => r,
        Err(_) => Err(anyhow::anyhow!("the writer thread panicked")),
    };
    log_status(config, slots, &running.stats);
    drop(running.filters);
    summary.map(|mut s| {
        s.interfaces = (0..running.stats.ifaces.len())
            .map(|i| {
                let st = running.stats.interface(i);
                let name = config.interfaces.get(i).map_or_else(String::new, |c| c.name.clone());
                (name, st.accepted, st.kernel_drops + st.user_drops)
            })
            .collect();
        s
    })
}

fn log_status(config: &Config, slots: &Slots, stats: &Stats) {
    for (i, iface) in config.interfaces.iter().enumerate() {
        let Some(s) = stats.ifaces.get(i) else { continue };
        let k = s.kernel.totals();
        let isb = stats.interface(i);
        let hits = s.kernel.target_frames();
        let per_target: Vec<String> = config
            .targets
            .iter()
            .map(|t| format!("{}={}", t.name, slots.slot_of(&t.name).map_or(0, |s| hits[s])))
            .collect();
        let queue_drops: u64 = s.queues.iter().map(|q| q.handoff_drops.load(Relaxed)).sum();
        log::info!(
            "{}: seen {} matched {} written {} | drops: kernel {} writer-queue {} write-errors {} \
             | no-socket {} runts {} cut-tags {} | per target: {}",
            iface.name,
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

/// The writer thread: merges every queue's hand-off ring into the rotating pcapng writer.
/// When the writer itself ends a run: after `limit` frames (`capture -c`), or when the reader
/// of its stream went away. It then asks the main loop to shut down, as a signal would.
struct Ends {
    limit: Option<u64>,
    control: Control,
}

fn write_loop(
    mut writer: Output,
    mut merger: Merger,
    buffer_bytes: u64,
    reconfigured: &mpsc::Receiver<(OutputConfig, Vec<InterfaceInfo>)>,
    stop: &AtomicBool,
    stats: &Stats,
    ends: &Ends,
) -> anyhow::Result<Summary> {
    let mut total = 0u64;
    let mut ended = false;
    // Counts of discarded frames; nobody reads them.
    let mut discarded = vec![0u64; stats.ifaces.len()];
    let mut nap = Nap::new(buffer_bytes / 4, WRITER_MAX_NAP_NS);
    // Bytes taken from the rings since the writer last slept.
    let mut round_bytes = 0u64;
    let mut last_tick = Instant::now();
    let mut reported_error = false;
    let mut delivered = vec![0u64; stats.ifaces.len()];
    loop {
        stats.writer_heartbeat_ms.store(xsk::monotonic_ns() / 1_000_000, Relaxed);
        let counters = writer.counters();
        stats.write_losses.store(counters.packets_lost_to_errors, Relaxed);
        stats.files_closed.store(counters.files_closed, Relaxed);
        stats.bytes_written.store(counters.bytes_written, Relaxed);
        // Before taking frames: the next file started after a reload follows the new settings.
        if let Ok((output, interfaces)) = reconfigured.try_recv()
            && let Err(e) = writer.reconfigure(output, &interfaces)
        {
            log::error!("reload: output settings not applied: {e}");
        }
        if let Ok(mut current) = stats.current_file.try_lock()
            && current.as_deref() != writer.current_path()
        {
            *current = writer.current_path().map(PathBuf::from);
        }
        // Past the frame limit, frames are taken and discarded: the run is ending.
        let room = ends
            .limit
            .map_or(usize::MAX, |l| usize::try_from(l.saturating_sub(total)).unwrap_or(usize::MAX));
        let round = if room == 0 {
            let mut discard = Discard;
            write_round(&mut merger, &mut discard, realtime_ns(), RECORDS_PER_ROUND, &mut discarded)
        } else {
            write_round(
                &mut merger,
                &mut writer,
                realtime_ns(),
                RECORDS_PER_ROUND.min(room),
                &mut delivered,
            )
        };
        let n = round.records;
        if room != 0 {
            total += n as u64;
        }
        if !ended && (ends.limit.is_some_and(|l| total >= l) || writer.finished()) {
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
            for (s, d) in stats.ifaces.iter().zip(delivered.iter_mut()) {
                if *d > 0 {
                    s.delivered.fetch_add(std::mem::take(d), Relaxed);
                }
            }
        }
        if last_tick.elapsed() >= Duration::from_millis(100) {
            if let Err(e) = writer.tick(realtime_ns()) {
                log::error!("rotating the output file: {}", crate::bpf::error_chain(&e));
            }
            last_tick = Instant::now();
        }
        if n < RECORDS_PER_ROUND {
            // Workers are joined before `stop` is set, so finished rings stay finished.
            if stop.load(Relaxed) && merger.is_finished() {
                break;
            }
            // Caught up: let records gather instead of waking for every few of them. An empty
            // round lengthens the pause too: idle, the writer wakes only for its ticks.
            let pause = nap.after_round(std::mem::take(&mut round_bytes));
            std::thread::sleep(pause);
        }
    }
    stats.write_losses.store(writer.counters().packets_lost_to_errors, Relaxed);
    let closed_before = writer.counters().files_closed;
    let last_file = writer.close(realtime_ns()).context("closing the output file")?;
    let handed: u64 = stats.ifaces.iter().map(|s| s.delivered.load(Relaxed)).sum();
    let frames_written = handed.saturating_sub(stats.write_losses.load(Relaxed));
    Ok(Summary {
        frames_written,
        files_closed: closed_before + u64::from(last_file.is_some()),
        last_file,
        interfaces: Vec::new(),
    })
}
