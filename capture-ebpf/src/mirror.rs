//! Mirror mode (XDP): matched frames are sliced, stamped and redirected to the AF_XDP socket of
//! their RX queue. They leave the host's path.
//!
//! In a multi-buffer program (`FRAGS`) a frame may continue past `data_end` in fragments (jumbo
//! frames): the frame's length comes from `bpf_xdp_get_buff_len`. The headers are normally in
//! the first buffer, read directly; where a driver leaves it short (mlx5's striding RQ hands
//! multi-buffer programs an empty one), they are copied out with `bpf_xdp_load_bytes`.

use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_PASS, XDP_REDIRECT},
    helpers::{
        bpf_ktime_get_ns, bpf_xdp_adjust_meta, bpf_xdp_adjust_tail, bpf_xdp_get_buff_len,
        bpf_xdp_load_bytes,
    },
    programs::XdpContext,
};
use capture_common::{FAULT_NO_META, FrameMeta, META_MAGIC, UNMATCHED_DROP};

use crate::parse::{Packet, match_frame, parse};
use crate::{CONFIG, XSKS, count_hits, counters};

const META_LEN: i32 = size_of::<FrameMeta>() as i32;

/// Direct packet access: the verifier sees each bounds check. Past the first buffer of a
/// multi-buffer frame, a copy through the helper.
struct Xdp<'a, const FRAGS: bool>(&'a XdpContext);

impl<const FRAGS: bool> Xdp<'_, FRAGS> {
    #[inline(always)]
    fn load<const N: usize>(&self, offset: usize) -> Option<[u8; N]> {
        if !FRAGS {
            return None;
        }
        let mut buf = [0u8; N];
        // SAFETY: helper call on our own context, into a stack buffer of N bytes.
        let rc = unsafe {
            bpf_xdp_load_bytes(self.0.ctx, offset as u32, buf.as_mut_ptr().cast(), N as u32)
        };
        (rc == 0).then_some(buf)
    }
}

impl<const FRAGS: bool> Packet for Xdp<'_, FRAGS> {
    /// `bpf_xdp_load_bytes` came with multi-buffer XDP (5.18): the linear program, for older
    /// kernels, cannot read past the VLAN tags at run-time offsets, so VNI targets match nothing.
    const LOADS: bool = FRAGS;

    #[inline(always)]
    fn bytes<const N: usize>(&self, offset: usize) -> Option<[u8; N]> {
        self.load::<N>(offset)
    }

    #[inline(always)]
    fn u16_be(&self, offset: usize) -> Option<u16> {
        let start = self.0.data();
        if start + offset + 2 > self.0.data_end() {
            return self.load::<2>(offset).map(u16::from_be_bytes);
        }
        // SAFETY: bounds checked against data_end just above.
        Some(u16::from_be_bytes(unsafe { *((start + offset) as *const [u8; 2]) }))
    }

    #[inline(always)]
    fn mac(&self, offset: usize) -> Option<[u8; 6]> {
        let start = self.0.data();
        if start + offset + 6 > self.0.data_end() {
            return self.load::<6>(offset);
        }
        // SAFETY: bounds checked just above.
        Some(unsafe { *((start + offset) as *const [u8; 6]) })
    }
}

pub fn try_capture<const FRAGS: bool>(ctx: &XdpContext) -> Result<u32, u32> {
    let c = counters().ok_or(XDP_PASS)?;
    c.seen += 1;
    // No configuration yet (daemon still starting): let everything through.
    let cfg = CONFIG.get(0).ok_or(XDP_PASS)?;
    let p = Xdp::<FRAGS>(ctx);
    let linear = ctx.data_end() - ctx.data();
    let len = if FRAGS {
        // SAFETY: helper call on our own context.
        unsafe { bpf_xdp_get_buff_len(ctx.ctx) as usize }
    } else {
        linear
    };
    let parsed = parse(&p, len, None, c);
    let matched = match_frame(&p, cfg, &parsed, len, c);
    if matched == 0 {
        if cfg.unmatched == UNMATCHED_DROP {
            c.unmatched_dropped += 1;
            return Ok(XDP_DROP);
        }
        c.unmatched_passed += 1;
        return Ok(XDP_PASS);
    }
    let orig_len = len as u32;
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
    // The metadata first: if the driver cannot give us room for it (some drivers' native XDP
    // has no metadata support), the frame goes on to the kernel untouched, counted apart: the
    // daemon watches that count. Slicing comes after, once nothing can fail before the redirect.
    // SAFETY: helper call on our own context; META_LEN is <= 32 and a multiple of 4.
    if cfg.faults & FAULT_NO_META != 0 || unsafe { bpf_xdp_adjust_meta(ctx.ctx, -META_LEN) } != 0 {
        c.no_meta += 1;
        return Ok(XDP_PASS);
    }
    if ctx.metadata() + size_of::<FrameMeta>() > ctx.data() {
        c.no_meta += 1;
        return Ok(XDP_PASS);
    }
    // Sockets that cannot take a multi-buffer frame would drop a longer one: cut it instead.
    let limit = cfg.frame_limit;
    let cut = match (cfg.snaplen, limit) {
        (0, limit) => limit,
        (snaplen, 0) => snaplen,
        (snaplen, limit) => snaplen.min(limit),
    };
    let mut caplen = orig_len;
    let mut sliced = false;
    if cut != 0 && orig_len > cut {
        caplen = cut;
        c.sliced += 1;
        // Cutting off fragments frees their pages, which veth (Linux 6.5 to at least 6.18)
        // frees to the wrong allocator, corrupting other frames. A fragmented frame the socket
        // takes whole therefore goes whole, and user space keeps `caplen` bytes of it.
        let fragmented = len > linear;
        if !fragmented || (limit != 0 && orig_len > limit) {
            // SAFETY: helper call on our own context; shrinking by less than the frame length.
            if unsafe { bpf_xdp_adjust_tail(ctx.ctx, cut as i32 - orig_len as i32) } != 0 {
                c.adjust_failed += 1;
                return Ok(XDP_PASS);
            }
            sliced = true;
        }
    }
    // A frame cut short must not reach the kernel: past this point failures drop it.
    let failed = if sliced { XDP_DROP } else { XDP_PASS };
    // Checked again for the verifier: the helpers above invalidate packet pointers.
    let meta = ctx.metadata();
    if meta + size_of::<FrameMeta>() > ctx.data() {
        c.adjust_failed += 1;
        return Ok(failed);
    }
    // Written unaligned: the kernel only makes the metadata length a multiple of 4, and the
    // driver decides where the data starts (often 2 bytes past a 4-byte boundary, so that the
    // IP header is aligned). The verifier of an architecture without unaligned access refuses
    // wider stores here; elsewhere they would only happen to work.
    let stamp = FrameMeta { tstamp_ns, matched, orig_len, magic: META_MAGIC, caplen, pad: 0 };
    // SAFETY: the metadata area [meta, data) was reserved and bounds-checked just above.
    unsafe { (meta as *mut FrameMeta).write_unaligned(stamp) };
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
