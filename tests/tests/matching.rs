//! Which frames the real programs capture, pass or drop, read back from real files: the one
//! matcher behind XDP (mirror mode) and tcx (tap mode).

use std::time::Duration;

use capture_tests::*;

const A: [u8; 6] = [0x52, 0x54, 0, 0, 0, 0x0a];
const B: [u8; 6] = [0x52, 0x54, 0, 0, 0, 0x0b];
const X: [u8; 6] = [0x52, 0x54, 0, 0, 0, 0x99];
const BCAST: [u8; 6] = [0xff; 6];
const Q: u16 = 0x8100;
const AD: u16 = 0x88a8;

/// A frame to send and whether the config under test should capture it.
struct Case {
    frame: Vec<u8>,
    captured: bool,
}

fn case(id: u32, dst: [u8; 6], src: [u8; 6], tags: &[(u16, u16)], captured: bool) -> Case {
    Case { frame: test_frame(dst, src, tags, id, 100), captured }
}

/// Runs the daemon with `targets` in each mode, sends the cases, and checks that exactly the
/// expected frames are in the file (pcap-file and tshark agree), byte for byte and inbound, and
/// what reached the kernel: in mirror mode the others, in tap mode all of them.
fn check_matching(targets: &str, cases: &[Case]) {
    for mode in ["mirror", "tap"] {
        let lab = Lab::new(1);
        let config = lab.config_on(
            &[&format!("name = \"{CAPTURE_IF}\"\nmode = \"{mode}\"")],
            "",
            "",
            targets,
        );
        let rx = lab.receiver();
        let daemon = lab.start(&config);
        let frames: Vec<Vec<u8>> = cases.iter().map(|c| c.frame.clone()).collect();
        lab.send(&frames);
        let (status, took) = daemon.stop();
        assert!(status.success(), "{mode}: daemon exit: {status}");
        assert!(took < Duration::from_secs(2), "{mode}: stop took {took:?}");

        let (files, parts) = lab.files();
        assert!(parts.is_empty(), "{mode}: left .part files: {parts:?}");
        assert_eq!(files.len(), 1, "{mode}: {files:?}");
        let want: Vec<u32> =
            cases.iter().filter(|c| c.captured).filter_map(|c| frame_id(&c.frame)).collect();
        let passed: Vec<u32> = match mode {
            // Captured frames left the kernel path, the rest went on to the stack.
            "mirror" => {
                cases.iter().filter(|c| !c.captured).filter_map(|c| frame_id(&c.frame)).collect()
            }
            // Copies: every frame goes on.
            _ => ids_of(&frames),
        };
        let file = read_pcapng(&files[0]);
        assert_eq!(ids(&file.packets), want, "{mode}: captured ids (pcap-file)");
        // Captured frames are byte-exact copies of what was sent, VLAN tags included.
        for p in &file.packets {
            let id = frame_id(&p.data).expect("test frame");
            let sent = cases.iter().find(|c| frame_id(&c.frame) == Some(id)).expect("sent");
            assert_eq!(p.data, sent.frame, "{mode}: frame {id} bytes");
            assert_eq!(p.orig_len as usize, sent.frame.len());
            assert_eq!(direction(p), Some(capture_common::DIRECTION_INBOUND), "{mode}: frame {id}");
        }
        assert_eq!(capinfos_count(&files[0]), want.len() as u64);
        assert_eq!(tshark_fields(&files[0], &["frame.number"]).len(), want.len());
        assert_eq!(rx.ids(), passed, "{mode}: ids the kernel saw (passed)");
    }
}

fn ids_of(frames: &[Vec<u8>]) -> Vec<u32> {
    let mut v: Vec<u32> = frames.iter().filter_map(|f| frame_id(f)).collect();
    v.sort_unstable();
    v
}

#[test]
fn mac_only_target_matches_source_or_destination_on_any_vlan() {
    if !root_or_skip() {
        return;
    }
    check_matching(
        "[[target]]\nname = \"a\"\nmac = \"52:54:00:00:00:0a\"\n",
        &[
            case(1, A, X, &[], true),
            case(2, X, A, &[], true),
            case(3, A, X, &[(Q, 100)], true),
            case(4, BCAST, A, &[(AD, 7), (Q, 8)], true),
            case(5, X, B, &[], false),
            case(6, BCAST, X, &[(Q, 100)], false),
            // Same entry of the kernel's MAC prefilter as A, but not A: the exact look-up decides.
            case(7, NEAR_A, X, &[], false),
            case(8, X, NEAR_A, &[(Q, 100)], false),
        ],
    );
}

/// A MAC whose prefilter index (`capture_common::mac_filter_index`) is A's.
const NEAR_A: [u8; 6] = [0x02, 0, 0, 0, 0x40, 0x0a];
const _: () =
    assert!(capture_common::mac_filter_index(NEAR_A) == capture_common::mac_filter_index(A));

#[test]
fn vlan_only_target_matches_the_outer_tag() {
    if !root_or_skip() {
        return;
    }
    check_matching(
        "[[target]]\nname = \"v100\"\nvlan = 100\n",
        &[
            case(1, A, X, &[(Q, 100)], true),
            case(2, X, B, &[(AD, 100), (Q, 200)], true),
            case(3, X, B, &[(0x9100, 100)], true),
            case(4, A, X, &[], false),
            case(5, A, X, &[(Q, 200)], false),
            case(6, X, B, &[(AD, 200), (Q, 100)], false),
            // The priority and DEI bits are not part of the VLAN ID.
            case(7, A, X, &[(Q, 0xe000 | 100)], true),
        ],
    );
}

#[test]
fn mac_and_vlan_target_needs_both() {
    if !root_or_skip() {
        return;
    }
    check_matching(
        "[[target]]\nname = \"a100\"\nmac = \"52:54:00:00:00:0a\"\nvlan = 100\n",
        &[
            case(1, A, X, &[(Q, 100)], true),
            case(2, X, A, &[(AD, 100), (Q, 5)], true),
            case(3, A, X, &[], false),
            case(4, A, X, &[(Q, 200)], false),
            case(5, B, X, &[(Q, 100)], false),
            case(6, A, X, &[(AD, 5), (Q, 100)], false),
        ],
    );
}

#[test]
fn several_targets_capture_their_union() {
    if !root_or_skip() {
        return;
    }
    check_matching(
        "[[target]]\nname = \"a\"\nmac = \"52:54:00:00:00:0a\"\n\n\
         [[target]]\nname = \"b200\"\nmac = \"52:54:00:00:00:0b\"\nvlan = 200\n\n\
         [[target]]\nname = \"v300\"\nvlan = 300\n",
        &[
            case(1, A, X, &[], true),
            case(2, B, X, &[(Q, 200)], true),
            case(3, B, X, &[], false),
            case(4, X, X, &[(Q, 300)], true),
            case(5, A, B, &[(Q, 200)], true),
            case(6, X, X, &[(Q, 200)], false),
        ],
    );
}

#[test]
fn target_without_mac_or_vlan_matches_every_frame() {
    if !root_or_skip() {
        return;
    }
    check_matching(
        "[[target]]\nname = \"everything\"\n",
        &[
            case(1, A, X, &[], true),
            case(2, X, B, &[(Q, 4094)], true),
            case(3, BCAST, X, &[(AD, 1), (Q, 2)], true),
        ],
    );
}

#[test]
fn unmatched_drop_keeps_unmatched_frames_from_the_kernel() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new(1);
    let config = lab.config(
        "unmatched = \"drop\"",
        "",
        "[[target]]\nname = \"a\"\nmac = \"52:54:00:00:00:0a\"\n",
    );
    let rx = lab.receiver();
    let daemon = lab.start(&config);
    lab.send(&[test_frame(A, X, &[], 1, 80), test_frame(X, B, &[], 2, 80)]);
    assert!(daemon.stop().0.success());
    let (files, _) = lab.files();
    assert_eq!(ids(&read_all(&files)), vec![1]);
    assert_eq!(rx.ids(), Vec::<u32>::new(), "the unmatched frame must be dropped");
}

/// Runts and cut tags: every frame gets a verdict, none aborts. A match-all target keeps them
/// (they are often what one is debugging); a VLAN target cannot match a tag it cannot read.
#[test]
fn runts_and_cut_tags_get_a_verdict() {
    if !root_or_skip() {
        return;
    }
    let mut header_only = A.to_vec();
    header_only.extend_from_slice(&X);
    header_only.extend_from_slice(&0x0800u16.to_be_bytes());
    let mut cut_tag = header_only.clone();
    cut_tag[12..14].copy_from_slice(&Q.to_be_bytes());
    cut_tag.extend_from_slice(&[0x00, 0x64]); // TCI of VLAN 100, but no inner ethertype
    let mut cut_inner = cut_tag.clone();
    cut_inner.extend_from_slice(&Q.to_be_bytes()); // outer tag whole, inner tag cut
    cut_inner.push(0x00);
    let odd = {
        let mut f = header_only.clone();
        f[12..14].copy_from_slice(&0xffffu16.to_be_bytes());
        f.extend_from_slice(&[1, 2, 3]);
        f
    };
    let frames = vec![header_only.clone(), cut_tag.clone(), cut_inner.clone(), odd.clone()];

    // Match-all: all four captured whole.
    let lab = Lab::new(1);
    let config = lab.config("", "", "[[target]]\nname = \"all\"\n");
    let daemon = lab.start(&config);
    lab.send(&frames);
    assert!(daemon.stop().0.success());
    let (files, _) = lab.files();
    let got: Vec<Vec<u8>> = read_all(&files).into_iter().map(|p| p.data).collect();
    assert_eq!(got, frames);
    drop(lab);

    // VLAN 100: only the frame whose outer tag is whole (cut_inner) matches; the others pass.
    let lab = Lab::new(1);
    let config = lab.config("", "", "[[target]]\nname = \"v100\"\nvlan = 100\n");
    let rx = lab.receiver();
    let daemon = lab.start(&config);
    lab.send(&frames);
    assert!(daemon.stop().0.success());
    let (files, _) = lab.files();
    let got: Vec<Vec<u8>> = read_all(&files).into_iter().map(|p| p.data).collect();
    assert_eq!(got, vec![cut_inner]);
    // XDP gave the other three XDP_PASS: none dropped or aborted (aborts count as xdp_drops).
    let stats = lab.xdp_stats();
    assert_eq!(
        (stats["xdp_packets"], stats["xdp_redirect"], stats["xdp_drops"]),
        (4, 1, 0),
        "{stats:?}"
    );
    // The stack then keeps what it can parse: it discards the cut tag itself (VLAN untagging
    // needs the whole tag), so the receiver sees the other two.
    let mut seen = rx.drain();
    seen.sort();
    let mut want = vec![header_only, odd];
    want.sort();
    assert_eq!(seen, want);
}

#[test]
fn snaplen_slices_in_the_kernel_and_keeps_the_original_length() {
    if !root_or_skip() {
        return;
    }
    for mode in ["mirror", "tap"] {
        let lab = Lab::new(1);
        let config = lab.config_on(
            &[&format!("name = \"{CAPTURE_IF}\"\nmode = \"{mode}\"")],
            "snaplen = 64",
            "",
            "[[target]]\nname = \"a\"\nmac = \"52:54:00:00:00:0a\"\n",
        );
        let daemon = lab.start(&config);
        let frames = vec![
            test_frame(A, X, &[], 1, 60),
            test_frame(A, X, &[], 2, 64),
            test_frame(A, X, &[], 3, 65),
            // In tap mode the stack holds this tag apart: it is put back, then sliced.
            test_frame(A, X, &[(Q, 10)], 4, 1514),
        ];
        lab.send(&frames);
        assert!(daemon.stop().0.success());
        let (files, _) = lab.files();
        let file = read_pcapng(&files[0]);
        assert_eq!(file.interfaces, vec![(CAPTURE_IF.to_owned(), 64)], "{mode}: IDB");
        let got: Vec<(usize, u32)> =
            file.packets.iter().map(|p| (p.data.len(), p.orig_len)).collect();
        assert_eq!(got, vec![(60, 60), (64, 64), (64, 65), (64, 1514)], "{mode}");
        for (p, f) in file.packets.iter().zip(&frames) {
            assert_eq!(
                p.data[..],
                f[..p.data.len()],
                "{mode}: sliced frames keep their first bytes"
            );
        }
        let rows = tshark_fields(&files[0], &["frame.len", "frame.cap_len"]);
        let rows: Vec<(String, String)> =
            rows.into_iter().map(|r| (r[0].clone(), r[1].clone())).collect();
        assert_eq!(rows[3], ("1514".to_owned(), "64".to_owned()), "{mode}");
    }
}

#[test]
fn timestamps_are_wall_clock_nanoseconds_in_order() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new(1);
    let config = lab.config("", "", "[[target]]\nname = \"all\"\n");
    let daemon = lab.start(&config);
    let before =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let frames: Vec<Vec<u8>> = (0..200).map(|i| test_frame(A, X, &[], i, 100)).collect();
    lab.send(&frames);
    let after =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    assert!(daemon.stop().0.success());
    let (files, _) = lab.files();
    let packets = read_all(&files);
    assert_eq!(packets.len(), 200);
    // A generous window: the monotonic-to-wall offset is sampled, not exact.
    let slack = 50_000_000;
    for w in packets.windows(2) {
        assert!(w[0].ts_ns <= w[1].ts_ns, "timestamps go backwards");
    }
    assert!(packets[0].ts_ns + slack >= before && packets[199].ts_ns <= after + slack);
    assert!(packets.iter().any(|p| p.ts_ns % 1000 != 0), "nanosecond resolution is used");
}
