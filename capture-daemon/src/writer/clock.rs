//! The writer's time. Records, watermarks, the merge window and every interval the writer keeps
//! (flush age, rotation) are CLOCK_MONOTONIC nanoseconds: the clock `bpf_ktime_get_ns` stamps
//! frames with, which never steps. Wall-clock time is what people read (packet timestamps, file
//! names), so the writer turns monotonic time into it once, as it writes, with one offset
//! (`CLOCK_REALTIME - CLOCK_MONOTONIC`) that it alone reads. A step of the wall clock then moves
//! the timestamps written after it, and nothing else: no queue is held back or reordered, and
//! all queues agree.

use crate::source::{monotonic_ns, realtime_ns};

/// How often the writer looks at the wall clock's offset.
pub const OFFSET_REFRESH_NS: u64 = 100_000_000;

/// Offset changes up to this are read jitter (the two clocks cannot be read at one instant),
/// not a step: the offset in use is kept, so timestamps do not wobble by a few ns at each
/// refresh. NTP slews both clocks alike, so only steps move the offset.
const OFFSET_JITTER_NS: u64 = 10_000;

/// Where the writer reads the time: the system's clocks, or a test's.
pub trait Clock: Send {
    /// CLOCK_MONOTONIC in ns.
    fn monotonic_ns(&self) -> u64;
    /// `CLOCK_REALTIME - CLOCK_MONOTONIC` in ns.
    fn wall_offset_ns(&self) -> i64;
}

/// The system's clocks.
pub struct SystemClock;

impl Clock for SystemClock {
    fn monotonic_ns(&self) -> u64 {
        monotonic_ns()
    }

    fn wall_offset_ns(&self) -> i64 {
        // The realtime read between two monotonic ones: the midpoint is its monotonic time.
        let before = monotonic_ns();
        let real = realtime_ns();
        let after = monotonic_ns();
        let mono = before + (after - before) / 2;
        // Both below 2^63 ns (year 2262).
        real.cast_signed() - mono.cast_signed()
    }
}

/// One moment as the writer sees it: monotonic time, and the offset to wall-clock time then.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Now {
    pub mono_ns: u64,
    pub offset_ns: i64,
}

impl Now {
    /// A moment read straight from the system clocks (start-up, tools).
    pub fn system() -> Now {
        let clock = SystemClock;
        Now { mono_ns: clock.monotonic_ns(), offset_ns: clock.wall_offset_ns() }
    }

    /// Wall-clock ns of this moment.
    pub fn wall_ns(self) -> u64 {
        self.to_wall(self.mono_ns)
    }

    /// Wall-clock ns of monotonic time `mono_ns`, with this moment's offset.
    #[inline]
    pub fn to_wall(self, mono_ns: u64) -> u64 {
        mono_ns.saturating_add_signed(self.offset_ns)
    }
}

/// The writer thread's clock: monotonic time read at each call, the offset every
/// [`OFFSET_REFRESH_NS`].
pub struct WriterClock {
    clock: Box<dyn Clock>,
    offset_ns: i64,
    read_at_ns: u64,
}

impl WriterClock {
    pub fn new(clock: Box<dyn Clock>) -> WriterClock {
        let read_at_ns = clock.monotonic_ns();
        let offset_ns = clock.wall_offset_ns();
        WriterClock { clock, offset_ns, read_at_ns }
    }

    pub fn now(&mut self) -> Now {
        let mono_ns = self.clock.monotonic_ns();
        if mono_ns.saturating_sub(self.read_at_ns) >= OFFSET_REFRESH_NS {
            let offset = self.clock.wall_offset_ns();
            if offset.abs_diff(self.offset_ns) > OFFSET_JITTER_NS {
                self.offset_ns = offset;
            }
            self.read_at_ns = mono_ns;
        }
        Now { mono_ns, offset_ns: self.offset_ns }
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

    /// A clock a test sets: monotonic time and the wall clock's offset.
    #[derive(Clone, Default)]
    pub struct TestClock {
        pub mono: Arc<AtomicU64>,
        pub offset: Arc<AtomicI64>,
    }

    impl Clock for TestClock {
        fn monotonic_ns(&self) -> u64 {
            self.mono.load(Relaxed)
        }
        fn wall_offset_ns(&self) -> i64 {
            self.offset.load(Relaxed)
        }
    }

    #[test]
    fn the_offset_is_read_every_refresh_and_jitter_is_ignored() {
        const S: u64 = 1_000_000_000;
        let t = TestClock::default();
        t.mono.store(10 * S, Relaxed);
        t.offset.store(5 * S as i64, Relaxed);
        let mut clock = WriterClock::new(Box::new(t.clone()));
        assert_eq!(clock.now(), Now { mono_ns: 10 * S, offset_ns: 5 * S as i64 });
        t.offset.store(-3 * S as i64, Relaxed);
        t.mono.store(10 * S + OFFSET_REFRESH_NS / 2, Relaxed);
        assert_eq!(clock.now().offset_ns, 5 * S as i64, "not read again within the interval");
        t.mono.store(10 * S + OFFSET_REFRESH_NS, Relaxed);
        let now = clock.now();
        assert_eq!(now.offset_ns, -3 * S as i64, "a step is taken at the next refresh");
        assert_eq!(now.wall_ns(), 7 * S + OFFSET_REFRESH_NS);
        t.offset.store(-3 * S as i64 + 500, Relaxed);
        t.mono.store(10 * S + 3 * OFFSET_REFRESH_NS, Relaxed);
        assert_eq!(clock.now().offset_ns, -3 * S as i64, "read jitter is not a step");
    }

    #[test]
    fn the_system_offset_is_wall_minus_monotonic() {
        let offset = SystemClock.wall_offset_ns();
        let now = Now { mono_ns: monotonic_ns(), offset_ns: offset };
        assert!(now.wall_ns().abs_diff(realtime_ns()) < 1_000_000_000);
    }
}
