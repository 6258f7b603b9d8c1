//! The daemon's files: one shared rotating stream, and one more per target with
//! `output = "own"` (`{prefix}_{target}_{seq}_{time}.pcapng`), each a [`RotatingWriter`] with
//! the same rotation, retention of its own, and the directory's free-space floor in common.
//!
//! A frame goes into the stream of every target it matched that has one, and into the shared
//! stream when it matched a target that writes there (or no known target at all: a frame
//! without a mask). With no shared target there is no shared stream, and no shared file. Every
//! packet, in every stream, carries the comment naming the targets it matched.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use log::info;

use super::clock::Now;
use super::pcapng::{InterfaceInfo, InterfaceStats, SectionInfo};
use super::rotate::{Policy, RotatingWriter, StatsSource, WriterCounters, WriterError};
use super::targets::{Comments, TargetRoute};

/// One [`StatsSource`] for every stream (the interfaces are the same), replaced as a whole when
/// the interfaces change.
#[derive(Clone)]
struct SharedStats(Arc<Mutex<Box<dyn StatsSource>>>);

impl StatsSource for SharedStats {
    fn stats(&self, interface_id: u32) -> InterfaceStats {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).stats(interface_id)
    }
}

/// A target's own stream.
struct Own {
    name: String,
    bit: u64,
    writer: RotatingWriter,
}

/// Every stream of files the daemon writes (see the module docs).
pub struct Streams {
    shared: Option<RotatingWriter>,
    /// Slots of the targets that write to the shared stream.
    shared_mask: u64,
    /// Slots of every target: a frame with none of them set goes to the shared stream.
    known: u64,
    own: Vec<Own>,
    comments: Comments,
    /// What a stream opened by a reload starts with.
    policy: Policy,
    section: SectionInfo,
    infos: Vec<InterfaceInfo>,
    stats: SharedStats,
    count_current: bool,
    now: Now,
    /// Counters of the streams closed by reloads, so the totals never go back.
    closed: WriterCounters,
}

/// The prefix of `target`'s own files.
pub fn own_prefix(prefix: &str, target: &str) -> String {
    format!("{prefix}_{target}")
}

/// True when the shared stream is needed: a target writes there, or there is no target.
fn wants_shared(targets: &[TargetRoute]) -> bool {
    targets.is_empty() || targets.iter().any(|t| !t.own)
}

impl Streams {
    /// Opens the shared stream (if a target writes there) and one stream per own target; see
    /// [`RotatingWriter::open`]. With `count_current`, `keep_files` counts the file being
    /// written, in every stream.
    pub fn open(
        policy: Policy,
        section: SectionInfo,
        infos: Vec<InterfaceInfo>,
        stats: Box<dyn StatsSource>,
        now: Now,
        targets: &[TargetRoute],
        count_current: bool,
    ) -> Result<Self, WriterError> {
        let mut streams = Streams {
            shared: None,
            shared_mask: 0,
            known: 0,
            own: Vec::new(),
            comments: Comments::new(targets),
            policy,
            section,
            infos,
            stats: SharedStats(Arc::new(Mutex::new(stats))),
            count_current,
            now,
            closed: WriterCounters::default(),
        };
        if wants_shared(targets) {
            streams.shared = Some(streams.open_stream(streams.policy.clone())?);
        }
        for t in targets.iter().filter(|t| t.own) {
            let writer = streams.open_stream(streams.own_policy(&t.name))?;
            streams.own.push(Own { name: t.name.clone(), bit: t.bit(), writer });
        }
        streams.set_masks(targets);
        Ok(streams)
    }

    fn own_policy(&self, target: &str) -> Policy {
        Policy { prefix: own_prefix(&self.policy.prefix, target), ..self.policy.clone() }
    }

    fn open_stream(&self, policy: Policy) -> Result<RotatingWriter, WriterError> {
        let stats = Box::new(self.stats.clone());
        let mut w = RotatingWriter::open(
            policy,
            self.section.clone(),
            self.infos.clone(),
            stats,
            self.now,
        )?;
        if self.count_current {
            w.keep_files_include_current();
        }
        Ok(w)
    }

    /// Masks, comments, and each stream's knowledge of the others (for the floor).
    fn set_masks(&mut self, targets: &[TargetRoute]) {
        self.shared_mask = targets.iter().filter(|t| !t.own).fold(0, |m, t| m | t.bit());
        self.known = targets.iter().fold(0, |m, t| m | t.bit());
        self.comments = Comments::new(targets);
        for own in &mut self.own {
            if let Some(t) = targets.iter().find(|t| t.name == own.name) {
                own.bit = t.bit();
            }
        }
        let prefixes: Vec<String> = self.writers().map(|w| w.prefix().to_owned()).collect();
        for w in self.writers_mut() {
            let others = prefixes.iter().filter(|p| p.as_str() != w.prefix()).cloned().collect();
            w.set_other_streams(others);
        }
    }

    fn writers(&self) -> impl Iterator<Item = &RotatingWriter> {
        self.shared.iter().chain(self.own.iter().map(|o| &o.writer))
    }

    fn writers_mut(&mut self) -> impl Iterator<Item = &mut RotatingWriter> {
        self.shared.iter_mut().chain(self.own.iter_mut().map(|o| &mut o.writer))
    }

    /// One frame into every stream it belongs to, commented with the targets of `matched`.
    #[inline]
    pub fn write_packet(
        &mut self,
        interface_id: u32,
        ts_ns: u64,
        data: &[u8],
        orig_len: u32,
        flags: u32,
        matched: u64,
    ) -> Result<(), WriterError> {
        let comment = self.comments.option(matched);
        if let Some(shared) = &mut self.shared
            && (matched & self.shared_mask != 0 || matched & self.known == 0)
        {
            shared.write_packet_commented(interface_id, ts_ns, data, orig_len, flags, comment)?;
        }
        for own in &mut self.own {
            if matched & own.bit != 0 {
                own.writer.write_packet_commented(
                    interface_id,
                    ts_ns,
                    data,
                    orig_len,
                    flags,
                    comment,
                )?;
            }
        }
        Ok(())
    }

    pub fn tick(&mut self, now: Now) -> Result<(), WriterError> {
        self.now = now;
        for w in self.writers_mut() {
            w.set_wall_offset(now.offset_ns);
            w.tick(now.mono_ns)?;
        }
        Ok(())
    }

    /// Counters of every stream, those a reload closed included.
    pub fn counters(&self) -> WriterCounters {
        self.writers().map(RotatingWriter::counters).fold(self.closed, add)
    }

    /// Each stream's prefix and counters, the shared one first.
    pub fn per_stream(&self) -> Vec<(String, WriterCounters)> {
        self.writers().map(|w| (w.prefix().to_owned(), w.counters())).collect()
    }

    /// The shared stream's `.part` file, or the first own one's without a shared stream.
    pub fn current_path(&self) -> Option<&Path> {
        self.writers().find_map(RotatingWriter::current_path)
    }

    /// New settings and targets (a reload): streams of own targets that are new are opened, those
    /// of targets gone or no longer own are finished; the shared one likewise. The streams that
    /// stay take the settings from their next file (see [`RotatingWriter::reconfigure`]).
    pub fn reconfigure(
        &mut self,
        policy: Policy,
        infos: &[InterfaceInfo],
        targets: &[TargetRoute],
    ) -> Result<(), WriterError> {
        self.policy = policy;
        self.infos = infos.to_vec();
        let mut first_error = None;
        // Streams that end.
        let (keep, gone): (Vec<Own>, Vec<Own>) = std::mem::take(&mut self.own)
            .into_iter()
            .partition(|o| targets.iter().any(|t| t.own && t.name == o.name));
        self.own = keep;
        for o in gone {
            info!("target {} no longer has files of its own: finishing its stream", o.name);
            self.finish(o.writer);
        }
        if !wants_shared(targets)
            && let Some(shared) = self.shared.take()
        {
            info!("no target writes to the shared stream any more: finishing it");
            self.finish(shared);
        }
        // Streams that stay.
        if let Some(shared) = &mut self.shared
            && let Err(e) = shared.reconfigure(self.policy.clone(), infos)
        {
            first_error.get_or_insert(e);
        }
        for i in 0..self.own.len() {
            let policy = self.own_policy(&self.own[i].name);
            if let Err(e) = self.own[i].writer.reconfigure(policy, infos) {
                first_error.get_or_insert(e);
            }
        }
        // Streams that start.
        if self.shared.is_none() && wants_shared(targets) {
            match self.open_stream(self.policy.clone()) {
                Ok(w) => self.shared = Some(w),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        for t in targets.iter().filter(|t| t.own) {
            if self.own.iter().any(|o| o.name == t.name) {
                continue;
            }
            match self.open_stream(self.own_policy(&t.name)) {
                Ok(writer) => {
                    info!("target {} gets files of its own", t.name);
                    self.own.push(Own { name: t.name.clone(), bit: t.bit(), writer });
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        self.set_masks(targets);
        first_error.map_or(Ok(()), Err)
    }

    fn finish(&mut self, writer: RotatingWriter) {
        let (_, counters) = writer.close_counted(self.now.mono_ns);
        self.closed = add(self.closed, counters);
    }

    /// Finishes every stream's file and starts the next with other interfaces (see
    /// [`RotatingWriter::switch_interfaces`]).
    pub fn switch_interfaces(
        &mut self,
        policy: Policy,
        infos: &[InterfaceInfo],
        stats: Box<dyn StatsSource>,
    ) -> Result<(), WriterError> {
        self.policy = policy;
        self.infos = infos.to_vec();
        *self.stats.0.lock().unwrap_or_else(PoisonError::into_inner) = stats;
        let mut first_error = None;
        if let Some(shared) = &mut self.shared {
            let stats = Box::new(self.stats.clone());
            if let Err(e) = shared.switch_interfaces(self.policy.clone(), infos, stats) {
                first_error.get_or_insert(e);
            }
        }
        for i in 0..self.own.len() {
            let policy = self.own_policy(&self.own[i].name);
            let stats = Box::new(self.stats.clone());
            if let Err(e) = self.own[i].writer.switch_interfaces(policy, infos, stats) {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Finishes every stream; returns the shared stream's last file (the first own one's
    /// without a shared stream), and the counters once every file is finished.
    pub fn close(self, now_ns: u64) -> (Option<PathBuf>, WriterCounters) {
        let mut last = None;
        let mut counters = self.closed;
        for w in self.shared.into_iter().chain(self.own.into_iter().map(|o| o.writer)) {
            let (path, c) = w.close_counted(now_ns);
            last = last.or(path);
            counters = add(counters, c);
        }
        (last, counters)
    }

    /// Waits until every stream's finished files and retention are done.
    pub fn wait_finished(&self) {
        for w in self.writers() {
            w.wait_finished();
        }
    }
}

fn add(a: WriterCounters, b: WriterCounters) -> WriterCounters {
    WriterCounters {
        packets_written: a.packets_written + b.packets_written,
        packets_lost_to_errors: a.packets_lost_to_errors + b.packets_lost_to_errors,
        bytes_written: a.bytes_written + b.bytes_written,
        files_closed: a.files_closed + b.files_closed,
        files_deleted: a.files_deleted + b.files_deleted,
        write_errors: a.write_errors + b.write_errors,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::writer::dir::OutDir;
    use crate::writer::rotate::{delete_oldest, parse_name};
    use capture_common::DIRECTION_INBOUND;
    use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketOption;
    use pcap_file::pcapng::blocks::opt_common::CommonOption;
    use pcap_file::pcapng::{Block, PcapNgReader};

    struct NoStats;

    impl StatsSource for NoStats {
        fn stats(&self, _: u32) -> InterfaceStats {
            InterfaceStats::default()
        }
    }

    const T0: u64 = 1_000_000_000;
    const WALL: i64 = 1_700_000_000_000_000_000;

    fn now(s: u64) -> Now {
        Now { mono_ns: T0 + s * 1_000_000_000, offset_ns: WALL }
    }

    fn route(slot: usize, name: &str, own: bool) -> TargetRoute {
        TargetRoute { slot, name: name.into(), own }
    }

    fn open(policy: Policy, targets: &[TargetRoute]) -> Streams {
        let section = SectionInfo { application: "test".into(), ..SectionInfo::default() };
        let infos = vec![InterfaceInfo { name: "eth0".into(), ..InterfaceInfo::default() }];
        Streams::open(policy, section, infos, Box::new(NoStats), now(0), targets, false).unwrap()
    }

    /// Files of `prefix` in `dir` (finished ones; `.part` ones too when asked), sorted.
    fn files(dir: &Path, prefix: &str) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| parse_name(n, prefix).is_some())
            .collect();
        names.sort();
        names
    }

    /// (first data byte, comment) of every packet in the files of `prefix`.
    fn packets(dir: &Path, prefix: &str) -> Vec<(u8, String)> {
        let mut out = Vec::new();
        for name in files(dir, prefix) {
            let data = std::fs::read(dir.join(&name)).unwrap();
            let mut reader = PcapNgReader::new(std::io::Cursor::new(data)).unwrap();
            while let Some(block) = reader.next_block() {
                if let (Block::EnhancedPacket(epb), _) = block.unwrap() {
                    let comment = epb.options.iter().find_map(|o| match o {
                        EnhancedPacketOption::Common(CommonOption::Comment(c)) => {
                            Some(c.to_string())
                        }
                        _ => None,
                    });
                    out.push((epb.data[0], comment.unwrap_or_default()));
                }
            }
        }
        out
    }

    fn write(s: &mut Streams, tag: u8, matched: u64) {
        s.write_packet(0, 5, &[tag; 60], 60, DIRECTION_INBOUND, matched).unwrap();
    }

    #[test]
    fn each_frame_goes_to_the_streams_of_its_targets_with_their_names() {
        let dir = tempfile::tempdir().unwrap();
        let policy = Policy::unlimited(dir.path().to_path_buf(), "demo");
        // Config order: web01 (own), db01 (own), rest (shared); slots deliberately shuffled.
        let targets = [route(4, "web01", true), route(1, "db01", true), route(0, "rest", false)];
        let mut s = open(policy, &targets);
        write(&mut s, 1, 1 << 4);
        write(&mut s, 2, 1 << 1);
        write(&mut s, 3, 1 << 0);
        write(&mut s, 4, 1 << 4 | 1 << 1);
        write(&mut s, 5, 1 << 4 | 1 << 0);
        write(&mut s, 6, 0);
        let (_, counters) = s.close(now(1).mono_ns);
        assert_eq!(counters.files_closed, 3);
        assert_eq!(counters.packets_written, 2 + 2 + 3 + 1);
        let c = |t: &str| format!("targets: {t}");
        assert_eq!(
            packets(dir.path(), "demo_web01"),
            [(1, c("web01")), (4, c("web01, db01")), (5, c("web01, rest"))]
        );
        assert_eq!(packets(dir.path(), "demo_db01"), [(2, c("db01")), (4, c("web01, db01"))]);
        assert_eq!(
            packets(dir.path(), "demo"),
            [(3, c("rest")), (5, c("web01, rest")), (6, String::new())],
            "the shared stream: its target's frames and those matching no known target"
        );
    }

    #[test]
    fn without_a_shared_target_there_is_no_shared_file() {
        let dir = tempfile::tempdir().unwrap();
        let policy = Policy::unlimited(dir.path().to_path_buf(), "demo");
        let mut s = open(policy, &[route(0, "web01", true)]);
        write(&mut s, 1, 1);
        write(&mut s, 2, 0);
        let _ = s.close(now(1).mono_ns);
        assert_eq!(files(dir.path(), "demo"), Vec::<String>::new());
        assert_eq!(packets(dir.path(), "demo_web01"), [(1, "targets: web01".to_owned())]);
    }

    #[test]
    fn reconfigure_opens_and_finishes_streams() {
        let dir = tempfile::tempdir().unwrap();
        let policy = Policy::unlimited(dir.path().to_path_buf(), "demo");
        let infos = [InterfaceInfo { name: "eth0".into(), ..InterfaceInfo::default() }];
        let mut s = open(policy.clone(), &[route(0, "web01", true), route(1, "db01", false)]);
        write(&mut s, 1, 1);
        write(&mut s, 2, 2);
        // web01 goes, db01 gets files of its own: no target is shared any more.
        s.reconfigure(policy.clone(), &infos, &[route(1, "db01", true)]).unwrap();
        let web = files(dir.path(), "demo_web01");
        assert!(web.len() == 1 && web[0].ends_with(".pcapng"), "finished at once: {web:?}");
        let shared = files(dir.path(), "demo");
        assert!(shared.len() == 1 && shared[0].ends_with(".pcapng"), "{shared:?}");
        write(&mut s, 3, 1);
        write(&mut s, 4, 2);
        // And back: web01 own again, a shared target again.
        s.reconfigure(policy, &infos, &[route(0, "web01", true), route(2, "x", false)]).unwrap();
        write(&mut s, 5, 1);
        write(&mut s, 6, 4);
        let (_, counters) = s.close(now(2).mono_ns);
        assert_eq!(counters.files_closed, 2 + 1 + 2, "finished by each reload and at the end");
        assert_eq!(counters.packets_written, 5, "frame 3 matched no target: shared, none left");
        let t = |n: &str| format!("targets: {n}");
        assert_eq!(packets(dir.path(), "demo_web01"), [(1, t("web01")), (5, t("web01"))]);
        assert_eq!(packets(dir.path(), "demo_db01"), [(4, t("db01"))]);
        assert_eq!(packets(dir.path(), "demo"), [(2, t("db01")), (6, t("x"))]);
    }

    /// The floor is the directory's: the oldest finished file of any stream goes first, by the
    /// time in its name; open (`.part`) files never.
    #[test]
    fn the_floor_takes_the_oldest_file_of_any_stream() {
        let dir = tempfile::tempdir().unwrap();
        let names = [
            "demo_00007_20240101000003.pcapng",
            "demo_web01_00001_20240101000001.pcapng",
            "demo_web01_00002_20240101000004.pcapng",
            "demo_db01_00003_20240101000002.pcapng",
            "demo_db01_00004_20240101000005.pcapng.part",
            "other_00001_20240101000000.pcapng",
        ];
        for n in names {
            std::fs::write(dir.path().join(n), [0u8; 100]).unwrap();
        }
        let held = OutDir::open(dir.path()).unwrap();
        let policy = Policy::unlimited(dir.path().to_path_buf(), "demo_web01");
        let others = ["demo".to_owned(), "demo_db01".to_owned()];
        let left = |expect: &[&str]| {
            let mut now: Vec<String> = std::fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            now.sort();
            let mut expect: Vec<String> = expect.iter().map(|s| (*s).to_owned()).collect();
            expect.sort();
            assert_eq!(now, expect);
        };
        // Per-stream limits count the stream's own files only: keep_files = 1 takes web01's
        // older file, nobody else's.
        let keep_one = Policy { keep_files: 1, ..policy.clone() };
        let pruned = delete_oldest(&held, &keep_one, 1, 0, None, &others);
        assert_eq!(pruned.deleted, 1);
        left(&[names[0], names[2], names[3], names[4], names[5]]);
        // A floor never met: every finished file of the three streams goes, oldest first (the
        // log says the order; here: all), but not the file being written, not the `.part`
        // file, not the files of another prefix.
        let pruned = delete_oldest(&held, &policy, 0, u64::MAX, Some(names[2]), &others);
        assert_eq!(pruned.deleted, 2);
        left(&[names[2], names[4], names[5]]);
    }
}
