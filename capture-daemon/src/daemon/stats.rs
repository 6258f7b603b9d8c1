//! What the daemon counts, per interface and overall: the pcapng statistics blocks, the
//! Prometheus exposition, systemd's status line and the watchdog's health check read it.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, RwLock};

use crate::bpf::{KernelCounters, Slots, VmMacs};
use crate::config::Config;
use crate::metrics::exposition::Exposition;
use crate::source::{self, QueueStats, realtime_ns};
use crate::sys;
use crate::writer::{InterfaceStats, StatsSource};

/// Per-interface statistics, shared by the writer (pcapng ISB), the metrics and the status log.
/// An interface that a reload adds or restarts gets new ones.
pub(super) struct IfaceStats {
    /// Wall-clock ns when capture on it started (pcapng isb_starttime).
    pub(super) start_ns: u64,
    pub(super) name: String,
    pub(super) kernel: Arc<KernelCounters>,
    /// Per captured RX queue: its number and its worker's counters.
    pub(super) queues: Vec<(u32, Arc<QueueStats>)>,
    /// Frames of this interface written to files.
    pub(super) delivered: AtomicU64,
}

pub(super) struct Stats {
    /// The interfaces captured now, in the config's order; replaced on reload.
    pub(super) ifaces: RwLock<Vec<Arc<IfaceStats>>>,
    /// CLOCK_MONOTONIC ms when the writer last went round its loop (see `QueueStats`).
    pub(super) writer_heartbeat_ms: AtomicU64,
    /// The file being written, for status lines.
    pub(super) current_file: std::sync::Mutex<Option<PathBuf>>,
    /// Frames the writer could not write (full disk, I/O errors), all interfaces together.
    pub(super) write_losses: AtomicU64,
    pub(super) files_closed: AtomicU64,
    /// Frames written and frames dropped on interfaces no longer captured (removed by a
    /// reload, restarted, vanished), so that totals never go backwards.
    pub(super) retired_frames: AtomicU64,
    pub(super) retired_drops: AtomicU64,
    pub(super) bytes_written: AtomicU64,
    /// Each stream of files now written (prefix, counters), the shared one first; refreshed by
    /// the writer every 100 ms.
    pub(super) streams: std::sync::Mutex<Vec<(String, crate::writer::WriterCounters)>>,
    /// Names for the metrics' labels; replaced on reload.
    pub(super) view: RwLock<View>,
    /// Whether the last reload was applied (true until one is rejected).
    pub(super) last_reload_ok: AtomicBool,
    /// Wall-clock seconds when the running configuration was loaded.
    pub(super) config_loaded_s: AtomicU64,
}

/// What the metrics call things: targets with their slots, and where files go.
#[derive(Default)]
pub(super) struct View {
    pub(super) targets: Vec<(String, usize)>,
    pub(super) directory: PathBuf,
    /// Configured interfaces not captured now.
    pub(super) missing: Vec<String>,
    /// Per `vm` target: (target, vm, present on this host).
    pub(super) vms: Vec<(String, String, bool)>,
}

impl View {
    pub(super) fn of(config: &Config, slots: &Slots, vms: &VmMacs) -> View {
        View {
            targets: config
                .targets
                .iter()
                .filter_map(|t| Some((t.name.clone(), slots.slot_of(&t.name)?)))
                .collect(),
            directory: config.output.directory.clone(),
            missing: Vec::new(),
            vms: super::vms::presence(config, vms),
        }
    }
}

/// The Prometheus exposition of every counter (docs/operations.md lists them).
pub(super) fn render_metrics(stats: &Stats) -> String {
    let mut e = Exposition::default();
    let view = stats
        .view
        .read()
        .map(|v| (v.targets.clone(), v.directory.clone(), v.missing.clone(), v.vms.clone()));
    let Ok((targets, directory, missing, vms)) = view else { return String::new() };
    e.sample("capture_up", "gauge", "1 while the daemon captures.", &[], 1.0);
    for (target, vm, present) in &vms {
        e.sample(
            "capture_target_vm_present",
            "gauge",
            "1 while the vm target's VM runs on this host (its MACs are matched), 0 while it is \
             absent (the target matches nothing).",
            &[("target", target), ("vm", vm)],
            if *present { 1.0 } else { 0.0 },
        );
    }
    e.sample(
        "capture_config_last_reload_successful",
        "gauge",
        "1 if the last reload was applied, 0 if it was rejected (the previous configuration runs).",
        &[],
        if stats.last_reload_ok.load(Relaxed) { 1.0 } else { 0.0 },
    );
    e.sample(
        "capture_config_last_reload_success_timestamp_seconds",
        "gauge",
        "When the running configuration was loaded (at start or by the last reload applied).",
        &[],
        stats.config_loaded_s.load(Relaxed) as f64,
    );
    let up_help = "1 while the interface is captured, 0 while it is configured but missing.";
    let captured = stats.interfaces();
    // The two lists are updated one after the other: an interface in both is captured.
    for name in missing.iter().filter(|m| !captured.iter().any(|s| &s.name == *m)) {
        e.sample("capture_interface_up", "gauge", up_help, &[("interface", name)], 0.0);
    }
    for s in captured {
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
        counter(
            &mut e,
            "capture_frames_encapsulated_total",
            "Frames to a VXLAN/Geneve port with whole tunnel and inner Ethernet headers (while \
             a target has a vni).",
            k.encapsulated,
        );
        counter(
            &mut e,
            "capture_frames_encap_malformed_total",
            "Frames to a VXLAN/Geneve port whose tunnel or inner Ethernet header is cut short or \
             invalid.",
            k.encap_malformed,
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
            ("xdp_no_metadata", k.no_meta),
            ("ring_full", k.ring_full),
            ("ring_missing", k.no_ring),
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
    let streams = stats.streams.lock().map(|s| s.clone()).unwrap_or_default();
    for (stream, c) in &streams {
        let labels = [("stream", stream.as_str())];
        e.sample(
            "capture_stream_frames_written_total",
            "counter",
            "Frames written to each stream of files (label stream: the file name prefix).",
            &labels,
            c.packets_written as f64,
        );
        e.sample(
            "capture_stream_bytes_written_total",
            "counter",
            "Bytes written to each stream of files.",
            &labels,
            c.bytes_written as f64,
        );
        e.sample(
            "capture_stream_files_closed_total",
            "counter",
            "Files finished in each stream.",
            &labels,
            c.files_closed as f64,
        );
    }
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
pub(super) const HEARTBEAT_STALE_MS: u64 = 10_000;

impl Stats {
    /// Counters of a run that starts capturing `ifaces`.
    pub(super) fn new(ifaces: Vec<Arc<IfaceStats>>) -> Stats {
        Stats {
            ifaces: RwLock::new(ifaces),
            writer_heartbeat_ms: AtomicU64::new(source::monotonic_ns() / 1_000_000),
            current_file: std::sync::Mutex::new(None),
            write_losses: AtomicU64::new(0),
            files_closed: AtomicU64::new(0),
            retired_frames: AtomicU64::new(0),
            retired_drops: AtomicU64::new(0),
            bytes_written: AtomicU64::new(0),
            streams: std::sync::Mutex::new(Vec::new()),
            view: RwLock::new(View::default()),
            last_reload_ok: AtomicBool::new(true),
            config_loaded_s: AtomicU64::new(realtime_ns() / 1_000_000_000),
        }
    }

    /// The interfaces captured now.
    pub(super) fn interfaces(&self) -> Vec<Arc<IfaceStats>> {
        self.ifaces.read().map(|v| v.clone()).unwrap_or_default()
    }

    /// Why the daemon is unhealthy, if it is: a worker or the writer stopped going round.
    pub(super) fn unhealthy(&self) -> Option<String> {
        let now = source::monotonic_ns() / 1_000_000;
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
    pub(super) fn summary(&self) -> String {
        let mut written = self.retired_frames.load(Relaxed);
        let mut drops = self.retired_drops.load(Relaxed);
        for (i, s) in self.interfaces().iter().enumerate() {
            let s = self.interface_stats(s, i == 0);
            written += s.delivered;
            drops += s.kernel_drops + s.user_drops;
        }
        let file = self.current_file.lock().ok().and_then(|f| f.clone());
        let missing = self.view.read().map(|v| v.missing.join(", ")).unwrap_or_default();
        format!(
            "{}{written} frames written, {drops} dropped; {}{}",
            if self.last_reload_ok.load(Relaxed) {
                ""
            } else {
                "RELOAD REJECTED, the previous configuration runs (see the log); "
            },
            file.map_or_else(|| "no file open".to_owned(), |f| format!("writing {}", f.display())),
            if missing.is_empty() { String::new() } else { format!("; NOT CAPTURED: {missing}") }
        )
    }

    /// Records a reload's outcome, for the metrics and the status line.
    pub(super) fn reloaded(&self, applied: bool) {
        self.last_reload_ok.store(applied, Relaxed);
        if applied {
            self.config_loaded_s.store(realtime_ns() / 1_000_000_000, Relaxed);
        }
    }

    /// Adds the totals of an interface that is no longer captured to the retired counts.
    pub(super) fn retire(&self, s: &IfaceStats) {
        let st = self.interface_stats(s, false);
        self.retired_frames.fetch_add(st.delivered, Relaxed);
        self.retired_drops.fetch_add(st.kernel_drops + st.user_drops, Relaxed);
    }

    /// The pcapng statistics of one interface; `first` is the first of its file.
    pub(super) fn interface_stats(&self, s: &IfaceStats, first: bool) -> InterfaceStats {
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
            start_ns: s.start_ns,
            end_ns: realtime_ns(),
            received: k.seen,
            kernel_drops: socket_drops
                + k.redirect_failed
                + k.adjust_failed
                + k.no_meta
                + k.ring_full
                + k.no_ring,
            accepted: k.matched,
            delivered: s.delivered.load(Relaxed),
            user_drops,
        }
    }
}

/// The statistics behind one file's Interface Statistics Blocks: its interfaces, by file id.
pub(super) struct FileStats {
    pub(super) stats: Arc<Stats>,
    pub(super) ifaces: Vec<Arc<IfaceStats>>,
}

impl StatsSource for FileStats {
    fn stats(&self, interface_id: u32) -> InterfaceStats {
        self.ifaces
            .get(interface_id as usize)
            .map(|s| self.stats.interface_stats(s, interface_id == 0))
            .unwrap_or_default()
    }
}
