//! The kernel side of capture-daemon: one parser and matcher ([`parse`]), two ways to hand the
//! matched frames to user space.
//!
//! - [`mirror`] (XDP): redirects the frame, sliced, into the AF_XDP socket of its RX queue. The
//!   frame leaves the host's path: only for NICs fed by a SPAN port or a TAP.
//! - [`tap`] (tcx ingress and egress): copies the frame, sliced, into this CPU's BPF ring buffer;
//!   the frame itself goes on untouched. For live uplinks, bridges and VM tap devices.
//!
//! Every frame, malformed or not, gets a verdict: nothing aborts.
#![no_std]
#![no_main]
// The bpf target's inline asm (for one verifier barrier in tap.rs); the build enables unstable
// features with RUSTC_BOOTSTRAP for this crate only.
#![feature(asm_experimental_arch)]

mod mirror;
mod parse;
mod tap;

use aya_ebpf::{
    bindings::TC_ACT_UNSPEC,
    btf_maps::{ArrayOfMaps, RingBuf},
    macros::{btf_map, classifier, map, xdp},
    maps::{Array, HashMap, PerCpuArray, XskMap},
    programs::{TcContext, XdpContext},
};
use capture_common::{
    Counters, DIRECTION_INBOUND, DIRECTION_OUTBOUND, FilterConfig, MAC_FILTER_ENTRIES, MAX_CPUS,
    MAX_MACS, MAX_QUEUES, MAX_TARGETS, MAX_VNIS, MacKey, TargetHits, UDP_PORTS, VLAN_IDS,
};

#[map]
static CONFIG: Array<FilterConfig> = Array::with_max_entries(1, 0);
/// MAC address -> slots of the targets naming it.
#[map]
static MACS: HashMap<MacKey, u64> = HashMap::with_max_entries(MAX_MACS, 0);
/// Prefilter of `MACS`, by [`capture_common::mac_filter_index`]: non-zero where a target's MAC
/// may be. An array look-up the verifier inlines, where a hash look-up hashes the key.
#[map]
static MAC_FILTER: Array<u8> = Array::with_max_entries(MAC_FILTER_ENTRIES, 0);
/// VLAN ID -> slots of the targets naming it.
#[map]
static VLANS: Array<u64> = Array::with_max_entries(VLAN_IDS, 0);
/// VXLAN/Geneve VNI -> slots of the targets naming it.
#[map]
static VNIS: HashMap<u32, u64> = HashMap::with_max_entries(MAX_VNIS, 0);
/// UDP destination port -> the tunnel it carries (`capture_common::TUNNEL_*`).
#[map]
static TUNNEL_PORTS: Array<u8> = Array::with_max_entries(UDP_PORTS, 0);
/// Mirror mode: RX queue index -> AF_XDP socket.
#[map]
static XSKS: XskMap = XskMap::with_max_entries(MAX_QUEUES, 0);
#[map]
static COUNTERS: PerCpuArray<Counters> = PerCpuArray::with_max_entries(1, 0);
#[map]
static TARGET_HITS: PerCpuArray<TargetHits> = PerCpuArray::with_max_entries(1, 0);

/// The size of the inner-map template only: the daemon puts rings of the configured size in
/// (the kernel does not compare the sizes of ring-buffer inner maps).
pub type Ring = RingBuf<u8, { 64 * 1024 }>;
/// Tap mode: CPU number -> that CPU's ring, so CPUs never contend for one ring's lock and each
/// ring is in time order.
#[btf_map]
static RINGS: ArrayOfMaps<Ring, { MAX_CPUS as usize }> = ArrayOfMaps::new();

/// Multi-buffer (`xdp.frags`): drivers then accept it at any MTU (veth refuses a plain program
/// once the peer's MTU passes ~3.5 KB) and hand over jumbo frames whole. At small MTUs the frame
/// simply has no fragments; what it adds per frame is one helper call (bpf_xdp_get_buff_len).
#[xdp(frags)]
pub fn capture(ctx: XdpContext) -> u32 {
    match mirror::try_capture::<true>(&ctx) {
        Ok(action) | Err(action) => action,
    }
}

/// The same without multi-buffer, for kernels before 5.18, which refuse `xdp.frags` programs.
#[xdp]
pub fn capture_linear(ctx: XdpContext) -> u32 {
    match mirror::try_capture::<false>(&ctx) {
        Ok(action) | Err(action) => action,
    }
}

/// tcx: let the next program, then the stack, have the frame, as if we were not there.
const TCX_NEXT: i32 = TC_ACT_UNSPEC;

#[classifier]
pub fn tap_ingress(ctx: TcContext) -> i32 {
    tap::try_tap(&ctx, DIRECTION_INBOUND);
    TCX_NEXT
}

#[classifier]
pub fn tap_egress(ctx: TcContext) -> i32 {
    tap::try_tap(&ctx, DIRECTION_OUTBOUND);
    TCX_NEXT
}

#[inline(always)]
fn counters() -> Option<&'static mut Counters> {
    // SAFETY: per-CPU map, single entry; the programs run with migration disabled.
    COUNTERS.get_ptr_mut(0).map(|p| unsafe { &mut *p })
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

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
