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
