//! The writer: the queues merged in time order ([`merge`]), pcapng encoding ([`pcapng`]) and the
//! rotating files it goes into ([`rotate`]).
//!
//! One writer thread owns a [`RotatingWriter`], feeds it every frame the [`Merger`] takes from the
//! hand-off queues with [`RotatingWriter::write_packet`] and calls [`RotatingWriter::tick`] at
//! least every 100 ms.

pub mod merge;
pub mod pcapng;
pub mod rotate;
pub mod stream;

use std::path::{Path, PathBuf};

pub use merge::{Merger, Source};
pub use pcapng::{
    InterfaceInfo, InterfaceStats, SectionInfo, encode_epb, encode_idb, encode_isb, encode_shb,
};
pub use rotate::{Policy, RotatingWriter, StatsSource, WriterCounters, WriterError};
pub use stream::StreamWriter;

/// Where the writer thread's records go: anything that takes packets.
pub trait PacketSink {
    /// One frame: `flags` is its pcapng epb_flags word (the direction, from the hand-off
    /// record), written into its Enhanced Packet Block.
    fn write_packet(
        &mut self,
        interface_id: u32,
        ts_ns: u64,
        data: &[u8],
        orig_len: u32,
        flags: u32,
    ) -> Result<(), WriterError>;
}

impl PacketSink for RotatingWriter {
    #[inline]
    fn write_packet(
        &mut self,
        id: u32,
        ts: u64,
        data: &[u8],
        orig: u32,
        flags: u32,
    ) -> Result<(), WriterError> {
        RotatingWriter::write_packet(self, id, ts, data, orig, flags)
    }
}

/// The daemon's output: rotating files, or one stream (a pipe, standard output, a single file).
/// One value per run, owned by the writer thread: the size difference does not matter.
#[expect(clippy::large_enum_variant, reason = "one per run")]
pub enum Output {
    Files(RotatingWriter),
    Stream(StreamWriter),
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
    ) -> Result<(), WriterError> {
        match self {
            Output::Files(w) => w.write_packet(id, ts, data, orig, flags),
            Output::Stream(w) => w.write_packet(id, ts, data, orig, flags),
        }
    }
}

impl Output {
    pub fn tick(&mut self, now_ns: u64) -> Result<(), WriterError> {
        match self {
            Output::Files(w) => w.tick(now_ns),
            Output::Stream(w) => {
                w.tick();
                Ok(())
            }
        }
    }

    pub fn counters(&self) -> &WriterCounters {
        match self {
            Output::Files(w) => w.counters(),
            Output::Stream(w) => w.counters(),
        }
    }

    pub fn current_path(&self) -> Option<&Path> {
        match self {
            Output::Files(w) => w.current_path(),
            Output::Stream(_) => None,
        }
    }

    /// New settings for the files from the next one on; a stream has none to change.
    pub fn reconfigure(
        &mut self,
        policy: Policy,
        interfaces: &[InterfaceInfo],
    ) -> Result<(), WriterError> {
        match self {
            Output::Files(w) => w.reconfigure(policy, interfaces),
            Output::Stream(_) => Ok(()),
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
            Output::Stream(_) => {
                Err(WriterError::InterfaceCountChanged { was: 0, now: interfaces.len() })
            }
        }
    }

    /// True when nothing more can be written (the reader of a stream went away).
    pub fn finished(&self) -> bool {
        matches!(self, Output::Stream(w) if w.ended())
    }

    pub fn close(self, now_ns: u64) -> Result<Option<PathBuf>, WriterError> {
        match self {
            Output::Files(w) => w.close(now_ns),
            Output::Stream(w) => w.close(now_ns).map(|()| None),
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
/// each one written counted in `delivered[interface_id]`.
pub fn write_round(
    merger: &mut Merger,
    writer: &mut impl PacketSink,
    now_ns: u64,
    max: usize,
    delivered: &mut [u64],
) -> Round {
    let mut error = None;
    let mut bytes = 0u64;
    let records = merger.pump(now_ns, max, &mut |interface_id, r| {
        bytes += r.data.len() as u64;
        match writer.write_packet(interface_id, r.ts_ns, r.data, r.orig_len, r.flags) {
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
    use capture_common::{DIRECTION_INBOUND, DIRECTION_OUTBOUND};
    use std::sync::Arc;

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
        assert!(p.push(1, 60, DIRECTION_INBOUND, &[1; 60]));
        assert!(p.push(2, 61, DIRECTION_OUTBOUND, &[2; 61]));
        assert!(p.push(3, 62, 0, &[3; 62]));
        p.publish();
        let mut sink = Recorder::default();
        let mut delivered = [0u64];
        let round = write_round(&mut merger, &mut sink, 10, RECORDS_PER_ROUND, &mut delivered);
        assert!(round.error.is_none());
        assert_eq!((round.records, round.bytes, delivered), (3, 183, [3]));
        assert_eq!(
            sink.0,
            vec![(0, 1, 60, DIRECTION_INBOUND), (0, 2, 61, DIRECTION_OUTBOUND), (0, 3, 62, 0)]
        );
    }
}
