//! Hand-off from an RX-queue worker to the writer: a lock-free single-producer/single-consumer
//! ring of variable-length records in one buffer allocated at start-up.
//!
//! A record is a 32-byte header (`caplen`, `orig_len`, `ts_ns`, `flags`, `matched`: the mask of
//! target slots the kernel matched) followed by the frame bytes, padded to 8 bytes. A record never wraps: when it does not fit before the end of the buffer,
//! the producer writes a wrap marker and starts again at offset 0. Positions only grow (they are
//! byte counts, reduced modulo the power-of-two capacity), so "full" and "empty" never mix up.
//!
//! The producer publishes its position once per batch and the consumer releases space once per
//! batch: one cache-line transfer per batch, not per frame.
//!
//! The consumer sleeps between rounds. So that a ring filling fast does not overflow meanwhile,
//! the producer wakes it (a [`Waker`]) when a batch takes the ring past [`WAKE_FILL`] of its
//! capacity: once per crossing, so a syscall per crossing, none per frame or batch.

use std::cell::UnsafeCell;
use std::io;
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

const HEADER: usize = 32;
const WRAP: u32 = u32::MAX;
/// A batch that takes the ring past this fraction of its capacity (1/N) wakes the consumer.
pub const WAKE_FILL: usize = 4;

#[repr(align(128))]
struct Padded<T>(T);

struct Shared {
    buf: Box<[UnsafeCell<u64>]>,
    mask: usize,
    /// Bytes written and published by the producer.
    head: Padded<AtomicUsize>,
    /// Bytes consumed and released by the consumer.
    tail: Padded<AtomicUsize>,
    closed: AtomicBool,
    /// Set by the consumer's side: what a filling ring wakes.
    waker: OnceLock<Arc<Waker>>,
    /// How often the producer woke the consumer.
    wakes: AtomicU64,
}

// SAFETY: the producer only writes bytes in [head, tail + capacity) and the consumer only reads
// bytes in [tail, head); head/tail are published with Release and read with Acquire.
unsafe impl Sync for Shared {}
unsafe impl Send for Shared {}

impl Shared {
    fn base(&self) -> *mut u8 {
        UnsafeCell::raw_get(self.buf.as_ptr()).cast::<u8>()
    }
    fn capacity(&self) -> usize {
        self.mask + 1
    }
}

/// Ring bytes taken by a record of `len` frame bytes: the header and the frame, padded to 8.
/// (`len.next_multiple_of(8)` computes the same, but does not compile to a mask.)
#[inline]
const fn record_size(len: usize) -> usize {
    HEADER + ((len + 7) & !7)
}

/// The largest frame a ring of `capacity` bytes accepts.
pub const fn max_record(capacity: usize) -> usize {
    capacity / 4
}

/// Creates a ring of `capacity` bytes, rounded up to a power of two (at least 64 KiB).
pub fn channel(capacity: usize) -> (Producer, Consumer) {
    let capacity = capacity.max(1 << 16).next_power_of_two();
    let words = capacity / 8;
    let buf: Box<[UnsafeCell<u64>]> = (0..words).map(|_| UnsafeCell::new(0)).collect();
    let shared = Arc::new(Shared {
        buf,
        mask: capacity - 1,
        head: Padded(AtomicUsize::new(0)),
        tail: Padded(AtomicUsize::new(0)),
        closed: AtomicBool::new(false),
        waker: OnceLock::new(),
        wakes: AtomicU64::new(0),
    });
    (
        Producer {
            shared: Arc::clone(&shared),
            head: 0,
            tail_cache: 0,
            wake_at: capacity / WAKE_FILL,
            armed: true,
        },
        Consumer { shared, tail: 0, released: 0, head_cache: 0, peeked: 0 },
    )
}

pub struct Producer {
    shared: Arc<Shared>,
    head: usize,
    tail_cache: usize,
    /// Bytes in the ring past which a batch wakes the consumer.
    wake_at: usize,
    /// The ring was below half of `wake_at` since the last wake-up: the next crossing wakes.
    armed: bool,
}

impl Producer {
    #[inline]
    fn free(&mut self, need: usize) -> bool {
        let cap = self.shared.capacity();
        if self.head + need - self.tail_cache <= cap {
            return true;
        }
        self.tail_cache = self.shared.tail.0.load(Ordering::Acquire);
        self.head + need - self.tail_cache <= cap
    }

    /// Appends one frame. Returns false (and writes nothing) when the ring is full or the frame
    /// is larger than [`max_record`]. Not visible to the consumer until [`Producer::publish`].
    /// `flags` is the pcapng `epb_flags` word (direction); `matched` the frame's mask of target
    /// slots, as the kernel wrote it.
    #[inline]
    pub fn push(
        &mut self,
        ts_ns: u64,
        orig_len: u32,
        flags: u32,
        matched: u64,
        data: &[u8],
    ) -> bool {
        let cap = self.shared.capacity();
        let len = data.len();
        if len > max_record(cap) {
            return false;
        }
        let size = record_size(len);
        let offset = self.head & self.shared.mask;
        let to_end = cap - offset;
        let (need, wrap) = if size > to_end { (to_end + size, true) } else { (size, false) };
        if !self.free(need) {
            return false;
        }
        let base = self.shared.base();
        let mut offset = offset;
        // SAFETY: [head, head + need) is free (checked above) and inside the buffer; offsets are
        // multiples of 8, so the u32/u64 header writes are aligned.
        unsafe {
            if wrap {
                base.add(offset).cast::<u32>().write(WRAP);
                offset = 0;
            }
            let p = base.add(offset);
            #[expect(clippy::cast_possible_truncation, reason = "len <= max_record(cap) <= 1 GiB")]
            p.cast::<u32>().write(len as u32);
            p.add(4).cast::<u32>().write(orig_len);
            p.add(8).cast::<u64>().write(ts_ns);
            p.add(16).cast::<u32>().write(flags);
            p.add(24).cast::<u64>().write(matched);
            std::ptr::copy_nonoverlapping(data.as_ptr(), p.add(HEADER), len);
        }
        self.head += need;
        true
    }

    /// Makes everything pushed so far visible to the consumer, and wakes it if this batch took
    /// the ring past its wake-up fill.
    pub fn publish(&mut self) {
        self.shared.head.0.store(self.head, Ordering::Release);
        self.wake_if_filling();
    }

    /// Wakes the consumer when the ring crosses `wake_at`, once: it is armed again only after
    /// the ring went below half of that, so a consumer working its way down is not woken for
    /// every batch. The cached tail overstates the fill; the shared one is read only when the
    /// cached one says the ring is past the mark, or while waiting to re-arm (from a wake-up
    /// until the consumer has drained the ring: a few batches).
    #[inline]
    fn wake_if_filling(&mut self) {
        let mut fill = self.head - self.tail_cache;
        if fill >= self.wake_at || !self.armed {
            self.tail_cache = self.shared.tail.0.load(Ordering::Acquire);
            fill = self.head - self.tail_cache;
        }
        if fill < self.wake_at / 2 {
            self.armed = true;
        } else if fill >= self.wake_at
            && self.armed
            && let Some(waker) = self.shared.waker.get()
        {
            self.armed = false;
            self.shared.wakes.fetch_add(1, Ordering::Relaxed);
            waker.wake();
        }
    }

    /// How often this ring woke its consumer.
    pub fn wakes(&self) -> u64 {
        self.shared.wakes.load(Ordering::Relaxed)
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        self.publish();
        self.shared.closed.store(true, Ordering::Release);
    }
}

/// One frame as the consumer sees it, borrowed from the ring until [`Consumer::advance`].
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    pub ts_ns: u64,
    pub orig_len: u32,
    /// pcapng `epb_flags`: the direction (inbound, outbound), 0 when unknown.
    pub flags: u32,
    /// The target slots the frame matched (bit N: slot N), 0 when unknown.
    pub matched: u64,
    pub data: &'a [u8],
}

pub struct Consumer {
    shared: Arc<Shared>,
    tail: usize,
    /// `tail` as last released.
    released: usize,
    head_cache: usize,
    /// Ring bytes of the record last returned by `peek`, for `advance`.
    peeked: usize,
}

impl Consumer {
    /// The oldest unconsumed frame, if any.
    #[inline]
    pub fn peek(&mut self) -> Option<Record<'_>> {
        loop {
            if self.tail == self.head_cache {
                self.head_cache = self.shared.head.0.load(Ordering::Acquire);
                if self.tail == self.head_cache {
                    return None;
                }
            }
            let offset = self.tail & self.shared.mask;
            let base = self.shared.base();
            // SAFETY: [tail, head) was published by the producer with Release, read after Acquire.
            unsafe {
                let p = base.add(offset);
                let len = p.cast::<u32>().read();
                if len == WRAP {
                    self.tail += self.shared.capacity() - offset;
                    continue;
                }
                let orig_len = p.add(4).cast::<u32>().read();
                let ts_ns = p.add(8).cast::<u64>().read();
                let flags = p.add(16).cast::<u32>().read();
                let matched = p.add(24).cast::<u64>().read();
                let data = std::slice::from_raw_parts(p.add(HEADER), len as usize);
                self.peeked = record_size(len as usize);
                return Some(Record { ts_ns, orig_len, flags, matched, data });
            }
        }
    }

    /// Timestamp of the oldest unconsumed frame (for merging several rings in time order).
    pub fn peek_ts(&mut self) -> Option<u64> {
        self.peek().map(|r| r.ts_ns)
    }

    /// Consumes the frame last returned by [`Consumer::peek`].
    #[inline]
    pub fn advance(&mut self) {
        debug_assert!(self.peeked > 0, "advance() without a record from peek()");
        self.tail += std::mem::take(&mut self.peeked);
    }

    /// Gives the consumed space back to the producer. Does nothing (and leaves the producer's
    /// cache line alone) when nothing was consumed since the last call.
    pub fn release(&mut self) {
        if self.tail != self.released {
            self.shared.tail.0.store(self.tail, Ordering::Release);
            self.released = self.tail;
        }
    }

    /// True once the producer is gone and every frame it published has been consumed.
    pub fn is_finished(&mut self) -> bool {
        self.shared.closed.load(Ordering::Acquire) && self.peek().is_none()
    }

    /// From now on, a batch that fills the ring past [`WAKE_FILL`] wakes `waker`. A ring
    /// wakes one consumer: a second call changes nothing.
    pub fn wake_on_fill(&self, waker: &Arc<Waker>) {
        let _ = self.shared.waker.set(Arc::clone(waker));
    }
}

/// What a consumer thread sleeps on between rounds: an eventfd that producers write to when
/// their ring fills (and the owner when it must stop).
#[derive(Debug)]
pub struct Waker {
    fd: OwnedFd,
}

impl Waker {
    pub fn new() -> io::Result<Arc<Waker>> {
        // SAFETY: plain eventfd call; the fd is owned right away.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh, valid fd.
        Ok(Arc::new(Waker { fd: unsafe { OwnedFd::from_raw_fd(fd) } }))
    }

    pub fn wake(&self) {
        let one = 1u64;
        // SAFETY: an 8-byte write to our eventfd; it fails only when the counter would
        // overflow, and then it is readable anyway.
        unsafe { libc::write(self.fd.as_raw_fd(), (&raw const one).cast(), 8) };
    }

    /// Sleeps until woken or `timeout` passes (to the nanosecond: pauses can be a few
    /// microseconds). Returns whether it was woken; the wake-ups are used up either way.
    pub fn wait(&self, timeout: Duration) -> bool {
        let mut pfd = libc::pollfd { fd: self.fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        let ts = libc::timespec {
            tv_sec: libc::time_t::try_from(timeout.as_secs()).unwrap_or(libc::time_t::MAX),
            tv_nsec: libc::c_long::from(timeout.subsec_nanos()),
        };
        // SAFETY: one valid pollfd, a valid timespec, no signal mask.
        let ready = unsafe { libc::ppoll(&raw mut pfd, 1, &raw const ts, std::ptr::null()) } > 0;
        if ready {
            let mut count = 0u64;
            // SAFETY: an 8-byte read from our non-blocking eventfd into a u64.
            unsafe { libc::read(self.fd.as_raw_fd(), (&raw mut count).cast(), 8) };
        }
        ready
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(i: u32, len: usize) -> Vec<u8> {
        (0..len).map(|b| (i as usize + b).to_le_bytes()[0]).collect()
    }

    #[test]
    fn records_come_out_in_order_with_their_metadata() {
        let (mut p, mut c) = channel(1 << 16);
        for i in 0..100u32 {
            assert!(p.push(
                u64::from(i) * 10,
                i + 1000,
                i % 3,
                u64::from(i) << 20 | 1,
                &frame(i, i as usize % 70)
            ));
        }
        assert!(c.peek().is_none(), "nothing is visible before publish");
        p.publish();
        for i in 0..100u32 {
            let r = c.peek().expect("record");
            assert_eq!(
                (r.ts_ns, r.orig_len, r.flags, r.matched),
                (u64::from(i) * 10, i + 1000, i % 3, u64::from(i) << 20 | 1)
            );
            assert_eq!(r.data, &frame(i, i as usize % 70)[..]);
            c.advance();
        }
        assert!(c.peek().is_none());
    }

    #[test]
    fn full_ring_refuses_and_recovers_after_release() {
        let (mut p, mut c) = channel(1 << 16);
        let big = vec![7u8; 1500];
        let mut pushed = 0;
        while p.push(pushed, 1500, 0, 0, &big) {
            pushed += 1;
        }
        assert!(
            pushed > 30 && pushed < 50,
            "64 KiB holds about 42 records of 1536 bytes: {pushed}"
        );
        p.publish();
        for _ in 0..10 {
            assert!(c.peek().is_some());
            c.advance();
        }
        assert!(!p.push(0, 1500, 0, 0, &big), "space is not reusable before release");
        c.release();
        assert!(p.push(0, 1500, 0, 0, &big));
    }

    #[test]
    fn oversized_frames_are_refused() {
        let (mut p, _c) = channel(1 << 16);
        assert!(!p.push(0, 0, 0, 0, &vec![0u8; max_record(1 << 16) + 1]));
    }

    #[test]
    fn wraps_many_times_across_threads() {
        let (mut p, mut c) = channel(1 << 16);
        const N: u32 = 200_000;
        let producer = std::thread::spawn(move || {
            let mut i = 0;
            while i < N {
                let len = (i as usize * 7) % 1515;
                if p.push(u64::from(i), i, 2, u64::MAX - u64::from(i), &frame(i, len)) {
                    i += 1;
                    if i % 16 == 0 {
                        p.publish();
                    }
                } else {
                    p.publish();
                    std::thread::yield_now();
                }
            }
        });
        let mut next = 0u32;
        loop {
            if let Some(r) = c.peek() {
                assert_eq!(r.ts_ns, u64::from(next));
                assert_eq!(r.orig_len, next);
                assert_eq!(r.flags, 2);
                assert_eq!(r.matched, u64::MAX - u64::from(next));
                assert_eq!(r.data, &frame(next, (next as usize * 7) % 1515)[..]);
                c.advance();
                next += 1;
                if next.is_multiple_of(8) {
                    c.release();
                }
            } else if c.is_finished() {
                break;
            } else {
                c.release();
                std::thread::yield_now();
            }
        }
        producer.join().unwrap();
        assert_eq!(next, N);
    }

    #[test]
    fn a_filling_ring_wakes_its_consumer_once_per_crossing() {
        let (mut p, mut c) = channel(1 << 16);
        let waker = Waker::new().unwrap();
        let frame = [0u8; 992];
        // 1024 ring bytes a record: the wake-up fill (16 KiB) is crossed by the 17th.
        let fill_to = |p: &mut Producer, n: usize| {
            for _ in 0..n {
                assert!(p.push(0, 992, 0, 0, &frame));
                p.publish();
            }
        };
        fill_to(&mut p, 20);
        assert_eq!(p.wakes(), 0, "nobody to wake yet");
        c.wake_on_fill(&waker);
        fill_to(&mut p, 1);
        assert_eq!(p.wakes(), 1);
        assert!(waker.wait(Duration::ZERO), "the consumer finds itself woken");
        assert!(!waker.wait(Duration::ZERO), "and the wake-up used up");
        fill_to(&mut p, 20);
        assert_eq!(p.wakes(), 1, "still past the mark: no second wake-up");
        // Drained down to a quarter of the mark: the next crossing wakes again.
        for _ in 0..37 {
            c.peek().unwrap();
            c.advance();
        }
        c.release();
        fill_to(&mut p, 1);
        assert_eq!(p.wakes(), 1, "re-armed, below the mark");
        fill_to(&mut p, 12);
        assert_eq!(p.wakes(), 2);
        assert!(waker.wait(Duration::ZERO));
    }
}
