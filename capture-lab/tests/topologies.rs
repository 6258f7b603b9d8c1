//! Root-only tests of the hypervisor-shaped topologies, without any capture: the VMs really
//! reach the host and each other through the interfaces a capture attaches to, at the MTU
//! asked for, and everything is gone once the topology is dropped. Without root they print a
//! note and pass, unless CAPTURE_REQUIRE_ROOT=1.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;
use std::time::Duration;

use anyhow::{Result, ensure};
use capture_lab::{
    BridgeTopology, NetNs, Pace, TapVm, UdpPeer, VethTopology, root_tests_enabled, run_cmd,
};

const COUNT: u32 = 200;
const TIMEOUT: Duration = Duration::from_secs(10);

fn namespaces() -> Result<String> {
    run_cmd(Command::new("ip").args(["netns", "list"]))
}

/// `0..COUNT` datagrams of `len` bytes from `client` to an echo on `server` and back.
fn exchange(client: &UdpPeer, server: UdpPeer, len: usize) -> Result<()> {
    let echo = server.spawn_echo()?;
    let back = client.exchange(echo.local_addr(), COUNT, len, Pace::default(), TIMEOUT)?;
    let heard = echo.stop()?;
    ensure!(heard.is_complete(COUNT), "the echo missed {:?}", heard.missing(COUNT));
    ensure!(back.is_complete(COUNT), "the client missed {:?}", back.missing(COUNT));
    Ok(())
}

#[test]
fn a_veth_vm_talks_to_its_host_with_jumbo_datagrams_unfragmented() -> Result<()> {
    if !root_tests_enabled("a_veth_vm_talks_to_its_host_with_jumbo_datagrams_unfragmented")? {
        return Ok(());
    }
    let topo = VethTopology::create(9000)?;
    let names = (topo.host.name().to_owned(), topo.vm.ns.name().to_owned());
    ensure!(topo.host.ip(&["link", "show", "dev", &topo.host_if])?.contains(" mtu 9000 "));
    let vm = UdpPeer::bind(&topo.vm.ns, (topo.vm.ip, 0))?;
    let host = UdpPeer::bind(&topo.host, (topo.host_ip, 0))?;
    // 8972 bytes of UDP payload fill a 9000-byte IP packet exactly: no fragments.
    exchange(&vm, host, 9000 - 28)?;
    let frames_out = topo.vm.ns.link_stat(&topo.vm.ifname, "tx_packets")?;
    ensure!(frames_out == u64::from(COUNT), "{frames_out} frames for {COUNT} datagrams");
    drop(topo);
    let left = namespaces()?;
    ensure!(!left.contains(&names.0) && !left.contains(&names.1), "left behind: {left}");
    Ok(())
}

#[test]
fn bridged_vms_talk_to_each_other_and_to_the_bridge() -> Result<()> {
    if !root_tests_enabled("bridged_vms_talk_to_each_other_and_to_the_bridge")? {
        return Ok(());
    }
    let topo = BridgeTopology::create(1500)?;
    let (vm1, vm2) = (&topo.vms[0], &topo.vms[1]);
    let client = UdpPeer::bind(&vm1.ns, (vm1.ip, 0))?;
    exchange(&client, UdpPeer::bind(&vm2.ns, (vm2.ip, 0))?, 1000)?;
    exchange(&client, UdpPeer::bind(&topo.host, (topo.bridge_ip, 0))?, 1000)?;
    // Each port really is in the bridge.
    for vm in &topo.vms {
        let shown = topo.host.ip(&["link", "show", "dev", &vm.host_port])?;
        ensure!(shown.contains("master br0"), "{shown}");
    }
    Ok(())
}

#[test]
fn a_tap_vm_answers_the_host_and_logs_what_crossed_the_tap() -> Result<()> {
    if !root_tests_enabled("a_tap_vm_answers_the_host_and_logs_what_crossed_the_tap")? {
        return Ok(());
    }
    const VM_MAC: [u8; 6] = [0x52, 0x54, 0, 0, 0x03, 0x02];
    const VM_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 3, 2);
    let host = NetNs::create("lab-taptest")?;
    let vm = TapVm::create(&host, "vnet9", VM_MAC, VM_IP)?;
    host.add_addr("vnet9", "10.0.3.1/24")?;
    host.add_neighbor("vnet9", VM_IP, VM_MAC)?;
    let client = UdpPeer::bind(&host, (Ipv4Addr::new(10, 0, 3, 1), 0))?;
    let back =
        client.exchange(SocketAddr::from((VM_IP, 9)), COUNT, 500, Pace::default(), TIMEOUT)?;
    ensure!(back.is_complete(COUNT), "the host missed {:?}", back.missing(COUNT));
    // The VM writes an echo to the tap before it counts and logs it: the host can have it first.
    let stats = vm.wait_for(TIMEOUT, |s| s.udp_echoed >= u64::from(COUNT));
    ensure!(stats.udp_echoed == u64::from(COUNT), "{stats:?}");
    ensure!(vm.received_frames().len() == COUNT as usize, "{stats:?}");
    ensure!(vm.sent_frames().len() == COUNT as usize, "{stats:?}");
    ensure!(vm.udp_report().is_complete(COUNT), "{:?}", vm.udp_report());
    vm.stop()?;
    // Closing the tap's fd removed the interface.
    ensure!(host.ip(&["link", "show", "dev", "vnet9"]).is_err(), "vnet9 outlived its VM");
    Ok(())
}
