//! One pcapng stream to any writer: standard output (`capture -w -`, for `| tshark -r -`) or a
//! single file. The same encoding as the rotating files, written out at least every tick so a
//! reader at the other end of a pipe sees frames within a fraction of a second.

use std::io::{self, Write};
use std::path::Path;

use super::pcapng::{InterfaceInfo, SectionInfo, encode_epb, encode_idb, encode_isb, encode_shb};
use super::rotate::{StatsSource, WriterCounters, WriterError, check_interface};

/// Written out once the buffer holds this much (and at every tick).
const FLUSH_BYTES: usize = 256 << 10;

pub struct StreamWriter {
    out: Box<dyn Write + Send>,
    buf: Vec<u8>,
    buffered_packets: u64,
    interface_count: u32,
    stats: Box<dyn StatsSource>,
    counters: WriterCounters,
    /// The reader went away (EPIPE): nothing more can be written.
    closed_by_reader: bool,
    /// A write failed otherwise (a full disk, say). Part of a block may have been written, and
    /// a stream cannot be cut back, so nothing more is written: what came before stays
    /// readable. The capture ends with this error, as dumpcap's does.
    failed: Option<io::Error>,
}

impl StreamWriter {
    /// Writes the section and interface headers right away.
    pub fn open(
        out: Box<dyn Write + Send>,
        section: &SectionInfo,
        interfaces: &[InterfaceInfo],
        stats: Box<dyn StatsSource>,
    ) -> Result<Self, WriterError> {
        let mut w = StreamWriter {
            out,
            buf: Vec::with_capacity(2 * FLUSH_BYTES),
            buffered_packets: 0,
            interface_count: u32::try_from(interfaces.len()).unwrap_or(u32::MAX),
            stats,
            counters: WriterCounters::default(),
            closed_by_reader: false,
            failed: None,
        };
        encode_shb(&mut w.buf, section);
        for interface in interfaces {
            encode_idb(&mut w.buf, interface);
        }
        w.flush();
        Ok(w)
    }

    /// Appends one packet; `flags` is its epb_flags word (0: none written).
    pub fn write_packet(
        &mut self,
        interface_id: u32,
        ts_ns: u64,
        data: &[u8],
        orig_len: u32,
        flags: u32,
    ) -> Result<(), WriterError> {
        check_interface(interface_id, self.interface_count)?;
        encode_epb(&mut self.buf, interface_id, ts_ns, data, orig_len, flags);
        self.buffered_packets += 1;
        if self.buf.len() >= FLUSH_BYTES {
            self.flush();
        }
        Ok(())
    }

    pub fn tick(&mut self) {
        self.flush();
    }

    /// Writes the statistics blocks and flushes. Fails if a write failed on the way.
    pub fn close(mut self, now_ns: u64) -> Result<(), WriterError> {
        for id in 0..self.interface_count {
            let mut stats = self.stats.stats(id);
            stats.end_ns = now_ns;
            encode_isb(&mut self.buf, id, &stats);
        }
        self.flush();
        match self.failed.take() {
            Some(e) => Err(WriterError::Stream(e)),
            None => Ok(()),
        }
    }

    pub fn counters(&self) -> &WriterCounters {
        &self.counters
    }

    /// True once nothing more can be written: the reader closed the pipe, or a write failed.
    pub fn ended(&self) -> bool {
        self.closed_by_reader || self.failed.is_some()
    }

    fn flush(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let result = if self.closed_by_reader {
            Err(io::ErrorKind::BrokenPipe.into())
        } else if self.failed.is_some() {
            Err(io::Error::other("an earlier write failed"))
        } else {
            self.out.write_all(&self.buf).and_then(|()| self.out.flush())
        };
        match result {
            Ok(()) => {
                self.counters.bytes_written += self.buf.len() as u64;
                self.counters.packets_written += self.buffered_packets;
            }
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                // Not an error: `| head` and a closed tshark end a capture this way.
                self.closed_by_reader = true;
                self.counters.packets_lost_to_errors += self.buffered_packets;
            }
            Err(_) if self.failed.is_some() => {
                self.counters.packets_lost_to_errors += self.buffered_packets;
            }
            Err(e) => {
                self.counters.write_errors += 1;
                self.counters.packets_lost_to_errors += self.buffered_packets;
                log::error!("writing the capture stream: {e}; the capture ends here");
                self.failed = Some(e);
            }
        }
        self.buf.clear();
        self.buffered_packets = 0;
    }
}

/// Opens `path` for a single-file capture: created or truncated, mode 0640, never through a
/// symlink.
pub fn create_file(path: &Path) -> io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o640)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::writer::InterfaceStats;
    use capture_common::{DIRECTION_INBOUND, DIRECTION_OUTBOUND};
    use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketOption;
    use std::sync::{Arc, Mutex};

    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    struct NoStats;
    impl StatsSource for NoStats {
        fn stats(&self, _: u32) -> InterfaceStats {
            InterfaceStats {
                start_ns: 1,
                end_ns: 2,
                received: 3,
                kernel_drops: 0,
                accepted: 3,
                delivered: 3,
                user_drops: 0,
            }
        }
    }
    struct Closed;
    impl Write for Closed {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn section() -> SectionInfo {
        SectionInfo { hardware: "hw".into(), os: "os".into(), application: "app".into() }
    }
    fn iface() -> Vec<InterfaceInfo> {
        vec![InterfaceInfo { name: "eth0".into(), description: "d".into(), snaplen: 0 }]
    }

    #[test]
    fn a_stream_reads_back_as_pcapng() {
        let bytes = Arc::new(Mutex::new(Vec::new()));
        let mut w = StreamWriter::open(
            Box::new(Shared(Arc::clone(&bytes))),
            &section(),
            &iface(),
            Box::new(NoStats),
        )
        .unwrap();
        let flags = [DIRECTION_INBOUND, DIRECTION_OUTBOUND, 0];
        for (i, f) in (0..3u8).zip(flags) {
            w.write_packet(0, 1_700_000_000_000_000_000 + u64::from(i), &[i; 60], 100, f).unwrap();
        }
        w.tick();
        assert_eq!(w.counters().packets_written, 3);
        w.close(5).unwrap();
        let data = bytes.lock().unwrap().clone();
        let mut reader = pcap_file::pcapng::PcapNgReader::new(&data[..]).unwrap();
        let mut packets = 0;
        while let Some(block) = reader.next_block() {
            if let pcap_file::pcapng::Block::EnhancedPacket(epb) = block.unwrap().0 {
                assert_eq!((epb.data.len(), epb.original_len), (60, 100));
                let want = match flags[packets] {
                    0 => vec![],
                    f => vec![EnhancedPacketOption::Flags(f)],
                };
                assert_eq!(epb.options, want, "packet {packets}");
                packets += 1;
            }
        }
        assert_eq!(packets, 3);
    }

    #[test]
    fn a_closed_pipe_ends_the_stream_quietly() {
        let mut w =
            StreamWriter::open(Box::new(Closed), &section(), &iface(), Box::new(NoStats)).unwrap();
        assert!(w.ended());
        w.write_packet(0, 1, &[0; 60], 60, DIRECTION_INBOUND).unwrap();
        w.tick();
        assert_eq!(w.counters().write_errors, 0, "a closed pipe is not an error");
        assert!(w.close(2).is_ok());
    }

    /// Takes `room` bytes, then fails as a full disk does, halfway through a write.
    struct Full {
        bytes: Arc<Mutex<Vec<u8>>>,
        room: usize,
    }
    impl Write for Full {
        fn write(&mut self, data: &[u8]) -> io::Result<usize> {
            let mut bytes = self.bytes.lock().unwrap();
            let n = data.len().min(self.room - bytes.len());
            if n == 0 {
                return Err(io::Error::from_raw_os_error(libc::ENOSPC));
            }
            bytes.extend_from_slice(&data[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_failed_write_ends_the_stream_with_an_error_and_nothing_after_it() {
        let bytes = Arc::new(Mutex::new(Vec::new()));
        let out = Full { bytes: Arc::clone(&bytes), room: 1000 };
        let mut w =
            StreamWriter::open(Box::new(out), &section(), &iface(), Box::new(NoStats)).unwrap();
        for i in 0..20u8 {
            w.write_packet(0, 1_700_000_000_000_000_000, &[i; 100], 100, DIRECTION_OUTBOUND)
                .unwrap();
        }
        w.tick();
        assert!(w.ended());
        let written = bytes.lock().unwrap().len();
        w.write_packet(0, 1, &[0; 60], 60, DIRECTION_INBOUND).unwrap();
        w.tick();
        assert_eq!(bytes.lock().unwrap().len(), written, "nothing written after a torn block");
        let err = w.close(2).unwrap_err();
        assert!(err.to_string().contains("No space left on device"), "{err}");
    }
}
