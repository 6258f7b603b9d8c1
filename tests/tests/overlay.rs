//! Targets with a `vni`: the real XDP and tcx programs find VXLAN and Geneve behind every legal
//! outer header and match the inner frame; every cut-short or invalid header gets a verdict and
//! is counted. One labelled mix of frames, in both modes, with and without a snap length; what
//! was captured is read back from the file, and the counters from the metrics endpoint.

use std::process::Command;

use capture_lab::{Encapsulated, Ext, OuterIp, Tunnel};
use capture_tests::*;

/// The inner MAC of target "vx" (vni 100).
const IM_A: [u8; 6] = [0x52, 0x54, 0, 0, 0x0a, 0x0a];
const IM_X: [u8; 6] = [0x52, 0x54, 0, 0, 0x0a, 0x99];
const IM_Y: [u8; 6] = [0x52, 0x54, 0, 0, 0x0a, 0x98];
/// Outer MAC of target "plain" (no vni).
const OUTER_P: [u8; 6] = [0x52, 0x54, 0, 0, 0x0b, 0x01];
/// The hypervisor the tunnels end at: not the capture interface (the stack drops the frames).
const HV: [u8; 6] = [0x52, 0x54, 0, 0, 0x0c, 0x01];
const Q: u16 = 0x8100;
const AD: u16 = 0x88a8;

const TARGETS: &str = "[[target]]\nname = \"vx\"\nvni = 100\nmac = \"52:54:00:00:0a:0a\"\n\n\
    [[target]]\nname = \"gv\"\nvni = 200\nvlan = 30\n\n\
    [[target]]\nname = \"plain\"\nmac = \"52:54:00:00:0b:01\"\n";

/// What the frame is to the overlay counters.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Enc {
    /// Not to a tunnel port (or not reachable: fragment, cut before the UDP port, Geneve
    /// carrying IP): counted in neither.
    None,
    /// `encapsulated`.
    Ok,
    /// `encap_malformed`.
    Bad,
}

struct Case {
    id: u8,
    frame: Vec<u8>,
    captured: bool,
    enc: Enc,
    what: &'static str,
}

/// Each case's outer source MAC carries its id: no cut leaves a frame without it.
fn src(id: u8) -> [u8; 6] {
    [0x02, 0, 0, 0, 0, id]
}

fn inner(dst: [u8; 6], src: [u8; 6], tags: &[(u16, u16)]) -> Vec<u8> {
    let mut f = Frame::ethernet(dst, src);
    for &(tpid, vid) in tags {
        f = f.vlan(tpid, vid);
    }
    f.raw(0x0800, &[0x45; 46])
}

fn encap(
    id: u8,
    tags: &[(u16, u16)],
    ip: &OuterIp,
    port: u16,
    t: &Tunnel,
    i: &[u8],
) -> Encapsulated {
    let mut outer = Frame::ethernet(HV, src(id));
    for &(tpid, vid) in tags {
        outer = outer.vlan(tpid, vid);
    }
    Encapsulated::build(outer, ip, port, t, i)
}

fn cases() -> Vec<Case> {
    let v4 = OuterIp::v4();
    let a = inner(HV, IM_A, &[]);
    let vx100 = Tunnel::vxlan(100);
    let mut cases = Vec::new();
    let mut add = |frame: Vec<u8>, captured: bool, enc: Enc, what: &'static str| {
        let id = frame[11];
        cases.push(Case { id, frame, captured, enc, what });
    };
    let f = |id, ip: &OuterIp, port, t: &Tunnel, i: &[u8]| encap(id, &[], ip, port, t, i).frame;
    add(f(1, &v4, 4789, &vx100, &a), true, Enc::Ok, "VXLAN, inner source MAC");
    add(f(2, &v4, 4789, &vx100, &inner(IM_A, IM_X, &[])), true, Enc::Ok, "inner destination MAC");
    add(f(3, &v4, 4789, &vx100, &inner(IM_Y, IM_X, &[])), false, Enc::Ok, "other inner MACs");
    add(f(4, &v4, 4789, &Tunnel::vxlan(101), &a), false, Enc::Ok, "other VNI");
    let opts = |n| OuterIp::V4 { options: vec![1; n], frag: 0 };
    add(f(5, &opts(40), 4789, &vx100, &a), true, Enc::Ok, "IPv4 IHL 15");
    add(f(6, &opts(4), 4789, &vx100, &a), true, Enc::Ok, "IPv4 IHL 6");
    add(f(7, &OuterIp::V6 { ext: vec![] }, 4789, &vx100, &a), true, Enc::Ok, "IPv6");
    let chain = vec![
        Ext::Options { kind: 0, len: 0 },
        Ext::Options { kind: 60, len: 1 },
        Ext::Options { kind: 43, len: 0 },
        Ext::Fragment { offset: 0, more: true },
        Ext::Ah { len: 1 },
    ];
    add(f(8, &OuterIp::V6 { ext: chain }, 4789, &vx100, &a), true, Enc::Ok, "IPv6 + 5 ext");
    let later = OuterIp::V6 { ext: vec![Ext::Fragment { offset: 100, more: false }] };
    add(f(9, &later, 4789, &vx100, &a), false, Enc::None, "IPv6 non-first fragment");
    let first = OuterIp::V4 { options: vec![], frag: 0x2000 };
    add(f(10, &first, 4789, &vx100, &a), true, Enc::Ok, "IPv4 first fragment");
    let later = OuterIp::V4 { options: vec![], frag: 0x2000 | 185 };
    add(f(11, &later, 4789, &vx100, &a), false, Enc::None, "IPv4 non-first fragment");
    let qinq = encap(12, &[(AD, 10), (Q, 20)], &v4, 4789, &vx100, &a).frame;
    add(qinq, true, Enc::Ok, "outer QinQ");
    add(encap(13, &[(Q, 5)], &v4, 4789, &vx100, &a).frame, true, Enc::Ok, "outer tag");
    let deep = encap(14, &[(AD, 1), (Q, 2), (Q, 3)], &v4, 4789, &vx100, &a).frame;
    add(deep, false, Enc::None, "three outer tags");
    let gv = |options: Vec<u8>| Tunnel::Geneve { vni: 200, version: 0, protocol: 0x6558, options };
    let t30 = inner(IM_Y, IM_X, &[(Q, 30)]);
    add(f(15, &v4, 6081, &gv(vec![7; 12]), &t30), true, Enc::Ok, "Geneve options, inner tag");
    let t31 = inner(IM_Y, IM_X, &[(Q, 31)]);
    add(f(16, &v4, 6081, &gv(vec![]), &t31), false, Enc::Ok, "Geneve, other inner tag");
    add(f(17, &v4, 6081, &gv(vec![]), &inner(IM_Y, IM_X, &[])), false, Enc::Ok, "inner untagged");
    let qq = inner(IM_Y, IM_X, &[(AD, 30), (Q, 31)]);
    add(f(18, &v4, 6081, &gv(vec![]), &qq), true, Enc::Ok, "inner QinQ, outermost 30");
    let ip = Tunnel::Geneve { vni: 200, version: 0, protocol: 0x0800, options: vec![] };
    add(f(19, &v4, 6081, &ip, &t30[14..]), false, Enc::None, "Geneve carrying IP");
    add(f(20, &v4, 6081, &Tunnel::geneve(100), &a), true, Enc::Ok, "Geneve, vni of vx");
    let no_i = Tunnel::Vxlan { vni: 100, flags: 0 };
    add(f(21, &v4, 4789, &no_i, &a), false, Enc::Bad, "VXLAN without I flag");
    let v1 = Tunnel::Geneve { vni: 200, version: 1, protocol: 0x6558, options: vec![] };
    add(f(22, &v4, 6081, &v1, &t30), false, Enc::Bad, "Geneve version 1");
    let long = encap(23, &[], &v4, 6081, &gv(vec![0; 252]), &t30);
    add(long.cut(long.tunnel + 8 + 40), false, Enc::Bad, "Geneve options past the end");
    add(f(24, &v4, 9999, &vx100, &a), false, Enc::None, "port in neither list");
    add(f(25, &v4, 4790, &vx100, &a), true, Enc::Ok, "custom vxlan_ports entry");
    add(f(26, &v4, 8472, &vx100, &a), false, Enc::None, "default port not configured");
    let e = encap(27, &[], &v4, 4789, &vx100, &a);
    add(e.cut(e.ip + 10), false, Enc::None, "cut in the IPv4 header");
    let e = encap(28, &[], &v4, 4789, &vx100, &a);
    add(e.cut(e.udp + 3), false, Enc::None, "cut in the UDP header");
    let e = encap(29, &[], &v4, 4789, &vx100, &a);
    add(e.cut(e.tunnel + 5), false, Enc::Bad, "cut in the VXLAN header");
    let e = encap(30, &[], &v4, 4789, &vx100, &a);
    add(e.cut(e.inner + 10), false, Enc::Bad, "cut in the inner Ethernet header");
    let e = encap(31, &[], &v4, 4789, &vx100, &a);
    add(e.cut(e.inner + 14), true, Enc::Ok, "inner Ethernet header only");
    let e = encap(32, &[], &v4, 6081, &gv(vec![]), &t30);
    add(e.cut(e.inner + 15), false, Enc::Ok, "inner tag cut: untagged");
    let e = encap(
        33,
        &[],
        &OuterIp::V6 { ext: vec![Ext::Options { kind: 0, len: 1 }] },
        4789,
        &vx100,
        &a,
    );
    add(e.cut(e.ip + 41), false, Enc::None, "cut in an IPv6 extension header");
    let e = encap(34, &[], &OuterIp::V6 { ext: vec![] }, 4789, &vx100, &a);
    add(e.cut(e.ip + 20), false, Enc::None, "cut in the IPv6 header");
    let mut to_p = f(35, &v4, 4789, &Tunnel::vxlan(300), &inner(IM_Y, IM_X, &[]));
    to_p[..6].copy_from_slice(&OUTER_P);
    add(to_p, true, Enc::Ok, "outer target by the outer MAC");
    add(
        f(36, &v4, 4789, &Tunnel::vxlan(300), &inner(OUTER_P, IM_X, &[])),
        false,
        Enc::Ok,
        "outer target, inner MAC",
    );
    add(test_frame(OUTER_P, src(37), &[], 37, 100), true, Enc::None, "plain frame to plain");
    add(
        test_frame(IM_A, src(38), &[], 38, 100),
        false,
        Enc::None,
        "plain frame, inner MAC outside",
    );
    cases
}

#[test]
fn vni_targets_match_the_inner_frame_and_every_header_gets_a_verdict() {
    if !root_or_skip() {
        return;
    }
    let cases = cases();
    for (i, c) in cases.iter().enumerate() {
        assert_eq!(usize::from(c.id), i + 1, "case ids in order");
    }
    let frames: Vec<Vec<u8>> = cases.iter().map(|c| c.frame.clone()).collect();
    let want: Vec<u8> = cases.iter().filter(|c| c.captured).map(|c| c.id).collect();
    let count = |e| cases.iter().filter(|c| c.enc == e).count() as u64;
    for mode in ["mirror", "tap"] {
        for snaplen in [None, Some(96u32)] {
            let label = format!("{mode}, snaplen {snaplen:?}");
            let lab = Lab::new(1);
            let capture = format!(
                "vxlan_ports = [4789, 4790]\n{}",
                snaplen.map_or(String::new(), |s| format!("snaplen = {s}\n"))
            );
            let config = lab.config_on(
                &[&format!("name = \"{CAPTURE_IF}\"\nmode = \"{mode}\"")],
                &capture,
                "",
                TARGETS,
            );
            let daemon = lab.start(&config);
            lab.send(&frames);
            let page = scrape_metrics(&lab.ns);
            if mode == "tap" && snaplen.is_none() {
                let (code, text) =
                    lab.run_daemon(&[], &["status", "--config", config.to_str().unwrap()]);
                assert_eq!(code, 0, "{text}");
                let line = format!(
                    "VXLAN/Geneve: encapsulated {}, malformed {}",
                    count(Enc::Ok),
                    count(Enc::Bad)
                );
                assert!(text.contains(&line), "{label}: status:\n{text}");
            }
            let (status, _) = daemon.stop();
            assert!(status.success(), "{label}: daemon exit: {status}");

            let (files, _) = lab.files();
            assert_eq!(files.len(), 1, "{label}: {files:?}");
            let file = read_pcapng(&files[0]);
            let got: Vec<u8> = file.packets.iter().map(|p| p.data[11]).collect();
            let name = |id: &u8| cases[usize::from(*id) - 1].what;
            assert_eq!(
                got,
                want,
                "{label}: captured {:?}, want {:?}",
                got.iter().map(name).collect::<Vec<_>>(),
                want.iter().map(name).collect::<Vec<_>>()
            );
            for p in &file.packets {
                let sent = &cases[usize::from(p.data[11]) - 1].frame;
                let keep = snaplen.map_or(sent.len(), |s| sent.len().min(s as usize));
                assert_eq!(p.data, sent[..keep], "{label}: {} bytes", name(&p.data[11]));
                assert_eq!(p.orig_len as usize, sent.len(), "{label}");
            }
            let counter = |name: &str| {
                metric(&page, &format!("{name}{{interface=\"{CAPTURE_IF}\"}}"))
                    .unwrap_or_else(|| panic!("{label}: {name} missing:\n{page}"))
            };
            assert_eq!(counter("capture_frames_encapsulated_total"), count(Enc::Ok), "{label}");
            assert_eq!(counter("capture_frames_encap_malformed_total"), count(Enc::Bad), "{label}");

            if snaplen.is_none() {
                assert_eq!(tunnel_vnis(&files[0]), tshark_view(&want), "{label}: tshark");
            }
        }
    }
}

/// The VNI tshark decodes in each captured frame (VXLAN on 4790 too), "" where none: the
/// frames are real VXLAN and Geneve to an independent dissector.
fn tunnel_vnis(path: &std::path::Path) -> Vec<String> {
    let out = Command::new("tshark")
        .arg("-r")
        .arg(path)
        .args(["-d", "udp.port==4790,vxlan", "-T", "fields", "-e", "vxlan.vni", "-e", "geneve.vni"])
        .output()
        .expect("running tshark");
    assert!(out.status.success(), "tshark: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            // tshark prints Geneve's VNI in hex, VXLAN's in decimal.
            let vni = |f: &str| match f.strip_prefix("0x") {
                Some(hex) => u32::from_str_radix(hex, 16).expect("hex VNI").to_string(),
                None => f.to_owned(),
            };
            l.split('\t').filter(|f| !f.is_empty()).map(vni).collect::<Vec<_>>().join(",")
        })
        .collect()
}

/// What [`tunnel_vnis`] should say of the captured frames: tshark leaves the first fragments
/// (IPv4 MF, IPv6 fragment header with M) undissected, waiting for the rest.
fn tshark_view(want: &[u8]) -> Vec<String> {
    want.iter()
        .map(|id| match id {
            8 | 10 | 37 => "",
            15 | 18 => "200",
            35 => "300",
            _ => "100",
        })
        .map(str::to_owned)
        .collect()
}

/// A frame of the reload test: its id in the outer source MAC's last two bytes.
fn tunneled(id: u16, port: u16, tunnel: &Tunnel, inner_src: [u8; 6]) -> Vec<u8> {
    let [hi, lo] = id.to_be_bytes();
    let outer = Frame::ethernet(HV, [0x02, 0, 0, 0, hi, lo]);
    Encapsulated::build(outer, &OuterIp::v4(), port, tunnel, &inner(HV, inner_src, &[])).frame
}

fn id16(data: &[u8]) -> u16 {
    u16::from_be_bytes([data[10], data[11]])
}

#[test]
fn reload_changes_vnis_and_tunnel_ports_in_place_and_a_kept_target_misses_nothing() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new(1);
    let vx = "[[target]]\nname = \"vx\"\nvni = 100\nmac = \"52:54:00:00:0a:0a\"\n";
    let gv = "[[target]]\nname = \"gv\"\nvni = 200\n";
    let config = lab.config("", "", vx);
    let daemon = lab.start(&config);
    // Even ids: vx's (VXLAN 100); odd: gv's (Geneve 200), a target that comes and goes.
    let traffic: Vec<Vec<u8>> = (0..2000u16)
        .map(|i| match i % 2 {
            0 => tunneled(i, 4789, &Tunnel::vxlan(100), IM_A),
            _ => tunneled(i, 6081, &Tunnel::geneve(200), IM_X),
        })
        .collect();
    std::thread::scope(|s| {
        let pace = capture_lab::Pace { burst: 8, pause: std::time::Duration::from_millis(3) };
        let lab = &lab;
        let sender = s.spawn(move || lab.send_paced(&traffic, pace));
        std::thread::sleep(std::time::Duration::from_millis(200));
        lab.config("", "", &format!("{gv}\n{vx}"));
        daemon.signal(libc::SIGHUP);
        daemon.wait_for_log_count("reloaded:", 1, std::time::Duration::from_secs(5));
        std::thread::sleep(std::time::Duration::from_millis(200));
        lab.config("", "", vx);
        daemon.signal(libc::SIGHUP);
        daemon.wait_for_log_count("reloaded:", 2, std::time::Duration::from_secs(5));
        sender.join().unwrap();
    });
    // The VNI and the ports change: the old ones must be gone from the kernel's maps.
    let vx101 = "[[target]]\nname = \"vx\"\nvni = 101\nmac = \"52:54:00:00:0a:0a\"\n";
    lab.config("vxlan_ports = [4790]", "", vx101);
    daemon.signal(libc::SIGHUP);
    daemon.wait_for_log_count("reloaded:", 3, std::time::Duration::from_secs(5));
    lab.send(&[
        tunneled(5000, 4789, &Tunnel::vxlan(100), IM_A),
        tunneled(5001, 4789, &Tunnel::vxlan(101), IM_A),
        tunneled(5002, 4790, &Tunnel::vxlan(100), IM_A),
        tunneled(5003, 4790, &Tunnel::vxlan(101), IM_A),
        tunneled(5004, 6081, &Tunnel::geneve(200), IM_X),
    ]);
    assert!(daemon.stop().0.success());

    let (files, _) = lab.files();
    let got: Vec<u16> = read_all(&files).iter().map(|p| id16(&p.data)).collect();
    let vx_got: Vec<u16> = got.iter().copied().filter(|i| *i < 2000 && i % 2 == 0).collect();
    assert_eq!(vx_got, (0..2000).step_by(2).collect::<Vec<u16>>(), "every frame of vx");
    let gv_got: Vec<u16> = got.iter().copied().filter(|i| *i < 2000 && i % 2 == 1).collect();
    assert!(!gv_got.is_empty(), "gv was captured while it was configured");
    assert!(gv_got.len() < 1000, "gv was not captured before or after: {}", gv_got.len());
    let after: Vec<u16> = got.iter().copied().filter(|i| *i >= 5000).collect();
    assert_eq!(after, vec![5003], "only VNI 101 on port 4790 after the last reload");
}

#[test]
fn without_vni_targets_nothing_is_parsed_past_the_tags() {
    if !root_or_skip() {
        return;
    }
    for mode in ["mirror", "tap"] {
        let lab = Lab::new(1);
        let iface = format!("name = \"{CAPTURE_IF}\"\nmode = \"{mode}\"");
        // An outer target naming the inner MAC of the tunnelled frames: it does not see it.
        let target = "[[target]]\nname = \"a\"\nmac = \"52:54:00:00:0a:0a\"\n";
        let config = lab.config_on(&[&iface], "", "", target);
        let daemon = lab.start(&config);
        let frames: Vec<Vec<u8>> =
            (0..10).map(|i| tunneled(i, 4789, &Tunnel::vxlan(100), IM_A)).collect();
        lab.send(&frames);
        let page = scrape_metrics(&lab.ns);
        assert!(daemon.stop().0.success());
        let series = |name: &str| format!("{name}{{interface=\"{CAPTURE_IF}\"}}");
        // At least: in tap mode whatever the namespace sends out is seen too.
        let seen = metric(&page, &series("capture_frames_seen_total")).unwrap_or(0);
        assert!(seen >= 10, "{mode}: seen {seen}");
        assert_eq!(metric(&page, &series("capture_frames_encapsulated_total")), Some(0), "{mode}");
        assert_eq!(metric(&page, &series("capture_frames_matched_total")), Some(0), "{mode}");
    }
}
