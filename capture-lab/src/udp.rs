//! UDP through the kernel's stack between namespaces: numbered datagrams, a collector and
//! an echo responder, so a test can prove that every datagram still arrives at both ends
//! while a capture is attached.
//!
//! A socket belongs to the namespace it was created in, whatever thread uses it later:
//! [`UdpPeer::bind`] creates it on a thread inside the namespace ([`NetNs::run`]) and hands
//! it back. Every wait is bounded and every thread stops by itself.

use std::collections::BTreeSet;
use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::ops::Range;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::{NetNs, Pace};

/// Sequence number (u32) and the payload's own length (u32), both big-endian, start every
/// numbered payload: a receiver can tell a truncated or padded datagram from a whole one.
pub const SEQ_HEADER_LEN: usize = 8;
/// Largest UDP payload over IPv4 (65535 - 20 - 8).
pub const MAX_UDP_PAYLOAD: usize = 65507;
/// How long a blocking receive waits before looking at its deadline or stop flag again.
const POLL: Duration = Duration::from_millis(20);
/// Upper bound on an [`EchoResponder`]'s life, in case its handle is leaked.
const ECHO_MAX_LIFETIME: Duration = Duration::from_secs(600);
/// Large enough for a few hundred jumbo datagrams, so a burst is not lost while the
/// receiving thread is descheduled.
const RCVBUF: libc::c_int = 16 << 20;

/// A numbered payload of exactly `len` bytes: [`SEQ_HEADER_LEN`] bytes of header, then a
/// pattern that depends on `seq` and the offset (so corruption is detected too).
/// Panics unless `SEQ_HEADER_LEN <= len <= MAX_UDP_PAYLOAD` (a bug in the caller).
pub fn seq_payload(seq: u32, len: usize) -> Vec<u8> {
    assert!(
        (SEQ_HEADER_LEN..=MAX_UDP_PAYLOAD).contains(&len),
        "a numbered payload has {SEQ_HEADER_LEN}..={MAX_UDP_PAYLOAD} bytes, not {len}"
    );
    let declared = u32::try_from(len).expect("at most 65507");
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(&declared.to_be_bytes());
    out.extend((SEQ_HEADER_LEN..len).map(|i| pattern_byte(seq, i)));
    out
}

/// The sequence number of a whole, intact [`seq_payload`]; None for anything else.
pub fn parse_seq_payload(payload: &[u8]) -> Option<u32> {
    let header: [u8; SEQ_HEADER_LEN] = payload.get(..SEQ_HEADER_LEN)?.try_into().ok()?;
    let [s0, s1, s2, s3, l0, l1, l2, l3] = header;
    let seq = u32::from_be_bytes([s0, s1, s2, s3]);
    let declared = u32::from_be_bytes([l0, l1, l2, l3]);
    if usize::try_from(declared).ok() != Some(payload.len()) {
        return None;
    }
    let intact =
        payload.iter().enumerate().skip(SEQ_HEADER_LEN).all(|(i, &b)| b == pattern_byte(seq, i));
    intact.then_some(seq)
}

fn pattern_byte(seq: u32, offset: usize) -> u8 {
    let [s, ..] = seq.to_le_bytes();
    let [o, ..] = offset.to_le_bytes();
    s.wrapping_mul(7).wrapping_add(o) ^ 0xa5
}

/// What a receiver got: the distinct sequence numbers, plus everything that was not one
/// new, whole numbered payload.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeqReport {
    pub received: BTreeSet<u32>,
    /// Every datagram, good or not.
    pub datagrams: u64,
    pub duplicates: u64,
    /// Not a whole [`seq_payload`]: wrong length, corrupted, or foreign.
    pub malformed: u64,
}

impl SeqReport {
    /// The numbers in `0..count` that did not arrive.
    pub fn missing(&self, count: u32) -> Vec<u32> {
        (0..count).filter(|seq| !self.received.contains(seq)).collect()
    }

    /// Exactly `0..count`, each once, and nothing else.
    pub fn is_complete(&self, count: u32) -> bool {
        self.duplicates == 0
            && self.malformed == 0
            && self.received.len() == usize::try_from(count).unwrap_or(usize::MAX)
            && self.received.last().is_none_or(|&last| u64::from(last) + 1 == u64::from(count))
    }

    /// Counts one datagram; returns its number if it is a new one.
    pub(crate) fn record(&mut self, payload: &[u8]) -> Option<u32> {
        self.datagrams += 1;
        match parse_seq_payload(payload) {
            Some(seq) if self.received.insert(seq) => Some(seq),
            Some(_) => {
                self.duplicates += 1;
                None
            }
            None => {
                self.malformed += 1;
                None
            }
        }
    }
}

/// A UDP socket bound inside a namespace, with a receive buffer big enough for bursts.
#[derive(Debug)]
pub struct UdpPeer {
    socket: UdpSocket,
    local: SocketAddr,
    netns: String,
}

impl UdpPeer {
    /// Binds `addr` (e.g. `(Ipv4Addr::new(10, 0, 0, 2), 5000)`; port 0 picks one) on a thread
    /// inside `ns`; the address must already be on one of its interfaces. Takes a resolved
    /// address on purpose: a host name would be looked up by the host's resolver.
    pub fn bind(ns: &NetNs, addr: impl Into<SocketAddr>) -> Result<UdpPeer> {
        let addr = addr.into();
        let socket = ns.run(|| {
            UdpSocket::bind(addr).with_context(|| format!("binding UDP {addr} in {}", ns.name()))
        })?;
        set_rcvbuf(&socket);
        let local = socket.local_addr().context("local address of a bound UDP socket")?;
        Ok(UdpPeer { socket, local, netns: ns.name().to_owned() })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The std socket (it stays in its namespace), for anything the helpers do not cover.
    pub fn socket(&self) -> &UdpSocket {
        &self.socket
    }

    /// Sends one [`seq_payload`] of `payload_len` bytes to `to` for each number in `seqs`,
    /// pausing per `pace`; returns how many were sent.
    pub fn send_numbered(
        &self,
        to: SocketAddr,
        seqs: Range<u32>,
        payload_len: usize,
        pace: Pace,
    ) -> Result<u64> {
        check_payload_len(payload_len)?;
        let mut sent = 0u64;
        for (i, seq) in seqs.enumerate() {
            let payload = seq_payload(seq, payload_len);
            let n = self.socket.send_to(&payload, to).with_context(|| {
                format!("sending datagram {seq} from {} to {to} in {}", self.local, self.netns)
            })?;
            if n != payload.len() {
                bail!("sent {n} of {} bytes of datagram {seq} to {to}", payload.len());
            }
            sent += 1;
            if pace.burst > 0 && (i + 1) % pace.burst == 0 && !pace.pause.is_zero() {
                std::thread::sleep(pace.pause);
            }
        }
        Ok(sent)
    }

    /// Collects numbered datagrams until all of `0..count` arrived or `timeout` passed;
    /// missing ones show in the report (this is not an error).
    pub fn recv_numbered(&self, count: u32, timeout: Duration) -> Result<SeqReport> {
        self.collect(count, Instant::now() + timeout, &AtomicBool::new(false))
    }

    /// Sends `0..count` to `to` (where an echo is expected, e.g. an [`EchoResponder`] or a
    /// [`crate::TapVm`]) while collecting the answers on another thread; returns what came
    /// back within `timeout` of the start.
    pub fn exchange(
        &self,
        to: SocketAddr,
        count: u32,
        payload_len: usize,
        pace: Pace,
        timeout: Duration,
    ) -> Result<SeqReport> {
        check_payload_len(payload_len)?;
        let deadline = Instant::now() + timeout;
        let abort = AtomicBool::new(false);
        std::thread::scope(|scope| {
            let collector = scope.spawn(|| self.collect(count, deadline, &abort));
            let sent = self.send_numbered(to, 0..count, payload_len, pace);
            if sent.is_err() {
                abort.store(true, Ordering::Relaxed);
            }
            let report = match collector.join() {
                Ok(report) => report,
                Err(panic) => std::panic::resume_unwind(panic),
            };
            sent?;
            report
        })
    }

    /// Turns this socket into an echo responder: every datagram is sent back to its sender
    /// unchanged, on a thread that runs until the handle is stopped or dropped.
    pub fn spawn_echo(self) -> Result<EchoResponder> {
        let stop = Arc::new(AtomicBool::new(false));
        let echoed = Arc::new(AtomicU64::new(0));
        let local = self.local;
        let thread = std::thread::Builder::new()
            .name(format!("udp-echo-{}", local.port()))
            .spawn({
                let (stop, echoed) = (Arc::clone(&stop), Arc::clone(&echoed));
                move || self.echo_loop(&stop, &echoed)
            })
            .context("spawning a UDP echo thread")?;
        Ok(EchoResponder { local, stop, echoed, thread: Some(thread) })
    }

    fn echo_loop(&self, stop: &AtomicBool, echoed: &AtomicU64) -> Result<SeqReport> {
        self.socket.set_read_timeout(Some(POLL)).context("setting a read timeout")?;
        let end = Instant::now() + ECHO_MAX_LIFETIME;
        let mut report = SeqReport::default();
        let mut buf = vec![0u8; 65536];
        while !stop.load(Ordering::Relaxed) && Instant::now() < end {
            let (n, from) = match self.socket.recv_from(&mut buf) {
                Ok(got) => got,
                Err(err) if is_timeout(&err) => continue,
                Err(err) => {
                    return Err(err).with_context(|| format!("echo on {} receiving", self.local));
                }
            };
            report.record(&buf[..n]);
            self.socket
                .send_to(&buf[..n], from)
                .with_context(|| format!("echo on {} answering {from}", self.local))?;
            echoed.fetch_add(1, Ordering::Relaxed);
        }
        Ok(report)
    }

    fn collect(&self, count: u32, deadline: Instant, abort: &AtomicBool) -> Result<SeqReport> {
        let mut report = SeqReport::default();
        let mut buf = vec![0u8; 65536];
        let wanted = usize::try_from(count).unwrap_or(usize::MAX);
        let mut in_range = 0usize;
        while in_range < wanted && !abort.load(Ordering::Relaxed) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            self.socket.set_read_timeout(Some(left.min(POLL))).context("setting a read timeout")?;
            match self.socket.recv_from(&mut buf) {
                Ok((n, _)) => {
                    if report.record(&buf[..n]).is_some_and(|seq| seq < count) {
                        in_range += 1;
                    }
                }
                Err(err) if is_timeout(&err) => {}
                Err(err) => {
                    return Err(err)
                        .with_context(|| format!("receiving on {} in {}", self.local, self.netns));
                }
            }
        }
        Ok(report)
    }
}

/// A thread echoing datagrams back to their senders ([`UdpPeer::spawn_echo`]). Stops on
/// [`EchoResponder::stop`], on drop, or after 10 minutes at the latest.
#[derive(Debug)]
pub struct EchoResponder {
    local: SocketAddr,
    stop: Arc<AtomicBool>,
    echoed: Arc<AtomicU64>,
    thread: Option<JoinHandle<Result<SeqReport>>>,
}

impl EchoResponder {
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Datagrams echoed so far.
    pub fn echoed(&self) -> u64 {
        self.echoed.load(Ordering::Relaxed)
    }

    /// Waits (at most `timeout`) until at least `n` datagrams were echoed; returns the count.
    pub fn wait_echoed(&self, n: u64, timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        while self.echoed() < n && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        self.echoed()
    }

    /// Stops the thread and returns what it received (an error if it failed).
    pub fn stop(mut self) -> Result<SeqReport> {
        self.join().unwrap_or_else(|| bail!("echo thread on {} already joined", self.local))
    }

    fn join(&mut self) -> Option<Result<SeqReport>> {
        self.stop.store(true, Ordering::Relaxed);
        let thread = self.thread.take()?;
        Some(match thread.join() {
            Ok(result) => result,
            Err(_) => Err(anyhow::anyhow!("echo thread on {} panicked", self.local)),
        })
    }
}

impl Drop for EchoResponder {
    fn drop(&mut self) {
        // The thread notices within one POLL; an error it hit can only be dropped here.
        let _ = self.join();
    }
}

fn check_payload_len(len: usize) -> Result<()> {
    if !(SEQ_HEADER_LEN..=MAX_UDP_PAYLOAD).contains(&len) {
        bail!("numbered payloads have {SEQ_HEADER_LEN}..={MAX_UDP_PAYLOAD} bytes, not {len}");
    }
    Ok(())
}

/// A blocking receive that hit its read timeout reports WouldBlock (or TimedOut).
fn is_timeout(err: &std::io::Error) -> bool {
    matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted)
}

/// Best effort: SO_RCVBUFFORCE needs CAP_NET_ADMIN (these tests are root); without it the
/// kernel's default buffer is kept, which is enough for paced small datagrams.
fn set_rcvbuf(socket: &UdpSocket) {
    let value = RCVBUF;
    // SAFETY: setsockopt with a c_int of the length passed, on a valid fd.
    let _ = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&raw const value).cast::<libc::c_void>(),
            libc::socklen_t::try_from(size_of::<libc::c_int>()).unwrap_or(4),
        )
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seq_payload_round_trips_and_detects_damage() {
        for len in [SEQ_HEADER_LEN, 9, 100, 1472, 8972, MAX_UDP_PAYLOAD] {
            let p = seq_payload(77, len);
            assert_eq!(p.len(), len);
            assert_eq!(parse_seq_payload(&p), Some(77), "len {len}");
        }
        let p = seq_payload(3, 1000);
        assert_eq!(parse_seq_payload(&p[..999]), None, "truncated");
        let mut padded = p.clone();
        padded.push(0);
        assert_eq!(parse_seq_payload(&padded), None, "padded");
        let mut flipped = p.clone();
        flipped[500] ^= 1;
        assert_eq!(parse_seq_payload(&flipped), None, "corrupted");
        assert_eq!(parse_seq_payload(&[]), None);
        assert_ne!(seq_payload(1, 64)[8..], seq_payload(2, 64)[8..], "pattern depends on seq");
    }

    #[test]
    #[should_panic(expected = "numbered payload")]
    fn seq_payload_rejects_short() {
        let _ = seq_payload(0, 7);
    }

    #[test]
    fn report_counts() {
        let mut r = SeqReport::default();
        for seq in [0, 1, 1, 2] {
            r.record(&seq_payload(seq, 20));
        }
        r.record(b"junk");
        assert_eq!(r.datagrams, 5);
        assert_eq!(r.duplicates, 1);
        assert_eq!(r.malformed, 1);
        assert_eq!(r.missing(4), [3]);
        assert!(!r.is_complete(3), "a duplicate and junk");
        let mut clean = SeqReport::default();
        for seq in 0..3 {
            clean.record(&seq_payload(seq, 20));
        }
        assert!(clean.is_complete(3));
        assert!(!clean.is_complete(4));
        assert!(!clean.is_complete(2));
        assert!(SeqReport::default().is_complete(0));
    }
}
