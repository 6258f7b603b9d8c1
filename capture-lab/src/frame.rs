//! Ethernet frame builder: enough of Ethernet, 802.1Q/802.1ad, IPv4, UDP, ICMP and ARP
//! to produce frames that look like a VM's on the wire.
//!
//! The builders panic on impossible input (a VID above 4095, an IPv4 payload above 64 KiB):
//! they are test helpers and such input is a bug in the caller.

/// Minimum Ethernet frame length without FCS; shorter frames are zero-padded to it,
/// as a real NIC (and therefore a real capture) would show them.
pub const ETH_ZLEN: usize = 60;
pub const TPID_8021Q: u16 = 0x8100;
pub const TPID_8021AD: u16 = 0x88a8;
pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_ARP: u16 = 0x0806;

const IPPROTO_ICMP: u8 = 1;
const IPPROTO_UDP: u8 = 17;
const IPV4_HEADER_LEN: usize = 20;
const UDP_HEADER_LEN: usize = 8;
const ICMP_ECHO_REQUEST: u8 = 8;
const ARP_REQUEST: u16 = 1;
const ARP_REPLY: u16 = 2;
const ICMP_ECHO_REPLY: u8 = 0;

/// An Ethernet header under construction (addresses, VLAN tags, IPv4 TTL);
/// one of the payload methods turns it into the frame's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    dst: [u8; 6],
    src: [u8; 6],
    /// (TPID, TCI), outermost first.
    tags: Vec<(u16, u16)>,
    ttl: u8,
}

impl Frame {
    #[must_use]
    pub fn ethernet(dst: [u8; 6], src: [u8; 6]) -> Frame {
        Frame { dst, src, tags: Vec::new(), ttl: 64 }
    }

    /// Pushes a VLAN tag with priority 0; the first call is the outermost tag,
    /// e.g. `.vlan(TPID_8021AD, 10).vlan(TPID_8021Q, 20)` for QinQ.
    #[must_use]
    pub fn vlan(self, tpid: u16, vid: u16) -> Frame {
        assert!(vid <= 0x0fff, "VLAN id {vid} does not fit in 12 bits");
        self.vlan_tci(tpid, vid)
    }

    /// Pushes a tag with a full TCI (PCP, DEI and VID), to test that matching looks at the VID only.
    #[must_use]
    pub fn vlan_tci(mut self, tpid: u16, tci: u16) -> Frame {
        self.tags.push((tpid, tci));
        self
    }

    /// Bytes of the Ethernet header with its VLAN tags: where the payload starts.
    #[must_use]
    pub fn header_len(&self) -> usize {
        14 + 4 * self.tags.len()
    }

    /// IPv4 TTL for the IPv4 payloads (default 64); a routed copy of a packet has one less.
    #[must_use]
    pub fn ttl(mut self, ttl: u8) -> Frame {
        self.ttl = ttl;
        self
    }

    /// IPv4 (DF set, no options) carrying UDP; both checksums are correct.
    pub fn ipv4_udp(
        self,
        src_ip: [u8; 4],
        dst_ip: [u8; 4],
        sport: u16,
        dport: u16,
        payload: &[u8],
    ) -> Vec<u8> {
        let udp_len = len16(UDP_HEADER_LEN + payload.len(), "UDP datagram");
        let mut udp = Vec::with_capacity(usize::from(udp_len));
        udp.extend_from_slice(&sport.to_be_bytes());
        udp.extend_from_slice(&dport.to_be_bytes());
        udp.extend_from_slice(&udp_len.to_be_bytes());
        udp.extend_from_slice(&[0, 0]);
        udp.extend_from_slice(payload);
        let mut pseudo = Vec::with_capacity(12 + udp.len());
        pseudo.extend_from_slice(&src_ip);
        pseudo.extend_from_slice(&dst_ip);
        pseudo.extend_from_slice(&[0, IPPROTO_UDP]);
        pseudo.extend_from_slice(&udp_len.to_be_bytes());
        pseudo.extend_from_slice(&udp);
        // 0 means "no checksum" in UDP, so a computed 0 is sent as all-ones (RFC 768).
        let sum = match internet_checksum(&pseudo) {
            0 => 0xffff,
            s => s,
        };
        udp[6..8].copy_from_slice(&sum.to_be_bytes());
        self.ipv4(IPPROTO_UDP, src_ip, dst_ip, &udp)
    }

    /// ICMP echo request; IPv4 and ICMP checksums are correct.
    pub fn icmp_echo(
        self,
        src_ip: [u8; 4],
        dst_ip: [u8; 4],
        id: u16,
        seq: u16,
        payload: &[u8],
    ) -> Vec<u8> {
        self.icmp(ICMP_ECHO_REQUEST, src_ip, dst_ip, id, seq, payload)
    }

    /// ICMP echo reply, the answer to [`Frame::icmp_echo`].
    pub fn icmp_echo_reply(
        self,
        src_ip: [u8; 4],
        dst_ip: [u8; 4],
        id: u16,
        seq: u16,
        payload: &[u8],
    ) -> Vec<u8> {
        self.icmp(ICMP_ECHO_REPLY, src_ip, dst_ip, id, seq, payload)
    }

    /// ARP "who has target_ip" for IPv4 over Ethernet; the target MAC is left zero.
    /// The Ethernet destination is whatever `ethernet()` was given (normally broadcast).
    pub fn arp_request(
        self,
        sender_mac: [u8; 6],
        sender_ip: [u8; 4],
        target_ip: [u8; 4],
    ) -> Vec<u8> {
        self.arp(ARP_REQUEST, sender_mac, sender_ip, [0; 6], target_ip)
    }

    /// ARP "target_ip is at sender_mac" answering a request from `target_mac`/`target_ip`,
    /// which is what a VM's NIC sends back when the host asks for its address.
    pub fn arp_reply(
        self,
        sender_mac: [u8; 6],
        sender_ip: [u8; 4],
        target_mac: [u8; 6],
        target_ip: [u8; 4],
    ) -> Vec<u8> {
        self.arp(ARP_REPLY, sender_mac, sender_ip, target_mac, target_ip)
    }

    /// An ARP packet for IPv4 over Ethernet with operation `op`.
    fn arp(
        self,
        op: u16,
        sender_mac: [u8; 6],
        sender_ip: [u8; 4],
        target_mac: [u8; 6],
        target_ip: [u8; 4],
    ) -> Vec<u8> {
        let mut arp = Vec::with_capacity(28);
        arp.extend_from_slice(&1u16.to_be_bytes()); // hardware type: Ethernet
        arp.extend_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
        arp.extend_from_slice(&[6, 4]);
        arp.extend_from_slice(&op.to_be_bytes());
        arp.extend_from_slice(&sender_mac);
        arp.extend_from_slice(&sender_ip);
        arp.extend_from_slice(&target_mac);
        arp.extend_from_slice(&target_ip);
        self.raw(ETHERTYPE_ARP, &arp)
    }

    /// Header, tags, `ethertype`, then `payload` verbatim (zero-padded to [`ETH_ZLEN`]).
    pub fn raw(self, ethertype: u16, payload: &[u8]) -> Vec<u8> {
        let len = 14 + 4 * self.tags.len() + payload.len();
        let mut out = Vec::with_capacity(len.max(ETH_ZLEN));
        out.extend_from_slice(&self.dst);
        out.extend_from_slice(&self.src);
        for (tpid, tci) in &self.tags {
            out.extend_from_slice(&tpid.to_be_bytes());
            out.extend_from_slice(&tci.to_be_bytes());
        }
        out.extend_from_slice(&ethertype.to_be_bytes());
        out.extend_from_slice(payload);
        if out.len() < ETH_ZLEN {
            out.resize(ETH_ZLEN, 0);
        }
        out
    }

    fn icmp(
        self,
        kind: u8,
        src_ip: [u8; 4],
        dst_ip: [u8; 4],
        id: u16,
        seq: u16,
        payload: &[u8],
    ) -> Vec<u8> {
        let mut icmp = Vec::with_capacity(8 + payload.len());
        icmp.extend_from_slice(&[kind, 0, 0, 0]);
        icmp.extend_from_slice(&id.to_be_bytes());
        icmp.extend_from_slice(&seq.to_be_bytes());
        icmp.extend_from_slice(payload);
        let sum = internet_checksum(&icmp);
        icmp[2..4].copy_from_slice(&sum.to_be_bytes());
        self.ipv4(IPPROTO_ICMP, src_ip, dst_ip, &icmp)
    }

    fn ipv4(self, proto: u8, src_ip: [u8; 4], dst_ip: [u8; 4], l4: &[u8]) -> Vec<u8> {
        let total = len16(IPV4_HEADER_LEN + l4.len(), "IPv4 packet");
        let mut ip = Vec::with_capacity(usize::from(total));
        ip.extend_from_slice(&[0x45, 0]); // version 4, 20-byte header; DSCP 0
        ip.extend_from_slice(&total.to_be_bytes());
        ip.extend_from_slice(&[0, 0, 0x40, 0]); // id 0 with DF set, as Linux sends unfragmentable packets
        ip.extend_from_slice(&[self.ttl, proto, 0, 0]);
        ip.extend_from_slice(&src_ip);
        ip.extend_from_slice(&dst_ip);
        let sum = internet_checksum(&ip);
        ip[10..12].copy_from_slice(&sum.to_be_bytes());
        ip.extend_from_slice(l4);
        self.raw(ETHERTYPE_IPV4, &ip)
    }
}

/// The RFC 1071 checksum. Over data that already contains its correct checksum it is 0,
/// which is how callers validate one.
pub fn internet_checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)])))
        .fold(0u32, u32::wrapping_add);
    // Each 16-bit word adds at most 0xffff, so two folds always leave 16 bits for < 64 KiB inputs;
    // loop anyway so larger inputs are still right.
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let [_, _, hi, lo] = sum.to_be_bytes();
    !u16::from_be_bytes([hi, lo])
}

/// Parses "52:54:00:00:00:01". Panics on anything else: a test helper for literals.
pub fn mac(s: &str) -> [u8; 6] {
    let mut out = [0u8; 6];
    let mut parts = s.split(':');
    for byte in &mut out {
        let part = parts.next().unwrap_or_else(|| panic!("MAC {s:?} has fewer than 6 octets"));
        assert!(part.len() == 2, "MAC {s:?}: octet {part:?} is not two hex digits");
        *byte = u8::from_str_radix(part, 16)
            .unwrap_or_else(|_| panic!("MAC {s:?}: octet {part:?} is not hex"));
    }
    assert!(parts.next().is_none(), "MAC {s:?} has more than 6 octets");
    out
}

/// Parses "52:54:00:00:00:01" (either case) and says what is wrong otherwise; for text that
/// comes from the system, e.g. /sys/class/net/IF/address, where [`mac`]'s panic would not do.
pub fn parse_mac(s: &str) -> anyhow::Result<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = s.split(':');
    for byte in &mut out {
        let part = parts.next().unwrap_or_default();
        if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
            anyhow::bail!("{s:?} is not a MAC address like 52:54:00:00:00:01");
        }
        *byte = u8::from_str_radix(part, 16)?;
    }
    if parts.next().is_some() {
        anyhow::bail!("{s:?} has more than 6 octets");
    }
    Ok(out)
}

/// "52:54:00:00:00:01", the form `ip` takes and prints.
pub fn format_mac(mac: [u8; 6]) -> String {
    let [a, b, c, d, e, f] = mac;
    format!("{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{f:02x}")
}

fn len16(len: usize, what: &str) -> u16 {
    u16::try_from(len).unwrap_or_else(|_| panic!("{what} of {len} bytes exceeds IPv4's 65535"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DST: [u8; 6] = [0x52, 0x54, 0, 0, 0, 0x02];
    const SRC: [u8; 6] = [0x52, 0x54, 0, 0, 0, 0x01];

    fn be16(b: &[u8], at: usize) -> u16 {
        u16::from_be_bytes([b[at], b[at + 1]])
    }

    #[test]
    fn mac_parses_and_rejects() {
        assert_eq!(mac("52:54:00:00:00:01"), SRC);
        assert_eq!(mac("ff:FF:ff:ff:ff:ff"), [0xff; 6]);
        for bad in [
            "",
            "52:54:00:00:00",
            "52:54:00:00:00:01:02",
            "52:54:00:00:00:1",
            "52:54:00:00:00:zz",
            "52-54-00-00-00-01",
        ] {
            assert!(std::panic::catch_unwind(|| mac(bad)).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn parse_and_format_mac_round_trip() {
        assert_eq!(parse_mac("52:54:00:0A:bc:01").unwrap(), [0x52, 0x54, 0, 0x0a, 0xbc, 1]);
        assert_eq!(format_mac([0x52, 0x54, 0, 0x0a, 0xbc, 1]), "52:54:00:0a:bc:01");
        for bad in
            ["", "52:54:00:00:00", "52:54:00:00:00:01:02", "52:54:00:00:00:1", "+1:54:00:00:00:01"]
        {
            assert!(parse_mac(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn arp_reply_layout() {
        let f = Frame::ethernet(DST, SRC).arp_reply(SRC, [10, 0, 9, 2], DST, [10, 0, 9, 1]);
        assert_eq!(f.len(), ETH_ZLEN);
        assert_eq!(be16(&f, 12), ETHERTYPE_ARP);
        let arp = &f[14..42];
        assert_eq!(arp[..8], [0, 1, 0x08, 0x00, 6, 4, 0, 2]);
        assert_eq!(&arp[8..14], &SRC);
        assert_eq!(&arp[14..18], &[10, 0, 9, 2]);
        assert_eq!(&arp[18..24], &DST);
        assert_eq!(&arp[24..28], &[10, 0, 9, 1]);
    }

    #[test]
    fn checksum_matches_known_ipv4_header() {
        // The classic example header from Wikipedia's "IPv4 header checksum" article.
        let hdr = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(internet_checksum(&hdr), 0xb861);
        // Odd length: the last byte is padded with zero.
        assert_eq!(internet_checksum(&[0x01]), !0x0100);
    }

    #[test]
    fn raw_untagged_layout_and_padding() {
        let f = Frame::ethernet(DST, SRC).raw(0x88b5, b"abc");
        assert_eq!(f.len(), ETH_ZLEN);
        assert_eq!(&f[0..6], &DST);
        assert_eq!(&f[6..12], &SRC);
        assert_eq!(be16(&f, 12), 0x88b5);
        assert_eq!(&f[14..17], b"abc");
        assert!(f[17..].iter().all(|&b| b == 0));

        // Long frames are not padded or truncated.
        let f = Frame::ethernet(DST, SRC).raw(0x88b5, &[7; 1500]);
        assert_eq!(f.len(), 1514);
    }

    #[test]
    fn qinq_tags_in_order() {
        let f = Frame::ethernet(DST, SRC).vlan(TPID_8021AD, 10).vlan(TPID_8021Q, 20).ipv4_udp(
            [10, 0, 0, 1],
            [10, 0, 0, 2],
            1000,
            2000,
            &[0xaa; 100],
        );
        assert_eq!(be16(&f, 12), TPID_8021AD);
        assert_eq!(be16(&f, 14), 10);
        assert_eq!(be16(&f, 16), TPID_8021Q);
        assert_eq!(be16(&f, 18), 20);
        assert_eq!(be16(&f, 20), ETHERTYPE_IPV4);
        assert_eq!(f.len(), 14 + 8 + 20 + 8 + 100);
        assert_eq!(f[22], 0x45);
    }

    #[test]
    fn vlan_tci_keeps_priority_bits() {
        let f = Frame::ethernet(DST, SRC).vlan_tci(TPID_8021Q, (5 << 13) | 100).raw(0x0800, &[]);
        assert_eq!(be16(&f, 14), 0xa064);
        assert_eq!(f.len(), ETH_ZLEN);
    }

    #[test]
    #[should_panic(expected = "12 bits")]
    fn vlan_rejects_vid_over_4095() {
        let _ = Frame::ethernet(DST, SRC).vlan(TPID_8021Q, 4096);
    }

    #[test]
    fn ipv4_udp_layout_and_checksums() {
        let payload = b"hello, capture";
        let f = Frame::ethernet(DST, SRC).vlan(TPID_8021Q, 100).ipv4_udp(
            [10, 0, 100, 11],
            [10, 0, 0, 1],
            40000,
            53,
            payload,
        );
        let ip = &f[18..];
        assert_eq!(be16(&f, 16), ETHERTYPE_IPV4);
        assert_eq!(ip[0], 0x45);
        let total = usize::from(be16(ip, 2));
        assert_eq!(total, 20 + 8 + payload.len());
        assert_eq!(be16(ip, 6), 0x4000, "DF, offset 0");
        assert_eq!(ip[8], 64);
        assert_eq!(ip[9], 17);
        assert_eq!(internet_checksum(&ip[..20]), 0, "IPv4 header checksum validates");
        assert_eq!(&ip[12..16], &[10, 0, 100, 11]);
        assert_eq!(&ip[16..20], &[10, 0, 0, 1]);
        let udp = &ip[20..total];
        assert_eq!(be16(udp, 0), 40000);
        assert_eq!(be16(udp, 2), 53);
        assert_eq!(usize::from(be16(udp, 4)), 8 + payload.len());
        assert_ne!(be16(udp, 6), 0);
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&ip[12..20]);
        pseudo.extend_from_slice(&[0, 17]);
        pseudo.extend_from_slice(&udp[4..6]);
        pseudo.extend_from_slice(udp);
        assert_eq!(internet_checksum(&pseudo), 0, "UDP checksum validates");
        assert_eq!(&udp[8..], payload);
        // 18 + 42 < 60: padded after the IP packet, not counted in its length.
        assert_eq!(f.len(), ETH_ZLEN);
    }

    #[test]
    fn ttl_is_settable() {
        let f = Frame::ethernet(DST, SRC).ttl(63).ipv4_udp([1; 4], [2; 4], 1, 2, &[]);
        assert_eq!(f[14 + 8], 63);
        assert_eq!(internet_checksum(&f[14..34]), 0);
    }

    #[test]
    fn icmp_echo_layout_and_checksums() {
        let payload = [0x5a; 56];
        for (f, kind) in [
            (
                Frame::ethernet(DST, SRC).icmp_echo(
                    [10, 0, 0, 2],
                    [10, 0, 0, 1],
                    0x1234,
                    7,
                    &payload,
                ),
                8,
            ),
            (
                Frame::ethernet(SRC, DST).icmp_echo_reply(
                    [10, 0, 0, 1],
                    [10, 0, 0, 2],
                    0x1234,
                    7,
                    &payload,
                ),
                0,
            ),
        ] {
            assert_eq!(f.len(), 14 + 20 + 8 + 56);
            assert_eq!(be16(&f, 12), ETHERTYPE_IPV4);
            let ip = &f[14..];
            assert_eq!(ip[9], 1);
            assert_eq!(internet_checksum(&ip[..20]), 0);
            let icmp = &ip[20..];
            assert_eq!(icmp[0], kind);
            assert_eq!(icmp[1], 0);
            assert_eq!(be16(icmp, 4), 0x1234);
            assert_eq!(be16(icmp, 6), 7);
            assert_eq!(internet_checksum(icmp), 0);
        }
    }

    #[test]
    fn arp_request_layout() {
        let f = Frame::ethernet([0xff; 6], SRC).vlan(TPID_8021Q, 200).arp_request(
            SRC,
            [10, 0, 200, 21],
            [10, 0, 0, 1],
        );
        assert_eq!(f.len(), ETH_ZLEN);
        assert_eq!(&f[0..6], &[0xff; 6]);
        assert_eq!(be16(&f, 12), TPID_8021Q);
        assert_eq!(be16(&f, 14), 200);
        assert_eq!(be16(&f, 16), ETHERTYPE_ARP);
        let arp = &f[18..46];
        assert_eq!(arp[..8], [0, 1, 0x08, 0x00, 6, 4, 0, 1]);
        assert_eq!(&arp[8..14], &SRC);
        assert_eq!(&arp[14..18], &[10, 0, 200, 21]);
        assert_eq!(&arp[18..24], &[0; 6]);
        assert_eq!(&arp[24..28], &[10, 0, 0, 1]);
        assert!(f[46..].iter().all(|&b| b == 0));
    }

    #[test]
    fn max_sizes() {
        // 1472 bytes of UDP payload is the largest that fits a 1500 MTU: a 1514-byte frame.
        let f = Frame::ethernet(DST, SRC).ipv4_udp([1; 4], [2; 4], 1, 2, &[0; 1472]);
        assert_eq!(f.len(), 1514);
        let f = Frame::ethernet(DST, SRC)
            .vlan(TPID_8021Q, 1)
            .ipv4_udp([1; 4], [2; 4], 1, 2, &[0; 1472]);
        assert_eq!(f.len(), 1518);
    }
}
