//! The contract between the XDP program (`capture-ebpf`) and the daemon (`capture-daemon`).
//!
//! Everything here is `#[repr(C)]`, free of padding holes and size-asserted, because the kernel side
//! and the user side are compiled separately and only meet through BPF maps and the bytes the XDP
//! program writes in front of each frame.
//!
//! Matching model: every configured target owns one bit (its *slot*, 0..[`MAX_TARGETS`]). The XDP
//! program computes, per frame,
//!
//! ```text
//! outer   = (MACS[src] | MACS[dst] | cfg.any_mac) & (VLANS[outer vid] | cfg.any_vlan) & cfg.outer
//! inner   = VNIS[vni] & cfg.overlay
//!         & (MACS[inner src] | MACS[inner dst] | cfg.any_mac)
//!         & (VLANS[inner outermost vid] | cfg.any_vlan)
//! matched = outer | inner
//! ```
//!
//! where `any_mac` holds the targets without a MAC, `any_vlan` the targets without a VLAN,
//! `outer` the targets without a VNI and `overlay` those with one. `inner` is only computed for a
//! frame carrying VXLAN or Geneve (UDP to a port of `TUNNEL_PORTS`) while `overlay` is non-zero:
//! without VNI targets no frame pays for parsing IP. The MAC and VLAN maps are shared by both
//! halves: a target's bit is only ever in the half its `outer`/`overlay` bit enables. That is three
//! map look-ups per frame (six for an encapsulated one) whatever the number of targets, and target
//! changes are plain map writes (no program reload).
#![no_std]

/// Number of target slots: one bit each in a `u64` mask.
pub const MAX_TARGETS: usize = 64;
/// Entries in the XSKMAP: the highest RX queue index the daemon can capture from, plus one.
pub const MAX_QUEUES: u32 = 256;
/// Entries in the MAC map (distinct MAC addresses across all targets).
pub const MAX_MACS: u32 = 1024;
/// VLAN IDs are 12 bits: the VLAN map is an array indexed by VID.
pub const VLAN_IDS: u32 = 4096;
/// Entries of the MAC prefilter (`MAC_FILTER`): an array the verifier inlines, so a frame whose
/// MACs no target can have costs no hash-map look-up (see [`mac_filter_index`]).
pub const MAC_FILTER_ENTRIES: u32 = 1 << 14;
/// Entries of the `VNIS` hash map: at most one VNI per target.
pub const MAX_VNIS: u32 = 64;
const _: () = assert!(MAX_VNIS as usize == MAX_TARGETS);
/// Entries of `TUNNEL_PORTS`: one per UDP port.
pub const UDP_PORTS: u32 = 1 << 16;
/// `TUNNEL_PORTS` values: what a UDP destination port carries.
pub const TUNNEL_NONE: u8 = 0;
pub const TUNNEL_VXLAN: u8 = 1;
pub const TUNNEL_GENEVE: u8 = 2;

/// A MAC's entry in the MAC prefilter: its last two bytes, which differ between the VMs of one
/// vendor prefix, folded with the third-last. Non-zero where some target's MAC has the same
/// index; zero means no target names this MAC, and the exact look-up in `MACS` is skipped.
#[inline(always)]
#[must_use]
pub const fn mac_filter_index(mac: [u8; 6]) -> u32 {
    let low = ((mac[4] as u32) << 8) | mac[5] as u32;
    (low ^ ((mac[3] as u32) << 6)) & (MAC_FILTER_ENTRIES - 1)
}

/// BPF map names, shared so both sides agree.
pub mod maps {
    pub const CONFIG: &str = "CONFIG";
    pub const MACS: &str = "MACS";
    pub const MAC_FILTER: &str = "MAC_FILTER";
    pub const VLANS: &str = "VLANS";
    pub const VNIS: &str = "VNIS";
    pub const TUNNEL_PORTS: &str = "TUNNEL_PORTS";
    pub const XSKS: &str = "XSKS";
    pub const COUNTERS: &str = "COUNTERS";
    pub const TARGET_HITS: &str = "TARGET_HITS";
    /// Tap mode: CPU number -> that CPU's BPF ring buffer (an array of maps).
    pub const RINGS: &str = "RINGS";
}

/// Name of the XDP program in the object file (mirror mode): a multi-buffer (`xdp.frags`)
/// program, so native XDP works at any MTU and jumbo frames arrive whole.
pub const PROGRAM_NAME: &str = "capture";
/// The same program without multi-buffer support, for kernels before 5.18 that refuse
/// `xdp.frags` programs.
pub const PROGRAM_LINEAR_NAME: &str = "capture_linear";
/// Names of the tcx programs (tap mode): the same parser and maps, one program per direction.
pub const TAP_INGRESS_PROGRAM: &str = "tap_ingress";
pub const TAP_EGRESS_PROGRAM: &str = "tap_egress";

/// Entries of the `RINGS` array of maps: CPUs beyond this have no ring (their matched frames are
/// counted in `no_ring`).
pub const MAX_CPUS: u32 = 1024;
/// Largest frame a tap-mode record holds; longer frames (GRO/GSO super-frames on the stack's
/// path) are cut to it, with their original length kept.
pub const TAP_MAX_CAPLEN: u32 = 65535;

/// What happens to frames no target matches.
pub const UNMATCHED_PASS: u32 = 0;
pub const UNMATCHED_DROP: u32 = 1;

/// Filter settings, the single entry of the `CONFIG` array map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FilterConfig {
    /// Bytes kept of each matched frame; 0 keeps the whole frame.
    pub snaplen: u32,
    /// [`UNMATCHED_PASS`] or [`UNMATCHED_DROP`].
    pub unmatched: u32,
    /// Slots in use: `outer | overlay`.
    pub active: u64,
    /// Slots of the targets without a VNI: matched on the outer headers.
    pub outer: u64,
    /// Slots of the targets with a VNI: matched on the inner frame of VXLAN/Geneve. Zero: the
    /// program does not look past the VLAN tags.
    pub overlay: u64,
    /// Slots of targets without a MAC (they accept any MAC).
    pub any_mac: u64,
    /// Slots of targets without a VLAN (they accept any VLAN, and untagged frames).
    pub any_vlan: u64,
    /// Tap mode: a record wakes the reader only once its ring holds this many bytes; below it
    /// the reader comes by on its own timer. One wake-up per record costs ~1 us of CPU.
    pub wake_bytes: u64,
    /// Mirror mode: the longest frame the AF_XDP sockets take; longer frames are cut to it (their
    /// original length kept) instead of being dropped by the kernel. 0 = no limit (the sockets
    /// take multi-buffer frames).
    pub frame_limit: u32,
    /// Test hooks ([`FAULT_NO_META`]): the daemon always writes 0.
    pub faults: u32,
}
const _: () = assert!(size_of::<FilterConfig>() == 64);

/// [`FilterConfig::faults`] bit, for tests only (they set it in the live map; the daemon never
/// does): the XDP program acts as on a driver without XDP metadata support, whose
/// `bpf_xdp_adjust_meta` fails. No driver on the test machines lacks it (veth, tun and generic
/// XDP all have it), so this is how that path is exercised for real.
pub const FAULT_NO_META: u32 = 1;

/// Key of the `MACS` hash map: a MAC address padded to 8 bytes so the key has no padding hole.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct MacKey {
    pub addr: [u8; 6],
    pub pad: [u8; 2],
}
const _: () = assert!(size_of::<MacKey>() == 8);

impl MacKey {
    #[must_use]
    pub const fn new(addr: [u8; 6]) -> Self {
        Self { addr, pad: [0; 2] }
    }
}

/// Written by the XDP program directly in front of each redirected frame (XDP metadata area), so
/// user space finds it at `frame_address - size_of::<FrameMeta>()` in the UMEM.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FrameMeta {
    /// `bpf_ktime_get_ns()` when the program saw the frame (CLOCK_MONOTONIC).
    pub tstamp_ns: u64,
    /// Bit mask of the target slots the frame matched.
    pub matched: u64,
    /// Length of the frame on the wire, before slicing.
    pub orig_len: u32,
    /// [`META_MAGIC`]: lets user space tell real metadata from whatever was in the headroom.
    pub magic: u32,
    /// Bytes of the frame to keep: the program cuts a frame in the kernel where it safely can,
    /// and otherwise redirects it whole for user space to cut to this.
    pub caplen: u32,
    pub pad: u32,
}
const _: () = assert!(size_of::<FrameMeta>() == 32);
// The kernel accepts at most 32 bytes of metadata, in multiples of 4.
const _: () = assert!(size_of::<FrameMeta>() <= 32 && size_of::<FrameMeta>().is_multiple_of(4));

pub const META_MAGIC: u32 = 0xCA97_0002;

/// Tap mode: the head of every BPF ring-buffer record, the frame's first `caplen` bytes right
/// behind it (the record itself is reserved in size classes, so it may be longer).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TapMeta {
    /// `bpf_ktime_get_ns()` when the program saw the frame (CLOCK_MONOTONIC).
    pub tstamp_ns: u64,
    /// Bit mask of the target slots the frame matched.
    pub matched: u64,
    /// Length of the frame on the wire, VLAN tag included, before slicing.
    pub orig_len: u32,
    /// Frame bytes in the record.
    pub caplen: u32,
    /// [`DIRECTION_INBOUND`] or [`DIRECTION_OUTBOUND`].
    pub direction: u32,
    /// [`META_MAGIC`].
    pub magic: u32,
}
const _: () = assert!(size_of::<TapMeta>() == 32);

/// Per-CPU counters kept by the XDP program (single entry of the `COUNTERS` per-CPU array).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Every frame the program ran on.
    pub seen: u64,
    /// Frames matching at least one target.
    pub matched: u64,
    /// Matched frames handed to user space: redirected to AF_XDP (mirror) or copied into a
    /// ring (tap).
    pub redirected: u64,
    /// Matched frames whose RX queue had no AF_XDP socket: passed to the kernel untouched.
    pub no_socket: u64,
    /// `bpf_redirect_map` refused the frame (socket vanished between look-up and redirect).
    pub redirect_failed: u64,
    /// Matched frames shortened to the snap length.
    pub sliced: u64,
    /// `bpf_xdp_adjust_tail` failed: frame passed to the kernel.
    pub adjust_failed: u64,
    /// Unmatched frames passed to the kernel.
    pub unmatched_passed: u64,
    /// Unmatched frames dropped (`unmatched = "drop"`).
    pub unmatched_dropped: u64,
    /// Frames shorter than an Ethernet header (14 bytes).
    pub runts: u64,
    /// Frames whose VLAN tag is cut short: they match as untagged.
    pub truncated_tags: u64,
    /// Frames with more VLAN tags than the two the parser reads.
    pub deep_tags: u64,
    /// Bytes on the wire of the frames counted in `matched` (before slicing).
    pub matched_bytes: u64,
    /// Tap mode: matched frames lost because this CPU's ring was full (the reader fell behind).
    pub ring_full: u64,
    /// Tap mode: matched frames on a CPU without a ring, or whose copy failed.
    pub no_ring: u64,
    /// Frames seen leaving the interface (tcx egress); `seen` counts both directions.
    pub egress_seen: u64,
    /// Mirror mode: matched frames the driver gave no room for the metadata in front
    /// (`bpf_xdp_adjust_meta` failed: a driver whose native XDP lacks metadata support). Passed
    /// to the kernel untouched, not captured; the daemon then moves to generic XDP.
    pub no_meta: u64,
    /// Frames to a tunnel port (`vxlan_ports`, `geneve_ports`) with whole, valid VXLAN or Geneve
    /// and inner Ethernet headers. Only counted while some target has a VNI.
    pub encapsulated: u64,
    /// Frames to a tunnel port whose tunnel or inner Ethernet header is cut short or invalid
    /// (VXLAN without the I flag, Geneve of another version): VNI targets cannot match them.
    pub encap_malformed: u64,
}
const _: () = assert!(size_of::<Counters>() == 19 * 8);

impl Counters {
    /// Adds `other` field by field (summing the per-CPU copies).
    pub fn add(&mut self, other: &Counters) {
        let Counters {
            seen,
            matched,
            redirected,
            no_socket,
            redirect_failed,
            sliced,
            adjust_failed,
            unmatched_passed,
            unmatched_dropped,
            runts,
            truncated_tags,
            deep_tags,
            matched_bytes,
            ring_full,
            no_ring,
            egress_seen,
            no_meta,
            encapsulated,
            encap_malformed,
        } = other;
        self.seen += seen;
        self.matched += matched;
        self.redirected += redirected;
        self.no_socket += no_socket;
        self.redirect_failed += redirect_failed;
        self.sliced += sliced;
        self.adjust_failed += adjust_failed;
        self.unmatched_passed += unmatched_passed;
        self.unmatched_dropped += unmatched_dropped;
        self.runts += runts;
        self.truncated_tags += truncated_tags;
        self.deep_tags += deep_tags;
        self.matched_bytes += matched_bytes;
        self.ring_full += ring_full;
        self.no_ring += no_ring;
        self.egress_seen += egress_seen;
        self.no_meta += no_meta;
        self.encapsulated += encapsulated;
        self.encap_malformed += encap_malformed;
    }
}

/// Per-CPU frame and byte counts per target slot (single entry of the `TARGET_HITS` per-CPU
/// array). Bytes are on the wire, before slicing.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TargetHits {
    pub frames: [u64; MAX_TARGETS],
    pub bytes: [u64; MAX_TARGETS],
}
const _: () = assert!(size_of::<TargetHits>() == 2 * MAX_TARGETS * 8);

impl Default for TargetHits {
    fn default() -> Self {
        Self { frames: [0; MAX_TARGETS], bytes: [0; MAX_TARGETS] }
    }
}

/// Direction of a frame, as pcapng's `epb_flags` bits 0-1 say it: received by the interface or
/// sent by it. XDP sees only received frames; tcx egress sees sent ones.
pub const DIRECTION_INBOUND: u32 = 1;
pub const DIRECTION_OUTBOUND: u32 = 2;

/// Ethertypes the parser treats as VLAN tags: 802.1Q, 802.1ad (QinQ) and the pre-standard 0x9100.
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88a8;
pub const ETH_P_QINQ_9100: u16 = 0x9100;

#[must_use]
pub const fn is_vlan_ethertype(ethertype: u16) -> bool {
    matches!(ethertype, ETH_P_8021Q | ETH_P_8021AD | ETH_P_QINQ_9100)
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are #[repr(C)], made only of integers, with no padding (size asserts above).
    unsafe impl aya::Pod for super::FilterConfig {}
    unsafe impl aya::Pod for super::MacKey {}
    unsafe impl aya::Pod for super::Counters {}
    unsafe impl aya::Pod for super::TargetHits {}
    unsafe impl aya::Pod for super::TapMeta {}
}
