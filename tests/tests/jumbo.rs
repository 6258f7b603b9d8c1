//! Jumbo frames (MTU 9000) in both modes, whole and sliced, read back from real files.
//!
//! Mirror mode needs native XDP with a multi-buffer (`xdp.frags`) program and AF_XDP sockets bound
//! with XDP_USE_SG: a frame larger than one 4 KiB UMEM frame arrives in several descriptors and
//! must come out as one record. Tap mode copies from the skb and needs none of that.

use capture_tests::*;

const MTU: u32 = 9000;
const A: [u8; 6] = [0x52, 0x54, 0, 0, 0, 0x0a];
const X: [u8; 6] = [0x52, 0x54, 0, 0, 0, 0x99];
const TARGET_A: &str = "[[target]]\nname = \"a\"\nmac = \"52:54:00:00:00:0a\"\n";
/// Frame lengths on the wire (no FCS): one UMEM frame holds 3840 bytes, so 4000 and up span
/// two or three descriptors in mirror mode.
const SIZES: [usize; 8] = [60, 1514, 3000, 3840, 4000, 5000, 8000, 9000];

/// A test frame of exactly `len` bytes whose payload differs at every offset (and between
/// frames), so bytes reassembled in the wrong order or place cannot compare equal.
fn jumbo_frame(dst: [u8; 6], src: [u8; 6], id: u32, len: usize) -> Vec<u8> {
    let mut payload = id.to_be_bytes().to_vec();
    payload
        .extend((0..len - 14 - 4).map(|i| (i * 7 + id as usize * 13 + i / 251).to_le_bytes()[0]));
    let f = Frame::ethernet(dst, src).raw(TEST_ETHERTYPE, &payload);
    assert_eq!(f.len(), len);
    f
}

/// Where two frames differ, for messages.
fn diff(got: &[u8], want: &[u8]) -> String {
    let at = got.iter().zip(want).position(|(a, b)| a != b);
    format!("{} bytes, sent {}; first difference at {at:?}", got.len(), want.len())
}

/// Runs one capture on a veth pair at MTU 9000 and checks every captured frame against what was
/// sent, with pcap-file and with tshark. `xdp` is the mirror-mode `xdp_mode`.
fn check_jumbo(mode: &str, xdp: &str, snaplen: u32) {
    let lab = Lab::new(1);
    for ifname in [CAPTURE_IF, PEER_IF] {
        lab.ns.set_mtu(ifname, MTU).expect("setting MTU 9000");
    }
    let xdp_mode = if mode == "mirror" { format!("\nxdp_mode = \"{xdp}\"") } else { String::new() };
    let config = lab.config_on(
        &[&format!("name = \"{CAPTURE_IF}\"\nmode = \"{mode}\"{xdp_mode}")],
        &format!("snaplen = {snaplen}"),
        "",
        TARGET_A,
    );
    if mode == "mirror" {
        // `check` tells what this MTU means before anything runs.
        let (_, text) = lab.run_daemon(&[], &["check", "--config", config.to_str().unwrap()]);
        assert!(
            text.contains(
                "MTU 9000: longer frames span several UMEM frames and are captured whole"
            ),
            "check:\n{text}"
        );
        assert!(text.contains("multi-buffer program loaded"), "check:\n{text}");
    }
    let rx = lab.receiver();
    let daemon = lab.start(&config);
    let log = daemon.log_handle();

    // Matched frames (to A) and, in between, unmatched ones (X to X) of the same sizes.
    let mut matched = Vec::new();
    let mut unmatched = Vec::new();
    for (i, &len) in SIZES.iter().enumerate() {
        let i = u32::try_from(i).unwrap();
        matched.push(jumbo_frame(A, X, 100 + i, len));
        unmatched.push(jumbo_frame(X, X, 200 + i, len));
    }
    let frames: Vec<Vec<u8>> =
        matched.iter().zip(&unmatched).flat_map(|(m, u)| [m.clone(), u.clone()]).collect();
    lab.send(&frames);
    let (status, _) = daemon.stop();
    assert!(status.success(), "daemon exit: {status}\n{}", log.text());
    let log = log.text();

    if mode == "mirror" {
        // Native XDP (with "auto": no fallback to generic) with a multi-buffer program,
        // sockets with multi-buffer: nothing lost.
        let attached = if xdp == "generic" { "generic" } else { "native" };
        assert!(log.contains(&format!("mirror mode (XDP {attached}")), "not {attached}:\n{log}");
        if attached == "native" {
            assert!(!log.contains("generic"), "generic XDP fallback:\n{log}");
        }
        assert!(log.contains("with multi-buffer"), "socket without multi-buffer:\n{log}");
        assert!(!log.contains("without multi-buffer"), "socket without multi-buffer:\n{log}");
    }

    let (files, parts) = lab.files();
    assert!(parts.is_empty(), "left .part files: {parts:?}");
    assert_eq!(files.len(), 1, "{files:?}");
    let file = read_pcapng(&files[0]);
    let want: Vec<u32> = matched.iter().filter_map(|f| frame_id(f)).collect();
    assert_eq!(ids(&file.packets), want, "captured ids, each once (pcap-file)\n{log}");
    let keep = |len: usize| if snaplen == 0 { len } else { len.min(snaplen as usize) };
    for p in &file.packets {
        let id = frame_id(&p.data).expect("test frame");
        let sent = matched.iter().find(|f| frame_id(f) == Some(id)).expect("sent");
        assert_eq!(p.orig_len as usize, sent.len(), "frame {id}: original length");
        assert_eq!(p.data.len(), keep(sent.len()), "frame {id}: captured length");
        let want = &sent[..keep(sent.len())];
        assert!(p.data == want, "frame {id}: bytes differ: {}", diff(&p.data, want));
    }

    // tshark reads the same lengths, in the same order.
    let rows = tshark_fields(&files[0], &["frame.len", "frame.cap_len"]);
    let lengths: Vec<Vec<String>> = file
        .packets
        .iter()
        .map(|p| vec![p.orig_len.to_string(), p.data.len().to_string()])
        .collect();
    assert_eq!(rows, lengths, "tshark frame.len|frame.cap_len");
    assert_eq!(capinfos_count(&files[0]), want.len() as u64);

    // What the host's stack received: in mirror mode the unmatched frames only (the matched
    // ones were taken), in tap mode every frame.
    let seen = rx.drain();
    let mut expect: Vec<&Vec<u8>> = unmatched.iter().collect();
    if mode == "tap" {
        expect.extend(&matched);
    }
    for f in &expect {
        let id = frame_id(f).expect("test frame");
        let got: Vec<&Vec<u8>> = seen.iter().filter(|s| frame_id(s) == Some(id)).collect();
        assert_eq!(got.len(), 1, "frame {id} ({} bytes) reached the stack once", f.len());
        assert!(got[0] == *f, "frame {id} reached the stack changed: {}", diff(got[0], f));
    }
    let mut stack_ids: Vec<u32> = seen.iter().filter_map(|s| frame_id(s)).collect();
    stack_ids.sort_unstable();
    let mut expect_ids: Vec<u32> = expect.iter().filter_map(|f| frame_id(f)).collect();
    expect_ids.sort_unstable();
    assert_eq!(stack_ids, expect_ids, "ids the stack received");
}

#[test]
fn mirror_mode_captures_jumbo_frames_whole() {
    if !root_or_skip() {
        return;
    }
    check_jumbo("mirror", "auto", 0);
}

#[test]
fn mirror_mode_slices_jumbo_frames_to_128() {
    if !root_or_skip() {
        return;
    }
    check_jumbo("mirror", "auto", 128);
}

#[test]
fn mirror_mode_slices_jumbo_frames_to_5000() {
    if !root_or_skip() {
        return;
    }
    // Longer than one UMEM frame: a sliced frame still spans two descriptors.
    check_jumbo("mirror", "auto", 5000);
}

#[test]
fn tap_mode_captures_jumbo_frames_whole() {
    if !root_or_skip() {
        return;
    }
    check_jumbo("tap", "", 0);
}

#[test]
fn tap_mode_slices_jumbo_frames_to_128() {
    if !root_or_skip() {
        return;
    }
    check_jumbo("tap", "", 128);
}

#[test]
fn tap_mode_slices_jumbo_frames_to_5000() {
    if !root_or_skip() {
        return;
    }
    check_jumbo("tap", "", 5000);
}

#[test]
fn mirror_mode_in_generic_xdp_captures_jumbo_frames_whole() {
    if !root_or_skip() {
        return;
    }
    // Where a driver has no native XDP: generic XDP hands the multi-buffer sockets whole frames
    // too.
    check_jumbo("mirror", "generic", 0);
}
