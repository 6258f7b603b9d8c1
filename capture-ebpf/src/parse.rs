//! The one parser and matcher of both modes and all hooks: Ethernet, up to two VLAN tags, the
//! target maps and, while some target has a VNI, VXLAN and Geneve down to the inner Ethernet
//! header. It reads the frame through [`Packet`], which XDP and tc each implement (direct packet
//! access; tc falls back to `bpf_skb_load_bytes` for bytes outside the skb's linear part).
//!
//! The headers past the VLAN tags sit at offsets only known at run time (IPv4 options, IPv6
//! extension headers, Geneve options): they are copied into small stack buffers with the
//! load-bytes helpers, each copy checked against the frame's length first, so the verifier never
//! sees a variable-offset packet pointer and a cut-short header is a verdict, not a failed call.

use capture_common::{
    Counters, FilterConfig, MacKey, TUNNEL_GENEVE, TUNNEL_VXLAN, is_vlan_ethertype,
    mac_filter_index,
};

use crate::{MAC_FILTER, MACS, TUNNEL_PORTS, VLANS, VNIS};

pub const ETH_HLEN: usize = 14;
pub const VLAN_HLEN: usize = 4;

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
/// Transparent Ethernet bridging: Geneve's protocol type for an Ethernet payload.
const ETH_P_TEB: u16 = 0x6558;
const IPPROTO_UDP: u8 = 17;
/// IPv6 extension headers the parser walks through.
const IPV6_HOPOPTS: u8 = 0;
const IPV6_ROUTING: u8 = 43;
const IPV6_FRAGMENT: u8 = 44;
const IPV6_AH: u8 = 51;
const IPV6_DSTOPTS: u8 = 60;
/// Extension headers read before giving up on reaching UDP (the verifier wants a bound; real
/// traffic has one or two).
const IPV6_MAX_EXT: usize = 6;
const UDP_HLEN: usize = 8;
/// VXLAN and Geneve both have an 8-byte base header.
const TUNNEL_HLEN: usize = 8;
/// VXLAN's I flag: the VNI is valid (RFC 7348).
const VXLAN_I: u8 = 0x08;

/// Read access to a frame's bytes, bounds-checked.
pub trait Packet {
    /// Whether [`Packet::bytes`] can copy from any offset (the linear XDP program cannot).
    const LOADS: bool;
    fn u16_be(&self, offset: usize) -> Option<u16>;
    fn mac(&self, offset: usize) -> Option<[u8; 6]>;
    /// `N` bytes at `offset` copied with the load-bytes helper.
    fn bytes<const N: usize>(&self, offset: usize) -> Option<[u8; N]>;
}

/// What the parser learnt about a frame.
pub struct Parsed {
    /// Source and destination MAC are readable.
    pub has_macs: bool,
    /// VLAN ID of the outermost tag, or [`NO_VID`] if the frame carries no whole one. Not an
    /// `Option`: its payload, undefined when `None`, can end up spilled as a register the
    /// verifier sees read before it was written.
    pub outer_vid: u32,
    /// Offset of the header behind the Ethernet header and its (at most two) tags, and its
    /// ethertype; 0 when there is none to read (runt, cut-short or more than two tags).
    pub l3: usize,
    pub ethertype: u16,
}

/// [`Parsed::outer_vid`] of a frame without a (whole) VLAN tag: outside the VLANS array.
pub const NO_VID: u32 = u32::MAX;

/// `len` is the frame's length; `stripped_tci` the outer tag the stack keeps beside the frame
/// (rx-vlan offload, or the skb's accelerated tag), which then is the outermost tag and the
/// tags in the data are the inner ones.
#[inline(always)]
pub fn parse<P: Packet>(p: &P, len: usize, stripped_tci: Option<u16>, c: &mut Counters) -> Parsed {
    let mut parsed = Parsed { has_macs: false, outer_vid: NO_VID, l3: 0, ethertype: 0 };
    if len < ETH_HLEN {
        c.runts += 1;
        return parsed;
    }
    let Some(ethertype) = p.u16_be(12) else {
        return parsed;
    };
    parsed.has_macs = true;
    if let Some(tci) = stripped_tci {
        parsed.outer_vid = u32::from(tci & 0x0fff);
        if !is_vlan_ethertype(ethertype) {
            parsed.l3 = ETH_HLEN;
            parsed.ethertype = ethertype;
            return parsed;
        }
        // The in-data tag, if any, is the second one.
        match p.u16_be(ETH_HLEN + 2) {
            None => c.truncated_tags += 1,
            Some(t) if is_vlan_ethertype(t) => c.deep_tags += 1,
            Some(t) => {
                parsed.l3 = ETH_HLEN + VLAN_HLEN;
                parsed.ethertype = t;
            }
        }
        return parsed;
    }
    if !is_vlan_ethertype(ethertype) {
        parsed.l3 = ETH_HLEN;
        parsed.ethertype = ethertype;
        return parsed;
    }
    // Outer tag: TCI then the next ethertype. A tag cut short counts as untagged.
    let (Some(tci), Some(inner_type)) = (p.u16_be(ETH_HLEN), p.u16_be(ETH_HLEN + 2)) else {
        c.truncated_tags += 1;
        return parsed;
    };
    parsed.outer_vid = u32::from(tci & 0x0fff);
    if !is_vlan_ethertype(inner_type) {
        parsed.l3 = ETH_HLEN + VLAN_HLEN;
        parsed.ethertype = inner_type;
        return parsed;
    }
    // Second (inner) tag.
    match p.u16_be(ETH_HLEN + VLAN_HLEN + 2) {
        None => c.truncated_tags += 1,
        Some(t) if is_vlan_ethertype(t) => c.deep_tags += 1,
        Some(t) => {
            parsed.l3 = ETH_HLEN + 2 * VLAN_HLEN;
            parsed.ethertype = t;
        }
    }
    parsed
}

#[inline(always)]
fn mac_slots(addr: [u8; 6]) -> u64 {
    // Most frames on a busy link are not a target's: the prefilter says so without hashing.
    if MAC_FILTER.get(mac_filter_index(addr)).is_some_and(|f| *f == 0) {
        return 0;
    }
    // SAFETY: the value is a plain u64 the daemon rewrites whole; a torn read cannot happen.
    unsafe { MACS.get(&MacKey::new(addr)) }.copied().unwrap_or(0)
}

#[inline(always)]
fn vlan_slots(vid: u32) -> u64 {
    if vid == NO_VID {
        return 0;
    }
    VLANS.get(vid).copied().unwrap_or(0)
}

/// The slots of the targets the frame matches (see `capture_common` for the model).
#[inline(always)]
pub fn match_frame<P: Packet>(
    p: &P,
    cfg: &FilterConfig,
    parsed: &Parsed,
    len: usize,
    c: &mut Counters,
) -> u64 {
    let mut mac = cfg.any_mac;
    // The look-ups only matter when some outer target names a MAC.
    if parsed.has_macs && cfg.outer & !cfg.any_mac != 0 {
        if let Some(src) = p.mac(6) {
            mac |= mac_slots(src);
        }
        if let Some(dst) = p.mac(0) {
            mac |= mac_slots(dst);
        }
    }
    let vlan = cfg.any_vlan | vlan_slots(parsed.outer_vid);
    let outer = mac & vlan & cfg.outer;
    if !P::LOADS || cfg.overlay == 0 {
        return outer;
    }
    outer | match_inner(p, cfg, parsed, len, c)
}

/// The VNI targets the inner frame matches, if the frame carries VXLAN or Geneve.
#[inline(always)]
fn match_inner<P: Packet>(
    p: &P,
    cfg: &FilterConfig,
    parsed: &Parsed,
    len: usize,
    c: &mut Counters,
) -> u64 {
    let Some(udp) = udp_offset(p, parsed, len) else { return 0 };
    let Some(inner) = tunnel(p, udp, len) else {
        c.encap_malformed += 1;
        return 0;
    };
    if inner.vni == NOT_ETHERNET {
        return 0;
    }
    c.encapsulated += 1;
    // SAFETY: the value is a plain u64 the daemon rewrites whole.
    let vni = unsafe { VNIS.get(&inner.vni) }.copied().unwrap_or(0) & cfg.overlay;
    if vni == 0 {
        return 0;
    }
    let mac = cfg.any_mac | mac_slots(inner.src) | mac_slots(inner.dst);
    let vlan = cfg.any_vlan | vlan_slots(inner.vid);
    vni & mac & vlan
}

/// `N` bytes at `offset`, if the frame holds them.
#[inline(always)]
fn load<P: Packet, const N: usize>(p: &P, offset: usize, len: usize) -> Option<[u8; N]> {
    if offset + N > len {
        return None;
    }
    p.bytes::<N>(offset)
}

/// Offset of the UDP header of a datagram to a tunnel port, with the port's tunnel type; `None`
/// for anything else: not IP, not UDP, not a tunnel port, a non-first fragment, a header cut
/// short before the UDP destination port.
#[inline(always)]
fn udp_offset<P: Packet>(p: &P, parsed: &Parsed, len: usize) -> Option<(usize, u8)> {
    let l3 = parsed.l3;
    let l4 = match parsed.ethertype {
        ETH_P_IP => {
            let h = load::<P, 20>(p, l3, len)?;
            let ihl = usize::from(h[0] & 0x0f);
            // A later fragment has no UDP header; a first one (offset 0) has.
            let frag_offset = u16::from_be_bytes([h[6], h[7]]) & 0x1fff;
            if h[0] >> 4 != 4 || ihl < 5 || frag_offset != 0 || h[9] != IPPROTO_UDP {
                return None;
            }
            l3 + ihl * 4
        }
        ETH_P_IPV6 => ipv6_udp(p, l3, len)?,
        _ => return None,
    };
    let ports = load::<P, 4>(p, l4, len)?;
    let dport = u16::from_be_bytes([ports[2], ports[3]]);
    let kind = TUNNEL_PORTS.get(u32::from(dport)).copied().unwrap_or(0);
    (kind == TUNNEL_VXLAN || kind == TUNNEL_GENEVE).then_some((l4, kind))
}

/// Offset of the UDP header behind an IPv6 header at `l3` and its extension headers.
#[inline(always)]
fn ipv6_udp<P: Packet>(p: &P, l3: usize, len: usize) -> Option<usize> {
    let h = load::<P, 8>(p, l3, len)?;
    if h[0] >> 4 != 6 {
        return None;
    }
    let mut next = h[6];
    let mut off = l3 + 40;
    for _ in 0..IPV6_MAX_EXT {
        match next {
            IPPROTO_UDP => return Some(off),
            IPV6_HOPOPTS | IPV6_ROUTING | IPV6_DSTOPTS => {
                let e = load::<P, 2>(p, off, len)?;
                next = e[0];
                off += (usize::from(e[1]) + 1) * 8;
            }
            IPV6_AH => {
                let e = load::<P, 2>(p, off, len)?;
                next = e[0];
                off += (usize::from(e[1]) + 2) * 4;
            }
            IPV6_FRAGMENT => {
                let e = load::<P, 4>(p, off, len)?;
                // A later fragment has no UDP header.
                if u16::from_be_bytes([e[2], e[3]]) >> 3 != 0 {
                    return None;
                }
                next = e[0];
                off += 8;
            }
            _ => return None,
        }
    }
    (next == IPPROTO_UDP).then_some(off)
}

/// The inner frame of a tunnel, as far as matching needs it.
struct Inner {
    /// The VNI, or [`NOT_ETHERNET`] for a valid tunnel that carries no Ethernet (Geneve
    /// carrying IP).
    vni: u32,
    src: [u8; 6],
    dst: [u8; 6],
    /// VLAN ID of the inner frame's outermost tag, or [`NO_VID`].
    vid: u32,
}

/// [`Inner::vni`] of a tunnel without an Ethernet payload: above any 24-bit VNI.
const NOT_ETHERNET: u32 = u32::MAX;

/// Reads the tunnel header at `udp` + 8 and the inner Ethernet header; `None` when either is cut
/// short or invalid (counted as malformed).
#[inline(always)]
fn tunnel<P: Packet>(p: &P, (udp, kind): (usize, u8), len: usize) -> Option<Inner> {
    let t = load::<P, TUNNEL_HLEN>(p, udp + UDP_HLEN, len)?;
    let vni = u32::from_be_bytes([0, t[4], t[5], t[6]]);
    let mut inner = udp + UDP_HLEN + TUNNEL_HLEN;
    if kind == TUNNEL_VXLAN {
        if t[0] & VXLAN_I == 0 {
            return None;
        }
    } else {
        // Version 0 (the only one); options are opt_len 4-byte words behind the base header.
        if t[0] >> 6 != 0 {
            return None;
        }
        if u16::from_be_bytes([t[2], t[3]]) != ETH_P_TEB {
            return Some(Inner { vni: NOT_ETHERNET, src: [0; 6], dst: [0; 6], vid: NO_VID });
        }
        inner += usize::from(t[0] & 0x3f) * 4;
    }
    let eth = load::<P, ETH_HLEN>(p, inner, len)?;
    let dst = [eth[0], eth[1], eth[2], eth[3], eth[4], eth[5]];
    let src = [eth[6], eth[7], eth[8], eth[9], eth[10], eth[11]];
    let mut vid = NO_VID;
    if is_vlan_ethertype(u16::from_be_bytes([eth[12], eth[13]])) {
        // An inner tag cut short: the inner frame matches as untagged, as an outer one does.
        if let Some(tag) = load::<P, 2>(p, inner + ETH_HLEN, len) {
            vid = u32::from(u16::from_be_bytes(tag) & 0x0fff);
        }
    }
    Some(Inner { vni, src, dst, vid })
}
