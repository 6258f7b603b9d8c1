//! Offline writer benchmark: the daemon's writer path without the AF_XDP socket.
//!
//! ```text
//! cargo run --release -p capture-daemon --example writer_bench -- \
//!     --frames 1000000 --size 64 --dir /dev/shm/wbench [--queues 2] [--keep] [--comment]
//! ```
//!
//! On one thread, prepared frames go through the real hand-off ring of each RX queue
//! ([`handoff::channel`], pushed and published in batches of 64 as a worker does, with the
//! worker's watermark), the real [`Merger`] and the real [`RotatingWriter`] (one round of the
//! daemon's write loop, [`write_round`], after each batch) into one pcapng file in `--dir`. Put the
//! directory on a tmpfs to measure the writer rather than a disk.
//!
//! The clock runs from the first push to the end of `close` (ISB written, file fsynced and
//! renamed): the data is on the file system when it stops. Prints one JSON line,
//! `{"size":64,"comment":false,"packets":N,"seconds":S,"pps":P,"bytes_per_sec":B}`, where bytes
//! are the captured frame bytes and "64" stands for 60-byte frames (64 on the wire with the
//! FCS); `"comment"` says whether `--comment` put the per-packet target comment in every block.
//!
//! Afterwards the file is checked in constant time against what it must hold (its exact size,
//! header, statistics block and a sample of packets), so a broken writer cannot post a fast
//! number; then it is removed unless `--keep`. Nothing outside the measured loop grows with N, so
//! callgrind's instruction counts of two runs differ by exactly the per-packet work.
//!
//! The rotating run (`--rotate-bytes`, on a real disk, optionally paced with `--rate-mb-s`)
//! measures what rotation costs the writer thread instead: the line then also has
//! `"files"`, `"worst_round_us"` (the longest round, i.e. the longest the rings went without
//! being read), `"slow_rounds"` (rounds over 10 ms) and `"close_ms"`. Every file is checked.

use std::fs::File;
use std::os::unix::fs::FileExt as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use capture_common::DIRECTION_INBOUND;
use capture_daemon::config::{CaptureConfig, OutputConfig};
use capture_daemon::handoff::{self, Producer};
use capture_daemon::source::monotonic_ns;
use capture_daemon::writer::pcapng::{
    BT_EPB, comment_option, encode_idb, encode_isb, encode_shb, epb_len,
};
use capture_daemon::writer::{
    Clock as _, Comments, InterfaceInfo, InterfaceStats, Merger, Now, PacketSink,
    RECORDS_PER_ROUND, RotatingWriter, SectionInfo, Source, StatsSource, SystemClock, TargetRoute,
    WriterError, merge::DEFAULT_WINDOW_NS, write_round,
};
use clap::Parser;

/// Frames per push batch: what a worker takes from its AF_XDP ring at a time.
const BATCH: usize = 64;
/// Distinct prepared frames, used in turn.
const POOL: usize = 256;
/// Nanoseconds between two frames' timestamps (20 Mpps).
const TS_STEP: u64 = 50;
/// Packets checked in the finished file: every N/SAMPLES-th, from the first, and the last.
const SAMPLES: usize = 64;
/// The epb_flags of every frame: received, as the AF_XDP worker marks them.
const FLAGS: u32 = DIRECTION_INBOUND;

#[derive(Parser)]
#[command(about = "Offline benchmark of the writer path: hand-off ring -> merger -> pcapng file")]
struct Args {
    /// Frames to write.
    #[arg(long)]
    frames: usize,
    /// Frame size: 64 (60-byte frames, 64 on the wire) or 1514.
    #[arg(long, value_parser = ["64", "1514"])]
    size: String,
    /// Directory for the capture file (a tmpfs, to measure the writer rather than a disk).
    #[arg(long)]
    dir: PathBuf,
    /// RX queues (hand-off rings) merged into the file; frames go to them in turn.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=8))]
    queues: u32,
    /// Keep the file instead of removing it after the check.
    #[arg(long)]
    keep: bool,
    /// Rotate files at this many bytes (0: one file) and time every round.
    #[arg(long, default_value_t = 0)]
    rotate_bytes: u64,
    /// Push frames at this many MB/s of frame bytes (0: as fast as the writer takes them).
    #[arg(long, default_value_t = 0)]
    rate_mb_s: u64,
    /// Every frame matched target `web01`: each packet block carries the daemon's comment
    /// `targets: web01`, looked up per frame as the daemon does.
    #[arg(long)]
    comment: bool,
}

/// The one target of `--comment`.
const COMMENT_TARGET: &str = "web01";

/// The writer as the daemon's output drives it: with `--comment`, each frame's comment is looked
/// up from its mask; without, none is written.
struct Sink {
    writer: RotatingWriter,
    comments: Option<Comments>,
}

impl PacketSink for Sink {
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
        match &mut self.comments {
            Some(c) => {
                self.writer.write_packet_commented(id, ts, data, orig, flags, c.option(matched))
            }
            None => self.writer.write_packet(id, ts, data, orig, flags),
        }
    }
}

/// A round this long counts as slow in the rotating run's summary.
const SLOW_ROUND: Duration = Duration::from_millis(10);

/// The statistics written at close: fixed, so the expected ISB can be computed.
struct FixedStats(InterfaceStats);

impl StatsSource for FixedStats {
    fn stats(&self, _interface_id: u32) -> InterfaceStats {
        self.0
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (size, frame_len): (u32, usize) = if args.size == "64" { (64, 60) } else { (1514, 1514) };
    let n = args.frames;
    ensure!(n > 0, "--frames must be at least 1");
    let queues = usize::try_from(args.queues)?;
    let pool: [Vec<u8>; POOL] = std::array::from_fn(|i| frame(i, frame_len));
    let orig_len = u32::try_from(frame_len)?;

    // Frames are stamped with monotonic time, as the kernel stamps them; the writer adds one
    // wall-clock offset, fixed here so that the file can be checked.
    let t0 = monotonic_ns();
    let offset = SystemClock.wall_offset_ns();
    let now = || Now { mono_ns: monotonic_ns(), offset_ns: offset };
    let wall_t0 = t0.saturating_add_signed(offset);
    let ts = |j: usize| t0 + j as u64 * TS_STEP;
    let stats = InterfaceStats {
        start_ns: wall_t0,
        end_ns: wall_t0 + n as u64 * TS_STEP,
        received: n as u64,
        kernel_drops: 0,
        accepted: n as u64,
        delivered: n as u64,
        user_drops: 0,
    };
    let section = SectionInfo {
        hardware: "writer_bench".into(),
        os: "Linux".into(),
        application: format!("capture-daemon {} writer_bench", env!("CARGO_PKG_VERSION")),
    };
    let interface = InterfaceInfo {
        name: "bench0".into(),
        description: "prepared frames, no NIC".into(),
        snaplen: 0,
    };
    let policy = OutputConfig {
        rotate_bytes: args.rotate_bytes,
        ..OutputConfig::unlimited(args.dir.clone(), PREFIX)
    };
    let writer = RotatingWriter::open(
        policy,
        section.clone(),
        vec![interface.clone()],
        Box::new(FixedStats(stats)),
        now(),
    )
    .context("opening the capture file")?;
    let route = TargetRoute { slot: 0, name: COMMENT_TARGET.into(), own: false };
    let comments = args.comment.then(|| Comments::new(&[route]));
    let matched = u64::from(args.comment);
    let mut writer = Sink { writer, comments };

    // One ring per RX queue, all of interface 0, as the daemon sets them up.
    let ring_bytes = usize::try_from(CaptureConfig::default().buffer_bytes)?;
    let mut producers: Vec<Producer> = Vec::new();
    let mut watermarks: Vec<Arc<AtomicU64>> = Vec::new();
    let mut sources = Vec::new();
    for _ in 0..queues {
        let (producer, consumer) = handoff::channel(ring_bytes);
        let watermark = Arc::new(AtomicU64::new(0));
        producers.push(producer);
        watermarks.push(Arc::clone(&watermark));
        sources.push(Source { interface_id: 0, consumer, watermark, read_together: false });
    }
    let mut merger = Merger::new(sources, DEFAULT_WINDOW_NS);
    let mut delivered = [0u64; 1];

    let start = Instant::now();
    let mut last_tick = start;
    // Only the rotating run reads the clock per round: the others count instructions.
    let timed = args.rotate_bytes > 0;
    let (mut worst_round, mut slow_rounds) = (Duration::ZERO, 0u64);
    let mut round = |merger: &mut Merger, writer: &mut Sink| -> anyhow::Result<()> {
        let began = timed.then(Instant::now);
        let done = write_round(merger, writer, now(), RECORDS_PER_ROUND, &mut delivered);
        if let Some(e) = done.error {
            bail!("writing a frame: {e}");
        }
        // As the daemon's write loop does after each round.
        if last_tick.elapsed() >= Duration::from_millis(100) {
            writer.writer.tick(monotonic_ns())?;
            last_tick = Instant::now();
        }
        if let Some(began) = began {
            let took = began.elapsed();
            worst_round = worst_round.max(took);
            slow_rounds += u64::from(took > SLOW_ROUND);
        }
        Ok(())
    };
    // Pacing: frame j is due `j * frame_len / rate` after the start.
    let rate = u128::from(args.rate_mb_s);
    let mut i = 0;
    while i < n {
        let end = (i + BATCH).min(n);
        if let Some(due_ns) = ((i * frame_len) as u128 * 1000).checked_div(rate) {
            let due = start + Duration::from_nanos(u64::try_from(due_ns)?);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        // Frame j is pool[j % POOL] and goes to queue j % queues; each queue's worker publishes
        // its part of the batch and vouches for its last timestamp.
        for (q, (producer, watermark)) in producers.iter_mut().zip(&watermarks).enumerate() {
            let mut last = None;
            for j in (i + q..end).step_by(queues) {
                if !producer.push(ts(j), orig_len, FLAGS, matched, &pool[j % POOL]) {
                    bail!("hand-off ring {q} full at frame {j}: the writer fell behind");
                }
                last = Some(ts(j));
            }
            producer.publish();
            if let Some(last) = last {
                watermark.store(last, Ordering::Release);
            }
        }
        round(&mut merger, &mut writer)?;
        i = end;
    }
    // Workers gone: whatever a queue still holds back for the merge is written now.
    drop(producers);
    while !merger.is_finished() {
        round(&mut merger, &mut writer)?;
    }
    let closing = Instant::now();
    let last = writer.writer.close(monotonic_ns())?.context("the capture file was not finished")?;
    let close_ms = closing.elapsed().as_secs_f64() * 1e3;
    let seconds = start.elapsed().as_secs_f64();

    ensure!(delivered[0] == n as u64, "{} of {n} frames were written", delivered[0]);
    let files = if timed { finished_files(&args.dir)? } else { vec![last] };
    ensure!(files.len() as u64 >= 1, "no capture file in {}", args.dir.display());
    let comment = if args.comment {
        comment_option(&format!("targets: {COMMENT_TARGET}"))
    } else {
        Vec::new()
    };
    check_files(&files, &section, &interface, &stats, &pool, n, wall_t0, &comment)?;
    if !args.keep {
        for path in &files {
            std::fs::remove_file(path).with_context(|| format!("removing {}", path.display()))?;
        }
    }

    #[allow(clippy::cast_precision_loss, reason = "rates, not counts")]
    let (pps, bytes_per_sec) = (n as f64 / seconds, (n * frame_len) as f64 / seconds);
    let mut line = format!(
        "{{\"size\":{size},\"comment\":{},\"packets\":{n},\"seconds\":{seconds:.6},\"pps\":{pps:.0},\"bytes_per_sec\":{bytes_per_sec:.0}",
        args.comment
    );
    if timed {
        let worst_us = worst_round.as_micros();
        line += &format!(
            ",\"files\":{},\"worst_round_us\":{worst_us},\"slow_rounds\":{slow_rounds},\"close_ms\":{close_ms:.1}",
            files.len()
        );
    }
    println!("{line}}}");
    Ok(())
}

const PREFIX: &str = "wbench";

/// The finished capture files in `dir`, in sequence order (the names sort so).
fn finished_files(dir: &std::path::Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(dir)?.map(|e| e.map(|e| e.path())).collect::<Result<_, _>>()?;
    files.retain(|p| {
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        name.starts_with(PREFIX) && name.ends_with(".pcapng")
    });
    files.sort();
    Ok(files)
}

/// Prepared frame `i`: an Ethernet header (local experimental ethertype 0x88b5) and a payload
/// that differs between frames.
fn frame(i: usize, len: usize) -> Vec<u8> {
    let mut f = vec![0u8; len];
    f[..6].copy_from_slice(&[0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);
    f[6..12].copy_from_slice(&[0x52, 0x54, 0x00, 0xab, 0xcd, 0xef]);
    f[12..14].copy_from_slice(&[0x88, 0xb5]);
    for (k, b) in f.iter_mut().enumerate().skip(14) {
        *b = i.wrapping_mul(31).wrapping_add(k).to_le_bytes()[0];
    }
    f
}

/// Checks the files in constant time each: exact size, header, final statistics block, and a
/// sample of packet blocks (every file's first and last among them), each compared field by
/// field with what the writer was given. Together they must hold the `n` frames in order.
#[expect(clippy::too_many_arguments, reason = "what the files must hold, each given")]
fn check_files(
    paths: &[PathBuf],
    section: &SectionInfo,
    interface: &InterfaceInfo,
    stats: &InterfaceStats,
    pool: &[Vec<u8>],
    n: usize,
    t0: u64,
    comment: &[u8],
) -> anyhow::Result<()> {
    let mut header = Vec::new();
    encode_shb(&mut header, section);
    encode_idb(&mut header, interface);
    let mut isb = Vec::new();
    encode_isb(&mut isb, 0, stats);
    let frame_len = pool[0].len();
    let padded = 28 + frame_len.next_multiple_of(4);
    let epb_len = epb_len(frame_len, FLAGS) + comment.len();
    let first_epb = header.len();
    // The options: the comment (if any) first, then epb_flags.
    let flags_at = padded + comment.len();

    // Each file: header, k whole packet blocks, statistics; the k add up to n.
    let mut opened = Vec::new();
    let mut first_packet = 0;
    for path in paths {
        let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let len = usize::try_from(file.metadata()?.len())?;
        let blocks = len.checked_sub(first_epb + isb.len()).unwrap_or(usize::MAX);
        ensure!(
            blocks != usize::MAX && blocks % epb_len == 0,
            "{}: {len} bytes is not a header, whole packet blocks and statistics",
            path.display()
        );
        let mut got = vec![0u8; header.len()];
        file.read_exact_at(&mut got, 0)?;
        ensure!(got == header, "{}: section header / interface description differ", path.display());
        let mut got = vec![0u8; isb.len()];
        file.read_exact_at(&mut got, (len - isb.len()) as u64)?;
        ensure!(got == isb, "{}: interface statistics block differs", path.display());
        opened.push((path, file, first_packet, blocks / epb_len));
        first_packet += blocks / epb_len;
    }
    ensure!(first_packet == n, "the files hold {first_packet} packets, expected {n}");

    let u32_at = |b: &[u8], at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap());
    let mut block = vec![0u8; epb_len];
    let step = (n / SAMPLES).max(1);
    let ends = opened.iter().filter(|f| f.3 > 0).flat_map(|f| [f.2, f.2 + f.3 - 1]);
    for i in (0..n).step_by(step).chain([n - 1]).chain(ends) {
        let (path, file, first, _) =
            opened.iter().rfind(|f| f.2 <= i).context("a packet before the first file")?;
        let at = (first_epb + (i - first) * epb_len) as u64;
        file.read_exact_at(&mut block, at)?;
        let ts = t0 + i as u64 * TS_STEP;
        let frame = &pool[i % POOL];
        let fields = [
            (0, BT_EPB),
            (4, u32::try_from(epb_len)?),
            (8, 0),
            (12, u32::try_from(ts >> 32)?),
            (16, u32::try_from(ts & 0xffff_ffff)?),
            (20, u32::try_from(frame_len)?),
            (24, u32::try_from(frame_len)?),
            // epb_flags (code 2, length 4), its value, opt_endofopt.
            (flags_at, 0x0004_0002),
            (flags_at + 4, FLAGS),
            (flags_at + 8, 0),
            (block.len() - 4, u32::try_from(epb_len)?),
        ];
        let p = path.display();
        for (at, want) in fields {
            let got = u32_at(&block, at);
            ensure!(got == want, "{p}: packet {i}: word at +{at} is {got:#x}, expected {want:#x}");
        }
        ensure!(&block[28..28 + frame_len] == frame, "{p}: packet {i}: data differs");
        ensure!(&block[padded..flags_at] == comment, "{p}: packet {i}: comment differs");
        ensure!(
            block[28 + frame_len..padded].iter().all(|&b| b == 0),
            "{p}: packet {i}: padding is not zero"
        );
    }
    Ok(())
}
