//! Tap mode: one reader thread per interface drains the per-CPU BPF ring buffers the tcx
//! programs fill, each into its own [`Feed`] (a CPU's ring is in time order; the writer merges
//! the rings as it merges RX queues).
//!
//! No syscall per frame, and few wake-ups: a record wakes the reader only once its ring holds
//! [`crate::bpf::wake_bytes`] (the program asks with `BPF_RB_FORCE_WAKEUP`, else
//! `BPF_RB_NO_WAKEUP`); below that the reader comes by every [`POLL`] (once a second when it is
//! the writer's only source). The ring fds are in an
//! edge-triggered epoll set: a ring that holds a few records but was not woken does not make
//! `epoll_wait` return, so the reader really sleeps between rounds.

use std::os::fd::{AsFd as _, AsRawFd as _, FromRawFd as _, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use aya::maps::{Map, MapData, RingBuf};
use capture_common::{META_MAGIC, TapMeta};

use super::{Feed, Worker, monotonic_ns};
use crate::stop::Stop;
use crate::writer::merge;

/// How often the reader comes by when no ring asked for it while the writer also merges other
/// threads' rings: bounds how long its rings' watermarks hold those back, so a quarter of the
/// merge window (25 ms), as for an idle AF_XDP worker. Every wake-up costs ~20 us of CPU here:
/// at 10 ms they were half of what a quiet interface cost (docs/bench.md). When its rings are
/// the only ones ([`merge::ONE_READER`]), it comes by once a second.
pub const POLL: Duration = Duration::from_nanos(merge::IDLE_WAIT_MERGING_NS);
/// Records taken from one ring before the next ring's turn.
const BUDGET: usize = 4096;
/// Margin for frames stamped but not yet submitted to a ring (the program stamps, reserves and
/// submits in one run; preemption inside it is the only delay).
const IN_FLIGHT_NS: u64 = 1_000_000;
const META: usize = size_of::<TapMeta>();

/// Starts the reader of `rings` (index = CPU), feeding `feeds[i]` from `rings[i]`. Returns once
/// the rings are mapped (or failed to be).
pub fn spawn(
    iface: &str,
    rings: Vec<MapData>,
    feeds: Vec<Feed>,
    stop: Stop,
) -> Result<Worker, String> {
    let Some(first) = feeds.first() else { return Err("no ring to read".into()) };
    let stats = Arc::clone(&first.stats);
    let what = format!("the rings of {} CPUs of {iface}", rings.len());
    let open = move || Reader::open(rings, feeds).map(|reader| (reader, ()));
    let (worker, ()) =
        Worker::spawn(format!("tap-{iface}"), what, stats, open, move |mut r: Reader| {
            r.run(&stop);
        })?;
    Ok(worker)
}

struct Reader {
    rings: Vec<RingBuf<MapData>>,
    feeds: Vec<Feed>,
    epoll: OwnedFd,
}

impl Reader {
    fn open(rings: Vec<MapData>, feeds: Vec<Feed>) -> Result<Reader, String> {
        // SAFETY: plain epoll_create1; owned right away.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(format!("epoll_create1: {}", std::io::Error::last_os_error()));
        }
        // SAFETY: fresh fd.
        let epoll = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut mapped = Vec::with_capacity(rings.len());
        for (cpu, data) in rings.into_iter().enumerate() {
            let ring = RingBuf::try_from(Map::RingBuf(data))
                .map_err(|e| format!("mapping the ring of CPU {cpu}: {e}"))?;
            let ring_fd = ring.as_fd().as_raw_fd();
            add_to_epoll(&epoll, ring_fd, libc::EPOLLIN | libc::EPOLLET)
                .map_err(|e| format!("watching the ring of CPU {cpu}: {e}"))?;
            mapped.push(ring);
        }
        // Edge-triggered and never read: every wake-up the writer sends comes through once.
        let wake = merge::reader_wake_fd().ok_or("creating the readers' wake-up eventfd")?;
        add_to_epoll(&epoll, wake, libc::EPOLLIN | libc::EPOLLET)
            .map_err(|e| format!("watching the readers' wake-up eventfd: {e}"))?;
        Ok(Reader { rings: mapped, feeds, epoll })
    }

    /// Drains ring `i` (up to [`BUDGET`] records) into its feed. Returns the records taken and
    /// whether the ring was seen empty.
    fn drain(&mut self, i: usize) -> (usize, bool) {
        let (ring, feed) = (&mut self.rings[i], &mut self.feeds[i]);
        let mut n = 0;
        let mut empty = false;
        while n < BUDGET {
            let Some(item) = ring.next() else {
                empty = true;
                break;
            };
            n += 1;
            let rec: &[u8] = &item;
            let Some(head) = rec.get(..META) else {
                feed.bad_record();
                continue;
            };
            // SAFETY: META bytes, read unaligned into a plain-integer struct.
            let meta = unsafe { head.as_ptr().cast::<TapMeta>().read_unaligned() };
            let data = rec.get(META..META + meta.caplen as usize);
            match data {
                Some(data) if meta.magic == META_MAGIC => {
                    feed.push(meta.tstamp_ns, meta.orig_len, meta.direction, meta.matched, data);
                }
                _ => feed.bad_record(),
            }
        }
        feed.publish();
        (n, empty)
    }

    fn run(&mut self, stop: &Stop) {
        let stop_fd = stop.fd().as_raw_fd();
        // Level-triggered: once raised, it wakes every wait.
        if let Err(e) = add_to_epoll(&self.epoll, stop_fd, libc::EPOLLIN) {
            log::error!("ring reader: watching the stop signal: {e}; stopping is up to the timer");
        }
        let mut last_look = false;
        loop {
            let stopping = stop.is_raised();
            let mut all_empty = true;
            for i in 0..self.rings.len() {
                let (_, empty) = self.drain(i);
                if empty {
                    // Everything stamped before now (less the margin) is in the feed.
                    self.feeds[i].vouch(monotonic_ns().saturating_sub(IN_FLIGHT_NS));
                }
                all_empty &= empty;
            }
            for f in &self.feeds {
                f.stats.beat();
            }
            if !all_empty {
                continue;
            }
            if stopping {
                // The programs are detached before stop is raised, but one still running on
                // another CPU may submit a last record: look once more after a moment.
                if last_look {
                    break;
                }
                last_look = true;
                std::thread::sleep(Duration::from_nanos(IN_FLIGHT_NS));
                continue;
            }
            // Alone, this reader's watermarks hold back nobody else's frames: sleep longer.
            let poll = if merge::ONE_READER.load(std::sync::atomic::Ordering::Relaxed) {
                Duration::from_nanos(merge::ONE_READER_WAIT_NS)
            } else {
                POLL
            };
            wait(&self.epoll, poll);
        }
    }
}

fn add_to_epoll(epoll: &OwnedFd, fd: RawFd, events: i32) -> std::io::Result<()> {
    let mut ev = libc::epoll_event { events: events.cast_unsigned(), u64: 0 };
    // SAFETY: valid epoll and target fds, and an initialised event.
    if unsafe { libc::epoll_ctl(epoll.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &raw mut ev) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Sleeps until a ring asks for the reader, the stop signal, or `timeout`.
fn wait(epoll: &OwnedFd, timeout: Duration) {
    let mut events = [libc::epoll_event { events: 0, u64: 0 }; 8];
    let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: the buffer holds `events.len()` entries.
    unsafe { libc::epoll_wait(epoll.as_raw_fd(), events.as_mut_ptr(), 8, ms) };
}
