//! pcapng block encoding (<https://www.ietf.org/archive/id/draft-ietf-opsawg-pcapng-03.html>).
//!
//! Every encoder appends one whole block to a caller-owned `Vec<u8>`, so the writer can batch
//! thousands of blocks into one `write` call. Everything is little-endian: that is the host order
//! on our targets, and the Section Header's byte-order magic tells readers so anyway.
//!
//! [`encode_epb`] is the per-packet hot path: one `reserve`, the header and the trailer (with
//! the epb_flags option, when there are flags) stored straight into the buffer around one copy
//! of the data, no allocation once the buffer has capacity.

use std::io::{self, Read, Seek, Write as _};

/// Block type of the Section Header Block (a palindrome, so it reads the same in either order).
pub const BT_SHB: u32 = 0x0A0D_0D0A;
/// Block type of the Interface Description Block.
pub const BT_IDB: u32 = 0x0000_0001;
/// Block type of the Interface Statistics Block.
pub const BT_ISB: u32 = 0x0000_0005;
/// Block type of the Enhanced Packet Block.
pub const BT_EPB: u32 = 0x0000_0006;
/// Byte-order magic as written in our (little-endian) sections.
pub const BYTE_ORDER_MAGIC: u32 = 0x1A2B_3C4D;
/// LINKTYPE_ETHERNET.
pub const LINKTYPE_ETHERNET: u16 = 1;
/// if_tsresol value: 10^-9 s, i.e. every timestamp we write is in nanoseconds.
pub const TSRESOL_NANOSECONDS: u8 = 9;

/// Largest captured length we write. Wireshark (wiretap) refuses a packet longer than this and
/// stops reading the file there, so longer data is cut rather than making the rest unreadable.
pub const MAX_CAPLEN: usize = 262_144;

/// Fixed bytes of an EPB around its data: 28 of header, 4 of trailing length.
pub const EPB_OVERHEAD: usize = 32;
/// Option bytes of an EPB with a non-zero epb_flags: the epb_flags option (4 of code and length,
/// 4 of value) and opt_endofopt (4).
pub const EPB_FLAGS_OPTIONS_LEN: usize = 12;

// Option codes (pcapng §3.5 and the per-block option tables).
const OPT_ENDOFOPT: u16 = 0;
const OPT_COMMENT: u16 = 1;
const SHB_HARDWARE: u16 = 2;
const SHB_OS: u16 = 3;
const SHB_USERAPPL: u16 = 4;
const IF_NAME: u16 = 2;
const IF_DESCRIPTION: u16 = 3;
const IF_TSRESOL: u16 = 9;
const ISB_STARTTIME: u16 = 2;
const ISB_ENDTIME: u16 = 3;
const ISB_IFRECV: u16 = 4;
const ISB_FILTERACCEPT: u16 = 6;
const ISB_OSDROP: u16 = 7;
const ISB_USRDELIV: u16 = 8;
const EPB_FLAGS: u16 = 2;
/// The epb_flags option's code and length (4) as one little-endian word.
const EPB_FLAGS_OPTION_HEAD: u32 = EPB_FLAGS as u32 | (4 << 16);

/// What the Section Header Block says about the capturing machine and program.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SectionInfo {
    /// shb_hardware, e.g. the CPU model. Empty: option left out.
    pub hardware: String,
    /// shb_os, e.g. `Linux 6.1.0-18-amd64`. Empty: option left out.
    pub os: String,
    /// shb_userappl, e.g. `capture-daemon 0.1.0`. Empty: option left out.
    pub application: String,
}

/// One captured interface, written as an Interface Description Block (Ethernet, ns timestamps).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InterfaceInfo {
    /// if_name, e.g. `eth0` or `eth0:q3`. Empty: option left out.
    pub name: String,
    /// if_description, free text (which VMs are targeted, ...). Empty: option left out.
    pub description: String,
    /// Largest captured length per packet; 0 means "no limit" in pcapng.
    pub snaplen: u32,
}

/// Counters for one interface over one file, written as an Interface Statistics Block.
/// Timestamps are nanoseconds since the Unix epoch (UTC), counters are since capture start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InterfaceStats {
    /// isb_starttime: when counting started.
    pub start_ns: u64,
    /// isb_endtime, and the block's own timestamp: when these values were taken.
    pub end_ns: u64,
    /// isb_ifrecv: packets the interface received.
    pub received: u64,
    /// isb_osdrop: packets the kernel dropped (e.g. AF_XDP ring full).
    pub kernel_drops: u64,
    /// isb_filteraccept: packets the XDP filter selected.
    pub accepted: u64,
    /// isb_usrdeliv: packets that reached this writer.
    pub delivered: u64,
    /// Packets dropped inside the daemon (hand-off queue full). pcapng has no option for these,
    /// so they go into an opt_comment "userspace drops: N".
    pub user_drops: u64,
}

/// Bytes of padding that bring `len` to a multiple of 4.
#[inline]
const fn pad4(len: usize) -> usize {
    (4 - (len & 3)) & 3
}

/// Starts a block: type and a placeholder total length that [`end_block`] fills in.
fn begin_block(buf: &mut Vec<u8>, block_type: u32) -> usize {
    let start = buf.len();
    buf.extend_from_slice(&block_type.to_le_bytes());
    buf.extend_from_slice(&0u32.to_le_bytes());
    start
}

/// Ends the block begun at `start`: writes the trailing length and patches the leading one.
fn end_block(buf: &mut Vec<u8>, start: usize) {
    // Blocks built here are a few KiB at most (options are capped at u16::MAX each).
    let total = u32::try_from(buf.len() - start + 4).unwrap_or(u32::MAX);
    buf.extend_from_slice(&total.to_le_bytes());
    buf[start + 4..start + 8].copy_from_slice(&total.to_le_bytes());
}

/// Appends one option (code, length, value, padding).
fn put_option(buf: &mut Vec<u8>, code: u16, value: &[u8]) {
    // An option's length field is 16 bits; longer values are cut (callers cut strings on a
    // char boundary first so the value stays valid UTF-8).
    let value = &value[..value.len().min(usize::from(u16::MAX))];
    let len = u16::try_from(value.len()).unwrap_or(u16::MAX);
    buf.extend_from_slice(&code.to_le_bytes());
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(value);
    buf.extend_from_slice(&[0u8; 3][..pad4(value.len())]);
}

/// Appends a UTF-8 string option, left out when empty (an empty string says nothing).
fn put_str_option(buf: &mut Vec<u8>, code: u16, value: &str) {
    if value.is_empty() {
        return;
    }
    let mut end = value.len().min(usize::from(u16::MAX));
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    put_option(buf, code, &value.as_bytes()[..end]);
}

/// Appends a 64-bit timestamp option, high 32 bits first as pcapng splits timestamps.
fn put_ts_option(buf: &mut Vec<u8>, code: u16, ts_ns: u64) {
    let mut value = [0u8; 8];
    value[..4].copy_from_slice(&ts_high(ts_ns).to_le_bytes());
    value[4..].copy_from_slice(&ts_low(ts_ns).to_le_bytes());
    put_option(buf, code, &value);
}

#[inline]
const fn ts_high(ts: u64) -> u32 {
    (ts >> 32) as u32
}

#[inline]
const fn ts_low(ts: u64) -> u32 {
    // Keeping the low half is the point.
    #[allow(clippy::cast_possible_truncation)]
    let low = ts as u32;
    low
}

fn put_end_of_options(buf: &mut Vec<u8>) {
    buf.extend_from_slice(&OPT_ENDOFOPT.to_le_bytes());
    buf.extend_from_slice(&0u16.to_le_bytes());
}

/// Appends a Section Header Block: version 1.0, section length -1 (unknown: we stream).
pub fn encode_shb(buf: &mut Vec<u8>, section: &SectionInfo) {
    let start = begin_block(buf, BT_SHB);
    buf.extend_from_slice(&BYTE_ORDER_MAGIC.to_le_bytes());
    buf.extend_from_slice(&1u16.to_le_bytes());
    buf.extend_from_slice(&0u16.to_le_bytes());
    buf.extend_from_slice(&(-1i64).to_le_bytes());
    put_str_option(buf, SHB_HARDWARE, &section.hardware);
    put_str_option(buf, SHB_OS, &section.os);
    put_str_option(buf, SHB_USERAPPL, &section.application);
    put_end_of_options(buf);
    end_block(buf, start);
}

/// Appends an Interface Description Block: Ethernet, if_tsresol = 9 (nanoseconds).
pub fn encode_idb(buf: &mut Vec<u8>, interface: &InterfaceInfo) {
    let start = begin_block(buf, BT_IDB);
    buf.extend_from_slice(&LINKTYPE_ETHERNET.to_le_bytes());
    buf.extend_from_slice(&0u16.to_le_bytes()); // reserved
    buf.extend_from_slice(&interface.snaplen.to_le_bytes());
    put_str_option(buf, IF_NAME, &interface.name);
    put_str_option(buf, IF_DESCRIPTION, &interface.description);
    put_option(buf, IF_TSRESOL, &[TSRESOL_NANOSECONDS]);
    put_end_of_options(buf);
    end_block(buf, start);
}

/// Appends an Enhanced Packet Block.
///
/// `ts_ns` is nanoseconds since the Unix epoch (the IDB says if_tsresol = 9). The captured length
/// is `data.len()` (cut to [`MAX_CAPLEN`]); `orig_len` is the frame's length on the wire and
/// should be >= `data.len()`. `flags` is the epb_flags word (bits 0-1: direction, 1 inbound,
/// 2 outbound): when non-zero the block carries it as its only option (then opt_endofopt), when
/// 0 the block has no options. The block is [`epb_len`]`(data.len(), flags)` bytes. Allocates
/// nothing when `buf` has `data.len() + 51` spare bytes (the block's overhead, up to 3 of
/// padding, 12 of options, and 4 it may touch past the block).
#[inline]
pub fn encode_epb(
    buf: &mut Vec<u8>,
    interface_id: u32,
    ts_ns: u64,
    data: &[u8],
    orig_len: u32,
    flags: u32,
) {
    let data = &data[..data.len().min(MAX_CAPLEN)];
    let caplen = data.len();
    let pad = pad4(caplen);
    let total = epb_len(caplen, flags);
    #[expect(clippy::cast_possible_truncation, reason = "data is at most MAX_CAPLEN")]
    let (caplen32, total32) = (caplen as u32, total as u32);
    let head = [BT_EPB, total32, interface_id, ts_high(ts_ns), ts_low(ts_ns), caplen32, orig_len];

    // One reserve, then the header, the data, and padding, options and trailing length written
    // straight into the spare capacity.
    buf.reserve(total + 4);
    // SAFETY: `reserve` made room for total + 4 bytes after `len`. The header and data fill
    // [len, len + 28 + caplen). Without options, the tail is one 8-byte store at 28 + caplen:
    // `pad` zero bytes, the length, and 4 - pad bytes past the block, which stay outside `len`
    // (hence the 4 bytes of extra room). With the flags option, the block goes on for
    // pad + 16 bytes after the data (>= 8): one 8-byte store puts the `pad` zeros and the option
    // header, plus 4 - pad bytes that the next store overwrites; then one 12-byte store at
    // 28 + caplen + pad + 4 ends exactly at `total`. Either way set_len covers exactly the
    // `total` bytes written.
    unsafe {
        let p = buf.as_mut_ptr().add(buf.len());
        p.cast::<[u32; 7]>().write_unaligned(head.map(u32::to_le));
        std::ptr::copy_nonoverlapping(data.as_ptr(), p.add(28), caplen);
        let tail = p.add(28 + caplen);
        if flags == 0 {
            tail.cast::<u64>().write_unaligned((u64::from(total32) << (8 * pad)).to_le());
        } else {
            tail.cast::<u64>()
                .write_unaligned((u64::from(EPB_FLAGS_OPTION_HEAD) << (8 * pad)).to_le());
            // The flags value, opt_endofopt (code 0, length 0) and the trailing length.
            tail.add(pad + 4)
                .cast::<[u32; 3]>()
                .write_unaligned([flags, 0, total32].map(u32::to_le));
        }
        buf.set_len(buf.len() + total);
    }
}

/// Appends an Enhanced Packet Block that carries `comment` as well: `comment` is an encoded
/// opt_comment option ([`comment_option`]), written first, then epb_flags when `flags` is
/// non-zero, then opt_endofopt. An empty `comment` (or one that is no padded option) writes
/// exactly what [`encode_epb`] writes. No allocation once `buf` has room for the block and 4
/// bytes more.
#[inline]
pub fn encode_epb_commented(
    buf: &mut Vec<u8>,
    interface_id: u32,
    ts_ns: u64,
    data: &[u8],
    orig_len: u32,
    flags: u32,
    comment: &[u8],
) {
    // An encoded option is at least 4 bytes, padded to 4: anything else is no option.
    if comment.len() < 4 || !comment.len().is_multiple_of(4) {
        encode_epb(buf, interface_id, ts_ns, data, orig_len, flags);
        return;
    }
    let data = &data[..data.len().min(MAX_CAPLEN)];
    let caplen = data.len();
    // Options: the comment, epb_flags (8) if any, opt_endofopt (4).
    let options = comment.len() + if flags == 0 { 0 } else { 8 } + 4;
    let total = EPB_OVERHEAD + caplen + pad4(caplen) + options;
    #[expect(clippy::cast_possible_truncation, reason = "data is at most MAX_CAPLEN")]
    let (caplen32, total32) = (caplen as u32, total as u32);
    let head = [BT_EPB, total32, interface_id, ts_high(ts_ns), ts_low(ts_ns), caplen32, orig_len];
    let pad = pad4(caplen);
    buf.reserve(total);
    // SAFETY: `reserve` made room for `total` bytes after `len`, and every store below lies in
    // [len, len + total): the header (28), the data, 4 zero bytes at the end of the data (pad
    // of them stay, the rest is overwritten by the comment, which is at least 4 bytes), the
    // comment, epb_flags (8) if any, then opt_endofopt and the trailing length (8), ending at
    // exactly `total`. set_len covers what was written.
    unsafe {
        let p = buf.as_mut_ptr().add(buf.len());
        p.cast::<[u32; 7]>().write_unaligned(head.map(u32::to_le));
        std::ptr::copy_nonoverlapping(data.as_ptr(), p.add(28), caplen);
        p.add(28 + caplen).cast::<u32>().write_unaligned(0);
        let mut at = 28 + caplen + pad;
        std::ptr::copy_nonoverlapping(comment.as_ptr(), p.add(at), comment.len());
        at += comment.len();
        if flags != 0 {
            p.add(at)
                .cast::<[u32; 2]>()
                .write_unaligned([EPB_FLAGS_OPTION_HEAD, flags].map(u32::to_le));
            at += 8;
        }
        p.add(at).cast::<[u32; 2]>().write_unaligned([0, total32].map(u32::to_le));
        buf.set_len(buf.len() + total);
    }
}

/// `text` as an encoded opt_comment option (code, length, the UTF-8 bytes, padding to 4), for
/// [`encode_epb_commented`]; empty for an empty text. Texts longer than an option holds are cut
/// on a char boundary.
pub fn comment_option(text: &str) -> Vec<u8> {
    let mut option = Vec::new();
    put_str_option(&mut option, OPT_COMMENT, text);
    option
}

/// Total length of the EPB [`encode_epb`] writes for `caplen` bytes of data (cut to
/// [`MAX_CAPLEN`]) and these `flags`: [`EPB_OVERHEAD`], the data padded to 4, and
/// [`EPB_FLAGS_OPTIONS_LEN`] when `flags` is non-zero.
#[inline]
pub const fn epb_len(caplen: usize, flags: u32) -> usize {
    let caplen = if caplen < MAX_CAPLEN { caplen } else { MAX_CAPLEN };
    let options = if flags == 0 { 0 } else { EPB_FLAGS_OPTIONS_LEN };
    EPB_OVERHEAD + caplen + pad4(caplen) + options
}

/// Appends an Interface Statistics Block for `interface_id`. The block's timestamp is
/// `stats.end_ns`; all timestamps use the interface's resolution (ns).
pub fn encode_isb(buf: &mut Vec<u8>, interface_id: u32, stats: &InterfaceStats) {
    let start = begin_block(buf, BT_ISB);
    buf.extend_from_slice(&interface_id.to_le_bytes());
    buf.extend_from_slice(&ts_high(stats.end_ns).to_le_bytes());
    buf.extend_from_slice(&ts_low(stats.end_ns).to_le_bytes());
    put_ts_option(buf, ISB_STARTTIME, stats.start_ns);
    put_ts_option(buf, ISB_ENDTIME, stats.end_ns);
    put_option(buf, ISB_IFRECV, &stats.received.to_le_bytes());
    put_option(buf, ISB_FILTERACCEPT, &stats.accepted.to_le_bytes());
    put_option(buf, ISB_OSDROP, &stats.kernel_drops.to_le_bytes());
    put_option(buf, ISB_USRDELIV, &stats.delivered.to_le_bytes());
    // Comment formatted straight into the buffer, its length patched afterwards.
    let opt = buf.len();
    buf.extend_from_slice(&OPT_COMMENT.to_le_bytes());
    buf.extend_from_slice(&0u16.to_le_bytes());
    // Writing into a Vec cannot fail.
    let _ = write!(buf, "userspace drops: {}", stats.user_drops);
    let len = buf.len() - opt - 4;
    buf[opt + 2..opt + 4].copy_from_slice(&u16::try_from(len).unwrap_or(u16::MAX).to_le_bytes());
    buf.extend_from_slice(&[0u8; 3][..pad4(len)]);
    put_end_of_options(buf);
    end_block(buf, start);
}

/// Length of the longest prefix of a pcapng stream made of whole, consistent blocks: the stream
/// must start with a little-endian Section Header Block, and each block's declared length must
/// be >= 12, a multiple of 4, within `len`, and repeated at its end. Returns 0 when not even a
/// whole Section Header Block is there. Used to cut a file left half-written by a crash.
///
/// Reads only block headers and trailers (seeking over bodies), so large files are cheap.
pub fn valid_prefix_len<R: Read + Seek>(reader: R, len: u64) -> io::Result<u64> {
    // Big buffer: with small blocks the seeks stay inside it and the file is read sequentially.
    let mut r = io::BufReader::with_capacity(1 << 20, reader);
    r.seek(io::SeekFrom::Start(0))?;
    let mut pos = 0u64;
    let mut first = true;
    loop {
        if len - pos < 12 {
            return Ok(pos);
        }
        let mut head = [0u8; 12];
        r.read_exact(&mut head)?;
        let block_type = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
        let block_len = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        if first {
            let magic = u32::from_le_bytes([head[8], head[9], head[10], head[11]]);
            if block_type != BT_SHB || magic != BYTE_ORDER_MAGIC {
                return Ok(0);
            }
            first = false;
        }
        let block_len64 = u64::from(block_len);
        if block_len < 12 || !block_len.is_multiple_of(4) || block_len64 > len - pos {
            return Ok(pos);
        }
        // Skip to the trailing length copy: we have read 12 bytes of the block.
        r.seek_relative(i64::from(block_len) - 16)?;
        let mut trailer = [0u8; 4];
        r.read_exact(&mut trailer)?;
        if u32::from_le_bytes(trailer) != block_len {
            return Ok(pos);
        }
        pos += block_len64;
    }
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation, reason = "test data is made from small counters")]
mod tests {
    use super::*;
    use capture_common::{DIRECTION_INBOUND, DIRECTION_OUTBOUND};
    use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketOption;
    use pcap_file::pcapng::blocks::interface_description::{
        InterfaceDescriptionOption, InterfaceTsResolution,
    };
    use pcap_file::pcapng::blocks::interface_statistics::InterfaceStatisticsOption;
    use pcap_file::pcapng::blocks::opt_common::CommonOption;
    use pcap_file::pcapng::blocks::section_header::SectionHeaderOption;
    use pcap_file::pcapng::{Block, PcapNgReader};
    use std::io::Cursor;
    use std::time::Duration;

    fn u32_at(buf: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(buf[at..at + 4].try_into().unwrap())
    }

    fn section() -> SectionInfo {
        SectionInfo {
            hardware: "x86_64 test box".into(),
            os: "Linux 6.1.0".into(),
            application: "capture-daemon 0.1.0".into(),
        }
    }

    fn header(interfaces: &[InterfaceInfo]) -> Vec<u8> {
        let mut buf = Vec::new();
        encode_shb(&mut buf, &section());
        for i in interfaces {
            encode_idb(&mut buf, i);
        }
        buf
    }

    /// Walks `buf` as blocks, checking the framing, and returns (type, offset, len) of each.
    fn blocks(buf: &[u8]) -> Vec<(u32, usize, usize)> {
        let mut out = Vec::new();
        let mut pos = 0;
        while pos < buf.len() {
            let len = u32_at(buf, pos + 4) as usize;
            assert!(len >= 12 && len.is_multiple_of(4), "bad block length {len} at {pos}");
            assert_eq!(u32_at(buf, pos + len - 4) as usize, len, "trailer mismatch at {pos}");
            out.push((u32_at(buf, pos), pos, len));
            pos += len;
        }
        assert_eq!(pos, buf.len());
        out
    }

    #[test]
    fn shb_layout_is_exact() {
        let mut buf = Vec::new();
        encode_shb(
            &mut buf,
            &SectionInfo { hardware: "hw".into(), os: "linux".into(), application: "app!".into() },
        );
        let mut want = Vec::new();
        want.extend_from_slice(&BT_SHB.to_le_bytes());
        want.extend_from_slice(&60u32.to_le_bytes());
        want.extend_from_slice(&[0x4D, 0x3C, 0x2B, 0x1A]);
        want.extend_from_slice(&[1, 0, 0, 0]);
        want.extend_from_slice(&[0xFF; 8]);
        want.extend_from_slice(&[2, 0, 2, 0, b'h', b'w', 0, 0]);
        want.extend_from_slice(&[3, 0, 5, 0, b'l', b'i', b'n', b'u', b'x', 0, 0, 0]);
        want.extend_from_slice(&[4, 0, 4, 0, b'a', b'p', b'p', b'!']);
        want.extend_from_slice(&[0, 0, 0, 0]);
        want.extend_from_slice(&60u32.to_le_bytes());
        assert_eq!(buf, want);
    }

    #[test]
    fn idb_layout_is_exact() {
        let mut buf = Vec::new();
        encode_idb(
            &mut buf,
            &InterfaceInfo { name: "eth0".into(), description: String::new(), snaplen: 0 },
        );
        let mut want = Vec::new();
        want.extend_from_slice(&BT_IDB.to_le_bytes());
        want.extend_from_slice(&40u32.to_le_bytes());
        want.extend_from_slice(&[1, 0, 0, 0]); // linktype 1, reserved
        want.extend_from_slice(&0u32.to_le_bytes()); // snaplen 0 = no limit
        want.extend_from_slice(&[2, 0, 4, 0, b'e', b't', b'h', b'0']);
        want.extend_from_slice(&[9, 0, 1, 0, 9, 0, 0, 0]);
        want.extend_from_slice(&[0, 0, 0, 0]);
        want.extend_from_slice(&40u32.to_le_bytes());
        assert_eq!(buf, want);
    }

    #[test]
    fn epb_layout_and_padding_for_every_remainder() {
        for flags in [0, DIRECTION_INBOUND, DIRECTION_OUTBOUND, 0xDEAD_BEEF] {
            for len in 0..=9usize {
                let data: Vec<u8> = (0..len).map(|i| 0xA0 + i as u8).collect();
                // Appends after existing content, into spare capacity holding stale bytes.
                let mut buf = vec![0xEE; 80];
                buf.truncate(3);
                let ts = 0x1234_5678_9ABC_DEF0u64;
                encode_epb(&mut buf, 7, ts, &data, 1500, flags);
                let b = &buf[3..];
                let padded = 28 + len.div_ceil(4) * 4;
                let options = if flags == 0 { 0 } else { 12 };
                let total = padded + options + 4;
                let what = format!("len {len}, flags {flags:#x}");
                assert_eq!(b.len(), total, "{what}");
                assert_eq!(epb_len(len, flags), total, "{what}");
                assert_eq!(u32_at(b, 0), BT_EPB);
                assert_eq!(u32_at(b, 4) as usize, total);
                assert_eq!(u32_at(b, 8), 7);
                assert_eq!(u32_at(b, 12), 0x1234_5678);
                assert_eq!(u32_at(b, 16), 0x9ABC_DEF0);
                assert_eq!(u32_at(b, 20) as usize, len);
                assert_eq!(u32_at(b, 24), 1500);
                assert_eq!(&b[28..28 + len], &data[..]);
                assert!(
                    b[28 + len..padded].iter().all(|&x| x == 0),
                    "padding must be zero: {what}"
                );
                if flags != 0 {
                    // epb_flags: code 2, length 4, the word; then opt_endofopt.
                    assert_eq!(&b[padded..padded + 4], &[2, 0, 4, 0], "{what}");
                    assert_eq!(u32_at(b, padded + 4), flags, "{what}");
                    assert_eq!(u32_at(b, padded + 8), 0, "{what}");
                }
                assert_eq!(u32_at(b, total - 4) as usize, total, "{what}");
                assert_eq!(&buf[..3], &[0xEE; 3]);
            }
        }
    }

    #[test]
    fn commented_epb_layout_for_every_padding() {
        for text_len in 1..=8usize {
            let text = "w".repeat(text_len);
            let comment = comment_option(&text);
            assert_eq!(comment.len(), 4 + text_len + pad4(text_len));
            assert_eq!(&comment[..4], &[1, 0, text_len as u8, 0]);
            for caplen in 60..64usize {
                for flags in [0, DIRECTION_INBOUND] {
                    let mut buf = Vec::new();
                    encode_epb_commented(&mut buf, 3, 7, &vec![0xAB; caplen], 99, flags, &comment);
                    let b = blocks(&buf);
                    assert_eq!(b.len(), 1);
                    let opts = 28 + caplen + pad4(caplen);
                    assert_eq!(&buf[opts..opts + comment.len()], &comment[..]);
                    let mut at = opts + comment.len();
                    if flags != 0 {
                        assert_eq!(u32_at(&buf, at), EPB_FLAGS_OPTION_HEAD);
                        assert_eq!(u32_at(&buf, at + 4), flags);
                        at += 8;
                    }
                    assert_eq!(u32_at(&buf, at), 0, "opt_endofopt");
                    assert_eq!(at + 8, buf.len());
                }
            }
        }
        // No comment: byte for byte the plain block.
        let (mut a, mut b) = (Vec::new(), Vec::new());
        encode_epb_commented(&mut a, 0, 1, &[1; 61], 61, DIRECTION_OUTBOUND, &[]);
        encode_epb(&mut b, 0, 1, &[1; 61], 61, DIRECTION_OUTBOUND);
        assert_eq!(a, b);
        assert!(comment_option("").is_empty());
    }

    #[test]
    fn pcap_file_reads_the_comment_back() {
        let mut buf = header(&[InterfaceInfo::default()]);
        let comment = comment_option("targets: web01, db01");
        encode_epb_commented(&mut buf, 0, 5, &[7; 60], 60, DIRECTION_INBOUND, &comment);
        let mut reader = PcapNgReader::new(Cursor::new(buf)).unwrap();
        let mut comments = Vec::new();
        while let Some(block) = reader.next_block() {
            if let (Block::EnhancedPacket(epb), _) = block.unwrap() {
                for o in &epb.options {
                    match o {
                        EnhancedPacketOption::Common(CommonOption::Comment(c)) => {
                            comments.push(c.to_string());
                        }
                        EnhancedPacketOption::Flags(f) => assert_eq!(*f, DIRECTION_INBOUND),
                        other => panic!("unexpected option {other:?}"),
                    }
                }
            }
        }
        assert_eq!(comments, ["targets: web01, db01"]);
    }

    #[test]
    fn epb_does_not_reallocate_with_capacity() {
        let mut buf = Vec::with_capacity(1 << 20);
        let ptr = buf.as_ptr();
        let data = [0x55u8; 1514];
        let mut want = 0;
        for i in 0..600u64 {
            let len = (i as usize * 7) % 1515;
            let flags = (i % 3) as u32;
            encode_epb(&mut buf, 0, i, &data[..len], 1514, flags);
            want += epb_len(len, flags);
        }
        assert_eq!(buf.as_ptr(), ptr);
        assert_eq!(buf.capacity(), 1 << 20);
        assert_eq!(buf.len(), want);
        assert_eq!(blocks(&buf).len(), 600);
    }

    #[test]
    fn epb_cuts_oversized_data() {
        let data = vec![1u8; MAX_CAPLEN + 10];
        for flags in [0, DIRECTION_OUTBOUND] {
            let mut buf = Vec::new();
            encode_epb(&mut buf, 0, 0, &data, 70_000_000, flags);
            assert_eq!(u32_at(&buf, 20) as usize, MAX_CAPLEN);
            assert_eq!(u32_at(&buf, 24), 70_000_000);
            assert_eq!(buf.len(), epb_len(data.len(), flags));
        }
        assert_eq!(epb_len(data.len(), 0), EPB_OVERHEAD + MAX_CAPLEN);
        assert_eq!(epb_len(data.len(), 1), EPB_OVERHEAD + MAX_CAPLEN + EPB_FLAGS_OPTIONS_LEN);
    }

    #[test]
    fn empty_strings_leave_options_out_and_long_ones_are_cut_on_char_boundary() {
        let mut buf = Vec::new();
        encode_shb(&mut buf, &SectionInfo::default());
        assert_eq!(buf.len(), 28 + 4); // fixed part + opt_endofopt only

        // 80,000 bytes of 2-byte chars: more than an option holds.
        let mut full = header(&[]);
        encode_idb(
            &mut full,
            &InterfaceInfo { name: "é".repeat(40_000), description: String::new(), snaplen: 9000 },
        );
        let mut reader = PcapNgReader::new(Cursor::new(full)).unwrap();
        let (block, _) = reader.next_block().unwrap().unwrap();
        let Block::InterfaceDescription(idb) = block else { panic!("not an IDB") };
        let name = idb
            .options
            .iter()
            .find_map(|o| match o {
                InterfaceDescriptionOption::IfName(n) => Some(n.to_string()),
                _ => None,
            })
            .unwrap();
        assert_eq!(name.len(), 65_534); // largest even length <= 65535
        assert!(name.chars().all(|c| c == 'é'));
    }

    #[test]
    fn pcap_file_reads_everything_back() {
        let ifs = [
            InterfaceInfo { name: "eth0".into(), description: "vm web-1".into(), snaplen: 0 },
            InterfaceInfo { name: "eth1".into(), description: "vm db-2".into(), snaplen: 128 },
        ];
        let mut buf = header(&ifs);
        // Flags cycle through none, inbound and outbound.
        let packets: Vec<(u32, u64, Vec<u8>, u32, u32)> = (0..50u32)
            .map(|i| {
                let len = (i * 37 % 200) as usize;
                let data = (0..len).map(|b| (b as u32 ^ i) as u8).collect();
                (i % 2, 1_700_000_000_123_456_789 + u64::from(i) * 1_001, data, 1000 + i, i % 3)
            })
            .collect();
        for (ifid, ts, data, orig, flags) in &packets {
            encode_epb(&mut buf, *ifid, *ts, data, *orig, *flags);
        }
        let stats = InterfaceStats {
            start_ns: 1_700_000_000_000_000_001,
            end_ns: 1_700_000_009_999_999_999,
            received: 1 << 40,
            kernel_drops: 3,
            accepted: 1234,
            delivered: 1200,
            user_drops: 34,
        };
        encode_isb(&mut buf, 1, &stats);
        blocks(&buf);

        let mut reader = PcapNgReader::new(Cursor::new(buf)).unwrap();
        let shb = reader.section().clone();
        assert_eq!(shb.major_version, 1);
        assert_eq!(shb.minor_version, 0);
        assert_eq!(shb.section_length, -1);
        assert_eq!(
            shb.options,
            vec![
                SectionHeaderOption::Hardware("x86_64 test box".into()),
                SectionHeaderOption::OS("Linux 6.1.0".into()),
                SectionHeaderOption::UserApplication("capture-daemon 0.1.0".into()),
            ]
        );
        let mut epbs = 0;
        let mut isb = None;
        while let Some(block) = reader.next_block() {
            match block.unwrap().0 {
                Block::InterfaceDescription(idb) => {
                    assert_eq!(idb.linktype, pcap_file::DataLink::ETHERNET);
                    assert_eq!(idb.ts_resolution(), InterfaceTsResolution::NANO);
                }
                Block::EnhancedPacket(epb) => {
                    let (ifid, ts, data, orig, flags) = &packets[epbs];
                    assert_eq!(epb.interface_id, *ifid);
                    assert_eq!(epb.timestamp, Duration::from_nanos(*ts));
                    assert_eq!(&epb.data[..], &data[..]);
                    assert_eq!(epb.original_len, *orig);
                    let want_options = if *flags == 0 {
                        vec![]
                    } else {
                        vec![EnhancedPacketOption::Flags(*flags)]
                    };
                    assert_eq!(epb.options, want_options, "packet {epbs}");
                    epbs += 1;
                }
                Block::InterfaceStatistics(b) => isb = Some(b.into_owned()),
                other => panic!("unexpected block {other:?}"),
            }
        }
        assert_eq!(epbs, packets.len());
        let idbs = reader.interfaces();
        assert_eq!(idbs.len(), 2);
        assert_eq!(idbs[1].snaplen, 128);
        assert_eq!(
            idbs[1].options[..2],
            [
                InterfaceDescriptionOption::IfName("eth1".into()),
                InterfaceDescriptionOption::IfDescription("vm db-2".into())
            ]
        );
        let isb = isb.unwrap();
        assert_eq!(isb.interface_id, 1);
        assert_eq!(isb.timestamp, Duration::from_nanos(stats.end_ns));
        assert_eq!(
            isb.options,
            vec![
                InterfaceStatisticsOption::IsbStartTime(Duration::from_nanos(stats.start_ns)),
                InterfaceStatisticsOption::IsbEndTime(Duration::from_nanos(stats.end_ns)),
                InterfaceStatisticsOption::IsbIfRecv(1 << 40),
                InterfaceStatisticsOption::IsbFilterAccept(1234),
                InterfaceStatisticsOption::IsbOsDrop(3),
                InterfaceStatisticsOption::IsbUsrDeliv(1200),
                InterfaceStatisticsOption::Common(CommonOption::Comment(
                    "userspace drops: 34".into()
                )),
            ]
        );
    }

    #[test]
    fn isb_comment_padding_for_several_digit_counts() {
        for drops in [0, 9, 10, 99, 100, 1000, u64::MAX] {
            let mut buf = header(&[InterfaceInfo::default()]);
            encode_isb(&mut buf, 0, &InterfaceStats { user_drops: drops, ..Default::default() });
            blocks(&buf);
            let mut reader = PcapNgReader::new(Cursor::new(buf)).unwrap();
            let _idb = reader.next_block().unwrap().unwrap();
            let (block, _) = reader.next_block().unwrap().unwrap();
            let Block::InterfaceStatistics(isb) = block else { panic!("not an ISB") };
            assert!(
                isb.options.contains(&InterfaceStatisticsOption::Common(CommonOption::Comment(
                    format!("userspace drops: {drops}").into()
                ))),
                "{:?}",
                isb.options
            );
        }
    }

    #[test]
    fn valid_prefix_of_whole_stream_is_everything() {
        let mut buf = header(&[InterfaceInfo::default()]);
        for i in 0..10u8 {
            encode_epb(
                &mut buf,
                0,
                u64::from(i),
                &vec![i; usize::from(i) * 3],
                100,
                u32::from(i % 3),
            );
        }
        let len = buf.len() as u64;
        assert_eq!(valid_prefix_len(Cursor::new(&buf), len).unwrap(), len);
    }

    #[test]
    fn valid_prefix_stops_at_every_cut() {
        let mut buf = header(&[InterfaceInfo::default()]);
        // With and without options, so cuts land inside options and at every offset.
        for i in 0..6u8 {
            encode_epb(&mut buf, 0, u64::from(i), &[i; 61], 100, u32::from(i % 3));
        }
        let ends: Vec<usize> = blocks(&buf).iter().map(|&(_, off, len)| off + len).collect();
        for cut in 0..=buf.len() {
            let want = ends.iter().copied().filter(|&e| e <= cut).max().unwrap_or(0);
            let got = valid_prefix_len(Cursor::new(&buf[..cut]), cut as u64).unwrap();
            assert_eq!(got, want as u64, "cut at {cut}");
        }
    }

    #[test]
    fn valid_prefix_rejects_bad_trailer_bad_length_and_foreign_start() {
        let mut buf = header(&[InterfaceInfo::default()]);
        let good = buf.len();
        encode_epb(&mut buf, 0, 1, &[1, 2, 3, 4], 4, DIRECTION_INBOUND);
        let len = buf.len();
        // Trailing length copy differs.
        let mut bad = buf.clone();
        bad[len - 1] ^= 0xFF;
        assert_eq!(valid_prefix_len(Cursor::new(&bad), len as u64).unwrap(), good as u64);
        // Declared length not a multiple of 4 / below the minimum.
        for declared in [37u32, 8] {
            let mut bad = buf.clone();
            bad[good + 4..good + 8].copy_from_slice(&declared.to_le_bytes());
            assert_eq!(valid_prefix_len(Cursor::new(&bad), len as u64).unwrap(), good as u64);
        }
        // Not starting with a little-endian SHB.
        let mut bad = buf.clone();
        bad[8..12].copy_from_slice(&BYTE_ORDER_MAGIC.to_be_bytes());
        assert_eq!(valid_prefix_len(Cursor::new(&bad), len as u64).unwrap(), 0);
        assert_eq!(valid_prefix_len(Cursor::new(&buf[good..]), (len - good) as u64).unwrap(), 0);
        assert_eq!(valid_prefix_len(Cursor::new(&[] as &[u8]), 0).unwrap(), 0);
    }
}
