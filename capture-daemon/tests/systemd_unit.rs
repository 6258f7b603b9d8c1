//! The shipped systemd unit passes `systemd-analyze verify`, and keeps the settings the docs
//! promise.

use std::process::Command;

const UNIT: &str = include_str!("../../config/capture-daemon.service");

#[test]
fn unit_passes_systemd_analyze_verify() {
    let Ok(version) = Command::new("systemd-analyze").arg("--version").output() else {
        // CI and `cargo xtask test` install systemd (scripts/bootstrap.sh); say so loudly here.
        assert!(
            std::env::var_os("CAPTURE_REQUIRE_ROOT").is_none(),
            "systemd-analyze is missing: run scripts/bootstrap.sh"
        );
        eprintln!("skipped: systemd-analyze not installed");
        return;
    };
    assert!(version.status.success());
    // Point the unit at the binary just built, so verify can check the ExecStart lines.
    let unit = UNIT.replace("/usr/local/bin/capture-daemon", env!("CARGO_BIN_EXE_capture-daemon"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("capture-daemon.service");
    std::fs::write(&path, unit).unwrap();
    let out =
        Command::new("systemd-analyze").args(["verify", "--man=no"]).arg(&path).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Complaints about the build machine's own units are not ours.
    let ours: Vec<&str> = stderr.lines().filter(|l| l.contains("capture-daemon")).collect();
    assert!(out.status.success() && ours.is_empty(), "systemd-analyze verify:\n{stderr}");
}

#[test]
fn unit_keeps_the_documented_settings() {
    for line in [
        "Type=notify",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "WatchdogSec=30",
        "Restart=on-failure",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/capture-daemon",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK AF_XDP",
        "LockPersonality=yes",
        "MemoryDenyWriteExecute=yes",
        "AmbientCapabilities=CAP_NET_ADMIN CAP_NET_RAW CAP_BPF CAP_PERFMON CAP_IPC_LOCK",
        "CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_RAW CAP_BPF CAP_PERFMON CAP_IPC_LOCK",
    ] {
        assert!(UNIT.lines().any(|l| l == line), "unit lacks `{line}`");
    }
    // Every capability the unit grants is explained in docs/operations.md.
    let ops = include_str!("../../docs/operations.md");
    for cap in ["CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_BPF", "CAP_PERFMON", "CAP_IPC_LOCK"] {
        assert!(ops.contains(&format!("| `{cap}` |")), "docs/operations.md does not explain {cap}");
    }
}
