//! Fake VMs and a deterministic, realistic-looking traffic mix between them.

use crate::frame::{Frame, TPID_8021Q};

/// A fake VM on the capture NIC's segment. `vlan`: the 802.1Q VID its frames carry
/// on the wire (None: untagged).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeVm {
    pub name: String,
    pub mac: [u8; 6],
    pub ip: [u8; 4],
    pub vlan: Option<u16>,
}

impl FakeVm {
    pub fn new(name: &str, mac: [u8; 6], ip: [u8; 4], vlan: Option<u16>) -> FakeVm {
        FakeVm { name: name.to_owned(), mac, ip, vlan }
    }

    /// A frame header on this VM's segment: tagged with its VLAN if it has one.
    fn on_segment(&self, dst: [u8; 6], src: [u8; 6]) -> Frame {
        let frame = Frame::ethernet(dst, src);
        match self.vlan {
            Some(vid) => frame.vlan(TPID_8021Q, vid),
            None => frame,
        }
    }
}

/// Five VMs: two web servers sharing VLAN 100, a database on VLAN 200, an untagged
/// backup server and a management VM on VLAN 10.
pub fn default_vms() -> Vec<FakeVm> {
    vec![
        FakeVm::new("web01", [0x52, 0x54, 0, 0, 0x01, 0x01], [10, 0, 100, 11], Some(100)),
        FakeVm::new("web02", [0x52, 0x54, 0, 0, 0x01, 0x02], [10, 0, 100, 12], Some(100)),
        FakeVm::new("db01", [0x52, 0x54, 0, 0, 0x02, 0x01], [10, 0, 200, 21], Some(200)),
        FakeVm::new("backup01", [0x52, 0x54, 0, 0, 0x03, 0x01], [10, 0, 0, 31], None),
        FakeVm::new("mgmt01", [0x52, 0x54, 0, 0, 0x04, 0x01], [10, 0, 10, 41], Some(10)),
    ]
}

/// The router all VMs talk to (DNS, pings, traffic between VLANs).
pub fn default_gateway() -> FakeVm {
    FakeVm::new("gateway", [0x52, 0x54, 0, 0, 0, 0x01], [10, 0, 0, 1], None)
}

/// Seed of [`vm_traffic`]; fixed so that demos and tests see the same frames every run.
const DEFAULT_SEED: u64 = 0x9e37_79b9_7f4a_7c15;

/// Exactly `count` frames of a deterministic mix: DNS-sized UDP queries and answers,
/// 1400-byte UDP bulk, UDP of random size, ICMP echo request/reply and ARP requests, between
/// the VMs and the gateway. Untagged frame sizes span 60..=1514 (+4 with a tag).
///
/// The gateway is a router on a stick: on a VM's segment its frames carry that VM's tag, and its
/// own `vlan` is ignored. VMs on the same VLAN talk directly; otherwise the packet crosses the
/// gateway and appears twice, once on each segment (TTL 64, then 63).
pub fn vm_traffic(vms: &[FakeVm], gateway: &FakeVm, count: usize) -> Vec<Vec<u8>> {
    vm_traffic_seeded(vms, gateway, count, DEFAULT_SEED)
}

/// [`vm_traffic`] with another seed, for a different but still reproducible mix.
pub fn vm_traffic_seeded(
    vms: &[FakeVm],
    gateway: &FakeVm,
    count: usize,
    seed: u64,
) -> Vec<Vec<u8>> {
    const BROADCAST: [u8; 6] = [0xff; 6];
    let mut out = Vec::with_capacity(count + 1);
    if vms.is_empty() {
        return out;
    }
    let mut rng = XorShift::new(seed);
    let mut icmp_seq: u16 = 0;
    while out.len() < count {
        let vm = &vms[rng.below(vms.len())];
        let roll = rng.below(100);
        match roll {
            // DNS: small query to the gateway's resolver, larger answer back.
            0..=34 => {
                let sport = ephemeral_port(&mut rng);
                let len = rng.range(17, 60);
                let query = rng.bytes(len);
                out.push(
                    vm.on_segment(gateway.mac, vm.mac)
                        .ipv4_udp(vm.ip, gateway.ip, sport, 53, &query),
                );
                let len = rng.range(60, 400);
                let answer = rng.bytes(len);
                out.push(
                    vm.on_segment(vm.mac, gateway.mac)
                        .ipv4_udp(gateway.ip, vm.ip, 53, sport, &answer),
                );
            }
            // Bulk (1400-byte) or random-size (18..=1472 bytes: 60..=1514-byte frames) UDP to a peer.
            35..=74 => {
                let len = if roll < 55 { 1400 } else { rng.range(18, 1472) };
                let payload = rng.bytes(len);
                let sport = ephemeral_port(&mut rng);
                let dport = if roll < 55 { 5001 } else { 4789 + rng.range(0, 3) };
                let dport = u16::try_from(dport).unwrap_or(5001);
                match pick_peer(vms, vm, &mut rng) {
                    Some(peer) if peer.vlan == vm.vlan => {
                        out.push(
                            vm.on_segment(peer.mac, vm.mac)
                                .ipv4_udp(vm.ip, peer.ip, sport, dport, &payload),
                        );
                    }
                    Some(peer) => {
                        out.push(
                            vm.on_segment(gateway.mac, vm.mac)
                                .ipv4_udp(vm.ip, peer.ip, sport, dport, &payload),
                        );
                        out.push(
                            peer.on_segment(peer.mac, gateway.mac)
                                .ttl(63)
                                .ipv4_udp(vm.ip, peer.ip, sport, dport, &payload),
                        );
                    }
                    None => {
                        out.push(
                            vm.on_segment(gateway.mac, vm.mac)
                                .ipv4_udp(vm.ip, gateway.ip, sport, dport, &payload),
                        );
                    }
                }
            }
            // Ping the gateway: mostly the default 56 bytes, sometimes up to a full frame.
            75..=89 => {
                let len = if rng.below(4) == 0 { rng.range(0, 1472) } else { 56 };
                let payload = rng.bytes(len);
                let id = u16::try_from(rng.below(0x1_0000)).unwrap_or(1);
                icmp_seq = icmp_seq.wrapping_add(1);
                out.push(
                    vm.on_segment(gateway.mac, vm.mac)
                        .icmp_echo(vm.ip, gateway.ip, id, icmp_seq, &payload),
                );
                out.push(
                    vm.on_segment(vm.mac, gateway.mac)
                        .icmp_echo_reply(gateway.ip, vm.ip, id, icmp_seq, &payload),
                );
            }
            // ARP for the gateway, or for a peer on the same VLAN.
            _ => {
                let target = match pick_peer(vms, vm, &mut rng) {
                    Some(peer) if peer.vlan == vm.vlan => peer.ip,
                    _ => gateway.ip,
                };
                out.push(vm.on_segment(BROADCAST, vm.mac).arp_request(vm.mac, vm.ip, target));
            }
        }
    }
    // Exchanges add two frames; the caller asked for an exact count.
    out.truncate(count);
    out
}

/// Another VM than `vm`, if there is one.
fn pick_peer<'a>(vms: &'a [FakeVm], vm: &FakeVm, rng: &mut XorShift) -> Option<&'a FakeVm> {
    let others: Vec<&FakeVm> = vms.iter().filter(|p| p.mac != vm.mac).collect();
    if others.is_empty() {
        return None;
    }
    Some(others[rng.below(others.len())])
}

fn ephemeral_port(rng: &mut XorShift) -> u16 {
    // Linux's default ip_local_port_range.
    u16::try_from(rng.range(32768, 60999)).unwrap_or(40000)
}

/// xorshift64*: tiny, fast and good enough for traffic shapes; not for anything secret.
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> XorShift {
        // Zero is xorshift's fixed point.
        XorShift(if seed == 0 { DEFAULT_SEED } else { seed })
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform-enough in 0..n (n > 0); the modulo bias is irrelevant at these sizes.
    fn below(&mut self, n: usize) -> usize {
        let n64 = u64::try_from(n).unwrap_or(u64::MAX).max(1);
        // The high bits are the best ones of xorshift64*; the result is < n, so it fits.
        usize::try_from((self.next() >> 11) % n64).unwrap_or(0)
    }

    /// Inclusive range.
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            out.extend_from_slice(&self.next().to_le_bytes());
        }
        out.truncate(len);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{ETHERTYPE_ARP, ETHERTYPE_IPV4, internet_checksum};

    /// (VID if 802.1Q-tagged, inner ethertype, offset of the L3 header).
    fn parse(frame: &[u8]) -> (Option<u16>, u16, usize) {
        let et = u16::from_be_bytes([frame[12], frame[13]]);
        if et == TPID_8021Q {
            let tci = u16::from_be_bytes([frame[14], frame[15]]);
            (Some(tci & 0x0fff), u16::from_be_bytes([frame[16], frame[17]]), 18)
        } else {
            (None, et, 14)
        }
    }

    #[test]
    fn deterministic_and_exact_count() {
        let vms = default_vms();
        let gw = default_gateway();
        let a = vm_traffic(&vms, &gw, 500);
        let b = vm_traffic(&vms, &gw, 500);
        assert_eq!(a.len(), 500);
        assert_eq!(a, b);
        assert_eq!(vm_traffic(&vms, &gw, 1), a[..1]);
        assert_eq!(vm_traffic(&vms, &gw, 0).len(), 0);
        assert!(vm_traffic(&[], &gw, 10).is_empty());
        assert_ne!(vm_traffic_seeded(&vms, &gw, 500, 7), a);
    }

    #[test]
    fn frames_carry_their_vms_tag_and_valid_headers() {
        let vms = default_vms();
        let gw = default_gateway();
        let frames = vm_traffic(&vms, &gw, 2000);
        let (mut min, mut max) = (usize::MAX, 0);
        let mut kinds = [0usize; 3]; // udp, icmp, arp
        let mut seen = vec![0usize; vms.len()];
        for f in &frames {
            let (vid, et, l3) = parse(f);
            // Every frame is to or from exactly one VM (the other end is the gateway, a peer on
            // the same VLAN, or broadcast); the tag must be that VM's.
            let vm = vms.iter().enumerate().find(|(_, v)| f[6..12] == v.mac || f[0..6] == v.mac);
            let (i, vm) = vm.expect("every frame has a VM at one end");
            seen[i] += 1;
            assert_eq!(vid, vm.vlan, "frame of {} has the wrong tag: {f:02x?}", vm.name);
            for end in [&f[0..6], &f[6..12]] {
                if let Some(other) = vms.iter().find(|v| end == v.mac) {
                    assert_eq!(
                        other.vlan, vm.vlan,
                        "{} and {} share a frame across VLANs",
                        vm.name, other.name
                    );
                }
            }
            // Padding is to 60 bytes on the wire, tag included (as a NIC pads).
            let untagged_len = f.len() - if vid.is_some() { 4 } else { 0 };
            assert!(f.len() >= 60 && untagged_len <= 1514, "size {}", f.len());
            min = min.min(untagged_len);
            max = max.max(untagged_len);
            match et {
                ETHERTYPE_IPV4 => {
                    let ip = &f[l3..];
                    assert_eq!(internet_checksum(&ip[..20]), 0);
                    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
                    assert!(l3 + total <= f.len());
                    match ip[9] {
                        17 => kinds[0] += 1,
                        1 => {
                            kinds[1] += 1;
                            assert_eq!(internet_checksum(&ip[20..total]), 0);
                        }
                        p => panic!("unexpected IP protocol {p}"),
                    }
                }
                ETHERTYPE_ARP => {
                    kinds[2] += 1;
                    assert_eq!(f[0..6], [0xff; 6]);
                }
                other => panic!("unexpected ethertype {other:#06x}"),
            }
        }
        assert!(min < 100, "no small frames: min {min}");
        assert!(max >= 1500, "no near-MTU frames: max {max}");
        assert!(kinds.iter().all(|&k| k > 0), "missing a kind: {kinds:?}");
        assert!(seen.iter().all(|&n| n > 0), "a VM sent nothing: {seen:?}");
        // 1400-byte bulk from a tagged VM: 14 + 4 + 20 + 8 + 1400.
        assert!(frames.iter().any(|f| f.len() == 1446));
    }

    #[test]
    fn single_vm_talks_to_gateway_only() {
        let vms = vec![FakeVm::new("solo", [0x52, 0x54, 0, 0, 9, 9], [10, 9, 9, 9], Some(42))];
        let gw = default_gateway();
        for f in vm_traffic(&vms, &gw, 200) {
            assert_eq!(parse(&f).0, Some(42));
            assert!(f[0..6] == gw.mac || f[6..12] == gw.mac || f[0..6] == [0xff; 6]);
        }
    }
}
