//! Tap mode (tcx ingress and egress): a matched frame is copied, sliced to the snap length, into
//! this CPU's ring buffer with a [`TapMeta`] in front; the frame itself goes on untouched.
//!
//! Where the stack holds the outer VLAN tag beside the frame (the skb's accelerated tag: rx-vlan
//! offload, or the kernel untagging on receive), the match uses it and the record gets it back
//! in place, so the file shows the frame as it was on the wire, as tcpdump does.

use aya_ebpf::{
    EbpfContext as _,
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{bpf_get_smp_processor_id, bpf_ktime_get_ns, bpf_ringbuf_query, bpf_skb_load_bytes},
    programs::TcContext,
};
use capture_common::{Counters, DIRECTION_OUTBOUND, META_MAGIC, TAP_MAX_CAPLEN, TapMeta};

use crate::parse::{Packet, match_frame, parse};
use crate::{CONFIG, RINGS, Ring, count_hits, counters};

const META: usize = size_of::<TapMeta>();

/// Direct packet access where the bytes are in the skb's linear part (the headers nearly
/// always are: no helper call), else `bpf_skb_load_bytes`, which also reads the paged part.
struct Skb<'a>(&'a TcContext);

impl Skb<'_> {
    #[inline(always)]
    fn read<const N: usize>(&self, offset: usize) -> Option<[u8; N]> {
        let start = self.0.data();
        if start + offset + N <= self.0.data_end() {
            // SAFETY: bounds checked against data_end just above.
            return Some(unsafe { *((start + offset) as *const [u8; N]) });
        }
        self.0.load::<[u8; N]>(offset).ok()
    }
}

impl Packet for Skb<'_> {
    const LOADS: bool = true;

    #[inline(always)]
    fn bytes<const N: usize>(&self, offset: usize) -> Option<[u8; N]> {
        self.0.load::<[u8; N]>(offset).ok()
    }

    #[inline(always)]
    fn u16_be(&self, offset: usize) -> Option<u16> {
        self.read::<2>(offset).map(u16::from_be_bytes)
    }

    #[inline(always)]
    fn mac(&self, offset: usize) -> Option<[u8; 6]> {
        self.read::<6>(offset)
    }
}

/// The outer VLAN tag the skb holds beside the frame.
#[derive(Clone, Copy)]
struct VlanTag {
    present: bool,
    proto: u16,
    tci: u16,
}

/// Why a record was not written.
enum Lost {
    /// The ring had no room: the reader fell behind.
    Full,
    /// The frame could not be read (it changed under us, or was shorter than it said).
    Copy,
}

pub fn try_tap(ctx: &TcContext, direction: u32) {
    let Some(c) = counters() else { return };
    c.seen += 1;
    if direction == DIRECTION_OUTBOUND {
        c.egress_seen += 1;
    }
    let Some(cfg) = CONFIG.get(0) else { return };
    // SAFETY: the context is this program's __sk_buff.
    let skb = unsafe { &*ctx.as_ptr().cast::<aya_ebpf::bindings::__sk_buff>() };
    // Read whole, present or not: an Option's payload left undefined on one path becomes a
    // register the verifier sees read before it was written.
    let present = skb.vlan_present != 0;
    // `vlan_proto` is kept in network byte order, `vlan_tci` in host order.
    let proto = u16::from_be(skb.vlan_proto as u16);
    let tag = VlanTag { present, proto, tci: skb.vlan_tci as u16 };
    let p = Skb(ctx);
    let len = skb.len;
    let parsed = parse(&p, len as usize, present.then_some(tag.tci), c);
    let matched = match_frame(&p, cfg, &parsed, len as usize, c);
    if matched == 0 {
        c.unmatched_passed += 1;
        return;
    }
    // The tag goes back between the MACs and the ethertype: it was on the wire.
    let tag = VlanTag { present: present && len >= 12, ..tag };
    let orig_len = len + if tag.present { 4 } else { 0 };
    c.matched += 1;
    c.matched_bytes += u64::from(orig_len);
    count_hits(matched, u64::from(orig_len));

    let mut caplen = orig_len.min(TAP_MAX_CAPLEN);
    if cfg.snaplen != 0 && caplen > cfg.snaplen {
        caplen = cfg.snaplen;
        c.sliced += 1;
    }
    // SAFETY: plain helper call.
    let cpu = unsafe { bpf_get_smp_processor_id() };
    let Some(ring) = RINGS.get(cpu) else {
        c.no_ring += 1;
        return;
    };
    // Wake the reader only once enough has gathered; its timer picks up the rest.
    // SAFETY: `ring` is a ring-buffer map the kernel handed us.
    let queued = unsafe {
        bpf_ringbuf_query((ring as *const Ring).cast_mut().cast(), BPF_RB_AVAIL_DATA as u64)
    };
    let wake = if queued >= cfg.wake_bytes { BPF_RB_FORCE_WAKEUP } else { BPF_RB_NO_WAKEUP } as u64;
    let meta = TapMeta {
        // SAFETY: plain helper call.
        tstamp_ns: unsafe { bpf_ktime_get_ns() },
        matched,
        orig_len,
        caplen,
        direction,
        magic: META_MAGIC,
    };
    // Records are reserved in size classes: the verifier wants a constant size, and a class
    // wastes little ring space next to reserving the largest frame for every record.
    let result = match caplen {
        0..=64 => emit::<64>(ring, ctx, &meta, tag, wake),
        65..=128 => emit::<128>(ring, ctx, &meta, tag, wake),
        129..=256 => emit::<256>(ring, ctx, &meta, tag, wake),
        257..=512 => emit::<512>(ring, ctx, &meta, tag, wake),
        513..=1024 => emit::<1024>(ring, ctx, &meta, tag, wake),
        1025..=1536 => emit::<1536>(ring, ctx, &meta, tag, wake),
        1537..=2048 => emit::<2048>(ring, ctx, &meta, tag, wake),
        2049..=4096 => emit::<4096>(ring, ctx, &meta, tag, wake),
        4097..=9216 => emit::<9216>(ring, ctx, &meta, tag, wake),
        9217..=16384 => emit::<16384>(ring, ctx, &meta, tag, wake),
        16385..=32768 => emit::<32768>(ring, ctx, &meta, tag, wake),
        _ => emit::<65536>(ring, ctx, &meta, tag, wake),
    };
    count_result(c, result);
}

#[inline(always)]
fn count_result(c: &mut Counters, result: Result<(), Lost>) {
    match result {
        Ok(()) => c.redirected += 1,
        Err(Lost::Full) => c.ring_full += 1,
        Err(Lost::Copy) => c.no_ring += 1,
    }
}

/// One record of `CAP` frame bytes at most: the metadata, then the frame (with `tag` put back
/// after the MACs when the stack held it apart).
#[inline(always)]
fn emit<const CAP: usize>(
    ring: &Ring,
    ctx: &TcContext,
    meta: &TapMeta,
    tag: VlanTag,
    wake: u64,
) -> Result<(), Lost> {
    let Some(mut rec) = ring.reserve_bytes(META + CAP, 0) else { return Err(Lost::Full) };
    let base = rec.as_mut_ptr();
    // SAFETY: the record is META + CAP bytes, 8-aligned by the kernel.
    unsafe { base.cast::<TapMeta>().write(*meta) };
    let caplen = bounded::<CAP>(meta.caplen as usize);
    let skb = ctx.as_ptr();
    // SAFETY (both arms): each copy stays inside the record: offsets and lengths are checked
    // against CAP right before the helper call, which the verifier sees.
    let ok = unsafe {
        let data = base.add(META);
        match tag {
            VlanTag { present: false, .. } => {
                caplen.is_some_and(|n| bpf_skb_load_bytes(skb, 0, data.cast(), n as u32) == 0)
            }
            VlanTag { proto, tci, .. } => {
                let rest = caplen.map_or(0, |n| n.saturating_sub(16));
                let head = bpf_skb_load_bytes(skb, 0, data.cast(), 12) == 0;
                data.add(12).cast::<[u8; 2]>().write(proto.to_be_bytes());
                data.add(14).cast::<[u8; 2]>().write(tci.to_be_bytes());
                head && match bounded::<CAP>(rest) {
                    None => true,
                    Some(rest) if rest <= CAP - 16 => {
                        bpf_skb_load_bytes(skb, 12, data.add(16).cast(), rest as u32) == 0
                    }
                    Some(_) => false,
                }
            }
        }
    };
    if ok {
        rec.submit(wake);
        Ok(())
    } else {
        rec.discard(BPF_RB_NO_WAKEUP as u64);
        Err(Lost::Copy)
    }
}

/// `n` if it is in 1..=CAP, in a form the verifier can follow to the helper call. Register
/// moves in `asm!` hide what LLVM knows of `n`: without them it drops a check it can prove
/// (the size class already bounds `caplen`), or folds both into one check of `n - 1` and
/// passes the unchecked `n` on, and the verifier, which knows neither, rejects the copy.
#[inline(always)]
fn bounded<const CAP: usize>(n: usize) -> Option<usize> {
    let mut n = n;
    // SAFETY (both): `n = n`; it only hides the value's history from LLVM.
    unsafe { core::arch::asm!("{0} = {0}", inout(reg) n) };
    if n > CAP {
        return None;
    }
    unsafe { core::arch::asm!("{0} = {0}", inout(reg) n) };
    if n == 0 {
        return None;
    }
    Some(n)
}
