//! One captured interface as a unit: resolved from the config, its program, sockets and
//! workers opened, attached, and stopped on its own.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use anyhow::{Context as _, bail};

use capture_common::MAX_QUEUES;

use super::IfaceStats;
use crate::bpf::{Filter, Hooks, TargetTables, error_chain};
use crate::config::{CaptureConfig, Config, InterfaceConfig, Mode, Queues, XdpMode, ZeroCopy};
use crate::handoff::{self, Consumer, Producer};
use crate::source::afxdp::{self, WorkerSpec};
use crate::source::{Feed, QueueStats, Worker, realtime_ns, ring};
use crate::stop::Stop;
use crate::writer::Source;
use crate::{netdev, nic};

/// One capture interface, resolved and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedInterface {
    pub name: String,
    pub mode: Mode,
    /// Mirror mode: the RX queues with a socket. Tap mode: none (every queue, both directions).
    pub queues: Vec<u32>,
    /// Mirror mode: the RX queues the interface has (0 in tap mode).
    pub rx_queues: u32,
    pub xdp_mode: XdpMode,
    pub zero_copy: ZeroCopy,
}

/// Checks that each interface exists and has the queues the config asks for.
pub fn resolve_interfaces(config: &Config) -> anyhow::Result<Vec<ResolvedInterface>> {
    config.interfaces.iter().map(resolve_interface).collect()
}

/// Like [`resolve_interfaces`], but an interface that the host does not have (now) is returned
/// apart instead of failing: a NIC can come up after the daemon at boot.
pub fn resolve_present_interfaces(
    config: &Config,
) -> anyhow::Result<(Vec<ResolvedInterface>, Vec<InterfaceConfig>)> {
    let mut present = Vec::new();
    let mut absent = Vec::new();
    for i in &config.interfaces {
        match netdev::lookup(&i.name).with_context(|| format!("looking up interface {}", i.name))? {
            Some(_) => present.push(resolve_interface(i)?),
            None => absent.push(i.clone()),
        }
    }
    Ok((present, absent))
}

/// Checks that the interface exists and has the queues asked for.
pub fn resolve_interface(i: &InterfaceConfig) -> anyhow::Result<ResolvedInterface> {
    if i.mode == Mode::Tap {
        netdev::ifindex(&i.name)?;
        return Ok(ResolvedInterface {
            name: i.name.clone(),
            mode: i.mode,
            queues: Vec::new(),
            // Not used: a tap-mode capture sees every queue.
            rx_queues: 0,
            xdp_mode: i.xdp_mode,
            zero_copy: i.zero_copy,
        });
    }
    let rx_queues = netdev::rx_queue_count(&i.name)?;
    let queues: Vec<u32> = match &i.queues {
        // The XSKMAP has a socket per queue up to MAX_QUEUES; beyond, "all" cannot hold.
        Queues::All if rx_queues > MAX_QUEUES => bail!(
            "interface {}: it has {rx_queues} RX queues and at most {MAX_QUEUES} can be \
             captured; list the queues to capture (queues = [...])",
            i.name
        ),
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
        mode: i.mode,
        queues,
        rx_queues,
        xdp_mode: i.xdp_mode,
        zero_copy: i.zero_copy,
    })
}

/// The settings every socket of a run shares (`[capture]`); sockets opened with other settings
/// are reopened (their interface restarted) to apply new ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct SocketSettings {
    pub(super) ring_size: u32,
    pub(super) buffer_bytes: u64,
    pub(super) busy_poll_us: u32,
    pub(super) batch_delay_us: u32,
    pub(super) tap_ring_bytes: u64,
    pub(super) umem_reserved_huge_pages: bool,
}

impl SocketSettings {
    pub(super) fn of(c: &CaptureConfig) -> Self {
        SocketSettings {
            ring_size: c.ring_size,
            buffer_bytes: c.buffer_bytes,
            busy_poll_us: c.busy_poll_us,
            batch_delay_us: c.batch_delay_us,
            tap_ring_bytes: c.tap_ring_bytes,
            umem_reserved_huge_pages: c.umem_reserved_huge_pages,
        }
    }
}

/// Everything that captures on one interface: its XDP program, one socket and worker per RX
/// queue, and a stop signal of its own, so that a reload can stop one interface alone.
pub(super) struct IfaceRun {
    pub(super) spec: ResolvedInterface,
    /// The interface's index when it was opened: another index under the same name means the
    /// interface was deleted and another one created.
    pub(super) ifindex: u32,
    pub(super) settings: SocketSettings,
    pub(super) filter: Filter,
    pub(super) workers: Vec<Worker>,
    pub(super) stop: Stop,
    pub(super) stats: Arc<IfaceStats>,
    /// Keeps the interface promiscuous while it is captured (see [`netdev::hold_promiscuous`]).
    pub(super) promiscuous: Option<std::os::fd::OwnedFd>,
    /// Mirror mode: some socket is bound in zero-copy mode (which needs the driver's native XDP).
    zero_copy: bool,
    /// Mirror mode: the `no_meta` count already dealt with (see [`IfaceRun::check_metadata`]).
    no_meta_handled: u64,
}

impl IfaceRun {
    /// Loads the program, opens and registers the sockets. Nothing is attached: a failure here
    /// changes nothing on the NIC. Also returns the hand-off rings for the writer (their
    /// interface id is set by the caller).
    pub(super) fn open(
        spec: ResolvedInterface,
        settings: SocketSettings,
        tables: &TargetTables,
    ) -> anyhow::Result<(IfaceRun, Vec<Source>)> {
        let prepared = prepare(&spec, settings, tables)?;
        IfaceRun::open_with(prepared, spec, settings)
    }

    /// [`IfaceRun::open`] with what could be [`prepare`]d beforehand.
    pub(super) fn open_with(
        prepared: Prepared,
        spec: ResolvedInterface,
        settings: SocketSettings,
    ) -> anyhow::Result<(IfaceRun, Vec<Source>)> {
        let Prepared { mut filter, rings } = prepared;
        let stop = Stop::new().context("creating the workers' stop signal")?;
        let ifindex = netdev::ifindex(&spec.name)?;
        let opened = match spec.mode {
            Mode::Mirror => open_sockets(&spec, settings, &mut filter, rings, &stop),
            Mode::Tap => open_reader(&spec, &mut filter, rings, &stop),
        };
        let (workers, queues, sources, zero_copy) = opened?;
        let stats = Arc::new(IfaceStats {
            start_ns: realtime_ns(),
            name: spec.name.clone(),
            kernel: filter.counters(),
            queues,
            delivered: AtomicU64::new(0),
        });
        let promiscuous = netdev::hold_promiscuous(ifindex)
            .map_err(|e| {
                log::warn!(
                    "{}: cannot set promiscuous mode ({e}); only frames addressed to the host are \
                     seen",
                    spec.name
                );
            })
            .ok();
        Ok((
            IfaceRun {
                spec,
                ifindex,
                settings,
                filter,
                workers,
                stop,
                stats,
                promiscuous,
                zero_copy,
                no_meta_handled: 0,
            },
            sources,
        ))
    }

    /// Attaches the program: from here on matched frames are captured.
    pub(super) fn attach(&mut self, targets: &str) -> anyhow::Result<()> {
        let how = self.filter.attach(self.spec.xdp_mode)?;
        self.warn_offloads();
        let name = &self.spec.name;
        match self.spec.mode {
            Mode::Mirror => log::info!(
                "capturing on {name} in mirror mode (XDP {how}, RX queues {:?} of {}): {targets}",
                self.spec.queues,
                self.spec.rx_queues,
            ),
            Mode::Tap => log::info!(
                "capturing on {name} in tap mode ({how}, both directions; the traffic goes on \
                 untouched): {targets}"
            ),
        }
        Ok(())
    }

    /// Logs what the interface's offloads mean for the capture as now attached (`check` says
    /// it too, before attaching).
    fn warn_offloads(&self) {
        let name = &self.spec.name;
        let features = match netdev::features(name) {
            Ok(f) => f,
            Err(e) => {
                log::debug!("{name}: cannot read the offload features: {e}");
                return;
            }
        };
        let driver = netdev::driver(name).unwrap_or_default();
        let hook = nic::Hook::attached(self.spec.mode, self.filter.mode());
        let vlans = self.filter.has_vlan_targets();
        for f in nic::offloads(name, &driver, &features, hook, vlans) {
            if f.level == nic::Level::Warn {
                log::warn!("{name}: {}", f.text);
            }
        }
    }

    /// Mirror mode, about once a second: matched frames the program found no room for their
    /// metadata in front of (`bpf_xdp_adjust_meta` failed, counted in `no_meta`) were passed,
    /// not captured. Some drivers' native XDP has no metadata support, and the kernel says so
    /// nowhere but there, so the first matched frame is the probe. With `xdp_mode = "auto"` and
    /// copy-mode sockets the program moves to generic XDP, which always has the room; otherwise
    /// nothing can be captured here, which is logged once as an error.
    pub(super) fn check_metadata(&mut self) {
        if self.spec.mode != Mode::Mirror {
            return;
        }
        let lost = self.stats.kernel.totals().no_meta;
        if lost <= self.no_meta_handled {
            return;
        }
        let name = &self.spec.name;
        let driver = netdev::driver(name).unwrap_or_else(|| "unknown".into());
        let how = self.filter.mode().unwrap_or("detached");
        let why = format!(
            "{name}: the driver ({driver}) gives {how} XDP no room for the frame's metadata \
             (bpf_xdp_adjust_meta failed); {lost} matched frame(s) were passed, not captured"
        );
        if how == "native" && self.spec.xdp_mode == XdpMode::Auto && !self.zero_copy {
            log::warn!("{why}; attaching in generic XDP mode, which has the room (slower)");
            match self.filter.reattach(XdpMode::Generic) {
                Ok(_) => {
                    log::info!("{name}: capturing in generic XDP mode");
                    self.warn_offloads();
                    self.no_meta_handled = self.stats.kernel.totals().no_meta;
                    return;
                }
                Err(e) => {
                    log::error!("{name}: attaching in generic XDP mode: {}", error_chain(&e));
                    if let Err(e) = self.filter.reattach(self.spec.xdp_mode) {
                        log::error!("{name}: attaching again: {}; not captured", error_chain(&e));
                    }
                }
            }
        } else {
            let fix = if self.zero_copy {
                "zero-copy sockets need native XDP: set zero_copy = \"off\" and xdp_mode = \
                 \"auto\" (or \"generic\"), or use mode = \"tap\""
            } else {
                "set xdp_mode = \"auto\" or \"generic\", or use mode = \"tap\""
            };
            log::error!("{why}: nothing is captured here; {fix}");
        }
        // Said once: the count goes on in capture_drops_total{stage="xdp_no_metadata"}.
        self.no_meta_handled = u64::MAX;
    }

    /// [`IfaceRun::open`] then [`IfaceRun::attach`], undone if attaching fails.
    pub(super) fn start(
        spec: ResolvedInterface,
        settings: SocketSettings,
        tables: &TargetTables,
        targets: &str,
    ) -> anyhow::Result<(IfaceRun, Vec<Source>)> {
        let prepared = prepare(&spec, settings, tables)?;
        IfaceRun::start_with(prepared, spec, settings, targets)
    }

    /// [`IfaceRun::start`] with what could be [`prepare`]d beforehand.
    pub(super) fn start_with(
        prepared: Prepared,
        spec: ResolvedInterface,
        settings: SocketSettings,
        targets: &str,
    ) -> anyhow::Result<(IfaceRun, Vec<Source>)> {
        let (mut run, sources) = IfaceRun::open_with(prepared, spec, settings)?;
        if let Err(e) = run.attach(targets) {
            finish_all(vec![run]);
            return Err(e);
        }
        Ok((run, sources))
    }
}

/// The workers, their counters and the writer's rings of one interface, and whether a socket
/// is bound in zero-copy mode.
type Opened = (Vec<Worker>, Vec<(u32, Arc<QueueStats>)>, Vec<Source>, bool);

/// Mirror mode: one AF_XDP socket and worker per RX queue, registered in the XSKMAP. On an error,
/// `stop` ends the workers started so far.
fn open_sockets(
    spec: &ResolvedInterface,
    settings: SocketSettings,
    filter: &mut Filter,
    rings: Vec<(Producer, Consumer)>,
    stop: &Stop,
) -> anyhow::Result<Opened> {
    let mut workers = Vec::new();
    let mut sources = Vec::new();
    let mut queues = Vec::new();
    let mut zero_copy = false;
    let result = (|| -> anyhow::Result<()> {
        // The XDP program cuts frames to what the sockets take whole (0: any length).
        let mut frame_limit = 0;
        for (&queue, (producer, consumer)) in spec.queues.iter().zip(rings) {
            let watermark = Arc::new(AtomicU64::new(0));
            let worker_spec = WorkerSpec {
                iface: spec.name.clone(),
                queue,
                ring_size: settings.ring_size,
                zero_copy: spec.zero_copy,
                busy_poll_us: settings.busy_poll_us,
                batch_delay_us: settings.batch_delay_us,
                umem_reserved_huge_pages: settings.umem_reserved_huge_pages,
            };
            let feed = Feed::new(producer, Arc::clone(&watermark), Arc::new(QueueStats::default()));
            let (worker, fd, binding) = afxdp::spawn(worker_spec, feed, stop.clone())
                .map_err(anyhow::Error::msg)
                .with_context(|| {
                    format!("opening the AF_XDP socket for {} RX queue {queue}", spec.name)
                })?;
            log::info!(
                "{} RX queue {queue}: AF_XDP socket bound in {}",
                spec.name,
                binding.describe()
            );
            frame_limit = frame_limit.max(binding.frame_limit());
            zero_copy |= binding.mode == afxdp::BindMode::ZeroCopy;
            queues.push((queue, Arc::clone(&worker.stats)));
            workers.push(worker);
            filter.register_socket(queue, fd).with_context(|| {
                format!("registering the AF_XDP socket of {} queue {queue}", spec.name)
            })?;
            sources.push(Source { interface_id: 0, consumer, watermark, read_together: false });
        }
        filter.set_frame_limit(frame_limit).with_context(|| {
            format!("setting the longest frame the sockets of {} take", spec.name)
        })?;
        Ok(())
    })();
    if let Err(e) = result {
        stop.raise();
        workers.into_iter().for_each(Worker::join);
        return Err(e);
    }
    Ok((workers, queues, sources, zero_copy))
}

/// Tap mode: one reader for the interface's per-CPU rings, a hand-off ring for each. Its
/// counters are listed per CPU (the `queue` label of the metrics).
fn open_reader(
    spec: &ResolvedInterface,
    filter: &mut Filter,
    rings: Vec<(Producer, Consumer)>,
    stop: &Stop,
) -> anyhow::Result<Opened> {
    let cpu_rings = filter.take_rings();
    let mut feeds = Vec::new();
    let mut queues = Vec::new();
    let mut sources = Vec::new();
    for (cpu, (producer, consumer)) in (0u32..).zip(rings) {
        let watermark = Arc::new(AtomicU64::new(0));
        let stats = Arc::new(QueueStats::default());
        queues.push((cpu, Arc::clone(&stats)));
        feeds.push(Feed::new(producer, Arc::clone(&watermark), stats));
        sources.push(Source { interface_id: 0, consumer, watermark, read_together: true });
    }
    let cpus = cpu_rings.len();
    let worker = ring::spawn(&spec.name, cpu_rings, feeds, stop.clone())
        .map_err(anyhow::Error::msg)
        .with_context(|| format!("reading the ring buffers of {}", spec.name))?;
    log::debug!("{}: {cpus} per-CPU ring buffers, read by one thread", spec.name);
    Ok((vec![worker], queues, sources, false))
}

/// What can be made for an interface without touching it: its program, loaded (the verifier
/// runs here) with `tables` in its maps, and one hand-off ring per queue (whose memory is
/// written once on creation: tens of milliseconds for the default 64 MiB). A restart prepares
/// these before it stops the old sockets, so that its gap is only the sockets.
pub(super) struct Prepared {
    filter: Filter,
    rings: Vec<(Producer, Consumer)>,
}

pub(super) fn prepare(
    spec: &ResolvedInterface,
    settings: SocketSettings,
    tables: &TargetTables,
) -> anyhow::Result<Prepared> {
    let name = &spec.name;
    let hooks = match spec.mode {
        Mode::Mirror => Hooks::Mirror,
        Mode::Tap => Hooks::Tap { ring_bytes: settings.tap_ring_bytes },
    };
    let filter = Filter::load(name, hooks, tables)
        .with_context(|| format!("preparing the {} programs for {name}", spec.mode))?;
    let buffer = usize::try_from(settings.buffer_bytes).unwrap_or(usize::MAX);
    let rings = match spec.mode {
        Mode::Mirror => spec.queues.iter().map(|_| handoff::channel(buffer)).collect(),
        // One per CPU ring, sharing the interface's budget (at least 1 MiB each).
        Mode::Tap => {
            let cpus = filter.ring_count().max(1);
            let each = (buffer / cpus).max(1 << 20);
            (0..cpus).map(|_| handoff::channel(each)).collect()
        }
    };
    Ok(Prepared { filter, rings })
}

/// Stops capturing on `runs`: every program is detached first (each NIC is back to normal at
/// once), then the workers drain their rings and exit, closing their sockets.
pub(super) fn finish_all(mut runs: Vec<IfaceRun>) {
    for r in &mut runs {
        r.filter.detach();
        // Promiscuous mode goes with the capture.
        drop(r.promiscuous.take());
    }
    for r in &runs {
        r.stop.raise();
    }
    for r in runs {
        r.workers.into_iter().for_each(Worker::join);
    }
}
