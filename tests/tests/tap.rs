//! Tap mode on the interfaces of a hypervisor: a VM's veth, a bridge and its ports, a VM's tap
//! device. The VMs really talk to the host through the captured interface while the daemon
//! runs, and every test checks both that they lost nothing and that the capture holds each of
//! their frames once, in the right direction.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use capture_common::{DIRECTION_INBOUND, DIRECTION_OUTBOUND};
use capture_lab::{BridgeTopology, NetNs, Pace, TapVm, UdpPeer, VethTopology, format_mac};
use capture_tests::*;

/// Datagrams each way in the exchanges below.
const COUNT: u32 = 3000;
const PAYLOAD: usize = 200;
const ECHO_PORT: u16 = 7000;
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(20);

fn target(name: &str, mac: [u8; 6]) -> String {
    format!("[[target]]\nname = \"{name}\"\nmac = \"{}\"\n", format_mac(mac))
}

/// The daemon's packets of every finished file, with the name of the interface each came from.
fn captured(out: &Path) -> Vec<(String, Packet)> {
    let (files, parts) = capture_files(out);
    assert!(parts.is_empty(), "unfinished files after a clean stop: {parts:?}");
    assert!(!files.is_empty(), "no capture file in {}", out.display());
    let mut all = Vec::new();
    for file in &files {
        let f = read_pcapng(file);
        // An independent reader agrees on the count and on every packet's direction.
        assert_eq!(capinfos_count(file), f.packets.len() as u64, "{}", file.display());
        let dirs = tshark_directions(file);
        let ours: Vec<String> = f
            .packets
            .iter()
            .map(|p| direction(p).map_or(String::new(), |d| d.to_string()))
            .collect();
        assert_eq!(dirs, ours, "tshark reads the directions of {}", file.display());
        for p in f.packets {
            all.push((f.interfaces[p.interface_id as usize].0.clone(), p));
        }
    }
    all
}

/// (direction, datagram) of each captured packet of `iface`; panics on a packet that is
/// no numbered datagram (nothing else should be on these links).
fn flows(packets: &[(String, Packet)], iface: &str) -> Vec<(u32, Datagram)> {
    packets
        .iter()
        .filter(|(name, _)| name == iface)
        .map(|(_, p)| {
            let d = datagram(&p.data)
                .filter(|d| d.seq.is_some())
                .unwrap_or_else(|| panic!("not a numbered datagram on {iface}: {:02x?}", p.data));
            (direction(p).expect("every packet carries epb_flags"), d)
        })
        .collect()
}

/// What an exchange of `0..COUNT` between `client` and an echo at `server` puts on a link, with
/// the direction the link's host side sees each way.
fn exchange_flows(
    client: SocketAddr,
    server: SocketAddr,
    client_to_server: u32,
    server_to_client: u32,
) -> Vec<(u32, Datagram)> {
    let (SocketAddr::V4(c), SocketAddr::V4(s)) = (client, server) else { panic!("IPv4 only") };
    let mut v = Vec::new();
    for seq in 0..COUNT {
        let d = |from: std::net::SocketAddrV4, to: std::net::SocketAddrV4| Datagram {
            src: *from.ip(),
            dst: *to.ip(),
            src_port: from.port(),
            dst_port: to.port(),
            seq: Some(seq),
        };
        v.push((client_to_server, d(c, s)));
        v.push((server_to_client, d(s, c)));
    }
    v
}

/// Sends `0..COUNT` from `client` to an echo on `server` and back; both ends must get all.
fn echo_exchange(client: &UdpPeer, server: UdpPeer) {
    let echo = server.spawn_echo().expect("echo");
    let report = client
        .exchange(echo.local_addr(), COUNT, PAYLOAD, Pace::default(), EXCHANGE_TIMEOUT)
        .expect("exchange");
    let heard = echo.stop().expect("echo");
    assert!(heard.is_complete(COUNT), "the echo side missed {:?}", heard.missing(COUNT));
    assert!(
        report.is_complete(COUNT),
        "the sender missed {:?} of the echoes",
        report.missing(COUNT)
    );
}

/// A VM on a veth, the daemon in tap mode on the host's end with the VM as its target, and
/// tcpdump on the same interface with the same filter.
struct VethCapture {
    // The processes go before the topology they run in.
    daemon: Daemon,
    tcpdump: Tcpdump,
    topo: VethTopology,
    dir: tempfile::TempDir,
}

impl VethCapture {
    /// `capture`: lines for the config's `[capture]` section.
    fn start(capture: &str) -> VethCapture {
        let topo = VethTopology::create(1500).expect("veth topology");
        let dir = tempfile::tempdir().unwrap();
        let iface = format!("name = \"{}\"", topo.host_if);
        let config = write_config(dir.path(), &[&iface], capture, "", &target("vm", topo.vm.mac));
        let daemon = Daemon::start(&topo.host, &config);
        let tcpdump = Tcpdump::start(
            &topo.host,
            &topo.host_if,
            &dir.path().join("tcpdump.pcap"),
            &format!("ether host {}", format_mac(topo.vm.mac)),
        );
        VethCapture { daemon, tcpdump, topo, dir }
    }
}

#[test]
fn a_vm_on_a_veth_loses_nothing_and_the_capture_equals_tcpdump() {
    if !root_or_skip() {
        return;
    }
    let VethCapture { topo, dir, daemon, tcpdump } = VethCapture::start("");
    assert!(daemon.log_text().contains("tap mode"), "{}", daemon.log_text());

    let vm = UdpPeer::bind(&topo.vm.ns, (topo.vm.ip, 0)).expect("VM socket");
    let host = UdpPeer::bind(&topo.host, (topo.host_ip, ECHO_PORT)).expect("host socket");
    let (vm_addr, host_addr) = (vm.local_addr(), host.local_addr());
    echo_exchange(&vm, host);

    assert!(daemon.stop().0.success());
    let ours = captured(&dir.path().join("out"));
    let theirs = tcpdump.finish(2 * COUNT as usize);

    // VM -> host arrives on the host's end of the veth (inbound), the echo leaves by it.
    assert_same_items(
        &flows(&ours, &topo.host_if),
        &exchange_flows(vm_addr, host_addr, DIRECTION_INBOUND, DIRECTION_OUTBOUND),
        "datagrams (direction, addresses, number) on the VM's veth",
    );
    // Byte for byte what tcpdump recorded on the same interface, each frame once.
    assert_same_items(
        &ours.iter().map(|(_, p)| p.data.clone()).collect::<Vec<_>>(),
        &theirs.iter().map(|p| p.data.clone()).collect::<Vec<_>>(),
        "the daemon's frames against tcpdump's",
    );
    assert!(ours.iter().all(|(_, p)| p.orig_len as usize == p.data.len()));
}

#[test]
fn on_a_bridge_vm_to_vm_traffic_is_captured_on_the_port_and_on_the_bridge() {
    if !root_or_skip() {
        return;
    }
    let topo = BridgeTopology::create(1500).expect("bridge topology");
    let (vm1, vm2) = (&topo.vms[0], &topo.vms[1]);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &[&format!("name = \"{}\"", vm1.host_port), &format!("name = \"{}\"", topo.bridge.name())],
        "",
        "",
        &target("vm1", vm1.mac),
    );
    let daemon = Daemon::start(&topo.host, &config);

    // vm1 <-> vm2 never leaves the host; vm1 <-> host ends at the bridge's own address.
    let client = UdpPeer::bind(&vm1.ns, (vm1.ip, 0)).expect("vm1 socket");
    let peer_vm = UdpPeer::bind(&vm2.ns, (vm2.ip, ECHO_PORT)).expect("vm2 socket");
    let peer_host = UdpPeer::bind(&topo.host, (topo.bridge_ip, ECHO_PORT)).expect("host socket");
    let (c, v, h) = (client.local_addr(), peer_vm.local_addr(), peer_host.local_addr());
    echo_exchange(&client, peer_vm);
    echo_exchange(&client, peer_host);

    assert!(daemon.stop().0.success(), "{}", topo.describe());
    let ours = captured(&dir.path().join("out"));

    // vm1's port: everything vm1 sends comes in, everything for it goes out.
    let mut want = exchange_flows(c, v, DIRECTION_INBOUND, DIRECTION_OUTBOUND);
    want.extend(exchange_flows(c, h, DIRECTION_INBOUND, DIRECTION_OUTBOUND));
    assert_same_items(
        &flows(&ours, &vm1.host_port),
        &want,
        &format!("vm1's port; {}", topo.describe()),
    );
    // The bridge: the frames it forwards between the VMs come up to it (the daemon holds it
    // promiscuous), both ways inbound; its own traffic with vm1 in and out.
    let mut want = exchange_flows(c, v, DIRECTION_INBOUND, DIRECTION_INBOUND);
    want.extend(exchange_flows(c, h, DIRECTION_INBOUND, DIRECTION_OUTBOUND));
    assert_same_items(
        &flows(&ours, topo.bridge.name()),
        &want,
        &format!("the bridge; {}", topo.describe()),
    );
}

#[test]
fn a_vm_behind_a_tap_device_sees_exactly_what_was_captured() {
    if !root_or_skip() {
        return;
    }
    const VM_MAC: [u8; 6] = [0x52, 0x54, 0, 0, 0x02, 0x02];
    const VM_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
    let host = NetNs::create("captest").expect("namespace");
    let vm = TapVm::create(&host, "vnet0", VM_MAC, VM_IP).expect("tap VM");
    host.add_addr("vnet0", "10.0.2.1/24").unwrap();
    host.add_neighbor("vnet0", VM_IP, VM_MAC).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &["name = \"vnet0\""], "", "", &target("vm", VM_MAC));
    let daemon = Daemon::start(&host, &config);

    let client = UdpPeer::bind(&host, (Ipv4Addr::new(10, 0, 2, 1), 0)).expect("host socket");
    let report = client
        .exchange(
            SocketAddr::from((VM_IP, ECHO_PORT)),
            COUNT,
            PAYLOAD,
            Pace::default(),
            EXCHANGE_TIMEOUT,
        )
        .expect("exchange");
    assert!(report.is_complete(COUNT), "the host missed {:?}", report.missing(COUNT));
    assert!(daemon.stop().0.success());
    // The VM writes an echo to the tap before it counts and logs it: the host can have it first.
    let stats = vm.wait_for(EXCHANGE_TIMEOUT, |s| s.udp_echoed >= u64::from(COUNT));
    assert_eq!(stats.udp_echoed, u64::from(COUNT), "{stats:?}");
    let (to_vm, from_vm) = (vm.received_frames(), vm.sent_frames());
    vm.stop().expect("the VM's NIC ran without error");

    let ours = captured(&dir.path().join("out"));
    let by = |dir: u32| -> Vec<Vec<u8>> {
        ours.iter()
            .filter(|(_, p)| direction(p) == Some(dir))
            .map(|(_, p)| p.data.clone())
            .collect()
    };
    // What the host sent on the tap is what the VM read from it, and the other way round.
    assert_eq!(to_vm.len(), COUNT as usize);
    assert_eq!(from_vm.len(), COUNT as usize);
    assert_same_items(
        &by(DIRECTION_OUTBOUND),
        &to_vm,
        "host -> VM, captured against read by the VM",
    );
    assert_same_items(
        &by(DIRECTION_INBOUND),
        &from_vm,
        "VM -> host, captured against written by the VM",
    );
    assert_eq!(ours.len(), 2 * COUNT as usize, "nothing else, and no direction unknown");
}

#[test]
fn tagged_frames_are_written_as_they_were_on_the_wire() {
    if !root_or_skip() {
        return;
    }
    const A: [u8; 6] = [0x52, 0x54, 0, 0, 0, 0x0a];
    const X: [u8; 6] = [0x52, 0x54, 0, 0, 0, 0x99];
    let lab = Lab::new(1);
    let config = lab.config_on(
        &[&format!("name = \"{CAPTURE_IF}\"\nmode = \"tap\"")],
        "",
        "",
        "[[target]]\nname = \"v100\"\nvlan = 100\n",
    );
    let daemon = lab.start(&config);
    // The stack takes the outer tag off into the skb before tcx sees the frame (skb_vlan_untag):
    // matched on it, it must come back into the file at its place, TPID and all.
    let tags: [&[(u16, u16)]; 4] = [
        &[(0x8100, 100)],
        &[(0x8100, 0x2000 | 100)], // priority 1
        &[(0x88a8, 100), (0x8100, 7)],
        &[(0x8100, 200)],
    ];
    let frames: Vec<Vec<u8>> =
        (0..400u32).map(|i| test_frame(A, X, tags[i as usize % 4], i, 120)).collect();
    lab.send(&frames);
    assert!(daemon.stop().0.success());
    let (files, _) = lab.files();
    let got: Vec<Vec<u8>> = read_all(&files).into_iter().map(|p| p.data).collect();
    let want: Vec<Vec<u8>> =
        frames.iter().enumerate().filter(|(i, _)| i % 4 != 3).map(|(_, f)| f.clone()).collect();
    assert_same_items(&got, &want, "captured frames against the frames sent on VLAN 100");
}

#[test]
fn kill_9_leaves_no_program_behind_and_traffic_flows() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new(1);
    lab.add_pair("cap1", "gen1", 1);
    let config = lab.config_on(
        &[&format!("name = \"{CAPTURE_IF}\""), "name = \"cap1\"\nmode = \"tap\""],
        "",
        "",
        "[[target]]\nname = \"all\"\n",
    );
    let programs = |ifname: &str| {
        (tcx_prog_ids(&lab.ns, ifname, Tcx::Ingress), tcx_prog_ids(&lab.ns, ifname, Tcx::Egress))
    };
    assert_eq!(programs("cap1"), (vec![], vec![]));
    let daemon = lab.start(&config);
    let (ingress, egress) = programs("cap1");
    assert_eq!((ingress.len(), egress.len()), (1, 1), "tap mode: one tcx program each way");
    assert!(lab.xdp_attached(), "mirror mode: XDP on {CAPTURE_IF}");
    daemon.kill9();

    assert_eq!(programs("cap1"), (vec![], vec![]), "tcx programs outlived the killed daemon");
    assert_eq!(programs(CAPTURE_IF), (vec![], vec![]));
    assert!(!lab.xdp_attached(), "XDP outlived the killed daemon");
    // Nothing is left in the way: frames reach both interfaces' stacks.
    for (capture, peer) in [(CAPTURE_IF, PEER_IF), ("cap1", "gen1")] {
        let receiver = lab.ns.run(|| capture_lab::Receiver::open(capture)).unwrap();
        let frames: Vec<Vec<u8>> =
            (0..50).map(|i| test_frame([0xff; 6], [2, 0, 0, 0, 0, 1], &[], i, 80)).collect();
        lab.send_from(peer, &frames);
        let mut got: Vec<u32> = receiver.drain().iter().filter_map(|f| frame_id(f)).collect();
        got.sort_unstable();
        assert_eq!(got, (0..50).collect::<Vec<_>>(), "{capture} after kill -9");
    }
}

#[test]
fn reload_under_traffic_loses_no_frame_of_an_unchanged_target() {
    if !root_or_skip() {
        return;
    }
    let topo = VethTopology::create(1500).expect("veth topology");
    let dir = tempfile::tempdir().unwrap();
    let iface = format!("name = \"{}\"", topo.host_if);
    let vm_target = target("vm", topo.vm.mac);
    let write = |capture: &str, targets: &str| -> PathBuf {
        write_config(dir.path(), &[&iface], capture, "", targets)
    };
    let config = write("", &vm_target);
    let daemon = Daemon::start(&topo.host, &config);
    let programs = || {
        (
            tcx_prog_ids(&topo.host, &topo.host_if, Tcx::Ingress),
            tcx_prog_ids(&topo.host, &topo.host_if, Tcx::Egress),
        )
    };
    let before = programs();

    let vm = UdpPeer::bind(&topo.vm.ns, (topo.vm.ip, 0)).expect("VM socket");
    let host = UdpPeer::bind(&topo.host, (topo.host_ip, ECHO_PORT)).expect("host socket");
    let (vm_addr, host_addr) = (vm.local_addr(), host.local_addr());
    let echo = host.spawn_echo().expect("echo");
    std::thread::scope(|s| {
        // 3000 datagrams each way over about 1.1 s, with two reloads in the middle: a target
        // added with a new snaplen, then removed again.
        let pace = Pace { burst: 8, pause: Duration::from_millis(3) };
        let (vm, to) = (&vm, echo.local_addr());
        let exchange = s.spawn(move || vm.exchange(to, COUNT, PAYLOAD, pace, EXCHANGE_TIMEOUT));
        // Reload while datagrams are on their way.
        echo.wait_echoed(300, Duration::from_secs(10));
        write("snaplen = 96", &format!("{vm_target}\n{}", target("host", topo.host_mac)));
        daemon.signal(libc::SIGHUP);
        daemon.wait_for_log_count("reloaded:", 1, Duration::from_secs(5));
        echo.wait_echoed(1500, Duration::from_secs(10));
        write("", &vm_target);
        daemon.signal(libc::SIGHUP);
        daemon.wait_for_log_count("reloaded:", 2, Duration::from_secs(5));
        let report = exchange.join().unwrap().expect("exchange");
        assert!(report.is_complete(COUNT), "the VM missed {:?}", report.missing(COUNT));
    });
    let heard = echo.stop().expect("echo");
    assert!(heard.is_complete(COUNT), "the host missed {:?}", heard.missing(COUNT));
    assert_eq!(programs(), before, "a target reload must not reattach the tcx programs");
    let log = daemon.log_handle();
    assert!(daemon.stop().0.success());
    assert_eq!(log.text().matches("reloaded:").count(), 2, "{}", log.text());

    let ours = captured(&dir.path().join("out"));
    // Some frames were sliced to 96 bytes while the second target was there: they still carry
    // the sequence number, so every frame of the unchanged target is accounted for, once.
    let got: Vec<(u32, Datagram)> = ours
        .iter()
        .map(|(_, p)| {
            let d = datagram_or_slice(p).expect("a datagram");
            (direction(p).expect("epb_flags"), d)
        })
        .collect();
    assert_same_items(
        &got,
        &exchange_flows(vm_addr, host_addr, DIRECTION_INBOUND, DIRECTION_OUTBOUND),
        "datagrams of the unchanged target across two reloads",
    );
    let sliced = ours.iter().filter(|(_, p)| p.data.len() == 96).count();
    assert!(sliced > 0, "snaplen 96 applied while the second target was configured");
    assert!(ours.iter().all(|(_, p)| p.data.len() == 96 || p.data.len() == p.orig_len as usize));
}

/// The datagram a frame carries, whole or sliced: a sliced one keeps its headers and the
/// sequence number at the start of its payload (the lab's headers have no IP options).
fn datagram_or_slice(p: &Packet) -> Option<Datagram> {
    if p.data.len() == p.orig_len as usize {
        return datagram(&p.data);
    }
    let f = &p.data;
    let at = |i: usize| u16::from_be_bytes([f[i], f[i + 1]]);
    let ip = |i: usize| Ipv4Addr::new(f[i], f[i + 1], f[i + 2], f[i + 3]);
    (f.len() >= 46 && at(12) == 0x0800 && f[14] == 0x45 && f[23] == 17).then(|| Datagram {
        src: ip(26),
        dst: ip(30),
        src_port: at(34),
        dst_port: at(36),
        seq: Some(u32::from_be_bytes([f[42], f[43], f[44], f[45]])),
    })
}

#[test]
fn a_full_ring_costs_counted_frames_and_the_traffic_goes_on() {
    if !root_or_skip() {
        return;
    }
    const SENT: u32 = 400;
    let lab = Lab::new(1);
    let config = lab.config_on(
        &[&format!("name = \"{CAPTURE_IF}\"\nmode = \"tap\"")],
        "tap_ring_bytes = \"64 KiB\"",
        "",
        "[[target]]\nname = \"all\"\n",
    );
    let rx = lab.receiver();
    let daemon = lab.start(&config);
    // With the reader stopped, 400 KB of frames meet rings of 64 KiB per CPU: most are lost.
    daemon.signal(libc::SIGSTOP);
    let frames: Vec<Vec<u8>> = (0..SENT)
        .map(|i| test_frame([0x52, 0x54, 0, 0, 0, 0x0a], [2, 0, 0, 0, 0, 1], &[], i, 1000))
        .collect();
    lab.send(&frames);
    daemon.signal(libc::SIGCONT);
    assert_eq!(rx.ids(), (0..SENT).collect::<Vec<_>>(), "tap mode takes nothing away");

    // Every frame is either written or counted as a ring-full drop, in the metrics...
    let written = "capture_frames_written_total{interface=\"cap0\"}";
    let ring_full = "capture_drops_total{interface=\"cap0\",stage=\"ring_full\"}";
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let (w, full) = loop {
        let page = scrape_metrics(&lab.ns);
        let (w, full) = (metric(&page, written), metric(&page, ring_full));
        if w.zip(full).is_some_and(|(w, f)| w + f == u64::from(SENT)) {
            break (w.unwrap(), full.unwrap());
        }
        assert!(
            std::time::Instant::now() < deadline,
            "written + ring_full never reached {SENT}: {page}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(full > 0 && w > 0, "written {w}, ring_full {full}");
    // ...in `status`...
    let (code, text) = lab.run_daemon(&[], &["status", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains(&format!("ring_full {full}")), "{text}");
    // ...and in the file: the frames written, and the ISB's counters.
    let log = daemon.log_handle();
    assert!(daemon.stop().0.success());
    assert!(log.text().contains(&format!("drops: kernel {full} ")), "{}", log.text());
    let (files, _) = lab.files();
    assert_eq!(files.len(), 1);
    let file = read_pcapng(&files[0]);
    assert_eq!(file.packets.len() as u64, w);
    let isb = file.isbs.last().expect("an ISB at close");
    assert_eq!(
        (isb.ifrecv, isb.filteraccept, isb.osdrop, isb.usrdeliv),
        (Some(u64::from(SENT)), Some(u64::from(SENT)), Some(full), Some(w)),
        "{isb:?}"
    );
}

#[test]
fn tcp_super_frames_are_captured_as_the_stack_sees_them_like_tcpdump() {
    if !root_or_skip() {
        return;
    }
    use std::io::{Read as _, Write as _};
    const BYTES: usize = 2 << 20;
    // Rings large enough that a burst of 64 KB super-frames never fills them.
    let VethCapture { topo, dir, daemon, tcpdump } =
        VethCapture::start("tap_ring_bytes = \"32 MiB\"");
    let listener = topo
        .host
        .run(|| Ok(std::net::TcpListener::bind((topo.host_ip, ECHO_PORT))?))
        .expect("host listener");
    let received = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().expect("accept");
        let mut data = Vec::new();
        conn.read_to_end(&mut data).expect("read");
        data
    });
    let payload: Vec<u8> = (0..=250u8).cycle().take(BYTES).collect();
    let mut conn = topo
        .vm
        .ns
        .run(|| Ok(std::net::TcpStream::connect((topo.host_ip, ECHO_PORT))?))
        .expect("VM connects");
    conn.write_all(&payload).expect("VM sends");
    drop(conn);
    assert!(received.join().unwrap() == payload, "the host got the stream intact");

    assert!(daemon.stop().0.success());
    let ours = captured(&dir.path().join("out"));
    let theirs = tcpdump.finish(ours.len());
    assert_same_items(
        &ours.iter().map(|(_, p)| (p.orig_len, p.data.clone())).collect::<Vec<_>>(),
        &theirs.iter().map(|p| (p.orig_len, p.data.clone())).collect::<Vec<_>>(),
        "the daemon's frames against tcpdump's",
    );
    // veth passes TSO super-frames on: one record each, longer than the MTU, as tcpdump has them.
    let longest = ours.iter().map(|(_, p)| p.data.len()).max().unwrap_or(0);
    assert!(longest > 1514, "no frame above the MTU: longest {longest}");
}

#[test]
fn an_interface_joining_a_lone_tap_reader_keeps_every_file_in_time_order() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new(1);
    let _second = lab.add_pair("cap1", "gen1", 1);
    let (cap0, cap1) = ("name = \"cap0\"\nmode = \"tap\"", "name = \"cap1\"\nmode = \"tap\"");
    let all = "[[target]]\nname = \"all\"\n";
    let config = lab.config_on(&[cap0], "", "", all);
    let daemon = lab.start(&config);
    let frames = |ids: std::ops::Range<u32>| -> Vec<Vec<u8>> {
        ids.map(|i| test_frame([0x52, 0x54, 0, 0, 0, 0x0a], [2, 0, 0, 0, 0, 1], &[], i, 100))
            .collect()
    };
    // Alone, cap0's reader sleeps up to a second between rounds. cap1 joins under traffic: its
    // frames must not be written ahead of cap0's older ones still in cap0's rings.
    std::thread::scope(|s| {
        let pace = Pace { burst: 8, pause: Duration::from_millis(3) };
        let lab = &lab;
        let sender = s.spawn(move || lab.send_paced(&frames(0..3000), pace));
        std::thread::sleep(Duration::from_millis(300));
        lab.config_on(&[cap0, cap1], "", "", all);
        daemon.signal(libc::SIGHUP);
        daemon.wait_for_log_count("reloaded:", 1, Duration::from_secs(5));
        lab.send_from("gen1", &frames(20_000..20_200));
        sender.join().unwrap();
    });
    assert!(daemon.stop().0.success());
    let (files, parts) = lab.files();
    assert!(parts.is_empty(), "{parts:?}");
    for file in &files {
        let packets = read_pcapng(file).packets;
        let back = packets.windows(2).position(|w| w[1].ts_ns < w[0].ts_ns);
        assert!(back.is_none(), "{}: packet {back:?} goes back in time", file.display());
    }
    let got = ids_by_interface(&files);
    assert_eq!(got["cap0"], (0..3000).collect::<Vec<_>>());
    assert_eq!(got["cap1"], (20_000..20_200).collect::<Vec<_>>());
}
