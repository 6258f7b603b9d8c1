//! XDP program of capture-daemon.
//!
//! For every frame: parse Ethernet and up to two VLAN tags, compute the set of matching targets
//! (see `capture_common` for the matching model), and either redirect the frame to the AF_XDP
//! socket of its RX queue (sliced to the snap length, with a `FrameMeta` in front), or give the
//! unmatched-frame verdict. Every frame, malformed or not, gets a verdict: nothing aborts.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_PASS, XDP_REDIRECT},
    helpers::{bpf_ktime_get_ns, bpf_xdp_adjust_meta, bpf_xdp_adjust_tail},
    macros::{map, xdp},
    maps::{Array, HashMap, PerCpuArray, XskMap},
    programs::XdpContext,
};
use capture_common::{
    Counters, FilterConfig, FrameMeta, MAX_MACS, MAX_QUEUES, MAX_TARGETS, META_MAGIC, MacKey,
    TargetHits, UNMATCHED_DROP, VLAN_IDS, is_vlan_ethertype,
};

#[map]
static CONFIG: Array<FilterConfig> = Array::with_max_entries(1, 0);
/// MAC address -> slots of the targets naming it.
#[map]
static MACS: HashMap<MacKey, u64> = HashMap::with_max_entries(MAX_MACS, 0);
/// VLAN ID -> slots of the targets naming it.
#[map]
static VLANS: Array<u64> = Array::with_max_entries(VLAN_IDS, 0);
/// RX queue index -> AF_XDP socket.
#[map]
static XSKS: XskMap = XskMap::with_max_entries(MAX_QUEUES, 0);
#[map]
static COUNTERS: PerCpuArray<Counters> = PerCpuArray::with_max_entries(1, 0);
#[map]
static TARGET_HITS: PerCpuArray<TargetHits> = PerCpuArray::with_max_entries(1, 0);

const ETH_HLEN: usize = 14;
const VLAN_HLEN: usize = 4;
const META_LEN: i32 = size_of::<FrameMeta>() as i32;

#[xdp]
pub fn capture(ctx: XdpContext) -> u32 {
    match try_capture(&ctx) {
        Ok(action) | Err(action) => action,
    }
}

/// What the parser learnt about a frame.
struct Parsed {
    /// Source and destination MAC are readable.
    has_macs: bool,
    /// VLAN ID of the outermost tag, if the frame carries a whole one.
    outer_vid: Option<u16>,
}

#[inline(always)]
fn counters() -> Option<&'static mut Counters> {
    // SAFETY: per-CPU map, single entry; XDP programs are not preempted on their CPU.
    COUNTERS.get_ptr_mut(0).map(|p| unsafe { &mut *p })
}

#[inline(always)]
fn read_u16_be(ctx: &XdpContext, offset: usize) -> Option<u16> {
    let start = ctx.data();
    if start + offset + 2 > ctx.data_end() {
        return None;
    }
    // SAFETY: bounds checked against data_end just above (the verifier sees the same check).
    let bytes = unsafe { *((start + offset) as *const [u8; 2]) };
    Some(u16::from_be_bytes(bytes))
}

#[inline(always)]
fn parse(ctx: &XdpContext, c: &mut Counters) -> Parsed {
    let len = ctx.data_end() - ctx.data();
    if len < ETH_HLEN {
        c.runts += 1;
        return Parsed { has_macs: false, outer_vid: None };
    }
    let Some(ethertype) = read_u16_be(ctx, 12) else {
        return Parsed { has_macs: false, outer_vid: None };
    };
    if !is_vlan_ethertype(ethertype) {
        return Parsed { has_macs: true, outer_vid: None };
    }
    // Outer tag: TCI then the next ethertype. A tag cut short counts as untagged.
    let (Some(tci), Some(inner_type)) =
        (read_u16_be(ctx, ETH_HLEN), read_u16_be(ctx, ETH_HLEN + 2))
    else {
        c.truncated_tags += 1;
        return Parsed { has_macs: true, outer_vid: None };
    };
    let outer_vid = Some(tci & 0x0fff);
    if is_vlan_ethertype(inner_type) {
        // Second (inner) tag: only checked for being whole today; inner-header matching
        // (VXLAN/Geneve inner MACs) will start from here.
        match read_u16_be(ctx, ETH_HLEN + VLAN_HLEN + 2) {
            None => c.truncated_tags += 1,
            Some(t) if is_vlan_ethertype(t) => c.deep_tags += 1,
            Some(_) => {}
        }
    }
    Parsed { has_macs: true, outer_vid }
}

#[inline(always)]
fn mac_slots(ctx: &XdpContext, offset: usize) -> u64 {
    let start = ctx.data();
    if start + offset + 6 > ctx.data_end() {
        return 0;
    }
    // SAFETY: bounds checked just above.
    let addr = unsafe { *((start + offset) as *const [u8; 6]) };
    // SAFETY: the value is a plain u64 the daemon rewrites whole; a torn read cannot happen.
    unsafe { MACS.get(&MacKey::new(addr)) }.copied().unwrap_or(0)
}

#[inline(always)]
fn match_frame(ctx: &XdpContext, cfg: &FilterConfig, p: &Parsed) -> u64 {
    let mut mac = cfg.any_mac;
    if p.has_macs && mac != cfg.active {
        mac |= mac_slots(ctx, 0) | mac_slots(ctx, 6);
    }
    let mut vlan = cfg.any_vlan;
    if let Some(vid) = p.outer_vid {
        vlan |= VLANS.get(u32::from(vid)).copied().unwrap_or(0);
    }
    mac & vlan & cfg.active
}

#[inline(always)]
fn count_hits(matched: u64, len: u64) {
    let Some(hits) = TARGET_HITS.get_ptr_mut(0) else { return };
    // SAFETY: per-CPU map, single entry.
    let hits = unsafe { &mut *hits };
    let mut m = matched;
    let mut slot = 0;
    while m != 0 && slot < MAX_TARGETS {
        if m & 1 != 0 {
            hits.frames[slot] += 1;
            hits.bytes[slot] += len;
        }
        m >>= 1;
        slot += 1;
    }
}

fn try_capture(ctx: &XdpContext) -> Result<u32, u32> {
    let c = counters().ok_or(XDP_PASS)?;
    c.seen += 1;
    // No configuration yet (daemon still starting): let everything through.
    let cfg = CONFIG.get(0).ok_or(XDP_PASS)?;
    let parsed = parse(ctx, c);
    let matched = match_frame(ctx, cfg, &parsed);
    if matched == 0 {
        if cfg.unmatched == UNMATCHED_DROP {
            c.unmatched_dropped += 1;
            return Ok(XDP_DROP);
        }
        c.unmatched_passed += 1;
        return Ok(XDP_PASS);
    }
    let orig_len = (ctx.data_end() - ctx.data()) as u32;
    c.matched += 1;
    c.matched_bytes += u64::from(orig_len);
    count_hits(matched, u64::from(orig_len));

    // Check for a socket before touching the frame: without one the frame goes on unmodified.
    let queue = ctx.rx_queue_index();
    if XSKS.get(queue).is_none() {
        c.no_socket += 1;
        return Ok(XDP_PASS);
    }

    let tstamp_ns = unsafe { bpf_ktime_get_ns() };
    // The metadata first: if the driver cannot give us room for it, the frame goes on to the
    // kernel untouched. Slicing comes after, once nothing can fail before the redirect.
    // SAFETY: helper call on our own context; META_LEN is <= 32 and a multiple of 4.
    if unsafe { bpf_xdp_adjust_meta(ctx.ctx, -META_LEN) } != 0 {
        c.adjust_failed += 1;
        return Ok(XDP_PASS);
    }
    if ctx.metadata() + size_of::<FrameMeta>() > ctx.data() {
        c.adjust_failed += 1;
        return Ok(XDP_PASS);
    }
    let snaplen = cfg.snaplen;
    let mut sliced = false;
    if snaplen != 0 && orig_len > snaplen {
        // SAFETY: helper call on our own context; shrinking by less than the frame length.
        if unsafe { bpf_xdp_adjust_tail(ctx.ctx, snaplen as i32 - orig_len as i32) } != 0 {
            c.adjust_failed += 1;
            return Ok(XDP_PASS);
        }
        c.sliced += 1;
        sliced = true;
    }
    // A frame cut short must not reach the kernel: past this point failures drop it.
    let failed = if sliced { XDP_DROP } else { XDP_PASS };
    // Checked again for the verifier: the helpers above invalidate packet pointers.
    let meta = ctx.metadata();
    if meta + size_of::<FrameMeta>() > ctx.data() {
        c.adjust_failed += 1;
        return Ok(failed);
    }
    // SAFETY: the metadata area [meta, data) was reserved and bounds-checked just above.
    unsafe {
        *(meta as *mut FrameMeta) = FrameMeta { tstamp_ns, matched, orig_len, magic: META_MAGIC };
    }
    match XSKS.redirect(queue, u64::from(failed)) {
        Ok(action) if action == XDP_REDIRECT => {
            c.redirected += 1;
            Ok(action)
        }
        _ => {
            c.redirect_failed += 1;
            Err(failed)
        }
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
