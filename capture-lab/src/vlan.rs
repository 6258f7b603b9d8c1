//! Frames that carry their VLAN tag beside the data, as a NIC with rx-vlan offload (or a VLAN
//! device over a veth, which needs the 8021q module) hands them on: a five-instruction tcx
//! egress program on the sending interface calls `bpf_skb_vlan_push`, which puts the tag in
//! the skb's `vlan_tci`, not in the frame. Whether it stays there on the way to the peer is
//! the sending interface's `tx-vlan-offload` (`ethtool -K gen0 txvlan off` makes the kernel
//! write it into the frame before the veth sees it).

use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};

use anyhow::{Context, Result, bail};

use crate::NetNs;

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_PROG_TYPE_SCHED_CLS: u32 = 3;
const BPF_TCX_EGRESS: u32 = 47;
const BPF_FUNC_SKB_VLAN_PUSH: i32 = 18;
/// `TCX_NEXT`: the frame goes on.
const TC_ACT_UNSPEC: i32 = -1;

/// One eBPF instruction (`struct bpf_insn`).
#[repr(C)]
#[derive(Clone, Copy)]
struct Insn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

/// `dst = imm` (BPF_ALU64 | BPF_MOV | BPF_K).
const fn mov_imm(dst: u8, imm: i32) -> Insn {
    Insn { code: 0xb7, regs: dst, off: 0, imm }
}

/// A tcx egress program on an interface that gives every frame it sends the VLAN tag `tci`
/// (802.1Q) beside the data. Detached on drop.
pub struct TagOnEgress {
    _link: OwnedFd,
    _prog: OwnedFd,
}

impl TagOnEgress {
    pub fn attach(ns: &NetNs, ifname: &str, tci: u16) -> Result<TagOnEgress> {
        let prog = load(tci)?;
        let name = std::ffi::CString::new(ifname).context("interface name")?;
        // The interface index, and the link, in the namespace's view.
        let (prog, link) = ns.run(move || {
            // SAFETY: NUL-terminated name.
            let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
            if ifindex == 0 {
                return Err(std::io::Error::last_os_error())
                    .with_context(|| format!("interface {}", name.to_string_lossy()));
            }
            let mut attr = [0u8; 64];
            attr[0..4].copy_from_slice(&u32::try_from(prog.as_raw_fd())?.to_ne_bytes());
            attr[4..8].copy_from_slice(&ifindex.to_ne_bytes());
            attr[8..12].copy_from_slice(&BPF_TCX_EGRESS.to_ne_bytes());
            let link = bpf(BPF_LINK_CREATE, &mut attr).context("attaching it to tcx egress")?;
            Ok((prog, link))
        })?;
        Ok(TagOnEgress { _link: link, _prog: prog })
    }
}

/// Loads the program: `bpf_skb_vlan_push(skb, htons(0x8100), tci); return TCX_NEXT;`.
fn load(tci: u16) -> Result<OwnedFd> {
    let proto = i32::from(u16::from_ne_bytes(0x8100u16.to_be_bytes()));
    let insns = [
        // r1 is the skb already.
        mov_imm(2, proto),
        mov_imm(3, i32::from(tci)),
        Insn { code: 0x85, regs: 0, off: 0, imm: BPF_FUNC_SKB_VLAN_PUSH },
        mov_imm(0, TC_ACT_UNSPEC),
        Insn { code: 0x95, regs: 0, off: 0, imm: 0 },
    ];
    let license = c"GPL";
    let mut log = vec![0u8; 4096];
    let mut attr = [0u8; 128];
    attr[0..4].copy_from_slice(&BPF_PROG_TYPE_SCHED_CLS.to_ne_bytes());
    attr[4..8].copy_from_slice(&u32::try_from(insns.len())?.to_ne_bytes());
    attr[8..16].copy_from_slice(&(insns.as_ptr() as u64).to_ne_bytes());
    attr[16..24].copy_from_slice(&(license.as_ptr() as u64).to_ne_bytes());
    attr[24..28].copy_from_slice(&1u32.to_ne_bytes());
    attr[28..32].copy_from_slice(&u32::try_from(log.len())?.to_ne_bytes());
    attr[32..40].copy_from_slice(&(log.as_mut_ptr() as u64).to_ne_bytes());
    bpf(BPF_PROG_LOAD, &mut attr).with_context(|| {
        let end = log.iter().position(|b| *b == 0).unwrap_or(log.len());
        format!("loading the VLAN-tagging program: {}", String::from_utf8_lossy(&log[..end]))
    })
}

fn bpf(cmd: libc::c_long, attr: &mut [u8]) -> Result<OwnedFd> {
    // SAFETY: bpf(2) with an attr buffer of the size passed; the pointers in it outlive the call.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len()) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    let Ok(fd) = i32::try_from(fd) else { bail!("bpf({cmd}) returned {fd}") };
    // SAFETY: a fresh fd the kernel gave us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
