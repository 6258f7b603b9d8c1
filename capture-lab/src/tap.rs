//! A tap device with a "VM" behind it, the way QEMU/libvirt connect a guest: the host sees
//! interface `vnet0`, and the VM's NIC is a thread reading and writing the tap's fd. Frames
//! the host transmits on `vnet0` reach the VM; frames the VM writes arrive on `vnet0` as
//! received. A capture on `vnet0` therefore sees real guest traffic in both directions.
//!
//! The "VM" answers ARP for its address, ICMP echo requests and UDP (echoing the payload back
//! to the sender), which is enough for a host-side socket to talk to it.

use std::fs::{File, OpenOptions};
use std::io::{Read as _, Write as _};
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::NetNs;
use crate::frame::{ETHERTYPE_ARP, ETHERTYPE_IPV4, Frame, internet_checksum};
use crate::netns::check_ifname;
use crate::udp::SeqReport;

/// How long the NIC thread waits in poll before looking at its stop flag again.
const POLL_MS: libc::c_int = 20;
/// Upper bound on the NIC thread's life, in case the handle is leaked.
const MAX_LIFETIME: Duration = Duration::from_secs(600);
/// Frames kept per direction for [`TapVm::received_frames`] / [`TapVm::sent_frames`];
/// later ones are only counted.
pub const TAP_LOG_LIMIT: usize = 8192;

/// What the VM's NIC saw and did. `frames_in`: every frame the host sent it; `ignored`:
/// frames it did not answer (not for it, or not ARP/ICMP echo/UDP).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TapVmStats {
    pub frames_in: u64,
    pub arp_replies: u64,
    pub icmp_echo_replies: u64,
    /// UDP datagrams addressed to the VM, each echoed back.
    pub udp_echoed: u64,
    pub ignored: u64,
    /// Frames written to the tap: answers and [`TapVm::send_frame`].
    pub frames_out: u64,
}

#[derive(Default)]
struct Counters {
    frames_in: AtomicU64,
    arp_replies: AtomicU64,
    icmp_echo_replies: AtomicU64,
    udp_echoed: AtomicU64,
    ignored: AtomicU64,
    frames_out: AtomicU64,
}

#[derive(Default)]
struct Shared {
    stop: AtomicBool,
    counters: Counters,
    received: Mutex<Vec<Vec<u8>>>,
    sent: Mutex<Vec<Vec<u8>>>,
    udp: Mutex<SeqReport>,
    error: Mutex<Option<String>>,
}

/// A tap interface in a namespace plus the thread acting as the VM's NIC. Dropping it stops
/// the thread and closes the tap fd, which removes the interface.
pub struct TapVm {
    ifname: String,
    mac: [u8; 6],
    ip: Ipv4Addr,
    tap: Arc<File>,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for TapVm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TapVm")
            .field("ifname", &self.ifname)
            .field("mac", &crate::frame::format_mac(self.mac))
            .field("ip", &self.ip)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl TapVm {
    /// Creates tap `ifname` in `ns` (TUNSETIFF with IFF_TAP | IFF_NO_PI on /dev/net/tun,
    /// opened from a thread inside `ns` so the interface is created there; an existing
    /// persistent tap of that name is attached instead), sets it up and starts the VM,
    /// which answers as `vm_mac`/`vm_ip`. The host side gets no address: add one in the
    /// VM's subnet with [`NetNs::add_addr`] to talk to it.
    pub fn create(ns: &NetNs, ifname: &str, vm_mac: [u8; 6], vm_ip: Ipv4Addr) -> Result<TapVm> {
        check_ifname(ifname)?;
        let tap = ns
            .run(|| open_tap(ifname))
            .with_context(|| format!("creating tap {ifname} in {}", ns.name()))?;
        ns.set_up(ifname)?;
        let tap = Arc::new(tap);
        let shared = Arc::new(Shared::default());
        let nic =
            Nic { tap: Arc::clone(&tap), shared: Arc::clone(&shared), mac: vm_mac, ip: vm_ip };
        let thread = std::thread::Builder::new()
            .name(format!("tapvm-{ifname}"))
            .spawn(move || nic.run())
            .context("spawning the tap VM thread")?;
        Ok(TapVm {
            ifname: ifname.to_owned(),
            mac: vm_mac,
            ip: vm_ip,
            tap,
            shared,
            thread: Some(thread),
        })
    }

    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }

    /// Sends a frame from the VM: the host receives it on the tap interface.
    pub fn send_frame(&self, frame: &[u8]) -> Result<()> {
        write_frame(&self.tap, &self.shared, frame).with_context(|| {
            format!("sending a {}-byte frame from the VM on {}", frame.len(), self.ifname)
        })
    }

    pub fn stats(&self) -> TapVmStats {
        let c = &self.shared.counters;
        TapVmStats {
            frames_in: c.frames_in.load(Ordering::Relaxed),
            arp_replies: c.arp_replies.load(Ordering::Relaxed),
            icmp_echo_replies: c.icmp_echo_replies.load(Ordering::Relaxed),
            udp_echoed: c.udp_echoed.load(Ordering::Relaxed),
            ignored: c.ignored.load(Ordering::Relaxed),
            frames_out: c.frames_out.load(Ordering::Relaxed),
        }
    }

    /// Polls (at most `timeout`) until `done(stats)`; returns the last stats either way.
    pub fn wait_for(&self, timeout: Duration, done: impl Fn(&TapVmStats) -> bool) -> TapVmStats {
        let deadline = Instant::now() + timeout;
        loop {
            let stats = self.stats();
            if done(&stats) || Instant::now() >= deadline || self.thread_failed() {
                return stats;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The first [`TAP_LOG_LIMIT`] frames the host sent to the VM, as read from the tap.
    pub fn received_frames(&self) -> Vec<Vec<u8>> {
        lock(&self.shared.received).clone()
    }

    /// The first [`TAP_LOG_LIMIT`] frames the VM wrote (answers and [`TapVm::send_frame`]).
    pub fn sent_frames(&self) -> Vec<Vec<u8>> {
        lock(&self.shared.sent).clone()
    }

    /// Numbered ([`crate::seq_payload`]) UDP payloads the VM received and echoed.
    pub fn udp_report(&self) -> SeqReport {
        lock(&self.shared.udp).clone()
    }

    /// Why the NIC thread stopped early, if it did.
    pub fn error(&self) -> Option<String> {
        lock(&self.shared.error).clone()
    }

    /// Stops the VM; returns its final stats, or the error that stopped it earlier.
    pub fn stop(mut self) -> Result<TapVmStats> {
        self.join();
        match self.error() {
            Some(err) => bail!("tap VM on {} failed: {err}", self.ifname),
            None => Ok(self.stats()),
        }
    }

    fn thread_failed(&self) -> bool {
        self.thread.as_ref().is_none_or(JoinHandle::is_finished)
    }

    fn join(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            *lock(&self.shared.error) = Some("the NIC thread panicked".to_owned());
        }
    }
}

impl Drop for TapVm {
    fn drop(&mut self) {
        // The thread sees the flag within one poll; then the last fd closes and the
        // (non-persistent) interface disappears.
        self.join();
    }
}

/// The VM's NIC: owns nothing but shared handles, runs on its own thread.
struct Nic {
    tap: Arc<File>,
    shared: Arc<Shared>,
    mac: [u8; 6],
    ip: Ipv4Addr,
}

impl Nic {
    fn run(&self) {
        if let Err(err) = self.serve() {
            *lock(&self.shared.error) = Some(format!("{err:#}"));
        }
    }

    fn serve(&self) -> Result<()> {
        let end = Instant::now() + MAX_LIFETIME;
        let mut buf = vec![0u8; 65536];
        while !self.shared.stop.load(Ordering::Relaxed) && Instant::now() < end {
            let mut pfd =
                libc::pollfd { fd: self.tap.as_raw_fd(), events: libc::POLLIN, revents: 0 };
            // SAFETY: one valid pollfd.
            let rc = unsafe { libc::poll(&raw mut pfd, 1, POLL_MS) };
            if rc < 0 {
                let err = std::io::Error::last_os_error();
                if err.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(err).context("poll on the tap fd");
            }
            if rc == 0 || pfd.revents & libc::POLLIN == 0 {
                if pfd.revents & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0 {
                    bail!("tap fd reported poll events {:#x}", pfd.revents);
                }
                continue;
            }
            let n = match (&*self.tap).read(&mut buf) {
                Ok(n) => n,
                Err(err)
                    if matches!(
                        err.kind(),
                        std::io::ErrorKind::Interrupted | std::io::ErrorKind::WouldBlock
                    ) =>
                {
                    continue;
                }
                Err(err) => return Err(err).context("reading the tap fd"),
            };
            let frame = &buf[..n];
            self.shared.counters.frames_in.fetch_add(1, Ordering::Relaxed);
            log_frame(&self.shared.received, frame);
            match self.answer(frame) {
                Some((reply, kind)) => {
                    write_frame(&self.tap, &self.shared, &reply)?;
                    let c = &self.shared.counters;
                    let counter = match kind {
                        Answer::Arp => &c.arp_replies,
                        Answer::Ping => &c.icmp_echo_replies,
                        Answer::Udp => &c.udp_echoed,
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                }
                None => {
                    self.shared.counters.ignored.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        Ok(())
    }

    /// The VM's answer to `frame`, and what kind it is; None: not for the VM, or nothing a
    /// NIC plus a tiny stack would answer.
    fn answer(&self, frame: &[u8]) -> Option<(Vec<u8>, Answer)> {
        let dst: [u8; 6] = frame.get(0..6)?.try_into().ok()?;
        let src: [u8; 6] = frame.get(6..12)?.try_into().ok()?;
        let ethertype = be16(frame, 12)?;
        let body = frame.get(14..)?;
        match ethertype {
            ETHERTYPE_ARP => {
                let (sender_mac, sender_ip) = arp_request_for(body, self.ip.octets())?;
                let reply = Frame::ethernet(sender_mac, self.mac).arp_reply(
                    self.mac,
                    self.ip.octets(),
                    sender_mac,
                    sender_ip,
                );
                Some((reply, Answer::Arp))
            }
            ETHERTYPE_IPV4 if dst == self.mac => self.answer_ipv4(src, body),
            _ => None,
        }
    }

    fn answer_ipv4(&self, peer_mac: [u8; 6], ip: &[u8]) -> Option<(Vec<u8>, Answer)> {
        let packet = Ipv4::parse(ip)?;
        if packet.dst != self.ip.octets() {
            return None;
        }
        let reply = Frame::ethernet(peer_mac, self.mac);
        let l4 = packet.payload;
        match packet.proto {
            IPPROTO_UDP => {
                let sport = be16(l4, 0)?;
                let dport = be16(l4, 2)?;
                let len = usize::from(be16(l4, 4)?);
                let payload = l4.get(8..len)?;
                lock(&self.shared.udp).record(payload);
                let frame = reply.ipv4_udp(self.ip.octets(), packet.src, dport, sport, payload);
                Some((frame, Answer::Udp))
            }
            IPPROTO_ICMP
                if l4.first() == Some(&ICMP_ECHO_REQUEST) && internet_checksum(l4) == 0 =>
            {
                let id = be16(l4, 4)?;
                let seq = be16(l4, 6)?;
                let frame =
                    reply.icmp_echo_reply(self.ip.octets(), packet.src, id, seq, l4.get(8..)?);
                Some((frame, Answer::Ping))
            }
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Arp,
    Ping,
    Udp,
}

const IPPROTO_ICMP: u8 = 1;
const IPPROTO_UDP: u8 = 17;
const ICMP_ECHO_REQUEST: u8 = 8;

/// An unfragmented IPv4 packet with a valid header checksum; `payload` ends at total length
/// (a short frame's Ethernet padding is cut off).
struct Ipv4<'a> {
    proto: u8,
    src: [u8; 4],
    dst: [u8; 4],
    payload: &'a [u8],
}

impl<'a> Ipv4<'a> {
    fn parse(ip: &'a [u8]) -> Option<Ipv4<'a>> {
        let first = *ip.first()?;
        let header_len = usize::from(first & 0x0f) * 4;
        if first >> 4 != 4 || header_len < 20 {
            return None;
        }
        let total = usize::from(be16(ip, 2)?);
        let header = ip.get(..header_len)?;
        // Fragments (MF set or an offset) would need reassembly: not answered.
        if total < header_len || be16(ip, 6)? & 0x3fff != 0 || internet_checksum(header) != 0 {
            return None;
        }
        Some(Ipv4 {
            proto: ip[9],
            src: ip.get(12..16)?.try_into().ok()?,
            dst: ip.get(16..20)?.try_into().ok()?,
            payload: ip.get(header_len..total)?,
        })
    }
}

/// Sender MAC and IP of an Ethernet/IPv4 ARP request asking for `ip`.
fn arp_request_for(arp: &[u8], ip: [u8; 4]) -> Option<([u8; 6], [u8; 4])> {
    let fixed = arp.get(..8)?;
    if fixed != [0, 1, 0x08, 0x00, 6, 4, 0, 1] || arp.get(24..28)? != ip {
        return None;
    }
    Some((arp.get(8..14)?.try_into().ok()?, arp.get(14..18)?.try_into().ok()?))
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

/// One write is one frame on a tap (IFF_NO_PI: the bytes are the Ethernet frame).
fn write_frame(tap: &File, shared: &Shared, frame: &[u8]) -> Result<()> {
    if frame.len() < 14 {
        bail!("a {}-byte frame is shorter than an Ethernet header", frame.len());
    }
    let n = (&*tap).write(frame).context("writing to the tap fd")?;
    if n != frame.len() {
        bail!("the tap took {n} of {} bytes", frame.len());
    }
    shared.counters.frames_out.fetch_add(1, Ordering::Relaxed);
    log_frame(&shared.sent, frame);
    Ok(())
}

fn log_frame(log: &Mutex<Vec<Vec<u8>>>, frame: &[u8]) {
    let mut log = lock(log);
    if log.len() < TAP_LOG_LIMIT {
        log.push(frame.to_vec());
    }
}

/// The data behind these locks stays consistent even if a holder panicked.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Opens /dev/net/tun and attaches it to tap `ifname` (created in the calling thread's
/// namespace if it does not exist).
fn open_tap(ifname: &str) -> Result<File> {
    let tun = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .context("opening /dev/net/tun (is the tun module loaded?)")?;
    // SAFETY: ifreq is plain data; all-zero is a valid (empty) request.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, &src) in req.ifr_name.iter_mut().zip(ifname.as_bytes()) {
        *dst = libc::c_char::from_ne_bytes([src]);
    }
    let flags = i16::try_from(libc::IFF_TAP | libc::IFF_NO_PI).context("tap flags")?;
    req.ifr_ifru.ifru_flags = flags;
    // SAFETY: TUNSETIFF reads and writes one ifreq, which req is; the fd is valid.
    let rc = unsafe { libc::ioctl(tun.as_raw_fd(), libc::TUNSETIFF, &raw mut req) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("TUNSETIFF {ifname} (IFF_TAP | IFF_NO_PI)"));
    }
    Ok(tun)
}

#[cfg(test)]
mod tests {
    use super::*;

    const VM_MAC: [u8; 6] = [0x52, 0x54, 0, 0, 0x09, 0x02];
    const HOST_MAC: [u8; 6] = [0xfe, 0x54, 0, 0, 0x09, 0x01];
    const VM_IP: [u8; 4] = [10, 0, 9, 2];
    const HOST_IP: [u8; 4] = [10, 0, 9, 1];

    /// A NIC without a thread or a tap, to test the answers alone.
    fn nic() -> Result<Nic> {
        let tap = Arc::new(File::open("/dev/null")?);
        Ok(Nic { tap, shared: Arc::new(Shared::default()), mac: VM_MAC, ip: Ipv4Addr::from(VM_IP) })
    }

    #[test]
    fn answers_arp_for_its_address_only() -> Result<()> {
        let nic = nic()?;
        let request = Frame::ethernet([0xff; 6], HOST_MAC).arp_request(HOST_MAC, HOST_IP, VM_IP);
        let (reply, _) = nic.answer(&request).expect("an ARP reply");
        assert_eq!(
            reply,
            Frame::ethernet(HOST_MAC, VM_MAC).arp_reply(VM_MAC, VM_IP, HOST_MAC, HOST_IP)
        );
        let other =
            Frame::ethernet([0xff; 6], HOST_MAC).arp_request(HOST_MAC, HOST_IP, [10, 0, 9, 3]);
        assert!(nic.answer(&other).is_none());
        Ok(())
    }

    #[test]
    fn echoes_udp_with_swapped_addresses() -> Result<()> {
        let nic = nic()?;
        let payload = crate::seq_payload(5, 100);
        let request =
            Frame::ethernet(VM_MAC, HOST_MAC).ipv4_udp(HOST_IP, VM_IP, 40000, 7, &payload);
        let (reply, _) = nic.answer(&request).expect("a UDP echo");
        assert_eq!(
            reply,
            Frame::ethernet(HOST_MAC, VM_MAC).ipv4_udp(VM_IP, HOST_IP, 7, 40000, &payload)
        );
        assert_eq!(lock(&nic.shared.udp).received.iter().copied().collect::<Vec<_>>(), [5]);
        // Short payloads: the Ethernet padding must not be echoed.
        let request = Frame::ethernet(VM_MAC, HOST_MAC).ipv4_udp(HOST_IP, VM_IP, 1, 2, b"hi");
        let (reply, _) = nic.answer(&request).expect("a UDP echo");
        assert_eq!(reply, Frame::ethernet(HOST_MAC, VM_MAC).ipv4_udp(VM_IP, HOST_IP, 2, 1, b"hi"));
        // Not for this VM: another MAC, another IP, a bad header checksum.
        let other_mac = Frame::ethernet(HOST_MAC, HOST_MAC).ipv4_udp(HOST_IP, VM_IP, 1, 2, b"x");
        assert!(nic.answer(&other_mac).is_none());
        let other_ip =
            Frame::ethernet(VM_MAC, HOST_MAC).ipv4_udp(HOST_IP, [10, 0, 9, 3], 1, 2, b"x");
        assert!(nic.answer(&other_ip).is_none());
        let mut bad = request.clone();
        bad[14 + 8] ^= 1; // TTL changed, checksum not updated
        assert!(nic.answer(&bad).is_none());
        Ok(())
    }

    #[test]
    fn answers_ping() -> Result<()> {
        let nic = nic()?;
        let request = Frame::ethernet(VM_MAC, HOST_MAC).icmp_echo(HOST_IP, VM_IP, 9, 1, &[1; 56]);
        let (reply, _) = nic.answer(&request).expect("an echo reply");
        assert_eq!(
            reply,
            Frame::ethernet(HOST_MAC, VM_MAC).icmp_echo_reply(VM_IP, HOST_IP, 9, 1, &[1; 56])
        );
        let not_request =
            Frame::ethernet(VM_MAC, HOST_MAC).icmp_echo_reply(HOST_IP, VM_IP, 9, 1, &[1; 56]);
        assert!(nic.answer(&not_request).is_none());
        Ok(())
    }
}
