//! Root-only tests of the lab itself: namespaces, veth pairs and the AF_PACKET sender.
//! Without root they print a note and pass, unless CAPTURE_REQUIRE_ROOT=1.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use capture_lab::{
    Frame, NetNs, Pace, RawSender, TPID_8021AD, TPID_8021Q, VethPair, default_gateway, default_vms,
    mac, pin_current_thread, root_tests_enabled, run_cmd, vm_traffic,
};

fn netns_listed(name: &str) -> Result<bool> {
    // Lines look like "NAME" or "NAME (id: 3)".
    let out = run_cmd(Command::new("ip").args(["netns", "list"]))?;
    Ok(out.lines().any(|l| l.split_whitespace().next() == Some(name)))
}

/// Counters are updated on transmit, but poll briefly so a slow machine is not a failure;
/// returns the counter once it reached `at_least` (or the last value after 2 s).
fn wait_for_stat(ns: &NetNs, ifname: &str, stat: &str, at_least: u64) -> Result<u64> {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let value = ns.link_stat(ifname, stat)?;
        if value >= at_least || Instant::now() > deadline {
            return Ok(value);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn veth_pair_delivers_frames_and_namespace_is_removed() -> Result<()> {
    if !root_tests_enabled("veth_pair_delivers_frames_and_namespace_is_removed")? {
        return Ok(());
    }
    let ns = NetNs::create("lab-test")?;
    let name = ns.name().to_owned();
    ensure!(
        name.starts_with(&format!("lab-test-{}-", std::process::id())),
        "unexpected name {name}"
    );
    ensure!(netns_listed(&name)?, "{name} not in `ip netns list`");

    let veth = VethPair::create(&ns, "labcap0", "labpeer0", 2)?;
    for ifname in [&veth.capture, &veth.peer] {
        assert_eq!(ns.num_rx_queues(ifname)?, 2, "{ifname} rx queues");
        assert_eq!(ns.num_tx_queues(ifname)?, 2, "{ifname} tx queues");
        // The same, as the daemon will see it in sysfs.
        let queues = run_cmd(ns.command("ls").arg(format!("/sys/class/net/{ifname}/queues")))?;
        let mut queues: Vec<&str> = queues.split_whitespace().collect();
        queues.sort_unstable();
        assert_eq!(queues, ["rx-0", "rx-1", "tx-0", "tx-1"], "{ifname}");
        let state = run_cmd(ns.command("cat").arg(format!("/sys/class/net/{ifname}/operstate")))?;
        assert_eq!(state.trim(), "up", "{ifname} operstate");
        if Path::new("/proc/sys/net/ipv6").exists() {
            let v6 = run_cmd(
                ns.command("cat").arg(format!("/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6")),
            )?;
            assert_eq!(v6.trim(), "1", "IPv6 must be off on {ifname}");
        }
    }
    // The interfaces exist only inside the namespace: the test thread cannot see them.
    assert!(RawSender::open(&veth.peer).is_err());

    let frames = vm_traffic(&default_vms(), &default_gateway(), 100);
    let rx_before = ns.link_stat(&veth.capture, "rx_packets")?;
    let tx_before = ns.link_stat(&veth.peer, "tx_packets")?;
    assert!(!ns.contains_current_thread()?);
    let sent = ns.run(|| {
        ensure!(ns.contains_current_thread()?, "run() did not enter {}", ns.name());
        let sender = RawSender::open(&veth.peer)?;
        sender.send_all(&frames, Pace::default())
    })?;
    assert!(!ns.contains_current_thread()?, "run() moved the caller's thread");
    assert_eq!(sent, 100);
    let rx_after = wait_for_stat(&ns, &veth.capture, "rx_packets", rx_before + 100)?;
    let tx_after = ns.link_stat(&veth.peer, "tx_packets")?;
    // Exact: with IPv6 off and no addresses, nothing but our frames crosses the pair.
    assert_eq!(rx_after - rx_before, 100, "frames received on {}", veth.capture);
    assert_eq!(tx_after - tx_before, 100, "frames sent on {}", veth.peer);
    assert_eq!(ns.link_stat(&veth.capture, "rx_dropped")?, 0);

    drop(ns);
    ensure!(!netns_listed(&name)?, "{name} still listed after drop");
    ensure!(!Path::new("/run/netns").join(&name).exists(), "/run/netns/{name} still exists");
    Ok(())
}

#[test]
fn pinned_qdisc_bypass_sender_delivers_max_size_frames() -> Result<()> {
    if !root_tests_enabled("pinned_qdisc_bypass_sender_delivers_max_size_frames")? {
        return Ok(());
    }
    let ns = NetNs::create("lab-bypass")?;
    let veth = VethPair::create(&ns, "cap", "peer", 2)?;
    let (a, b) = (mac("52:54:00:00:00:0a"), mac("52:54:00:00:00:0b"));
    let mut frames = vec![
        // The largest frames a 1500-MTU veth takes: untagged 1514, 802.1Q 1518 (the kernel
        // allows +4 only for an 802.1Q outer tag), QinQ 1514.
        Frame::ethernet(b, a).ipv4_udp([10, 0, 0, 10], [10, 0, 0, 11], 1, 2, &[0; 1472]),
        Frame::ethernet(b, a).vlan(TPID_8021Q, 100).ipv4_udp(
            [10, 0, 0, 10],
            [10, 0, 0, 11],
            1,
            2,
            &[0; 1472],
        ),
        Frame::ethernet(b, a).vlan(TPID_8021AD, 10).vlan(TPID_8021Q, 20).ipv4_udp(
            [10, 0, 0, 10],
            [10, 0, 0, 11],
            1,
            2,
            &[0; 1464],
        ),
        Frame::ethernet(b, a).raw(0x88b5, b"runt"),
    ];
    assert_eq!(frames.iter().map(Vec::len).collect::<Vec<_>>(), [1514, 1518, 1514, 60]);
    frames.extend(vm_traffic(&default_vms(), &default_gateway(), 296));
    let total = u64::try_from(frames.len())?;

    let before = ns.link_stat(&veth.capture, "rx_packets")?;
    let sent = ns.run(|| {
        // CPU 0 always exists; with qdisc bypass that means TX queue 0 of the peer.
        pin_current_thread(0)?;
        let sender = RawSender::open(&veth.peer)?.with_qdisc_bypass()?;
        let sent = sender.send_all(&frames, Pace::default())?;
        // SAFETY: sched_getcpu has no preconditions.
        let cpu = unsafe { libc::sched_getcpu() };
        ensure!(cpu == 0, "pinned thread ran on CPU {cpu}");
        Ok(sent)
    })?;
    assert_eq!(sent, total);
    let after = wait_for_stat(&ns, &veth.capture, "rx_packets", before + total)?;
    assert_eq!(after - before, total);
    Ok(())
}

#[test]
fn namespaces_are_unique_and_each_is_removed() -> Result<()> {
    if !root_tests_enabled("namespaces_are_unique_and_each_is_removed")? {
        return Ok(());
    }
    let first = NetNs::create("lab-uniq")?;
    let second = NetNs::create("lab-uniq")?;
    assert_ne!(first.name(), second.name());
    // Same interface names in two namespaces do not clash.
    VethPair::create(&first, "cap", "peer", 1)?;
    VethPair::create(&second, "cap", "peer", 1)?;
    // But twice in one namespace does, and the error says what was attempted.
    let err = VethPair::create(&first, "cap", "peer", 1).expect_err("duplicate veth");
    assert!(format!("{err:#}").contains("creating veth pair cap/peer"), "{err:#}");

    let lo = run_cmd(first.command("cat").arg("/sys/class/net/lo/operstate"))?;
    assert_ne!(lo.trim(), "down", "lo must be up");
    // `command` runs inside: the namespace has exactly lo + the pair.
    let links = run_cmd(first.command("ls").arg("/sys/class/net"))?;
    let mut links: Vec<&str> = links.split_whitespace().collect();
    links.sort_unstable();
    assert_eq!(links, ["cap", "lo", "peer"]);

    let names = [first.name().to_owned(), second.name().to_owned()];
    drop(first);
    ensure!(!netns_listed(&names[0])?, "{} still listed", names[0]);
    ensure!(netns_listed(&names[1])?, "{} vanished early", names[1]);
    drop(second);
    ensure!(!netns_listed(&names[1])?, "{} still listed", names[1]);
    Ok(())
}

#[test]
fn run_propagates_errors_with_context() -> Result<()> {
    if !root_tests_enabled("run_propagates_errors_with_context")? {
        return Ok(());
    }
    let ns = NetNs::create("lab-err")?;
    let err = ns
        .run(|| RawSender::open("nosuchif0"))
        .expect_err("no such interface in a fresh namespace");
    assert!(format!("{err:#}").contains("nosuchif0"), "{err:#}");
    let value = ns.run(|| Ok(42)).context("trivial run")?;
    assert_eq!(value, 42);
    Ok(())
}
