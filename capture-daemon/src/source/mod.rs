//! Where captured frames come from, and the one way they go on to the writer.
//!
//! - [`afxdp`] (mirror mode): XDP redirects matched frames into AF_XDP sockets, one worker per
//!   RX queue. The frames are taken from the host.
//! - [`ring`] (tap mode): tcx ingress and egress programs copy matched frames into per-CPU BPF
//!   ring buffers; the frames go on untouched. One reader per interface.
//!
//! Both hand frames over through a [`Feed`]: one hand-off ring, the watermark the writer merges
//! by, and the counters. The writer knows neither source.

pub mod afxdp;
pub mod ring;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed, Ordering::Release};
use std::thread::JoinHandle;

use crate::handoff::Producer;

/// Counters of one source ring (an RX queue's socket, or a CPU's BPF ring), written by its
/// worker, read by the writer and the status log.
#[derive(Debug, Default)]
pub struct QueueStats {
    pub frames: AtomicU64,
    pub bytes: AtomicU64,
    /// Frames lost because the hand-off ring to the writer was full.
    pub handoff_drops: AtomicU64,
    /// Records without our metadata (should stay 0; counted, frame still kept when possible).
    pub bad_meta: AtomicU64,
    /// From getsockopt(XDP_STATISTICS), refreshed about once a second and at exit (mirror mode).
    pub kernel_rx_dropped: AtomicU64,
    pub kernel_rx_ring_full: AtomicU64,
    pub kernel_fill_ring_empty: AtomicU64,
    pub kernel_invalid_descs: AtomicU64,
    /// CLOCK_MONOTONIC in ms when the worker last went round its loop: a stale value means a
    /// hung worker, and the daemon stops pinging systemd's watchdog.
    pub heartbeat_ms: AtomicU64,
}

impl QueueStats {
    /// Frames the kernel could not put into this socket's ring.
    pub fn kernel_drops(&self) -> u64 {
        self.kernel_rx_dropped.load(Relaxed)
            + self.kernel_rx_ring_full.load(Relaxed)
            + self.kernel_invalid_descs.load(Relaxed)
    }

    pub fn beat(&self) {
        self.heartbeat_ms.store(monotonic_ns() / 1_000_000, Relaxed);
    }
}

/// A running source thread (an RX queue's worker, or an interface's ring reader). When it exits
/// it closes what it read from: a socket leaves the XSKMAP, a ring its last user.
pub struct Worker {
    /// What it reads, for messages: "RX queue 3", "rings of 8 CPUs".
    what: String,
    /// The counters of the first ring it feeds (the heartbeat the watchdog looks at).
    pub stats: Arc<QueueStats>,
    handle: JoinHandle<()>,
}

impl Worker {
    pub fn join(self) {
        if self.handle.join().is_err() {
            log::error!("the worker of {} panicked", self.what);
        }
    }
}

impl Worker {
    /// Starts a source thread called `thread`. `open` runs on it first (the rings it maps and
    /// the UMEM it registers belong to that thread) and its result comes back here: on an error
    /// the thread has ended and the error is returned; otherwise the thread goes on with `run`
    /// and the caller gets what `open` reported for it.
    pub fn spawn<S, T: Send + 'static>(
        thread: String,
        what: String,
        stats: Arc<QueueStats>,
        open: impl FnOnce() -> Result<(S, T), String> + Send + 'static,
        run: impl FnOnce(S) + Send + 'static,
    ) -> Result<(Worker, T), String> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Result<T, String>>(1);
        let handle = std::thread::Builder::new()
            .name(thread)
            .spawn(move || match open() {
                Ok((state, report)) => {
                    let _ = tx.send(Ok(report));
                    run(state);
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            })
            .map_err(|e| format!("spawning the thread for {what}: {e}"))?;
        match rx.recv() {
            Ok(Ok(report)) => Ok((Worker { what, stats, handle }, report)),
            Ok(Err(e)) => {
                let _ = handle.join();
                Err(e)
            }
            Err(_) => {
                let _ = handle.join();
                Err(format!("the thread for {what} exited during set-up"))
            }
        }
    }
}

/// A source's way into the hand-off: frames are pushed one by one and become visible to the
/// writer, counted, once per batch ([`Feed::publish`]).
pub struct Feed {
    producer: Producer,
    /// CLOCK_MONOTONIC ns up to which every frame of this ring has been pushed (see
    /// `writer::merge`).
    watermark: Arc<AtomicU64>,
    pub stats: Arc<QueueStats>,
    frames: u64,
    bytes: u64,
    dropped: u64,
    bad: u64,
    last_ts: u64,
}

impl Feed {
    pub fn new(producer: Producer, watermark: Arc<AtomicU64>, stats: Arc<QueueStats>) -> Feed {
        Feed { producer, watermark, stats, frames: 0, bytes: 0, dropped: 0, bad: 0, last_ts: 0 }
    }

    /// Adds one frame to the batch: `ts_ns` is its CLOCK_MONOTONIC stamp (`bpf_ktime_get_ns`),
    /// as every time of the data path up to the writer. A full hand-off ring costs the frame
    /// (counted). `matched`: the target slots the kernel matched.
    #[inline]
    pub fn push(&mut self, ts_ns: u64, orig_len: u32, flags: u32, matched: u64, data: &[u8]) {
        self.frames += 1;
        self.bytes += data.len() as u64;
        self.last_ts = ts_ns;
        if !self.producer.push(ts_ns, orig_len, flags, matched, data) {
            self.dropped += 1;
        }
    }

    /// Counts a record that carried no valid metadata.
    #[inline]
    pub fn bad_record(&mut self) {
        self.bad += 1;
    }

    /// Ends a batch: the writer sees its frames, the watermark moves past the last one (frames
    /// of one ring come in time order), the counters take the batch.
    pub fn publish(&mut self) {
        if self.frames > 0 {
            self.producer.publish();
            self.watermark.store(self.last_ts, Release);
            self.stats.frames.fetch_add(self.frames, Relaxed);
            self.stats.bytes.fetch_add(self.bytes, Relaxed);
        }
        if self.dropped > 0 {
            self.stats.handoff_drops.fetch_add(self.dropped, Relaxed);
        }
        if self.bad > 0 {
            self.stats.bad_meta.fetch_add(self.bad, Relaxed);
        }
        (self.frames, self.bytes, self.dropped, self.bad) = (0, 0, 0, 0);
    }

    /// The ring was seen empty at CLOCK_MONOTONIC `ts_ns`: nothing older will follow.
    pub fn vouch(&self, ts_ns: u64) {
        self.watermark.fetch_max(ts_ns, Release);
    }
}

/// CLOCK_MONOTONIC in ns: the clock of `bpf_ktime_get_ns`.
pub fn monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

/// Wall-clock time in ns since the Unix epoch.
pub fn realtime_ns() -> u64 {
    clock_ns(libc::CLOCK_REALTIME)
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: valid clock id and out-pointer.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap_or(0)
}
