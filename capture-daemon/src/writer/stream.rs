//! One pcapng stream to any writer: standard output (`capture -w -`, for `| tshark -r -`) or a
//! single file. The same encoding as the rotating files, written out at least every tick so a
//! reader at the other end of a pipe sees frames within a fraction of a second.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::pcapng::{
    InterfaceInfo, SectionInfo, encode_epb_commented, encode_idb, encode_isb, encode_shb,
};
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
        self.write_packet_commented(interface_id, ts_ns, data, orig_len, flags, &[])
    }

    /// [`StreamWriter::write_packet`] with an encoded opt_comment option (empty: none).
    pub fn write_packet_commented(
        &mut self,
        interface_id: u32,
        ts_ns: u64,
        data: &[u8],
        orig_len: u32,
        flags: u32,
        comment: &[u8],
    ) -> Result<(), WriterError> {
        check_interface(interface_id, self.interface_count)?;
        encode_epb_commented(&mut self.buf, interface_id, ts_ns, data, orig_len, flags, comment);
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

/// Why `capture -w FILE` will not write to FILE.
#[derive(Debug, thiserror::Error)]
pub enum OutputFileError {
    #[error(
        "-w {path}: it is a symbolic link; refusing to write through it (name the file itself, \
         or remove the link)"
    )]
    Symlink { path: PathBuf },
    #[error(
        "-w {path}: it belongs to uid {owner}, and this process runs as uid {euid}; refusing to \
         overwrite another user's file (remove it, or choose another name)"
    )]
    OtherOwner { path: PathBuf, owner: u32, euid: u32 },
    #[error(
        "-w {path}: it has {links} hard links; overwriting it would change the file under its \
         other names too (remove it, or choose another name)"
    )]
    HardLinks { path: PathBuf, links: u64 },
    #[error("-w {path}: it is a {kind}; write to a file, a FIFO or - (standard output)")]
    NotAFile { path: PathBuf, kind: &'static str },
    #[error("-w {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Opens `path` for a single-file capture. A new file is created; an existing one is
/// truncated only if this process owns it and it has no other name (else its old owner
/// would read the capture, or another path would change). Either way it ends up mode 0640.
/// Never through a symlink. A FIFO (of this process's user) or a character device such as
/// /dev/null is written as it is.
pub fn create_file(path: &Path) -> Result<std::fs::File, OutputFileError> {
    use std::os::unix::fs::PermissionsExt as _;
    use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _, OpenOptionsExt as _};
    let io_error = |source| OutputFileError::Io { path: path.to_owned(), source };
    // No O_TRUNC: nothing of an existing file changes before it has been checked.
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .mode(0o640)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => OutputFileError::Symlink { path: path.to_owned() },
            _ => io_error(e),
        })?;
    let meta = file.metadata().map_err(io_error)?;
    let kind = meta.file_type();
    if kind.is_char_device() {
        return Ok(file);
    }
    if !kind.is_file() && !kind.is_fifo() {
        let kind = if kind.is_socket() { "socket" } else { "block device" };
        return Err(OutputFileError::NotAFile { path: path.to_owned(), kind });
    }
    // SAFETY: trivial libc call.
    let euid = unsafe { libc::geteuid() };
    if meta.uid() != euid {
        return Err(OutputFileError::OtherOwner { path: path.to_owned(), owner: meta.uid(), euid });
    }
    if kind.is_file() {
        if meta.nlink() > 1 {
            return Err(OutputFileError::HardLinks { path: path.to_owned(), links: meta.nlink() });
        }
        file.set_len(0).map_err(io_error)?;
        file.set_permissions(std::fs::Permissions::from_mode(0o640)).map_err(io_error)?;
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::writer::InterfaceStats;
    use capture_common::{DIRECTION_INBOUND, DIRECTION_OUTBOUND};
    use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketOption;
    use std::os::unix::fs::OpenOptionsExt as _;
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

    /// `capture -w`: one stream, and each packet still names its targets (through [`Output`],
    /// as the writer thread writes it); a reload's targets name the packets after it.
    #[test]
    fn a_streams_packets_name_their_targets() {
        use crate::writer::{Comments, Output, PacketSink as _, TargetRoute};
        use pcap_file::pcapng::blocks::opt_common::CommonOption;
        let buf = Arc::new(Mutex::new(Vec::new()));
        let w = StreamWriter::open(
            Box::new(Shared(buf.clone())),
            &section(),
            &iface(),
            Box::new(NoStats),
        )
        .unwrap();
        let route = |slot, name: &str| TargetRoute { slot, name: name.into(), own: false };
        let mut out = Output::Stream(w, Comments::new(&[route(0, "all")]));
        out.write_packet(0, 1, &[1; 60], 60, DIRECTION_INBOUND, 1).unwrap();
        out.write_packet(0, 2, &[2; 60], 60, DIRECTION_INBOUND, 0).unwrap();
        let policy = crate::writer::Policy::unlimited("/nonexistent".into(), "x");
        out.reconfigure(policy, &iface(), &[route(0, "a"), route(1, "b")]).unwrap();
        out.write_packet(0, 3, &[3; 60], 60, DIRECTION_INBOUND, 3).unwrap();
        out.close(crate::writer::Now { mono_ns: 4, offset_ns: 0 }).unwrap();
        let data = buf.lock().unwrap().clone();
        let mut reader = pcap_file::pcapng::PcapNgReader::new(std::io::Cursor::new(data)).unwrap();
        let mut comments = Vec::new();
        while let Some(block) = reader.next_block() {
            if let (pcap_file::pcapng::Block::EnhancedPacket(epb), _) = block.unwrap() {
                comments.push(epb.options.iter().find_map(|o| match o {
                    EnhancedPacketOption::Common(CommonOption::Comment(c)) => Some(c.to_string()),
                    _ => None,
                }));
            }
        }
        assert_eq!(
            comments,
            [Some("targets: all".to_owned()), None, Some("targets: a, b".to_owned())]
        );
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

    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn a_new_or_own_file_is_written_from_the_start_with_mode_0640() {
        let dir = tempfile::tempdir().unwrap();
        let new = dir.path().join("new.pcapng");
        drop(create_file(&new).unwrap());
        assert_eq!(mode(&new), 0o640);

        let old = dir.path().join("old.pcapng");
        std::fs::write(&old, b"old content, longer than what follows").unwrap();
        std::fs::set_permissions(&old, std::os::unix::fs::PermissionsExt::from_mode(0o666))
            .unwrap();
        let mut f = create_file(&old).unwrap();
        f.write_all(b"new").unwrap();
        drop(f);
        assert_eq!(std::fs::read(&old).unwrap(), b"new", "truncated");
        assert_eq!(mode(&old), 0o640, "not the old file's 0666");
    }

    #[test]
    fn symlinks_and_hard_links_are_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        std::fs::write(&target, b"keep").unwrap();
        let link = dir.path().join("link.pcapng");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let e = create_file(&link).unwrap_err().to_string();
        assert!(e.contains("link.pcapng: it is a symbolic link; refusing"), "{e}");

        let hard = dir.path().join("hard.pcapng");
        std::fs::hard_link(&target, &hard).unwrap();
        let e = create_file(&hard).unwrap_err().to_string();
        assert!(e.contains("hard.pcapng: it has 2 hard links"), "{e}");
        assert_eq!(std::fs::read(&target).unwrap(), b"keep");

        let e = create_file(dir.path()).unwrap_err().to_string();
        assert!(e.contains("Is a directory"), "{e}");
        // /dev/null is written as it is (and not chmod-ed).
        let null = Path::new("/dev/null");
        let before = mode(null);
        drop(create_file(null).unwrap());
        assert_eq!(mode(null), before);
    }

    /// Runs `f` if this process may give files away (root); says so loudly where it must.
    fn as_root(f: impl FnOnce()) {
        // SAFETY: trivial libc call.
        if unsafe { libc::geteuid() } == 0 {
            f();
        } else {
            assert!(
                std::env::var_os("CAPTURE_REQUIRE_ROOT").is_none(),
                "this test needs root (CAPTURE_REQUIRE_ROOT is set)"
            );
            eprintln!("skipped: not root");
        }
    }

    #[test]
    fn another_users_file_or_fifo_is_refused_and_left_alone() {
        as_root(|| {
            use std::os::unix::fs::MetadataExt as _;
            let dir = tempfile::tempdir().unwrap();
            let theirs = dir.path().join("theirs.pcapng");
            std::fs::write(&theirs, b"theirs").unwrap();
            std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
            let e = create_file(&theirs).unwrap_err().to_string();
            assert!(
                e.contains(
                    "theirs.pcapng: it belongs to uid 65534, and this process runs as uid 0"
                ),
                "{e}"
            );
            assert_eq!(std::fs::read(&theirs).unwrap(), b"theirs");
            assert_eq!(std::fs::metadata(&theirs).unwrap().uid(), 65534);

            let fifo = dir.path().join("fifo");
            let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
            // SAFETY: valid C string.
            assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
            std::os::unix::fs::chown(&fifo, Some(65534), None).unwrap();
            // A reader, so that opening the FIFO for writing does not wait for one.
            let _reader = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(&fifo)
                .unwrap();
            let e = create_file(&fifo).unwrap_err().to_string();
            assert!(e.contains("it belongs to uid 65534"), "{e}");
            std::os::unix::fs::chown(&fifo, Some(0), None).unwrap();
            drop(create_file(&fifo).unwrap());
        });
    }
}
