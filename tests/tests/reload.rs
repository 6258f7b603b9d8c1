//! SIGHUP: the configuration is read again and applied without detaching anything.

use std::time::Duration;

use capture_tests::*;

const A: [u8; 6] = [0x52, 0x54, 0, 0, 0, 0x0a];
const B: [u8; 6] = [0x52, 0x54, 0, 0, 0, 0x0b];
const X: [u8; 6] = [0x52, 0x54, 0, 0, 0, 0x99];
const TARGET_A: &str = "[[target]]\nname = \"a\"\nmac = \"52:54:00:00:00:0a\"\n";
const TARGET_B: &str = "[[target]]\nname = \"b\"\nmac = \"52:54:00:00:00:0b\"\n";

/// Frames of A and B alternating, ids from `start`.
fn mixed(start: u32, n: u32) -> Vec<Vec<u8>> {
    (start..start + n).map(|i| test_frame(if i % 2 == 0 { A } else { B }, X, &[], i, 100)).collect()
}

#[test]
fn reload_under_traffic_loses_nothing_and_applies_new_targets() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new(1);
    let config = lab.config("", "", TARGET_A);
    let daemon = lab.start(&config);
    let prog = lab.xdp_prog_id().expect("an XDP program is attached");

    // Steady traffic while the config changes twice under it: a's frames must all be there.
    std::thread::scope(|s| {
        // 4000 frames over about 1.5 s.
        let pace = capture_lab::Pace { burst: 8, pause: Duration::from_millis(3) };
        let lab = &lab;
        let sender = s.spawn(move || lab.send_paced(&mixed(0, 4000), pace));
        std::thread::sleep(Duration::from_millis(300));
        lab.config("snaplen = 64", "", &format!("{TARGET_B}\n{TARGET_A}"));
        daemon.signal(libc::SIGHUP);
        daemon.wait_for_log("reloaded: snaplen 64", Duration::from_secs(5));
        std::thread::sleep(Duration::from_millis(200));
        lab.config("", "", TARGET_A);
        daemon.signal(libc::SIGHUP);
        sender.join().unwrap();
    });
    daemon.wait_for_log("reloaded: snaplen 0", Duration::from_secs(5));
    // After the second reload only a again, whole frames.
    lab.send(&mixed(10_000, 100));
    assert_eq!(lab.xdp_prog_id(), Some(prog), "the same program stayed attached");
    let log = daemon.log_handle();
    assert!(daemon.stop().0.success());
    assert_eq!(log.text().matches("reloaded:").count(), 2, "{}", log.text());

    let (files, _) = lab.files();
    let packets = read_all(&files);
    let got = ids(&packets);
    let a_sent: Vec<u32> = (0..4000).chain(10_000..10_100).filter(|i| i % 2 == 0).collect();
    let a_got: Vec<u32> = got.iter().copied().filter(|i| i % 2 == 0).collect();
    assert_eq!(a_got, a_sent, "every frame of the unchanged target");
    let b_got: Vec<u32> = got.iter().copied().filter(|i| i % 2 == 1).collect();
    assert!(!b_got.is_empty(), "b was captured while it was configured");
    assert!(b_got.iter().all(|i| *i < 4000), "b not captured after it was removed");
    // While snaplen was 64 frames were sliced, after it they are whole again.
    assert!(packets.iter().any(|p| p.data.len() == 64 && p.orig_len == 100));
    assert!(
        packets
            .iter()
            .filter(|p| frame_id(&p.data).is_some_and(|i| i >= 10_000))
            .all(|p| p.data.len() == 100)
    );
}

#[test]
fn raising_snaplen_under_traffic_keeps_every_file_readable_by_libpcap() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new(1);
    let config = lab.config("snaplen = 64", "", TARGET_A);
    let daemon = lab.start(&config);
    let frames: Vec<Vec<u8>> = (0..3000).map(|i| test_frame(A, X, &[], i, 200)).collect();
    std::thread::scope(|s| {
        let pace = capture_lab::Pace { burst: 8, pause: Duration::from_millis(3) };
        let lab = &lab;
        let sender = s.spawn(move || lab.send_paced(&frames, pace));
        std::thread::sleep(Duration::from_millis(300));
        lab.config("snaplen = 128", "", TARGET_A);
        daemon.signal(libc::SIGHUP);
        daemon.wait_for_log("reloaded: snaplen 128", Duration::from_secs(5));
        sender.join().unwrap();
    });
    let log = daemon.log_handle();
    assert!(daemon.stop().0.success());
    let (files, _) = lab.files();
    let packets = read_all(&files);
    assert_eq!(ids(&packets), (0..3000).collect::<Vec<_>>(), "{}", log.text());
    assert!(
        packets.iter().any(|p| p.data.len() == 64) && packets.iter().any(|p| p.data.len() == 128)
    );
    // Each file's IDB promises a snap length its records keep: libpcap (which stops at the
    // first record longer than that) reads every file to its end.
    let libpcap: u64 = files.iter().map(|f| tcpdump_count(f)).sum();
    assert_eq!(libpcap, 3000, "tcpdump reads every record of {files:?}");
    assert!(log.text().contains("starting a new file"), "{}", log.text());
}

#[test]
fn an_invalid_reload_is_rejected_and_capture_goes_on() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new(1);
    let write_config = |prefix: &str| {
        let path = lab.dir.path().join("capture.toml");
        let text = format!(
            "[output]\ndirectory = \"{}\"\nprefix = \"{prefix}\"\nrotate_packets = 10\n\n\
             [[interface]]\nname = \"{CAPTURE_IF}\"\n\n{TARGET_A}",
            lab.out_dir().display()
        );
        std::fs::write(&path, text).unwrap();
        path
    };
    let config = write_config("t");
    let daemon = lab.start(&config);
    lab.send(&mixed(0, 10));
    let page = scrape_metrics(&lab.ns);
    assert_eq!(metric(&page, "capture_config_last_reload_successful"), Some(1), "{page}");
    let loaded = metric(&page, "capture_config_last_reload_success_timestamp_seconds");
    assert!(loaded.is_some_and(|t| t > 1_600_000_000), "{page}");
    // For `status`, which reads the metrics address from a config it can load.
    let good = lab.dir.path().join("good.toml");
    std::fs::copy(&config, &good).unwrap();

    std::fs::write(
        &config,
        "[[interface]]\nname = \"cap0\"\n[[target]]\nname = \"x\"\nvlan = 4095\n",
    )
    .unwrap();
    daemon.signal(libc::SIGHUP);
    daemon.wait_for_log("reload rejected, the running configuration stays", Duration::from_secs(5));
    assert!(
        daemon.log_text().contains(&format!("{}:5:8: key `vlan`", config.display())),
        "{}",
        daemon.log_text()
    );
    // Visible to monitoring too, not only in the log; the configuration loaded is the first.
    let page = scrape_metrics(&lab.ns);
    assert_eq!(metric(&page, "capture_config_last_reload_successful"), Some(0), "{page}");
    assert_eq!(metric(&page, "capture_config_last_reload_success_timestamp_seconds"), loaded);
    let (_, status) = lab.run_daemon(&[], &["status", "--config", good.to_str().unwrap()]);
    assert!(status.contains("the last reload was REJECTED"), "{status}");

    // A valid reload with a new prefix: applies from the next file.
    write_config("renamed");
    daemon.signal(libc::SIGHUP);
    daemon.wait_for_log("reloaded:", Duration::from_secs(5));
    let page = scrape_metrics(&lab.ns);
    assert_eq!(metric(&page, "capture_config_last_reload_successful"), Some(1), "{page}");
    lab.send(&mixed(100, 40));
    assert!(daemon.stop().0.success());

    let (files, _) = lab.files();
    assert_eq!(
        ids(&read_all(&files)),
        (0..10).chain(100..140).filter(|i| i % 2 == 0).collect::<Vec<_>>()
    );
    let names: Vec<String> =
        files.iter().map(|f| f.file_name().unwrap().to_string_lossy().into_owned()).collect();
    assert!(names.iter().any(|n| n.starts_with("t_")), "{names:?}");
    assert!(names.iter().any(|n| n.starts_with("renamed_00001_")), "{names:?}");
}

/// Frames to A only, ids from `start`.
fn to_a(start: u32, n: u32) -> Vec<Vec<u8>> {
    (start..start + n).map(|i| test_frame(A, X, &[], i, 100)).collect()
}

#[test]
fn reload_adds_and_removes_an_interface_without_touching_the_other() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new(1);
    let _second = lab.add_pair("cap1", "gen1", 1);
    let (cap0, cap1) = ("name = \"cap0\"", "name = \"cap1\"");
    let config = lab.config_on(&[cap0], "", "", TARGET_A);
    let daemon = lab.start(&config);
    let prog = lab.xdp_prog_id().expect("an XDP program on cap0");
    assert_eq!(lab.xdp_prog_id_of("cap1"), None);

    // Steady traffic on cap0 while cap1 is added, used and removed again.
    std::thread::scope(|s| {
        let pace = capture_lab::Pace { burst: 8, pause: Duration::from_millis(3) };
        let lab = &lab;
        let sender = s.spawn(move || lab.send_paced(&to_a(0, 3000), pace));
        std::thread::sleep(Duration::from_millis(200));
        lab.config_on(&[cap0, cap1], "", "", TARGET_A);
        daemon.signal(libc::SIGHUP);
        daemon.wait_for_log_count("reloaded:", 1, Duration::from_secs(5));
        assert!(lab.xdp_prog_id_of("cap1").is_some(), "cap1 attached by the reload");
        lab.send_from("gen1", &to_a(20_000, 100));
        lab.config_on(&[cap0], "", "", TARGET_A);
        daemon.signal(libc::SIGHUP);
        daemon.wait_for_log_count("reloaded:", 2, Duration::from_secs(5));
        sender.join().unwrap();
    });
    assert_eq!(lab.xdp_prog_id_of("cap1"), None, "cap1 detached by the second reload");
    lab.send_from("gen1", &to_a(30_000, 50));
    assert_eq!(lab.xdp_prog_id(), Some(prog), "cap0 kept its program throughout");
    let log = daemon.log_handle();
    assert!(daemon.stop().0.success());
    assert!(!log.text().contains("restarting"), "{}", log.text());
    assert!(log.text().contains("stopped: 3100 frame(s) written"), "{}", log.text());

    let (files, parts) = lab.files();
    assert!(parts.is_empty(), "{parts:?}");
    assert!(files.len() >= 3, "a new file at each change of interfaces: {files:?}");
    let got = ids_by_interface(&files);
    let got = |iface: &str| got.get(iface).cloned().unwrap_or_default();
    assert_eq!(got("cap0"), (0..3000).collect::<Vec<_>>(), "every frame on cap0");
    assert_eq!(got("cap1"), (20_000..20_100).collect::<Vec<_>>(), "cap1 while it was configured");
}

#[test]
fn reload_restarts_an_interface_whose_socket_settings_changed() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new(1);
    let config = lab.config("ring_size = 1024", "", TARGET_A);
    let daemon = lab.start(&config);
    let prog = lab.xdp_prog_id().expect("attached");
    lab.send(&to_a(0, 100));
    lab.config("ring_size = 2048", "", TARGET_A);
    daemon.signal(libc::SIGHUP);
    daemon.wait_for_log("reloaded:", Duration::from_secs(5));
    assert!(
        daemon.log_text().contains("restarting the capture on cap0 to apply ring_size"),
        "{}",
        daemon.log_text()
    );
    let after = lab.xdp_prog_id().expect("attached again");
    assert_ne!(after, prog, "new sockets, new program");
    let text = daemon.log_text();
    assert!(text.contains("reload: cap0 restarted; not captured for"), "{text}");
    assert!(!text.contains("cannot restart"), "with the new settings, not the old: {text}");
    lab.send(&to_a(100, 100));
    // An interface that does not exist: rejected, and nothing changes.
    lab.config_on(&["name = \"cap0\"", "name = \"nope0\""], "ring_size = 4096", "", TARGET_A);
    daemon.signal(libc::SIGHUP);
    daemon.wait_for_log("reload rejected", Duration::from_secs(5));
    assert!(daemon.log_text().contains("nope0"), "{}", daemon.log_text());
    assert_eq!(lab.xdp_prog_id(), Some(after), "a rejected reload changes nothing");
    lab.send(&to_a(200, 100));
    assert!(daemon.stop().0.success());

    let (files, _) = lab.files();
    assert!(files.len() >= 2, "{files:?}");
    assert_eq!(ids(&read_all(&files)), (0..300).collect::<Vec<_>>());
}

#[test]
fn watch_config_reloads_when_the_file_is_replaced() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new(1);
    let config = lab.config("", "", TARGET_A);
    let daemon = Daemon::start_with(&lab.ns, &config, &["--watch-config"]);
    lab.send(&mixed(0, 20));
    // The way editors and config tools save: a new file renamed over the old one.
    let new = lab.config("", "", TARGET_B);
    let tmp = config.with_extension("new");
    std::fs::rename(&new, &tmp).unwrap();
    std::fs::rename(&tmp, &config).unwrap();
    daemon.wait_for_log("changed; reloading", Duration::from_secs(5));
    daemon.wait_for_log("reloaded:", Duration::from_secs(5));
    lab.send(&mixed(100, 20));
    // A broken save is rejected like a broken SIGHUP reload; capture goes on.
    std::fs::write(&config, "[[interface]]\nname = \"cap0\"\n[[target]]\nname = \"x\"\nvlan = 0\n")
        .unwrap();
    daemon.wait_for_log("reload rejected", Duration::from_secs(5));
    lab.send(&mixed(200, 20));
    let log = daemon.log_handle();
    assert!(daemon.stop().0.success());
    assert_eq!(log.text().matches("reloaded:").count(), 1, "{}", log.text());
    let (files, _) = lab.files();
    let want: Vec<u32> = (0..20)
        .filter(|i| i % 2 == 0)
        .chain((100..120).chain(200..220).filter(|i| i % 2 == 1))
        .collect();
    assert_eq!(ids(&read_all(&files)), want);
}

#[test]
fn an_interface_that_vanishes_is_captured_again_when_it_is_back() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new(1);
    let _second = lab.add_pair("cap1", "gen1", 1);
    let config = lab.config_on(&["name = \"cap0\"", "name = \"cap1\""], "", "", TARGET_A);
    let daemon = lab.start(&config);
    let prog = lab.xdp_prog_id().expect("attached to cap0");
    lab.send_from("gen1", &to_a(0, 50));

    lab.ns.ip(&["link", "del", "cap1"]).expect("deleting cap1");
    daemon.wait_for_log("cap1: the interface is gone", Duration::from_secs(5));
    lab.send(&to_a(1000, 50));
    // While it is gone, a reload that still names it is accepted.
    daemon.signal(libc::SIGHUP);
    daemon.wait_for_log("reloaded:", Duration::from_secs(5));
    assert!(daemon.log_text().contains("(missing: cap1)"), "{}", daemon.log_text());
    let status = lab
        .ns
        .command(daemon_bin().to_str().unwrap())
        .args(["status", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    let status = String::from_utf8_lossy(&status.stdout);
    assert!(status.contains("cap1: NOT CAPTURED"), "{status}");
    assert!(status.contains("capturing on 1 interface(s)"), "{status}");

    let _again = lab.add_pair("cap1", "gen1", 1);
    daemon.wait_for_log("cap1: back; capturing it again", Duration::from_secs(5));
    lab.send_from("gen1", &to_a(100, 50));
    lab.send(&to_a(1100, 50));
    assert_eq!(lab.xdp_prog_id(), Some(prog), "cap0 was not touched");
    assert!(daemon.stop().0.success());

    let (files, parts) = lab.files();
    assert!(parts.is_empty(), "{parts:?}");
    let got = ids_by_interface(&files);
    let got = |iface: &str| got.get(iface).cloned().unwrap_or_default();
    assert_eq!(got("cap0"), (1000..1050).chain(1100..1150).collect::<Vec<_>>());
    assert_eq!(got("cap1"), (0..50).chain(100..150).collect::<Vec<_>>());
}

#[test]
fn repeated_reloads_under_traffic_leak_nothing_and_lose_nothing() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new(2);
    let _second = lab.add_pair("cap1", "gen1", 1);
    let (cap0, cap1) = ("name = \"cap0\"", "name = \"cap1\"");
    let config = lab.config_on(&[cap0], "", "", TARGET_A);
    let daemon = lab.start(&config);
    let pid = daemon.pid();
    let count = |dir: &str| std::fs::read_dir(format!("/proc/{pid}/{dir}")).unwrap().count();
    let (fds, threads) = (count("fd"), count("task"));

    // cap1 comes and goes eight times while cap0 carries steady traffic; between two reloads a
    // restart of everything (ring_size) is thrown in.
    std::thread::scope(|s| {
        let pace = capture_lab::Pace { burst: 8, pause: Duration::from_millis(3) };
        let lab = &lab;
        let sender = s.spawn(move || lab.send_paced(&to_a(0, 4000), pace));
        for round in 0..8 {
            let with = if round % 2 == 0 { vec![cap0, cap1] } else { vec![cap0] };
            let ring = if round >= 4 { "ring_size = 2048" } else { "" };
            lab.config_on(&with, ring, "", TARGET_A);
            daemon.signal(libc::SIGHUP);
            daemon.wait_for_log_count("reloaded:", round + 1, Duration::from_secs(5));
            std::thread::sleep(Duration::from_millis(100));
        }
        sender.join().unwrap();
    });
    // Back to the start: same interfaces and settings, so the same threads and descriptors.
    lab.config_on(&[cap0], "", "", TARGET_A);
    daemon.signal(libc::SIGHUP);
    daemon.wait_for_log_count("reloaded:", 9, Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!((count("fd"), count("task")), (fds, threads), "descriptors and threads");
    let log = daemon.log_handle();
    assert!(daemon.stop().0.success());

    let (files, parts) = lab.files();
    assert!(parts.is_empty(), "{parts:?}");
    let got = ids_by_interface(&files);
    let cap0_ids = got.get("cap0").cloned().unwrap_or_default();
    let mut once = cap0_ids.clone();
    once.dedup();
    assert_eq!(once, cap0_ids, "no frame twice");
    // Every frame on cap0 but those sent while the one restart (ring_size) reopened its sockets:
    // the missing ids are one run.
    assert!(log.text().contains("restarting the capture on cap0 to apply ring_size"));
    let missing: Vec<u32> = (0..4000).filter(|i| cap0_ids.binary_search(i).is_err()).collect();
    let mut runs: Vec<(u32, u32)> = Vec::new();
    for &m in &missing {
        match runs.last_mut() {
            Some((_, end)) if *end + 1 == m => *end = m,
            _ => runs.push((m, m)),
        }
    }
    assert!(runs.len() <= 1, "frames lost outside the restart: {runs:?}\n{}", log.text());
    assert!(!log.text().contains("cannot restart"), "{}", log.text());
    eprintln!("the restart's gap: {} frame(s) at ~2.7 kpps", missing.len());
}

#[test]
fn reload_switches_one_interface_between_tap_and_mirror_and_leaves_the_other_alone() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new(1);
    let _second = lab.add_pair("cap1", "gen1", 1);
    let cap0 = "name = \"cap0\"\nmode = \"tap\"";
    let (cap1_tap, cap1_mirror) =
        ("name = \"cap1\"\nmode = \"tap\"", "name = \"cap1\"\nmode = \"mirror\"");
    let config = lab.config_on(&[cap0, cap1_tap], "", "", TARGET_A);
    let daemon = lab.start(&config);
    let tcx = |ifname: &str| {
        (tcx_prog_ids(&lab.ns, ifname, Tcx::Ingress), tcx_prog_ids(&lab.ns, ifname, Tcx::Egress))
    };
    let cap0_programs = tcx("cap0");
    assert_eq!((cap0_programs.0.len(), cap0_programs.1.len()), (1, 1));

    // Steady traffic on cap0 while cap1 goes to mirror mode and back.
    std::thread::scope(|s| {
        let pace = capture_lab::Pace { burst: 8, pause: Duration::from_millis(3) };
        let lab = &lab;
        let sender = s.spawn(move || lab.send_paced(&to_a(0, 3000), pace));
        std::thread::sleep(Duration::from_millis(200));
        lab.config_on(&[cap0, cap1_mirror], "", "", TARGET_A);
        daemon.signal(libc::SIGHUP);
        daemon.wait_for_log_count("reloaded:", 1, Duration::from_secs(5));
        assert!(lab.xdp_prog_id_of("cap1").is_some(), "cap1 in mirror mode: XDP");
        assert_eq!(tcx("cap1"), (vec![], vec![]), "cap1 in mirror mode: no tcx left");
        lab.send_from("gen1", &to_a(20_000, 100));
        lab.config_on(&[cap0, cap1_tap], "", "", TARGET_A);
        daemon.signal(libc::SIGHUP);
        daemon.wait_for_log_count("reloaded:", 2, Duration::from_secs(5));
        sender.join().unwrap();
    });
    assert_eq!(lab.xdp_prog_id_of("cap1"), None, "cap1 back in tap mode: no XDP");
    let back = tcx("cap1");
    assert_eq!((back.0.len(), back.1.len()), (1, 1), "cap1 back in tap mode: tcx");
    lab.send_from("gen1", &to_a(30_000, 50));
    assert_eq!(tcx("cap0"), cap0_programs, "cap0 kept its programs throughout");
    let log = daemon.log_handle();
    assert!(daemon.stop().0.success());
    let text = log.text();
    assert!(
        text.contains("restarting the capture on cap1 to apply mode (tap -> mirror):"),
        "{text}"
    );
    assert!(
        text.contains("restarting the capture on cap1 to apply mode (mirror -> tap):"),
        "{text}"
    );
    assert!(!text.contains("restarting the capture on cap0"), "{text}");

    let (files, parts) = lab.files();
    assert!(parts.is_empty(), "{parts:?}");
    let got = ids_by_interface(&files);
    let got = |iface: &str| got.get(iface).cloned().unwrap_or_default();
    assert_eq!(got("cap0"), (0..3000).collect::<Vec<_>>(), "every frame on cap0");
    let cap1: Vec<u32> = (20_000..20_100).chain(30_000..30_050).collect();
    assert_eq!(got("cap1"), cap1, "cap1 in mirror mode and in tap mode again");
}
