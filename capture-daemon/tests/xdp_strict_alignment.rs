//! The XDP program passes the kernel verifier in strict-alignment mode: what every architecture
//! without efficient unaligned access gets, and what x86-64 gets on request
//! (`BPF_F_STRICT_ALIGNMENT`). There the verifier assumes packet data, and so the metadata in
//! front of it, is only 2-byte aligned (NET_IP_ALIGN = 2): the kernel guarantees no more than
//! a metadata length that is a multiple of 4 (`xdp_metalen_invalid`), and drivers put the
//! data where they like. An 8-byte store of the frame's metadata is rejected there.
//!
//! aya 0.16 has no way to pass program flags, so this test binary interposes `syscall(2)`
//! (aya's only way into the kernel) and adds the flag to every BPF_PROG_LOAD it makes. It is
//! a test binary of its own: nothing else runs with the interposer.

#![cfg(target_arch = "x86_64")]

use std::sync::atomic::{AtomicBool, Ordering::SeqCst};

use capture_daemon::bpf::{Filter, Hooks, TargetTables};
use capture_daemon::config::{CaptureConfig, TargetConfig};

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_F_STRICT_ALIGNMENT: u32 = 1;
/// Offset of `prog_flags` in the BPF_PROG_LOAD variant of `union bpf_attr` (linux/bpf.h:
/// prog_type, insn_cnt, insns, license, log_level, log_size, log_buf, kern_version).
const PROG_FLAGS_OFFSET: usize = 4 + 4 + 8 + 8 + 4 + 4 + 8 + 4;

static STRICT: AtomicBool = AtomicBool::new(false);

type SyscallFn = unsafe extern "C" fn(libc::c_long, ...) -> libc::c_long;

/// libc's `syscall`, found behind this binary's own.
fn real_syscall() -> SyscallFn {
    static REAL: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    let addr = *REAL.get_or_init(|| {
        // SAFETY: dlsym with a NUL-terminated name; RTLD_NEXT skips this binary's definition.
        let p = unsafe { libc::dlsym(libc::RTLD_NEXT, c"syscall".as_ptr()) };
        assert!(!p.is_null(), "libc's syscall not found");
        p as usize
    });
    // SAFETY: the address is libc's `syscall`, whose type this is.
    unsafe { std::mem::transmute::<usize, SyscallFn>(addr) }
}

/// Every `syscall(2)` of this binary comes here (the executable's definition wins over
/// libc's). On x86-64 the six arguments travel in the same registers whether the caller
/// thinks the function variadic or not.
///
/// # Safety
/// As `syscall(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn syscall(
    num: libc::c_long,
    a1: libc::c_long,
    a2: libc::c_long,
    a3: libc::c_long,
    a4: libc::c_long,
    a5: libc::c_long,
    a6: libc::c_long,
) -> libc::c_long {
    if num == libc::SYS_bpf && a1 == BPF_PROG_LOAD && STRICT.load(SeqCst) && a2 != 0 {
        // SAFETY: a BPF_PROG_LOAD attr of `a3` bytes, which covers prog_flags (aya passes the
        // whole union).
        unsafe {
            if usize::try_from(a3).is_ok_and(|size| size >= PROG_FLAGS_OFFSET + 4) {
                let flags = (a2 as *mut u8).add(PROG_FLAGS_OFFSET).cast::<u32>();
                flags.write_unaligned(flags.read_unaligned() | BPF_F_STRICT_ALIGNMENT);
            }
        }
    }
    // SAFETY: forwarding the caller's arguments unchanged.
    unsafe { real_syscall()(num, a1, a2, a3, a4, a5, a6) }
}

#[test]
fn the_xdp_program_passes_the_strict_alignment_verifier() {
    if !capture_lab::root_tests_enabled("xdp_strict_alignment").expect("root or a skip") {
        return;
    }
    let target = TargetConfig { mac: Some([0x52, 0x54, 0, 0, 0, 1]), ..TargetConfig::named("vm") };
    let tables = TargetTables::build(&CaptureConfig::default(), &[target], &[0]).unwrap();
    // The test is worth something only if the flag reaches the kernel: a deliberately
    // misaligned program would be refused. Loading the program without the flag first shows
    // that anything refused below is refused for alignment alone.
    Filter::load("strict", Hooks::Mirror, &tables).expect("the program loads without the flag");
    STRICT.store(true, SeqCst);
    let loaded = Filter::load("strict", Hooks::Mirror, &tables);
    STRICT.store(false, SeqCst);
    let filter = match loaded {
        Ok(f) => f,
        Err(e) => panic!(
            "the XDP program is refused where unaligned access is not allowed: {}",
            capture_daemon::bpf::error_chain(&e)
        ),
    };
    assert!(filter.multi_buffer_program(), "the multi-buffer program itself passed");
}
