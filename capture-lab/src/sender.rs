//! Sending raw Ethernet frames from a veth end with an AF_PACKET socket.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

#[allow(clippy::cast_possible_truncation)] // AF_PACKET is 17.
const AF_PACKET_FAMILY: libc::sa_family_t = libc::AF_PACKET as libc::sa_family_t;
#[allow(clippy::cast_possible_truncation)] // 20 bytes.
const SOCKADDR_LL_LEN: libc::socklen_t = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
/// From linux/if_packet.h; stable uapi.
const PACKET_QDISC_BYPASS: libc::c_int = 20;
/// How long `send` keeps retrying a full queue before giving up.
const SEND_RETRY_BUDGET: Duration = Duration::from_secs(1);

/// AF_PACKET SOCK_RAW sender bound to one interface. Open it inside [`crate::NetNs::run`]:
/// the socket stays in the namespace it was opened in, and can be used from any thread afterwards.
#[derive(Debug)]
pub struct RawSender {
    fd: OwnedFd,
    ifindex: i32,
}

impl RawSender {
    /// Opens a send-only socket (protocol 0: the kernel delivers it nothing) bound to `ifname`
    /// as seen from the calling thread's network namespace.
    pub fn open(ifname: &str) -> Result<RawSender> {
        let cname = CString::new(ifname).with_context(|| format!("interface name {ifname:?}"))?;
        // SAFETY: cname is a valid NUL-terminated string.
        let index = unsafe { libc::if_nametoindex(cname.as_ptr()) };
        if index == 0 {
            return Err(io::Error::last_os_error()).with_context(|| {
                format!("looking up interface {ifname} in this thread's network namespace")
            });
        }
        let ifindex =
            i32::try_from(index).with_context(|| format!("ifindex {index} of {ifname}"))?;
        // SAFETY: plain syscall; the returned fd is checked and then owned.
        let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(io::Error::last_os_error())
                .context("creating an AF_PACKET SOCK_RAW socket");
        }
        // SAFETY: raw is a fresh fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let sender = RawSender { fd, ifindex };
        let addr = sender.sockaddr();
        // SAFETY: addr is a valid sockaddr_ll of the length passed.
        let rc = unsafe {
            libc::bind(
                sender.fd.as_raw_fd(),
                (&raw const addr).cast::<libc::sockaddr>(),
                SOCKADDR_LL_LEN,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error()).with_context(|| {
                format!("binding the AF_PACKET socket to {ifname} (ifindex {ifindex})")
            });
        }
        Ok(sender)
    }

    /// Sets PACKET_QDISC_BYPASS: frames go straight to the driver on TX queue
    /// (sending CPU mod queue count), so pinning the sending thread (see
    /// [`pin_current_thread`]) picks the veth RX queue the frames arrive on.
    pub fn with_qdisc_bypass(self) -> Result<RawSender> {
        let one: libc::c_int = 1;
        // SAFETY: valid fd, option value points to a c_int of the length passed.
        let rc = unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_PACKET,
                PACKET_QDISC_BYPASS,
                (&raw const one).cast::<libc::c_void>(),
                size_of::<libc::c_int>().try_into().context("c_int size")?,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error()).context("setting PACKET_QDISC_BYPASS");
        }
        Ok(self)
    }

    pub fn ifindex(&self) -> i32 {
        self.ifindex
    }

    /// Sends one frame (the complete Ethernet frame without FCS) with one sendto; a full
    /// queue (ENOBUFS/EAGAIN: the frame was dropped) is retried with backoff for up to 1 s.
    pub fn send(&self, frame: &[u8]) -> Result<()> {
        if frame.len() < 14 {
            bail!("a {}-byte frame is shorter than an Ethernet header", frame.len());
        }
        let addr = self.sockaddr();
        let deadline = Instant::now() + SEND_RETRY_BUDGET;
        let mut backoff = Duration::from_micros(50);
        loop {
            // SAFETY: frame and addr are valid for the lengths passed.
            let n = unsafe {
                libc::sendto(
                    self.fd.as_raw_fd(),
                    frame.as_ptr().cast::<libc::c_void>(),
                    frame.len(),
                    0,
                    (&raw const addr).cast::<libc::sockaddr>(),
                    SOCKADDR_LL_LEN,
                )
            };
            if n >= 0 {
                if n.unsigned_abs() != frame.len() {
                    bail!("sendto on ifindex {} sent {n} of {} bytes", self.ifindex, frame.len());
                }
                return Ok(());
            }
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EINTR) => {}
                Some(libc::ENOBUFS | libc::EAGAIN) if Instant::now() < deadline => {
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_millis(5));
                }
                _ => {
                    return Err(err).with_context(|| {
                        format!("sending a {}-byte frame on ifindex {}", frame.len(), self.ifindex)
                    });
                }
            }
        }
    }

    /// Sends all frames in order, pausing per `pace`; returns how many were sent
    /// (all of them, or an error naming the one that failed).
    pub fn send_all(&self, frames: &[Vec<u8>], pace: Pace) -> Result<u64> {
        let mut sent = 0u64;
        for (i, frame) in frames.iter().enumerate() {
            self.send(frame).with_context(|| format!("frame {i} of {}", frames.len()))?;
            sent += 1;
            if pace.burst > 0
                && (i + 1) % pace.burst == 0
                && i + 1 < frames.len()
                && !pace.pause.is_zero()
            {
                std::thread::sleep(pace.pause);
            }
        }
        Ok(sent)
    }

    /// A sender around any fd, for tests of code that fails before it sends.
    #[cfg(test)]
    pub(crate) fn from_fd(fd: OwnedFd, ifindex: i32) -> RawSender {
        RawSender { fd, ifindex }
    }

    pub(crate) fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.fd.as_raw_fd()
    }

    pub(crate) fn sockaddr(&self) -> libc::sockaddr_ll {
        // SAFETY: sockaddr_ll is plain data; all-zero is valid (protocol 0, no address).
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = AF_PACKET_FAMILY;
        addr.sll_ifindex = self.ifindex;
        addr
    }
}

/// Send `burst` frames, then sleep `pause`. `burst == 0` or a zero pause means no pausing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pace {
    pub burst: usize,
    pub pause: Duration,
}

impl Pace {
    /// Back-to-back sending; only safe when nothing downstream has a small ring.
    pub const UNPACED: Pace = Pace { burst: 0, pause: Duration::ZERO };
}

impl Default for Pace {
    /// 32 frames per 1 ms: veth's XDP ring holds 256 frames, and unpaced bursts overflow it
    /// before the capture side's NAPI gets to run.
    fn default() -> Pace {
        Pace { burst: 32, pause: Duration::from_millis(1) }
    }
}

/// Pins the calling thread (only it, not the process) to one CPU.
pub fn pin_current_thread(cpu: usize) -> Result<()> {
    // CPU_SET indexes a fixed-size bitmap: reject what it cannot hold instead of panicking.
    let max = usize::try_from(libc::CPU_SETSIZE).context("CPU_SETSIZE")?;
    if cpu >= max {
        bail!("CPU {cpu} is beyond CPU_SETSIZE ({max})");
    }
    // SAFETY: cpu_set_t is plain data; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: cpu < CPU_SETSIZE was checked above, so the bit is inside the set.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: pid 0 means the calling thread; set is valid for its size.
    let rc = unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &raw const set) };
    if rc != 0 {
        return Err(io::Error::last_os_error())
            .with_context(|| format!("pinning the current thread to CPU {cpu}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_pace() {
        assert_eq!(Pace::default(), Pace { burst: 32, pause: Duration::from_millis(1) });
    }

    #[test]
    fn pin_rejects_impossible_cpu() {
        assert!(pin_current_thread(usize::MAX).is_err());
    }

    #[test]
    fn pin_to_an_allowed_cpu() -> Result<()> {
        // Run on a throwaway thread so the test harness thread keeps its affinity.
        std::thread::spawn(|| -> Result<()> {
            // SAFETY: sched_getcpu has no preconditions.
            let cpu = unsafe { libc::sched_getcpu() };
            let cpu = usize::try_from(cpu).context("sched_getcpu failed")?;
            pin_current_thread(cpu)?;
            // SAFETY: as above.
            let now = unsafe { libc::sched_getcpu() };
            assert_eq!(usize::try_from(now).ok(), Some(cpu));
            Ok(())
        })
        .join()
        .map_err(|_| anyhow::anyhow!("pinning thread panicked"))?
    }
}
