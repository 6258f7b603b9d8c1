//! The shipped systemd unit passes `systemd-analyze verify`, and keeps the settings the docs
//! promise.

use std::process::Command;

const UNIT: &str = include_str!("../../config/capture-daemon.service");

/// The unit in a directory of its own, pointed at the binary just built (so that verify can
/// check the ExecStart lines).
fn unit_file() -> tempfile::TempDir {
    let unit = UNIT.replace("/usr/local/bin/capture-daemon", env!("CARGO_BIN_EXE_capture-daemon"));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("capture-daemon.service"), unit).unwrap();
    dir
}

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
    let dir = unit_file();
    let path = dir.path().join("capture-daemon.service");
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
        // The UMEM counts against an unlimited RLIMIT_MEMLOCK: no CAP_IPC_LOCK.
        "LimitMEMLOCK=infinity",
        "AmbientCapabilities=CAP_NET_ADMIN CAP_NET_RAW CAP_BPF CAP_PERFMON",
        "CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_RAW CAP_BPF CAP_PERFMON",
        "UMask=0027",
        "PrivateDevices=yes",
        "ProtectKernelTunables=yes",
        "SystemCallFilter=@system-service bpf",
        "SystemCallErrorNumber=EPERM",
        "IPAddressDeny=any",
        "IPAddressAllow=localhost",
    ] {
        assert!(UNIT.lines().any(|l| l == line), "unit lacks `{line}`");
    }
    // Every capability the unit grants is explained in docs/operations.md.
    let ops = include_str!("../../docs/operations.md");
    let granted = UNIT.lines().find_map(|l| l.strip_prefix("AmbientCapabilities=")).unwrap();
    for cap in granted.split_whitespace() {
        assert!(ops.contains(&format!("| `{cap}` |")), "docs/operations.md does not explain {cap}");
    }
}

#[test]
fn docs_give_the_units_systemd_analyze_security_exposure() {
    let Ok(out) = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(unit_file().path().join("capture-daemon.service"))
        .output()
    else {
        assert!(
            std::env::var_os("CAPTURE_REQUIRE_ROOT").is_none(),
            "systemd-analyze is missing: run scripts/bootstrap.sh"
        );
        eprintln!("skipped: systemd-analyze not installed");
        return;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let exposure = text
        .lines()
        .find_map(|l| l.split_once("Overall exposure level for ")?.1.split_once(": "))
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no exposure level in:\n{text}"));
    let ops = include_str!("../../docs/operations.md");
    assert!(
        ops.contains(&format!("| this unit | {exposure} |")),
        "docs/operations.md should give this unit's exposure, {exposure}"
    );
}
