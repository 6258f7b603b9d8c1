//! Lab helpers shared by the root-only integration tests and `cargo xtask demo`:
//! network namespaces, veth pairs, an Ethernet frame builder, an AF_PACKET sender
//! deterministic traffic from fake VMs, and a fast benchmark traffic generator ([`Blaster`]).
//! For tap mode, hypervisor-shaped topologies where a "VM" namespace or tap really talks to
//! the "host" through the captured interface: veths across namespaces and bridges
//! ([`VethTopology`], [`BridgeTopology`]), UDP between namespaces ([`UdpPeer`]) and a tap
//! device with a VM's NIC behind it ([`TapVm`]).
//!
//! Leftovers of interrupted runs (namespaces, tmpfs mounts) are removed by
//! [`remove_leftovers`], which `cargo xtask test | demo | bench` call first.
//!
//! Safety rule for everything here: traffic is only ever sent on interfaces created
//! inside namespaces created by this library, never on the host's own interfaces.

mod blast;
mod frame;
mod leftovers;
mod netns;
mod overlay;
mod receiver;
mod sender;
mod tap;
mod topology;
mod udp;
mod vlan;
mod vms;

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

pub use blast::{
    BENCH_TARGET_MAC, BlastConfig, BlastReport, Blaster, FrameSet, Limit, MAX_BATCH, TokenBucket,
    frame_matches, trafgen_config,
};
pub use frame::{
    ETH_ZLEN, ETHERTYPE_ARP, ETHERTYPE_IPV4, Frame, TPID_8021AD, TPID_8021Q, format_mac,
    internet_checksum, mac, parse_mac,
};
pub use leftovers::{
    NETNS_PREFIXES, Removed, TMPFS_NAMES, netns_owner, remove_leftovers, tmpfs_source,
};
pub use netns::{NetNs, VethPair};
pub use overlay::{Encapsulated, Ext, OuterIp, Tunnel};
pub use receiver::Receiver;
pub use sender::{Pace, RawSender, pin_current_thread};
pub use tap::{TAP_LOG_LIMIT, TapVm, TapVmStats};
pub use topology::{Bridge, BridgeTopology, VethTopology, VmNs};
pub use udp::{
    EchoResponder, MAX_UDP_PAYLOAD, SEQ_HEADER_LEN, SeqReport, UdpPeer, parse_seq_payload,
    seq_payload,
};
pub use vlan::TagOnEgress;
pub use vms::{FakeVm, default_gateway, default_vms, vm_traffic, vm_traffic_seeded};

/// Env var that turns "not root, skipping" into a test failure (set it in CI that runs as root,
/// so a misconfigured runner cannot silently pass the root tests).
pub const REQUIRE_ROOT_ENV: &str = "CAPTURE_REQUIRE_ROOT";

/// Fails with an explanation unless the effective uid is 0.
pub fn require_root() -> Result<()> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        bail!(
            "this needs root (it creates network namespaces and veth pairs and opens AF_PACKET \
             sockets), but the effective uid is {euid}; run it as root, e.g. with sudo"
        );
    }
    Ok(())
}

/// Whether `name` is an executable file: a path if it contains '/', otherwise looked up in `$PATH`.
/// Nothing is executed.
pub fn tool_available(name: &str) -> bool {
    fn is_executable(path: &Path) -> bool {
        path.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    }
    if name.is_empty() {
        return false;
    }
    if name.contains('/') {
        return is_executable(Path::new(name));
    }
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path)
            .filter(|dir| !dir.as_os_str().is_empty())
            .any(|dir| is_executable(&dir.join(name)))
    })
}

/// Gate for root-only tests. `Ok(true)`: run the test. `Ok(false)`: not root, a note was
/// printed, return early. `Err`: not root while `CAPTURE_REQUIRE_ROOT=1`, or root but the
/// `ip` tool is missing, so the test must fail rather than pass vacuously.
pub fn root_tests_enabled(test: &str) -> Result<bool> {
    match require_root() {
        Ok(()) => {
            if !tool_available("ip") {
                bail!("{test}: running as root but `ip` (iproute2) is not in PATH");
            }
            Ok(true)
        }
        Err(err) if std::env::var_os(REQUIRE_ROOT_ENV).is_some_and(|v| v == OsStr::new("1")) => {
            Err(err.context(format!("{test}: {REQUIRE_ROOT_ENV}=1 but not root")))
        }
        Err(_) => {
            // Straight to fd 2: the test harness captures eprintln!, and a skip must be visible.
            let note = format!(
                "note: {test} skipped: needs root (set {REQUIRE_ROOT_ENV}=1 to make this a failure)\n"
            );
            let _ = std::io::Write::write_all(&mut std::io::stderr().lock(), note.as_bytes());
            Ok(false)
        }
    }
}

/// Runs a command to completion and returns its stdout; on failure the error names the
/// command line and carries its stderr, which is where `ip` says what went wrong.
pub fn run_cmd(cmd: &mut Command) -> Result<String> {
    let desc = format!("{cmd:?}");
    let out = cmd.stdin(Stdio::null()).output().with_context(|| format!("starting {desc}"))?;
    if !out.status.success() {
        bail!("{desc} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    String::from_utf8(out.stdout).with_context(|| format!("{desc} printed non-UTF-8 output"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_available_finds_sh_and_rejects_nonsense() {
        assert!(tool_available("sh"));
        assert!(tool_available("/bin/sh"));
        assert!(!tool_available("capture-lab-no-such-tool-xyz"));
        assert!(!tool_available(""));
        // A directory is not a tool.
        assert!(!tool_available("/"));
    }

    #[test]
    fn run_cmd_reports_failures_with_stderr() {
        let out = run_cmd(Command::new("sh").args(["-c", "echo hi"])).expect("sh runs");
        assert_eq!(out, "hi\n");
        let err = run_cmd(Command::new("sh").args(["-c", "echo boom >&2; exit 3"]))
            .expect_err("exit 3 is a failure");
        let msg = format!("{err:#}");
        assert!(msg.contains("boom") && msg.contains('3'), "{msg}");
    }
}
