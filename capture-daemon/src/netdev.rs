//! Facts about network interfaces, asked of the kernel in the calling thread's network
//! namespace (ioctl on a socket), so they are right inside `ip netns exec` and in tests.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use anyhow::{Context as _, bail};

const ETHTOOL_GDRVINFO: u32 = 0x0000_0003;
const ETHTOOL_GCHANNELS: u32 = 0x0000_003c;

#[repr(C)]
struct EthtoolChannels {
    cmd: u32,
    max_rx: u32,
    max_tx: u32,
    max_other: u32,
    max_combined: u32,
    rx_count: u32,
    tx_count: u32,
    other_count: u32,
    combined_count: u32,
}

#[repr(C)]
struct EthtoolDrvinfo {
    cmd: u32,
    driver: [u8; 32],
    version: [u8; 32],
    fw_version: [u8; 32],
    bus_info: [u8; 32],
    erom_version: [u8; 32],
    reserved2: [u8; 12],
    n_priv_flags: u32,
    n_stats: u32,
    testinfo_len: u32,
    eedump_len: u32,
    regdump_len: u32,
}

#[repr(C)]
struct IfReq {
    name: [libc::c_char; libc::IFNAMSIZ],
    data: *mut libc::c_void,
    _pad: [u8; 16],
}

/// The interface index, or an error that says the interface is missing.
pub fn ifindex(name: &str) -> anyhow::Result<u32> {
    match lookup(name).with_context(|| format!("looking up interface {name}"))? {
        Some(index) => Ok(index),
        None => bail!(
            "interface {name} not found (see `ip link`; inside a container or netns, run there)"
        ),
    }
}

/// The index of interface `name`: `None` when there is no such interface, an error when the
/// lookup itself failed (out of file descriptors, say), which says nothing about the interface.
pub fn lookup(name: &str) -> io::Result<Option<u32>> {
    let c = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: valid NUL-terminated string.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if index != 0 {
        return Ok(Some(index));
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::ENODEV | libc::ENXIO) => Ok(None),
        _ => Err(err),
    }
}

fn ethtool(name: &str, data: *mut libc::c_void) -> io::Result<()> {
    // SAFETY: plain socket call; the fd is owned right away.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh, valid descriptor.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut req = IfReq { name: [0; libc::IFNAMSIZ], data, _pad: [0; 16] };
    for (d, s) in req.name.iter_mut().zip(name.bytes().take(libc::IFNAMSIZ - 1)) {
        *d = s as libc::c_char;
    }
    // SAFETY: SIOCETHTOOL with an ifreq whose data points at a live ethtool struct.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCETHTOOL, &mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Puts `ifindex` in promiscuous mode for as long as the returned socket is open, as tcpdump
/// does: a packet socket's membership, which the kernel counts and drops with the socket, so a
/// crash never leaves the interface promiscuous. A bridge then passes every frame it forwards
/// up to its own device too, which is how VM-to-VM traffic becomes visible on `br0`. The socket
/// (protocol 0) receives nothing.
pub fn hold_promiscuous(ifindex: u32) -> io::Result<OwnedFd> {
    // SAFETY: plain socket call; owned right away.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fresh fd.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mr = libc::packet_mreq {
        mr_ifindex: i32::try_from(ifindex)
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?,
        mr_type: u16::try_from(libc::PACKET_MR_PROMISC).unwrap_or(1),
        mr_alen: 0,
        mr_address: [0; 8],
    };
    // SAFETY: setsockopt with a properly sized packet_mreq.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            libc::PACKET_ADD_MEMBERSHIP,
            (&raw const mr).cast(),
            libc::socklen_t::try_from(size_of::<libc::packet_mreq>()).unwrap_or(16),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

/// Number of RX queues: the driver's channel count (combined + rx-only), or 1 for drivers that
/// do not report channels.
pub fn rx_queue_count(name: &str) -> anyhow::Result<u32> {
    ifindex(name)?;
    let mut ch = EthtoolChannels {
        cmd: ETHTOOL_GCHANNELS,
        max_rx: 0,
        max_tx: 0,
        max_other: 0,
        max_combined: 0,
        rx_count: 0,
        tx_count: 0,
        other_count: 0,
        combined_count: 0,
    };
    match ethtool(name, (&raw mut ch).cast()) {
        Ok(()) if ch.combined_count + ch.rx_count > 0 => Ok(ch.combined_count + ch.rx_count),
        // No channel information (bonds, some virtual devices): the RX queues the kernel made.
        Ok(()) => Ok(sysfs_rx_queues(name).unwrap_or(1)),
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
            Ok(sysfs_rx_queues(name).unwrap_or(1))
        }
        Err(e) => Err(e).with_context(|| format!("asking {name} for its RX queues (ethtool -l)")),
    }
}

/// The number of `/sys/class/net/NAME/queues/rx-N` directories, if any.
fn sysfs_rx_queues(name: &str) -> Option<u32> {
    let dir = std::fs::read_dir(format!("/sys/class/net/{name}/queues")).ok()?;
    let n = dir
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
        .count();
    u32::try_from(n).ok().filter(|n| *n > 0)
}

/// The driver name (`ethtool -i`), e.g. "ixgbe", "mlx5_core", "veth".
pub fn driver(name: &str) -> Option<String> {
    // SAFETY: all-zero is a valid EthtoolDrvinfo.
    let mut info: EthtoolDrvinfo = unsafe { std::mem::zeroed() };
    info.cmd = ETHTOOL_GDRVINFO;
    ethtool(name, (&raw mut info).cast()).ok()?;
    let end = info.driver.iter().position(|b| *b == 0).unwrap_or(info.driver.len());
    Some(String::from_utf8_lossy(&info.driver[..end]).into_owned())
}

const ETHTOOL_GSTRINGS: u32 = 0x0000_001b;
const ETHTOOL_GSSET_INFO: u32 = 0x0000_0037;
const ETHTOOL_GFEATURES: u32 = 0x0000_003a;
/// The string set naming the offload features (linux/ethtool.h `ETH_SS_FEATURES`).
const ETH_SS_FEATURES: u32 = 4;
const ETH_GSTRING_LEN: usize = 32;

/// An interface's offload features as the kernel names them (`ethtool -k` shows most under
/// older names: `rx-vlan-hw-parse` is "rx-vlan-offload", `rx-gro` "generic-receive-offload").
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Features(Vec<(String, bool)>);

impl Features {
    /// Whether feature `name` is active; `None` if the kernel has no feature of that name.
    pub fn active(&self, name: &str) -> Option<bool> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, on)| *on)
    }

    /// For tests: features with these states.
    pub fn of(list: &[(&str, bool)]) -> Features {
        Features(list.iter().map(|(n, on)| ((*n).to_owned(), *on)).collect())
    }
}

/// The interface's offload features, active or not (ETHTOOL_GFEATURES, with the names from
/// ETHTOOL_GSTRINGS: their bit positions differ between kernels).
pub fn features(name: &str) -> io::Result<Features> {
    // ethtool_sset_info: cmd, reserved, sset_mask (u64), then one count per set in the mask.
    let mut info = [ETHTOOL_GSSET_INFO, 0, 1 << ETH_SS_FEATURES, 0, 0];
    ethtool(name, info.as_mut_ptr().cast())?;
    if info[2] & (1 << ETH_SS_FEATURES) == 0 {
        return Err(io::Error::from(io::ErrorKind::Unsupported));
    }
    let count = info[4] as usize;
    // ethtool_gstrings: cmd, string_set, len, then `len` names of 32 bytes. u32s: aligned.
    let mut strings = vec![0u32; 3 + count * ETH_GSTRING_LEN / 4];
    strings[..3].copy_from_slice(&[ETHTOOL_GSTRINGS, ETH_SS_FEATURES, info[4]]);
    ethtool(name, strings.as_mut_ptr().cast())?;
    let names: Vec<u8> = strings[3..].iter().flat_map(|w| w.to_ne_bytes()).collect();
    // ethtool_gfeatures: cmd, size, then per 32 features {available, requested, active,
    // never_changed}.
    let blocks = count.div_ceil(32);
    let mut gf = vec![0u32; 2 + 4 * blocks];
    gf[0] = ETHTOOL_GFEATURES;
    gf[1] = u32::try_from(blocks).map_err(|_| io::Error::from(io::ErrorKind::InvalidData))?;
    ethtool(name, gf.as_mut_ptr().cast())?;
    let list = names
        .chunks(ETH_GSTRING_LEN)
        .take(count)
        .enumerate()
        .map(|(bit, raw)| {
            let end = raw.iter().position(|b| *b == 0).unwrap_or(raw.len());
            let active = gf[2 + 4 * (bit / 32) + 2] & (1 << (bit % 32)) != 0;
            (String::from_utf8_lossy(&raw[..end]).into_owned(), active)
        })
        .collect();
    Ok(Features(list))
}

/// The interface's MTU.
pub fn mtu(name: &str) -> Option<u32> {
    std::fs::read_to_string(format!("/sys/class/net/{name}/mtu")).ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_interface_is_named() {
        let e = rx_queue_count("nosuchif0").unwrap_err().to_string();
        assert!(e.contains("interface nosuchif0 not found"), "{e}");
    }

    #[test]
    fn features_are_read_by_name() {
        // Loopback's are fixed: no VLAN parsing, and it checksums nothing on receive.
        let f = features("lo").unwrap();
        assert_eq!(f.active("rx-vlan-hw-parse"), Some(false), "{f:?}");
        assert_eq!(f.active("loopback"), Some(true), "{f:?}");
        assert_eq!(f.active("no-such-feature"), None);
    }

    #[test]
    fn loopback_has_one_queue() {
        assert_eq!(rx_queue_count("lo").unwrap(), 1);
    }
}
