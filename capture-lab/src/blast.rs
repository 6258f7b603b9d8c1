//! A fast traffic generator for benchmarks: AF_PACKET with `sendmmsg` in batches and
//! PACKET_QDISC_BYPASS, pinned to one CPU, flat out or at a fixed packet rate.
//!
//! [`FrameSet`] makes the frames (64 B, IMIX, 1514 B; half of them, or one in N, to or from
//! [`BENCH_TARGET_MAC`]); [`Blaster`] sends them round-robin. The only syscall per batch is the
//! `sendmmsg` itself (plus a sleep when rate-limited): no per-frame work beyond filling an iovec.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::{Frame, RawSender, pin_current_thread};

/// The MAC of the benchmark's captured "VM": half of every frame set is to or from it.
pub const BENCH_TARGET_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x00, 0x00, 0x0a];
/// Two other hosts that talk to each other: the frames that match no target.
const OTHER_A: [u8; 6] = [0x52, 0x54, 0x00, 0x00, 0x00, 0x0b];
const OTHER_B: [u8; 6] = [0x52, 0x54, 0x00, 0x00, 0x00, 0x0c];
/// Ethernet + IPv4 + UDP headers: the smallest frame [`Frame::ipv4_udp`] can make.
const HEADERS: usize = 14 + 20 + 8;
/// The IMIX cycle: 7 x 60, 4 x 590, 1 x 1514 bytes (without FCS), spread out rather than in runs.
const IMIX_CYCLE: [usize; 12] = [60, 590, 60, 60, 590, 60, 1514, 60, 590, 60, 60, 590];

#[allow(clippy::cast_possible_truncation)] // 20 bytes.
const SOCKADDR_LL_LEN: libc::socklen_t = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
/// Largest batch handed to one `sendmmsg` (the kernel caps a call at UIO_MAXIOV = 1024).
pub const MAX_BATCH: usize = 1024;

/// The benchmark's frame sets. Sizes are without FCS: "64 B" frames are 60 bytes from the sender,
/// 64 on a real wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FrameSet {
    /// 60-byte frames ("64 B" with FCS).
    Small,
    /// 7:4:1 of 60, 590 and 1514 bytes.
    Imix,
    /// 1514-byte frames (1518 with FCS: a full 1500-byte MTU).
    Large,
}

impl FrameSet {
    pub const ALL: [FrameSet; 3] = [FrameSet::Small, FrameSet::Imix, FrameSet::Large];

    /// The name used on command lines and in reports: `64`, `imix`, `1514`.
    pub fn name(self) -> &'static str {
        match self {
            FrameSet::Small => "64",
            FrameSet::Imix => "imix",
            FrameSet::Large => "1514",
        }
    }

    /// Parses what [`FrameSet::name`] prints (also `64b`, `1514b`, `small`, `large`).
    pub fn parse(s: &str) -> Result<FrameSet> {
        match s.to_ascii_lowercase().as_str() {
            "64" | "64b" | "60" | "small" => Ok(FrameSet::Small),
            "imix" => Ok(FrameSet::Imix),
            "1514" | "1514b" | "1518" | "large" => Ok(FrameSet::Large),
            _ => bail!("unknown frame set {s:?}: use 64, imix or 1514"),
        }
    }

    /// Frame lengths (without FCS) of one size cycle.
    pub fn sizes(self) -> &'static [usize] {
        match self {
            FrameSet::Small => &IMIX_CYCLE[..1],
            FrameSet::Imix => &IMIX_CYCLE,
            FrameSet::Large => &IMIX_CYCLE[6..7],
        }
    }

    /// One full cycle of frames to send round-robin: for each size of [`FrameSet::sizes`], a
    /// frame that matches `target` followed by one that does not, so exactly half of any
    /// whole number of cycles match, per size too. Matching frames alternate between `target` as
    /// the destination and as the source; frames differ in their UDP source port.
    pub fn frames(self, target: [u8; 6]) -> Vec<Vec<u8>> {
        self.frames_one_in(target, 2)
    }

    /// As [`FrameSet::frames`], but one frame in `one_in` matches (1 = all; 0 is taken as 1):
    /// for each size a matching frame followed by `one_in - 1` that do not. `one_in = 100` is
    /// the "haystack": one VM's frames among a busy uplink's. `one_in = 2` is [`FrameSet::frames`].
    pub fn frames_one_in(self, target: [u8; 6], one_in: usize) -> Vec<Vec<u8>> {
        let one_in = one_in.max(1);
        // Two matching variants (to, from) per size keep dst and src matches balanced.
        let sizes = self.sizes();
        let rounds = if sizes.len().is_multiple_of(2) { 1 } else { 2 };
        let mut out = Vec::with_capacity(sizes.len() * rounds * one_in);
        let mut n: u16 = 0;
        for round in 0..rounds {
            for (i, &size) in sizes.iter().enumerate() {
                let to_target = (round * sizes.len() + i).is_multiple_of(2);
                let (dst, src) = if to_target { (target, OTHER_A) } else { (OTHER_A, target) };
                out.push(udp_frame(dst, src, size, n));
                n = n.wrapping_add(1);
                for _ in 1..one_in {
                    out.push(udp_frame(OTHER_B, OTHER_A, size, n));
                    n = n.wrapping_add(1);
                }
            }
        }
        out
    }

    /// Mean frame length (without FCS) of the set.
    pub fn mean_len(self) -> f64 {
        let sizes = self.sizes();
        sizes.iter().sum::<usize>() as f64 / sizes.len() as f64
    }
}

impl std::fmt::Display for FrameSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// An IPv4/UDP frame of exactly `len` bytes (at least 60) between two hosts of the lab.
fn udp_frame(dst: [u8; 6], src: [u8; 6], len: usize, sport: u16) -> Vec<u8> {
    let len = len.max(crate::ETH_ZLEN);
    let payload = vec![0xa5; len.saturating_sub(HEADERS)];
    let frame = Frame::ethernet(dst, src).ipv4_udp(
        [10, 77, 0, 1],
        [10, 77, 0, 2],
        40000u16.wrapping_add(sport),
        9,
        &payload,
    );
    debug_assert_eq!(frame.len(), len);
    frame
}

/// Whether a frame is to or from `mac` (what the daemon's MAC target and the tools' filter
/// `ether host MAC` match).
pub fn frame_matches(frame: &[u8], mac: [u8; 6]) -> bool {
    frame.len() >= 12 && (frame[0..6] == mac || frame[6..12] == mac)
}

/// A trafgen(8) packet configuration that sends `frames` round-robin: one `{ ... }` block of
/// hex bytes per frame, so trafgen sends exactly the bytes [`Blaster`] would.
pub fn trafgen_config(frames: &[Vec<u8>]) -> String {
    let mut out = String::from("/* Written by capture-lab: the benchmark's frame set. */\n");
    for frame in frames {
        out.push('{');
        for (i, byte) in frame.iter().enumerate() {
            if i % 16 == 0 {
                out.push_str("\n  ");
            }
            out.push_str(&format!("0x{byte:02x}, "));
        }
        out.truncate(out.trim_end_matches([',', ' ']).len());
        out.push_str("\n}\n");
    }
    out
}

/// When a blast ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// Send for this long.
    Duration(Duration),
    /// Send exactly this many frames.
    Frames(u64),
}

/// How to blast: see [`Blaster::blast`].
#[derive(Debug, Clone)]
pub struct BlastConfig {
    pub limit: Limit,
    /// Frames per second; `None` = as fast as the kernel takes them.
    pub rate_pps: Option<u64>,
    /// Frames per `sendmmsg`, 1 to [`MAX_BATCH`].
    pub batch: usize,
    /// CPU to pin the sending thread to (the calling thread: run it on a thread of its own).
    pub cpu: Option<usize>,
}

impl Default for BlastConfig {
    fn default() -> BlastConfig {
        BlastConfig {
            limit: Limit::Duration(Duration::from_secs(1)),
            rate_pps: None,
            batch: 64,
            cpu: None,
        }
    }
}

/// What a blast did.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct BlastReport {
    /// Frames the kernel accepted (`sendmmsg` counted them as sent).
    pub sent: u64,
    /// `sendmmsg` calls that failed with a transient error (ENOBUFS, EAGAIN: the TX queue was
    /// full or stopped); the batch was retried, so no frame is lost to them.
    pub send_errors: u64,
    /// From the first send to the last.
    pub elapsed: Duration,
}

impl BlastReport {
    pub fn pps(&self) -> f64 {
        let s = self.elapsed.as_secs_f64();
        if s > 0.0 { self.sent as f64 / s } else { 0.0 }
    }

    /// Adds another sender thread's report (sums; the longest elapsed time).
    pub fn merge(&mut self, other: &BlastReport) {
        self.sent += other.sent;
        self.send_errors += other.send_errors;
        self.elapsed = self.elapsed.max(other.elapsed);
    }
}

/// Token bucket for the rate limit, checked once per batch: tokens accrue at `rate` per second
/// up to `capacity`, a batch is sent when there are tokens for all of it.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    capacity: f64,
    tokens: f64,
    last: Duration,
}

impl TokenBucket {
    /// Starts full-less: the first batch waits for its tokens, so a run's rate is honest from
    /// the first frame. `capacity` must be at least one batch.
    pub fn new(rate_pps: u64, capacity: usize) -> TokenBucket {
        TokenBucket {
            rate: rate_pps as f64,
            capacity: capacity as f64,
            tokens: 0.0,
            last: Duration::ZERO,
        }
    }

    /// At time `now` (since the start), asks for `n` tokens: `Ok(())` takes them, `Err(wait)` says
    /// how long until there are enough.
    pub fn take(&mut self, now: Duration, n: usize) -> Result<(), Duration> {
        let dt = now.saturating_sub(self.last).as_secs_f64();
        self.last = self.last.max(now);
        self.tokens = (self.tokens + dt * self.rate).min(self.capacity);
        let need = n as f64;
        if self.tokens >= need {
            self.tokens -= need;
            Ok(())
        } else if self.rate <= 0.0 {
            Err(Duration::from_millis(100))
        } else {
            Err(Duration::from_secs_f64((need - self.tokens) / self.rate))
        }
    }
}

/// A send-only AF_PACKET socket with PACKET_QDISC_BYPASS, bound to one interface: a
/// [`RawSender`] that sends in batches with sendmmsg.
/// Open it inside [`crate::NetNs::run`]; it can be moved to and used from any thread afterwards.
#[derive(Debug)]
pub struct Blaster {
    sender: RawSender,
}

impl Blaster {
    /// Opens the socket on `ifname` as seen from the calling thread's network namespace.
    pub fn open(ifname: &str) -> Result<Blaster> {
        Ok(Blaster { sender: RawSender::open(ifname)?.with_qdisc_bypass()? })
    }

    pub fn ifindex(&self) -> i32 {
        self.sender.ifindex()
    }

    /// Sends `frames` round-robin until `config.limit`, or until `stop` is set. Pins the calling
    /// thread first if `config.cpu` says so (so call it on a thread of its own). Transient
    /// send errors (ENOBUFS, EAGAIN) are counted and the batch retried; others end the blast
    /// with an error.
    pub fn blast(
        &self,
        frames: &[Vec<u8>],
        config: &BlastConfig,
        stop: &AtomicBool,
    ) -> Result<BlastReport> {
        if frames.is_empty() {
            bail!("no frames to send");
        }
        if let Some(f) = frames.iter().find(|f| f.len() < 14) {
            bail!("a {}-byte frame is shorter than an Ethernet header", f.len());
        }
        if config.batch == 0 || config.batch > MAX_BATCH {
            bail!("batch size {} is not in 1..={MAX_BATCH}", config.batch);
        }
        if config.rate_pps == Some(0) {
            bail!("a rate of 0 frames per second sends nothing");
        }
        if let Some(cpu) = config.cpu {
            pin_current_thread(cpu)?;
        }
        let batch = config.batch;
        let mut addr = self.sender.sockaddr();
        let mut iovs: Vec<libc::iovec> =
            vec![libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }; batch];
        // SAFETY: mmsghdr is plain data; all-zero is a valid empty header.
        let mut msgs: Vec<libc::mmsghdr> = vec![unsafe { std::mem::zeroed() }; batch];
        let mut bucket = config.rate_pps.map(|r| TokenBucket::new(r, 2 * batch));
        let mut report = BlastReport::default();
        let mut next = 0usize; // index into `frames` of the next frame to send
        let start = Instant::now();
        loop {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let now = start.elapsed();
            let mut n = batch;
            match config.limit {
                Limit::Duration(d) if now >= d => break,
                Limit::Frames(total) => {
                    let left = total - report.sent;
                    if left == 0 {
                        break;
                    }
                    n = n.min(usize::try_from(left).unwrap_or(usize::MAX));
                }
                Limit::Duration(_) => {}
            }
            if let Some(bucket) = bucket.as_mut()
                && let Err(wait) = bucket.take(now, n)
            {
                // Never sleep past the end of the run.
                let wait = match config.limit {
                    Limit::Duration(d) => wait.min(d.saturating_sub(now)),
                    Limit::Frames(_) => wait,
                };
                std::thread::sleep(wait.max(Duration::from_micros(1)));
                continue;
            }
            for i in 0..n {
                let frame = &frames[(next + i) % frames.len()];
                iovs[i] = libc::iovec {
                    iov_base: frame.as_ptr().cast_mut().cast::<libc::c_void>(),
                    iov_len: frame.len(),
                };
                let hdr = &mut msgs[i].msg_hdr;
                hdr.msg_name = (&raw mut addr).cast::<libc::c_void>();
                hdr.msg_namelen = SOCKADDR_LL_LEN;
                hdr.msg_iov = &raw mut iovs[i];
                hdr.msg_iovlen = 1;
                msgs[i].msg_len = 0;
            }
            let mut done = 0usize;
            while done < n {
                let want = u32::try_from(n - done).context("batch size")?;
                // SAFETY: msgs[done..n] point to live iovecs over live frames and to `addr`,
                // all of which outlive the call; the kernel only reads them (and msg_len).
                let rc = unsafe {
                    libc::sendmmsg(self.sender.as_raw_fd(), msgs[done..].as_mut_ptr(), want, 0)
                };
                if rc >= 0 {
                    done += usize::try_from(rc).context("sendmmsg count")?;
                    continue;
                }
                let err = io::Error::last_os_error();
                match err.raw_os_error() {
                    Some(libc::EINTR) => {}
                    Some(libc::ENOBUFS | libc::EAGAIN) => {
                        report.send_errors += 1;
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        if let Limit::Duration(d) = config.limit
                            && start.elapsed() >= d
                        {
                            break;
                        }
                        std::thread::yield_now();
                    }
                    _ => {
                        return Err(err).with_context(|| {
                            format!("sendmmsg of {} frames on ifindex {}", n - done, self.ifindex())
                        });
                    }
                }
            }
            report.sent += done as u64;
            next = (next + done) % frames.len();
            if done < n {
                break; // stopped while retrying
            }
        }
        report.elapsed = start.elapsed();
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{NetNs, VethPair};

    fn lens(set: FrameSet) -> Vec<usize> {
        set.frames(BENCH_TARGET_MAC).iter().map(Vec::len).collect()
    }

    #[test]
    fn small_and_large_sets_are_one_size_and_half_match() {
        for (set, len) in [(FrameSet::Small, 60), (FrameSet::Large, 1514)] {
            let frames = set.frames(BENCH_TARGET_MAC);
            assert_eq!(frames.len(), 4, "{set}");
            assert!(frames.iter().all(|f| f.len() == len), "{set}: {:?}", lens(set));
            let matching: Vec<bool> =
                frames.iter().map(|f| frame_matches(f, BENCH_TARGET_MAC)).collect();
            assert_eq!(matching, [true, false, true, false], "{set}: alternate");
            // One match by destination, one by source.
            assert_eq!(frames[0][0..6], BENCH_TARGET_MAC);
            assert_eq!(frames[2][6..12], BENCH_TARGET_MAC);
            assert_ne!(frames[2][0..6], BENCH_TARGET_MAC);
        }
    }

    #[test]
    fn imix_is_7_4_1_and_half_of_each_size_matches() {
        let frames = FrameSet::Imix.frames(BENCH_TARGET_MAC);
        assert_eq!(frames.len(), 24);
        for (size, count) in [(60, 14), (590, 8), (1514, 2)] {
            let of_size: Vec<&Vec<u8>> = frames.iter().filter(|f| f.len() == size).collect();
            assert_eq!(of_size.len(), count, "size {size}");
            let matching = of_size.iter().filter(|f| frame_matches(f, BENCH_TARGET_MAC)).count();
            assert_eq!(matching * 2, count, "size {size}: half match");
        }
        assert!(frames.iter().all(|f| [60, 590, 1514].contains(&f.len())));
        // Alternating: every even index matches, every odd one does not.
        for (i, f) in frames.iter().enumerate() {
            assert_eq!(frame_matches(f, BENCH_TARGET_MAC), i % 2 == 0, "frame {i}");
        }
        let by_dst = frames.iter().filter(|f| f[0..6] == BENCH_TARGET_MAC).count();
        let by_src = frames.iter().filter(|f| f[6..12] == BENCH_TARGET_MAC).count();
        assert_eq!((by_dst, by_src), (6, 6));
        let mean = FrameSet::Imix.mean_len();
        assert!((mean - (7.0 * 60.0 + 4.0 * 590.0 + 1514.0) / 12.0).abs() < 1e-9);
    }

    #[test]
    fn one_in_n_sets_keep_sizes_and_the_dst_src_balance() {
        // one_in = 2 is the 50/50 set, frame for frame.
        for set in FrameSet::ALL {
            assert_eq!(set.frames_one_in(BENCH_TARGET_MAC, 2), set.frames(BENCH_TARGET_MAC));
        }
        let frames = FrameSet::Small.frames_one_in(BENCH_TARGET_MAC, 100);
        assert_eq!(frames.len(), 200);
        assert!(frames.iter().all(|f| f.len() == 60));
        let matching: Vec<usize> =
            (0..frames.len()).filter(|&i| frame_matches(&frames[i], BENCH_TARGET_MAC)).collect();
        assert_eq!(matching, [0, 100], "1 % match, spread out");
        assert_eq!(frames[0][0..6], BENCH_TARGET_MAC, "one by destination");
        assert_eq!(frames[100][6..12], BENCH_TARGET_MAC, "one by source");
        // IMIX: still 7:4:1, and one frame in 10 of each size matches.
        let frames = FrameSet::Imix.frames_one_in(BENCH_TARGET_MAC, 10);
        assert_eq!(frames.len(), 120);
        for (size, count) in [(60, 70), (590, 40), (1514, 10)] {
            let of_size: Vec<&Vec<u8>> = frames.iter().filter(|f| f.len() == size).collect();
            assert_eq!(of_size.len(), count, "size {size}");
            let m = of_size.iter().filter(|f| frame_matches(f, BENCH_TARGET_MAC)).count();
            assert_eq!(m * 10, count, "size {size}");
        }
        // Every frame matches with 1, and 0 is taken as 1 rather than sending nothing.
        for one_in in [0, 1] {
            let frames = FrameSet::Large.frames_one_in(BENCH_TARGET_MAC, one_in);
            assert_eq!(frames.len(), 2);
            assert!(frames.iter().all(|f| frame_matches(f, BENCH_TARGET_MAC)));
        }
    }

    #[test]
    fn frames_are_valid_ipv4_udp() {
        for set in FrameSet::ALL {
            for f in set.frames(BENCH_TARGET_MAC) {
                assert_eq!(u16::from_be_bytes([f[12], f[13]]), crate::ETHERTYPE_IPV4);
                assert_eq!(crate::internet_checksum(&f[14..34]), 0, "IPv4 header checksum");
                let ip_len = usize::from(u16::from_be_bytes([f[16], f[17]]));
                assert_eq!(14 + ip_len, f.len().max(14 + 28), "{set}");
            }
        }
    }

    #[test]
    fn frame_set_names_round_trip() {
        for set in FrameSet::ALL {
            assert_eq!(FrameSet::parse(set.name()).ok(), Some(set));
        }
        assert!(FrameSet::parse("128").is_err());
    }

    #[test]
    fn trafgen_config_has_one_block_per_frame_with_every_byte() {
        let frames = FrameSet::Small.frames(BENCH_TARGET_MAC);
        let cfg = trafgen_config(&frames);
        assert_eq!(cfg.matches('{').count(), frames.len());
        assert_eq!(cfg.matches('}').count(), frames.len());
        assert_eq!(cfg.matches("0x").count(), frames.iter().map(Vec::len).sum::<usize>());
        assert!(cfg.contains("{\n  0x52, 0x54, 0x00, 0x00, 0x00, 0x0a, 0x52"), "{cfg}");
        assert!(!cfg.contains(", \n}"), "no trailing comma: {cfg}");
    }

    #[test]
    fn token_bucket_paces_batches() {
        let mut b = TokenBucket::new(1000, 128);
        // Empty at start: 64 tokens take 64 ms.
        assert_eq!(b.take(Duration::ZERO, 64), Err(Duration::from_millis(64)));
        assert_eq!(b.take(Duration::from_millis(64), 64), Ok(()));
        // A long pause fills it only up to its capacity: no burst beyond two batches.
        assert_eq!(b.take(Duration::from_secs(10), 128), Ok(()));
        assert!(b.take(Duration::from_secs(10), 1).is_err());
        // Over a simulated second at 1 kpps, batches of 10 come out 100 times.
        let mut b = TokenBucket::new(1000, 20);
        let (mut now, mut sent) = (Duration::ZERO, 0);
        while now < Duration::from_secs(1) {
            match b.take(now, 10) {
                Ok(()) => sent += 10,
                Err(wait) => now += wait,
            }
        }
        assert!((990..=1010).contains(&sent), "{sent}");
    }

    #[test]
    fn blast_rejects_bad_config_without_sending() -> Result<()> {
        // An unbound fd is enough: every check comes before the first syscall.
        // SAFETY: plain syscall; the fd is owned right away.
        let raw = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        assert!(raw >= 0);
        // SAFETY: fresh fd.
        let fd = unsafe { std::os::fd::FromRawFd::from_raw_fd(raw) };
        let b = Blaster { sender: RawSender::from_fd(fd, 0) };
        let stop = AtomicBool::new(false);
        let frames = FrameSet::Small.frames(BENCH_TARGET_MAC);
        let bad = [
            BlastConfig { batch: 0, ..BlastConfig::default() },
            BlastConfig { batch: MAX_BATCH + 1, ..BlastConfig::default() },
            BlastConfig { rate_pps: Some(0), ..BlastConfig::default() },
        ];
        for config in &bad {
            assert!(b.blast(&frames, config, &stop).is_err(), "{config:?}");
        }
        assert!(b.blast(&[], &BlastConfig::default(), &stop).is_err());
        assert!(b.blast(&[vec![0; 10]], &BlastConfig::default(), &stop).is_err());
        Ok(())
    }

    /// 10k frames through a veth: every one the blaster counts as sent arrives at the peer.
    #[test]
    fn blast_10k_frames_through_a_veth() -> Result<()> {
        if !crate::root_tests_enabled("blast_10k_frames_through_a_veth")? {
            return Ok(());
        }
        let ns = NetNs::create("lab-blast")?;
        let veth = VethPair::create(&ns, "cap0", "gen0", 1)?;
        let rx_before = ns.link_stat(&veth.capture, "rx_packets")?;
        let tx_before = ns.link_stat(&veth.peer, "tx_packets")?;
        let frames = FrameSet::Imix.frames(BENCH_TARGET_MAC);
        let blaster = ns.run(|| Blaster::open(&veth.peer))?;
        let stop = AtomicBool::new(false);
        let config = BlastConfig { limit: Limit::Frames(10_000), ..BlastConfig::default() };
        let report = std::thread::scope(|s| {
            s.spawn(|| blaster.blast(&frames, &config, &stop)).join().expect("blast thread")
        })?;
        assert_eq!(report.sent, 10_000);
        let rx = ns.link_stat(&veth.capture, "rx_packets")? - rx_before;
        let dropped = ns.link_stat(&veth.peer, "tx_dropped")?;
        let tx = ns.link_stat(&veth.peer, "tx_packets")? - tx_before;
        assert_eq!(tx, 10_000, "gen0 tx_packets");
        assert_eq!(rx + dropped, 10_000, "cap0 rx_packets {rx} + gen0 tx_dropped {dropped}");
        // Without an XDP program veth hands frames to the backlog, which holds them all.
        assert_eq!(dropped, 0);
        // A rate-limited blast of 2000 frames at 20 kpps takes about 100 ms.
        let config = BlastConfig {
            limit: Limit::Frames(2000),
            rate_pps: Some(20_000),
            ..BlastConfig::default()
        };
        let report = std::thread::scope(|s| {
            s.spawn(|| blaster.blast(&frames, &config, &stop)).join().expect("blast thread")
        })?;
        assert_eq!(report.sent, 2000);
        let ms = report.elapsed.as_millis();
        assert!((80..400).contains(&ms), "2000 frames at 20 kpps took {ms} ms");
        Ok(())
    }
}
