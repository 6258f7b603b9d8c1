//! Value checks: each takes what TOML gave for one key and returns the value or a message for
//! the admin. The limits they enforce are here too.

use std::path::PathBuf;

use capture_common::MAX_QUEUES;

use super::sizes::{GIB, KIB, MIB};
use super::*;

/// Smallest useful snap length: one Ethernet header.
pub(super) const MIN_SNAPLEN: u32 = 14;
/// Largest frame an XDP program sees in one buffer (and pcapng's customary snap length).
pub(super) const MAX_SNAPLEN: u32 = 65535;
pub(super) const MIN_RING_SIZE: u32 = 64;
pub(super) const MAX_RING_SIZE: u32 = 65536;
pub(super) const MIN_BUFFER_BYTES: u64 = MIB;
/// A BPF ring buffer is a power-of-two number of pages; below 64 KiB it holds too few frames to
/// ride out the reader's timer.
pub(super) const MIN_TAP_RING_BYTES: u64 = 64 * KIB;
pub(super) const MAX_TAP_RING_BYTES: u64 = GIB;
pub(super) const MAX_BUFFER_BYTES: u64 = 4 * GIB;
/// Busy polling longer than a millisecond per call only burns CPU.
pub(super) const MAX_BUSY_POLL_US: u32 = 1000;
/// Beyond 20 ms a default-sized ring overflows at under 50 kpps.
pub(super) const MAX_BATCH_DELAY_US: u32 = 20_000;
/// Below one page a rotation threshold would rotate on nearly every frame.
pub(super) const MIN_ROTATE_BYTES: u64 = 4096;
/// Keeping more free would leave capture almost no room.
const MAX_KEEP_FREE_PERCENT: u8 = 90;
/// Room for the writer's timestamp/sequence suffix within NAME_MAX (255).
pub(super) const MAX_PREFIX_LEN: usize = 128;
/// IFNAMSIZ - 1.
pub(super) const MAX_IFNAME_LEN: usize = 15;
pub(super) const MAX_TARGET_NAME_LEN: usize = 64;

/// Formats a MAC address the usual way: lower-case hex pairs joined by ':'.
#[must_use]
pub fn format_mac(mac: &[u8; 6]) -> String {
    let [a, b, c, d, e, f] = mac;
    format!("{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{f:02x}")
}

// ---------------------------------------------------------------------------------------------
// Value checks. Each takes what TOML gave and returns the value or a message for the admin.

pub(super) fn check_unmatched(s: &str) -> Result<Unmatched, String> {
    match s {
        "pass" => Ok(Unmatched::Pass),
        "drop" => Ok(Unmatched::Drop),
        _ => Err(format!("unknown verdict \"{s}\"; use \"pass\" or \"drop\"")),
    }
}

pub(super) fn check_mode(s: &str) -> Result<Mode, String> {
    match s {
        "tap" => Ok(Mode::Tap),
        "mirror" => Ok(Mode::Mirror),
        _ => Err(format!("unknown mode \"{s}\"; use \"tap\" or \"mirror\"")),
    }
}

pub(super) fn check_tap_ring_bytes(v: u64) -> Result<u64, String> {
    if !(MIN_TAP_RING_BYTES..=MAX_TAP_RING_BYTES).contains(&v) {
        return Err(format!(
            "ring size {v} bytes is out of range; use a power of two in 64 KiB..=1 GiB"
        ));
    }
    if !v.is_power_of_two() {
        return Err(format!(
            "ring size {v} bytes is not a power of two; use e.g. {} ({} MiB)",
            v.next_power_of_two(),
            v.next_power_of_two() / MIB
        ));
    }
    Ok(v)
}

pub(super) fn check_xdp_mode(s: &str) -> Result<XdpMode, String> {
    match s {
        "auto" => Ok(XdpMode::Auto),
        "native" => Ok(XdpMode::Native),
        "generic" => Ok(XdpMode::Generic),
        _ => Err(format!("unknown XDP mode \"{s}\"; use \"auto\", \"native\" or \"generic\"")),
    }
}

pub(super) fn check_zero_copy(s: &str) -> Result<ZeroCopy, String> {
    match s {
        "auto" => Ok(ZeroCopy::Auto),
        "on" => Ok(ZeroCopy::On),
        "off" => Ok(ZeroCopy::Off),
        _ => Err(format!("unknown zero-copy setting \"{s}\"; use \"auto\", \"on\" or \"off\"")),
    }
}

pub(super) fn check_busy_poll(v: i128) -> Result<u32, String> {
    match u32::try_from(v) {
        Ok(v) if v <= MAX_BUSY_POLL_US => Ok(v),
        _ => Err(format!(
            "busy-poll time {v} is out of range; use 0 (off) to {MAX_BUSY_POLL_US} microseconds"
        )),
    }
}

pub(super) fn check_batch_delay(v: i128) -> Result<u32, String> {
    match u32::try_from(v) {
        Ok(v) if v <= MAX_BATCH_DELAY_US => Ok(v),
        _ => Err(format!(
            "batch delay {v} is out of range; use 0 (read at once) to {MAX_BATCH_DELAY_US} microseconds"
        )),
    }
}

pub(super) fn check_listen(s: &str) -> Result<std::net::SocketAddr, String> {
    let addr: std::net::SocketAddr = s.parse().map_err(|_| {
        format!("\"{s}\" is not an address and port; use e.g. \"127.0.0.1:9464\" or \"[::1]:9464\"")
    })?;
    if addr.port() == 0 {
        // A port the kernel picks would be one that `status` and Prometheus cannot know.
        return Err(format!("\"{s}\": port 0 is not a fixed port; use e.g. 9464"));
    }
    Ok(addr)
}

pub(super) fn check_snaplen(v: i128) -> Result<u32, String> {
    match u32::try_from(v) {
        Ok(0) => Ok(0),
        Ok(v) if (MIN_SNAPLEN..=MAX_SNAPLEN).contains(&v) => Ok(v),
        Ok(v) if v < MIN_SNAPLEN => Err(format!(
            "snap length {v} is shorter than an Ethernet header; use 0 (whole frame) or \
             {MIN_SNAPLEN}..={MAX_SNAPLEN}"
        )),
        _ => Err(format!(
            "snap length {v} is out of range; use 0 (whole frame) or {MIN_SNAPLEN}..={MAX_SNAPLEN}"
        )),
    }
}

pub(super) fn check_ring_size(v: i128) -> Result<u32, String> {
    match u32::try_from(v) {
        Ok(v) if (MIN_RING_SIZE..=MAX_RING_SIZE).contains(&v) && v.is_power_of_two() => Ok(v),
        Ok(v) if (MIN_RING_SIZE..=MAX_RING_SIZE).contains(&v) => Err(format!(
            "ring size {v} is not a power of two; use e.g. {}",
            v.next_power_of_two().min(MAX_RING_SIZE)
        )),
        _ => Err(format!(
            "ring size {v} is out of range; use a power of two in {MIN_RING_SIZE}..={MAX_RING_SIZE}"
        )),
    }
}

pub(super) fn check_buffer_bytes(v: u64) -> Result<u64, String> {
    if (MIN_BUFFER_BYTES..=MAX_BUFFER_BYTES).contains(&v) {
        Ok(v)
    } else {
        Err(format!("buffer size {v} bytes is out of range; use 1 MiB..=4 GiB"))
    }
}

pub(super) fn check_rotate_bytes(v: u64) -> Result<u64, String> {
    if v == 0 || v >= MIN_ROTATE_BYTES {
        Ok(v)
    } else {
        Err(format!(
            "rotating every {v} bytes would make a file per frame; use 0 (never) or at least \
             {MIN_ROTATE_BYTES}"
        ))
    }
}

pub(super) fn check_count(v: i128) -> Result<u64, String> {
    u64::try_from(v).map_err(|_| {
        if v < 0 {
            format!("{v} is negative; use 0 or a positive integer")
        } else {
            format!("{v} is too large")
        }
    })
}

pub(super) fn check_keep_free_percent(v: i128) -> Result<u8, String> {
    match u8::try_from(v) {
        Ok(p) if p <= MAX_KEEP_FREE_PERCENT => Ok(p),
        _ => Err(format!("{v} % cannot be kept free; use 0 (no floor) to {MAX_KEEP_FREE_PERCENT}")),
    }
}

pub(super) fn check_directory(s: &str) -> Result<PathBuf, String> {
    if s.is_empty() {
        return Err("empty directory; give the directory for capture files, e.g. \
                    \"/var/lib/capture-daemon\""
            .to_owned());
    }
    if s.contains('\0') {
        return Err("directory contains a NUL character".to_owned());
    }
    Ok(PathBuf::from(s))
}

pub(super) fn check_group(s: &str) -> Result<Option<FileGroup>, String> {
    if s.is_empty() {
        return Ok(None);
    }
    let gid = match s.parse::<u32>() {
        Ok(gid) => gid,
        Err(_) => crate::sys::group_id(s).ok_or_else(|| {
            format!("no group \"{s}\" on this host (see getent group); create it or use \"\"")
        })?,
    };
    Ok(Some(FileGroup { name: s.to_owned(), gid }))
}

pub(super) fn check_prefix(s: &str) -> Result<String, String> {
    if s.is_empty() {
        return Err("empty prefix; it starts every file name, e.g. \"capture\"".to_owned());
    }
    if let Some(c) =
        s.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "prefix \"{s}\" contains {c:?}; use only A-Z, a-z, 0-9, '.', '_' and '-' (it becomes \
             part of file names)"
        ));
    }
    if s.starts_with('.') {
        return Err(format!("prefix \"{s}\" starts with '.', which would hide the capture files"));
    }
    if s.len() > MAX_PREFIX_LEN {
        return Err(format!(
            "prefix is {} characters long; use at most {MAX_PREFIX_LEN} (file names are limited)",
            s.len()
        ));
    }
    Ok(s.to_owned())
}

/// Same rules as the kernel's `dev_valid_name()`.
pub(super) fn check_ifname(s: &str) -> Result<String, String> {
    if s.is_empty() {
        return Err("empty interface name".to_owned());
    }
    if s.len() > MAX_IFNAME_LEN {
        return Err(format!(
            "interface name \"{s}\" is {} bytes long; Linux allows at most {MAX_IFNAME_LEN}",
            s.len()
        ));
    }
    if s == "." || s == ".." {
        return Err(format!("\"{s}\" is not a valid interface name"));
    }
    if let Some(c) =
        s.chars().find(|&c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
    {
        return Err(format!(
            "interface name \"{s}\" contains {c:?}; Linux interface names cannot contain '/', ':', \
             whitespace or control characters"
        ));
    }
    Ok(s.to_owned())
}

pub(super) fn check_target_name(s: &str) -> Result<String, String> {
    if s.is_empty() {
        return Err("empty target name".to_owned());
    }
    if let Some(c) =
        s.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-')))
    {
        return Err(format!(
            "target name \"{s}\" contains {c:?}; use only A-Z, a-z, 0-9, '.', '_', ':' and '-'"
        ));
    }
    if s.len() > MAX_TARGET_NAME_LEN {
        return Err(format!(
            "target name is {} characters long; use at most {MAX_TARGET_NAME_LEN}",
            s.len()
        ));
    }
    Ok(s.to_owned())
}

/// Parses a MAC address as the config does (also used by `capture --mac`).
pub fn check_mac(s: &str) -> Result<[u8; 6], String> {
    let bad = || {
        format!(
            "invalid MAC address \"{s}\"; write six hex pairs separated by ':' or '-', e.g. \
             \"52:54:00:12:34:56\""
        )
    };
    let separator = if s.contains('-') { '-' } else { ':' };
    let mut mac = [0u8; 6];
    let mut parts = s.split(separator);
    for byte in &mut mac {
        let part = parts.next().ok_or_else(bad)?;
        if part.len() != 2 {
            return Err(bad());
        }
        *byte = u8::from_str_radix(part, 16).map_err(|_| bad())?;
    }
    if parts.next().is_some() {
        return Err(bad());
    }
    if mac == [0; 6] {
        return Err(
            "the all-zero MAC 00:00:00:00:00:00 is not a real address; give the VM's MAC, \
                    or leave out `mac` to match any MAC"
                .to_owned(),
        );
    }
    Ok(mac)
}

pub(super) fn check_vlan(v: i128) -> Result<u16, String> {
    match v {
        0 => Err("VLAN 0 is reserved (it marks priority-tagged frames); use 1..=4094".to_owned()),
        4095 => Err("VLAN 4095 is reserved; use 1..=4094".to_owned()),
        1..=4094 => u16::try_from(v).map_err(|_| format!("VLAN {v} is out of range; use 1..=4094")),
        _ => Err(format!("VLAN {v} is out of range; use 1..=4094")),
    }
}

pub(super) fn check_vni(v: i128) -> Result<u32, String> {
    match u32::try_from(v) {
        Ok(vni @ 1..=0xff_ffff) => Ok(vni),
        _ => Err(format!("VNI {v} is out of range; use 1..=16777215 (24 bits, 0 is not a VNI)")),
    }
}

/// libvirt domain names: anything but '/' and control characters (libvirt's own rule is looser
/// per driver; these are the names that work everywhere).
pub(super) fn check_vm_name(s: &str) -> Result<String, String> {
    if s.is_empty() {
        return Err("empty VM name; write the libvirt domain name, as `virsh list --all` shows it"
            .to_owned());
    }
    if let Some(c) = s.chars().find(|c| *c == '/' || c.is_control()) {
        return Err(format!(
            "VM name \"{}\" contains {c:?}, which no libvirt domain name has",
            s.escape_debug()
        ));
    }
    Ok(s.to_owned())
}

pub(super) fn check_port(v: i128) -> Result<u16, String> {
    match u16::try_from(v) {
        Ok(p @ 1..) => Ok(p),
        _ => Err(format!("UDP port {v} is out of range; use 1..=65535")),
    }
}

pub(super) fn check_target_output(s: &str) -> Result<TargetOutput, String> {
    match s {
        "shared" => Ok(TargetOutput::Shared),
        "own" => Ok(TargetOutput::Own),
        _ => Err(format!(
            "unknown output \"{s}\"; use \"shared\" (the one stream, the default) or \"own\" (the \
             target's own files)"
        )),
    }
}

pub(super) fn check_libvirt_uri(s: &str) -> Result<String, String> {
    if s.is_empty() || !s.contains(':') {
        return Err(format!(
            "\"{s}\" is not a libvirt URI; write e.g. \"qemu:///system\" (see `virsh uri`)"
        ));
    }
    Ok(s.to_owned())
}

pub(super) fn check_queue(v: i128) -> Result<u32, String> {
    match u32::try_from(v) {
        Ok(q) if q < MAX_QUEUES => Ok(q),
        _ => Err(format!("RX queue {v} is out of range; use 0..={}", MAX_QUEUES - 1)),
    }
}
