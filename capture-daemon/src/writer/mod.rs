//! The writer: the queues merged in time order ([`merge`]), pcapng encoding ([`pcapng`]) and the
//! rotating files it goes into ([`rotate`]).
//!
//! One writer thread owns a [`RotatingWriter`], feeds it every frame the [`Merger`] takes from the
//! hand-off queues with [`RotatingWriter::write_packet`] and calls [`RotatingWriter::tick`] at
//! least every 100 ms. Times are CLOCK_MONOTONIC up to the writer, which turns them into
//! wall-clock time as it writes ([`clock`]).

pub mod clock;
mod dir;
mod finish;
pub mod merge;
pub mod pcapng;
pub mod rotate;
pub mod stream;
pub mod streams;
pub mod targets;

use std::path::{Path, PathBuf};

pub use clock::{Clock, Now, SystemClock, WriterClock};
pub use merge::{Merger, Source};
pub use pcapng::{
    InterfaceInfo, InterfaceStats, SectionInfo, encode_epb, encode_idb, encode_isb, encode_shb,
};
pub use rotate::{Policy, RotatingWriter, StatsSource, WriterCounters, WriterError};
pub use stream::StreamWriter;
pub use streams::Streams;
pub use targets::{Comments, TargetRoute};

/// Where the writer thread's records go: anything that takes packets.
pub trait PacketSink {
    /// One frame: `ts_ns` is its wall-clock time in ns since the Unix epoch; `flags` is its
    /// pcapng epb_flags word (the direction, from the hand-off record), written into its
    /// Enhanced Packet Block; `matched` the mask of target slots it matched (what its comment
    /// names, and which streams it goes to).
    fn write_packet(
        &mut self,
        interface_id: u32,
        ts_ns: u64,
        data: &[u8],
        orig_len: u32,
        flags: u32,
        matched: u64,
    ) -> Result<(), WriterError>;
}

/// One stream of files, frames written without comments (benchmarks and tests).
impl PacketSink for RotatingWriter {
    #[inline]
    fn write_packet(
        &mut self,
        id: u32,
        ts: u64,
        data: &[u8],
        orig: u32,
        flags: u32,
        _matched: u64,
    ) -> Result<(), WriterError> {
        RotatingWriter::write_packet(self, id, ts, data, orig, flags)
    }
}

/// The daemon's output: rotating files (one stream per own target, and the shared one), or one
/// stream (a pipe, standard output, a single file) with the same per-packet comments.
/// One value per run, owned by the writer thread: the size difference does not matter.
#[expect(clippy::large_enum_variant, reason = "one per run")]
pub enum Output {
    Files(Streams),
    Stream(StreamWriter, Comments),
}

impl PacketSink for Output {
    #[inline]
    fn write_packet(
        &mut self,
        id: u32,
        ts: u64,
        data: &[u8],
        orig: u32,
        flags: u32,
        matched: u64,
    ) -> Result<(), WriterError> {
        match self {
            Output::Files(w) => w.write_packet(id, ts, data, orig, flags, matched),
            Output::Stream(w, comments) => {
                w.write_packet_commented(id, ts, data, orig, flags, comments.option(matched))
            }
        }
    }
}

impl Output {
    pub fn tick(&mut self, now: Now) -> Result<(), WriterError> {
        match self {
            Output::Files(w) => w.tick(now),
            Output::Stream(w, _) => {
                w.tick();
                Ok(())
            }
        }
    }

    pub fn counters(&self) -> WriterCounters {
        match self {
            Output::Files(w) => w.counters(),
            Output::Stream(w, _) => *w.counters(),
        }
    }

    pub fn current_path(&self) -> Option<&Path> {
        match self {
            Output::Files(w) => w.current_path(),
            Output::Stream(..) => None,
        }
    }

    /// New settings and targets for the files from the next one on (streams of own targets
    /// open and close at once); a stream keeps its settings but names the new targets.
    pub fn reconfigure(
        &mut self,
        policy: Policy,
        interfaces: &[InterfaceInfo],
        targets: &[TargetRoute],
    ) -> Result<(), WriterError> {
        match self {
            Output::Files(w) => w.reconfigure(policy, interfaces, targets),
            Output::Stream(_, comments) => {
                *comments = Comments::new(targets);
                Ok(())
            }
        }
    }

    /// Finishes the file now and starts the next one with other interfaces (see
    /// [`RotatingWriter::switch_interfaces`]); a stream's interfaces are fixed.
    pub fn switch_interfaces(
        &mut self,
        policy: Policy,
        interfaces: &[InterfaceInfo],
        stats: Box<dyn StatsSource>,
    ) -> Result<(), WriterError> {
        match self {
            Output::Files(w) => w.switch_interfaces(policy, interfaces, stats),
            Output::Stream(..) => {
                Err(WriterError::InterfaceCountChanged { was: 0, now: interfaces.len() })
            }
        }
    }

    /// True when nothing more can be written (the reader of a stream went away).
    pub fn finished(&self) -> bool {
        matches!(self, Output::Stream(w, _) if w.ended())
    }

    /// Finishes the output: the last file of the shared stream (of the first own one without
    /// it), and the counters once everything is finished.
    pub fn close(self, now: Now) -> Result<(Option<PathBuf>, WriterCounters), WriterError> {
        match self {
            Output::Files(w) => Ok(w.close(now.mono_ns)),
            Output::Stream(w, _) => {
                let counters = *w.counters();
                w.close(now.wall_ns()).map(|()| (None, counters))
            }
        }
    }
}

/// Records the writer thread moves per round before it looks at the clock and its stop flag.
pub const RECORDS_PER_ROUND: usize = 4096;

/// What one [`write_round`] did.
#[derive(Debug, Default)]
pub struct Round {
    /// Records taken from the hand-off rings.
    pub records: usize,
    /// Frame bytes in them (what the rings freed, less record headers).
    pub bytes: u64,
    /// The round's first error: a record for an interface the writer does not know (a bug; the
    /// record is dropped).
    pub error: Option<WriterError>,
}

/// One round of the writer thread: up to `max` records from `merger` into `writer`, oldest first,
/// each one written counted in `delivered[interface_id]`. The merge goes by `now`'s monotonic
/// time; the records get wall-clock timestamps with `now`'s offset, all alike.
pub fn write_round(
    merger: &mut Merger,
    writer: &mut impl PacketSink,
    now: Now,
    max: usize,
    delivered: &mut [u64],
) -> Round {
    write_round_before(merger, writer, now, max, u64::MAX, delivered)
}

/// [`write_round`] up to the first record stamped at or after `before_ns` (CLOCK_MONOTONIC; see
/// [`Merger::pump_before`]).
pub fn write_round_before(
    merger: &mut Merger,
    writer: &mut impl PacketSink,
    now: Now,
    max: usize,
    before_ns: u64,
    delivered: &mut [u64],
) -> Round {
    let mut error = None;
    let mut bytes = 0u64;
    let records = merger.pump_before(now.mono_ns, max, before_ns, &mut |interface_id, r| {
        bytes += r.data.len() as u64;
        let ts = now.to_wall(r.ts_ns);
        match writer.write_packet(interface_id, ts, r.data, r.orig_len, r.flags, r.matched) {
            Ok(()) => delivered[interface_id as usize] += 1,
            Err(e) => {
                error.get_or_insert(e);
            }
        }
    });
    Round { records, bytes, error }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handoff::channel;
    use crate::source::Feed;
    use crate::writer::clock::tests::TestClock;
    use capture_common::{DIRECTION_INBOUND, DIRECTION_OUTBOUND};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

    /// Keeps (interface, timestamp, orig_len, flags) of every packet.
    #[derive(Default)]
    struct Recorder(Vec<(u32, u64, u32, u32)>);

    impl PacketSink for Recorder {
        fn write_packet(
            &mut self,
            interface_id: u32,
            ts_ns: u64,
            _data: &[u8],
            orig_len: u32,
            flags: u32,
            _matched: u64,
        ) -> Result<(), WriterError> {
            self.0.push((interface_id, ts_ns, orig_len, flags));
            Ok(())
        }
    }

    #[test]
    fn write_round_passes_each_records_flags() {
        let (mut p, c) = channel(1 << 16);
        let mut merger = Merger::new(
            vec![Source {
                interface_id: 0,
                consumer: c,
                watermark: Arc::default(),
                read_together: false,
            }],
            0,
        );
        assert!(p.push(1, 60, DIRECTION_INBOUND, 0, &[1; 60]));
        assert!(p.push(2, 61, DIRECTION_OUTBOUND, 0, &[2; 61]));
        assert!(p.push(3, 62, 0, 0, &[3; 62]));
        p.publish();
        let mut sink = Recorder::default();
        let mut delivered = [0u64];
        let now = Now { mono_ns: 10, offset_ns: 1000 };
        let round = write_round(&mut merger, &mut sink, now, RECORDS_PER_ROUND, &mut delivered);
        assert!(round.error.is_none());
        assert_eq!((round.records, round.bytes, delivered), (3, 183, [3]));
        assert_eq!(
            sink.0,
            vec![
                (0, 1001, 60, DIRECTION_INBOUND),
                (0, 1002, 61, DIRECTION_OUTBOUND),
                (0, 1003, 62, 0)
            ]
        );
    }

    /// The wall clock steps back 10 s, far more than the merge window, while a busy queue and a
    /// quiet one are merged. Every round still writes all that the queues' workers vouched for,
    /// in order, and the records of both queues get the one offset the writer read.
    #[test]
    fn a_wall_clock_step_holds_no_queue_back() {
        const MS: u64 = 1_000_000;
        /// Frames carry their stamp as `orig_len`, in tenths of a ms since the start.
        const TENTH_MS: u64 = MS / 10;
        let mono0 = 5_000 * MS;
        let offset0 = 1_700_000_000_000_000_000 - mono0.cast_signed();
        let step = -10_000 * MS.cast_signed();
        let test_clock = TestClock::default();
        test_clock.mono.store(mono0, Relaxed);
        test_clock.offset.store(offset0, Relaxed);
        let mut clock = WriterClock::new(Box::new(test_clock.clone()));
        // Queue 0 is quiet, queue 1 busy; each is fed as its worker feeds it.
        let mut feeds = Vec::new();
        let mut sources = Vec::new();
        for _ in 0..2 {
            let (producer, consumer) = channel(1 << 20);
            let watermark = Arc::new(AtomicU64::new(0));
            feeds.push(Feed::new(producer, Arc::clone(&watermark), Arc::default()));
            sources.push(Source { interface_id: 0, consumer, watermark, read_together: false });
        }
        let mut merger = Merger::new(sources, merge::DEFAULT_WINDOW_NS);
        let mut sink = Recorder::default();
        let mut delivered = [0u64];
        let mut offsets_seen = Vec::new();
        for round in 1..=60 {
            let mono = mono0 + round * 10 * MS;
            test_clock.mono.store(mono, Relaxed);
            if round == 20 {
                test_clock.offset.store(offset0 + step, Relaxed);
            }
            let frame = |feed: &mut Feed, ts: u64| {
                let tenths = u32::try_from((ts - mono0) / TENTH_MS).unwrap();
                feed.push(ts, tenths, 0, 0, &[0; 60]);
            };
            // Busy: a frame each ms of the last 10. Quiet: one frame every fifth round.
            for ms in (1..=10).rev() {
                frame(&mut feeds[1], mono - ms * MS);
            }
            feeds[1].publish();
            if round % 5 == 0 {
                frame(&mut feeds[0], mono - 5 * MS - MS / 2);
                feeds[0].publish();
            }
            // Both workers found their rings empty just now.
            for feed in &feeds {
                feed.vouch(mono - MS);
            }
            let now = clock.now();
            offsets_seen.push(now.offset_ns);
            let before = sink.0.len();
            let pushed = 10 + usize::from(round % 5 == 0);
            let r = write_round(&mut merger, &mut sink, now, RECORDS_PER_ROUND, &mut delivered);
            assert_eq!(r.records, pushed, "round {round}: everything vouched for is written");
            for &(_, ts, tenths, _) in &sink.0[before..] {
                let stamp = mono0 + u64::from(tenths) * TENTH_MS;
                assert_eq!(ts, now.to_wall(stamp), "round {round}: the writer's one offset");
            }
        }
        assert!(offsets_seen.contains(&offset0) && offsets_seen.contains(&(offset0 + step)));
        let order: Vec<u32> = sink.0.iter().map(|r| r.2).collect();
        assert!(order.is_sorted(), "written in the order of the frames' monotonic stamps");
        assert!(sink.0.iter().filter(|r| r.2 % 10 == 5).count() == 12, "the quiet queue's too");
    }
}
