//! NIC offloads and what they do to a capture: a VLAN tag kept beside the frame (rx-vlan
//! offload, or a veth peer that keeps it there), and GRO ahead of generic XDP. `check` and
//! `run` read the features (ETHTOOL_GFEATURES) and say what they mean; tap mode recovers the
//! tag from the skb, XDP cannot.
//!
//! On veth the tag travels beside the frame when the *sending* side keeps it there: here a tcx
//! egress program on the peer (`TagOnEgress`, bpf_skb_vlan_push) with the peer's
//! tx-vlan-offload on. The capture side's rx-vlan-hw-parse changes nothing on veth (measured
//! on Linux 6.18), so the tests toggle it only to see `check` read it.

use std::time::Duration;

use capture_lab::TagOnEgress;
use capture_tests::*;

const VM: [u8; 6] = [0x52, 0x54, 0, 0, 0, 0x0a];
const PEER: [u8; 6] = [0x52, 0x54, 0, 0, 0, 0x0b];
const TARGETS: &str = "[[target]]\nname = \"v100\"\nvlan = 100\n\n[[target]]\nname = \"all\"\n";
const VLAN_WARNING: &str = "never reaches XDP, whatever rx-vlan-hw-parse says";

fn ethtool(lab: &Lab, args: &[&str]) {
    let status = lab.ns.command("ethtool").arg("-K").args(args).status().expect("ethtool -K");
    assert!(status.success(), "ethtool -K {args:?}");
}

/// What a capture of 5 frames sent from the peer (tagged 100 on its way out) gives, in `mode`
/// (and mirror mode's `xdp_mode`): the captured frames, the frames of target v100, the log.
fn capture_tagged(lab: &Lab, interface: &str) -> (Vec<Packet>, u64, String) {
    // Each run reads only its own files.
    let _ = std::fs::remove_dir_all(lab.out_dir());
    let config =
        lab.config_on(&[&format!("name = \"{CAPTURE_IF}\"\n{interface}")], "", "", TARGETS);
    let daemon = lab.start(&config);
    let frames: Vec<Vec<u8>> = (0..5).map(|id| test_frame(VM, PEER, &[], id, 100)).collect();
    lab.send(&frames);
    let page = scrape_metrics(&lab.ns);
    let log = daemon.log_handle();
    let (status, _) = daemon.stop();
    assert!(status.success(), "{interface}: daemon exit {status}");
    let v100 = metric(&page, "capture_target_frames_total{interface=\"cap0\",target=\"v100\"}");
    let (files, _) = lab.files();
    let packets = read_all(&files).into_iter().filter(|p| frame_id(&p.data).is_some()).collect();
    (packets, v100.expect("a v100 counter"), log.text())
}

/// The outer ethertype and VLAN ID of every captured test frame.
fn tags(packets: &[Packet]) -> Vec<(u16, u16)> {
    packets
        .iter()
        .map(|p| {
            let et = u16::from_be_bytes([p.data[12], p.data[13]]);
            let vid =
                if et == 0x8100 { u16::from_be_bytes([p.data[14], p.data[15]]) & 0xfff } else { 0 };
            (et, vid)
        })
        .collect()
}

#[test]
fn a_tag_beside_the_frame_is_recovered_in_tap_mode_and_said_lost_in_mirror_mode() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new(1);
    let _tag = TagOnEgress::attach(&lab.ns, PEER_IF, 100).expect("tagging the peer's frames");

    // XDP never sees the tag: the VLAN target misses and the frames lack it; the daemon says so.
    let (packets, v100, log) = capture_tagged(&lab, "mode = \"mirror\"");
    assert_eq!(tags(&packets), vec![(TEST_ETHERTYPE, 0); 5], "mirror: frames without their tag");
    assert_eq!(v100, 0, "mirror: the VLAN target matched nothing");
    assert!(log.contains(VLAN_WARNING) && log.contains("VLAN targets match nothing"), "{log}");

    // tcx reads it from the skb, matches on it and writes it back.
    let (packets, v100, log) = capture_tagged(&lab, "mode = \"tap\"");
    assert_eq!(tags(&packets), vec![(0x8100, 100); 5], "tap: frames with their tag");
    assert_eq!(v100, 5);
    assert!(!log.contains(VLAN_WARNING), "{log}");

    // With the peer's tx-vlan-offload off the kernel writes the tag into the frame: XDP sees it.
    ethtool(&lab, &[PEER_IF, "txvlan", "off"]);
    let (packets, v100, _) = capture_tagged(&lab, "mode = \"mirror\"");
    assert_eq!(tags(&packets), vec![(0x8100, 100); 5], "mirror: frames tagged in the data");
    assert_eq!(v100, 5);
}

/// `capture-daemon check`'s lines about the capture interface's offloads.
fn check_offloads(lab: &Lab, interface: &str) -> Vec<String> {
    let config =
        lab.config_on(&[&format!("name = \"{CAPTURE_IF}\"\n{interface}")], "", "", TARGETS);
    let (_, out) = lab.run_daemon(&[], &["check", "--config", config.to_str().expect("utf-8")]);
    let lines: Vec<String> =
        out.lines().filter(|l| l.contains("interface cap0 offloads")).map(String::from).collect();
    assert!(!lines.is_empty(), "no offload lines:\n{out}");
    lines
}

#[test]
fn check_reads_the_vlan_offloads_and_says_what_they_mean() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new(1);
    let lines = check_offloads(&lab, "mode = \"mirror\"");
    let vlan = lines.iter().find(|l| l.contains(VLAN_WARNING)).expect("the VLAN line");
    assert!(vlan.starts_with("WARN") && vlan.contains("(rx-vlan-hw-parse on"), "{lines:?}");
    ethtool(&lab, &[CAPTURE_IF, "rxvlan", "off"]);
    let lines = check_offloads(&lab, "mode = \"mirror\"");
    assert!(lines.iter().any(|l| l.contains("(rx-vlan-hw-parse off")), "{lines:?}");
    // Tap mode: nothing to warn about, the tag is read from the skb.
    let lines = check_offloads(&lab, "mode = \"tap\"");
    assert!(lines.iter().all(|l| l.starts_with("ok")), "{lines:?}");
    assert!(lines[0].contains("tcx reads the VLAN tag"), "{lines:?}");
}

#[test]
fn gro_ahead_of_generic_xdp_is_said() {
    if !root_or_skip() {
        return;
    }
    let gro_warning = "rx-gro on and XDP runs generic, after GRO";
    let lab = Lab::new(1);
    let generic = "mode = \"mirror\"\nxdp_mode = \"generic\"";
    // veth has GRO off by default.
    let config = lab.config_on(&[&format!("name = \"{CAPTURE_IF}\"\n{generic}")], "", "", TARGETS);
    let daemon = lab.start(&config);
    let log = daemon.log_handle();
    let (status, _) = daemon.stop();
    assert!(status.success());
    assert!(!log.text().contains("rx-gro on"), "{}", log.text());
    ethtool(&lab, &[CAPTURE_IF, "gro", "on"]);
    let daemon = lab.start(&config);
    daemon.wait_for_log(gro_warning, Duration::from_secs(5));
    let (status, _) = daemon.stop();
    assert!(status.success());
    assert!(check_offloads(&lab, generic).iter().any(|l| l.contains(gro_warning)));
    // Native XDP runs before GRO: nothing to say.
    let native = "mode = \"mirror\"\nxdp_mode = \"native\"";
    assert!(!check_offloads(&lab, native).iter().any(|l| l.contains("rx-gro on")));
}
