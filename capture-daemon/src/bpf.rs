//! The kernel side, seen from user space: load the programs, fill their maps, attach them with
//! bpf_links, register AF_XDP sockets (mirror) or ring buffers (tap), read the counters.
//!
//! One [`Filter`] per capture interface: each gets its own program instance and maps, so an
//! XSKMAP index is always "RX queue of this interface" and a ring holds one interface's frames.
//! Mirror mode attaches the XDP program; tap mode the two tcx programs (ingress and egress).

use std::os::fd::RawFd;
use std::sync::Arc;

use aya::maps::{Array, ArrayOfMaps, HashMap, MapData, PerCpuArray, XskMap};
use aya::programs::links::{FdLink, Link as _};
use aya::programs::{
    LinkOrder, SchedClassifier, TcAttach, TcAttachType, Xdp, XdpMode as AyaXdpMode,
};
use aya::{Ebpf, EbpfLoader, include_bytes_aligned};
use capture_common::{
    Counters, FilterConfig, MAX_CPUS, MAX_TARGETS, MacKey, PROGRAM_LINEAR_NAME, PROGRAM_NAME,
    TAP_EGRESS_PROGRAM, TAP_INGRESS_PROGRAM, TUNNEL_GENEVE, TUNNEL_NONE, TUNNEL_VXLAN, TargetHits,
    UNMATCHED_DROP, UNMATCHED_PASS, maps,
};

use crate::config::{CaptureConfig, TargetConfig, Unmatched, XdpMode};

/// What a [`Filter`] hands frames over with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hooks {
    /// XDP, redirecting into AF_XDP sockets.
    Mirror,
    /// tcx ingress and egress, copying into per-CPU rings of this many bytes each.
    Tap { ring_bytes: u64 },
}

/// The XDP object built by build.rs from `capture-ebpf`.
static XDP_OBJECT: &[u8] = include_bytes_aligned!(concat!(env!("OUT_DIR"), "/capture-ebpf"));

#[derive(Debug, thiserror::Error)]
pub enum BpfError {
    #[error("loading the capture programs (capture-ebpf) into the kernel")]
    Load(#[source] aya::EbpfError),
    #[error("the kernel verifier rejected a capture program")]
    Verify(#[source] aya::programs::ProgramError),
    #[error("BPF map {name}")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("BPF map {0} missing from the capture-ebpf object")]
    MissingMap(&'static str),
    #[error("attaching XDP to {iface} in {mode} mode")]
    Attach {
        iface: String,
        mode: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error(
        "the kernel attached XDP to {0} with legacy netlink, which would outlive this process; \
         refusing (bpf_link for XDP needs Linux >= 5.9)"
    )]
    LegacyAttach(String),
    #[error("too many targets: {0} (at most {MAX_TARGETS})")]
    TooManyTargets(usize),
    #[error("creating the ring buffer of CPU {cpu} ({bytes} bytes)")]
    Ring {
        cpu: u32,
        bytes: u64,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("counting the CPUs ({0})")]
    Cpus(String),
    #[error("attaching tcx {hook} to {iface}")]
    AttachTc {
        iface: String,
        hook: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
}

/// Kernel-side counters of one interface, shared with the writer (for the pcapng statistics
/// block) and the status log. Reading them is a syscall: done per file and per log line, never
/// per packet.
pub struct KernelCounters {
    /// `None`: no program behind them, every count 0 (tests of the user-space side).
    maps: Option<(PerCpuArray<MapData, Counters>, PerCpuArray<MapData, TargetHits>)>,
}

impl KernelCounters {
    /// Counters of no program: all zero.
    #[cfg(test)]
    pub fn none() -> Self {
        KernelCounters { maps: None }
    }

    /// The per-CPU counters summed over CPUs.
    pub fn totals(&self) -> Counters {
        let mut sum = Counters::default();
        if let Some((counters, _)) = &self.maps
            && let Ok(per_cpu) = counters.get(&0, 0)
        {
            for c in per_cpu.iter() {
                sum.add(c);
            }
        }
        sum
    }

    /// Frames matched per target slot, summed over CPUs.
    pub fn target_frames(&self) -> [u64; MAX_TARGETS] {
        self.target_hits().frames
    }

    /// Frames and wire bytes per target slot, summed over CPUs.
    pub fn target_hits(&self) -> TargetHits {
        let mut sum = TargetHits::default();
        if let Some((_, hits)) = &self.maps
            && let Ok(per_cpu) = hits.get(&0, 0)
        {
            for h in per_cpu.iter() {
                for (s, f) in sum.frames.iter_mut().zip(h.frames.iter()) {
                    *s += f;
                }
                for (s, b) in sum.bytes.iter_mut().zip(h.bytes.iter()) {
                    *s += b;
                }
            }
        }
        sum
    }
}

/// The programs loaded for one interface, maps filled, not yet attached.
pub struct Filter {
    ebpf: Ebpf,
    hooks: Hooks,
    xsks: XskMap<MapData>,
    /// Tap mode: one ring per CPU, until the reader takes them.
    rings: Vec<MapData>,
    /// Tap mode: the ring fill level at which a record wakes the reader.
    wake_bytes: u64,
    /// Mirror mode: the XDP program loaded ([`PROGRAM_NAME`], or [`PROGRAM_LINEAR_NAME`] where
    /// the kernel refuses multi-buffer programs).
    program: &'static str,
    /// Mirror mode: the longest frame the sockets take whole (0 = any); see
    /// [`FilterConfig::frame_limit`].
    frame_limit: u32,
    config: Array<MapData, FilterConfig>,
    macs: HashMap<MapData, MacKey, u64>,
    mac_filter: Array<MapData, u8>,
    vlans: Array<MapData, u64>,
    vnis: HashMap<MapData, u32, u64>,
    tunnel_ports: Array<MapData, u8>,
    /// What the maps hold now.
    tables: TargetTables,
    counters: Arc<KernelCounters>,
    iface: String,
    links: Vec<FdLink>,
    mode: Option<&'static str>,
}

/// Which target owns which bit ("slot") of the match mask. A target keeps its slot for as long as
/// it stays configured, so reloading a config never changes the bits of an unchanged target: the
/// in-place map updates of [`Filter::update`] then cannot make it miss a frame.
#[derive(Debug, Clone, Default)]
pub struct Slots {
    names: Vec<Option<String>>,
    /// Slots that have had a target: a new target gets a slot never used before while there is
    /// one, so it does not start with another target's frame counts (the kernel's per-slot
    /// counters are never reset).
    used: u64,
}

impl Slots {
    /// Gives each target a slot: its old one if it had one, else the lowest free one; slots of
    /// targets no longer configured are freed first. Returns the slot of each target, in order.
    pub fn assign(&mut self, targets: &[TargetConfig]) -> Result<Vec<usize>, BpfError> {
        if targets.len() > MAX_TARGETS {
            return Err(BpfError::TooManyTargets(targets.len()));
        }
        self.names.resize(MAX_TARGETS, None);
        for name in &mut self.names {
            if name.as_ref().is_some_and(|n| !targets.iter().any(|t| &t.name == n)) {
                *name = None;
            }
        }
        let mut slots = Vec::with_capacity(targets.len());
        for t in targets {
            let slot = match self.slot_of(&t.name) {
                Some(slot) => slot,
                None => {
                    let free = |slot: &usize| self.names[*slot].is_none();
                    let fresh = (0..MAX_TARGETS).filter(free).find(|s| self.used & (1 << s) == 0);
                    let slot = fresh.or_else(|| (0..MAX_TARGETS).find(free));
                    let slot = slot.ok_or(BpfError::TooManyTargets(targets.len()))?;
                    self.names[slot] = Some(t.name.clone());
                    self.used |= 1 << slot;
                    slot
                }
            };
            slots.push(slot);
        }
        Ok(slots)
    }

    /// The slot of the target called `name`.
    pub fn slot_of(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n.as_deref() == Some(name))
    }
}

/// The interface MACs of the VMs present on this host, by libvirt domain name (a VM not in it
/// is absent).
pub type VmMacs = std::collections::BTreeMap<String, Vec<[u8; 6]>>;

/// The map contents for a set of targets, each in its slot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TargetTables {
    pub config: FilterConfig,
    pub macs: Vec<(MacKey, u64)>,
    pub vlans: Vec<(u16, u64)>,
    /// VNI -> slots of the targets naming it.
    pub vnis: Vec<(u32, u64)>,
    /// UDP destination port -> `TUNNEL_VXLAN` or `TUNNEL_GENEVE`.
    pub tunnel_ports: Vec<(u16, u8)>,
}

impl TargetTables {
    /// The MAC prefilter's entries that are set: those of every MAC in `macs`.
    fn mac_filter(&self) -> std::collections::BTreeSet<u32> {
        self.macs.iter().map(|(mac, _)| capture_common::mac_filter_index(mac.addr)).collect()
    }

    /// Tables for `targets`, target `i` in slot `slots[i]` (see [`Slots::assign`]), with no VM
    /// known: a `vm` target matches nothing.
    pub fn build(
        capture: &CaptureConfig,
        targets: &[TargetConfig],
        slots: &[usize],
    ) -> Result<Self, BpfError> {
        Self::build_with_vms(capture, targets, slots, &VmMacs::new())
    }

    /// As [`TargetTables::build`], with the MACs of the VMs on this host: a `vm` target matches
    /// its VM's MACs and its own `mac`, if any, while the VM is in `vms`; an absent VM's target
    /// (or one whose VM has no interface) matches nothing, never "any MAC".
    pub fn build_with_vms(
        capture: &CaptureConfig,
        targets: &[TargetConfig],
        slots: &[usize],
        vms: &VmMacs,
    ) -> Result<Self, BpfError> {
        if targets.len() > MAX_TARGETS || slots.len() != targets.len() {
            return Err(BpfError::TooManyTargets(targets.len()));
        }
        let mut t = TargetTables {
            config: FilterConfig {
                snaplen: capture.snaplen,
                unmatched: match capture.unmatched {
                    Unmatched::Pass => UNMATCHED_PASS,
                    Unmatched::Drop => UNMATCHED_DROP,
                },
                ..FilterConfig::default()
            },
            tunnel_ports: capture
                .vxlan_ports
                .iter()
                .map(|&p| (p, TUNNEL_VXLAN))
                .chain(capture.geneve_ports.iter().map(|&p| (p, TUNNEL_GENEVE)))
                .collect(),
            ..TargetTables::default()
        };
        for (&slot, target) in slots.iter().zip(targets) {
            let bit = 1u64 << slot;
            t.config.active |= bit;
            match target.vni {
                Some(vni) => {
                    t.config.overlay |= bit;
                    match t.vnis.iter_mut().find(|(v, _)| *v == vni) {
                        Some((_, mask)) => *mask |= bit,
                        None => t.vnis.push((vni, bit)),
                    }
                }
                None => t.config.outer |= bit,
            }
            let macs: Vec<[u8; 6]> = match &target.vm {
                // Absent: no MAC and not `any_mac`, so the target matches nothing.
                Some(vm) => vms
                    .get(vm)
                    .map(|m| m.iter().copied().chain(target.mac).collect())
                    .unwrap_or_default(),
                None => target.mac.into_iter().collect(),
            };
            if target.vm.is_none() && target.mac.is_none() {
                t.config.any_mac |= bit;
            }
            for mac in macs {
                match t.macs.iter_mut().find(|(k, _)| k.addr == mac) {
                    Some((_, mask)) => *mask |= bit,
                    None => t.macs.push((MacKey::new(mac), bit)),
                }
            }
            match target.vlan {
                Some(vid) => match t.vlans.iter_mut().find(|(v, _)| *v == vid) {
                    Some((_, mask)) => *mask |= bit,
                    None => t.vlans.push((vid, bit)),
                },
                None => t.config.any_vlan |= bit,
            }
        }
        Ok(t)
    }
}

fn map_err(name: &'static str) -> impl FnOnce(aya::maps::MapError) -> BpfError {
    move |source| BpfError::Map { name, source }
}

impl Filter {
    /// Loads the programs `hooks` needs (the verifier runs here), fills the maps and, in tap
    /// mode, creates the per-CPU rings. Nothing is attached yet.
    pub fn load(iface: &str, hooks: Hooks, tables: &TargetTables) -> Result<Self, BpfError> {
        let mut ebpf = EbpfLoader::new().load(XDP_OBJECT).map_err(BpfError::Load)?;
        let mut program = PROGRAM_NAME;
        match hooks {
            Hooks::Mirror => {
                if let Err(frags_err) = xdp_program(&mut ebpf, PROGRAM_NAME)?.load() {
                    // Kernels before 5.18 refuse multi-buffer programs; where the linear one
                    // loads, that was the reason. Otherwise the first error is the one to see.
                    if xdp_program(&mut ebpf, PROGRAM_LINEAR_NAME)?.load().is_err() {
                        return Err(BpfError::Verify(frags_err));
                    }
                    log::warn!(
                        "{iface}: the kernel refused the multi-buffer XDP program ({}); using the \
                         single-buffer one: native XDP may then be refused at MTUs above ~3.5 KB",
                        error_chain(&frags_err)
                    );
                    program = PROGRAM_LINEAR_NAME;
                }
            }
            Hooks::Tap { .. } => {
                for name in [TAP_INGRESS_PROGRAM, TAP_EGRESS_PROGRAM] {
                    classifier(&mut ebpf, name)?.load().map_err(BpfError::Verify)?;
                }
            }
        }

        let mut take = |name: &'static str| ebpf.take_map(name).ok_or(BpfError::MissingMap(name));
        let config = Array::try_from(take(maps::CONFIG)?).map_err(map_err(maps::CONFIG))?;
        let macs = HashMap::try_from(take(maps::MACS)?).map_err(map_err(maps::MACS))?;
        let mac_filter =
            Array::try_from(take(maps::MAC_FILTER)?).map_err(map_err(maps::MAC_FILTER))?;
        let vlans = Array::try_from(take(maps::VLANS)?).map_err(map_err(maps::VLANS))?;
        let vnis = HashMap::try_from(take(maps::VNIS)?).map_err(map_err(maps::VNIS))?;
        let tunnel_ports =
            Array::try_from(take(maps::TUNNEL_PORTS)?).map_err(map_err(maps::TUNNEL_PORTS))?;
        let xsks = XskMap::try_from(take(maps::XSKS)?).map_err(map_err(maps::XSKS))?;
        let counters =
            PerCpuArray::try_from(take(maps::COUNTERS)?).map_err(map_err(maps::COUNTERS))?;
        let hits =
            PerCpuArray::try_from(take(maps::TARGET_HITS)?).map_err(map_err(maps::TARGET_HITS))?;
        let (rings, wake_bytes) = match hooks {
            Hooks::Mirror => (Vec::new(), 0),
            Hooks::Tap { ring_bytes } => {
                let mut outer: ArrayOfMaps<MapData, MapData> =
                    ArrayOfMaps::try_from(take(maps::RINGS)?).map_err(map_err(maps::RINGS))?;
                (create_rings(&mut outer, ring_bytes)?, wake_bytes(ring_bytes))
            }
        };

        let mut filter = Filter {
            ebpf,
            hooks,
            xsks,
            rings,
            wake_bytes,
            program,
            frame_limit: 0,
            config,
            macs,
            mac_filter,
            vlans,
            vnis,
            tunnel_ports,
            tables: TargetTables::default(),
            counters: Arc::new(KernelCounters { maps: Some((counters, hits)) }),
            iface: iface.to_owned(),
            links: Vec::new(),
            mode: None,
        };
        filter.update(tables)?;
        Ok(filter)
    }

    /// Tap mode: how many per-CPU rings there are (0 in mirror mode).
    pub fn ring_count(&self) -> usize {
        self.rings.len()
    }

    /// Tap mode: the per-CPU rings, index = CPU, for the reader (once).
    pub fn take_rings(&mut self) -> Vec<MapData> {
        std::mem::take(&mut self.rings)
    }

    /// Rewrites the maps in place for new tables: no detach, no reload. The order makes sure
    /// a target present before and after never misses a frame meanwhile (at worst a frame
    /// matches the old or the new definition, for an instant):
    /// 1. MAC, VLAN, VNI and tunnel-port entries of the new tables are written (key by key, a
    ///    target that keeps its slot has its bit in both the old and the new value);
    /// 2. the configuration word becomes the union of old and new (a target that stops caring
    ///    about its MAC or VLAN already matches any, before its old entries go);
    /// 3. stale entries are removed;
    /// 4. the configuration word becomes the new one.
    pub fn update(&mut self, new: &TargetTables) -> Result<(), BpfError> {
        let new = &TargetTables {
            config: FilterConfig {
                wake_bytes: self.wake_bytes,
                frame_limit: self.frame_limit,
                ..new.config
            },
            ..new.clone()
        };
        // The prefilter never says "no target has this MAC" while one has: its new entries
        // are set before the MACs go in, its stale ones cleared after they went.
        let (old_filter, new_filter) = (self.tables.mac_filter(), new.mac_filter());
        for index in new_filter.difference(&old_filter) {
            self.mac_filter.set(*index, &1, 0).map_err(map_err(maps::MAC_FILTER))?;
        }
        for (mac, mask) in &new.macs {
            self.macs.insert(mac, mask, 0).map_err(map_err(maps::MACS))?;
        }
        for (vid, mask) in &new.vlans {
            self.vlans.set(u32::from(*vid), mask, 0).map_err(map_err(maps::VLANS))?;
        }
        for (vni, mask) in &new.vnis {
            self.vnis.insert(vni, mask, 0).map_err(map_err(maps::VNIS))?;
        }
        for (port, kind) in &new.tunnel_ports {
            self.tunnel_ports
                .set(u32::from(*port), kind, 0)
                .map_err(map_err(maps::TUNNEL_PORTS))?;
        }
        if self.program == PROGRAM_LINEAR_NAME
            && !new.vnis.is_empty()
            && self.tables.vnis.is_empty()
        {
            log::warn!(
                "{}: targets with a vni match nothing here: the single-buffer XDP program (this \
                 kernel refused the multi-buffer one, Linux < 5.18) cannot read VXLAN or Geneve; \
                 tap mode can",
                self.iface
            );
        }
        // Until CONFIG is first set, the program passes every frame: no union needed then.
        if self.tables.config.active != 0 {
            let (old, next) = (&self.tables.config, &new.config);
            let union = FilterConfig {
                active: old.active | next.active,
                outer: old.outer | next.outer,
                overlay: old.overlay | next.overlay,
                any_mac: old.any_mac | next.any_mac,
                any_vlan: old.any_vlan | next.any_vlan,
                ..*next
            };
            self.config.set(0, &union, 0).map_err(map_err(maps::CONFIG))?;
        }
        for (mac, _) in &self.tables.macs {
            if !new.macs.iter().any(|(m, _)| m == mac) {
                self.macs.remove(mac).map_err(map_err(maps::MACS))?;
            }
        }
        for index in old_filter.difference(&new_filter) {
            self.mac_filter.set(*index, &0, 0).map_err(map_err(maps::MAC_FILTER))?;
        }
        for (vid, _) in &self.tables.vlans {
            if !new.vlans.iter().any(|(v, _)| v == vid) {
                self.vlans.set(u32::from(*vid), &0u64, 0).map_err(map_err(maps::VLANS))?;
            }
        }
        for (vni, _) in &self.tables.vnis {
            if !new.vnis.iter().any(|(v, _)| v == vni) {
                self.vnis.remove(vni).map_err(map_err(maps::VNIS))?;
            }
        }
        for (port, _) in &self.tables.tunnel_ports {
            if !new.tunnel_ports.iter().any(|(p, _)| p == port) {
                self.tunnel_ports
                    .set(u32::from(*port), &TUNNEL_NONE, 0)
                    .map_err(map_err(maps::TUNNEL_PORTS))?;
            }
        }
        self.config.set(0, &new.config, 0).map_err(map_err(maps::CONFIG))?;
        self.tables = new.clone();
        Ok(())
    }

    /// Mirror mode: frames longer than `limit` bytes are cut to it (0 = no limit), for sockets
    /// that cannot take multi-buffer frames. Set before attaching.
    pub fn set_frame_limit(&mut self, limit: u32) -> Result<(), BpfError> {
        self.frame_limit = limit;
        let tables = self.tables.clone();
        self.update(&tables)
    }

    /// Whether some target names a VLAN.
    pub fn has_vlan_targets(&self) -> bool {
        !self.tables.vlans.is_empty()
    }

    /// Mirror mode: whether the XDP program takes multi-buffer (jumbo) frames.
    pub fn multi_buffer_program(&self) -> bool {
        self.program == PROGRAM_NAME
    }

    pub fn counters(&self) -> Arc<KernelCounters> {
        Arc::clone(&self.counters)
    }

    /// Points RX queue `queue` at an AF_XDP socket.
    pub fn register_socket(&mut self, queue: u32, fd: RawFd) -> Result<(), BpfError> {
        self.xsks.set(queue, fd, 0).map_err(map_err(maps::XSKS))
    }

    /// Attaches with bpf_links: the kernel detaches them when this process dies, however it
    /// dies, so a crash never leaves the NIC redirecting frames to nobody. Returns how the
    /// programs are attached, for the log.
    pub fn attach(&mut self, mode: XdpMode) -> Result<&'static str, BpfError> {
        match self.hooks {
            Hooks::Mirror => self.attach_xdp(mode),
            Hooks::Tap { .. } => self.attach_tcx(),
        }
    }

    /// Ingress and egress, each behind any tcx program already there (they see the frame
    /// first and decide its fate; this one only looks).
    fn attach_tcx(&mut self) -> Result<&'static str, BpfError> {
        let iface = std::ffi::CString::new(self.iface.clone())
            .map_err(|_| BpfError::LegacyAttach(self.iface.clone()))?;
        for (name, hook, attach_type) in [
            (TAP_INGRESS_PROGRAM, "ingress", TcAttachType::Ingress),
            (TAP_EGRESS_PROGRAM, "egress", TcAttachType::Egress),
        ] {
            let program = classifier(&mut self.ebpf, name)?;
            let attach = TcAttach::Tcx { attach_type, order: LinkOrder::default() };
            let result =
                program.attach(iface.as_c_str(), attach).and_then(|id| program.take_link(id));
            let link = match result {
                Ok(link) => link,
                Err(source) => {
                    // Nothing half-attached: the ingress link goes if egress fails.
                    self.detach();
                    return Err(BpfError::AttachTc { iface: self.iface.clone(), hook, source });
                }
            };
            let link =
                FdLink::try_from(link).map_err(|_| BpfError::LegacyAttach(self.iface.clone()))?;
            self.links.push(link);
        }
        self.mode = Some("tcx ingress + egress");
        Ok("tcx ingress + egress")
    }

    fn attach_xdp(&mut self, mode: XdpMode) -> Result<&'static str, BpfError> {
        let tries: &[(AyaXdpMode, &'static str)] = match mode {
            XdpMode::Native => &[(AyaXdpMode::Driver, "native")],
            XdpMode::Generic => &[(AyaXdpMode::Skb, "generic")],
            XdpMode::Auto => &[(AyaXdpMode::Driver, "native"), (AyaXdpMode::Skb, "generic")],
        };
        let iface = std::ffi::CString::new(self.iface.clone())
            .map_err(|_| BpfError::LegacyAttach(self.iface.clone()))?;
        let program = xdp_program(&mut self.ebpf, self.program)?;
        let mut last_err = None;
        for (i, (aya_mode, name)) in tries.iter().enumerate() {
            match program.attach(iface.as_c_str(), *aya_mode) {
                Ok(id) => {
                    let link = program.take_link(id).map_err(BpfError::Verify)?;
                    // A netlink attach is detached again by try_from before it returns the error.
                    let link = FdLink::try_from(link)
                        .map_err(|_| BpfError::LegacyAttach(self.iface.clone()))?;
                    if i > 0 {
                        log::warn!(
                            "{}: native XDP attach failed ({}); using generic XDP (slower; the \
                             socket lines say which frame lengths are captured whole)",
                            self.iface,
                            last_err
                                .as_ref()
                                .map_or_else(String::new, |e: &BpfError| error_chain(e))
                        );
                    }
                    self.links.push(link);
                    self.mode = Some(name);
                    return Ok(name);
                }
                Err(source) => {
                    last_err =
                        Some(BpfError::Attach { iface: self.iface.clone(), mode: name, source });
                }
            }
        }
        Err(last_err.unwrap_or(BpfError::LegacyAttach(self.iface.clone())))
    }

    /// Mirror mode: detaches the XDP program and attaches it again in `mode`, maps, sockets and
    /// counters unchanged (frames meanwhile pass to the kernel). Returns how it is attached.
    pub fn reattach(&mut self, mode: XdpMode) -> Result<&'static str, BpfError> {
        self.detach();
        self.attach_xdp(mode)
    }

    /// Detaches the program (frames flow through the kernel as before); maps and counters stay
    /// readable until the `Filter` is dropped.
    pub fn detach(&mut self) {
        for link in self.links.drain(..) {
            if let Err(e) = link.detach() {
                log::warn!("{}: detaching: {e}", self.iface);
            }
        }
    }

    pub fn mode(&self) -> Option<&'static str> {
        self.mode
    }
}

impl Drop for Filter {
    fn drop(&mut self) {
        self.detach();
    }
}

/// The XDP program `name` of the object.
fn xdp_program<'a>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut Xdp, BpfError> {
    ebpf.program_mut(name).ok_or(BpfError::MissingMap(name))?.try_into().map_err(BpfError::Verify)
}

/// The tcx program `name` of the object.
fn classifier<'a>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut SchedClassifier, BpfError> {
    ebpf.program_mut(name).ok_or(BpfError::MissingMap(name))?.try_into().map_err(BpfError::Verify)
}

/// The fill level at which a tap-mode record wakes the reader: an eighth of the ring, so a
/// reader woken at once still has seven eighths to absorb what comes while it starts.
pub fn wake_bytes(ring_bytes: u64) -> u64 {
    ring_bytes / 8
}

/// One ring of `bytes` per possible CPU (up to `MAX_CPUS`), each put in `outer` at its CPU's
/// index, where the tcx programs look them up.
fn create_rings(
    outer: &mut ArrayOfMaps<MapData, MapData>,
    bytes: u64,
) -> Result<Vec<MapData>, BpfError> {
    let cpus = aya::util::nr_cpus().map_err(|(what, e)| BpfError::Cpus(format!("{what}: {e}")))?;
    let max_entries = u32::try_from(bytes).unwrap_or(u32::MAX);
    let mut rings = Vec::new();
    for cpu in 0..cpus.get().min(MAX_CPUS) {
        let def = aya_obj::Map::new_from_params(
            aya_obj::generated::bpf_map_type::BPF_MAP_TYPE_RINGBUF as u32,
            0,
            0,
            max_entries,
            0,
        );
        let ring = MapData::create(def, "capture_ring", None).map_err(|source| BpfError::Ring {
            cpu,
            bytes,
            source,
        })?;
        outer.set(cpu, &ring, 0).map_err(|source| BpfError::Ring { cpu, bytes, source })?;
        rings.push(ring);
    }
    Ok(rings)
}

/// "outer: inner: innermost" — for log lines, where `{:#}` of anyhow is not at hand.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn capture() -> CaptureConfig {
        CaptureConfig { snaplen: 128, ..CaptureConfig::default() }
    }

    fn target(name: &str, mac: Option<[u8; 6]>, vlan: Option<u16>) -> TargetConfig {
        TargetConfig { name: name.into(), mac, vlan, ..TargetConfig::default() }
    }

    #[test]
    fn tables_give_each_target_one_slot() {
        let m = [0x52, 0x54, 0, 0, 0, 1];
        let targets = [
            target("a", Some(m), None),
            target("b", None, Some(100)),
            target("c", Some(m), Some(100)),
            target("all", None, None),
        ];
        let t = TargetTables::build(&capture(), &targets, &[0, 1, 2, 3]).unwrap();
        assert_eq!(t.config.active, 0b1111);
        assert_eq!(t.config.any_mac, 0b1010);
        assert_eq!(t.config.any_vlan, 0b1001);
        assert_eq!(t.config.snaplen, 128);
        assert_eq!(t.macs, vec![(MacKey::new(m), 0b0101)]);
        assert_eq!(t.vlans, vec![(100, 0b0110)]);
    }

    #[test]
    fn vni_targets_are_matched_apart_from_outer_ones() {
        let m = [0x52, 0x54, 0, 0, 0, 1];
        let with_vni =
            |name: &str, vni, mac, vlan| TargetConfig { vni: Some(vni), ..target(name, mac, vlan) };
        let targets = [
            target("outer", Some(m), None),
            with_vni("vx", 100, Some(m), None),
            with_vni("gv", 200, None, Some(30)),
            with_vni("vx2", 100, None, None),
        ];
        let capture =
            CaptureConfig { vxlan_ports: vec![4789, 4790], geneve_ports: vec![6081], ..capture() };
        let t = TargetTables::build(&capture, &targets, &[0, 1, 2, 5]).unwrap();
        assert_eq!(t.config.active, 0b10_0111);
        assert_eq!(t.config.outer, 0b00_0001);
        assert_eq!(t.config.overlay, 0b10_0110);
        // MACS and VLANS are shared: the outer/overlay words keep the halves apart.
        assert_eq!(t.macs, vec![(MacKey::new(m), 0b00_0011)]);
        assert_eq!(t.vlans, vec![(30, 0b00_0100)]);
        assert_eq!(t.config.any_mac, 0b10_0100);
        assert_eq!(t.vnis, vec![(100, 0b10_0010), (200, 0b00_0100)]);
        assert_eq!(
            t.tunnel_ports,
            vec![(4789, TUNNEL_VXLAN), (4790, TUNNEL_VXLAN), (6081, TUNNEL_GENEVE)]
        );

        // Without vni targets the program never parses past the tags.
        let plain = TargetTables::build(&capture, &targets[..1], &[0]).unwrap();
        assert_eq!((plain.config.overlay, plain.config.outer), (0, 1));
        assert!(plain.vnis.is_empty());
    }

    #[test]
    fn vm_targets_match_their_vms_macs_and_nothing_while_absent() {
        let (m1, m2, extra) =
            ([0x52, 0x54, 0, 0, 1, 1], [0x52, 0x54, 0, 0, 1, 2], [2, 0, 0, 0, 0, 9]);
        let vm = |name: &str, vm: &str, mac| TargetConfig {
            vm: Some(vm.into()),
            mac,
            ..TargetConfig::named(name)
        };
        let targets = [
            vm("web01", "web01", None),
            vm("web01x", "web01", Some(extra)),
            vm("db02", "db02", None),
            vm("db02x", "db02", Some(extra)),
            vm("empty", "noiface", None),
        ];
        let vms: VmMacs =
            [("web01".into(), vec![m1, m2]), ("noiface".into(), vec![])].into_iter().collect();
        let t = TargetTables::build_with_vms(&capture(), &targets, &[0, 1, 2, 3, 4], &vms).unwrap();
        assert_eq!(t.config.active, 0b1_1111);
        // No vm target ever matches "any MAC": absent (db02), or present without interfaces.
        assert_eq!(t.config.any_mac, 0);
        assert_eq!(
            t.macs,
            vec![(MacKey::new(m1), 0b11), (MacKey::new(m2), 0b11), (MacKey::new(extra), 0b10)]
        );
        // Nothing known about any VM: every vm target matches nothing.
        let none = TargetTables::build(&capture(), &targets, &[0, 1, 2, 3, 4]).unwrap();
        assert!(none.macs.is_empty());
        assert_eq!((none.config.any_mac, none.config.active), (0, 0b1_1111));
    }

    #[test]
    fn too_many_targets_is_an_error() {
        let targets: Vec<_> =
            (0..=MAX_TARGETS).map(|i| target(&i.to_string(), None, None)).collect();
        let mut slots = Slots::default();
        assert!(matches!(slots.assign(&targets), Err(BpfError::TooManyTargets(65))));
        let slots: Vec<usize> = (0..targets.len()).collect();
        assert!(matches!(
            TargetTables::build(&capture(), &targets, &slots),
            Err(BpfError::TooManyTargets(65))
        ));
    }

    #[test]
    fn targets_keep_their_slots_across_reloads() {
        let mut slots = Slots::default();
        let a = target("a", None, Some(1));
        let b = target("b", None, Some(2));
        let c = target("c", None, None);
        assert_eq!(slots.assign(&[a.clone(), b.clone()]).unwrap(), vec![0, 1]);
        // b stays put when a goes and c comes; order does not matter. c gets a slot never used
        // (a's slot 0 still holds a's frame counts in the kernel).
        assert_eq!(slots.assign(&[c.clone(), b.clone()]).unwrap(), vec![2, 1]);
        assert_eq!(slots.slot_of("b"), Some(1));
        assert_eq!(slots.assign(&[b, a, c]).unwrap(), vec![1, 3, 2]);
        assert_eq!(slots.slot_of("a"), Some(3));
    }

    #[test]
    fn used_slots_are_reused_once_none_is_fresh() {
        let mut slots = Slots::default();
        let many: Vec<_> = (0..MAX_TARGETS).map(|i| target(&i.to_string(), None, None)).collect();
        slots.assign(&many).unwrap();
        let mut next = many[1..].to_vec();
        next.push(target("new", None, None));
        assert_eq!(slots.assign(&next).unwrap()[MAX_TARGETS - 1], 0, "the only free slot");
    }
}
