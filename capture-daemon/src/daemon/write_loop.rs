//! The writer thread: takes frames from every hand-off ring in time order and writes them,
//! switching files when a reload changes the interfaces.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use anyhow::Context as _;

use super::{Control, FileStats, IfaceStats, Stats, Summary};
use crate::config::OutputConfig;
use crate::handoff::Waker;
use crate::nap::Nap;
use crate::source;
use crate::writer::{
    InterfaceInfo, Merger, Output, PacketSink, RECORDS_PER_ROUND, Source, TargetRoute, WriterClock,
    WriterError, write_round, write_round_before,
};

/// Longest pause of the writer once it has caught up with every queue. At 10 Gb/s a 64 MiB
/// hand-off ring fills in about 50 ms, so the pause does not decide alone: a ring that fills
/// past a quarter wakes the writer at once (`handoff::WAKE_FILL`), and the pause shrinks when
/// rounds bring more than a quarter of a ring. The output is flushed once a second anyway.
pub(super) const WRITER_MAX_NAP_NS: u64 = 100_000_000;
/// How often the writer's output gets its housekeeping (time rotation, the 1 s flush).
const TICK_NS: u64 = 100_000_000;
/// Takes records and keeps none (frames beyond `capture -c`).
pub(super) struct Discard;

impl PacketSink for Discard {
    fn write_packet(
        &mut self,
        _: u32,
        _: u64,
        _: &[u8],
        _: u32,
        _: u32,
        _: u64,
    ) -> Result<(), WriterError> {
        Ok(())
    }
}

/// Bytes a record takes in a hand-off ring besides the frame (header and padding, roughly).
pub(super) const HANDOFF_RECORD_OVERHEAD: u64 = 36;

/// What the main thread tells the writer after a reload.
pub(super) struct Reconfigure {
    pub(super) output: OutputConfig,
    pub(super) infos: Vec<InterfaceInfo>,
    /// The targets, in config order: the packets' comments, the streams of own targets.
    pub(super) targets: Vec<TargetRoute>,
    /// When the reload happened (CLOCK_MONOTONIC): frames stamped before it are written by the
    /// settings and targets before it.
    pub(super) at_ns: u64,
    /// Set when interfaces were added, removed or restarted.
    pub(super) interfaces: Option<InterfaceChange>,
}

pub(super) struct InterfaceChange {
    /// The interfaces from now on, in file order: an interface's pcapng id is its index here.
    pub(super) ifaces: Vec<Arc<IfaceStats>>,
    /// The rings of the interfaces new to the list, with their ids set.
    pub(super) sources: Vec<Source>,
}

/// When the writer itself ends a run: after `limit` frames (`capture -c`), or when the reader
/// of its stream went away. It then asks the main loop to shut down, as a signal would.
pub(super) struct Ends {
    pub(super) limit: Option<u64>,
    pub(super) control: Control,
}

/// What the writer thread owns: the output, the rings it merges, and the interfaces of the
/// current file (a ring's interface id indexes `ifaces`).
pub(super) struct WriterState {
    pub(super) output: Output,
    pub(super) merger: Merger,
    pub(super) ifaces: Vec<Arc<IfaceStats>>,
    /// Monotonic time for every decision, and the one offset that makes timestamps wall-clock.
    pub(super) clock: WriterClock,
    /// The pause once caught up ([`writer_nap`]).
    pub(super) nap: Nap,
    /// What the writer sleeps on: rings filling past a quarter wake it, and so does the stop.
    pub(super) waker: Arc<Waker>,
}

/// The writer's pauses: aiming at a quarter of a hand-off ring of `buffer_bytes` per round.
pub(super) fn writer_nap(buffer_bytes: u64) -> Nap {
    Nap::new(buffer_bytes / 4, WRITER_MAX_NAP_NS)
}

/// How long a reload's new targets wait for the frames stamped before the reload to be
/// written (a lone tap interface's idle reader vouches for its rings once a second).
const ROUTES_WAIT: Duration = Duration::from_secs(2);

/// How long the writer waits for the rings of removed interfaces to empty before it switches
/// files without their last frames.
pub(super) const DRAIN_REMOVED_TIMEOUT: Duration = Duration::from_secs(10);

impl WriterState {
    /// Moves to a new set of interfaces, once the rings of the removed ones have been written
    /// out (their workers are gone, so that happens within the merge window). Returns the
    /// command back while that is not done yet.
    pub(super) fn switch_interfaces(
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
            // Counted where a frame lost between a worker and the writer is counted.
            for id in removed {
                let lost = self.merger.discard(id);
                let iface = &self.ifaces[id as usize];
                log::warn!("reload: {lost} frame(s) still queued for {} are dropped", iface.name);
                if let Some((_, q)) = iface.queues.first() {
                    q.handoff_drops.fetch_add(lost, Relaxed);
                }
            }
        }
        let Reconfigure { output, infos, targets, interfaces, .. } = cmd;
        let change = interfaces?;
        let file_stats =
            Box::new(FileStats { stats: Arc::clone(stats), ifaces: change.ifaces.clone() });
        if let Err(e) = self.output.switch_interfaces(output.clone(), &infos, file_stats) {
            log::error!("reload: the new interfaces are not described in the files: {e}");
        }
        if let Err(e) = self.output.reconfigure(output, &infos, &targets) {
            log::error!("reload: output settings not applied: {e}");
        }
        self.merger
            .change_sources(|id| new_ids.get(id as usize).copied().flatten(), change.sources);
        for (old, _) in self.ifaces.iter().zip(&new_ids).filter(|(_, id)| id.is_none()) {
            stats.retire(old);
        }
        self.ifaces = change.ifaces;
        None
    }
}

/// The writer thread: merges every queue's hand-off ring into the rotating pcapng writer. Set
/// `stop` and wake `state.waker` to end it.
pub(super) fn write_loop(
    mut state: WriterState,
    reconfigured: &mpsc::Receiver<Reconfigure>,
    stop: &AtomicBool,
    stats: &Arc<Stats>,
    ends: &Ends,
) -> anyhow::Result<Summary> {
    let mut total = 0u64;
    let mut ended = false;
    state.merger.wake_on_fill(&state.waker);
    // Bytes taken from the rings since the writer last slept.
    let mut round_bytes = 0u64;
    let mut last_tick_ns = state.clock.now().mono_ns;
    let mut reported_error = false;
    // Frames written per interface id since they were last added to the shared counters.
    let mut delivered = vec![0u64; state.ifaces.len()];
    // Frames handed to the output over the whole run, interfaces removed since included.
    let mut handed = 0u64;
    // A change of interfaces waiting for the rings of removed ones to empty, and since when.
    let mut switching: Option<(Reconfigure, Instant)> = None;
    // New settings and targets waiting for the frames from before their reload to be written.
    let mut waiting: Option<(Reconfigure, Instant)> = None;
    loop {
        stats.writer_heartbeat_ms.store(source::monotonic_ns() / 1_000_000, Relaxed);
        let counters = state.output.counters();
        stats.write_losses.store(counters.packets_lost_to_errors, Relaxed);
        stats.files_closed.store(counters.files_closed, Relaxed);
        stats.bytes_written.store(counters.bytes_written, Relaxed);
        // Before taking frames: the next file started after a reload follows the new settings.
        // Every waiting command is taken, up to a change of interfaces (which waits for the
        // rings of removed interfaces to drain before the next one may apply).
        while switching.is_none()
            && let Ok(cmd) = reconfigured.try_recv()
        {
            accept(&mut state, &mut switching, &mut waiting, cmd);
        }
        if let Some((cmd, since)) = waiting.take() {
            if state.merger.has_passed(cmd.at_ns) || since.elapsed() >= ROUTES_WAIT {
                apply(&mut state, cmd);
            } else {
                waiting = Some((cmd, since));
            }
        }
        // Until then, only frames from before the reload are written.
        let before_ns = waiting.as_ref().map_or(u64::MAX, |(cmd, _)| cmd.at_ns);
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
        let now = state.clock.now();
        let round = if room == 0 {
            let mut discarded = vec![0u64; state.ifaces.len()];
            write_round(&mut state.merger, &mut Discard, now, RECORDS_PER_ROUND, &mut discarded)
        } else {
            write_round_before(
                &mut state.merger,
                &mut state.output,
                now,
                RECORDS_PER_ROUND.min(room),
                before_ns,
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
        if now.mono_ns.saturating_sub(last_tick_ns) >= TICK_NS {
            if let Err(e) = state.output.tick(now) {
                log::error!("rotating the output file: {}", crate::bpf::error_chain(&e));
            }
            if let Output::Files(streams) = &state.output
                && let Ok(mut per_stream) = stats.streams.try_lock()
            {
                *per_stream = streams.per_stream();
            }
            last_tick_ns = now.mono_ns;
        }
        if n < RECORDS_PER_ROUND {
            // Workers are joined before `stop` is set, so finished rings stay finished; and
            // commands are sent before it, so the channel is empty for good once stop is seen
            // and then the channel read empty. Rings that a command brings must be written
            // too, so the loop ends only with no command left.
            if stop.load(Relaxed)
                && switching.is_none()
                && waiting.is_none()
                && state.merger.is_finished()
            {
                match reconfigured.try_recv() {
                    Ok(cmd) => accept(&mut state, &mut switching, &mut waiting, cmd),
                    Err(_) => break,
                }
            }
            // Caught up: let records gather instead of waking for every few of them. An empty
            // round lengthens the pause too: idle, the writer wakes only for its ticks. A ring
            // filling past a quarter ends the pause early. While removed interfaces drain, it
            // looks again soon.
            let mut pause = state.nap.after_round(std::mem::take(&mut round_bytes));
            if switching.is_some() {
                pause = pause.min(Duration::from_millis(1));
            }
            if waiting.is_some() {
                pause = pause.min(Duration::from_millis(10));
            }
            state.waker.wait(pause);
        }
    }
    stats.write_losses.store(state.output.counters().packets_lost_to_errors, Relaxed);
    let (last_file, counters) =
        state.output.close(state.clock.now()).context("closing the output file")?;
    let frames_written = handed.saturating_sub(stats.write_losses.load(Relaxed));
    Ok(Summary {
        frames_written,
        files_closed: counters.files_closed,
        last_file,
        interfaces: Vec::new(),
    })
}

/// Takes a command: a change of interfaces as the pending switch; other settings and targets
/// as waiting for the frames from before the reload (an earlier one still waiting applies now).
fn accept(
    state: &mut WriterState,
    switching: &mut Option<(Reconfigure, Instant)>,
    waiting: &mut Option<(Reconfigure, Instant)>,
    cmd: Reconfigure,
) {
    if let Some((earlier, _)) = waiting.take() {
        apply(state, earlier);
    }
    if cmd.interfaces.is_some() {
        *switching = Some((cmd, Instant::now()));
    } else {
        *waiting = Some((cmd, Instant::now()));
    }
}

/// New output settings (from the next file on) and targets (comments, own streams) now.
fn apply(state: &mut WriterState, cmd: Reconfigure) {
    if let Err(e) = state.output.reconfigure(cmd.output, &cmd.infos, &cmd.targets) {
        log::error!("reload: output settings not applied: {e}");
    }
}

/// Adds the writer's per-interface counts to the shared counters and zeroes them. Returns
/// how many frames that was.
pub(super) fn add_delivered(ifaces: &[Arc<IfaceStats>], delivered: &mut [u64]) -> u64 {
    let mut sum = 0;
    for (s, d) in ifaces.iter().zip(delivered.iter_mut()) {
        if *d > 0 {
            sum += *d;
            s.delivered.fetch_add(std::mem::take(d), Relaxed);
        }
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bpf::KernelCounters;
    use crate::handoff::channel;
    use crate::source::{Feed, QueueStats};
    use crate::writer::clock::tests::TestClock;
    use crate::writer::merge::DEFAULT_WINDOW_NS;
    use crate::writer::{SectionInfo, StreamWriter};
    use std::sync::atomic::AtomicU64;

    const HOUR_NS: u64 = 3600 * 1_000_000_000;

    /// A writer sleeping in a pause far longer than a ring takes to fill (an hour), and a
    /// worker that fills its ring in bursts up to the wake-up mark, waiting after each burst
    /// for the writer to take it. Only the ring's wake-up can end the pause: every burst is
    /// taken, none is lost, and the writer never sleeps the pause out.
    #[test]
    fn a_ring_filling_past_a_quarter_ends_the_writers_pause() {
        const RING: usize = 1 << 16;
        const FRAME: u32 = 992;
        /// Records of 1024 ring bytes: the 16th reaches the mark (a quarter, 16 KiB).
        const BURST: u64 = (RING / crate::handoff::WAKE_FILL / 1024) as u64;
        const BURSTS: u64 = 40;
        let (producer, consumer) = channel(RING);
        let queue = Arc::new(QueueStats::default());
        let iface = Arc::new(IfaceStats {
            start_ns: 0,
            name: "t0".into(),
            kernel: Arc::new(KernelCounters::none()),
            queues: vec![(0, Arc::clone(&queue))],
            delivered: AtomicU64::new(0),
        });
        let stats = Arc::new(Stats::new(vec![Arc::clone(&iface)]));
        let file_stats = FileStats { stats: Arc::clone(&stats), ifaces: vec![Arc::clone(&iface)] };
        let section = SectionInfo { hardware: "t".into(), os: "t".into(), application: "t".into() };
        let info = InterfaceInfo { name: "t0".into(), description: "t".into(), snaplen: 0 };
        let output =
            StreamWriter::open(Box::new(std::io::sink()), &section, &[info], Box::new(file_stats))
                .unwrap();
        // Rounds bring less than half of the nap's target, so the pause stays at its ceiling.
        let mut nap = Nap::new(4 * RING as u64, HOUR_NS);
        while nap.after_round(0) < Duration::from_nanos(HOUR_NS) {}
        let waker = Waker::new().unwrap();
        let source =
            Source { interface_id: 0, consumer, watermark: Arc::default(), read_together: false };
        let state = WriterState {
            output: Output::Stream(output, crate::writer::Comments::default()),
            merger: Merger::new(vec![source], DEFAULT_WINDOW_NS),
            ifaces: vec![Arc::clone(&iface)],
            clock: WriterClock::new(Box::new(TestClock::default())),
            nap,
            waker: Arc::clone(&waker),
        };
        let stop = Arc::new(AtomicBool::new(false));
        let (_commands, reconfigured) = mpsc::channel();
        let ends = Ends { limit: None, control: Control::new().unwrap() };
        let writer = {
            let (stop, stats) = (Arc::clone(&stop), Arc::clone(&stats));
            std::thread::spawn(move || write_loop(state, &reconfigured, &stop, &stats, &ends))
        };

        let mut feed = Feed::new(producer, Arc::default(), Arc::clone(&queue));
        let mut pushed = 0;
        for burst in 0..BURSTS {
            for _ in 0..BURST {
                feed.push(pushed, FRAME, 0, 0, &[0; FRAME as usize]);
                pushed += 1;
                feed.publish();
            }
            // Far below the pause: a guard against hanging for an hour, not a speed limit.
            let deadline = Instant::now() + Duration::from_secs(60);
            while iface.delivered.load(Relaxed) < pushed {
                assert!(
                    Instant::now() < deadline,
                    "burst {burst}: the writer slept on with the ring past its wake-up mark"
                );
                std::thread::sleep(Duration::from_micros(100));
            }
        }
        assert_eq!(queue.handoff_drops.load(Relaxed), 0);
        drop(feed);
        stop.store(true, Relaxed);
        waker.wake();
        let summary = writer.join().unwrap().unwrap();
        assert_eq!(summary.frames_written, BURST * BURSTS);
    }
}
