//! VXLAN and Geneve frames as a hypervisor's uplink carries them, with the outer and tunnel
//! headers each way they may legally look (IPv4 options, IPv6 extension headers, fragments,
//! Geneve options) and ways they may not (no VXLAN I flag, Geneve version 1), to test the
//! kernel's overlay parser. [`Encapsulated`] keeps the offset of each layer, so a test can cut
//! a frame short inside any of them.
//!
//! Checksums are left zero (UDP's "no checksum"; the IPv4 header's is not checked by anyone
//! who sees these frames): the parser under test does not look at them.

use crate::frame::Frame;

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const ETHERTYPE_TEB: u16 = 0x6558;
const IPPROTO_UDP: u8 = 17;

/// The outer IP header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OuterIp {
    /// IPv4 with `options` (a multiple of 4 bytes, at most 40) and the flags/fragment-offset
    /// word as sent (0x4000 = DF, 0x2000 = MF, low 13 bits the offset in 8-byte units).
    V4 { options: Vec<u8>, frag: u16 },
    /// IPv6 with these extension headers, in order.
    V6 { ext: Vec<Ext> },
}

impl OuterIp {
    /// Plain IPv4: 20 bytes, DF set.
    #[must_use]
    pub fn v4() -> OuterIp {
        OuterIp::V4 { options: Vec::new(), frag: 0x4000 }
    }
}

/// An IPv6 extension header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ext {
    /// Hop-by-hop options (0), routing (43) or destination options (60) of `(len + 1) * 8`
    /// bytes (zero padding: Pad1 options).
    Options { kind: u8, len: u8 },
    /// Fragment header: `offset` in 8-byte units, `more` the M flag.
    Fragment { offset: u16, more: bool },
    /// Authentication header of `(len + 2) * 4` bytes (`len` >= 1).
    Ah { len: u8 },
}

impl Ext {
    fn kind(self) -> u8 {
        match self {
            Ext::Options { kind, .. } => kind,
            Ext::Fragment { .. } => 44,
            Ext::Ah { .. } => 51,
        }
    }

    fn bytes(self, next: u8) -> Vec<u8> {
        match self {
            Ext::Options { len, .. } => {
                let mut b = vec![0; (usize::from(len) + 1) * 8];
                b[0] = next;
                b[1] = len;
                b
            }
            Ext::Fragment { offset, more } => {
                let word = (offset << 3) | u16::from(more);
                let mut b = vec![next, 0];
                b.extend_from_slice(&word.to_be_bytes());
                b.extend_from_slice(&0x1234_5678u32.to_be_bytes());
                b
            }
            Ext::Ah { len } => {
                let mut b = vec![0; (usize::from(len) + 2) * 4];
                b[0] = next;
                b[1] = len;
                b
            }
        }
    }
}

/// The tunnel header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tunnel {
    /// VXLAN with these flags (0x08, the I flag, for a valid one).
    Vxlan { vni: u32, flags: u8 },
    /// Geneve: `version` 0 for a valid one, `protocol` 0x6558 for Ethernet, `options` a
    /// multiple of 4 bytes (at most 252).
    Geneve { vni: u32, version: u8, protocol: u16, options: Vec<u8> },
}

impl Tunnel {
    #[must_use]
    pub fn vxlan(vni: u32) -> Tunnel {
        Tunnel::Vxlan { vni, flags: 0x08 }
    }

    #[must_use]
    pub fn geneve(vni: u32) -> Tunnel {
        Tunnel::Geneve { vni, version: 0, protocol: ETHERTYPE_TEB, options: Vec::new() }
    }

    fn bytes(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(8);
        let (vni, head) = match self {
            Tunnel::Vxlan { vni, flags } => (*vni, [*flags, 0, 0, 0]),
            Tunnel::Geneve { vni, version, protocol, options } => {
                assert!(options.len() % 4 == 0 && options.len() <= 252, "Geneve options");
                let [p0, p1] = protocol.to_be_bytes();
                let words = u8::try_from(options.len() / 4).expect("checked above");
                (*vni, [(version << 6) | words, 0, p0, p1])
            }
        };
        assert!(vni <= 0x00ff_ffff, "VNI {vni} does not fit in 24 bits");
        b.extend_from_slice(&head);
        b.extend_from_slice(&(vni << 8).to_be_bytes());
        if let Tunnel::Geneve { options, .. } = self {
            b.extend_from_slice(options);
        }
        b
    }
}

/// An encapsulated frame and where each of its layers starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encapsulated {
    pub frame: Vec<u8>,
    /// Offsets of the outer IP header, the UDP header, the tunnel header, the inner frame.
    pub ip: usize,
    pub udp: usize,
    pub tunnel: usize,
    pub inner: usize,
}

impl Encapsulated {
    /// `outer` (addresses and VLAN tags) carrying `ip`, then UDP to `dport`, then `tunnel`
    /// and the `inner` frame verbatim.
    #[must_use]
    pub fn build(
        outer: Frame,
        ip: &OuterIp,
        dport: u16,
        tunnel: &Tunnel,
        inner: &[u8],
    ) -> Encapsulated {
        let tunnel_bytes = tunnel.bytes();
        let udp_len = 8 + tunnel_bytes.len() + inner.len();
        let mut udp = Vec::with_capacity(udp_len);
        udp.extend_from_slice(&49152u16.to_be_bytes());
        udp.extend_from_slice(&dport.to_be_bytes());
        udp.extend_from_slice(&len16(udp_len).to_be_bytes());
        udp.extend_from_slice(&[0, 0]);
        udp.extend_from_slice(&tunnel_bytes);
        udp.extend_from_slice(inner);
        let (ethertype, mut l3) = match ip {
            OuterIp::V4 { options, frag } => {
                assert!(options.len() % 4 == 0 && options.len() <= 40, "IPv4 options");
                let hlen = 20 + options.len();
                let words = u8::try_from(hlen / 4).expect("checked above");
                let mut h = vec![0x40 | words, 0];
                h.extend_from_slice(&len16(hlen + udp_len).to_be_bytes());
                h.extend_from_slice(&[0x12, 0x34]);
                h.extend_from_slice(&frag.to_be_bytes());
                h.extend_from_slice(&[64, IPPROTO_UDP, 0, 0]);
                h.extend_from_slice(&[192, 0, 2, 1, 192, 0, 2, 2]);
                h.extend_from_slice(options);
                (ETHERTYPE_IPV4, h)
            }
            OuterIp::V6 { ext } => {
                let mut chain = Vec::new();
                for (i, e) in ext.iter().enumerate() {
                    let next = ext.get(i + 1).map_or(IPPROTO_UDP, |n| n.kind());
                    chain.extend_from_slice(&e.bytes(next));
                }
                let first = ext.first().map_or(IPPROTO_UDP, |e| e.kind());
                let mut h = vec![0x60, 0, 0, 0];
                h.extend_from_slice(&len16(chain.len() + udp_len).to_be_bytes());
                h.extend_from_slice(&[first, 64]);
                h.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
                h.extend_from_slice(&[0; 11]);
                h.push(1);
                h.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
                h.extend_from_slice(&[0; 11]);
                h.push(2);
                h.extend_from_slice(&chain);
                (ETHERTYPE_IPV6, h)
            }
        };
        let hdr_len = l3.len();
        let ip_at = outer.header_len();
        l3.extend_from_slice(&udp);
        let frame = outer.raw(ethertype, &l3);
        let udp_at = ip_at + hdr_len;
        Encapsulated {
            ip: ip_at,
            udp: udp_at,
            tunnel: udp_at + 8,
            inner: udp_at + 8 + tunnel_bytes.len(),
            frame,
        }
    }

    /// The frame cut to `len` bytes.
    #[must_use]
    pub fn cut(&self, len: usize) -> Vec<u8> {
        self.frame[..len.min(self.frame.len())].to_vec()
    }
}

fn len16(len: usize) -> u16 {
    u16::try_from(len).unwrap_or_else(|_| panic!("{len} bytes do not fit a 16-bit length"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const INNER: [u8; 14] = [2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00];

    #[test]
    fn layers_are_where_the_offsets_say() {
        let outer = Frame::ethernet([0xff; 6], [2; 6]).vlan(0x88a8, 10).vlan(0x8100, 20);
        let ip = OuterIp::V4 { options: vec![1; 8], frag: 0 };
        let e = Encapsulated::build(outer, &ip, 4789, &Tunnel::vxlan(0x12_3456), &INNER);
        assert_eq!(e.ip, 22);
        assert_eq!(e.frame[e.ip], 0x47, "IHL 7");
        assert_eq!(e.udp, 22 + 28);
        assert_eq!(&e.frame[e.udp + 2..e.udp + 4], &4789u16.to_be_bytes());
        assert_eq!(&e.frame[e.tunnel..e.tunnel + 8], &[0x08, 0, 0, 0, 0x12, 0x34, 0x56, 0]);
        assert_eq!(&e.frame[e.inner..e.inner + 14], &INNER);

        let ext = vec![
            Ext::Options { kind: 0, len: 1 },
            Ext::Fragment { offset: 0, more: true },
            Ext::Ah { len: 4 },
        ];
        let geneve = Tunnel::Geneve { vni: 7, version: 0, protocol: 0x6558, options: vec![9; 12] };
        let e = Encapsulated::build(
            Frame::ethernet([0xff; 6], [2; 6]),
            &OuterIp::V6 { ext },
            6081,
            &geneve,
            &INNER,
        );
        assert_eq!(e.frame[e.ip + 6], 0, "hop-by-hop first");
        assert_eq!(e.udp, 14 + 40 + 16 + 8 + 24);
        assert_eq!(e.frame[e.ip + 40], 44, "then the fragment header");
        assert_eq!(e.frame[e.ip + 56], 51, "then AH");
        assert_eq!(e.frame[e.ip + 64], IPPROTO_UDP, "then UDP");
        assert_eq!(e.frame[e.tunnel], 3, "opt_len 3 words");
        assert_eq!(e.inner, e.tunnel + 8 + 12);
        assert_eq!(&e.frame[e.inner..e.inner + 14], &INNER);
    }
}
