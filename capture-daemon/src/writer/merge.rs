//! Merges the hand-off rings of several RX queues into one stream in timestamp order.
//!
//! Each queue is in order by itself (one RX queue is served by one CPU at a time). Across queues,
//! the writer takes the oldest head record, but only once every other queue has shown it holds
//! nothing older: either its own head is newer, or its *watermark* (a time up to which its worker
//! has delivered everything) has passed the record. A queue that says nothing for `window_ns`
//! stops holding the others back, so a stalled worker delays output by at most that window.
//! With a single queue there is nothing to merge and records go straight through.
//!
//! Every time here (records, watermarks, the window, "now") is CLOCK_MONOTONIC, which never
//! steps: a step of the wall clock cannot make a queue look silent or hold one back (see
//! [`super::clock`]).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use crate::handoff::{Consumer, Record, Waker};

/// Default merge window: how long the writer waits for a silent queue before writing past it.
pub const DEFAULT_WINDOW_NS: u64 = 100_000_000;

/// One source ring's hand-off ring (an RX queue's, or a CPU's ring of a tap interface), as the
/// writer sees it.
pub struct Source {
    pub interface_id: u32,
    pub consumer: Consumer,
    /// CLOCK_MONOTONIC ns up to which the ring's worker has pushed every frame (0 = not yet
    /// known).
    pub watermark: Arc<AtomicU64>,
    /// Read by one thread together with every other ring of its interface, in the same rounds
    /// (tap mode's reader), rather than by a thread of its own (an RX queue's worker).
    pub read_together: bool,
}

/// True while a writer merges more than one ring. Idle workers then wake often enough to keep
/// their watermark fresh (see [`IDLE_WAIT_MERGING_NS`]); with one ring nobody reads it, and an idle
/// worker sleeps longer. One daemon per process, so one flag.
pub static MERGING: AtomicBool = AtomicBool::new(false);

/// How long an idle worker may sleep while rings are merged: a quarter of the default window,
/// so a silent queue holds the others back by about that, not by the whole window.
pub const IDLE_WAIT_MERGING_NS: u64 = DEFAULT_WINDOW_NS / 4;

/// True while every ring the writer merges belongs to one tap interface, read by one thread.
/// Its reader drains them all in each round, so their watermarks move together whatever the
/// pause between rounds: it may then sleep up to [`ONE_READER_WAIT_NS`] (a second, like tcpdump
/// at low rates) instead of waking 40 times a second to keep watermarks fresh for others.
pub static ONE_READER: AtomicBool = AtomicBool::new(false);

/// The longest sleep of a tap reader whose rings are the only ones ([`ONE_READER`]).
pub const ONE_READER_WAIT_NS: u64 = 1_000_000_000;

/// The merge window while [`ONE_READER`] holds. A ring that was found empty at the end of a
/// round vouches for up to a millisecond before it, so the last frames of the other rings wait
/// for the next round; the window must outlast the pause between rounds, or they would be
/// written before frames still in flight. No other thread's ring is waiting meanwhile.
const ONE_READER_WINDOW_NS: u64 = 4 * ONE_READER_WAIT_NS;

/// Wakes every tap reader at once (an eventfd each reader's epoll watches, edge-triggered, never
/// read): when a second interface joins, a reader asleep for up to a second must come by and
/// bring its watermarks up to date before the writer merges the newcomer's frames.
pub fn reader_wake_fd() -> Option<RawFd> {
    static FD: OnceLock<Option<OwnedFd>> = OnceLock::new();
    FD.get_or_init(|| {
        // SAFETY: plain eventfd call; the fd is owned right away.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        // SAFETY: a fresh, valid fd.
        (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
    })
    .as_ref()
    .map(AsRawFd::as_raw_fd)
}

pub struct Merger {
    sources: Vec<Source>,
    /// The window asked for, and the one in force (longer while [`ONE_READER`] holds).
    base_window_ns: u64,
    window_ns: u64,
    /// What the rings wake when they fill (see [`Merger::wake_on_fill`]).
    waker: Option<Arc<Waker>>,
}

impl Merger {
    pub fn new(sources: Vec<Source>, window_ns: u64) -> Self {
        let mut m = Merger { sources, base_window_ns: window_ns, window_ns, waker: None };
        m.sources_changed();
        m
    }

    /// Makes every ring, those added later too, wake `waker` when it fills past a quarter: the
    /// writer sleeps on it between rounds.
    pub fn wake_on_fill(&mut self, waker: &Arc<Waker>) {
        for s in &self.sources {
            s.consumer.wake_on_fill(waker);
        }
        self.waker = Some(Arc::clone(waker));
    }

    /// Sets the flags the sources' threads read, and the window, for the current sources.
    fn sources_changed(&mut self) {
        MERGING.store(self.sources.len() > 1, Ordering::Relaxed);
        let first = self.sources.first().map(|s| s.interface_id);
        let one_reader = first.is_some()
            && self.sources.iter().all(|s| s.read_together && Some(s.interface_id) == first);
        self.window_ns = if one_reader { ONE_READER_WINDOW_NS } else { self.base_window_ns };
        if ONE_READER.swap(one_reader, Ordering::SeqCst) && !one_reader {
            // A reader may be in its long sleep: it must come by before the newcomers' frames
            // are merged (they wait for its watermarks, within the now short window).
            if let Some(fd) = reader_wake_fd() {
                let one = 1u64;
                // SAFETY: an 8-byte write to our eventfd; failing only when it would overflow,
                // and then it is readable anyway.
                unsafe { libc::write(fd, (&raw const one).cast(), 8) };
            }
        }
    }

    /// Hands up to `max` records to `sink`, oldest first. `now_ns` is CLOCK_MONOTONIC, read once
    /// per call. Returns how many records were handed over.
    pub fn pump(
        &mut self,
        now_ns: u64,
        max: usize,
        sink: &mut impl FnMut(u32, Record<'_>),
    ) -> usize {
        self.pump_before(now_ns, max, u64::MAX, sink)
    }

    /// [`Merger::pump`], stopping at the first record stamped at or after `before_ns`
    /// (CLOCK_MONOTONIC): what came before a reload is written by the settings before it.
    pub fn pump_before(
        &mut self,
        now_ns: u64,
        max: usize,
        before_ns: u64,
        sink: &mut impl FnMut(u32, Record<'_>),
    ) -> usize {
        let single = self.sources.len() == 1;
        let mut n = 0;
        // One call of `sink` in one loop, so the compiler can inline it here.
        while n < max {
            let i = if single {
                // Nothing to merge: the queue's records go straight through.
                0
            } else {
                match self.next_in_order(now_ns) {
                    Some(i) => i,
                    None => break,
                }
            };
            let source = &mut self.sources[i];
            let Some(r) = source.consumer.peek() else { break };
            if r.ts_ns >= before_ns {
                break;
            }
            sink(source.interface_id, r);
            source.consumer.advance();
            n += 1;
        }
        for source in &mut self.sources {
            source.consumer.release();
        }
        n
    }

    /// The source whose head record is the next to write, or `None` when there is none or a
    /// silent queue may still deliver something older (within the window).
    fn next_in_order(&mut self, now_ns: u64) -> Option<usize> {
        // The oldest head across queues, and the newest time every silent queue vouches for.
        let mut oldest: Option<(usize, u64)> = None;
        let mut vouched = u64::MAX;
        for (i, s) in self.sources.iter_mut().enumerate() {
            // The watermark before the ring: a worker publishes frames, then raises its
            // watermark past them, so a ring seen empty after the watermark was read holds
            // nothing up to it. Read the other way round, frames published in between would
            // be vouched for but not seen, and written out of order.
            let watermark = s.watermark.load(Ordering::Acquire);
            match s.consumer.peek_ts() {
                Some(ts) => {
                    if oldest.is_none_or(|(_, o)| ts < o) {
                        oldest = Some((i, ts));
                    }
                }
                None if s.consumer.is_finished() => {}
                None => vouched = vouched.min(watermark),
            }
        }
        let (i, ts) = oldest?;
        if ts > vouched && ts.saturating_add(self.window_ns) > now_ns {
            // A silent queue may still deliver something older: wait for it, within the window.
            return None;
        }
        Some(i)
    }

    /// True once everything stamped before `t_ns` (CLOCK_MONOTONIC) has been handed over: each
    /// ring is finished, or its oldest record is from `t_ns` on, or it is empty and its source
    /// vouches (watermark) for everything up to `t_ns`.
    pub fn has_passed(&mut self, t_ns: u64) -> bool {
        self.sources.iter_mut().all(|s| {
            // The watermark before the ring, as in `next_in_order`.
            let watermark = s.watermark.load(Ordering::Acquire);
            match s.consumer.peek_ts() {
                Some(ts) => ts >= t_ns,
                None => s.consumer.is_finished() || watermark >= t_ns,
            }
        })
    }

    /// True once every ring of interface `interface_id` has lost its producer and been emptied.
    pub fn is_drained(&mut self, interface_id: u32) -> bool {
        self.sources
            .iter_mut()
            .filter(|s| s.interface_id == interface_id)
            .all(|s| s.consumer.is_finished())
    }

    /// Throws away what the rings of interface `interface_id` still hold. Returns how many
    /// records that was.
    pub fn discard(&mut self, interface_id: u32) -> u64 {
        let mut n = 0;
        for s in self.sources.iter_mut().filter(|s| s.interface_id == interface_id) {
            while s.consumer.peek().is_some() {
                s.consumer.advance();
                n += 1;
            }
            s.consumer.release();
        }
        n
    }

    /// Gives each ring the interface id `renumber` returns for its current one, and drops the
    /// rings it returns `None` for (interfaces gone; drain them first). Then adds `new` rings.
    pub fn change_sources(&mut self, renumber: impl Fn(u32) -> Option<u32>, new: Vec<Source>) {
        self.sources.retain_mut(|s| match renumber(s.interface_id) {
            Some(id) => {
                s.interface_id = id;
                true
            }
            None => false,
        });
        if let Some(waker) = &self.waker {
            for s in &new {
                s.consumer.wake_on_fill(waker);
            }
        }
        self.sources.extend(new);
        self.sources_changed();
    }

    /// True once every producer is gone and everything has been handed over.
    pub fn is_finished(&mut self) -> bool {
        self.sources.iter_mut().all(|s| s.consumer.is_finished())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handoff::channel;

    /// A ring read by a thread of its own (an RX queue's worker).
    fn source(interface_id: u32, consumer: Consumer, watermark: Arc<AtomicU64>) -> Source {
        Source { interface_id, consumer, watermark, read_together: false }
    }

    fn collect(m: &mut Merger, now: u64) -> Vec<(u32, u64)> {
        let mut out = Vec::new();
        m.pump(now, usize::MAX, &mut |iface, r| out.push((iface, r.ts_ns)));
        out
    }

    /// A reload at t = 25: the frames stamped before it are written first, and the writer
    /// knows when that is done, which takes every ring's word for it.
    #[test]
    fn frames_before_a_reload_are_written_first_and_known_to_be() {
        let (mut p0, c0) = channel(1 << 16);
        let (mut p1, c1) = channel(1 << 16);
        let (w0, w1) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let mut m = Merger::new(vec![source(0, c0, w0.clone()), source(1, c1, w1.clone())], 1000);
        for ts in [10, 30] {
            assert!(p0.push(ts, 64, 0, 0, &[0; 64]));
        }
        assert!(p1.push(20, 64, 0, 0, &[0; 64]));
        p0.publish();
        p1.publish();
        w0.store(30, Ordering::Release);
        w1.store(20, Ordering::Release);
        assert!(!m.has_passed(25));
        let mut got = Vec::new();
        m.pump_before(100, usize::MAX, 25, &mut |iface, r| got.push((iface, r.ts_ns)));
        assert_eq!(got, [(0, 10), (1, 20)], "nothing from the reload on");
        assert!(!m.has_passed(25), "ring 1 may still bring a frame from before 25");
        w1.store(26, Ordering::Release);
        assert!(m.has_passed(25));
        w1.store(31, Ordering::Release);
        assert_eq!(collect(&mut m, 100), [(0, 30)]);
        drop((p0, p1));
        assert!(m.has_passed(u64::MAX), "finished rings hold nothing back");
    }

    #[test]
    fn single_queue_passes_straight_through() {
        let (mut p, c) = channel(1 << 16);
        let mut m = Merger::new(vec![source(3, c, Arc::default())], 0);
        for ts in [5, 1, 9] {
            assert!(p.push(ts, 64, 0, 0, &[0; 64]));
        }
        p.publish();
        assert_eq!(
            collect(&mut m, 0),
            vec![(3, 5), (3, 1), (3, 9)],
            "one queue keeps its own order"
        );
    }

    #[test]
    fn queues_are_interleaved_in_timestamp_order() {
        let (mut p0, c0) = channel(1 << 16);
        let (mut p1, c1) = channel(1 << 16);
        let w0 = Arc::new(AtomicU64::new(0));
        let w1 = Arc::new(AtomicU64::new(0));
        let mut m = Merger::new(
            vec![source(0, c0, Arc::clone(&w0)), source(0, c1, Arc::clone(&w1))],
            1_000,
        );
        for ts in [10, 30, 50] {
            p0.push(ts, 64, 0, 0, &[0; 64]);
        }
        for ts in [20, 40] {
            p1.push(ts, 64, 0, 0, &[0; 64]);
        }
        p0.publish();
        p1.publish();
        // Queue 1 runs dry after 40 and has vouched for nothing: 50 must wait for it.
        assert_eq!(collect(&mut m, 100), vec![(0, 10), (0, 20), (0, 30), (0, 40)]);
        // Once queue 1's worker says it has delivered everything up to 60, 50 can go.
        w1.store(60, Ordering::Release);
        assert_eq!(collect(&mut m, 100), vec![(0, 50)]);
    }

    #[test]
    fn a_silent_queue_holds_the_others_back_only_for_the_window() {
        let (mut p0, c0) = channel(1 << 16);
        let (_p1, c1) = channel(1 << 16);
        let mut m =
            Merger::new(vec![source(0, c0, Arc::default()), source(1, c1, Arc::default())], 1_000);
        p0.push(5_000, 64, 0, 0, &[0; 64]);
        p0.publish();
        assert!(collect(&mut m, 5_500).is_empty(), "within the window: wait");
        assert_eq!(collect(&mut m, 6_000), vec![(0, 5_000)], "window over: write");
    }

    #[test]
    fn sources_can_be_renumbered_dropped_and_added() {
        let (mut p0, c0) = channel(1 << 16);
        let (p1, c1) = channel(1 << 16);
        let (mut p2, c2) = channel(1 << 16);
        let mut m =
            Merger::new(vec![source(0, c0, Arc::default()), source(1, c1, Arc::default())], 0);
        assert!(!m.is_drained(1), "its producer is still there");
        let mut p1 = p1;
        p1.push(9, 64, 0, 0, &[0; 64]);
        p1.publish();
        drop(p1);
        assert!(!m.is_drained(1), "a record is left");
        assert_eq!(m.discard(1), 1);
        assert!(m.is_drained(1));
        // Interface 0 is removed: 1 becomes 0, and a new interface 1 comes.
        m.change_sources(|id| (id == 1).then_some(0), vec![source(1, c2, Arc::default())]);
        p0.push(1, 64, 0, 0, &[0; 64]);
        p0.publish();
        p2.push(2, 64, 0, 0, &[0; 64]);
        p2.publish();
        assert_eq!(collect(&mut m, 10), vec![(1, 2)], "the dropped ring is not read again");
    }

    #[test]
    fn finished_queues_do_not_hold_anything_back() {
        let (mut p0, c0) = channel(1 << 16);
        let (p1, c1) = channel(1 << 16);
        let mut m = Merger::new(
            vec![source(0, c0, Arc::default()), source(1, c1, Arc::default())],
            u64::MAX,
        );
        drop(p1);
        p0.push(7, 64, 0, 0, &[0; 64]);
        drop(p0);
        assert_eq!(collect(&mut m, 0), vec![(0, 7)]);
        assert!(m.is_finished());
    }

    #[test]
    fn one_tap_readers_rings_get_the_long_window_until_another_source_joins() {
        let ring = |interface_id, read_together| Source {
            interface_id,
            consumer: channel(1 << 16).1,
            watermark: Arc::default(),
            read_together,
        };
        // The per-CPU rings of one tap interface: one reader, so the long window.
        let mut m = Merger::new(vec![ring(0, true), ring(0, true)], DEFAULT_WINDOW_NS);
        assert_eq!(m.window_ns, ONE_READER_WINDOW_NS);
        // A second tap interface: another reader's rings, back to the window asked for.
        m.change_sources(Some, vec![ring(1, true)]);
        assert_eq!(m.window_ns, DEFAULT_WINDOW_NS);
        // Gone again: alone once more.
        m.change_sources(|id| (id == 0).then_some(0), Vec::new());
        assert_eq!(m.window_ns, ONE_READER_WINDOW_NS);
        // The RX queues of one mirror interface have a worker each.
        let m = Merger::new(vec![ring(0, false), ring(0, false)], DEFAULT_WINDOW_NS);
        assert_eq!(m.window_ns, DEFAULT_WINDOW_NS);
    }
}
