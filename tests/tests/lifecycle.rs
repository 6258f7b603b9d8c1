//! Files (rotation, retention, sequence), start and stop (signals, crashes, bad start-ups), and
//! several RX queues — all with the real daemon binary.

use std::path::Path;
use std::time::Duration;

use capture_tests::*;

const A: [u8; 6] = [0x52, 0x54, 0, 0, 0, 0x0a];
const X: [u8; 6] = [0x52, 0x54, 0, 0, 0, 0x99];
const ALL: &str = "[[target]]\nname = \"all\"\n";

fn frames(range: std::ops::Range<u32>, len: usize) -> Vec<Vec<u8>> {
    range.map(|i| test_frame(A, X, &[], i, len)).collect()
}

/// Sequence numbers of finished files, from their names `t_NNNNN_YYYYmmddHHMMSS.pcapng`.
fn seqs(files: &[std::path::PathBuf]) -> Vec<u64> {
    files
        .iter()
        .map(|f| {
            let name = f.file_name().unwrap().to_string_lossy().into_owned();
            let parts: Vec<&str> = name.trim_end_matches(".pcapng").split('_').collect();
            assert_eq!(parts.len(), 3, "file name {name}");
            assert_eq!(parts[0], "t");
            assert_eq!(parts[2].len(), 14, "timestamp part of {name}");
            assert!(parts[1].len() >= 5, "sequence part of {name}");
            parts[1].parse().expect("sequence number")
        })
        .collect()
}

fn assert_files_valid(files: &[std::path::PathBuf]) {
    for f in files {
        let file = read_pcapng(f);
        assert_eq!(file.interfaces.len(), 1, "{}: one IDB", f.display());
        assert!(file.statistics >= 1, "{}: an ISB at close", f.display());
        assert_eq!(capinfos_count(f), file.packets.len() as u64, "{}", f.display());
    }
}

#[test]
fn rotates_by_size_and_loses_nothing() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new(1);
    let config = lab.config("", "rotate_bytes = 16384\nrotate_seconds = 0", ALL);
    let daemon = lab.start(&config);
    let sent = frames(0..300, 600);
    lab.send(&sent);
    assert!(daemon.stop().0.success());
    let (files, parts) = lab.files();
    assert!(parts.is_empty());
    // 300 x ~630 bytes = ~190 KB in 16 KiB files: about 11 files.
    assert!(files.len() >= 10, "{} files", files.len());
    assert_files_valid(&files);
    for f in &files[..files.len() - 1] {
        let size = std::fs::metadata(f).unwrap().len();
        assert!((16384..16384 + 2048).contains(&size), "{}: {size} bytes", f.display());
    }
    assert_eq!(seqs(&files), (1..=files.len() as u64).collect::<Vec<_>>());
    assert_eq!(ids(&read_all(&files)), (0..300).collect::<Vec<_>>());
}

#[test]
fn rotates_by_time_and_by_packet_count() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new(1);
    let config = lab.config("", "rotate_bytes = 0\nrotate_seconds = 1", ALL);
    let daemon = lab.start(&config);
    for chunk in 0..4u32 {
        lab.send(&frames(chunk * 10..chunk * 10 + 10, 100));
        std::thread::sleep(Duration::from_millis(800));
    }
    assert!(daemon.stop().0.success());
    let (files, _) = lab.files();
    assert!(files.len() >= 3, "4.4 s at 1 s per file gave {} files", files.len());
    assert_files_valid(&files);
    assert_eq!(ids(&read_all(&files)), (0..40).collect::<Vec<_>>());
    drop(lab);

    let lab = Lab::new(1);
    let config = lab.config("", "rotate_bytes = 0\nrotate_seconds = 0\nrotate_packets = 25", ALL);
    let daemon = lab.start(&config);
    lab.send(&frames(0..100, 100));
    assert!(daemon.stop().0.success());
    let (files, _) = lab.files();
    let counts: Vec<usize> = files.iter().map(|f| read_pcapng(f).packets.len()).collect();
    assert_eq!(&counts[..4], &[25, 25, 25, 25], "{counts:?}");
    assert!(counts[4..].iter().all(|c| *c == 0), "{counts:?}");
}

#[test]
fn retention_keeps_the_newest_files() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new(1);
    let config = lab.config("", "rotate_bytes = 8192\nrotate_seconds = 0\nkeep_files = 3", ALL);
    let daemon = lab.start(&config);
    lab.send(&frames(0..200, 500));
    assert!(daemon.stop().0.success());
    let (files, _) = lab.files();
    assert_eq!(files.len(), 3, "{files:?}");
    let s = seqs(&files);
    assert!(s[0] > 5, "the oldest files went: {s:?}");
    assert_eq!(s, vec![s[0], s[0] + 1, s[0] + 2]);
    // The newest frames are the ones kept.
    let kept = ids(&read_all(&files));
    assert_eq!(*kept.last().unwrap(), 199);
    drop(lab);

    let lab = Lab::new(1);
    let config = lab.config("", "rotate_bytes = 8192\nrotate_seconds = 0\nkeep_bytes = 30000", ALL);
    let daemon = lab.start(&config);
    lab.send(&frames(0..200, 500));
    assert!(daemon.stop().0.success());
    let (files, _) = lab.files();
    let total: u64 = files.iter().map(|f| std::fs::metadata(f).unwrap().len()).sum();
    assert!(total <= 30000, "{total} bytes kept");
    assert!(files.len() >= 2, "{files:?}");
}

#[test]
fn restart_continues_the_sequence_and_overwrites_nothing() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new(1);
    let config = lab.config("", "rotate_bytes = 8192\nrotate_seconds = 0", ALL);
    let daemon = lab.start(&config);
    lab.send(&frames(0..50, 500));
    assert!(daemon.stop().0.success());
    let (first, _) = lab.files();
    let first_last = *seqs(&first).last().unwrap();
    let first_bytes: Vec<Vec<u8>> = first.iter().map(|f| std::fs::read(f).unwrap()).collect();

    let daemon = lab.start(&config);
    lab.send(&frames(50..100, 500));
    assert!(daemon.stop().0.success());
    let (all, _) = lab.files();
    let s = seqs(&all);
    assert_eq!(s, (1..=s.len() as u64).collect::<Vec<_>>(), "one unbroken sequence");
    assert!(s.len() > first.len());
    for (f, bytes) in first.iter().zip(&first_bytes) {
        assert_eq!(&std::fs::read(f).unwrap(), bytes, "{} was rewritten", f.display());
    }
    let second: Vec<_> =
        all.iter().filter(|f| seqs(std::slice::from_ref(f))[0] > first_last).cloned().collect();
    assert_eq!(ids(&read_all(&second)), (50..100).collect::<Vec<_>>());
}

#[test]
fn sigterm_leaves_no_part_file_and_no_xdp_program() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new(1);
    let config = lab.config("", "", ALL);
    assert!(!lab.xdp_attached());
    let daemon = lab.start(&config);
    assert!(lab.xdp_attached(), "XDP attached while running");
    let (_, parts) = lab.files();
    assert_eq!(parts.len(), 1, "the current file is a .part while open");
    lab.send(&frames(0..10, 100));
    let (status, took) = daemon.stop();
    assert!(status.success(), "{status}");
    assert!(took < Duration::from_secs(2), "stop took {took:?}");
    assert!(!lab.xdp_attached(), "XDP left attached after SIGTERM");
    let (files, parts) = lab.files();
    assert!(parts.is_empty(), "{parts:?}");
    assert_eq!(ids(&read_all(&files)), (0..10).collect::<Vec<_>>());
    // And frames flow through the kernel again.
    let rx = lab.receiver();
    lab.send(&frames(10..12, 100));
    assert_eq!(rx.ids(), vec![10, 11]);
}

#[test]
fn kill_9_leaves_no_xdp_program_and_frames_flow_again() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new(1);
    let config = lab.config("", "", ALL);
    let daemon = lab.start(&config);
    lab.send(&frames(0..10, 100));
    daemon.kill9();
    assert!(!lab.xdp_attached(), "a killed daemon must not leave its XDP program attached");
    let rx = lab.receiver();
    lab.send(&frames(10..13, 100));
    assert_eq!(rx.ids(), vec![10, 11, 12], "the NIC does not black-hole traffic");
}

#[test]
fn captures_every_rx_queue() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new(2);
    let config = lab.config("", "", ALL);
    let daemon = lab.start(&config);
    assert!(daemon.log_text().contains("RX queues [0, 1] of 2"), "{}", daemon.log_text());
    // With PACKET_QDISC_BYPASS the TX queue is the sending CPU: one sender per CPU puts frames
    // on both veth queues.
    let cpus = std::thread::available_parallelism().map_or(1, usize::from).min(2);
    std::thread::scope(|s| {
        for cpu in 0..cpus {
            let lab = &lab;
            s.spawn(move || {
                let base = u32::try_from(cpu).expect("cpu index") * 1000;
                let sent = frames(base..base + 200, 200);
                let peer = lab.veth.peer.clone();
                lab.ns
                    .run(move || {
                        capture_lab::pin_current_thread(cpu)?;
                        capture_lab::RawSender::open(&peer)?
                            .with_qdisc_bypass()?
                            .send_all(&sent, capture_lab::Pace::default())
                    })
                    .expect("sending");
            });
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    let per_queue = queue_redirects(&lab);
    assert!(daemon.stop().0.success());
    let (files, _) = lab.files();
    let want: Vec<u32> = (0..u32::try_from(cpus).expect("cpu count"))
        .flat_map(|c| c * 1000..c * 1000 + 200)
        .collect();
    let packets = read_all(&files);
    assert_eq!(ids(&packets), want);
    // The queues' frames are merged into one file in timestamp order.
    for w in packets.windows(2) {
        assert!(
            w[0].ts_ns <= w[1].ts_ns,
            "out of order across queues: {} then {}",
            w[0].ts_ns,
            w[1].ts_ns
        );
    }
    if cpus == 2 {
        assert!(per_queue.iter().all(|n| *n > 0), "both queues carried frames: {per_queue:?}");
    }
}

#[test]
fn captures_only_the_listed_queues_and_passes_the_rest() {
    if !root_or_skip() {
        return;
    }
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    assert!(cpus >= 2, "this test steers frames to two RX queues from two CPUs; it needs 2 CPUs");
    let lab = Lab::new(2);
    // Keys right after the [[interface]] header belong to that table.
    let config = lab.config("", "", &format!("queues = [1]\n\n{ALL}"));
    let rx = lab.receiver();
    let daemon = lab.start(&config);
    assert!(daemon.log_text().contains("RX queues [1] of 2"), "{}", daemon.log_text());
    for cpu in 0..2u32 {
        let sent = frames(cpu * 1000..cpu * 1000 + 50, 100);
        let peer = lab.veth.peer.clone();
        lab.ns
            .run(move || {
                capture_lab::pin_current_thread(cpu as usize)?;
                capture_lab::RawSender::open(&peer)?
                    .with_qdisc_bypass()?
                    .send_all(&sent, capture_lab::Pace::default())
            })
            .expect("sending");
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(daemon.stop().0.success());
    let (files, _) = lab.files();
    assert_eq!(ids(&read_all(&files)), (1000..1050).collect::<Vec<_>>(), "queue 1 captured");
    assert_eq!(rx.ids(), (0..50).collect::<Vec<_>>(), "queue 0 frames passed untouched");
}

/// XDP redirects per RX queue of the capture veth (`ethtool -S`).
fn queue_redirects(lab: &Lab) -> Vec<u64> {
    lab.xdp_stats_per_queue()
        .into_iter()
        .filter(|(n, _)| n.ends_with("_xdp_redirect"))
        .map(|(_, v)| v)
        .collect()
}

fn run_cli(lab: &Lab, args: &[&str]) -> (i32, String) {
    lab.run_daemon(&[], args)
}

#[test]
fn start_up_failures_are_clear_and_leave_nothing_attached() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new(1);

    // (A missing interface is no start-up failure: it is waited for, see
    // `an_interface_missing_at_start_is_captured_once_it_appears`. The one-shot capture
    // still fails on one.)
    let (code, text) = run_cli(&lab, &["capture", "-i", "nosuch0", "-w", "-"]);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("interface nosuch0 not found"), "{text}");

    // Bad config: file, line, column and key.
    let bad = lab.dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[[interface]]\nname = \"cap0\"\n\n[[target]]\nname = \"x\"\nvlan = 4095\n",
    )
    .unwrap();
    let (code, text) = run_cli(&lab, &["run", "--config", bad.to_str().unwrap()]);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains(&format!("{}:6:8", bad.display())), "{text}");
    assert!(text.contains("vlan"), "{text}");

    // A queue the NIC does not have: refused before anything is attached.
    let q = lab.dir.path().join("queue.toml");
    std::fs::write(
        &q,
        format!(
            "[output]\ndirectory = \"{}\"\n[[interface]]\nname = \"cap0\"\nmode = \"mirror\"\nqueues = [0, 3]\n{ALL}",
            lab.out_dir().display()
        ),
    )
    .unwrap();
    let (code, text) = run_cli(&lab, &["run", "--config", q.to_str().unwrap()]);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("RX queue 3 does not exist"), "{text}");
    assert!(!lab.xdp_attached());
    // The same key on a tap-mode interface (the default) would do nothing: an error.
    let text = std::fs::read_to_string(&q).unwrap().replace("mode = \"mirror\"\n", "");
    std::fs::write(&q, text).unwrap();
    let (code, text) = run_cli(&lab, &["run", "--config", q.to_str().unwrap()]);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains(":5:10: key `queues`: applies to mirror mode only"), "{text}");

    // Not privileged: says which capabilities are missing, before touching anything.
    let ok_config = lab.config("", "", ALL);
    // Let the unprivileged user read the config, so the privilege check is what stops it.
    std::fs::set_permissions(lab.dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .unwrap();
    let (code, text) = lab.run_daemon(
        &["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all"],
        &["run", "--config", ok_config.to_str().unwrap()],
    );
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("missing privileges: CAP_NET_ADMIN"), "{text}");
    assert!(!lab.xdp_attached());

    // Output directory that cannot be created: fails after loading, before attaching.
    let blocker = lab.dir.path().join("file");
    std::fs::write(&blocker, "not a directory").unwrap();
    let o = lab.dir.path().join("out.toml");
    std::fs::write(
        &o,
        format!(
            "[output]\ndirectory = \"{}/sub\"\n[[interface]]\nname = \"cap0\"\n{ALL}",
            blocker.display()
        ),
    )
    .unwrap();
    let (code, text) = run_cli(&lab, &["run", "--config", o.to_str().unwrap()]);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains(&blocker.display().to_string()), "{text}");
    assert!(!lab.xdp_attached(), "a failed start-up must leave nothing attached");
}

#[test]
fn check_reports_the_host_and_warns_about_mirror_mode() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new(2);
    let config = lab.config("", "", ALL);
    let (code, text) = run_cli(&lab, &["check", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("interface cap0: driver veth, 2 RX queue(s)"), "{text}");
    assert!(text.contains("accepted by the kernel verifier"), "{text}");
    assert!(text.contains("WARNING: mirror mode"), "{text}");
    assert!(text.contains("ok    retention: keeps ") && text.contains("(keep_free_percent = 10"));
    assert!(!lab.xdp_attached(), "check attaches nothing");

    // Nothing keeps the output from filling the disk: said, but no failure.
    let unbounded = lab.config("", "keep_free_percent = 0", ALL);
    let (code, text) = run_cli(&lab, &["check", "--config", unbounded.to_str().unwrap()]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("WARN  retention: nothing bounds the output"), "{text}");

    // A missing interface is said, but is no problem: `run` waits for it (the unit's
    // ExecStartPre runs check, and a NIC can come up late at boot).
    let path = lab.dir.path().join("missing.toml");
    std::fs::write(&path, format!("[[interface]]\nname = \"nosuch0\"\n{ALL}")).unwrap();
    let (code, text) = run_cli(&lab, &["check", "--config", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("WARN  interface nosuch0: not on this host now; `run` starts"), "{text}");
    // Other problems of an interface are still failures, named by interface.
    let queue = lab.config_on(&["name = \"cap0\"\nqueues = [5]"], "", "", ALL);
    let (code, text) = run_cli(&lab, &["check", "--config", queue.to_str().unwrap()]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("FAIL  interface: interface cap0: RX queue 5 does not exist"), "{text}");

    // What run refuses, check refuses too: a world-writable output directory.
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::create_dir_all(lab.out_dir()).unwrap();
    std::fs::set_permissions(lab.out_dir(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let (code, text) = run_cli(&lab, &["check", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("FAIL  output:") && text.contains("writable by everyone"), "{text}");
}

#[test]
fn an_output_directory_others_could_change_is_refused_by_run_and_check() {
    if !root_or_skip() {
        return;
    }
    use std::os::unix::fs::{PermissionsExt as _, chown};
    let lab = Lab::new(1);
    let out = lab.out_dir();
    std::fs::create_dir_all(&out).unwrap();
    let config = lab.config("", "", ALL);
    let config = config.to_str().unwrap();
    let nobody = 65534;
    let expect_refused = |want: &str| {
        let (code, text) = run_cli(&lab, &["check", "--config", config]);
        assert_eq!(code, 1, "{text}");
        assert!(text.contains("FAIL  output: capture directory") && text.contains(want), "{text}");
        let (code, text) = run_cli(&lab, &["run", "--config", config]);
        assert_eq!(code, 2, "{text}");
        assert!(text.contains(want), "{text}");
        let tcx = tcx_prog_ids(&lab.ns, CAPTURE_IF, Tcx::Ingress);
        assert!(!lab.xdp_attached() && tcx.is_empty(), "nothing attached");
    };

    // Owned by another user: it could rename or delete the capture files.
    chown(&out, Some(nobody), None).unwrap();
    expect_refused("is owned by uid 65534, not by the service's user (uid 0) or root");
    chown(&out, Some(0), None).unwrap();

    // Group-writable by a group that is not [output] group.
    chown(&out, None, Some(nobody)).unwrap();
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o770)).unwrap();
    expect_refused("is writable by group 65534 (mode 770)");
    // ...which is fine once it is the configured group.
    let grouped = lab.config("", "group = \"65534\"", ALL);
    let (code, text) = run_cli(&lab, &["check", "--config", grouped.to_str().unwrap()]);
    assert_eq!(code, 0, "{text}");

    // A directory above it that a group may write to: the group could swap the whole tree.
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o750)).unwrap();
    let parent = lab.dir.path();
    chown(parent, None, Some(nobody)).unwrap();
    std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o770)).unwrap();
    expect_refused(&format!("{} is writable by group 65534", parent.display()));
    std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o700)).unwrap();
}

#[test]
fn the_example_config_passes_check_once_its_interface_exists() {
    if !root_or_skip() {
        return;
    }
    // config/capture.toml names br0 (tap mode) and enp65s0f0 (mirror mode): create them (a
    // bridge and a veth) in a namespace and check.
    let ns = capture_lab::NetNs::create("capexample").unwrap();
    let _veth = capture_lab::VethPair::create(&ns, "enp65s0f0", "peer0", 1).unwrap();
    let _bridge = capture_lab::Bridge::create(&ns, "br0").unwrap();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/capture.toml");
    let out = ns
        .command(daemon_bin().to_str().unwrap())
        .args(["check", "--config", example.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("interface br0: driver bridge; tap mode"), "{text}");
    assert!(text.contains("tcx programs: loaded"), "{text}");
}

#[test]
fn zero_copy_auto_falls_back_to_copy_and_on_fails_clearly_on_veth() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new(1);
    let daemon = lab.start(&lab.config("", "", ALL));
    assert!(
        daemon.log_text().contains("cap0 RX queue 0: AF_XDP socket bound in copy mode"),
        "{}",
        daemon.log_text()
    );
    assert!(daemon.stop().0.success());

    // veth has no zero-copy AF_XDP: "on" must refuse to start, naming the setting.
    let config = lab.config("", "", &format!("zero_copy = \"on\"\n\n{ALL}"));
    let (code, text) = run_cli(&lab, &["run", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("opening the AF_XDP socket for cap0 RX queue 0"), "{text}");
    assert!(
        text.contains("zero_copy = \"on\" needs a driver with AF_XDP zero-copy support"),
        "{text}"
    );
    assert!(!lab.xdp_attached());
}

#[test]
fn busy_polling_captures_the_same_frames() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new(1);
    let daemon = lab.start(&lab.config("busy_poll_us = 50", "", ALL));
    lab.send(&frames(0..300, 100));
    assert!(daemon.stop().0.success());
    let (files, _) = lab.files();
    assert_eq!(ids(&read_all(&files)), (0..300).collect::<Vec<_>>());
}

#[test]
fn metrics_and_status_show_true_numbers() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new(1);
    let config = lab.config("", "", ALL);
    let daemon = lab.start(&config);
    lab.send(&frames(0..123, 100));
    // The endpoint listens on the namespace's loopback.
    let body = scrape_metrics(&lab.ns);
    assert!(body.starts_with("HTTP/1.0 200 OK"), "{body}");
    assert!(body.contains("capture_frames_seen_total{interface=\"cap0\"} 123\n"), "{body}");
    assert!(
        body.contains("capture_target_frames_total{interface=\"cap0\",target=\"all\"} 123\n"),
        "{body}"
    );
    assert!(body.contains("capture_frames_written_total{interface=\"cap0\"} 123\n"), "{body}");
    assert!(
        body.contains("capture_drops_total{interface=\"cap0\",stage=\"writer_queue_full\"} 0\n"),
        "{body}"
    );
    assert!(body.contains("capture_current_file{path=\""), "{body}");
    assert!(body.contains("capture_bytes_matched_total{interface=\"cap0\"} 12300\n"), "{body}");
    assert!(
        body.contains("capture_target_bytes_total{interface=\"cap0\",target=\"all\"} 12300\n"),
        "{body}"
    );
    // docs/operations.md lists exactly the metrics the daemon serves.
    let docs =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/operations.md"))
            .unwrap();
    let mut served: std::collections::BTreeSet<&str> = body
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    // Only served while a target has `vm` (tests/tests/vms.rs sees it served).
    served.insert("capture_target_vm_present");
    let documented: std::collections::BTreeSet<&str> = docs
        .lines()
        .filter(|l| l.starts_with("| `capture_"))
        .flat_map(|l| l.split('|').nth(1).unwrap().split(','))
        .map(|m| m.trim().trim_matches('`'))
        .collect();
    assert_eq!(served, documented, "left: served, right: docs/operations.md");

    let (code, text) = run_cli(&lab, &["status", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("cap0: seen 123"), "{text}");
    assert!(text.contains("target all: 123 frames, 12300 bytes"), "{text}");
    assert!(text.contains("drops: none"), "{text}");
    assert!(text.contains(".pcapng.part"), "{text}");

    assert!(daemon.stop().0.success());
    let (code, text) = run_cli(&lab, &["status", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 1, "no daemon: {text}");
    assert!(text.contains("none running"), "{text}");
}

#[test]
fn an_interface_missing_at_start_is_captured_once_it_appears() {
    if !root_or_skip() {
        return;
    }
    // At boot the daemon may start before its NIC exists (a driver still loading, a bond or
    // VLAN interface made later): it starts without it, says so, and captures it once it is
    // there. Here the config's only interface is missing at start.
    let lab = Lab::new(1);
    let config = lab.config_on(&["name = \"late0\""], "", "", ALL);
    let daemon = Daemon::spawn(&lab.ns, &config);
    daemon.wait_for_log("late0: no such interface on this host (yet)", Duration::from_secs(20));
    let page = scrape_metrics(&lab.ns);
    assert_eq!(metric(&page, "capture_interface_up{interface=\"late0\"}"), Some(0), "{page}");
    let (code, status) = run_cli(&lab, &["status", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 0, "{status}");
    assert!(status.contains("late0: NOT CAPTURED"), "{status}");

    let _late = lab.add_pair("late0", "peer0", 1);
    daemon.wait_for_log("late0: back; capturing it again", Duration::from_secs(10));
    assert!(lab.xdp_prog_id_of("late0").is_some(), "attached once it appeared");
    lab.send_from("peer0", &frames(0..60, 100));
    let page = scrape_metrics(&lab.ns);
    assert_eq!(metric(&page, "capture_interface_up{interface=\"late0\"}"), Some(1), "{page}");
    assert!(daemon.stop().0.success());

    let (files, parts) = lab.files();
    assert!(parts.is_empty(), "{parts:?}");
    assert_eq!(ids_by_interface(&files).get("late0"), Some(&(0..60).collect::<Vec<_>>()));
    // The file written while no interface was there is readable too.
    for f in &files {
        assert_eq!(capinfos_count(f), read_pcapng(f).packets.len() as u64, "{}", f.display());
    }
}
