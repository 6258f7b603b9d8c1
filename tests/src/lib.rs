//! Harness for the root-only integration tests: each test builds its own network namespace with a
//! veth pair, runs the real `capture-daemon` binary on one end, sends frames from the other, and
//! reads the pcapng files back with pcap-file and with tshark/capinfos.
//!
//! Run through `cargo xtask test`, which builds the release daemon and passes its path in
//! `CAPTURE_DAEMON_BIN`.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use capture_lab::{NetNs, Pace, RawSender, VethPair};
use pcap_file::pcapng::{Block, PcapNgReader};

pub use capture_lab::{Frame, mac};

/// Ethertype of the test frames (IEEE "local experimental"): payload starts with a u32 id.
pub const TEST_ETHERTYPE: u16 = 0x88b5;
pub const CAPTURE_IF: &str = "cap0";
pub const PEER_IF: &str = "gen0";

/// Skips the test unless it may run as root; under `cargo xtask test` (CAPTURE_REQUIRE_ROOT=1)
/// not being root is a failure, never a skip.
pub fn root_or_skip() -> bool {
    // SAFETY: trivial libc call.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        assert!(
            std::env::var_os("CAPTURE_REQUIRE_ROOT").is_none(),
            "integration tests must run as root (CAPTURE_REQUIRE_ROOT is set)"
        );
        eprintln!("skipped: not root (run `cargo xtask test` as root)");
    }
    root
}

pub fn daemon_bin() -> PathBuf {
    let bin = std::env::var_os("CAPTURE_DAEMON_BIN").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/capture-daemon"),
        PathBuf::from,
    );
    assert!(
        bin.exists(),
        "{} not found: run the tests with `cargo xtask test` (it builds the daemon first)",
        bin.display()
    );
    bin
}

/// A test frame: `tags` are (TPID, TCI) outermost first; the payload carries `id` and is padded
/// so the frame is `len` bytes long.
pub fn test_frame(dst: [u8; 6], src: [u8; 6], tags: &[(u16, u16)], id: u32, len: usize) -> Vec<u8> {
    let mut f = Frame::ethernet(dst, src);
    for &(tpid, tci) in tags {
        f = f.vlan_tci(tpid, tci);
    }
    let header = 14 + 4 * tags.len();
    let mut payload = id.to_be_bytes().to_vec();
    payload.resize(len.saturating_sub(header).max(4), 0xab);
    f.raw(TEST_ETHERTYPE, &payload)
}

/// The id of a test frame, whatever VLAN tags it carries (or had stripped by the kernel).
pub fn frame_id(data: &[u8]) -> Option<u32> {
    let mut off = 12;
    loop {
        let et = u16::from_be_bytes(data.get(off..off + 2)?.try_into().ok()?);
        if matches!(et, 0x8100 | 0x88a8 | 0x9100) {
            off += 4;
            continue;
        }
        if et != TEST_ETHERTYPE {
            return None;
        }
        return Some(u32::from_be_bytes(data.get(off + 2..off + 6)?.try_into().ok()?));
    }
}

/// `capture-daemon` in `ns`, under `wrapper` if any (which must exec it, as `setpriv` and
/// `timeout` do, so that signals reach the daemon).
fn daemon_command(ns: &NetNs, wrapper: &[&str]) -> Command {
    let bin = daemon_bin();
    match wrapper.split_first() {
        Some((first, rest)) => {
            let mut c = ns.command(first);
            c.args(rest).arg(bin);
            c
        }
        None => ns.command(bin.to_str().expect("utf-8 path")),
    }
}

/// A namespace with a veth pair and a scratch directory; everything is removed on drop.
pub struct Lab {
    pub veth: VethPair,
    pub ns: NetNs,
    pub dir: tempfile::TempDir,
}

impl Lab {
    pub fn new(queues: u32) -> Lab {
        let ns = NetNs::create("captest").expect("creating a network namespace");
        let veth =
            VethPair::create(&ns, CAPTURE_IF, PEER_IF, queues).expect("creating a veth pair");
        let dir = tempfile::tempdir().expect("temp dir");
        Lab { veth, ns, dir }
    }

    pub fn out_dir(&self) -> PathBuf {
        self.dir.path().join("out")
    }

    /// Writes a config: `capture` and `output` lines are added to the defaults below, `targets`
    /// is appended verbatim.
    pub fn config(&self, capture: &str, output: &str, targets: &str) -> PathBuf {
        self.config_on(&[&format!("name = \"{CAPTURE_IF}\"")], capture, output, targets)
    }

    /// Like [`Lab::config`], with one `[[interface]]` table per entry of `interfaces` (its
    /// lines, e.g. `name = "cap1"`).
    pub fn config_on(
        &self,
        interfaces: &[&str],
        capture: &str,
        output: &str,
        targets: &str,
    ) -> PathBuf {
        // The tests written for mirror mode say nothing of the mode: they keep it.
        let interfaces: Vec<String> = interfaces
            .iter()
            .map(|i| {
                let mode = if i.contains("mode =") { "" } else { "mode = \"mirror\"\n" };
                format!("{mode}{i}")
            })
            .collect();
        let interfaces: Vec<&str> = interfaces.iter().map(String::as_str).collect();
        write_config(self.dir.path(), &interfaces, capture, output, targets)
    }

    pub fn start(&self, config: &Path) -> Daemon {
        Daemon::start(&self.ns, config)
    }

    /// Sends frames from the peer at the given pace (then lets NAPI finish, as `send` does).
    pub fn send_paced(&self, frames: &[Vec<u8>], pace: Pace) {
        let peer = self.veth.peer.clone();
        let sent =
            self.ns.run(|| RawSender::open(&peer)?.send_all(frames, pace)).expect("sending frames");
        assert_eq!(sent, frames.len() as u64);
        std::thread::sleep(Duration::from_millis(300));
    }

    /// Sends frames from the peer, paced so veth's 256-frame XDP ring never overflows.
    pub fn send(&self, frames: &[Vec<u8>]) {
        self.send_from(&self.veth.peer, frames);
    }

    /// Another veth pair in the lab's namespace (removed with the namespace).
    pub fn add_pair(&self, capture: &str, peer: &str, queues: u32) -> VethPair {
        VethPair::create(&self.ns, capture, peer, queues).expect("creating a second veth pair")
    }

    /// Like [`Lab::send`], from the interface `peer` of the lab's namespace.
    pub fn send_from(&self, peer: &str, frames: &[Vec<u8>]) {
        let sent = self
            .ns
            .run(|| RawSender::open(peer)?.send_all(frames, Pace::default()))
            .expect("sending frames");
        assert_eq!(sent, frames.len() as u64);
        // Let NAPI finish the last frames before anyone detaches the program.
        std::thread::sleep(Duration::from_millis(300));
    }

    /// Runs `capture-daemon ARGS` to its end in the lab's namespace, under `wrapper` if any
    /// (`setpriv ...`, which execs it). Returns the exit code and stdout followed by stderr.
    pub fn run_daemon(&self, wrapper: &[&str], args: &[&str]) -> (i32, String) {
        let out =
            daemon_command(&self.ns, wrapper).args(args).output().expect("running capture-daemon");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code().unwrap_or(-1), text)
    }

    /// Opens a receiver on the capture interface: it sees what XDP passed to the kernel.
    pub fn receiver(&self) -> Receiver {
        self.ns.run(|| Receiver::open(CAPTURE_IF)).expect("opening a packet receiver")
    }

    /// True when an XDP program is attached to the capture interface.
    pub fn xdp_attached(&self) -> bool {
        let out = self
            .ns
            .command("ip")
            .args(["-d", "link", "show", CAPTURE_IF])
            .output()
            .expect("ip link show");
        let text = String::from_utf8_lossy(&out.stdout);
        text.contains("prog/xdp") || text.contains("xdpgeneric") || text.contains(" xdp ")
    }

    /// The id of the XDP program attached to the capture interface, if any.
    pub fn xdp_prog_id(&self) -> Option<u64> {
        self.xdp_prog_id_of(CAPTURE_IF)
    }

    /// The id of the XDP program attached to `ifname` in the lab's namespace, if any.
    pub fn xdp_prog_id_of(&self, ifname: &str) -> Option<u64> {
        let out = self.ns.command("ip").args(["-d", "link", "show", ifname]).output().ok()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let rest = text.split("prog/xdp id ").nth(1)?;
        rest.split_whitespace().next()?.parse().ok()
    }

    /// The capture veth's XDP counters from `ethtool -S`, summed over RX queues, by name without
    /// the queue prefix (`xdp_packets`, `xdp_redirect`, `xdp_drops`, ...).
    pub fn xdp_stats(&self) -> std::collections::BTreeMap<String, u64> {
        let mut sums = std::collections::BTreeMap::new();
        for (name, value) in self.xdp_stats_per_queue() {
            *sums
                .entry(name.split_once('_').map_or(name.clone(), |(_, rest)| rest.to_owned()))
                .or_insert(0) += value;
        }
        sums
    }

    /// `ethtool -S` rows of the capture veth's RX queues as ("N_counter", value).
    pub fn xdp_stats_per_queue(&self) -> Vec<(String, u64)> {
        let out = self.ns.command("ethtool").args(["-S", CAPTURE_IF]).output().expect("ethtool -S");
        assert!(out.status.success(), "ethtool -S: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                let (name, value) = l.trim().split_once(':')?;
                let rest = name.strip_prefix("rx_queue_")?;
                Some((rest.to_owned(), value.trim().parse().ok()?))
            })
            .collect()
    }

    /// Finished files (sorted by name, i.e. by sequence) and leftover `.part` files.
    pub fn files(&self) -> (Vec<PathBuf>, Vec<PathBuf>) {
        capture_files(&self.out_dir())
    }
}

/// Writes `dir/capture.toml` with output into `dir/out` (prefix `t`): `capture` and `output`
/// lines are added to those sections, one `[[interface]]` table per entry of `interfaces` (its
/// lines, e.g. `name = "cap0"`), `targets` appended verbatim.
pub fn write_config(
    dir: &Path,
    interfaces: &[&str],
    capture: &str,
    output: &str,
    targets: &str,
) -> PathBuf {
    let interfaces: String = interfaces.iter().map(|i| format!("[[interface]]\n{i}\n\n")).collect();
    let text = format!(
        "[capture]\n{capture}\n\n[output]\ndirectory = \"{}\"\nprefix = \"t\"\n{output}\n\n\
         {interfaces}{targets}\n",
        dir.join("out").display()
    );
    let path = dir.join("capture.toml");
    std::fs::write(&path, text).expect("writing config");
    path
}

/// Finished capture files in `out` (sorted by name, i.e. by sequence) and leftover `.part` files.
pub fn capture_files(out: &Path) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let mut done = Vec::new();
    let mut part = Vec::new();
    if let Ok(entries) = std::fs::read_dir(out) {
        for e in entries.filter_map(Result::ok) {
            let p = e.path();
            let name = p.file_name().unwrap_or_default().to_string_lossy().into_owned();
            if name.ends_with(".pcapng.part") {
                part.push(p);
            } else if name.ends_with(".pcapng") {
                done.push(p);
            }
        }
    }
    done.sort();
    part.sort();
    (done, part)
}

/// Collects `child`'s stderr line by line on a thread of its own, echoing each line to the
/// test's stderr behind `echo` (`"daemon | ..."`) if given.
fn collect_lines(child: &mut Child, echo: Option<&'static str>) -> Arc<Mutex<Vec<String>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&lines);
    let pipe = child.stderr.take().expect("stderr is piped");
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            if let Some(name) = echo {
                eprintln!("{name} | {line}");
            }
            sink.lock().expect("log lock").push(line);
        }
    });
    lines
}

/// The daemon process, its stderr collected line by line.
pub struct Daemon {
    child: Option<Child>,
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Daemon {
    pub fn start(ns: &NetNs, config: &Path) -> Daemon {
        Self::start_with(ns, config, &[])
    }

    /// Starts `run --config CONFIG` with more arguments, and waits until it captures on every
    /// interface of the config.
    pub fn start_with(ns: &NetNs, config: &Path, args: &[&str]) -> Daemon {
        let d = Self::spawn_with(ns, config, args);
        d.wait_until_capturing(config);
        d
    }

    /// Waits for a "capturing on" line per `[[interface]]` of `config`: the daemon attaches its
    /// interfaces one after the other, and frames sent after the first line could still miss
    /// the last interface.
    fn wait_until_capturing(&self, config: &Path) {
        let text = std::fs::read_to_string(config).unwrap_or_default();
        let interfaces = text.lines().filter(|l| l.trim() == "[[interface]]").count().max(1);
        self.wait_for_log_count("capturing on", interfaces, Duration::from_secs(20));
    }

    /// Starts without waiting (for start-up failure tests).
    pub fn spawn(ns: &NetNs, config: &Path) -> Daemon {
        Self::spawn_with(ns, config, &[])
    }

    fn spawn_with(ns: &NetNs, config: &Path, args: &[&str]) -> Daemon {
        Self::spawn_via(ns, &[], config, args)
    }

    /// Starts `WRAPPER... capture-daemon run --config CONFIG ARGS` (e.g. under `setpriv`, which
    /// execs the daemon, so signals still reach it) and waits until it captures.
    pub fn start_via(ns: &NetNs, wrapper: &[&str], config: &Path, args: &[&str]) -> Daemon {
        let d = Self::spawn_via(ns, wrapper, config, args);
        d.wait_until_capturing(config);
        d
    }

    fn spawn_via(ns: &NetNs, wrapper: &[&str], config: &Path, args: &[&str]) -> Daemon {
        let mut child = daemon_command(ns, wrapper)
            .args(["run", "--config"])
            .arg(config)
            .args(args)
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("starting capture-daemon");
        let log = collect_lines(&mut child, Some("daemon"));
        Daemon { child: Some(child), log }
    }

    pub fn log_text(&self) -> String {
        self.log.lock().expect("log lock").join("\n")
    }

    /// The log, still readable after [`Daemon::stop`] consumed the daemon.
    pub fn log_handle(&self) -> Log {
        Log(Arc::clone(&self.log))
    }

    pub fn wait_for_log(&self, needle: &str, timeout: Duration) {
        self.wait_for_log_count(needle, 1, timeout);
    }

    /// Waits until `count` log lines contain `needle` (e.g. the second "reloaded:").
    pub fn wait_for_log_count(&self, needle: &str, count: usize, timeout: Duration) {
        let start = Instant::now();
        while start.elapsed() < timeout {
            let lines = self.log.lock().expect("log lock");
            if lines.iter().filter(|l| l.contains(needle)).count() >= count {
                return;
            }
            drop(lines);
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "daemon did not log {needle:?} {count} time(s) within {timeout:?}; log:\n{}",
            self.log_text()
        );
    }

    /// The daemon's process id (`ip netns exec` execs it).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn signal(&self, sig: i32) {
        let pid = self.child.as_ref().expect("running").id();
        // `ip netns exec` execs the daemon, so this pid is the daemon itself.
        // SAFETY: signalling our own child.
        unsafe { libc::kill(pid as i32, sig) };
    }

    /// SIGTERM, then waits; returns the exit status and how long the stop took.
    pub fn stop(mut self) -> (ExitStatus, Duration) {
        self.signal(libc::SIGTERM);
        let start = Instant::now();
        let status = self.wait(Duration::from_secs(10));
        (status, start.elapsed())
    }

    pub fn kill9(mut self) {
        self.signal(libc::SIGKILL);
        self.wait(Duration::from_secs(10));
    }

    /// Waits for exit (the daemon exiting by itself, e.g. on a start-up error).
    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let child = self.child.as_mut().expect("running");
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait().expect("waiting for the daemon") {
                self.child = None;
                // Give the log reader a moment to collect the last lines.
                std::thread::sleep(Duration::from_millis(50));
                return status;
            }
            assert!(start.elapsed() < timeout, "daemon did not exit within {timeout:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A daemon's collected stderr.
pub struct Log(Arc<Mutex<Vec<String>>>);

impl Log {
    pub fn text(&self) -> String {
        self.0.lock().expect("log lock").join("\n")
    }
}

/// An AF_PACKET receiver on the capture interface: it sees frames XDP passed to the kernel.
pub struct Receiver(capture_lab::Receiver);

impl Receiver {
    fn open(ifname: &str) -> anyhow::Result<Receiver> {
        capture_lab::Receiver::open(ifname).map(Receiver)
    }

    /// Every frame received so far (does not wait).
    pub fn drain(&self) -> Vec<Vec<u8>> {
        self.0.drain()
    }

    /// Ids of the test frames received so far.
    pub fn ids(&self) -> Vec<u32> {
        let mut ids: Vec<u32> = self.drain().iter().filter_map(|f| frame_id(f)).collect();
        ids.sort_unstable();
        ids
    }
}

/// One Enhanced Packet Block as read back by pcap-file.
#[derive(Debug, Clone)]
pub struct Packet {
    pub interface_id: u32,
    pub ts_ns: u128,
    pub orig_len: u32,
    pub data: Vec<u8>,
    /// The block's epb_flags option, `None` when it has none (see [`direction`]).
    pub flags: Option<u32>,
    /// The block's opt_comment (the targets it matched), `None` when it has none.
    pub comment: Option<String>,
}

/// The direction bits (0-1) of a packet's epb_flags: `Some(capture_common::DIRECTION_INBOUND)`
/// (1), `Some(capture_common::DIRECTION_OUTBOUND)` (2), `Some(0)` for flags that leave it
/// unknown, `None` when the block carries no epb_flags at all.
pub fn direction(p: &Packet) -> Option<u32> {
    p.flags.map(|f| f & 3)
}

/// The counters of one Interface Statistics Block (None: the option is absent).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Isb {
    pub interface_id: u32,
    pub ifrecv: Option<u64>,
    pub filteraccept: Option<u64>,
    pub osdrop: Option<u64>,
    pub usrdeliv: Option<u64>,
}

/// What a pcapng file holds, read by pcap-file (an independent reader).
#[derive(Debug, Default)]
pub struct PcapngFile {
    pub interfaces: Vec<(String, u32)>,
    pub packets: Vec<Packet>,
    pub statistics: usize,
    pub isbs: Vec<Isb>,
}

pub fn read_pcapng(path: &Path) -> PcapngFile {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut reader = PcapNgReader::new(file).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut out = PcapngFile::default();
    while let Some(block) = reader.next_block() {
        let (block, _) = block.unwrap_or_else(|e| panic!("{}: bad block: {e}", path.display()));
        match block {
            Block::InterfaceDescription(idb) => {
                let name = idb
                    .options
                    .iter()
                    .find_map(|o| match o {
                        pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionOption::IfName(n) => {
                            Some(n.to_string())
                        }
                        _ => None,
                    })
                    .unwrap_or_default();
                out.interfaces.push((name, idb.snaplen));
            }
            Block::EnhancedPacket(epb) => out.packets.push(Packet {
                interface_id: epb.interface_id,
                ts_ns: epb.timestamp.as_nanos(),
                orig_len: epb.original_len,
                flags: epb.options.iter().find_map(|o| match o {
                    pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketOption::Flags(f) => {
                        Some(*f)
                    }
                    _ => None,
                }),
                comment: epb.options.iter().find_map(|o| match o {
                    pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketOption::Common(
                        pcap_file::pcapng::blocks::opt_common::CommonOption::Comment(c),
                    ) => Some(c.to_string()),
                    _ => None,
                }),
                data: epb.data.to_vec(),
            }),
            Block::InterfaceStatistics(isb) => {
                use pcap_file::pcapng::blocks::interface_statistics::InterfaceStatisticsOption as O;
                out.statistics += 1;
                let mut counts = Isb { interface_id: isb.interface_id, ..Isb::default() };
                for o in &isb.options {
                    match *o {
                        O::IsbIfRecv(n) => counts.ifrecv = Some(n),
                        O::IsbFilterAccept(n) => counts.filteraccept = Some(n),
                        O::IsbOsDrop(n) => counts.osdrop = Some(n),
                        O::IsbUsrDeliv(n) => counts.usrdeliv = Some(n),
                        _ => {}
                    }
                }
                out.isbs.push(counts);
            }
            _ => {}
        }
    }
    out
}

/// Packets of several files in order.
pub fn read_all(paths: &[PathBuf]) -> Vec<Packet> {
    paths.iter().flat_map(|p| read_pcapng(p).packets).collect()
}

/// Sorted ids of the test frames in the packets.
pub fn ids(packets: &[Packet]) -> Vec<u32> {
    let mut ids: Vec<u32> = packets.iter().filter_map(|p| frame_id(&p.data)).collect();
    ids.sort_unstable();
    ids
}

/// The test-frame ids in `files` by the name of the interface each packet's file gives it
/// (interface ids are per file), sorted. Each file must also pass capinfos with its count.
pub fn ids_by_interface(files: &[PathBuf]) -> std::collections::BTreeMap<String, Vec<u32>> {
    let mut by: std::collections::BTreeMap<String, Vec<u32>> = std::collections::BTreeMap::new();
    for file in files {
        let f = read_pcapng(file);
        assert_eq!(capinfos_count(file), f.packets.len() as u64, "{}", file.display());
        for p in &f.packets {
            let name = f.interfaces[p.interface_id as usize].0.clone();
            by.entry(name).or_default().extend(frame_id(&p.data));
        }
    }
    by.values_mut().for_each(|v| v.sort_unstable());
    by
}

/// `capinfos -c` packet count (capinfos fails on a damaged file, which fails the test).
pub fn capinfos_count(path: &Path) -> u64 {
    let out =
        Command::new("capinfos").args(["-M", "-c"]).arg(path).output().expect("running capinfos");
    assert!(
        out.status.success(),
        "capinfos {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("Number of packets:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no packet count in capinfos output: {text}"))
}

/// How many packets libpcap reads from `path` (`tcpdump --count -r`). libpcap is stricter than
/// Wireshark: it stops at the first record longer than its interface's snap length.
pub fn tcpdump_count(path: &Path) -> u64 {
    let out = Command::new("tcpdump")
        .args(["--count", "-r"])
        .arg(path)
        .output()
        .expect("running tcpdump");
    let (stdout, stderr) =
        (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "tcpdump -r {}: {stderr}", path.display());
    // "N packets"; a read error after the header still exits 0, with a message on stderr.
    assert!(!stderr.contains("tcpdump:"), "tcpdump -r {}: {stderr}", path.display());
    stdout
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no packet count from tcpdump: {stdout}{stderr}"))
}

/// `tshark -T fields` rows for the given fields.
pub fn tshark_fields(path: &Path, fields: &[&str]) -> Vec<Vec<String>> {
    let mut cmd = Command::new("tshark");
    cmd.arg("-r").arg(path).args(["-T", "fields", "-E", "separator=|"]);
    for f in fields {
        cmd.args(["-e", f]);
    }
    let out = cmd.output().expect("running tshark");
    assert!(
        out.status.success(),
        "tshark {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.split('|').map(str::to_owned).collect())
        .collect()
}

/// The direction tshark reads in each packet of `path` (field `frame.packet_flags_direction`),
/// in file order, as a decimal number: "1" inbound, "2" outbound, "0" unknown, and "" for a
/// packet without epb_flags. (tshark prints the field in hex, e.g. `0x00000001`; the value is
/// normalised here so tests do not depend on its formatting.)
pub fn tshark_directions(path: &Path) -> Vec<String> {
    tshark_fields(path, &["frame.packet_flags_direction"])
        .into_iter()
        .map(|row| {
            let field = row.first().map_or("", |f| f.trim());
            if field.is_empty() {
                return String::new();
            }
            let value = match field.strip_prefix("0x") {
                Some(hex) => u32::from_str_radix(hex, 16),
                None => field.parse(),
            };
            value
                .unwrap_or_else(|e| panic!("tshark direction {field:?} of {}: {e}", path.display()))
                .to_string()
        })
        .collect()
}

/// A tcx hook of an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tcx {
    Ingress,
    Egress,
}

/// Ids of the programs attached to `ifname`'s tcx `hook` in `ns`, in the kernel's order, read
/// with `BPF_PROG_QUERY` (the Debian 12 bpftool cannot show tcx links).
pub fn tcx_prog_ids(ns: &NetNs, ifname: &str, hook: Tcx) -> Vec<u32> {
    const BPF_PROG_QUERY: libc::c_long = 16;
    const BPF_TCX_INGRESS: u32 = 46;
    const BPF_TCX_EGRESS: u32 = 47;
    // The query part of `union bpf_attr` (include/uapi/linux/bpf.h).
    #[repr(C)]
    #[derive(Default)]
    struct Query {
        target_ifindex: u32,
        attach_type: u32,
        query_flags: u32,
        attach_flags: u32,
        prog_ids: u64,
        count: u32,
        _pad: u32,
        prog_attach_flags: u64,
        link_ids: u64,
        link_attach_flags: u64,
        revision: u64,
    }
    let name = std::ffi::CString::new(ifname).expect("interface name");
    ns.run(|| {
        // SAFETY: a NUL-terminated name.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        anyhow::ensure!(ifindex != 0, "no interface {ifname}: {}", std::io::Error::last_os_error());
        const ROOM: u32 = 64;
        let mut ids = [0u32; ROOM as usize];
        let mut q = Query {
            target_ifindex: ifindex,
            attach_type: match hook {
                Tcx::Ingress => BPF_TCX_INGRESS,
                Tcx::Egress => BPF_TCX_EGRESS,
            },
            prog_ids: ids.as_mut_ptr() as u64,
            count: ROOM,
            ..Query::default()
        };
        // SAFETY: BPF_PROG_QUERY with an attr of the kernel's layout and room for 64 ids.
        let rc =
            unsafe { libc::syscall(libc::SYS_bpf, BPF_PROG_QUERY, &raw mut q, size_of::<Query>()) };
        anyhow::ensure!(rc == 0, "BPF_PROG_QUERY {ifname}: {}", std::io::Error::last_os_error());
        Ok(ids[..q.count as usize].to_vec())
    })
    .expect("querying tcx programs")
}

/// tcpdump writing every frame it sees on `ifname` (whole, one write per packet) to a pcap
/// file, for comparing a capture with the tool admins trust.
pub struct Tcpdump {
    child: Option<Child>,
    pub file: PathBuf,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Tcpdump {
    /// Starts `tcpdump -i IFNAME -w FILE FILTER` in `ns` and waits until it listens.
    pub fn start(ns: &NetNs, ifname: &str, file: &Path, filter: &str) -> Tcpdump {
        let mut child = ns
            .command("tcpdump")
            // A large kernel buffer (32 MiB): on a loaded machine the default 2 MiB can fill
            // before tcpdump runs, and the comparison is about the frames, not its speed.
            .args(["-Z", "root", "-i", ifname, "-s", "0", "-B", "32768", "-U", "--immediate-mode"])
            .arg("-w")
            .arg(file)
            .arg(filter)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting tcpdump");
        let stderr = collect_lines(&mut child, None);
        let t = Tcpdump { child: Some(child), file: file.to_owned(), stderr };
        t.wait_until("tcpdump listening", Duration::from_secs(10), |t| {
            t.stderr_text().contains("listening on")
        });
        t
    }

    fn stderr_text(&self) -> String {
        self.stderr.lock().expect("log lock").join("\n")
    }

    fn wait_until(&self, what: &str, timeout: Duration, done: impl Fn(&Tcpdump) -> bool) {
        let start = Instant::now();
        while !done(self) {
            assert!(
                start.elapsed() < timeout,
                "{what}: not within {timeout:?} ({} in the file); tcpdump said: {}",
                read_pcap(&self.file).len(),
                self.stderr_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until the file holds `count` packets (tcpdump writes each at once, `-U`; at most
    /// 15 s), then stops tcpdump and returns what it wrote, checking it reported no drops.
    pub fn finish(mut self, count: usize) -> Vec<Packet> {
        let deadline = Instant::now() + Duration::from_secs(15);
        while read_pcap(&self.file).len() < count && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut child = self.child.take().expect("running");
        // SAFETY: signalling our own child (`ip netns exec` execs tcpdump).
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        let status = child.wait().expect("waiting for tcpdump");
        assert!(status.success(), "tcpdump: {status}: {}", self.stderr_text());
        self.wait_until("tcpdump's summary", Duration::from_secs(5), |t| {
            t.stderr_text().contains("dropped by kernel")
        });
        let text = self.stderr_text();
        assert!(
            text.lines().any(|l| l.trim() == "0 packets dropped by kernel"),
            "tcpdump dropped frames: {text}"
        );
        read_pcap(&self.file)
    }
}

impl Drop for Tcpdump {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The packets of a pcap (not pcapng) file, as far as it is complete; `interface_id` 0 and
/// no flags. An absent file has none.
pub fn read_pcap(path: &Path) -> Vec<Packet> {
    let Ok(file) = std::fs::File::open(path) else { return Vec::new() };
    let Ok(mut reader) = pcap_file::pcap::PcapReader::new(file) else { return Vec::new() };
    let mut out = Vec::new();
    while let Some(Ok(p)) = reader.next_packet() {
        out.push(Packet {
            interface_id: 0,
            ts_ns: p.timestamp().as_nanos(),
            orig_len: p.orig_len(),
            data: p.data().to_vec(),
            flags: None,
            comment: None,
        });
    }
    out
}

/// An IPv4/UDP datagram seen in a frame: addresses, ports, and the number of a
/// [`capture_lab::seq_payload`] (None when the payload is not a whole numbered one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Datagram {
    pub src: std::net::Ipv4Addr,
    pub dst: std::net::Ipv4Addr,
    pub src_port: u16,
    pub dst_port: u16,
    pub seq: Option<u32>,
}

/// The IPv4/UDP datagram in an untagged Ethernet frame, if it is one.
pub fn datagram(frame: &[u8]) -> Option<Datagram> {
    if frame.get(12..14)? != [0x08, 0x00] {
        return None;
    }
    let ip = frame.get(14..)?;
    let ihl = usize::from(ip.first()? & 0x0f) * 4;
    if ip.get(9) != Some(&17) || ihl < 20 {
        return None;
    }
    let total = usize::from(u16::from_be_bytes([*ip.get(2)?, *ip.get(3)?]));
    let addr = |at: usize| -> Option<std::net::Ipv4Addr> {
        Some(<[u8; 4]>::try_from(ip.get(at..at + 4)?).ok()?.into())
    };
    let udp = ip.get(ihl..total)?;
    Some(Datagram {
        src: addr(12)?,
        dst: addr(16)?,
        src_port: u16::from_be_bytes([*udp.first()?, *udp.get(1)?]),
        dst_port: u16::from_be_bytes([*udp.get(2)?, *udp.get(3)?]),
        seq: capture_lab::parse_seq_payload(udp.get(8..)?),
    })
}

/// Panics unless `got` and `want` hold the same items, each as often (order aside), naming how
/// many are missing and extra and the first few of each.
pub fn assert_same_items<T: Ord + Clone + std::fmt::Debug>(got: &[T], want: &[T], what: &str) {
    let (mut got, mut want) = (got.to_vec(), want.to_vec());
    got.sort();
    want.sort();
    let (mut missing, mut extra) = (Vec::new(), Vec::new());
    let (mut g, mut w) = (got.iter().peekable(), want.iter().peekable());
    loop {
        match (g.peek(), w.peek()) {
            (Some(a), Some(b)) if a == b => {
                g.next();
                w.next();
            }
            (Some(a), Some(b)) if a < b => extra.extend(g.next().cloned()),
            (Some(_), Some(_)) | (None, Some(_)) => missing.extend(w.next().cloned()),
            (Some(_), None) => extra.extend(g.next().cloned()),
            (None, None) => break,
        }
    }
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{what}: {} expected, {} got; {} missing, first {:?}; {} extra, first {:?}",
        want.len(),
        got.len(),
        missing.len(),
        &missing[..missing.len().min(5)],
        extra.len(),
        &extra[..extra.len().min(5)]
    );
}

/// The daemon's metrics page (default endpoint, on `ns`'s loopback), HTTP head included.
pub fn scrape_metrics(ns: &NetNs) -> String {
    ns.run(|| {
        use std::io::{Read as _, Write as _};
        let mut conn = std::net::TcpStream::connect("127.0.0.1:9464")?;
        conn.write_all(b"GET /metrics HTTP/1.0\r\n\r\n")?;
        let mut text = String::new();
        conn.read_to_string(&mut text)?;
        Ok(text)
    })
    .expect("scraping the metrics endpoint")
}

/// The value of the sample `series` (name and labels, exactly as exposed) in a metrics page.
pub fn metric(page: &str, series: &str) -> Option<u64> {
    page.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

/// A small tmpfs of our own, for tests that fill a disk; unmounted on drop.
pub struct SmallFs {
    pub path: PathBuf,
}

impl SmallFs {
    pub fn mount(path: PathBuf, size: &str) -> SmallFs {
        std::fs::create_dir_all(&path).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0750")])
            // Named after this process, so `cargo xtask test` knows a leftover from a live one.
            .arg(capture_lab::tmpfs_source("capfull"))
            .arg(&path)
            .status()
            .unwrap()
            .success();
        assert!(ok, "mounting a tmpfs on {}", path.display());
        SmallFs { path }
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.path).status();
    }
}
