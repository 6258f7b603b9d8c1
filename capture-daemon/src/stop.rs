//! Stopping without polling: a flag plus an eventfd that threads can sleep on in poll(2).
//!
//! Threads that wait for work (an AF_XDP socket, signals) also wait on the stop fd, so they can
//! sleep for long stretches, costing no CPU when idle, and still stop at once.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// A one-way "stop now": once raised it stays raised, and its fd stays readable.
#[derive(Clone)]
pub struct Stop {
    inner: Arc<Inner>,
}

struct Inner {
    raised: AtomicBool,
    fd: OwnedFd,
}

impl Stop {
    pub fn new() -> io::Result<Self> {
        // SAFETY: plain eventfd call; the fd is owned right away.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fresh, valid fd.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Stop { inner: Arc::new(Inner { raised: AtomicBool::new(false), fd }) })
    }

    pub fn raise(&self) {
        self.inner.raised.store(true, Ordering::Release);
        let one = 1u64;
        // SAFETY: 8-byte write to our eventfd; it can only fail when the counter would overflow,
        // and then it is readable already.
        unsafe { libc::write(self.inner.fd.as_raw_fd(), (&raw const one).cast(), 8) };
    }

    pub fn is_raised(&self) -> bool {
        self.inner.raised.load(Ordering::Acquire)
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.inner.fd.as_fd()
    }
}

/// Sleeps in poll(2) until one of `fds` is readable or `timeout` passes. Returns the readiness
/// of each fd.
pub fn wait_readable<const N: usize>(fds: [RawFd; N], timeout: Duration) -> [bool; N] {
    let mut pfds = fds.map(|fd| libc::pollfd { fd, events: libc::POLLIN, revents: 0 });
    let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: N valid pollfd structs.
    unsafe { libc::poll(pfds.as_mut_ptr(), N as libc::nfds_t, ms) };
    pfds.map(|p| p.revents != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn a_raised_stop_wakes_a_sleeper_at_once_and_stays_raised() {
        let stop = Stop::new().unwrap();
        let other = stop.clone();
        let sleeper = std::thread::spawn(move || {
            let start = Instant::now();
            let [ready] = wait_readable([other.fd().as_raw_fd()], Duration::from_secs(30));
            (ready, start.elapsed())
        });
        std::thread::sleep(Duration::from_millis(50));
        assert!(!stop.is_raised());
        stop.raise();
        let (ready, slept) = sleeper.join().unwrap();
        assert!(ready && slept < Duration::from_secs(30));
        assert!(stop.is_raised());
        let [still] = wait_readable([stop.fd().as_raw_fd()], Duration::ZERO);
        assert!(still, "stays readable");
    }
}
