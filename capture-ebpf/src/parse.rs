//! The one parser and matcher of both modes and all hooks: Ethernet, up to two VLAN tags, the
//! target maps. It reads the frame through [`Packet`], which XDP and tc each implement (direct
//! packet access; tc falls back to `bpf_skb_load_bytes` for bytes outside the skb's linear part).

use capture_common::{Counters, FilterConfig, MacKey, is_vlan_ethertype, mac_filter_index};

use crate::{MAC_FILTER, MACS, VLANS};

pub const ETH_HLEN: usize = 14;
pub const VLAN_HLEN: usize = 4;

/// Read access to a frame's bytes, bounds-checked.
pub trait Packet {
    fn u16_be(&self, offset: usize) -> Option<u16>;
    fn mac(&self, offset: usize) -> Option<[u8; 6]>;
}

/// What the parser learnt about a frame.
pub struct Parsed {
    /// Source and destination MAC are readable.
    pub has_macs: bool,
    /// VLAN ID of the outermost tag, or [`NO_VID`] if the frame carries no whole one. Not an
    /// `Option`: its payload, undefined when `None`, can end up spilled as a register the
    /// verifier sees read before it was written.
    pub outer_vid: u32,
}

/// [`Parsed::outer_vid`] of a frame without a (whole) VLAN tag: outside the VLANS array.
pub const NO_VID: u32 = u32::MAX;

/// `len` is the frame's length; `stripped_tci` the outer tag the stack keeps beside the frame
/// (rx-vlan offload, or the skb's accelerated tag), which then is the outermost tag and the
/// tags in the data are the inner ones.
#[inline(always)]
pub fn parse<P: Packet>(p: &P, len: usize, stripped_tci: Option<u16>, c: &mut Counters) -> Parsed {
    if len < ETH_HLEN {
        c.runts += 1;
        return Parsed { has_macs: false, outer_vid: NO_VID };
    }
    let Some(ethertype) = p.u16_be(12) else {
        return Parsed { has_macs: false, outer_vid: NO_VID };
    };
    if let Some(tci) = stripped_tci {
        // The in-data tag, if any, is the second one.
        if is_vlan_ethertype(ethertype) {
            match p.u16_be(ETH_HLEN + 2) {
                None => c.truncated_tags += 1,
                Some(t) if is_vlan_ethertype(t) => c.deep_tags += 1,
                Some(_) => {}
            }
        }
        return Parsed { has_macs: true, outer_vid: u32::from(tci & 0x0fff) };
    }
    if !is_vlan_ethertype(ethertype) {
        return Parsed { has_macs: true, outer_vid: NO_VID };
    }
    // Outer tag: TCI then the next ethertype. A tag cut short counts as untagged.
    let (Some(tci), Some(inner_type)) = (p.u16_be(ETH_HLEN), p.u16_be(ETH_HLEN + 2)) else {
        c.truncated_tags += 1;
        return Parsed { has_macs: true, outer_vid: NO_VID };
    };
    let outer_vid = u32::from(tci & 0x0fff);
    if is_vlan_ethertype(inner_type) {
        // Second (inner) tag: only checked for being whole today; inner-header matching
        // (VXLAN/Geneve inner MACs) will start from here.
        match p.u16_be(ETH_HLEN + VLAN_HLEN + 2) {
            None => c.truncated_tags += 1,
            Some(t) if is_vlan_ethertype(t) => c.deep_tags += 1,
            Some(_) => {}
        }
    }
    Parsed { has_macs: true, outer_vid }
}

#[inline(always)]
fn mac_slots<P: Packet>(p: &P, offset: usize) -> u64 {
    let Some(addr) = p.mac(offset) else { return 0 };
    // Most frames on a busy link are not a target's: the prefilter says so without hashing.
    if MAC_FILTER.get(mac_filter_index(addr)).is_some_and(|f| *f == 0) {
        return 0;
    }
    // SAFETY: the value is a plain u64 the daemon rewrites whole; a torn read cannot happen.
    unsafe { MACS.get(&MacKey::new(addr)) }.copied().unwrap_or(0)
}

/// The slots of the targets the frame matches (see `capture_common` for the model).
#[inline(always)]
pub fn match_frame<P: Packet>(p: &P, cfg: &FilterConfig, parsed: &Parsed) -> u64 {
    let mut mac = cfg.any_mac;
    if parsed.has_macs && mac != cfg.active {
        mac |= mac_slots(p, 0) | mac_slots(p, 6);
    }
    let mut vlan = cfg.any_vlan;
    if parsed.outer_vid != NO_VID {
        vlan |= VLANS.get(parsed.outer_vid).copied().unwrap_or(0);
    }
    mac & vlan & cfg.active
}
