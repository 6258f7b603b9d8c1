//! Mirror mode on a driver whose native XDP gives the program no room for the frame's metadata
//! (`bpf_xdp_adjust_meta` fails: sfc, gve, mana and others). Every driver on the test machines
//! has the room (veth, tun, generic XDP), so the tests make the real program act as on such a
//! driver through its test hook: `FAULT_NO_META` in the live CONFIG map, which the daemon never
//! sets. With `xdp_mode = "auto"` the daemon must move to generic XDP and capture; with
//! `"native"` it must say, as an error, that nothing is captured.

use std::process::Command;
use std::time::Duration;

use capture_common::{FAULT_NO_META, FilterConfig};
use capture_tests::*;

const VM: [u8; 6] = [0x52, 0x54, 0, 0, 0, 0x0a];
const PEER: [u8; 6] = [0x52, 0x54, 0, 0, 0, 0x0b];
/// Offset of `faults` in the CONFIG map's value, from the shared ABI type itself: a
/// hand-counted offset went stale when the overlay slots were added to `FilterConfig`.
const FAULTS_OFFSET: usize = std::mem::offset_of!(FilterConfig, faults);

fn bpftool(args: &[&str]) -> String {
    let out = Command::new("bpftool").arg("-j").args(args).output().expect("running bpftool");
    assert!(out.status.success(), "bpftool {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The comma-separated items of the JSON array `"key":[...]` in `json`, quotes trimmed.
fn json_array(json: &str, key: &str) -> Vec<String> {
    let start = json.find(&format!("\"{key}\":[")).unwrap_or_else(|| panic!("no {key}: {json}"));
    let rest = &json[start + key.len() + 4..];
    let items = &rest[..rest.find(']').expect("end of the array")];
    items.split(',').map(|s| s.trim().trim_matches('"').to_owned()).collect()
}

/// Sets (or clears) `FAULT_NO_META` in the CONFIG map of the XDP program on the capture
/// interface.
fn set_no_metadata(lab: &Lab, on: bool) {
    let prog = lab.xdp_prog_id().expect("an XDP program on the capture interface").to_string();
    let config = json_array(&bpftool(&["prog", "show", "id", &prog]), "map_ids")
        .into_iter()
        .find(|id| bpftool(&["map", "show", "id", id]).contains("\"name\":\"CONFIG\""))
        .expect("the program's CONFIG map");
    let key = ["0", "0", "0", "0"];
    let lookup = bpftool(&[&["map", "lookup", "id", &config, "key"][..], &key].concat());
    let mut value: Vec<u8> = json_array(&lookup, "value")
        .iter()
        .map(|b| u8::from_str_radix(b.trim_start_matches("0x"), 16).expect("a hex byte"))
        .collect();
    let bit = u8::try_from(FAULT_NO_META).expect("a low bit");
    value[FAULTS_OFFSET] =
        if on { value[FAULTS_OFFSET] | bit } else { value[FAULTS_OFFSET] & !bit };
    let value: Vec<String> = value.iter().map(u8::to_string).collect();
    let value: Vec<&str> = value.iter().map(String::as_str).collect();
    bpftool(&[&["map", "update", "id", &config, "key"][..], &key, &["value"], &value].concat());
}

fn frames(ids: std::ops::Range<u32>) -> Vec<Vec<u8>> {
    ids.map(|id| test_frame(VM, PEER, &[], id, 100)).collect()
}

fn xdp_link_mode(lab: &Lab) -> String {
    let out = lab.ns.ip(&["-d", "link", "show", CAPTURE_IF]).expect("ip link show");
    if out.contains("xdpgeneric") { "generic" } else { "native" }.to_owned()
}

const TARGET: &str = "[[target]]\nname = \"vm\"\nmac = \"52:54:00:00:00:0a\"\n";

#[test]
fn auto_mode_moves_to_generic_xdp_when_the_driver_has_no_metadata_room() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new(1);
    let config = lab.config("", "", TARGET);
    let daemon = lab.start(&config);
    assert_eq!(xdp_link_mode(&lab), "native");
    set_no_metadata(&lab, true);
    // Passed, not captured, and counted: the driver had no room for them.
    let rx = lab.receiver();
    lab.send(&frames(0..5));
    daemon.wait_for_log("capturing in generic XDP mode", Duration::from_secs(5));
    let log = daemon.log_text();
    assert!(
        log.contains("gives native XDP no room for the frame's metadata")
            && log.contains("5 matched frame(s) were passed, not captured"),
        "{log}"
    );
    assert_eq!(xdp_link_mode(&lab), "generic");
    assert_eq!(rx.ids(), (0..5).collect::<Vec<u32>>(), "the first frames went on to the kernel");
    let page = scrape_metrics(&lab.ns);
    assert_eq!(
        metric(&page, "capture_drops_total{interface=\"cap0\",stage=\"xdp_no_metadata\"}"),
        Some(5),
        "{page}"
    );
    // The same program, maps and sockets, attached generic. The hook acts whatever the attach
    // mode, so the test takes it out now: generic XDP always has the room. Frames are captured
    // again through the sockets opened for native XDP.
    set_no_metadata(&lab, false);
    lab.send(&frames(100..105));
    let (status, _) = daemon.stop();
    assert!(status.success());
    let (files, _) = lab.files();
    assert_eq!(ids(&read_all(&files)), (100..105).collect::<Vec<u32>>());
}

#[test]
fn native_mode_says_nothing_is_captured_when_the_driver_has_no_metadata_room() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new(1);
    let config = lab.config_on(
        &[&format!("name = \"{CAPTURE_IF}\"\nmode = \"mirror\"\nxdp_mode = \"native\"")],
        "",
        "",
        TARGET,
    );
    // `check` cannot know before a frame arrives; it says what the daemon will do.
    let (_, out) = lab.run_daemon(&[], &["check", "--config", config.to_str().expect("utf-8")]);
    assert!(
        out.contains("ok    interface cap0 metadata: driver veth is not known to lack room"),
        "{out}"
    );
    let daemon = lab.start(&config);
    set_no_metadata(&lab, true);
    lab.send(&frames(0..3));
    daemon.wait_for_log("nothing is captured here", Duration::from_secs(5));
    assert!(daemon.log_text().contains("set xdp_mode = \"auto\" or \"generic\""));
    lab.send(&frames(3..6));
    assert_eq!(xdp_link_mode(&lab), "native");
    let (status, _) = daemon.stop();
    assert!(status.success());
    let (files, _) = lab.files();
    assert!(ids(&read_all(&files)).is_empty(), "nothing can be captured without metadata");
}
