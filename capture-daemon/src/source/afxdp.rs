//! One AF_XDP socket, UMEM and worker thread per RX queue.
//!
//! The worker owns everything kernel-shared for its queue (the UMEM is created inside the thread,
//! as xdpilone wants). Its loop: take a batch of descriptors from the RX ring, copy each frame
//! with its metadata into the hand-off ring, give the UMEM frames back through the fill ring,
//! publish the batch to the writer. When the RX ring is empty it sleeps in poll(2): an idle queue
//! costs no CPU, a busy one never makes a syscall per frame.
//!
//! Sockets are bound with multi-buffer (XDP_USE_SG) where the kernel and driver allow it: a frame
//! longer than one UMEM frame (jumbo frames) then arrives in several descriptors, each but the
//! last flagged XDP_PKT_CONTD, and is put back together in [`Reassembly`]. The kernel copies the
//! XDP metadata in front of the first descriptor only (net/xdp/xsk.c `__xsk_rcv`), where it is
//! read. Without multi-buffer the XDP program cuts longer frames to [`FRAME_CAPACITY`] instead.

use std::num::NonZeroU32;
use std::os::fd::{AsRawFd as _, RawFd};
use std::ptr::NonNull;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use capture_common::{DIRECTION_INBOUND, FrameMeta, META_MAGIC};
use xdpilone::{IfInfo, Socket, SocketConfig, Umem, UmemConfig};

use super::{Feed, QueueStats, Worker, monotonic_ns};
use crate::config::ZeroCopy;
use crate::nap::Nap;
use crate::stop::{self, Stop};
use crate::writer::merge;

/// UMEM chunk size: one page per frame, the AF_XDP default.
pub const FRAME_SIZE: u32 = 4096;
/// The most frame bytes one UMEM frame takes: the kernel keeps XDP_PACKET_HEADROOM (256 bytes) in
/// front of the data. Longer frames need several (multi-buffer) or are cut to this.
pub const FRAME_CAPACITY: u32 = FRAME_SIZE - 256;
/// Bind flag for multi-buffer sockets (linux/if_xdp.h; Linux >= 6.6).
const XDP_USE_SG: u16 = 1 << 4;
/// Descriptor option: more descriptors of this packet follow (linux/if_xdp.h).
const XDP_PKT_CONTD: u32 = 1;
/// Largest packet put back together: the first buffer and up to 17 fragments (MAX_SKB_FRAGS),
/// more than a 64 KiB frame needs. Anything longer is kept cut to this, its length recorded.
const REASSEMBLY_BYTES: usize = 18 * FRAME_CAPACITY as usize;
/// Descriptors taken from the RX ring per batch.
const BATCH: u32 = 64;
/// Margin for frames the XDP program has stamped but not yet put in the RX ring.
const IN_FLIGHT_NS: u64 = 1_000_000;
/// With busy polling on, how many empty busy polls in a row before the worker sleeps in poll(2).
const BUSY_POLLS_BEFORE_SLEEP: u32 = 1000;
/// Binding to a queue another socket has just left: how often to try, and how long to wait
/// between tries (a second in all; the kernel's clean-up usually takes milliseconds).
const BIND_BUSY_TRIES: u32 = 200;
const BIND_BUSY_PAUSE: Duration = Duration::from_millis(5);
/// How long an idle worker sleeps before looking at its socket statistics again.
const IDLE_WAIT: Duration = Duration::from_secs(1);

pub struct WorkerSpec {
    pub iface: String,
    pub queue: u32,
    pub ring_size: u32,
    pub zero_copy: ZeroCopy,
    /// 0 = sleep in poll(2) when idle; otherwise busy-poll this many microseconds per call.
    pub busy_poll_us: u32,
    /// Longest pause between reads while traffic flows (see [`Nap`]); 0 = read at once.
    pub batch_delay_us: u32,
    /// Put the UMEM on the host's reserved huge pages (see [`Area::new`]).
    pub umem_reserved_huge_pages: bool,
}

/// How a socket ended up bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindMode {
    ZeroCopy,
    Copy,
}

impl BindMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ZeroCopy => "zero-copy",
            Self::Copy => "copy",
        }
    }
}

/// How a socket ended up bound, for the log and the XDP program's frame limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Binding {
    pub mode: BindMode,
    /// Bound with XDP_USE_SG: frames of any length arrive whole.
    pub multi_buffer: bool,
}

impl Binding {
    /// The longest frame the socket takes whole; 0 = any.
    pub fn frame_limit(self) -> u32 {
        if self.multi_buffer { 0 } else { FRAME_CAPACITY }
    }

    /// What the socket captures, for the start-up log.
    pub fn describe(self) -> String {
        if self.multi_buffer {
            format!(
                "{} mode with multi-buffer (frames of any length captured whole)",
                self.mode.as_str()
            )
        } else {
            format!(
                "{} mode without multi-buffer (the kernel or driver has none): frames longer than \
                 {FRAME_CAPACITY} bytes are cut to {FRAME_CAPACITY} (original length recorded)",
                self.mode.as_str()
            )
        }
    }
}

// Socket options for busy polling (include/uapi/asm-generic/socket.h); not all in libc.
const SO_BUSY_POLL: libc::c_int = 46;
const SO_PREFER_BUSY_POLL: libc::c_int = 69;
const SO_BUSY_POLL_BUDGET: libc::c_int = 70;
const INT_LEN: libc::socklen_t = 4;
const _: () = assert!(size_of::<libc::c_int>() == INT_LEN as usize);

/// Page-aligned anonymous memory for a UMEM, unmapped on drop.
struct Area {
    ptr: NonNull<u8>,
    len: usize,
}

impl Area {
    const HUGE: usize = 2 << 20;

    /// Maps `len` bytes (rounded up to 2 MiB) for a UMEM, on huge pages where the host gives
    /// them: with 4 KiB pages every frame sits on its own page, and the TLB miss on reading it
    /// was most of a worker's per-frame cost (measured: docs/bench.md). Transparent huge pages
    /// by default; the host's reserved pool (MAP_HUGETLB) only when `reserved` says so, since
    /// on a hypervisor those pages are the VMs'. Then plain pages.
    fn new(len: usize, reserved: bool) -> std::io::Result<Self> {
        let len = len.next_multiple_of(Self::HUGE);
        if reserved {
            match Self::reserved(len) {
                Ok(area) => return Ok(area),
                Err(e) => log::warn!(
                    "UMEM: no {} MiB of reserved 2 MiB huge pages ({e}); using transparent huge \
                     pages (umem_reserved_huge_pages = true; see HugePages_Free in \
                     /proc/meminfo)",
                    len >> 20
                ),
            }
        }
        Self::transparent(len)
    }

    /// `len` bytes of the reserved pool, in 2 MiB pages whatever the host's default huge page
    /// size: a 1 GiB default would give a mapping `munmap` of `len` cannot undo (it must be a
    /// multiple of the page size), leaking a 1 GiB page per UMEM.
    fn reserved(len: usize) -> std::io::Result<Self> {
        let flags = libc::MAP_PRIVATE
            | libc::MAP_ANONYMOUS
            | libc::MAP_HUGETLB
            | libc::MAP_HUGE_2MB
            | libc::MAP_POPULATE;
        // SAFETY: anonymous mapping, checked for MAP_FAILED.
        let ptr = unsafe {
            libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, flags, -1, 0)
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        log::debug!("UMEM: {} MiB of reserved 2 MiB huge pages", len >> 20);
        Ok(Area { ptr: NonNull::new(ptr.cast()).expect("mmap returned NULL"), len })
    }

    /// `len` bytes advised to become transparent huge pages, faulted in now.
    fn transparent(len: usize) -> std::io::Result<Self> {
        // Over-map by 2 MiB so a 2 MiB-aligned range can be kept: THP needs aligned ranges.
        // SAFETY: anonymous mapping, checked for MAP_FAILED.
        let raw = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len + Self::HUGE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if raw == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let start = (raw as usize).next_multiple_of(Self::HUGE);
        let head = start - raw as usize;
        let tail = Self::HUGE - head;
        // SAFETY: trimming the unaligned head and tail of our own fresh mapping; then advice
        // and pre-faulting on the kept range.
        unsafe {
            unmap(raw.cast(), head);
            unmap((start + len) as *mut u8, tail);
            let ptr = start as *mut libc::c_void;
            if libc::madvise(ptr, len, libc::MADV_HUGEPAGE) != 0 {
                log::debug!("UMEM: no transparent huge pages: {}", std::io::Error::last_os_error());
            }
            // Fault everything in now, not on the first frames.
            if libc::madvise(ptr, len, libc::MADV_POPULATE_WRITE) != 0 {
                std::ptr::write_bytes(ptr.cast::<u8>(), 0, len);
            }
        }
        Ok(Area { ptr: NonNull::new(start as *mut u8).expect("mmap returned NULL"), len })
    }

    fn slice(&self) -> NonNull<[u8]> {
        NonNull::slice_from_raw_parts(self.ptr, self.len)
    }
}

/// Unmaps `len` bytes at `ptr` (nothing if `len` is 0). A failure leaves the memory mapped for
/// as long as the daemon runs (for reserved huge pages: taken from the host's pool): logged.
///
/// # Safety
/// The range is part of a mapping of the caller's that nothing uses any more.
unsafe fn unmap(ptr: *mut u8, len: usize) {
    if len == 0 {
        return;
    }
    // SAFETY: as the caller promises.
    if unsafe { libc::munmap(ptr.cast(), len) } != 0 {
        log::error!(
            "UMEM: munmap of {len} bytes at {ptr:p} failed: {}; that memory stays mapped",
            std::io::Error::last_os_error()
        );
    }
}

impl Drop for Area {
    fn drop(&mut self) {
        // SAFETY: exactly what new() mapped; the Umem using it was dropped before (field
        // order of RxQueue).
        unsafe { unmap(self.ptr.as_ptr(), self.len) };
    }
}

fn errno_msg(e: &xdpilone::Errno) -> String {
    std::io::Error::from_raw_os_error(e.get_raw().abs()).to_string()
}

/// Opens the socket as `spec.zero_copy` asks: "auto" tries zero-copy and falls back to copy mode.
/// The UMEM's memory is mapped once for all the tries: a UMEM that failed to bind is released
/// by the kernel later (deferred work), and a fresh mapping per try could run through the
/// reserved huge page pool meanwhile.
fn open_queue(spec: &WorkerSpec) -> Result<RxQueue, String> {
    // Twice as many frames as the RX ring holds: a full RX ring still leaves a full fill ring.
    let bytes = spec.ring_size as usize * 2 * FRAME_SIZE as usize;
    let area = Area::new(bytes, spec.umem_reserved_huge_pages)
        .map_err(|e| format!("allocating {} MiB of UMEM: {e}", bytes >> 20))?;
    let area = Rc::new(area);
    match spec.zero_copy {
        ZeroCopy::On => open_mode(spec, BindMode::ZeroCopy, &area).map_err(|e| {
            format!("{e} (zero_copy = \"on\" needs a driver with AF_XDP zero-copy support; use \"auto\")")
        }),
        ZeroCopy::Off => open_mode(spec, BindMode::Copy, &area),
        ZeroCopy::Auto => open_mode(spec, BindMode::ZeroCopy, &area).or_else(|zc_err| {
            log::debug!("{} queue {}: zero-copy bind failed ({zc_err}); using copy mode", spec.iface, spec.queue);
            open_mode(spec, BindMode::Copy, &area)
        }),
    }
}

/// Opens the socket with multi-buffer, or without where the kernel (before 6.6) or a zero-copy
/// driver refuses it.
fn open_mode(spec: &WorkerSpec, mode: BindMode, area: &Rc<Area>) -> Result<RxQueue, String> {
    let open = |multi_buffer| RxQueue::open(spec, Binding { mode, multi_buffer }, Rc::clone(area));
    open(true).or_else(|sg_err| {
        let q = open(false)?;
        log::debug!(
            "{} queue {}: {} bind with multi-buffer failed ({sg_err}); bound without",
            spec.iface,
            spec.queue,
            mode.as_str()
        );
        Ok(q)
    })
}

/// Starts the worker of one RX queue. Returns once its socket is bound (or failed to be), with the
/// socket's fd for the XSKMAP and how it was bound.
pub fn spawn(spec: WorkerSpec, feed: Feed, stop: Stop) -> Result<(Worker, RawFd, Binding), String> {
    let stats = Arc::clone(&feed.stats);
    let thread = format!("rx-{}-q{}", spec.iface, spec.queue);
    let what = format!("RX queue {} of {}", spec.queue, spec.iface);
    let open = move || {
        open_queue(&spec).map(|ring| {
            let report = (ring.fd, ring.binding);
            (ring, report)
        })
    };
    let (worker, (fd, mode)) =
        Worker::spawn(thread, what, stats, open, move |mut ring: RxQueue| ring.run(feed, &stop))?;
    Ok((worker, fd, mode))
}

struct RxQueue {
    // Field order matters for drop: rings and socket before the UMEM, the UMEM before its memory.
    rx: xdpilone::RingRx,
    fq: xdpilone::DeviceQueue,
    user: xdpilone::User,
    // Never read, but must outlive the rings above and stay registered while they run.
    _umem: Umem,
    area: Rc<Area>,
    fd: RawFd,
    binding: Binding,
    busy_poll: bool,
    ring_size: u32,
    batch_delay_ns: u64,
    /// UMEM frame addresses not currently owned by the kernel.
    free: Vec<u64>,
    frame_mask: u64,
    /// The multi-buffer packet being read (its descriptors can straddle batches).
    packet: Reassembly,
}

impl RxQueue {
    fn open(spec: &WorkerSpec, binding: Binding, area: Rc<Area>) -> Result<Self, String> {
        let ring = spec.ring_size;
        // The area holds at least these (see open_queue).
        let frames = ring * 2;
        let config = UmemConfig {
            fill_size: ring,
            complete_size: ring,
            frame_size: FRAME_SIZE,
            headroom: 0,
            flags: 0,
        };
        // SAFETY: the area is page aligned, sized for `frames` chunks, and outlives the Umem
        // (field order of RxQueue).
        let umem = unsafe { Umem::new(config, area.slice()) }.map_err(|e| {
            format!("registering UMEM: {} (is RLIMIT_MEMLOCK too low?)", errno_msg(&e))
        })?;
        let mut info = IfInfo::invalid();
        let name = std::ffi::CString::new(spec.iface.clone()).map_err(|_| "bad interface name")?;
        info.from_name(&name)
            .map_err(|e| format!("interface {}: {}", spec.iface, errno_msg(&e)))?;
        info.set_queue(spec.queue);
        let sock = Socket::with_shared(&info, &umem)
            .map_err(|e| format!("creating AF_XDP socket: {}", errno_msg(&e)))?;
        let fq =
            umem.fq_cq(&sock).map_err(|e| format!("fill/completion rings: {}", errno_msg(&e)))?;
        let user = umem
            .rx_tx(
                &sock,
                &SocketConfig {
                    rx_size: NonZeroU32::new(ring),
                    tx_size: None,
                    bind_flags: SocketConfig::XDP_BIND_NEED_WAKEUP
                        | match binding.mode {
                            BindMode::ZeroCopy => SocketConfig::XDP_BIND_ZEROCOPY,
                            BindMode::Copy => SocketConfig::XDP_BIND_COPY,
                        }
                        | if binding.multi_buffer { XDP_USE_SG } else { 0 },
                },
            )
            .map_err(|e| format!("RX ring: {}", errno_msg(&e)))?;
        let rx = user.map_rx().map_err(|e| format!("mapping RX ring: {}", errno_msg(&e)))?;
        // A socket closed on this queue a moment ago (a reload restarting the interface) lets
        // go of it only once the kernel's deferred clean-up has run: until then binding fails
        // with EBUSY. Wait for that, briefly; anything else fails at once.
        let mut tries = 0;
        while let Err(e) = umem.bind(&user) {
            tries += 1;
            if e.get_raw().abs() != libc::EBUSY || tries > BIND_BUSY_TRIES {
                return Err(format!(
                    "binding AF_XDP socket to {} queue {}: {}",
                    spec.iface,
                    spec.queue,
                    errno_msg(&e)
                ));
            }
            std::thread::sleep(BIND_BUSY_PAUSE);
        }
        let fd = user.as_raw_fd();
        if spec.busy_poll_us > 0 {
            let budget = i32::try_from(BATCH).unwrap_or(64);
            let us = i32::try_from(spec.busy_poll_us).unwrap_or(1000);
            for (opt, value, name) in [
                (SO_PREFER_BUSY_POLL, 1, "SO_PREFER_BUSY_POLL"),
                (SO_BUSY_POLL, us, "SO_BUSY_POLL"),
                (SO_BUSY_POLL_BUDGET, budget, "SO_BUSY_POLL_BUDGET"),
            ] {
                // SAFETY: setsockopt with a valid int option value.
                let rc = unsafe {
                    libc::setsockopt(fd, libc::SOL_SOCKET, opt, (&raw const value).cast(), INT_LEN)
                };
                if rc != 0 {
                    return Err(format!("setting {name}: {}", std::io::Error::last_os_error()));
                }
            }
        }
        let free = (0..u64::from(frames)).map(|i| i * u64::from(FRAME_SIZE)).collect();
        let mut q = RxQueue {
            rx,
            fq,
            user,
            _umem: umem,
            area,
            fd,
            binding,
            busy_poll: spec.busy_poll_us > 0,
            ring_size: spec.ring_size,
            batch_delay_ns: u64::from(spec.batch_delay_us) * 1000,
            free,
            frame_mask: !(u64::from(FRAME_SIZE) - 1),
            packet: Reassembly::new(),
        };
        q.refill();
        Ok(q)
    }

    /// Hands every free frame the fill ring has room for to the kernel.
    fn refill(&mut self) {
        let want = u32::try_from(self.free.len()).unwrap_or(u32::MAX);
        if want == 0 {
            return;
        }
        let mut writer = self.fq.fill(want);
        let n = writer.capacity() as usize;
        let start = self.free.len() - n;
        writer.insert(self.free[start..].iter().copied());
        writer.commit();
        self.free.truncate(start);
    }

    /// About once a second: the kernel's socket statistics.
    fn refresh_if_due(&self, stats: &QueueStats, last_refresh: &mut Instant) {
        if last_refresh.elapsed() >= Duration::from_secs(1) {
            self.refresh_kernel_stats(stats);
            *last_refresh = Instant::now();
        }
    }

    fn refresh_kernel_stats(&self, stats: &QueueStats) {
        if let Ok(s) = self.user.statistics_v2() {
            stats.kernel_rx_dropped.store(s.rx_dropped, Relaxed);
            stats.kernel_rx_ring_full.store(s.rx_ring_full, Relaxed);
            stats.kernel_fill_ring_empty.store(s.rx_fill_ring_empty_descs, Relaxed);
            stats.kernel_invalid_descs.store(s.rx_invalid_descs, Relaxed);
        }
    }

    /// Drains one batch into `feed`. Returns how many descriptors it took.
    #[expect(clippy::cast_possible_truncation, reason = "AF_XDP exists only where usize is 64-bit")]
    fn drain(&mut self, feed: &mut Feed) -> u32 {
        let base = self.area.ptr;
        let umem_len = self.area.len as u64;
        let meta_len = size_of::<FrameMeta>() as u64;
        // First pass: take the descriptors and start loading each frame's metadata line. The
        // kernel wrote those lines on another CPU; fetching them all at once overlaps the cache
        // misses instead of paying them one after another.
        let mut descs = [(0u64, 0u32, 0u32); BATCH as usize];
        let mut n = 0usize;
        let mut reader = self.rx.receive(BATCH);
        while let Some(desc) = reader.read() {
            descs[n] = (desc.addr, desc.len, desc.options);
            n += 1;
            if desc.addr >= meta_len && desc.addr < umem_len {
                // The metadata line, and the frame's first bytes where they start a new line
                // (a 64-byte frame behind 24 bytes of metadata spans two lines).
                // SAFETY: in bounds (checked); a prefetch never faults anyway.
                let meta = unsafe { base.as_ptr().add((desc.addr - meta_len) as usize) };
                prefetch(meta);
                prefetch(meta.wrapping_add(64));
            }
        }
        reader.release();
        drop(reader);

        for &(addr, len32, options) in &descs[..n] {
            let more = options & XDP_PKT_CONTD != 0;
            let inside = addr.checked_add(u64::from(len32)).is_some_and(|end| end <= umem_len);
            // SAFETY: the descriptor lies inside the UMEM (checked) and the kernel hands it to
            // us until we put it back on the fill ring, below.
            let data = inside.then(|| unsafe {
                std::slice::from_raw_parts(base.as_ptr().add(addr as usize), len32 as usize)
            });
            // Only a packet's first descriptor has the metadata in front (in its chunk's
            // headroom).
            let meta = (inside && addr >= meta_len && self.packet.is_idle()).then(|| {
                // SAFETY: [addr - meta_len, addr) is inside the UMEM (checked above).
                let meta = unsafe {
                    base.as_ptr()
                        .add((addr - meta_len) as usize)
                        .cast::<FrameMeta>()
                        .read_unaligned()
                };
                if meta.magic == META_MAGIC {
                    Some(Stamp {
                        ts: meta.tstamp_ns,
                        orig_len: meta.orig_len,
                        caplen: meta.caplen,
                        matched: meta.matched,
                    })
                } else {
                    None
                }
            });
            self.packet.take(feed, data, meta.flatten(), more);
            if addr < umem_len {
                self.free.push(addr & self.frame_mask);
            }
        }
        if n > 0 {
            feed.publish();
            self.refill();
        }
        n as u32
    }

    fn run(&mut self, mut feed: Feed, stop: &Stop) {
        let stats = Arc::clone(&feed.stats);
        let stats = &*stats;
        let mut last_refresh = Instant::now();
        let mut empty_busy_polls = 0u32;
        // Aim for a quarter of the RX ring per read.
        let mut nap = Nap::new(u64::from(self.ring_size / 4), self.batch_delay_ns);
        // Frames taken since the worker last slept.
        let mut round = 0u32;
        let mut full_batches = 0u32;
        // Stopping: the ring was seen empty once, and is looked at a last time.
        let mut last_look = false;
        stats.beat();
        loop {
            let stopping = stop.is_raised();
            let n = self.drain(&mut feed);
            round = round.saturating_add(n);
            if n == BATCH {
                full_batches = full_batches.wrapping_add(1);
                if full_batches.is_multiple_of(1024) {
                    stats.beat();
                    // Under overload the ring never empties: the statistics must still be
                    // refreshed (ring-full drops show up exactly then).
                    self.refresh_if_due(stats, &mut last_refresh);
                }
                continue;
            }
            let now = monotonic_ns();
            stats.heartbeat_ms.store(now / 1_000_000, Relaxed);
            // The RX ring is empty: every frame stamped more than IN_FLIGHT_NS ago has been
            // pushed (the kernel fills the ring within one NAPI poll of stamping a frame).
            // A packet half read is older than `now` and still to be pushed.
            if self.packet.is_idle() {
                feed.vouch(now.saturating_sub(IN_FLIGHT_NS));
            }
            self.refresh_if_due(stats, &mut last_refresh);
            if n == 0 && stopping {
                // The program is detached before stop is set, but a NAPI poll already running
                // may still flush frames it redirected into the ring: look once more after the
                // time a poll takes, then the ring is empty for good.
                if last_look {
                    break;
                }
                last_look = true;
                std::thread::sleep(Duration::from_nanos(IN_FLIGHT_NS));
                continue;
            }
            if round > 0 {
                // Traffic is flowing: let the next frames gather in the ring for a moment instead
                // of being woken for every few of them.
                let pause = nap.after_round(u64::from(round));
                round = 0;
                empty_busy_polls = 0;
                if !pause.is_zero() {
                    std::thread::sleep(pause);
                }
                continue;
            }
            // Idle: wait for the kernel to wake us.
            nap.reset();
            if self.busy_poll && empty_busy_polls < BUSY_POLLS_BEFORE_SLEEP {
                // recvfrom on the socket runs the driver's receive processing in this thread
                // for up to busy_poll_us (SO_PREFER_BUSY_POLL).
                empty_busy_polls += 1;
                // SAFETY: zero-length recvfrom with null buffers is the documented kick.
                unsafe {
                    libc::recvfrom(
                        self.fd,
                        std::ptr::null_mut(),
                        0,
                        libc::MSG_DONTWAIT,
                        std::ptr::null_mut(),
                        std::ptr::null_mut(),
                    )
                };
            } else {
                if self.fq.needs_wakeup() {
                    self.fq.wake();
                }
                // Until frames come or the daemon stops; the timeout only refreshes statistics.
                // While queues are merged, its watermark must stay fresh: wake sooner.
                let wait = if merge::MERGING.load(Relaxed) {
                    Duration::from_nanos(merge::IDLE_WAIT_MERGING_NS)
                } else {
                    IDLE_WAIT
                };
                stop::wait_readable([self.fd, stop.fd().as_raw_fd()], wait);
                empty_busy_polls = 0;
            }
        }
        if !self.packet.is_idle() {
            // The kernel puts all of a packet's descriptors in the ring at once: the rest of
            // this one is not coming.
            feed.bad_record();
            feed.publish();
        }
        self.refresh_kernel_stats(stats);
    }
}

/// Where a multi-buffer packet is put back together from its descriptors: one buffer per
/// worker, allocated once. Single-descriptor frames go straight from the UMEM to the hand-off.
struct Reassembly {
    buf: Box<[u8]>,
    state: Collect,
    /// Bytes of the packet kept in `buf` so far.
    kept: usize,
    /// Bytes of the packet seen so far (more than `kept` past [`REASSEMBLY_BYTES`]).
    seen: usize,
    /// From the first descriptor's metadata; `None` when it had none (counted).
    meta: Option<Stamp>,
}

/// What the XDP program's metadata says of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    /// CLOCK_MONOTONIC ns, as the program stamped it.
    ts: u64,
    orig_len: u32,
    /// Bytes to keep (the program leaves cutting a fragmented frame to user space).
    caplen: u32,
    /// The target slots the frame matched.
    matched: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Collect {
    /// The next descriptor starts a packet.
    Idle,
    /// A packet's first descriptors are in `buf`; more follow.
    Packet,
    /// A packet with an unusable descriptor (counted once): its remaining descriptors are
    /// given back unread.
    Skip,
}

impl Reassembly {
    fn new() -> Self {
        Reassembly {
            buf: vec![0u8; REASSEMBLY_BYTES].into_boxed_slice(),
            state: Collect::Idle,
            kept: 0,
            seen: 0,
            meta: None,
        }
    }

    fn is_idle(&self) -> bool {
        self.state == Collect::Idle
    }

    /// Takes one descriptor: `data` is its bytes (`None`: it pointed outside the UMEM), `meta`
    /// what the metadata in front of it says (read only for a packet's first descriptor; `None`
    /// if missing), `more` its XDP_PKT_CONTD flag.
    fn take(&mut self, feed: &mut Feed, data: Option<&[u8]>, meta: Option<Stamp>, more: bool) {
        match (self.state, data) {
            (Collect::Skip, _) => {}
            (_, None) => {
                feed.bad_record();
                self.state = Collect::Skip;
            }
            (Collect::Idle, Some(data)) if !more => {
                let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
                let (ts, orig_len, keep, matched) = stamp(feed, meta, len);
                // XDP runs on receive only.
                feed.push(ts, orig_len, DIRECTION_INBOUND, matched, &data[..keep]);
            }
            (Collect::Idle, Some(data)) => {
                self.meta = meta;
                (self.kept, self.seen) = (0, 0);
                self.append(data);
                self.state = Collect::Packet;
            }
            (Collect::Packet, Some(data)) => {
                self.append(data);
                if !more {
                    let len = u32::try_from(self.seen).unwrap_or(u32::MAX);
                    let (ts, orig_len, keep, matched) = stamp(feed, self.meta, len);
                    let data = &self.buf[..keep.min(self.kept)];
                    feed.push(ts, orig_len, DIRECTION_INBOUND, matched, data);
                }
            }
        }
        if !more {
            self.state = Collect::Idle;
        }
    }

    fn append(&mut self, data: &[u8]) {
        let n = data.len().min(self.buf.len() - self.kept);
        self.buf[self.kept..self.kept + n].copy_from_slice(&data[..n]);
        self.kept += n;
        self.seen += data.len();
    }
}

/// A record of a frame of `len` bytes read: its timestamp, original length, the bytes to keep
/// and its matched targets, from the metadata, or (counted) the time now, everything read and
/// no target when there was none.
fn stamp(feed: &mut Feed, meta: Option<Stamp>, len: u32) -> (u64, u32, usize, u64) {
    match meta {
        Some(m) => (m.ts, m.orig_len.max(len), m.caplen.min(len) as usize, m.matched),
        None => {
            feed.bad_record();
            (monotonic_ns(), len, len as usize, 0)
        }
    }
}

/// Asks the CPU to start loading the cache line at `p`.
#[inline(always)]
fn prefetch(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: prefetching is a hint; it never faults, whatever the address.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU64;

    use super::*;
    use crate::handoff::{self, Consumer};

    fn feed() -> (Feed, Consumer) {
        let (producer, consumer) = handoff::channel(1 << 20);
        let feed =
            Feed::new(producer, Arc::new(AtomicU64::new(0)), Arc::new(QueueStats::default()));
        (feed, consumer)
    }

    /// (ts, orig_len, bytes) of every published record.
    fn records(c: &mut Consumer) -> Vec<(u64, u32, Vec<u8>)> {
        let mut out = Vec::new();
        while let Some(r) = c.peek() {
            out.push((r.ts_ns, r.orig_len, r.data.to_vec()));
            c.advance();
        }
        out
    }

    fn stamp_of(ts: u64, orig_len: u32, caplen: u32) -> Stamp {
        Stamp { ts, orig_len, caplen, matched: 0 }
    }

    /// The kernel's matched-slot mask reaches the writer's side of the hand-off, for a frame
    /// in one descriptor and for one in several (whose mask is in the first one's metadata).
    #[test]
    fn the_matched_mask_of_the_metadata_goes_with_the_frame() {
        let (mut feed, mut c) = feed();
        let mut r = Reassembly::new();
        let one = bytes(60, 1);
        let mask = |matched| Some(Stamp { matched, ..stamp_of(1, 60, 60) });
        r.take(&mut feed, Some(&one), mask(0b101), false);
        let big = bytes(9000, 2);
        let first = Some(Stamp { matched: 1 << 63, ..stamp_of(2, 9000, 9000) });
        r.take(&mut feed, Some(&big[..3840]), first, true);
        r.take(&mut feed, Some(&big[3840..]), mask(0b10), false);
        r.take(&mut feed, Some(&one), None, false);
        feed.publish();
        let mut masks = Vec::new();
        while let Some(rec) = c.peek() {
            masks.push(rec.matched);
            c.advance();
        }
        assert_eq!(masks, vec![0b101, 1 << 63, 0], "no metadata: no target known");
    }

    #[test]
    fn a_fragmented_frame_sent_whole_is_cut_to_its_caplen() {
        let (mut feed, mut c) = feed();
        let mut r = Reassembly::new();
        let frame = bytes(9000, 9);
        r.take(&mut feed, Some(&frame[..3840]), Some(stamp_of(3, 9000, 128)), true);
        r.take(&mut feed, Some(&frame[3840..7680]), None, true);
        r.take(&mut feed, Some(&frame[7680..]), None, false);
        let small = bytes(3000, 10);
        r.take(&mut feed, Some(&small), Some(stamp_of(4, 3000, 100)), false);
        feed.publish();
        assert_eq!(
            records(&mut c),
            vec![(3, 9000, frame[..128].to_vec()), (4, 3000, small[..100].to_vec())]
        );
    }

    fn bytes(len: usize, seed: u8) -> Vec<u8> {
        (0..len).map(|i| (i % 251).to_le_bytes()[0] ^ seed).collect()
    }

    #[test]
    fn a_single_descriptor_goes_straight_through() {
        let (mut feed, mut c) = feed();
        let mut r = Reassembly::new();
        let frame = bytes(1514, 1);
        r.take(&mut feed, Some(&frame), Some(stamp_of(7, 1514, 1514)), false);
        feed.publish();
        assert_eq!(records(&mut c), vec![(7, 1514, frame)]);
        assert!(r.is_idle());
        assert_eq!(feed.stats.bad_meta.load(Relaxed), 0);
    }

    #[test]
    fn descriptors_of_one_packet_make_one_record_across_batches() {
        let (mut feed, mut c) = feed();
        let mut r = Reassembly::new();
        let frame = bytes(9000, 2);
        let (a, rest) = frame.split_at(3840);
        let (b, tail) = rest.split_at(3840);
        r.take(&mut feed, Some(a), Some(stamp_of(42, 9000, 9000)), true);
        // The batch ends here: nothing is published yet, the packet waits.
        feed.publish();
        assert!(records(&mut c).is_empty());
        assert!(!r.is_idle());
        r.take(&mut feed, Some(b), None, true);
        r.take(&mut feed, Some(tail), None, false);
        let next = bytes(60, 3);
        r.take(&mut feed, Some(&next), Some(stamp_of(43, 60, 60)), false);
        feed.publish();
        assert_eq!(records(&mut c), vec![(42, 9000, frame), (43, 60, next)]);
        assert_eq!(feed.stats.bad_meta.load(Relaxed), 0);
    }

    #[test]
    fn a_sliced_packet_keeps_its_original_length() {
        let (mut feed, mut c) = feed();
        let mut r = Reassembly::new();
        let frame = bytes(5000, 4);
        r.take(&mut feed, Some(&frame[..3840]), Some(stamp_of(1, 9000, 5000)), true);
        r.take(&mut feed, Some(&frame[3840..]), None, false);
        feed.publish();
        assert_eq!(records(&mut c), vec![(1, 9000, frame)]);
    }

    #[test]
    fn a_descriptor_outside_the_umem_drops_its_packet_counted() {
        let (mut feed, mut c) = feed();
        let mut r = Reassembly::new();
        let part = bytes(3840, 5);
        r.take(&mut feed, Some(&part), Some(stamp_of(1, 9000, 9000)), true);
        r.take(&mut feed, None, None, true);
        // The rest of the broken packet is given back unread, even a piece that looks whole.
        r.take(&mut feed, Some(&part), None, false);
        assert!(r.is_idle());
        let next = bytes(100, 6);
        r.take(&mut feed, Some(&next), Some(stamp_of(2, 100, 100)), false);
        feed.publish();
        assert_eq!(records(&mut c), vec![(2, 100, next)]);
        assert_eq!(feed.stats.bad_meta.load(Relaxed), 1);
    }

    #[test]
    fn a_packet_without_metadata_is_kept_and_counted() {
        let (mut feed, mut c) = feed();
        let mut r = Reassembly::new();
        let frame = bytes(4000, 7);
        r.take(&mut feed, Some(&frame[..3840]), None, true);
        r.take(&mut feed, Some(&frame[3840..]), None, false);
        feed.publish();
        let got = records(&mut c);
        assert_eq!(got.len(), 1);
        assert_eq!((got[0].1, &got[0].2), (4000, &frame));
        assert_eq!(feed.stats.bad_meta.load(Relaxed), 1);
    }

    #[test]
    fn a_packet_longer_than_the_buffer_is_cut_with_its_length() {
        let (mut feed, mut c) = feed();
        let mut r = Reassembly::new();
        let piece = bytes(3840, 8);
        let pieces = REASSEMBLY_BYTES / 3840 + 2;
        for i in 0..pieces {
            let meta = (i == 0).then_some(stamp_of(5, 0, u32::MAX));
            r.take(&mut feed, Some(&piece), meta, i + 1 < pieces);
        }
        feed.publish();
        let got = records(&mut c);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].1 as usize, pieces * 3840);
        assert_eq!(got[0].2.len(), REASSEMBLY_BYTES);
        assert_eq!(&got[0].2[..3840], &piece[..]);
    }
}
