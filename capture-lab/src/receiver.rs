//! An AF_PACKET receiver: what an interface's stack received, to prove that a capture took
//! nothing away.

use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};

use anyhow::{Result, ensure};

/// Frames received by one interface (not the ones it sent), kept by the kernel in a large
/// socket buffer until [`Receiver::drain`].
pub struct Receiver {
    fd: OwnedFd,
}

impl Receiver {
    /// Opens it on `ifname` of the calling thread's namespace (see [`crate::NetNs::run`]).
    pub fn open(ifname: &str) -> Result<Receiver> {
        let proto = u16::try_from(libc::ETH_P_ALL).unwrap_or(3).to_be();
        // SAFETY: plain socket call; owned right away.
        let fd = unsafe {
            libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, i32::from(proto))
        };
        ensure!(fd >= 0, "AF_PACKET socket: {}", std::io::Error::last_os_error());
        // SAFETY: fresh fd.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // Room for a whole demo's frames (root may exceed rmem_max), and none of our own sends.
        for (opt, level, value) in [
            (libc::SO_RCVBUFFORCE, libc::SOL_SOCKET, 256 << 20),
            (libc::PACKET_IGNORE_OUTGOING, libc::SOL_PACKET, 1),
        ] {
            let value: libc::c_int = value;
            // SAFETY: setsockopt with an int value.
            let rc = unsafe {
                libc::setsockopt(fd.as_raw_fd(), level, opt, (&raw const value).cast(), 4)
            };
            ensure!(rc == 0, "setsockopt {opt}: {}", std::io::Error::last_os_error());
        }
        let name = std::ffi::CString::new(ifname)?;
        // SAFETY: valid C string.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        ensure!(ifindex != 0, "no interface {ifname}");
        // SAFETY: an all-zero sockaddr_ll is valid; the fields that matter are set below.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = u16::try_from(libc::AF_PACKET).unwrap_or(17);
        sll.sll_protocol = proto;
        sll.sll_ifindex = i32::try_from(ifindex)?;
        // SAFETY: bind with a properly sized sockaddr_ll.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&raw const sll).cast(),
                libc::socklen_t::try_from(size_of::<libc::sockaddr_ll>())?,
            )
        };
        ensure!(rc == 0, "bind AF_PACKET to {ifname}: {}", std::io::Error::last_os_error());
        Ok(Receiver { fd })
    }

    /// Every frame received since it was opened (or last drained); does not wait.
    pub fn drain(&self) -> Vec<Vec<u8>> {
        let mut frames = Vec::new();
        let mut buf = vec![0u8; 65536];
        loop {
            // SAFETY: the buffer is valid for its length.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            let Ok(n) = usize::try_from(n) else { return frames };
            if n == 0 {
                return frames;
            }
            frames.push(buf[..n].to_vec());
        }
    }
}
