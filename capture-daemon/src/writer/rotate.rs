//! Rotating pcapng files: naming, rotation, retention, crash recovery.
//!
//! Files are named like dumpcap's ring buffer: `DIR/{prefix}_{seq:05}_{YYYYmmddHHMMSS}.pcapng`,
//! where the timestamp is the file's start time in **UTC** and `seq` counts up from 1 across
//! restarts (it may grow past five digits). A file being written carries an extra `.part`
//! suffix and is renamed when finished, so anything without `.part` is complete and stable.
//!
//! The writer never reads the clock: the caller passes the time to [`RotatingWriter::open`],
//! [`RotatingWriter::tick`] and [`RotatingWriter::close`]; rotations triggered by a packet use the
//! latest of those (at most one tick, ~100 ms, old). That time is CLOCK_MONOTONIC, so a step of
//! the wall clock neither stalls nor hastens time-based rotation and flushing; only file names
//! are wall-clock time, from the offset last given ([`RotatingWriter::set_wall_offset`]).
//!
//! I/O errors after `open` (a full disk, typically) never stop the writer: they are counted in
//! [`WriterCounters`], logged at most once per 10 s, and the data that could not be written is
//! dropped while later data keeps being tried.
//!
//! Finishing a file (fsync, rename, retention) happens on a thread of its own ([`super::finish`]);
//! while a file is written, its data is sent to disk every [`WRITEBACK_BYTES`] so that the final
//! fsync finds little left to do.
//!
//! The output directory is opened once, checked (OpenSSH's strict modes, of its path and of the
//! directory held) and every file operation goes through that fd ([`super::dir`]): a directory
//! renamed away and replaced after the checks is not followed.

use std::fmt;
use std::fs::{self, File, TryLockError};
use std::io;
use std::os::fd::{AsFd as _, AsRawFd as _};
use std::os::unix::fs::{DirBuilderExt as _, FileExt as _, MetadataExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use log::{info, warn};

use crate::config::FileGroup;

use super::clock::Now;
use super::dir::OutDir;
use super::finish::{Finisher, Retention, Written};
use super::pcapng::{
    InterfaceInfo, InterfaceStats, SectionInfo, encode_epb_commented, encode_idb, encode_isb,
    encode_shb, valid_prefix_len,
};

/// Capacity of the encode buffer: a flush threshold's worth plus room for the largest packet,
/// so the hot path never reallocates.
const BUF_CAPACITY: usize = 4 << 20;
/// Buffered bytes that trigger a write: large writes, few syscalls.
const FLUSH_BYTES: usize = 1 << 20;
/// Buffered data older than this is written on the next tick, so a quiet link still reaches disk.
const FLUSH_AGE_NS: u64 = 1_000_000_000;
/// Written data is sent to disk (`sync_file_range`, without waiting) once this much has gathered
/// behind the write position: the page cache holds little of a file that is not on its way to
/// disk, and the fsync that finishes the file is short.
const WRITEBACK_BYTES: u64 = 8 << 20;
const PAGE: u64 = 4096;
/// At most one I/O-error warning per this interval (a full disk fails every write).
const ERROR_LOG_INTERVAL_NS: u64 = 10_000_000_000;
/// How often to retry creating a file after that failed.
const REOPEN_INTERVAL_NS: u64 = 1_000_000_000;
/// Names tried (bumping seq) before giving up on creating a file because every name exists.
const MAX_NAME_ATTEMPTS: u32 = 1000;
const NS_PER_SEC: u64 = 1_000_000_000;
/// Under a free-space floor a file rotates at a quarter of the room the floor leaves, but never
/// below this.
const MIN_FLOOR_FILE_BYTES: u64 = 64 << 10;

const FINAL_SUFFIX: &str = ".pcapng";
/// Capture files: owner read/write, group read (the umask may take more away).
const FILE_MODE: u32 = 0o640;
/// A created output directory: owner all, group read/enter.
const DIR_MODE: u32 = 0o750;
const PART_SUFFIX: &str = ".pcapng.part";

/// What the writer is told: the `[output]` section of the config, used as it is (0 = never /
/// no limit). Retention counts finished files only: the file being written is not counted.
pub type Policy = crate::config::OutputConfig;

/// Supplies the Interface Statistics written when a file is closed.
pub trait StatsSource: Send {
    /// Current statistics of `interface_id`; called at each file close, once per interface.
    fn stats(&self, interface_id: u32) -> InterfaceStats;
}

/// What the writer has done since `open`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriterCounters {
    /// Packets that reached a file (counted when their buffer was written).
    pub packets_written: u64,
    /// Bytes written to files, all blocks included.
    pub bytes_written: u64,
    /// Files finished (renamed to their final name).
    pub files_closed: u64,
    /// Finished files deleted by retention.
    pub files_deleted: u64,
    /// Failed I/O operations on capture files (write, fsync, create, rename).
    pub write_errors: u64,
    /// Packets dropped because of those errors (their buffer could not be written, or no file
    /// was open).
    pub packets_lost_to_errors: u64,
}

/// Errors that keep the writer from starting, or a caller bug.
#[derive(Debug, thiserror::Error)]
pub enum WriterError {
    /// The prefix would make names outside the directory or unparsable ones.
    #[error(
        "invalid capture file prefix {prefix:?}: it must be non-empty and contain no '/' or NUL"
    )]
    InvalidPrefix {
        /// The rejected prefix.
        prefix: String,
    },
    /// The directory is missing and could not be created.
    #[error("cannot create capture directory {}", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The directory (made or found) could not be opened.
    #[error("cannot open capture directory {}", path.display())]
    OpenDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The directory could not be listed (to continue the sequence, recover `.part` files).
    #[error("cannot list capture directory {}", path.display())]
    ReadDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The first capture file could not be created (e.g. permission denied).
    #[error("cannot create capture file {}", path.display())]
    CreateFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// `write_packet` named an interface that `open` was not given.
    /// Anyone could plant or delete files in the output directory.
    #[error(
        "capture directory {} is writable by everyone (mode {mode:o}); use a directory only the \
         service can write (e.g. chmod 0750)",
        path.display()
    )]
    WorldWritable {
        /// The directory.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The directory, or one above it, could be changed by someone else than the service (and
    /// root): files could be planted, renamed or deleted under it. OpenSSH's StrictModes rule.
    #[error("capture directory {}: {problem}", dir.display())]
    UnsafePath {
        /// The output directory.
        dir: PathBuf,
        /// Which directory, and why, with the fix.
        problem: String,
    },
    #[error(
        "cannot give {} to group {group}: {source} (the daemon needs CAP_CHOWN, or to be a \
         member of the group, e.g. SupplementaryGroups={group} in its systemd unit, and to own \
         the directory)",
        path.display()
    )]
    Group {
        /// The output directory.
        path: PathBuf,
        /// The group's name as configured.
        group: String,
        source: io::Error,
    },
    #[error("writing the capture stream: {0}")]
    Stream(#[source] io::Error),
    /// The thread that finishes files could not be started.
    #[error("cannot start the thread that finishes capture files: {0}")]
    Finisher(#[source] io::Error),
    #[error("the number of interfaces cannot change while writing (was {was}, now {now})")]
    InterfaceCountChanged { was: u32, now: usize },
    #[error("packet for interface {interface_id}, but only {count} interfaces are described")]
    UnknownInterface {
        /// The interface id passed.
        interface_id: u32,
        /// How many interfaces there are.
        count: u32,
    },
}

/// The file being written.
struct OpenFile {
    file: File,
    /// The directory it is in (the writer's may change at a reload before it is finished).
    dir: Arc<OutDir>,
    part_name: String,
    final_name: String,
    /// Its `.part` path, for messages and [`RotatingWriter::current_path`].
    part_path: PathBuf,
    opened_ns: u64,
    /// Bytes encoded for this file that have left the buffer, written or lost. With the buffer's
    /// length: every byte encoded for the file (drives size rotation).
    done_bytes: u64,
    /// Packets of this file that have left the buffer, written or lost. With the buffered ones:
    /// every packet of the file (drives count rotation).
    done_packets: u64,
    /// Bytes known to be on disk; the next write goes there.
    disk_len: u64,
    /// Bytes sent to disk so far (writeback started, see [`WRITEBACK_BYTES`]).
    written_back: u64,
    /// The snap length each IDB promises (0 = none): no record of that interface may be longer.
    snaplens: Vec<u32>,
    /// False until the SHB and IDBs are on disk: before that, packets must not be written alone.
    header_on_disk: bool,
}

#[cfg(test)]
#[derive(Default)]
struct Faults {
    /// The next N buffer writes write half the buffer, then fail with ENOSPC.
    fail_writes: u32,
    /// The next N file creations fail with ENOSPC.
    fail_creates: u32,
}

/// Writes packets into a rotating series of pcapng files (see the module docs).
pub struct RotatingWriter {
    policy: Policy,
    /// `policy.directory`, held open: every file is made, renamed and deleted in it.
    dir: Arc<OutDir>,
    /// A new policy and interface descriptions from a config reload, applied when the next
    /// file starts.
    pending: Option<(Policy, Vec<InterfaceInfo>)>,
    section: SectionInfo,
    interface_count: u32,
    /// What the IDBs of the next file say.
    infos: Vec<InterfaceInfo>,
    /// SHB + IDBs, encoded once from `infos`, copied to the start of every file.
    header: Vec<u8>,
    stats: Box<dyn StatsSource>,
    buf: Vec<u8>,
    /// Packets in `buf`, to count them as written or lost.
    buffered_packets: u64,
    /// `write_packet` looks further only once `buf` reaches this length or `buffered_packets`
    /// this count: then a write or a rotation is due. Set by [`RotatingWriter::set_due`].
    due_len: usize,
    due_packets: u64,
    /// When the oldest data in `buf` arrived, as a `now_ns`: the latest `now_ns` at which `buf`
    /// was seen empty (a packet's time is the latest `now_ns`). Drives the 1 s flush.
    buffered_since_ns: u64,
    file: Option<OpenFile>,
    next_seq: u64,
    /// Latest time the caller gave us (CLOCK_MONOTONIC).
    now_ns: u64,
    /// `CLOCK_REALTIME - CLOCK_MONOTONIC` last given: file names are wall-clock time.
    wall_offset_ns: i64,
    last_open_attempt_ns: u64,
    last_error_log_ns: Option<u64>,
    unlogged_errors: u64,
    counters: WriterCounters,
    /// `keep_files` counts the file being written (see [`RotatingWriter::keep_files_include_current`]).
    count_current: bool,
    /// Finishes files and applies retention, on its own thread.
    finisher: Finisher,
    /// With a free-space floor: rotate the current file at this size (a quarter of the room
    /// the floor leaves), so deleting the oldest file never takes most of the capture. 0 = none.
    floor_rotate_bytes: u64,
    /// Prefixes of the other streams in the directory, for the free-space floor (see
    /// [`delete_oldest`]).
    others: Vec<String>,
    #[cfg(test)]
    faults: Faults,
}

impl fmt::Debug for RotatingWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RotatingWriter")
            .field("policy", &self.policy)
            .field("current_path", &self.current_path())
            .field("next_seq", &self.next_seq)
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

impl RotatingWriter {
    /// Creates the directory if needed, recovers `.part` files left by a crash, continues the
    /// sequence after the highest one found and creates the first file (SHB + IDBs on disk
    /// right away, so admins see the capture started).
    #[allow(
        clippy::needless_pass_by_value,
        reason = "the writer takes what it is given; encoded once here"
    )]
    pub fn open(
        policy: Policy,
        section: SectionInfo,
        interfaces: Vec<InterfaceInfo>,
        stats: Box<dyn StatsSource>,
        now: Now,
    ) -> Result<Self, WriterError> {
        let now_ns = now.mono_ns;
        check_prefix(&policy.prefix)?;
        let dir = open_dir(&policy.directory, policy.group.as_ref())?;
        let entries = scan(&dir, &policy.prefix)
            .map_err(|source| WriterError::ReadDir { path: policy.directory.clone(), source })?;
        for entry in entries.iter().filter(|e| e.part) {
            recover_part(&dir, &entry.name);
        }
        let next_seq = entries.iter().map(|e| e.seq).max().map_or(1, |max| max.saturating_add(1));

        let header = encode_header(&section, &interfaces);
        let finisher = Finisher::start().map_err(WriterError::Finisher)?;
        let mut writer = Self {
            policy,
            dir: Arc::new(dir),
            pending: None,
            section,
            interface_count: u32::try_from(interfaces.len()).unwrap_or(u32::MAX),
            infos: interfaces,
            header,
            stats,
            buf: Vec::with_capacity(BUF_CAPACITY),
            buffered_packets: 0,
            due_len: 0,
            due_packets: 0,
            buffered_since_ns: now_ns,
            file: None,
            next_seq,
            now_ns,
            wall_offset_ns: now.offset_ns,
            last_open_attempt_ns: now_ns,
            last_error_log_ns: None,
            unlogged_errors: 0,
            counters: WriterCounters::default(),
            count_current: false,
            finisher,
            floor_rotate_bytes: 0,
            others: Vec::new(),
            #[cfg(test)]
            faults: Faults::default(),
        };
        // Learns how much the finished files hold (the floor's rotation size needs it), and
        // makes room under the floor before the first write.
        writer.apply_retention();
        writer
            .start_file(now_ns)
            .map_err(|(path, source)| WriterError::CreateFile { path, source })?;
        Ok(writer)
    }

    /// The prefixes of the other streams writing into this directory: the free-space floor
    /// deletes the oldest finished file of any of them (see [`delete_oldest`]).
    pub fn set_other_streams(&mut self, prefixes: Vec<String>) {
        self.others = prefixes;
        if self.file.is_some() {
            self.set_floor_rotate_bytes();
            self.set_due();
        }
    }

    /// The size at which the floor rotates a file: a quarter of the room it leaves, shared with
    /// the files the other streams in the directory are writing.
    fn set_floor_rotate_bytes(&mut self) {
        let streams = 1 + self.others.len() as u64;
        self.floor_rotate_bytes = self.space_and_floor().map_or(0, |(space, floor)| {
            let room = (space.free + self.finisher.retained_bytes()).saturating_sub(floor);
            (room / 4 / streams).max(MIN_FLOOR_FILE_BYTES)
        });
    }

    /// The prefix of the files of this stream.
    pub fn prefix(&self) -> &str {
        &self.policy.prefix
    }

    /// Appends one packet. `ts_ns`: ns since the Unix epoch; `data`: the captured bytes;
    /// `orig_len`: the frame's length on the wire; `flags`: the epb_flags word (direction; 0
    /// writes no option). No allocation, and no syscall unless the buffer reached 1 MiB or the
    /// file is due for rotation.
    #[inline]
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

    /// [`RotatingWriter::write_packet`], with an encoded opt_comment option for the packet
    /// (see [`super::pcapng::encode_epb_commented`]; empty: none).
    #[inline]
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
        if self.file.is_none() {
            // Creating the file failed; tick() retries.
            self.counters.packets_lost_to_errors += 1;
            return Ok(());
        }
        if let Some(file) = &self.file
            && let Some(&limit) = file.snaplens.get(interface_id as usize)
            && limit != 0
            && data.len() > limit as usize
        {
            self.outgrown(interface_id as usize, data.len());
        }
        encode_epb_commented(&mut self.buf, interface_id, ts_ns, data, orig_len, flags, comment);
        self.buffered_packets += 1;
        if self.buf.len() >= self.due_len || self.buffered_packets >= self.due_packets {
            if self.rotation_due() {
                self.rotate(self.now_ns);
            } else {
                self.flush();
            }
        }
        Ok(())
    }

    /// `rotate_bytes`, or the smaller size the free-space floor sets; 0 = no size limit.
    fn rotate_bytes(&self) -> u64 {
        match (self.policy.rotate_bytes, self.floor_rotate_bytes) {
            (0, n) | (n, 0) => n,
            (r, f) => r.min(f),
        }
    }

    /// True when the file has reached its size limit or `rotate_packets`.
    fn rotation_due(&self) -> bool {
        let Some(file) = &self.file else { return false };
        let policy = &self.policy;
        let rotate_bytes = self.rotate_bytes();
        (rotate_bytes != 0 && file.done_bytes + self.buf.len() as u64 >= rotate_bytes)
            || (policy.rotate_packets != 0
                && file.done_packets + self.buffered_packets >= policy.rotate_packets)
    }

    /// Sets the buffer length and packet count at which `write_packet` must write the buffer
    /// out or rotate: [`FLUSH_BYTES`], or where the file reaches a rotation limit if sooner.
    fn set_due(&mut self) {
        let policy = &self.policy;
        let rotate_bytes = self.rotate_bytes();
        let (mut due_len, mut due_packets) = (FLUSH_BYTES, u64::MAX);
        if let Some(file) = &self.file {
            if rotate_bytes != 0 {
                let room = rotate_bytes.saturating_sub(file.done_bytes);
                due_len = due_len.min(usize::try_from(room).unwrap_or(usize::MAX));
            }
            if policy.rotate_packets != 0 {
                due_packets = policy.rotate_packets.saturating_sub(file.done_packets);
            }
        }
        self.due_len = due_len;
        self.due_packets = due_packets;
    }

    /// The wall clock's offset from the monotonic time given to the other calls, for the names
    /// of the files started from now on.
    pub fn set_wall_offset(&mut self, offset_ns: i64) {
        self.wall_offset_ns = offset_ns;
    }

    /// Housekeeping; call at least every 100 ms with CLOCK_MONOTONIC `now_ns`. Rotates when
    /// `rotate_seconds` have passed since the file opened, writes buffered data that is 1 s old,
    /// retries creating a file after an error. Errors are handled inside (counted, logged), so
    /// this returns `Ok`.
    pub fn tick(&mut self, now_ns: u64) -> Result<(), WriterError> {
        self.now_ns = now_ns;
        let Some(file) = &self.file else {
            if now_ns.saturating_sub(self.last_open_attempt_ns) >= REOPEN_INTERVAL_NS {
                // A reload may have pointed the output somewhere usable.
                self.apply_pending();
                self.try_start_file(now_ns);
            }
            return Ok(());
        };
        let rotate_ns = self.policy.rotate_seconds.saturating_mul(NS_PER_SEC);
        if rotate_ns != 0 && now_ns.saturating_sub(file.opened_ns) >= rotate_ns {
            self.rotate(now_ns);
            return Ok(());
        }
        if self.buf.is_empty() {
            self.buffered_since_ns = now_ns;
        } else if now_ns.saturating_sub(self.buffered_since_ns) >= FLUSH_AGE_NS {
            self.flush();
        }
        Ok(())
    }

    /// Finishes the current file (ISB per interface, write, fsync, rename to the final name),
    /// then applies retention, and waits for every file handed to the finisher. Returns the
    /// finished file, or `None` if no file was open or it could not be finished (already counted
    /// and logged). I/O errors do not make this fail.
    pub fn close(self, now_ns: u64) -> Result<Option<PathBuf>, WriterError> {
        Ok(self.close_counted(now_ns).0)
    }

    /// [`RotatingWriter::close`], and the counters once everything is finished.
    pub fn close_counted(mut self, now_ns: u64) -> (Option<PathBuf>, WriterCounters) {
        self.now_ns = now_ns;
        // No file follows: with `keep_files_include_current`, the last one takes its place.
        self.count_current = false;
        let handed = self.finish_file();
        let last = self.finisher.close();
        (last.filter(|_| handed), self.counters())
    }

    /// Waits until every file handed to the finisher is finished and retention has run.
    pub fn wait_finished(&self) {
        self.finisher.wait_idle();
    }

    /// Makes `keep_files` count the file being written too, as dumpcap's `-b files:N` does
    /// (N files on disk in all); by default it counts finished files only.
    pub fn keep_files_include_current(&mut self) {
        self.count_current = true;
    }

    /// The `.part` file being written, if any (none only after creating one failed).
    pub fn current_path(&self) -> Option<&Path> {
        self.file.as_ref().map(|f| f.part_path.as_path())
    }

    /// Counters since `open`, the finisher's included.
    pub fn counters(&self) -> WriterCounters {
        let (closed, deleted, errors) = self.finisher.counters();
        let mut c = self.counters;
        c.files_closed += closed;
        c.files_deleted += deleted;
        c.write_errors += errors;
        c
    }

    fn rotate(&mut self, now_ns: u64) {
        self.finish_file();
        self.apply_pending();
        self.try_start_file(now_ns);
    }

    /// Takes new output settings and interface descriptions (a config reload). They apply from
    /// the next file, so the current one stays consistent; the interface count cannot change
    /// (that takes [`RotatingWriter::switch_interfaces`]).
    pub fn reconfigure(
        &mut self,
        policy: Policy,
        interfaces: &[InterfaceInfo],
    ) -> Result<(), WriterError> {
        if interfaces.len() != self.interface_count as usize {
            return Err(WriterError::InterfaceCountChanged {
                was: self.interface_count,
                now: interfaces.len(),
            });
        }
        check_prefix(&policy.prefix)?;
        // The current file ends at the stricter of its old and the new limits: a reload that
        // adds rotate_seconds to a config without rotation must not wait for a next file that
        // would never come, and one that loosens a limit must still reach a next file for
        // its other settings. Everything else applies from the next file.
        let stricter = |old: u64, new: u64| match (old, new) {
            (0, n) | (n, 0) => n,
            (o, n) => o.min(n),
        };
        let p = &mut self.policy;
        p.rotate_bytes = stricter(p.rotate_bytes, policy.rotate_bytes);
        p.rotate_seconds = stricter(p.rotate_seconds, policy.rotate_seconds);
        p.rotate_packets = stricter(p.rotate_packets, policy.rotate_packets);
        self.set_due();
        self.pending = Some((policy, interfaces.to_vec()));
        // A larger snap length cannot wait for the next file: its IDBs would promise less than
        // the new records hold, and libpcap stops reading at the first longer one. (A smaller
        // one keeps the promise: it applies from the next file.)
        let raised = |(old, new): (&u32, &InterfaceInfo)| {
            *old != 0 && (new.snaplen == 0 || new.snaplen > *old)
        };
        if let Some(file) = &self.file
            && let Some((old, new)) = file.snaplens.iter().zip(interfaces).find(|&p| raised(p))
        {
            info!(
                "snaplen of {} raised from {old} to {}: starting a new file",
                new.name, new.snaplen
            );
            self.rotate(self.now_ns);
        }
        Ok(())
    }

    /// A record longer than the file's snap length arrived: the kernel took a raised snaplen
    /// before the writer heard of the reload. The file ends here; the next one takes the
    /// reloaded settings if they are here and hold the record, else promises no snap length.
    #[cold]
    fn outgrown(&mut self, interface: usize, len: usize) {
        let (policy, mut infos) =
            self.pending.take().unwrap_or_else(|| (self.policy.clone(), self.infos.clone()));
        if let Some(info) = infos.get_mut(interface)
            && info.snaplen != 0
            && len > info.snaplen as usize
        {
            info.snaplen = 0;
        }
        self.pending = Some((policy, infos));
        info!("a {len}-byte record is longer than this file's snap length: starting a new file");
        self.rotate(self.now_ns);
    }

    /// Changes the set of interfaces (interfaces added to or removed from a running capture).
    /// pcapng numbers interfaces per section, so this finishes the current file now, with its
    /// statistics from the old `stats`, and starts the next one with the new interfaces, the new
    /// `stats` and `policy`. Packets written from here on use the new interface ids.
    pub fn switch_interfaces(
        &mut self,
        policy: Policy,
        interfaces: &[InterfaceInfo],
        stats: Box<dyn StatsSource>,
    ) -> Result<(), WriterError> {
        check_prefix(&policy.prefix)?;
        self.finish_file();
        self.interface_count = u32::try_from(interfaces.len()).unwrap_or(u32::MAX);
        self.stats = stats;
        self.pending = Some((policy, interfaces.to_vec()));
        self.apply_pending();
        self.try_start_file(self.now_ns);
        Ok(())
    }

    /// Switches to the reloaded settings, between two files. A new directory or prefix gets its
    /// own sequence (continuing whatever that directory holds).
    fn apply_pending(&mut self) {
        let Some((policy, infos)) = self.pending.take() else { return };
        self.header = encode_header(&self.section, &infos);
        self.infos = infos;
        if policy.directory != self.policy.directory
            || policy.prefix != self.policy.prefix
            || policy.group != self.policy.group
        {
            let dir = &policy.directory;
            let opened = open_dir(dir, policy.group.as_ref())
                .map_err(|e| io::Error::other(e.to_string()))
                .and_then(|held| Ok((scan(&held, &policy.prefix)?, held)));
            match opened {
                Ok((entries, held)) => {
                    self.next_seq =
                        entries.iter().map(|e| e.seq).max().map_or(1, |m| m.saturating_add(1));
                    self.dir = Arc::new(held);
                }
                Err(err) => {
                    self.report_io_error("cannot use the new output directory", dir, &err);
                    // The old directory stays, but the header (set above) must describe the
                    // interfaces the packets will come from.
                    return;
                }
            }
        }
        if policy != self.policy {
            info!("output settings reloaded: next file in {}", policy.directory.display());
        }
        self.policy = policy;
    }

    /// Creates the next file; on failure counts, logs and leaves no file open (tick retries).
    fn try_start_file(&mut self, now_ns: u64) {
        if let Err((path, err)) = self.start_file(now_ns) {
            self.report_io_error("cannot create capture file", &path, &err);
        }
    }

    /// Creates `{prefix}_{seq}_{time}.pcapng.part` with O_EXCL, bumping seq past any name that
    /// exists (as `.part` or final), locks it and writes the SHB and IDBs. On error: the name
    /// that could not be created, and why.
    fn start_file(&mut self, now_ns: u64) -> Result<(), (PathBuf, io::Error)> {
        self.last_open_attempt_ns = now_ns;
        self.buf.clear();
        let stamp = utc_stamp(now_ns.saturating_add_signed(self.wall_offset_ns));
        let mut attempts = 0;
        let (file, part_name, final_name) = loop {
            let seq = self.next_seq;
            let base = format!("{}_{seq:05}_{stamp}", self.policy.prefix);
            let final_name = format!("{base}{FINAL_SUFFIX}");
            let part_name = format!("{base}{PART_SUFFIX}");
            let result = if self.dir.exists(&final_name) {
                Err(io::ErrorKind::AlreadyExists.into())
            } else {
                self.create_new(&part_name)
            };
            match result {
                Ok(file) => {
                    self.next_seq = seq.saturating_add(1);
                    break (file, part_name, final_name);
                }
                Err(e)
                    if e.kind() == io::ErrorKind::AlreadyExists && attempts < MAX_NAME_ATTEMPTS =>
                {
                    // Someone made this name since we scanned: never overwrite, take the next.
                    attempts += 1;
                    self.next_seq = seq.saturating_add(1);
                }
                Err(err) => return Err((self.dir.join(&part_name), err)),
            }
        };
        let part_path = self.dir.join(&part_name);
        // Tells recover_part() in another writer on this directory that the file is live.
        // Best effort: some filesystems cannot lock, and the name is ours anyway.
        if let Err(TryLockError::Error(e)) = file.try_lock() {
            warn!("cannot lock {}: {e}", part_path.display());
        }
        info!("writing {}", part_path.display());
        self.set_floor_rotate_bytes();
        self.buf.extend_from_slice(&self.header);
        self.file = Some(OpenFile {
            file,
            dir: Arc::clone(&self.dir),
            part_name,
            final_name,
            part_path,
            opened_ns: now_ns,
            done_bytes: 0,
            done_packets: 0,
            disk_len: 0,
            written_back: 0,
            snaplens: self.infos.iter().map(|i| i.snaplen).collect(),
            header_on_disk: false,
        });
        self.buffered_since_ns = now_ns;
        self.flush();
        Ok(())
    }

    fn create_new(&mut self, name: &str) -> io::Result<File> {
        #[cfg(test)]
        if self.faults.fail_creates > 0 {
            self.faults.fail_creates -= 1;
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        // O_EXCL: never overwrite; O_NOFOLLOW: never write through a symlink someone planted
        // under our name. 0640: readable by the service's group only.
        let file = self.dir.create_new(name, FILE_MODE)?;
        if let Some(group) = &self.policy.group
            && let Err(err) = crate::sys::fchown_group(file.as_fd(), group.gid)
        {
            // The directory was given to the group, so this should not happen; the frames
            // matter more than the file's group.
            let path = self.dir.join(name);
            self.report_io_error("cannot give the capture file to its group", &path, &err);
        }
        Ok(file)
    }

    /// Writes the buffer at the end of the file's good data. On error the buffer's packets are
    /// lost, but the file stays a valid pcapng: a partial write is cut off again, and if the
    /// header never made it to disk it stays buffered to go first next time.
    fn flush(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        if self.file.is_none() {
            self.counters.packets_lost_to_errors += self.buffered_packets;
            self.buf.clear();
            self.buffered_packets = 0;
            self.buffered_since_ns = self.now_ns;
            return;
        }
        let buffered_bytes = self.buf.len();
        // Checked before the write, so the floor is never crossed (see `room_for`).
        let room = self.room_for(buffered_bytes as u64);
        let Some(file) = self.file.as_mut() else { return };
        // Positioned writes: after a failed partial write the next one still lands right after
        // the last good block. (Tests can make it fail halfway, as a full disk does.)
        #[cfg(test)]
        let result = if self.faults.fail_writes > 0 {
            self.faults.fail_writes -= 1;
            let _ = file.file.write_all_at(&self.buf[..self.buf.len() / 2], file.disk_len);
            Err(io::Error::from_raw_os_error(libc::ENOSPC))
        } else {
            file.file.write_all_at(&self.buf, file.disk_len)
        };
        #[cfg(not(test))]
        let result = file.file.write_all_at(&self.buf, file.disk_len);
        let result = room.and(result);
        match result {
            Ok(()) => {
                let written = self.buf.len() as u64;
                file.disk_len += written;
                file.header_on_disk = true;
                self.counters.bytes_written += written;
                self.counters.packets_written += self.buffered_packets;
                self.buf.clear();
                if file.disk_len - file.written_back >= WRITEBACK_BYTES {
                    // Whole pages only: the last one is written again by the next buffer.
                    let end = file.disk_len & !(PAGE - 1);
                    start_writeback(&file.file, file.written_back, end - file.written_back);
                    file.written_back = end;
                }
            }
            Err(err) => {
                // Whatever part of the buffer landed is a broken block: cut it, so readers see
                // only whole blocks even if no later write succeeds.
                let _ = file.file.set_len(file.disk_len);
                self.counters.packets_lost_to_errors += self.buffered_packets;
                if file.header_on_disk {
                    self.buf.clear();
                } else {
                    self.buf.truncate(self.header.len());
                }
                let path = file.part_path.clone();
                self.report_io_error("cannot write capture file", &path, &err);
                if err.raw_os_error() == Some(libc::ENOSPC) {
                    // Deleting the oldest files may make room for the next buffer.
                    let retention = self.retention();
                    self.finisher.retain_soon(retention);
                }
            }
        }
        // Written or lost, the packets and bytes have left the buffer (all but a header that
        // must go first next time).
        if let Some(file) = self.file.as_mut() {
            file.done_bytes += (buffered_bytes - self.buf.len()) as u64;
            file.done_packets += self.buffered_packets;
        }
        self.buffered_packets = 0;
        self.buffered_since_ns = self.now_ns;
        self.set_due();
    }

    /// Writes the ISBs and remaining data of the current file and hands it to the finisher
    /// (fsync, rename to its final name), with a retention pass after it; without a file to
    /// finish, the retention pass alone. Returns whether a file was handed over.
    fn finish_file(&mut self) -> bool {
        let retention = self.retention();
        if self.file.is_none() {
            self.finisher.retain(retention);
            return false;
        }
        for interface_id in 0..self.interface_count {
            let stats = self.stats.stats(interface_id);
            encode_isb(&mut self.buf, interface_id, &stats);
        }
        self.flush();
        self.buf.clear();
        self.buffered_since_ns = self.now_ns;
        let Some(file) = self.file.take() else { return false };
        if file.disk_len == 0 {
            // Not even the header was ever written: an empty file is no pcapng, drop it.
            warn!("removing {}: nothing could be written to it", file.part_path.display());
            let _ = file.dir.remove(&file.part_name);
            self.finisher.retain(retention);
            return false;
        }
        let written = Written {
            file: file.file,
            dir: file.dir,
            part_name: file.part_name,
            final_name: file.final_name,
            part_path: file.part_path,
            packets: file.done_packets,
            bytes: file.disk_len,
        };
        self.finisher.finish(written, retention);
        true
    }

    /// What a retention pass queued now keeps.
    fn retention(&self) -> Retention {
        let mut keep_files = self.policy.keep_files;
        if self.count_current && keep_files > 1 {
            // A file is being written, or about to be: it takes one of the places.
            keep_files -= 1;
        }
        Retention {
            dir: Arc::clone(&self.dir),
            policy: self.policy.clone(),
            keep_files,
            others: self.others.clone(),
        }
    }

    /// The output file system's space and the floor to keep free on it (see [`space_and_floor`]).
    fn space_and_floor(&self) -> Option<(crate::sys::FsSpace, u64)> {
        space_and_floor(&self.dir, &self.policy)
    }

    /// Makes room for writing `len` bytes above the free-space floor, deleting the oldest
    /// finished files (the newest too, if it must). Err when even that is not enough: the
    /// caller then drops the buffer rather than fill the disk.
    fn room_for(&mut self, len: u64) -> io::Result<()> {
        let Some((space, floor)) = self.space_and_floor() else { return Ok(()) };
        if space.free >= floor.saturating_add(len) {
            return Ok(());
        }
        self.delete_oldest(floor.saturating_add(len));
        match self.dir.space() {
            Some(space) if space.free < floor.saturating_add(len) => Err(io::Error::new(
                io::ErrorKind::StorageFull,
                format!(
                    "the file system is at its free-space floor ({} free, keep_free_* keeps {floor} \
                     bytes free) and no older capture file is left to delete",
                    space.free
                ),
            )),
            _ => Ok(()),
        }
    }

    /// Applies `keep_files`, `keep_bytes` and the free-space floor.
    fn apply_retention(&mut self) {
        let floor = self.space_and_floor().map_or(0, |(_, floor)| floor);
        self.delete_oldest(floor);
    }

    /// Deletes the oldest finished files now, on the writer thread (see [`delete_oldest`]).
    fn delete_oldest(&mut self, need_free: u64) {
        let keep_files = self.retention().keep_files;
        let current = self
            .file
            .as_ref()
            .filter(|f| Arc::ptr_eq(&f.dir, &self.dir))
            .map(|f| f.final_name.as_str());
        let pruned =
            delete_oldest(&self.dir, &self.policy, keep_files, need_free, current, &self.others);
        self.counters.files_deleted += pruned.deleted;
        if let Some(bytes) = pruned.retained_bytes {
            self.finisher.set_retained_bytes(bytes);
        }
        if let Some(err) = pruned.error {
            let dir = self.dir.path().to_path_buf();
            self.report_io_error("cannot list capture directory", &dir, &err);
        }
    }

    /// Counts an I/O error and logs it, at most once per [`ERROR_LOG_INTERVAL_NS`].
    fn report_io_error(&mut self, what: &str, path: &Path, err: &io::Error) {
        self.counters.write_errors += 1;
        let now = self.now_ns;
        if let Some(last) = self.last_error_log_ns
            && now.saturating_sub(last) < ERROR_LOG_INTERVAL_NS
        {
            self.unlogged_errors += 1;
            return;
        }
        warn!(
            "{what} {}: {err} ({} more errors since the last warning; {} packets lost so far)",
            path.display(),
            self.unlogged_errors,
            self.counters.packets_lost_to_errors
        );
        self.last_error_log_ns = Some(now);
        self.unlogged_errors = 0;
    }
}

impl Drop for RotatingWriter {
    /// Without `close` (a panic, say) the buffered data still goes to the `.part` file, which the
    /// next `open` recovers.
    fn drop(&mut self) {
        if self.file.is_some() {
            self.flush();
        }
    }
}

/// What a retention pass did.
#[derive(Default)]
pub(super) struct Pruned {
    /// Files deleted.
    pub(super) deleted: u64,
    /// Bytes in the finished files left; `None` when they were not looked at (no limit).
    pub(super) retained_bytes: Option<u64>,
    /// The directory could not be listed: nothing was deleted.
    pub(super) error: Option<io::Error>,
}

/// Deletes the oldest finished files of `policy`'s prefix in `dir` while there are more than
/// `keep_files`, they hold more than `policy.keep_bytes`, or less than `need_free` bytes are
/// free. `current` is the final name of the file being written, never deleted. `others` are the
/// prefixes of the other streams writing into `dir` (targets with files of their own): the
/// free-space floor is the directory's, so it takes the oldest finished file of any stream,
/// by the time in its name; `keep_files` and `keep_bytes` count this stream's files only.
pub(super) fn delete_oldest(
    dir: &OutDir,
    policy: &Policy,
    keep_files: u64,
    need_free: u64,
    current: Option<&str>,
    others: &[String],
) -> Pruned {
    if others.is_empty() {
        return delete_oldest_of_stream(dir, policy, keep_files, need_free, current);
    }
    let mut pruned = delete_oldest_of_stream(dir, policy, keep_files, 0, current);
    let short = || need_free != 0 && dir.space().is_some_and(|space| space.free < need_free);
    if pruned.error.is_some() || !short() {
        return pruned;
    }
    let mut finished = Vec::new();
    for prefix in std::iter::once(&policy.prefix).chain(others) {
        match scan(dir, prefix) {
            Ok(entries) => finished.extend(
                entries
                    .into_iter()
                    .filter(|e| !e.part && current != Some(e.name.as_str()))
                    .filter_map(|e| {
                        Some((stamp_of(&e.name)?.to_owned(), prefix == &policy.prefix, e))
                    }),
            ),
            Err(err) => {
                pruned.error = Some(err);
                return pruned;
            }
        }
    }
    finished.sort_by(|(a, _, x), (b, _, y)| (a, x.seq, &x.name).cmp(&(b, y.seq, &y.name)));
    for (_, ours, entry) in finished {
        if !short() {
            break;
        }
        // Regular files only, as above.
        let Ok(Some(size)) = dir.file_len(&entry.name) else { continue };
        match dir.remove(&entry.name) {
            Ok(()) => {
                info!(
                    "deleted {} ({size} bytes) to keep the free-space floor",
                    dir.join(&entry.name).display()
                );
                pruned.deleted += 1;
                if ours && let Some(total) = pruned.retained_bytes.as_mut() {
                    *total = total.saturating_sub(size);
                }
            }
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => warn!("cannot delete {}: {err}", dir.join(&entry.name).display()),
        }
    }
    pruned
}

/// The `YYYYmmddHHMMSS` in a file name of ours.
fn stamp_of(name: &str) -> Option<&str> {
    let body = name.strip_suffix(FINAL_SUFFIX).or_else(|| name.strip_suffix(PART_SUFFIX))?;
    body.get(body.len().checked_sub(14)?..)
}

/// [`delete_oldest`] within one stream.
fn delete_oldest_of_stream(
    dir: &OutDir,
    policy: &Policy,
    keep_files: u64,
    need_free: u64,
    current: Option<&str>,
) -> Pruned {
    let keep_bytes = policy.keep_bytes;
    let mut pruned = Pruned::default();
    if keep_files == 0 && keep_bytes == 0 && need_free == 0 {
        return pruned;
    }
    let entries = match scan(dir, &policy.prefix) {
        Ok(entries) => entries,
        Err(err) => {
            pruned.error = Some(err);
            return pruned;
        }
    };
    let mut finished: Vec<(Entry, u64)> = entries
        .into_iter()
        .filter(|e| !e.part)
        .filter_map(|e| {
            // Regular files only: a symlink under our name is not ours to count or delete.
            let len = dir.file_len(&e.name).ok()??;
            Some((e, len))
        })
        .collect();
    finished.sort_by(|(a, _), (b, _)| (a.seq, &a.name).cmp(&(b.seq, &b.name)));
    let mut count = finished.len() as u64;
    let mut total: u64 = finished.iter().map(|(_, size)| size).sum();
    // The newest finished file is kept against keep_files and keep_bytes: limits smaller
    // than one file (keep_bytes below rotate_bytes) keep one file, not none. The floor
    // protects the host, so it may take the newest too.
    let newest = finished.last().map(|(e, _)| e.name.clone());
    let short_of_space =
        || need_free != 0 && dir.space().is_some_and(|space| space.free < need_free);
    for (entry, size) in finished {
        let short = short_of_space();
        if !((keep_files != 0 && count > keep_files)
            || (keep_bytes != 0 && total > keep_bytes)
            || short)
        {
            break;
        }
        if current == Some(entry.name.as_str()) {
            continue;
        }
        if newest.as_ref() == Some(&entry.name) && !short {
            break;
        }
        let path = dir.join(&entry.name);
        match dir.remove(&entry.name) {
            Ok(()) => {
                info!("deleted {} ({size} bytes) to keep within retention limits", path.display());
                pruned.deleted += 1;
            }
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            // Counted as gone anyway: one undeletable file must not make us delete the rest.
            Err(err) => warn!("cannot delete {}: {err}", path.display()),
        }
        count -= 1;
        total -= size;
    }
    pruned.retained_bytes = Some(total);
    pruned
}

/// The output file system's space and the floor to keep free on it: the larger of
/// `keep_free_bytes` and `keep_free_percent` of its size. `None` without a floor (or when
/// statvfs fails: better to write than to guess).
pub(super) fn space_and_floor(dir: &OutDir, policy: &Policy) -> Option<(crate::sys::FsSpace, u64)> {
    if policy.keep_free_bytes == 0 && policy.keep_free_percent == 0 {
        return None;
    }
    let space = dir.space()?;
    Some((space, floor_bytes(policy, space.total)))
}

/// Starts writing `len` bytes of `file` from `offset` to disk, without waiting for it. Best
/// effort: the fsync that finishes the file reports what fails.
fn start_writeback(file: &File, offset: u64, len: u64) {
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else { return };
    // SAFETY: a valid fd; the call only starts I/O on the file's own pages.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE);
    }
}

/// A file of our naming scheme found in the directory.
#[derive(Debug)]
struct Entry {
    seq: u64,
    part: bool,
    /// Its name in the directory.
    name: String,
}

/// SHB + one IDB per interface: the start of every file.
fn encode_header(section: &SectionInfo, interfaces: &[InterfaceInfo]) -> Vec<u8> {
    let mut header = Vec::new();
    encode_shb(&mut header, section);
    for interface in interfaces {
        encode_idb(&mut header, interface);
    }
    header
}

/// The free space to keep on a file system of `total` bytes: the larger of the two floors.
pub fn floor_bytes(policy: &Policy, total: u64) -> u64 {
    let percent = u128::from(total) * u128::from(policy.keep_free_percent) / 100;
    policy.keep_free_bytes.max(u64::try_from(percent).unwrap_or(u64::MAX))
}

/// Creates the output directory (and parents) with mode 0750 if missing, opens it, gives it to
/// `group`, and checks the strict modes of its path and of the directory held (see
/// [`check_dir_path`], [`check_held_dir`]).
fn open_dir(dir: &Path, group: Option<&FileGroup>) -> Result<OutDir, WriterError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
        .map_err(|source| WriterError::CreateDir { path: dir.to_path_buf(), source })?;
    let open_err = |source| WriterError::OpenDir { path: dir.to_path_buf(), source };
    let held = OutDir::open(dir).map_err(open_err)?;
    if let Some(group) = group {
        // Checked here, at start-up and on reload, so that giving each file to the group
        // later cannot fail for want of permission. The directory could already have the
        // group (which its owner may always keep), so membership is checked as well: that is
        // what giving our own new files to the group takes.
        let give = || -> io::Result<()> {
            if !crate::sys::may_chown_to(group.gid) {
                return Err(io::Error::from_raw_os_error(libc::EPERM));
            }
            crate::sys::fchown_group(held.as_fd(), group.gid)
        };
        give().map_err(|source| WriterError::Group {
            path: dir.to_path_buf(),
            group: group.name.clone(),
            source,
        })?;
        let mode = held.stat().map_err(open_err)?.mode;
        if mode & 0o050 != 0o050 {
            warn!(
                "{}: group {} cannot list it (mode {:o}); chmod g+rx to let it read the files",
                dir.display(),
                group.name,
                mode & 0o7777
            );
        }
    }
    // After giving it to the group: the group it was given may write to it.
    check_dir_path(dir, group)?;
    check_held_dir(&held, dir, group)?;
    Ok(held)
}

/// Checks output settings before they are used (a config reload): the prefix, and that the
/// directory exists or can be created, can be opened and given to the group, and that no one
/// but the service and root can change it.
pub fn prepare_output(policy: &Policy) -> Result<(), WriterError> {
    check_prefix(&policy.prefix)?;
    open_dir(&policy.directory, policy.group.as_ref()).map(drop)
}

/// A prefix names files in the output directory only.
fn check_prefix(prefix: &str) -> Result<(), WriterError> {
    if prefix.is_empty() || prefix.contains(['/', '\0']) {
        return Err(WriterError::InvalidPrefix { prefix: prefix.to_owned() });
    }
    Ok(())
}

/// OpenSSH's StrictModes for the output directory `dir` (which exists) and every directory
/// above it: each must be owned by the service's user or root, and writable by no one else. The
/// output directory may be group-writable for `[output] group` only; a directory above it may
/// be world-writable only with the sticky bit (`/tmp`), where no one else can rename or delete
/// what is ours. `run` (at start-up and on reload) and `check` both ask this.
pub fn check_dir_path(dir: &Path, group: Option<&FileGroup>) -> Result<(), WriterError> {
    walk_dir_path(dir, dir, group)
}

/// [`check_dir_path`] for an output directory `dir` not made yet: `existing`, the nearest
/// directory above it, and those above that are checked as its parents.
pub fn check_future_dir_path(dir: &Path, existing: &Path) -> Result<(), WriterError> {
    walk_dir_path(dir, existing, None)
}

/// Checks `start` and every directory above it; `start` is the output directory if it is `dir`.
fn walk_dir_path(dir: &Path, start: &Path, group: Option<&FileGroup>) -> Result<(), WriterError> {
    let unsafe_path = |problem: String| WriterError::UnsafePath { dir: dir.to_path_buf(), problem };
    let real = fs::canonicalize(start)
        .map_err(|e| unsafe_path(format!("cannot resolve {}: {e}", start.display())))?;
    let output_dir = start == dir;
    // SAFETY: geteuid cannot fail.
    let euid = unsafe { libc::geteuid() };
    let mut at: Option<&Path> = Some(&real);
    while let Some(path) = at {
        let meta = fs::metadata(path)
            .map_err(|e| unsafe_path(format!("cannot read {}: {e}", path.display())))?;
        let node = DirNode { uid: meta.uid(), gid: meta.gid(), mode: meta.mode() };
        let is_output = output_dir && path == real;
        let output_group = if is_output { group.map(|g| g.gid) } else { None };
        judge_dir(node, is_output, euid, output_group)
            .map_err(|problem| dir_error(dir, path, node, is_output, &problem))?;
        at = path.parent();
    }
    Ok(())
}

/// The strict-mode rule for the output directory applied to the directory `held` (its fd), so
/// that the directory checked is the one written to: one swapped in for it while the path was
/// checked is refused.
fn check_held_dir(held: &OutDir, dir: &Path, group: Option<&FileGroup>) -> Result<(), WriterError> {
    let unsafe_path = |problem: String| WriterError::UnsafePath { dir: dir.to_path_buf(), problem };
    let st = held.stat().map_err(|e| unsafe_path(format!("cannot read it: {e}")))?;
    // SAFETY: geteuid cannot fail.
    let euid = unsafe { libc::geteuid() };
    let node = DirNode { uid: st.uid, gid: st.gid, mode: st.mode };
    judge_dir(node, true, euid, group.map(|g| g.gid))
        .map_err(|problem| dir_error(dir, dir, node, true, &problem))?;
    // The path checked above must still lead to the directory held, or its parents were not
    // the ones checked.
    let now = fs::metadata(dir).map_err(|e| unsafe_path(format!("cannot read it: {e}")))?;
    if (now.dev(), now.ino()) != (st.dev, st.ino) {
        return Err(unsafe_path(
            "was replaced by another directory while it was being checked".to_owned(),
        ));
    }
    Ok(())
}

/// The error for directory `path` on the way to output directory `dir`, which `judge_dir`
/// refused for `problem`.
fn dir_error(dir: &Path, path: &Path, node: DirNode, output: bool, problem: &str) -> WriterError {
    if output && node.mode & 0o002 != 0 {
        return WriterError::WorldWritable { path: dir.to_path_buf(), mode: node.mode & 0o7777 };
    }
    WriterError::UnsafePath {
        dir: dir.to_path_buf(),
        problem: format!("{} {problem}", path.display()),
    }
}

/// Owner and permission bits of one directory on the output path.
#[derive(Clone, Copy, Debug)]
struct DirNode {
    uid: u32,
    gid: u32,
    mode: u32,
}

/// Whether someone other than `euid` and root could change directory `node` (`output`: the
/// output directory itself, which may be group-writable for `output_group`). Err: why, and how
/// to fix it.
fn judge_dir(
    node: DirNode,
    output: bool,
    euid: u32,
    output_group: Option<u32>,
) -> Result<(), String> {
    let mode = node.mode & 0o7777;
    if node.uid != euid && node.uid != 0 {
        return Err(format!(
            "is owned by uid {}, not by the service's user (uid {euid}) or root: that user could \
             rename or delete the capture files; chown it to the service's user",
            node.uid
        ));
    }
    let sticky = mode & 0o1000 != 0;
    if mode & 0o002 != 0 && (output || !sticky) {
        return Err(format!(
            "is writable by everyone (mode {mode:o}): anyone could plant, rename or delete files \
             under it; chmod o-w"
        ));
    }
    if mode & 0o020 != 0 && !(output && output_group == Some(node.gid)) && !sticky {
        let fix =
            if output { "chmod g-w, or name that group in [output] group" } else { "chmod g-w" };
        return Err(format!(
            "is writable by group {} (mode {mode:o}): its members could rename or delete the \
             capture files; {fix}",
            node.gid
        ));
    }
    Ok(())
}

/// A packet's interface id must name one of the interfaces the output describes.
pub(super) fn check_interface(interface_id: u32, count: u32) -> Result<(), WriterError> {
    if interface_id >= count {
        return Err(WriterError::UnknownInterface { interface_id, count });
    }
    Ok(())
}

/// Files in `dir` named exactly `{prefix}_<digits>_<14 digits>.pcapng[.part]`.
fn scan(dir: &OutDir, prefix: &str) -> io::Result<Vec<Entry>> {
    let mut entries = Vec::new();
    for name in dir.list()? {
        let Ok(name) = name.into_string() else { continue };
        let Some((seq, part)) = parse_name(&name, prefix) else { continue };
        entries.push(Entry { seq, part, name });
    }
    Ok(entries)
}

/// `(seq, is_part)` if `name` is one of ours for `prefix`.
pub(super) fn parse_name(name: &str, prefix: &str) -> Option<(u64, bool)> {
    let rest = name.strip_prefix(prefix)?.strip_prefix('_')?;
    let (body, part) = match rest.strip_suffix(PART_SUFFIX) {
        Some(body) => (body, true),
        None => (rest.strip_suffix(FINAL_SUFFIX)?, false),
    };
    let (seq, stamp) = body.split_once('_')?;
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(seq) || stamp.len() != 14 || !all_digits(stamp) {
        return None;
    }
    Some((seq.parse().ok()?, part))
}

/// `YYYYmmddHHMMSS` of `ns` since the epoch, in UTC (names must not depend on the host zone).
fn utc_stamp(ns: u64) -> String {
    jiff::Timestamp::from_nanosecond(i128::from(ns))
        .ok()
        .and_then(|ts| jiff::fmt::strtime::format("%Y%m%d%H%M%S", ts).ok())
        .unwrap_or_else(|| "19700101000000".to_owned())
}

/// Makes a `.part` left by a crash a finished file: cuts it after its last whole block and
/// renames it; removes it if not even the Section Header is whole. Files another live writer
/// holds locked are left alone. Problems are logged, never fatal.
fn recover_part(dir: &OutDir, part_name: &str) {
    let Some(final_name) = part_name.strip_suffix(".part") else { return };
    let (part, final_path) = (dir.join(part_name), dir.join(final_name));
    // O_NOFOLLOW: a symlink planted under a capture file's name is left alone, not "recovered"
    // by truncating whatever it points to.
    let file = match dir.open_rw(part_name) {
        Ok(file) => file,
        Err(err) if err.raw_os_error() == Some(libc::ELOOP) => {
            warn!("{} is a symbolic link, not a capture file; left alone", part.display());
            return;
        }
        Err(err) => {
            warn!("cannot open unfinished capture file {} to recover it: {err}", part.display());
            return;
        }
    };
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            info!("{} is being written by another writer; left alone", part.display());
            return;
        }
        Err(TryLockError::Error(err)) => {
            warn!("cannot lock {}: {err}; recovering anyway", part.display())
        }
    }
    let meta = match file.metadata() {
        Ok(meta) => meta,
        Err(err) => {
            warn!("cannot read {}: {err}; left alone", part.display());
            return;
        }
    };
    if !meta.is_file() || std::os::unix::fs::MetadataExt::nlink(&meta) != 1 {
        warn!("{} is not a plain capture file; left alone", part.display());
        return;
    }
    // Another writer creates its file, then locks it: in between, its fresh file is empty and
    // unlocked. An empty file that young is left for it (or for the next start).
    let young = meta
        .modified()
        .ok()
        .and_then(|m| m.elapsed().ok())
        .is_some_and(|age| age < std::time::Duration::from_secs(10));
    if meta.len() == 0 && young {
        return;
    }
    let result = (|| -> io::Result<Option<u64>> {
        let len = meta.len();
        let valid = valid_prefix_len(&file, len)?;
        if valid == 0 {
            return Ok(None);
        }
        if valid < len {
            file.set_len(valid)?;
            file.sync_all()?;
        }
        Ok(Some(len - valid))
    })();
    match result {
        Ok(None) => {
            warn!(
                "removing unfinished capture file {}: not even a whole section header in it",
                part.display()
            );
            if let Err(err) = dir.remove(part_name) {
                warn!("cannot remove {}: {err}", part.display());
            }
        }
        Ok(Some(cut)) => match dir.rename_noreplace(part_name, final_name) {
            Ok(()) => warn!(
                "recovered unfinished capture file {}: cut {cut} trailing bytes, renamed to {}",
                part.display(),
                final_path.display()
            ),
            Err(err) => warn!(
                "recovered unfinished capture file {} (cut {cut} trailing bytes) but cannot rename it to {}: {err}",
                part.display(),
                final_path.display()
            ),
        },
        Err(err) => warn!("cannot recover unfinished capture file {}: {err}", part.display()),
    }
}

/// Makes a rename durable. Best effort: the data itself is already fsynced.
pub(super) fn sync_dir(dir: &OutDir) {
    if let Err(err) = dir.sync() {
        warn!("cannot fsync directory {}: {err}", dir.path().display());
    }
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation, reason = "test data is made from small counters")]
mod tests {
    use super::*;
    use crate::writer::pcapng::{BT_EPB, BT_IDB, BT_ISB, BT_SHB, epb_len};
    use capture_common::{DIRECTION_INBOUND, DIRECTION_OUTBOUND};
    use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketOption;
    use pcap_file::pcapng::blocks::interface_description::{
        InterfaceDescriptionBlock, InterfaceDescriptionOption, InterfaceTsResolution,
    };
    use pcap_file::pcapng::blocks::interface_statistics::{
        InterfaceStatisticsBlock, InterfaceStatisticsOption,
    };
    use pcap_file::pcapng::blocks::opt_common::CommonOption;
    use pcap_file::pcapng::blocks::section_header::{SectionHeaderBlock, SectionHeaderOption};
    use pcap_file::pcapng::{Block, PcapNgReader};
    use std::fs::OpenOptions;
    use std::os::unix::ffi::OsStrExt as _;
    use std::os::unix::fs::PermissionsExt as _;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    /// 2023-11-14 22:13:20 UTC.
    const T0: u64 = 1_700_000_000 * NS_PER_SEC;
    const T0_STAMP: &str = "20231114221320";

    struct FakeStats {
        calls: Arc<AtomicU64>,
    }

    impl StatsSource for FakeStats {
        fn stats(&self, interface_id: u32) -> InterfaceStats {
            let call = self.calls.fetch_add(1, Ordering::Relaxed);
            let id = u64::from(interface_id);
            InterfaceStats {
                start_ns: T0 + id,
                end_ns: T0 + 1_000_000 * (call + 1) + id,
                received: 1000 + id,
                kernel_drops: 10 + id,
                accepted: 500 + id,
                delivered: 400 + id,
                user_drops: 7 + id,
            }
        }
    }

    fn stats() -> (Box<dyn StatsSource>, Arc<AtomicU64>) {
        let calls = Arc::new(AtomicU64::new(0));
        (Box::new(FakeStats { calls: calls.clone() }), calls)
    }

    fn policy(dir: &Path) -> Policy {
        Policy::unlimited(dir.to_path_buf(), "cap")
    }

    fn section() -> SectionInfo {
        SectionInfo {
            hardware: "test hw".into(),
            os: "Linux test".into(),
            application: "capture-daemon test".into(),
        }
    }

    fn interfaces() -> Vec<InterfaceInfo> {
        vec![
            InterfaceInfo { name: "eth0".into(), description: "uplink q0".into(), snaplen: 0 },
            InterfaceInfo { name: "eth1".into(), description: "uplink q1".into(), snaplen: 1500 },
        ]
    }

    /// Monotonic time `mono_ns` with the wall clock equal to it.
    fn at(mono_ns: u64) -> Now {
        Now { mono_ns, offset_ns: 0 }
    }

    fn open(policy: Policy, now_ns: u64) -> RotatingWriter {
        RotatingWriter::open(policy, section(), interfaces(), stats().0, at(now_ns)).unwrap()
    }

    /// A deterministic packet: (interface, timestamp, data, orig_len, epb_flags). The flags
    /// go round none, inbound, outbound.
    fn packet(i: u64) -> (u32, u64, Vec<u8>, u32, u32) {
        let len = (i * 97 % 1400 + 14) as usize;
        let data = (0..len).map(|b| (b as u64 ^ i.wrapping_mul(31)) as u8).collect();
        let flags = (i / 2 % 3) as u32;
        ((i % 2) as u32, T0 + i * 1_234_567 + 1, data, len as u32 + (i % 3) as u32 * 100, flags)
    }

    fn write(w: &mut RotatingWriter, i: u64) {
        let (ifid, ts, data, orig, flags) = packet(i);
        w.write_packet(ifid, ts, &data, orig, flags).unwrap();
    }

    /// Bytes of the EPB of a packet as read back.
    fn epb_bytes(p: &(u32, u64, Vec<u8>, u32, u32)) -> u64 {
        epb_len(p.2.len(), p.4) as u64
    }

    #[derive(Debug)]
    struct Readback {
        shb: SectionHeaderBlock<'static>,
        idbs: Vec<InterfaceDescriptionBlock<'static>>,
        /// (interface, timestamp, data, orig_len, epb_flags or 0), as [`packet`] makes them.
        packets: Vec<(u32, u64, Vec<u8>, u32, u32)>,
        isbs: Vec<InterfaceStatisticsBlock<'static>>,
        /// Block types in file order.
        types: Vec<u32>,
    }

    fn read_back(path: &Path) -> Readback {
        let bytes = fs::read(path).unwrap();
        let mut types = Vec::new();
        let mut pos = 0;
        while pos < bytes.len() {
            let len = u32::from_le_bytes(bytes[pos + 4..pos + 8].try_into().unwrap()) as usize;
            types.push(u32::from_le_bytes(bytes[pos..pos + 4].try_into().unwrap()));
            pos += len;
        }
        assert_eq!(pos, bytes.len(), "{} does not end on a block boundary", path.display());
        let mut reader = PcapNgReader::new(File::open(path).unwrap()).unwrap();
        let mut packets = Vec::new();
        let mut isbs = Vec::new();
        while let Some(block) = reader.next_block() {
            match block.unwrap().0 {
                Block::EnhancedPacket(p) => {
                    // A block carries the flags option only for non-zero flags, and only that.
                    let flags = match p.options[..] {
                        [] => 0,
                        [EnhancedPacketOption::Flags(f)] if f != 0 => f,
                        ref other => panic!("unexpected EPB options {other:?}"),
                    };
                    packets.push((
                        p.interface_id,
                        u64::try_from(p.timestamp.as_nanos()).unwrap(),
                        p.data.to_vec(),
                        p.original_len,
                        flags,
                    ));
                }
                Block::InterfaceStatistics(s) => isbs.push(s.into_owned()),
                Block::InterfaceDescription(_) => {}
                other => panic!("unexpected block {other:?}"),
            }
        }
        Readback {
            shb: reader.section().clone(),
            idbs: reader.interfaces().to_vec(),
            packets,
            isbs,
            types,
        }
    }

    /// Asserts the file is SHB, one IDB per interface, EPBs, one ISB per interface.
    fn assert_complete(rb: &Readback) {
        let n = interfaces().len();
        assert_eq!(rb.types[0], BT_SHB);
        assert!(rb.types[1..=n].iter().all(|&t| t == BT_IDB), "{:x?}", rb.types);
        let epbs = rb.types.len() - 1 - 2 * n;
        assert!(rb.types[1 + n..1 + n + epbs].iter().all(|&t| t == BT_EPB), "{:x?}", rb.types);
        assert!(rb.types[1 + n + epbs..].iter().all(|&t| t == BT_ISB), "{:x?}", rb.types);
        assert_eq!(rb.isbs.len(), n);
    }

    /// Names in `dir`, sorted.
    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    /// Finished files of prefix "cap", by seq.
    fn finished(dir: &Path) -> Vec<PathBuf> {
        let held = OutDir::open(dir).unwrap();
        let mut entries: Vec<Entry> =
            scan(&held, "cap").unwrap().into_iter().filter(|e| !e.part).collect();
        entries.sort_by_key(|e| e.seq);
        entries.into_iter().map(|e| dir.join(e.name)).collect()
    }

    fn seqs(dir: &Path) -> Vec<u64> {
        finished(dir)
            .iter()
            .map(|p| parse_name(p.file_name().unwrap().to_str().unwrap(), "cap").unwrap().0)
            .collect()
    }

    #[test]
    fn writes_two_interfaces_and_reads_back_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let (stats, calls) = stats();
        let mut w =
            RotatingWriter::open(policy(dir.path()), section(), interfaces(), stats, at(T0))
                .unwrap();
        let n = 3000; // > 1 MiB, so some size-triggered flushes happen too
        for i in 0..n {
            write(&mut w, i);
        }
        let path = w.close(T0 + 5 * NS_PER_SEC).unwrap().unwrap();
        assert_eq!(calls.load(Ordering::Relaxed), 2, "one stats call per interface");
        assert_eq!(path, dir.path().join(format!("cap_00001_{T0_STAMP}.pcapng")));
        assert_eq!(names(dir.path()), vec![format!("cap_00001_{T0_STAMP}.pcapng")]);

        let rb = read_back(&path);
        assert_complete(&rb);
        assert_eq!(
            rb.shb.options,
            vec![
                SectionHeaderOption::Hardware("test hw".into()),
                SectionHeaderOption::OS("Linux test".into()),
                SectionHeaderOption::UserApplication("capture-daemon test".into()),
            ]
        );
        assert_eq!(rb.idbs.len(), 2);
        for (idb, info) in rb.idbs.iter().zip(interfaces()) {
            assert_eq!(idb.snaplen, info.snaplen);
            assert_eq!(idb.ts_resolution(), InterfaceTsResolution::NANO);
            assert!(idb.options.contains(&InterfaceDescriptionOption::IfName(info.name.into())));
            assert!(
                idb.options
                    .contains(&InterfaceDescriptionOption::IfDescription(info.description.into()))
            );
        }
        assert_eq!(rb.packets.len() as u64, n);
        for (i, got) in rb.packets.iter().enumerate() {
            let want = packet(i as u64);
            assert_eq!(got, &want, "packet {i}");
            assert!(got.2.len() as u32 <= got.3, "caplen <= orig_len");
        }
        for (id, isb) in rb.isbs.iter().enumerate() {
            let id64 = id as u64;
            assert_eq!(isb.interface_id, id as u32);
            let end = Duration::from_nanos(T0 + 1_000_000 * (id64 + 1) + id64);
            assert_eq!(isb.timestamp, end);
            assert_eq!(
                isb.options,
                vec![
                    InterfaceStatisticsOption::IsbStartTime(Duration::from_nanos(T0 + id64)),
                    InterfaceStatisticsOption::IsbEndTime(end),
                    InterfaceStatisticsOption::IsbIfRecv(1000 + id64),
                    InterfaceStatisticsOption::IsbFilterAccept(500 + id64),
                    InterfaceStatisticsOption::IsbOsDrop(10 + id64),
                    InterfaceStatisticsOption::IsbUsrDeliv(400 + id64),
                    InterfaceStatisticsOption::Common(CommonOption::Comment(
                        format!("userspace drops: {}", 7 + id64).into()
                    )),
                ]
            );
        }
    }

    #[test]
    fn counters_match_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = open(policy(dir.path()), T0);
        for i in 0..100 {
            write(&mut w, i);
        }
        let path = w.current_path().unwrap().to_path_buf();
        // Keep the writer to read its counters after close: close consumes it.
        let counters_before = w.counters();
        assert_eq!(counters_before.packets_written, 0, "still buffered");
        // Flush through a tick, then finish.
        w.tick(T0 + NS_PER_SEC / 2).unwrap();
        w.tick(T0 + 3 * NS_PER_SEC / 2).unwrap();
        assert_eq!(w.counters().packets_written, 100);
        assert_eq!(w.counters().bytes_written, fs::metadata(&path).unwrap().len());
        assert_eq!(w.counters().write_errors, 0);
        let final_path = w.close(T0 + 2 * NS_PER_SEC).unwrap().unwrap();
        assert_eq!(read_back(&final_path).packets.len(), 100);
    }

    #[test]
    fn file_exists_with_header_right_after_open() {
        let dir = tempfile::tempdir().unwrap();
        let w = open(policy(dir.path()), T0);
        let part = w.current_path().unwrap().to_path_buf();
        assert_eq!(part, dir.path().join(format!("cap_00001_{T0_STAMP}.pcapng.part")));
        assert_eq!(fs::metadata(&part).unwrap().len(), w.header.len() as u64);
        let rb = read_back(&part);
        assert_eq!(rb.idbs.len(), 2);
        assert!(rb.packets.is_empty());
        // A capture with no packets still closes into a valid file.
        let path = w.close(T0).unwrap().unwrap();
        assert_complete(&read_back(&path));
        assert!(!part.exists());
    }

    #[test]
    fn name_uses_utc_and_seq_grows_past_five_digits() {
        assert_eq!(utc_stamp(T0), T0_STAMP);
        assert_eq!(utc_stamp(0), "19700101000000");
        assert_eq!(utc_stamp(u64::MAX), "25540721233433"); // 2554-07-21T23:34:33.709551615Z
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(format!("cap_123456_{T0_STAMP}.pcapng")), b"old").unwrap();
        let w = open(policy(dir.path()), T0 + 61 * NS_PER_SEC);
        assert_eq!(
            w.current_path().unwrap(),
            dir.path().join("cap_123457_20231114221421.pcapng.part")
        );
    }

    /// The shared stream `demo` and the streams of targets with files of their own
    /// (`demo_{target}`) share a directory: no stream takes another's files for its own (for
    /// retention, recovery or its sequence), whatever digits and underscores the names hold.
    #[test]
    fn a_stream_never_takes_the_files_of_another() {
        let streams = [
            "demo",
            "demo_web01",
            "demo_web",
            "demo_web_01",
            "demo_7",
            "demo_00042",
            "demo_00001",
            "demo_a_00001",
            "demo_a",
            "demo_20231114221320",
        ];
        for owner in streams {
            for suffix in [FINAL_SUFFIX, PART_SUFFIX] {
                let name = format!("{owner}_00042_20231114221320{suffix}");
                assert_eq!(stamp_of(&name), Some("20231114221320"));
                for other in streams {
                    let parsed = parse_name(&name, other);
                    if other == owner {
                        assert_eq!(parsed, Some((42, suffix == PART_SUFFIX)), "{name}");
                    } else {
                        assert_eq!(parsed, None, "{name} taken by stream {other}");
                    }
                }
            }
        }
    }

    #[test]
    fn parse_name_accepts_only_our_exact_pattern() {
        assert_eq!(parse_name("cap_00001_20231114221320.pcapng", "cap"), Some((1, false)));
        assert_eq!(
            parse_name("cap_1234567_20231114221320.pcapng.part", "cap"),
            Some((1_234_567, true))
        );
        assert_eq!(parse_name("cap_x_00001_20231114221320.pcapng", "cap_x"), Some((1, false)));
        for bad in [
            "cap_x_00001_20231114221320.pcapng",
            "capture_00001_20231114221320.pcapng",
            "cap_00001_2023111422132.pcapng",
            "cap_00001_202311142213200.pcapng",
            "cap__20231114221320.pcapng",
            "cap_0a001_20231114221320.pcapng",
            "cap_00001_20231114221320.pcap",
            "cap_00001_20231114221320.pcapng.bak",
            "cap_00001_20231114221320.pcapng.part.1",
            "cap_00001_20231114221320_1.pcapng",
            "cap_99999999999999999999999_20231114221320.pcapng", // seq overflows u64
            "xcap_00001_20231114221320.pcapng",
        ] {
            assert_eq!(parse_name(bad, "cap"), None, "{bad}");
        }
    }

    #[test]
    fn rotates_by_bytes_into_complete_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = open(Policy { rotate_bytes: 20_000, ..policy(dir.path()) }, T0);
        let n = 120;
        for i in 0..n {
            write(&mut w, i);
        }
        w.close(T0).unwrap().unwrap();
        let files = finished(dir.path());
        assert!(files.len() >= 3, "{files:?}");
        assert_eq!(seqs(dir.path()), (1..=files.len() as u64).collect::<Vec<_>>());
        let mut all = Vec::new();
        for (k, f) in files.iter().enumerate() {
            let rb = read_back(f);
            assert_complete(&rb);
            let size = fs::metadata(f).unwrap().len();
            let isb_bytes = 2 * isb_len();
            if k + 1 < files.len() {
                // Rotated right after the packet that reached the limit.
                let last_epb = epb_bytes(rb.packets.last().unwrap());
                assert!(size - isb_bytes >= 20_000, "file {k}: {size}");
                assert!(size - isb_bytes - last_epb < 20_000, "file {k}: {size}");
            }
            all.extend(rb.packets);
        }
        assert_eq!(all, (0..n).map(packet).collect::<Vec<_>>());
    }

    /// Size of one of FakeStats' ISBs (its comment has one digit).
    fn isb_len() -> u64 {
        let mut buf = Vec::new();
        encode_isb(&mut buf, 0, &InterfaceStats { user_drops: 7, ..Default::default() });
        buf.len() as u64
    }

    #[test]
    fn rotates_by_packets() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = open(Policy { rotate_packets: 7, ..policy(dir.path()) }, T0);
        for i in 0..30 {
            write(&mut w, i);
        }
        w.wait_finished();
        assert_eq!(w.counters().files_closed, 4);
        w.close(T0).unwrap().unwrap();
        let counts: Vec<usize> =
            finished(dir.path()).iter().map(|f| read_back(f).packets.len()).collect();
        assert_eq!(counts, vec![7, 7, 7, 7, 2]);
        assert_eq!(seqs(dir.path()), vec![1, 2, 3, 4, 5]);
    }

    #[test]
    fn rotation_limits_count_what_ticks_already_wrote() {
        // Buffers written out by tick() part-way through a file still count towards its limits.
        let dir = tempfile::tempdir().unwrap();
        let mut w = open(Policy { rotate_packets: 7, ..policy(dir.path()) }, T0);
        for i in 0..30 {
            write(&mut w, i);
            if i % 3 == 0 {
                w.tick(T0 + (i + 1) * NS_PER_SEC).unwrap();
            }
        }
        w.close(T0 + 31 * NS_PER_SEC).unwrap().unwrap();
        let counts: Vec<usize> =
            finished(dir.path()).iter().map(|f| read_back(f).packets.len()).collect();
        assert_eq!(counts, vec![7, 7, 7, 7, 2]);

        let dir = tempfile::tempdir().unwrap();
        let mut w = open(Policy { rotate_bytes: 20_000, ..policy(dir.path()) }, T0);
        for i in 0..120 {
            write(&mut w, i);
            if i % 5 == 0 {
                w.tick(T0 + (i + 1) * NS_PER_SEC).unwrap();
            }
        }
        w.close(T0 + 121 * NS_PER_SEC).unwrap().unwrap();
        let files = finished(dir.path());
        assert!(files.len() >= 3, "{files:?}");
        let mut all = Vec::new();
        for (k, f) in files.iter().enumerate() {
            let rb = read_back(f);
            assert_complete(&rb);
            let size = fs::metadata(f).unwrap().len() - 2 * isb_len();
            if k + 1 < files.len() {
                let last_epb = epb_bytes(rb.packets.last().unwrap());
                assert!(size >= 20_000 && size - last_epb < 20_000, "file {k}: {size}");
            }
            all.extend(rb.packets);
        }
        assert_eq!(all, (0..120).map(packet).collect::<Vec<_>>());
    }

    #[test]
    fn rotates_by_time_on_tick() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = open(Policy { rotate_seconds: 60, ..policy(dir.path()) }, T0);
        write(&mut w, 0);
        w.tick(T0 + 59 * NS_PER_SEC).unwrap();
        w.wait_finished();
        assert_eq!(w.counters().files_closed, 0);
        write(&mut w, 1);
        w.tick(T0 + 60 * NS_PER_SEC).unwrap();
        w.wait_finished();
        assert_eq!(w.counters().files_closed, 1);
        assert_eq!(
            w.current_path().unwrap(),
            dir.path().join("cap_00002_20231114221420.pcapng.part")
        );
        write(&mut w, 2);
        // The next file's clock starts at its own opening.
        w.tick(T0 + 119 * NS_PER_SEC).unwrap();
        assert_eq!(w.counters().files_closed, 1);
        w.tick(T0 + 120 * NS_PER_SEC + 5).unwrap();
        w.wait_finished();
        assert_eq!(w.counters().files_closed, 2);
        w.close(T0 + 121 * NS_PER_SEC).unwrap().unwrap();
        let files = finished(dir.path());
        let names: Vec<_> =
            files.iter().map(|f| f.file_name().unwrap().to_str().unwrap().to_owned()).collect();
        assert_eq!(
            names,
            vec![
                "cap_00001_20231114221320.pcapng",
                "cap_00002_20231114221420.pcapng",
                "cap_00003_20231114221520.pcapng"
            ]
        );
        let counts: Vec<usize> = files.iter().map(|f| read_back(f).packets.len()).collect();
        assert_eq!(counts, vec![2, 1, 0]);
    }

    #[test]
    fn size_and_packet_rotation_name_the_file_after_the_latest_tick() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = open(Policy { rotate_packets: 1, ..policy(dir.path()) }, T0);
        w.tick(T0 + 3 * NS_PER_SEC).unwrap();
        write(&mut w, 0);
        assert_eq!(
            w.current_path().unwrap(),
            dir.path().join("cap_00002_20231114221323.pcapng.part")
        );
    }

    #[test]
    fn buffers_until_one_mib_or_one_second() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = open(policy(dir.path()), T0);
        let part = w.current_path().unwrap().to_path_buf();
        let header = w.header.len() as u64;
        let ptr = w.buf.as_ptr();
        write(&mut w, 0);
        assert_eq!(fs::metadata(&part).unwrap().len(), header, "no write per packet");
        w.tick(T0 + NS_PER_SEC / 2).unwrap();
        assert_eq!(fs::metadata(&part).unwrap().len(), header);
        w.tick(T0 + NS_PER_SEC).unwrap();
        assert!(fs::metadata(&part).unwrap().len() > header, "flushed after 1 s");
        assert_eq!(w.counters().packets_written, 1);

        // Size-triggered: no tick needed.
        let on_disk = fs::metadata(&part).unwrap().len();
        let data = [0xAB; 1000];
        let mut i = 0;
        while fs::metadata(&part).unwrap().len() == on_disk {
            w.write_packet(0, T0 + i, &data, 1000, DIRECTION_INBOUND).unwrap();
            i += 1;
            assert!(i < 2000, "never flushed");
        }
        assert_eq!(epb_len(1000, DIRECTION_INBOUND), 1044);
        assert_eq!(i, (FLUSH_BYTES as u64).div_ceil(1044));
        assert!(fs::metadata(&part).unwrap().len() - on_disk >= FLUSH_BYTES as u64);
        assert_eq!(w.buf.as_ptr(), ptr, "the buffer never reallocated");
        assert_eq!(w.buf.capacity(), BUF_CAPACITY);
    }

    #[test]
    fn retention_keeps_newest_files_by_count() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = open(Policy { rotate_packets: 1, keep_files: 3, ..policy(dir.path()) }, T0);
        for i in 0..10 {
            write(&mut w, i);
            w.wait_finished();
            assert!(w.current_path().unwrap().exists(), "current file never deleted");
            assert!(finished(dir.path()).len() <= 3);
        }
        assert_eq!(w.counters().files_deleted, 7);
        assert_eq!(seqs(dir.path()), vec![8, 9, 10]);
        w.close(T0).unwrap().unwrap();
        assert_eq!(seqs(dir.path()), vec![9, 10, 11]);
    }

    #[test]
    fn retention_keeps_newest_files_by_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = open(Policy { rotate_packets: 1, ..policy(dir.path()) }, T0);
        let data = [1u8; 1000];
        w.write_packet(0, T0, &data, 1000, DIRECTION_INBOUND).unwrap();
        w.wait_finished();
        let size = fs::metadata(&finished(dir.path())[0]).unwrap().len();
        drop(w);
        // Same-size files; the limit lies between two and three of them.
        let dir = tempfile::tempdir().unwrap();
        let mut w =
            open(Policy { rotate_packets: 1, keep_bytes: size * 5 / 2, ..policy(dir.path()) }, T0);
        for i in 0..6 {
            w.write_packet(0, T0 + i, &data, 1000, DIRECTION_INBOUND).unwrap();
        }
        w.wait_finished();
        assert_eq!(seqs(dir.path()), vec![5, 6]);
        assert_eq!(w.counters().files_deleted, 4);
        // Both limits: the stricter one wins.
        let dir = tempfile::tempdir().unwrap();
        let mut w = open(
            Policy {
                rotate_packets: 1,
                keep_files: 1,
                keep_bytes: size * 5 / 2,
                ..policy(dir.path())
            },
            T0,
        );
        for i in 0..4 {
            w.write_packet(0, T0 + i, &data, 1000, DIRECTION_INBOUND).unwrap();
        }
        w.wait_finished();
        assert_eq!(seqs(dir.path()), vec![4]);
        // A limit smaller than one file keeps the newest file, not none.
        let dir = tempfile::tempdir().unwrap();
        let mut w =
            open(Policy { rotate_packets: 1, keep_bytes: size / 2, ..policy(dir.path()) }, T0);
        for i in 0..3 {
            w.write_packet(0, T0 + i, &data, 1000, DIRECTION_INBOUND).unwrap();
        }
        w.wait_finished();
        assert_eq!(seqs(dir.path()), vec![3]);
    }

    #[test]
    fn keep_files_can_count_the_file_being_written_as_dumpcap_does() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = open(Policy { rotate_packets: 1, keep_files: 3, ..policy(dir.path()) }, T0);
        w.keep_files_include_current();
        for i in 0..6 {
            write(&mut w, i);
            // The finisher deletes the oldest after the next file started: one more meanwhile.
            w.wait_finished();
            let on_disk = names(dir.path()).len();
            assert!(on_disk <= 3, "at most 3 files in all once finished: {on_disk}");
        }
        w.close(T0).unwrap();
        assert_eq!(seqs(dir.path()), vec![5, 6, 7], "3 files at the end");
    }

    #[test]
    fn a_reload_that_adds_rotation_ends_the_current_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = open(policy(dir.path()), T0); // no rotation at all
        write(&mut w, 0);
        let mut p = policy(dir.path());
        p.rotate_seconds = 60;
        w.reconfigure(p, &interfaces()).unwrap();
        w.tick(T0 + 61 * NS_PER_SEC).unwrap();
        w.wait_finished();
        assert_eq!(finished(dir.path()).len(), 1, "rotated by the new limit");
    }

    #[test]
    fn a_wall_clock_step_moves_names_not_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = open(Policy { rotate_seconds: 60, ..policy(dir.path()) }, T0);
        write(&mut w, 0);
        // The wall clock goes back an hour: rotation still comes 60 s (monotonic) after the
        // file opened, and the next file is named after the wall clock.
        w.set_wall_offset(-3600 * NS_PER_SEC.cast_signed());
        w.tick(T0 + 59 * NS_PER_SEC).unwrap();
        w.wait_finished();
        assert!(finished(dir.path()).is_empty());
        w.tick(T0 + 60 * NS_PER_SEC).unwrap();
        w.wait_finished();
        assert_eq!(finished(dir.path()).len(), 1);
        assert_eq!(
            w.current_path().unwrap(),
            dir.path().join("cap_00002_20231114211420.pcapng.part")
        );
    }

    #[test]
    fn sequence_continues_across_writers() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = open(Policy { rotate_packets: 2, ..policy(dir.path()) }, T0);
        for i in 0..3 {
            write(&mut w, i);
        }
        w.close(T0).unwrap().unwrap();
        assert_eq!(seqs(dir.path()), vec![1, 2]);
        let w = open(policy(dir.path()), T0 + NS_PER_SEC);
        assert_eq!(
            w.current_path().unwrap(),
            dir.path().join("cap_00003_20231114221321.pcapng.part")
        );
        w.close(T0 + NS_PER_SEC).unwrap().unwrap();
        let w = open(policy(dir.path()), T0 + 2 * NS_PER_SEC);
        assert_eq!(
            w.current_path().unwrap(),
            dir.path().join("cap_00004_20231114221322.pcapng.part")
        );
    }

    #[test]
    fn other_prefixes_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let foreign = [
            format!("cap_x_00007_{T0_STAMP}.pcapng"),
            format!("capture_00009_{T0_STAMP}.pcapng"),
            format!("capture_00010_{T0_STAMP}.pcapng.part"),
            format!("cap_00011_{T0_STAMP}.pcapng.bak"),
            "cap_00012_2023.pcapng".to_owned(),
            format!("other_00050_{T0_STAMP}.pcapng"),
        ];
        for name in &foreign {
            fs::write(dir.path().join(name), b"not ours").unwrap();
        }
        let mut w = open(Policy { rotate_packets: 1, keep_files: 1, ..policy(dir.path()) }, T0);
        assert_eq!(
            w.current_path().unwrap(),
            dir.path().join(format!("cap_00001_{T0_STAMP}.pcapng.part"))
        );
        for i in 0..5 {
            write(&mut w, i);
        }
        w.close(T0).unwrap().unwrap();
        for name in &foreign {
            assert_eq!(fs::read(dir.path().join(name)).unwrap(), b"not ours", "{name} touched");
        }
        assert_eq!(seqs(dir.path()), vec![6]);
    }

    #[test]
    fn recovers_a_part_file_cut_mid_block() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = open(policy(dir.path()), T0);
        for i in 0..20 {
            write(&mut w, i);
        }
        w.tick(T0 + NS_PER_SEC / 2).unwrap();
        w.tick(T0 + 2 * NS_PER_SEC).unwrap(); // everything on disk
        let part = w.current_path().unwrap().to_path_buf();
        drop(w); // a crash: no ISBs, no rename
        let full = fs::metadata(&part).unwrap().len();
        let last_len = epb_bytes(&packet(19));
        let file = OpenOptions::new().write(true).open(&part).unwrap();
        file.set_len(full - 10).unwrap();
        drop(file);

        let w = open(policy(dir.path()), T0 + 10 * NS_PER_SEC);
        assert!(!part.exists());
        let recovered = dir.path().join(format!("cap_00001_{T0_STAMP}.pcapng"));
        assert_eq!(fs::metadata(&recovered).unwrap().len(), full - last_len);
        let rb = read_back(&recovered);
        assert_eq!(rb.packets, (0..19).map(packet).collect::<Vec<_>>());
        assert!(rb.isbs.is_empty());
        assert_eq!(
            w.current_path().unwrap(),
            dir.path().join("cap_00002_20231114221330.pcapng.part")
        );
    }

    #[test]
    fn recovers_at_a_bad_trailer_and_keeps_whole_files_whole() {
        let dir = tempfile::tempdir().unwrap();
        let mut buf = Vec::new();
        encode_shb(&mut buf, &section());
        encode_idb(&mut buf, &interfaces()[0]);
        let good = buf.len();
        crate::writer::pcapng::encode_epb(&mut buf, 0, T0, &[1, 2, 3], 3, DIRECTION_OUTBOUND);
        let mut bad = buf.clone();
        let n = bad.len();
        bad[n - 4] ^= 1;
        fs::write(dir.path().join(format!("cap_00004_{T0_STAMP}.pcapng.part")), &bad).unwrap();
        fs::write(dir.path().join(format!("cap_00002_{T0_STAMP}.pcapng.part")), &buf).unwrap();
        let w = open(policy(dir.path()), T0);
        assert_eq!(
            fs::read(dir.path().join(format!("cap_00004_{T0_STAMP}.pcapng"))).unwrap(),
            &buf[..good]
        );
        assert_eq!(fs::read(dir.path().join(format!("cap_00002_{T0_STAMP}.pcapng"))).unwrap(), buf);
        assert_eq!(
            w.current_path().unwrap(),
            dir.path().join(format!("cap_00005_{T0_STAMP}.pcapng.part"))
        );
    }

    #[test]
    fn removes_a_part_file_without_a_whole_section_header() {
        let dir = tempfile::tempdir().unwrap();
        let mut shb = Vec::new();
        encode_shb(&mut shb, &section());
        let short = dir.path().join(format!("cap_00003_{T0_STAMP}.pcapng.part"));
        fs::write(&short, &shb[..shb.len() - 1]).unwrap();
        let empty = dir.path().join(format!("cap_00004_{T0_STAMP}.pcapng.part"));
        fs::write(&empty, b"").unwrap();
        // An empty file is removed only once it is not a writer's brand-new file.
        let minute_ago = std::time::SystemTime::now() - Duration::from_secs(60);
        File::options().write(true).open(&empty).unwrap().set_modified(minute_ago).unwrap();
        let young = dir.path().join(format!("cap_00001_{T0_STAMP}.pcapng.part"));
        fs::write(&young, b"").unwrap();
        let w = open(policy(dir.path()), T0);
        assert!(!short.exists() && !empty.exists());
        assert!(young.exists(), "a fresh empty file may be another writer's, about to be locked");
        assert!(!dir.path().join(format!("cap_00003_{T0_STAMP}.pcapng")).exists());
        // Their numbers stay used.
        assert_eq!(
            w.current_path().unwrap(),
            dir.path().join(format!("cap_00005_{T0_STAMP}.pcapng.part"))
        );
    }

    #[test]
    fn files_are_synced_and_renamed_off_the_writers_thread() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = open(Policy { rotate_packets: 1, ..policy(dir.path()) }, T0);
        for i in 0..5 {
            write(&mut w, i);
        }
        w.wait_finished();
        let synced = w.finisher.synced_on();
        assert_eq!(synced.len(), 5, "each finished file was fsynced");
        let writer = std::thread::current().id();
        assert!(synced.iter().all(|&t| t != writer), "not on the thread that writes packets");
        assert_eq!(w.counters().files_closed, 5);
        w.close(T0).unwrap().unwrap();
        assert!(names(dir.path()).iter().all(|n| !n.ends_with(".part")), "close waited");
        assert_eq!(seqs(dir.path()), vec![1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn dropping_the_writer_finishes_the_files_handed_over() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = open(Policy { rotate_packets: 1, ..policy(dir.path()) }, T0);
        for i in 0..3 {
            write(&mut w, i);
        }
        let current = w.current_path().unwrap().to_path_buf();
        drop(w);
        assert_eq!(seqs(dir.path()), vec![1, 2, 3], "finished, not left as .part");
        assert!(current.exists(), "the file being written stays for recovery");
    }

    #[test]
    fn a_file_the_finisher_cannot_rename_is_counted_and_left_for_recovery() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = open(Policy { rotate_packets: 1, ..policy(dir.path()) }, T0);
        let part = w.current_path().unwrap().to_path_buf();
        // Its final name, taken by someone else after the file was created.
        let taken = dir.path().join(format!("cap_00001_{T0_STAMP}.pcapng"));
        fs::write(&taken, b"not ours").unwrap();
        write(&mut w, 0);
        w.wait_finished();
        let c = w.counters();
        assert_eq!((c.write_errors, c.files_closed), (1, 0));
        assert!(part.exists(), "left as .part, for the next start to recover");
        assert_eq!(fs::read(&taken).unwrap(), b"not ours");
        drop(w);
        let w = open(policy(dir.path()), T0);
        let recovered = dir.path().join(format!("cap_00001_{T0_STAMP}.pcapng"));
        assert_eq!(fs::read(&recovered).unwrap(), b"not ours", "never replaced");
        drop(w);
    }

    /// Dirty pages of the file at `path`, from cachestat(2) (Linux 6.5); `None` where the call
    /// is missing.
    fn dirty_pages(path: &Path) -> Option<u64> {
        #[repr(C)]
        struct Range {
            off: u64,
            len: u64,
        }
        #[repr(C)]
        #[derive(Default)]
        struct Stat {
            cache: u64,
            dirty: u64,
            writeback: u64,
            evicted: u64,
            recently_evicted: u64,
        }
        const SYS_CACHESTAT: libc::c_long = 451;
        let file = File::open(path).unwrap();
        let range = Range { off: 0, len: 0 };
        let mut stat = Stat::default();
        // SAFETY: the fd is open; both structs are laid out as the kernel's.
        let rc = unsafe {
            libc::syscall(SYS_CACHESTAT, file.as_raw_fd(), &raw const range, &raw mut stat, 0)
        };
        (rc == 0).then_some(stat.dirty)
    }

    /// A directory for a test that needs real writeback: not a tmpfs (whose pages are never
    /// written anywhere).
    fn disk_dir() -> Option<tempfile::TempDir> {
        const RAMFS_MAGIC: libc::c_long = 0x8584_58f6;
        let candidates = [
            std::env::temp_dir(),
            PathBuf::from("/var/tmp"),
            PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target")),
        ];
        candidates.iter().find_map(|dir| {
            let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
            // SAFETY: statfs with a valid C string and an out-struct it fills.
            let mut st: libc::statfs = unsafe { std::mem::zeroed() };
            let on_disk = unsafe { libc::statfs(c.as_ptr(), &raw mut st) } == 0
                && ![libc::TMPFS_MAGIC, RAMFS_MAGIC].contains(&st.f_type);
            on_disk.then(|| tempfile::tempdir_in(dir).ok()).flatten()
        })
    }

    #[test]
    fn a_growing_file_is_sent_to_disk_behind_the_write_position() {
        let Some(dir) = disk_dir() else {
            println!("note: no disk-backed directory for the writeback check; skipped");
            return;
        };
        let mut w = open(policy(dir.path()), T0);
        let part = w.current_path().unwrap().to_path_buf();
        let data = [0x5a; 1500];
        // 48 MiB: six times the writeback step.
        for i in 0..(48 << 20) / 1544 {
            w.write_packet(0, T0 + i, &data, 1500, DIRECTION_INBOUND).unwrap();
        }
        let Some(dirty) = dirty_pages(&part) else {
            println!("note: no cachestat(2) (Linux < 6.5); writeback check skipped");
            return;
        };
        // What has not reached the next step, and the buffer written since.
        let bound = (WRITEBACK_BYTES + FLUSH_BYTES as u64) / PAGE + 1;
        assert!(dirty <= bound, "{dirty} dirty pages, at most {bound} expected");
        w.close(T0).unwrap().unwrap();
    }

    #[test]
    fn drop_without_close_leaves_all_data_for_recovery() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = open(policy(dir.path()), T0);
        for i in 0..10 {
            write(&mut w, i);
        }
        drop(w);
        drop(open(policy(dir.path()), T0));
        let rb = read_back(&dir.path().join(format!("cap_00001_{T0_STAMP}.pcapng")));
        assert_eq!(rb.packets.len(), 10);
    }

    #[test]
    fn a_live_writers_part_file_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let mut first = open(policy(dir.path()), T0);
        write(&mut first, 0);
        let part = first.current_path().unwrap().to_path_buf();
        let before = fs::read(&part).unwrap();
        let second = open(policy(dir.path()), T0);
        assert_eq!(fs::read(&part).unwrap(), before);
        assert_eq!(
            second.current_path().unwrap(),
            dir.path().join(format!("cap_00002_{T0_STAMP}.pcapng.part"))
        );
        assert_eq!(read_back(&first.close(T0).unwrap().unwrap()).packets.len(), 1);
        second.close(T0).unwrap().unwrap();
    }

    #[test]
    fn never_overwrites_an_existing_name() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = open(Policy { rotate_packets: 1, ..policy(dir.path()) }, T0);
        // Appearing after open's scan, as from another program.
        let taken_part = dir.path().join(format!("cap_00002_{T0_STAMP}.pcapng.part"));
        let taken_final = dir.path().join(format!("cap_00003_{T0_STAMP}.pcapng"));
        fs::write(&taken_part, b"precious part").unwrap();
        fs::write(&taken_final, b"precious final").unwrap();
        write(&mut w, 0);
        assert_eq!(
            w.current_path().unwrap(),
            dir.path().join(format!("cap_00004_{T0_STAMP}.pcapng.part"))
        );
        assert_eq!(fs::read(&taken_part).unwrap(), b"precious part");
        assert_eq!(fs::read(&taken_final).unwrap(), b"precious final");
        w.close(T0).unwrap().unwrap();
        assert_eq!(fs::read(&taken_part).unwrap(), b"precious part");
    }

    #[test]
    fn write_errors_drop_the_buffer_and_keep_the_file_valid() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = open(policy(dir.path()), T0);
        let part = w.current_path().unwrap().to_path_buf();
        let header = w.header.len() as u64;
        for i in 0..5 {
            write(&mut w, i);
        }
        w.faults.fail_writes = 1;
        w.tick(T0 + NS_PER_SEC).unwrap();
        w.tick(T0 + 2 * NS_PER_SEC).unwrap();
        let c = w.counters();
        assert_eq!((c.write_errors, c.packets_lost_to_errors, c.packets_written), (1, 5, 0));
        assert_eq!(fs::metadata(&part).unwrap().len(), header, "the partial write was cut off");
        assert_eq!(w.current_path(), Some(part.as_path()), "file stays open");
        // Space came back.
        for i in 5..8 {
            write(&mut w, i);
        }
        w.tick(T0 + 3 * NS_PER_SEC).unwrap();
        w.tick(T0 + 4 * NS_PER_SEC).unwrap();
        assert_eq!(w.counters().packets_written, 3);
        let path = w.close(T0 + 5 * NS_PER_SEC).unwrap().unwrap();
        let rb = read_back(&path);
        assert_complete(&rb);
        assert_eq!(rb.packets, (5..8).map(packet).collect::<Vec<_>>());
    }

    #[test]
    fn error_warnings_are_rate_limited() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = open(policy(dir.path()), T0);
        let err = io::Error::from_raw_os_error(libc::ENOSPC);
        let p = PathBuf::from("x");
        w.report_io_error("test", &p, &err);
        assert_eq!(w.last_error_log_ns, Some(T0));
        w.now_ns = T0 + 9 * NS_PER_SEC;
        w.report_io_error("test", &p, &err);
        w.report_io_error("test", &p, &err);
        assert_eq!((w.last_error_log_ns, w.unlogged_errors), (Some(T0), 2));
        w.now_ns = T0 + 10 * NS_PER_SEC;
        w.report_io_error("test", &p, &err);
        assert_eq!((w.last_error_log_ns, w.unlogged_errors), (Some(T0 + 10 * NS_PER_SEC), 0));
        assert_eq!(w.counters().write_errors, 4);
    }

    #[test]
    fn a_header_that_failed_to_write_goes_first_next_time() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = open(Policy { rotate_packets: 1, ..policy(dir.path()) }, T0);
        // Packet 0's file: its last buffer (packet + ISBs) fails; then file 2's header fails.
        w.faults.fail_writes = 2;
        write(&mut w, 0);
        let part2 = w.current_path().unwrap().to_path_buf();
        assert_eq!(fs::metadata(&part2).unwrap().len(), 0);
        write(&mut w, 1);
        w.wait_finished();
        let c = w.counters();
        assert_eq!(
            (c.write_errors, c.packets_lost_to_errors, c.packets_written, c.files_closed),
            (2, 1, 1, 2)
        );
        let files = finished(dir.path());
        let first = read_back(&files[0]);
        assert!(first.packets.is_empty());
        assert_eq!(first.idbs.len(), 2);
        let second = read_back(&files[1]);
        assert_complete(&second);
        assert_eq!(second.packets, vec![packet(1)]);
        w.close(T0).unwrap().unwrap();
    }

    #[test]
    fn a_file_that_never_got_its_header_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = open(Policy { rotate_packets: 1, ..policy(dir.path()) }, T0);
        w.faults.fail_writes = 100;
        write(&mut w, 0);
        let part2 = w.current_path().unwrap().to_path_buf();
        write(&mut w, 1);
        assert!(!part2.exists());
        let part3 = w.current_path().unwrap().to_path_buf();
        assert_eq!(w.close(T0).unwrap(), None);
        assert!(!part3.exists());
        assert_eq!(finished(dir.path()).len(), 1, "only the first file, which had its header");
    }

    #[test]
    fn a_failed_create_is_retried_on_tick() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = open(Policy { rotate_packets: 1, ..policy(dir.path()) }, T0);
        w.faults.fail_creates = 1;
        write(&mut w, 0);
        assert_eq!(w.current_path(), None);
        write(&mut w, 1);
        assert_eq!(w.counters().packets_lost_to_errors, 1);
        assert_eq!(w.counters().write_errors, 1);
        w.tick(T0 + NS_PER_SEC / 2).unwrap();
        assert_eq!(w.current_path(), None, "retried at most once a second");
        w.tick(T0 + NS_PER_SEC).unwrap();
        assert_eq!(
            w.current_path().unwrap(),
            dir.path().join("cap_00002_20231114221321.pcapng.part")
        );
        write(&mut w, 2);
        assert_eq!(w.counters().packets_written, 2);
        assert_eq!(w.close(T0).unwrap(), Some(dir.path().join("cap_00003_20231114221321.pcapng")));
    }

    #[test]
    fn unknown_interface_is_a_caller_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = open(policy(dir.path()), T0);
        let err = w.write_packet(2, T0, &[0; 60], 60, 0).unwrap_err();
        assert!(
            matches!(err, WriterError::UnknownInterface { interface_id: 2, count: 2 }),
            "{err}"
        );
        assert_eq!(w.counters().packets_lost_to_errors, 0);
    }

    #[test]
    fn creates_missing_directories() {
        let dir = tempfile::tempdir().unwrap();
        let nested = dir.path().join("a/b/c");
        let w = open(policy(&nested), T0);
        assert!(w.current_path().unwrap().starts_with(&nested));
    }

    #[test]
    fn open_errors_name_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("file");
        fs::write(&blocker, b"").unwrap();
        let bad = blocker.join("sub");
        let err = RotatingWriter::open(policy(&bad), section(), interfaces(), stats().0, at(T0))
            .unwrap_err();
        assert!(matches!(err, WriterError::CreateDir { .. }), "{err:?}");
        assert!(err.to_string().contains(&bad.display().to_string()), "{err}");

        for prefix in ["", "a/b", "nul\0"] {
            let err = RotatingWriter::open(
                Policy { prefix: prefix.into(), ..policy(dir.path()) },
                section(),
                interfaces(),
                stats().0,
                at(T0),
            )
            .unwrap_err();
            assert!(matches!(err, WriterError::InvalidPrefix { .. }), "{err:?}");
        }

        // Permission checks do not apply to root; only meaningful as an ordinary user.
        if unsafe { libc::geteuid() } == 0 {
            println!("note: running as root, skipping the permission-denied check");
            return;
        }
        let locked = dir.path().join("locked");
        fs::create_dir(&locked).unwrap();
        fs::set_permissions(&locked, std::os::unix::fs::PermissionsExt::from_mode(0o500)).unwrap();
        let err = RotatingWriter::open(policy(&locked), section(), interfaces(), stats().0, at(T0))
            .unwrap_err();
        assert!(matches!(err, WriterError::CreateFile { .. }), "{err:?}");
        assert!(err.to_string().contains(&locked.display().to_string()), "{err}");
    }

    /// `command`'s output; `None` (the check skipped, and said) if its program is not
    /// installed, except under `cargo xtask test`, where the Wireshark tools are required as
    /// root is.
    fn run_tool(command: &mut std::process::Command) -> Option<std::process::Output> {
        let program = command.get_program().to_string_lossy().into_owned();
        match command.output() {
            Ok(output) => Some(output),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                assert!(
                    std::env::var_os("CAPTURE_REQUIRE_ROOT").is_none(),
                    "{program} is not installed (CAPTURE_REQUIRE_ROOT is set)"
                );
                println!("note: {program} not installed, skipping the check that uses it");
                None
            }
            Err(e) => panic!("cannot run {program}: {e}"),
        }
    }

    #[test]
    fn capinfos_reads_our_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = open(policy(dir.path()), T0);
        for i in 0..123 {
            write(&mut w, i);
        }
        let path = w.close(T0 + NS_PER_SEC).unwrap().unwrap();
        let Some(output) = run_tool(
            std::process::Command::new("capinfos").args(["-M", "-c", "-t", "-I"]).arg(&path),
        ) else {
            return;
        };
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "capinfos failed: {stdout}{stderr}");
        assert!(stderr.trim().is_empty(), "capinfos complained: {stderr}");
        let count =
            stdout.lines().find_map(|l| l.trim().strip_prefix("Number of packets:")).map(str::trim);
        assert_eq!(count, Some("123"), "{stdout}");
        assert!(stdout.contains("pcapng"), "{stdout}");
        assert!(stdout.contains("Number of interfaces in file: 2"), "{stdout}");
    }

    #[test]
    fn tshark_reads_the_direction_of_every_packet() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = open(policy(dir.path()), T0);
        w.write_packet(0, T0 + 1, &[0x11; 60], 60, DIRECTION_INBOUND).unwrap();
        w.write_packet(1, T0 + 2, &[0x22; 61], 61, DIRECTION_OUTBOUND).unwrap();
        w.write_packet(0, T0 + 3, &[0x33; 62], 62, 0).unwrap();
        let path = w.close(T0 + NS_PER_SEC).unwrap().unwrap();
        let Some(output) =
            run_tool(std::process::Command::new("tshark").arg("-n").arg("-r").arg(&path).args([
                "-T",
                "fields",
                "-e",
                "frame.packet_flags_direction",
            ]))
        else {
            return;
        };
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "tshark failed: {stdout}{stderr}");
        // tshark prints the field in hex (0x00000001 inbound, 0x00000002 outbound), nothing for
        // a packet without epb_flags.
        let directions: Vec<Option<u32>> = stdout
            .lines()
            .map(|l| {
                let l = l.trim();
                (!l.is_empty()).then(|| {
                    let hex = l.strip_prefix("0x").unwrap_or_else(|| panic!("not hex: {l:?}"));
                    u32::from_str_radix(hex, 16).unwrap()
                })
            })
            .collect();
        assert_eq!(
            directions,
            vec![Some(DIRECTION_INBOUND), Some(DIRECTION_OUTBOUND), None],
            "{stdout}{stderr}"
        );
    }

    #[test]
    fn reload_applies_from_the_next_file_in_the_new_place() {
        let dir = tempfile::tempdir().unwrap();
        let other = dir.path().join("moved");
        let mut w = open(Policy { rotate_packets: 2, ..policy(dir.path()) }, T0);
        write(&mut w, 0);
        let mut infos = interfaces();
        infos[0].description = "after the reload".into();
        w.reconfigure(
            Policy { prefix: "new".into(), directory: other.clone(), ..policy(dir.path()) },
            &infos,
        )
        .unwrap();
        write(&mut w, 1); // completes the first file: the rotation switches to the new policy
        for i in 2..5 {
            write(&mut w, i); // rotate_packets is 0 now: one file
        }
        w.close(T0).unwrap();
        assert_eq!(finished(dir.path()).len(), 1, "the old file stays where it was");
        let moved = names(&other);
        assert_eq!(moved.len(), 1, "{moved:?}");
        assert!(moved[0].starts_with("new_00001_") && moved[0].ends_with(".pcapng"), "{moved:?}");
        let rb = read_back(&other.join(&moved[0]));
        assert_eq!(rb.packets.len(), 3);
        assert!(format!("{:?}", rb.idbs[0]).contains("after the reload"));
        // The interface count is fixed while writing.
        assert!(matches!(
            open(policy(dir.path()), T0).reconfigure(policy(dir.path()), &infos[..1]),
            Err(WriterError::InterfaceCountChanged { was: 2, now: 1 })
        ));
    }

    /// Both test interfaces with snap length `snaplen`.
    fn sliced(snaplen: u32) -> Vec<InterfaceInfo> {
        interfaces().into_iter().map(|i| InterfaceInfo { snaplen, ..i }).collect()
    }

    fn write_len(w: &mut RotatingWriter, len: usize) {
        w.write_packet(0, T0, &vec![0xab; len], 1500, 0).unwrap();
    }

    /// Every record of every finished file in `dir` fits its IDB's snap length, as libpcap
    /// requires; returns (each file's snap lengths, its record lengths).
    fn records_within_snaplen(dir: &Path) -> Vec<(Vec<u32>, Vec<usize>)> {
        finished(dir)
            .iter()
            .map(|path| {
                let rb = read_back(path);
                let snaplens: Vec<u32> = rb.idbs.iter().map(|i| i.snaplen).collect();
                for (ifid, _, data, _, _) in &rb.packets {
                    let limit = snaplens[*ifid as usize];
                    assert!(
                        limit == 0 || data.len() <= limit as usize,
                        "{}: a {}-byte record under an IDB snaplen of {limit}",
                        path.display(),
                        data.len()
                    );
                }
                (snaplens, rb.packets.iter().map(|p| p.2.len()).collect())
            })
            .collect()
    }

    #[test]
    fn raising_snaplen_on_reload_starts_a_new_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut w =
            RotatingWriter::open(policy(dir.path()), section(), sliced(64), stats().0, at(T0))
                .unwrap();
        write_len(&mut w, 64);
        w.reconfigure(policy(dir.path()), &sliced(128)).unwrap();
        write_len(&mut w, 64); // sliced under the old snaplen, still in flight
        write_len(&mut w, 128);
        w.close(T0).unwrap();
        let files = records_within_snaplen(dir.path());
        assert_eq!(files, [(vec![64, 64], vec![64]), (vec![128, 128], vec![64, 128])]);
    }

    #[test]
    fn lowering_snaplen_applies_from_the_next_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = RotatingWriter::open(
            Policy { rotate_packets: 3, ..policy(dir.path()) },
            section(),
            sliced(128),
            stats().0,
            at(T0),
        )
        .unwrap();
        write_len(&mut w, 128);
        w.reconfigure(Policy { rotate_packets: 3, ..policy(dir.path()) }, &sliced(64)).unwrap();
        write_len(&mut w, 128); // in flight: the file's promise still holds
        write_len(&mut w, 64);
        write_len(&mut w, 64);
        w.close(T0).unwrap();
        let files = records_within_snaplen(dir.path());
        assert_eq!(files, [(vec![128, 128], vec![128, 128, 64]), (vec![64, 64], vec![64])]);
    }

    #[test]
    fn a_record_longer_than_the_files_snaplen_starts_a_file_that_promises_none() {
        // The kernel took a raised snaplen before the writer heard of the reload.
        let dir = tempfile::tempdir().unwrap();
        let mut w =
            RotatingWriter::open(policy(dir.path()), section(), sliced(64), stats().0, at(T0))
                .unwrap();
        write_len(&mut w, 64);
        write_len(&mut w, 86);
        // The reload arrives: it raises the other interface's 64, so another file starts.
        w.reconfigure(policy(dir.path()), &sliced(128)).unwrap();
        write_len(&mut w, 100);
        w.close(T0).unwrap();
        let files = records_within_snaplen(dir.path());
        assert_eq!(
            files,
            [(vec![64, 64], vec![64]), (vec![0, 64], vec![86]), (vec![128, 128], vec![100])]
        );
    }

    #[test]
    fn tcpdump_reads_a_file_written_across_a_snaplen_raise() {
        let dir = tempfile::tempdir().unwrap();
        let mut w =
            RotatingWriter::open(policy(dir.path()), section(), sliced(64), stats().0, at(T0))
                .unwrap();
        for _ in 0..5 {
            write_len(&mut w, 64);
        }
        w.reconfigure(policy(dir.path()), &sliced(128)).unwrap();
        for _ in 0..5 {
            write_len(&mut w, 86);
        }
        w.close(T0).unwrap();
        let mut read = 0;
        for path in finished(dir.path()) {
            let Some(output) =
                run_tool(std::process::Command::new("tcpdump").args(["--count", "-r"]).arg(&path))
            else {
                return;
            };
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(output.status.success(), "tcpdump -r {}: {stderr}", path.display());
            // "N packets"
            let stdout = String::from_utf8_lossy(&output.stdout);
            let n = stdout.split_whitespace().next().and_then(|n| n.parse::<usize>().ok());
            read += n.unwrap_or_else(|| panic!("tcpdump --count -r: {stdout}{stderr}"));
        }
        assert_eq!(read, 10, "libpcap reads every record");
    }

    #[test]
    fn switching_interfaces_finishes_the_file_and_renumbers_from_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let (old_stats, old_calls) = stats();
        let mut w =
            RotatingWriter::open(policy(dir.path()), section(), interfaces(), old_stats, at(T0))
                .unwrap();
        write(&mut w, 0);
        write(&mut w, 1); // interface 1
        let (new_stats, new_calls) = stats();
        let only = vec![InterfaceInfo {
            name: "eth9".into(),
            description: "added by a reload".into(),
            snaplen: 128,
        }];
        w.switch_interfaces(policy(dir.path()), &only, new_stats).unwrap();
        w.wait_finished();
        assert_eq!(old_calls.load(Ordering::Relaxed), 2, "the old file's ISBs: old statistics");
        assert_eq!(finished(dir.path()).len(), 1, "the old file is finished at once");
        w.write_packet(0, T0 + 5, &[0xaa; 60], 60, DIRECTION_OUTBOUND).unwrap();
        assert!(
            matches!(
                w.write_packet(1, T0 + 6, &[0; 60], 60, DIRECTION_INBOUND),
                Err(WriterError::UnknownInterface { interface_id: 1, count: 1 })
            ),
            "ids follow the new list"
        );
        w.close(T0).unwrap();
        assert_eq!(new_calls.load(Ordering::Relaxed), 1, "the new file's ISB: new statistics");
        let files = finished(dir.path());
        assert_eq!(files.len(), 2);
        let (first, second) = (read_back(&files[0]), read_back(&files[1]));
        assert_complete(&first);
        assert_eq!((first.idbs.len(), first.packets.len(), first.isbs.len()), (2, 2, 2));
        assert_eq!((second.idbs.len(), second.packets.len(), second.isbs.len()), (1, 1, 1));
        assert!(format!("{:?}", second.idbs[0]).contains("eth9"));
        assert_eq!(second.packets[0].2, vec![0xaa; 60]);
        assert_eq!(second.packets[0].4, DIRECTION_OUTBOUND);
    }

    #[test]
    fn files_and_directories_get_restrictive_modes() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("a/b");
        let mut w = open(policy(&out), T0);
        write(&mut w, 0);
        let path = w.close(T0).unwrap().unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&out) & !0o022, 0o750, "created directory");
        assert_eq!(mode(&path) & !0o022, 0o640, "capture file");
        assert_eq!(mode(&path) & 0o007, 0, "nothing for others");
    }

    #[test]
    fn a_world_writable_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o777)).unwrap();
        let err =
            RotatingWriter::open(policy(dir.path()), section(), interfaces(), stats().0, at(T0))
                .unwrap_err();
        assert!(matches!(err, WriterError::WorldWritable { mode: 0o777, .. }), "{err}");
        assert!(err.to_string().contains("writable by everyone"), "{err}");
    }

    #[test]
    fn strict_modes_refuse_directories_others_could_change() {
        let node = |uid, gid, mode| DirNode { uid, gid, mode };
        let (me, group) = (998, Some(40));
        // The output directory: ours or root's, writable by us (and our [output] group) only.
        assert!(judge_dir(node(me, 0, 0o40750), true, me, None).is_ok());
        assert!(judge_dir(node(0, 0, 0o40700), true, me, None).is_ok());
        assert!(judge_dir(node(me, 40, 0o40770), true, me, group).is_ok());
        let other_owner = judge_dir(node(1000, 0, 0o40750), true, me, None).unwrap_err();
        assert!(
            other_owner.starts_with("is owned by uid 1000, not by the service's user (uid 998)")
        );
        let other_group = judge_dir(node(me, 41, 0o40770), true, me, group).unwrap_err();
        assert!(other_group.contains("writable by group 41 (mode 770)"), "{other_group}");
        assert!(other_group.ends_with("or name that group in [output] group"), "{other_group}");
        assert!(judge_dir(node(me, 40, 0o40770), true, me, None).is_err());
        let world = judge_dir(node(me, 0, 0o41777), true, me, None).unwrap_err();
        assert!(world.contains("writable by everyone (mode 1777)"), "{world}");
        // Directories above it: no group may write, the sticky /tmp may be world-writable.
        assert!(judge_dir(node(0, 0, 0o40755), false, me, None).is_ok());
        assert!(judge_dir(node(0, 0, 0o41777), false, me, None).is_ok());
        assert!(judge_dir(node(0, 0, 0o40777), false, me, None).is_err());
        assert!(
            judge_dir(node(0, 40, 0o40775), false, me, group).unwrap_err().ends_with("chmod g-w")
        );
        assert!(judge_dir(node(1000, 1000, 0o40755), false, me, None).is_err());
    }

    /// The output directory is renamed away while the writer runs, and a symlink to another
    /// directory, or a new directory, takes its name: every file is still created, finished and
    /// deleted in the directory the writer opened, and nothing happens under the new name.
    #[test]
    fn a_directory_swapped_under_the_writer_is_not_followed() {
        for swap in ["symlink", "new directory"] {
            let base = tempfile::tempdir().unwrap();
            let out = base.path().join("out");
            let held = base.path().join("out.old");
            let elsewhere = base.path().join("elsewhere");
            fs::create_dir(&elsewhere).unwrap();
            let decoy = format!("cap_00001_{T0_STAMP}.pcapng");
            fs::write(elsewhere.join(&decoy), b"decoy").unwrap();
            let mut w = open(Policy { rotate_packets: 1, keep_files: 2, ..policy(&out) }, T0);
            write(&mut w, 0);
            w.wait_finished();
            fs::rename(&out, &held).unwrap();
            let planted = if swap == "symlink" {
                std::os::unix::fs::symlink(&elsewhere, &out).unwrap();
                elsewhere.clone()
            } else {
                fs::create_dir(&out).unwrap();
                fs::write(out.join(&decoy), b"decoy").unwrap();
                out.clone()
            };
            for i in 1..6 {
                write(&mut w, i);
            }
            w.wait_finished();
            assert_eq!(names(&planted), vec![decoy.clone()], "{swap}: nothing under the new name");
            assert_eq!(w.counters().files_deleted, 4, "{swap}: files 1 to 4");
            w.close(T0).unwrap();
            assert_eq!(names(&planted), vec![decoy.clone()], "{swap}: nothing under the new name");
            assert_eq!(fs::read(planted.join(&decoy)).unwrap(), b"decoy", "{swap}");
            let kept: Vec<String> =
                (6..=7).map(|seq| format!("cap_{seq:05}_{T0_STAMP}.pcapng")).collect();
            assert_eq!(names(&held), kept, "{swap}: written, finished and pruned where opened");
        }
    }

    /// The strict-mode rule is applied to the directory held, and the checked path must still
    /// lead to it.
    #[test]
    fn the_directory_held_is_the_one_checked() {
        let base = tempfile::tempdir().unwrap();
        let out = base.path().join("out");
        fs::create_dir(&out).unwrap();
        let held = OutDir::open(&out).unwrap();
        check_held_dir(&held, &out, None).unwrap();
        fs::set_permissions(&out, fs::Permissions::from_mode(0o777)).unwrap();
        let err = check_held_dir(&held, &out, None).unwrap_err();
        assert!(matches!(err, WriterError::WorldWritable { mode: 0o777, .. }), "{err}");
        fs::set_permissions(&out, fs::Permissions::from_mode(0o750)).unwrap();
        // Swapped for another directory between opening and checking.
        fs::rename(&out, base.path().join("out.old")).unwrap();
        fs::create_dir(&out).unwrap();
        let err = check_held_dir(&held, &out, None).unwrap_err().to_string();
        assert!(
            err.ends_with("was replaced by another directory while it was being checked"),
            "{err}"
        );
    }

    #[test]
    fn a_planted_symlink_is_never_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, b"precious").unwrap();
        let out = dir.path().join("out");
        fs::create_dir(&out).unwrap();
        let name = format!("cap_00001_{T0_STAMP}.pcapng.part");
        std::os::unix::fs::symlink(&victim, out.join(&name)).unwrap();
        let mut w = open(policy(&out), T0);
        write(&mut w, 0);
        w.close(T0).unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
        assert!(names(&out).iter().any(|n| n.starts_with("cap_00002_")), "{:?}", names(&out));
    }
}
