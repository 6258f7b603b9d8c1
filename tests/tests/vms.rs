//! Targets named by VM (`vm = "NAME"`), through a real libvirt connection: the test driver
//! (`test:///path/node.xml`, no daemon) describes the lab's VMs; the real daemon binary reads
//! their MACs from it. What was captured is read back from the files; `check`, `status` and
//! the metrics say which VMs are present.

use capture_tests::*;

/// web01's two interfaces.
const WEB_1: [u8; 6] = [0x52, 0x54, 0, 0, 0x01, 0x01];
const WEB_2: [u8; 6] = [0x52, 0x54, 0, 0, 0x01, 0x02];
/// An extra MAC given with `mac` beside `vm`.
const EXTRA: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0e];
/// Nobody's: a frame from it matches no target.
const OTHER: [u8; 6] = [0x52, 0x54, 0, 0, 0x09, 0x09];
const PEER: [u8; 6] = [0x52, 0x54, 0, 0, 0xfe, 0xfe];

/// A node file for libvirt's test driver: `web01` running with two interfaces (tap names not
/// `vnetN`, which libvirt treats as its own and renames), `stopped01` defined but shut off.
fn write_node(dir: &std::path::Path) -> std::path::PathBuf {
    let iface = |mac: [u8; 6], tap: &str| {
        format!(
            "<interface type='ethernet'><mac address='{}'/><target dev='{tap}'/></interface>",
            capture_lab::format_mac(mac)
        )
    };
    // stopped01 is shut off (runstate 5), as a VM migrated away or not started leaves its domain.
    let xml = format!(
        "<node>\n<domain type='test'><name>web01</name><memory>65536</memory>\
         <os><type>hvm</type></os><devices>{}{}</devices></domain>\n\
         <domain type='test' xmlns:test='http://libvirt.org/schemas/domain/test/1.0'>\
         <name>stopped01</name><memory>65536</memory><os><type>hvm</type></os>\
         <devices>{}</devices><test:runstate>5</test:runstate></domain>\n</node>\n",
        iface(WEB_1, "ctap-web01a"),
        iface(WEB_2, "ctap-web01b"),
        iface(OTHER, "ctap-stop01"),
    );
    let path = dir.join("node.xml");
    std::fs::write(&path, xml).expect("writing node.xml");
    path
}

const TARGETS: &str = "\
[[target]]
name = \"web01\"
vm = \"web01\"

[[target]]
name = \"web01-extra\"
vm = \"web01\"
mac = \"02:00:00:00:00:0e\"

[[target]]
name = \"db02\"
vm = \"db02\"

[[target]]
name = \"db02-extra\"
vm = \"db02\"
mac = \"02:00:00:00:00:0e\"

[[target]]
name = \"stopped01\"
vm = \"stopped01\"
";

fn config_with(lab: &Lab, mode: &str, uri: &str, targets: &str) -> std::path::PathBuf {
    let config = lab.config_on(
        &[&format!("name = \"{CAPTURE_IF}\"\nmode = \"{mode}\"")],
        "",
        "",
        &format!("[libvirt]\nuri = \"{uri}\"\n\n{targets}"),
    );
    assert!(std::fs::read_to_string(&config).unwrap().contains("[libvirt]"));
    config
}

#[test]
fn a_vm_target_captures_its_vms_macs_and_an_absent_vm_nothing() {
    if !root_or_skip() {
        return;
    }
    let frames = [
        test_frame(PEER, WEB_1, &[], 1, 100),
        test_frame(WEB_2, PEER, &[(0x8100, 7)], 2, 100),
        // Only web01-extra's own MAC: captured while web01 is here (db02-extra stays silent).
        test_frame(PEER, EXTRA, &[], 3, 100),
        // The MAC of a VM that is defined but shut off: its target matches nothing.
        test_frame(PEER, OTHER, &[], 4, 100),
        // Nobody's: had an absent VM's target meant "any MAC", this would be captured.
        test_frame(PEER, [0x52, 0x54, 0, 0, 0x07, 0x07], &[], 5, 100),
    ];
    for mode in ["tap", "mirror"] {
        let lab = Lab::new(1);
        let node = write_node(lab.dir.path());
        let uri = format!("test://{}", node.display());
        let config = config_with(&lab, mode, &uri, TARGETS);

        let (code, text) = lab.run_daemon(&[], &["check", "--config", config.to_str().unwrap()]);
        assert_eq!(code, 0, "{mode}: check:\n{text}");
        assert!(text.contains(&format!("ok    libvirt: connected to {uri}")), "{text}");
        assert!(
            text.contains(
                "ok    vm web01: found, running (target web01): MACs 52:54:00:00:01:01, \
                 52:54:00:00:01:02; taps ctap-web01a, ctap-web01b"
            ),
            "{mode}: check:\n{text}"
        );
        assert!(text.contains("WARN  vm db02: absent: not running on this host"), "{text}");
        assert!(text.contains("WARN  vm stopped01: absent"), "{text}");

        let daemon = lab.start(&config);
        lab.send(&frames);
        let page = scrape_metrics(&lab.ns);
        let present = |t: &str, vm: &str| {
            metric(&page, &format!("capture_target_vm_present{{target=\"{t}\",vm=\"{vm}\"}}"))
        };
        assert!(page.contains("# TYPE capture_target_vm_present gauge\n"), "{page}");
        assert_eq!(present("web01", "web01"), Some(1), "{page}");
        assert_eq!(present("web01-extra", "web01"), Some(1), "{page}");
        assert_eq!(present("db02", "db02"), Some(0), "{page}");
        assert_eq!(present("stopped01", "stopped01"), Some(0), "{page}");
        let hits = |t: &str| {
            metric(
                &page,
                &format!(
                    "capture_target_frames_total{{interface=\"{CAPTURE_IF}\",target=\"{t}\"}}"
                ),
            )
        };
        assert_eq!(hits("web01"), Some(2), "{page}");
        assert_eq!(hits("web01-extra"), Some(3), "{page}");
        assert_eq!(hits("db02"), Some(0), "{page}");
        assert_eq!(hits("db02-extra"), Some(0), "{page}");
        assert_eq!(hits("stopped01"), Some(0), "{page}");

        let (code, status) = lab.run_daemon(&[], &["status", "--config", config.to_str().unwrap()]);
        assert_eq!(code, 0, "{status}");
        assert!(status.contains("target web01: VM web01 present on this host"), "{status}");
        assert!(status.contains("target db02: VM db02 ABSENT"), "{status}");
        let (status, _) = daemon.stop();
        assert!(status.success(), "{mode}: daemon exit: {status}");

        let (files, _) = lab.files();
        assert_eq!(ids(&read_all(&files)), vec![1, 2, 3], "{mode}: captured ids");
    }
}

#[test]
fn an_unreachable_libvirt_is_a_warning_and_the_capture_runs() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new(1);
    let uri = format!("qemu+unix:///system?socket={}/no-libvirt-sock", lab.dir.path().display());
    let targets = format!(
        "{TARGETS}\n[[target]]\nname = \"plain\"\nmac = \"{}\"\n",
        capture_lab::format_mac(OTHER)
    );
    let config = config_with(&lab, "tap", &uri, &targets);
    let (code, text) = lab.run_daemon(&[], &["check", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 0, "check:\n{text}");
    assert!(text.contains(&format!("WARN  libvirt: libvirt at \"{uri}\"")), "{text}");
    assert!(text.contains("no-libvirt-sock"), "the cause is named:\n{text}");

    let daemon = lab.start(&config);
    daemon.wait_for_log("the vm targets match nothing until libvirt answers", TIMEOUT);
    lab.send(&[test_frame(PEER, WEB_1, &[], 1, 100), test_frame(PEER, OTHER, &[], 2, 100)]);
    let page = scrape_metrics(&lab.ns);
    assert_eq!(
        metric(&page, "capture_target_vm_present{target=\"web01\",vm=\"web01\"}"),
        Some(0),
        "{page}"
    );
    let (status, _) = daemon.stop();
    assert!(status.success(), "daemon exit: {status}");
    let (files, _) = lab.files();
    assert_eq!(ids(&read_all(&files)), vec![2], "only the plain target's frame");
}

const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

/// `vm_taps = true`: the daemon captures on the tap devices libvirt names for the running VMs
/// (here real tap devices with a "VM" behind each), not on a stopped VM's, and picks up a tap
/// that appears after it started.
#[test]
fn vm_taps_captures_on_the_running_vms_taps_and_picks_up_a_late_one() {
    if !root_or_skip() {
        return;
    }
    use capture_lab::TapVm;
    let lab = Lab::new(1);
    let node = write_node(lab.dir.path());
    let uri = format!("test://{}", node.display());
    let ip = |n| std::net::Ipv4Addr::new(10, 77, 0, n);
    let web_a = TapVm::create(&lab.ns, "ctap-web01a", WEB_1, ip(1)).expect("tap");
    let stopped = TapVm::create(&lab.ns, "ctap-stop01", OTHER, ip(3)).expect("tap");
    let targets = "[[target]]\nname = \"web01\"\nvm = \"web01\"\n\n\
                   [[target]]\nname = \"stopped01\"\nvm = \"stopped01\"\n";
    let config = write_config(
        lab.dir.path(),
        &["vm_taps = true"],
        "",
        "",
        &format!("[libvirt]\nuri = \"{uri}\"\n\n{targets}"),
    );
    let (code, text) = lab.run_daemon(&[], &["check", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 0, "check:\n{text}");
    assert!(
        text.contains("ok    vm_taps: capturing in tap mode on the taps of the running VMs, now: ctap-web01a, ctap-web01b"),
        "{text}"
    );
    let daemon = lab.start(&config);
    daemon.wait_for_log("capturing on ctap-web01a in tap mode", TIMEOUT);
    assert!(tcx_prog_ids(&lab.ns, "ctap-stop01", Tcx::Ingress).is_empty(), "stopped VM's tap");
    web_a.send_frame(&test_frame(PEER, WEB_1, &[], 1, 100)).unwrap();
    stopped.send_frame(&test_frame(PEER, OTHER, &[], 2, 100)).unwrap();

    // web01's second tap appears after the start: captured from then on.
    let web_b = TapVm::create(&lab.ns, "ctap-web01b", WEB_2, ip(2)).expect("tap");
    daemon.wait_for_log("capturing on ctap-web01b in tap mode", TIMEOUT);
    assert_eq!(tcx_prog_ids(&lab.ns, "ctap-web01b", Tcx::Ingress).len(), 1);
    web_b.send_frame(&test_frame(PEER, WEB_2, &[], 3, 100)).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));

    let (status, _) = daemon.stop();
    assert!(status.success(), "daemon exit: {status}");
    let (files, _) = lab.files();
    let by_iface = ids_by_interface(&files);
    assert_eq!(by_iface.get("ctap-web01a"), Some(&vec![1]), "{by_iface:?}");
    assert_eq!(by_iface.get("ctap-web01b"), Some(&vec![3]), "{by_iface:?}");
    assert!(!by_iface.contains_key("ctap-stop01"), "{by_iface:?}");
    drop((web_a, web_b, stopped));
}
