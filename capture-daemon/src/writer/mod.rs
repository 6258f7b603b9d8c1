//! The writer: the queues merged in time order ([`merge`]), pcapng encoding ([`pcapng`]) and the
//! rotating files it goes into ([`rotate`]).
//!
//! One writer thread owns a [`RotatingWriter`], feeds it every frame the [`Merger`] takes from the
//! hand-off queues with [`RotatingWriter::write_packet`] and calls [`RotatingWriter::tick`] at
//! least every 100 ms.

pub mod merge;
pub mod pcapng;
pub mod rotate;

pub use merge::{Merger, Source};
pub use pcapng::{
    InterfaceInfo, InterfaceStats, SectionInfo, encode_epb, encode_idb, encode_isb, encode_shb,
};
pub use rotate::{Policy, RotatingWriter, StatsSource, WriterCounters, WriterError};

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
    writer: &mut RotatingWriter,
    now_ns: u64,
    max: usize,
    delivered: &mut [u64],
) -> Round {
    let mut error = None;
    let mut bytes = 0u64;
    let records = merger.pump(now_ns, max, &mut |interface_id, r| {
        bytes += r.data.len() as u64;
        match writer.write_packet(interface_id, r.ts_ns, r.data, r.orig_len) {
            Ok(()) => delivered[interface_id as usize] += 1,
            Err(e) => {
                error.get_or_insert(e);
            }
        }
    });
    Round { records, bytes, error }
}
