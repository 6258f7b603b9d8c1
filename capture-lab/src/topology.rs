//! Hypervisor-shaped topologies: a "host" namespace and "VM" namespaces that really talk to
//! it through the interfaces a capture attaches to (a veth's host end, a bridge port), so
//! a tap-mode test can check that capturing did not disturb real traffic.
//!
//! Every address is a static neighbor entry: nothing needs ARP, and with IPv6 off a
//! capture sees exactly the frames the test sent.

use std::net::Ipv4Addr;

use anyhow::{Context, Result, bail};

use crate::NetNs;
use crate::frame::format_mac;
use crate::netns::{VethPair, check_ifname};

/// A Linux bridge in a namespace, created up with STP off and forward delay 0 so a port
/// forwards as soon as it is attached (the default 15 s listening/learning would drop the
/// first frames of a test). Deleted with its namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bridge {
    name: String,
    netns: String,
}

impl Bridge {
    /// `ip link add name NAME type bridge stp_state 0 forward_delay 0`, then up; no address
    /// (give it one with [`NetNs::add_addr`] if the host should take part in the traffic).
    pub fn create(ns: &NetNs, name: &str) -> Result<Bridge> {
        check_ifname(name)?;
        ns.ip(&[
            "link",
            "add",
            "name",
            name,
            "type",
            "bridge",
            "stp_state",
            "0",
            "forward_delay",
            "0",
        ])
        .with_context(|| format!("creating bridge {name} in {}", ns.name()))?;
        ns.set_up(name)?;
        Ok(Bridge { name: name.to_owned(), netns: ns.name().to_owned() })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Makes `port` (an interface in the bridge's namespace) a port of this bridge, and up.
    pub fn attach(&self, ns: &NetNs, port: &str) -> Result<()> {
        check_ifname(port)?;
        if ns.name() != self.netns {
            bail!("bridge {} is in {}, not in {}", self.name, self.netns, ns.name());
        }
        ns.ip(&["link", "set", "dev", port, "master", &self.name]).with_context(|| {
            format!("attaching {port} to bridge {} in {}", self.name, self.netns)
        })?;
        ns.set_up(port)
    }
}

/// One "VM": its own namespace, whose NIC `ifname` is the peer of `host_port` in the host
/// namespace. `ip` is the NIC's address, in a /24.
#[derive(Debug)]
pub struct VmNs {
    pub ns: NetNs,
    pub ifname: String,
    pub mac: [u8; 6],
    pub ip: Ipv4Addr,
    /// The host-side end of the VM's veth: where a hypervisor's capture attaches.
    pub host_port: String,
}

impl VmNs {
    /// Creates the VM namespace and a veth `host_port` (in `host`) <-> `ifname` (in the VM)
    /// with `mac` and `ip/24` on the VM end, both ends at `mtu`.
    fn create(
        host: &NetNs,
        prefix: &str,
        host_port: &str,
        ifname: &str,
        mac: [u8; 6],
        ip: Ipv4Addr,
        mtu: u32,
    ) -> Result<VmNs> {
        let ns = NetNs::create(prefix)?;
        VethPair::create_across(host, &ns, host_port, ifname)?;
        host.set_mtu(host_port, mtu)?;
        ns.set_mtu(ifname, mtu)?;
        ns.set_mac(ifname, mac)?;
        ns.add_addr(ifname, &format!("{ip}/24"))?;
        Ok(VmNs { ns, ifname: ifname.to_owned(), mac, ip, host_port: host_port.to_owned() })
    }

    /// Static neighbor entry in this VM for another station on its segment.
    pub fn add_neighbor(&self, ip: Ipv4Addr, mac: [u8; 6]) -> Result<()> {
        self.ns.add_neighbor(&self.ifname, ip, mac)
    }
}

/// A host and one VM joined by a veth, like a routed (non-bridged) VM or a container:
/// `host_if` (10.0.0.1/24) in `host`, the VM's `eth0` (10.0.0.2/24) in `vm.ns`.
/// Both ends have fixed MACs and static neighbor entries for each other.
#[derive(Debug)]
pub struct VethTopology {
    // Fields drop in order: the VM's namespace (and with it the veth) goes first.
    pub vm: VmNs,
    pub host: NetNs,
    pub host_if: String,
    pub host_mac: [u8; 6],
    pub host_ip: Ipv4Addr,
}

impl VethTopology {
    pub const HOST_IF: &str = "vnet0";
    pub const HOST_MAC: [u8; 6] = [0xfe, 0x54, 0, 0, 0, 0x01];
    pub const HOST_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    pub const VM_MAC: [u8; 6] = [0x52, 0x54, 0, 0, 0, 0x02];
    pub const VM_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

    /// Both ends at `mtu` (1500 is the usual; 9000 for jumbo frames).
    pub fn create(mtu: u32) -> Result<VethTopology> {
        let host = NetNs::create("lab-host")?;
        let vm =
            VmNs::create(&host, "lab-vm", Self::HOST_IF, "eth0", Self::VM_MAC, Self::VM_IP, mtu)?;
        host.set_mac(Self::HOST_IF, Self::HOST_MAC)?;
        host.add_addr(Self::HOST_IF, &format!("{}/24", Self::HOST_IP))?;
        host.add_neighbor(Self::HOST_IF, vm.ip, vm.mac)?;
        vm.add_neighbor(Self::HOST_IP, Self::HOST_MAC)?;
        Ok(VethTopology {
            vm,
            host,
            host_if: Self::HOST_IF.to_owned(),
            host_mac: Self::HOST_MAC,
            host_ip: Self::HOST_IP,
        })
    }
}

/// A host with bridge `br0` (10.0.1.1/24) and two VMs whose veths' host ends `vm1p` and
/// `vm2p` are bridge ports: vm1 is 10.0.1.11 (52:54:00:00:01:11), vm2 10.0.1.12
/// (52:54:00:00:01:12), each with NIC `eth0`. This is the usual Linux-bridge hypervisor;
/// VM-to-VM traffic crosses both ports, VM-to-host traffic one port and the bridge itself.
#[derive(Debug)]
pub struct BridgeTopology {
    // The VMs drop first, taking their veths with them, then the host with the bridge.
    pub vms: Vec<VmNs>,
    pub host: NetNs,
    pub bridge: Bridge,
    pub bridge_mac: [u8; 6],
    pub bridge_ip: Ipv4Addr,
}

impl BridgeTopology {
    pub const BRIDGE: &str = "br0";
    pub const BRIDGE_MAC: [u8; 6] = [0xfe, 0x54, 0, 0, 0x01, 0x01];
    pub const BRIDGE_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 1);

    /// All links at `mtu`. Every station has static neighbor entries for all others.
    pub fn create(mtu: u32) -> Result<BridgeTopology> {
        let host = NetNs::create("lab-brhost")?;
        let bridge = Bridge::create(&host, Self::BRIDGE)?;
        // A bridge otherwise takes the lowest MAC of its ports, which changes as ports come and go.
        host.set_mac(Self::BRIDGE, Self::BRIDGE_MAC)?;
        host.set_mtu(Self::BRIDGE, mtu)?;
        host.add_addr(Self::BRIDGE, &format!("{}/24", Self::BRIDGE_IP))?;
        let mut vms = Vec::new();
        for n in 1..=2u8 {
            let vm = VmNs::create(
                &host,
                &format!("lab-vm{n}"),
                &format!("vm{n}p"),
                "eth0",
                [0x52, 0x54, 0, 0, 0x01, 0x10 + n],
                Ipv4Addr::new(10, 0, 1, 10 + n),
                mtu,
            )?;
            bridge.attach(&host, &vm.host_port)?;
            vms.push(vm);
        }
        for vm in &vms {
            host.add_neighbor(Self::BRIDGE, vm.ip, vm.mac)?;
            vm.add_neighbor(Self::BRIDGE_IP, Self::BRIDGE_MAC)?;
            for other in vms.iter().filter(|o| o.ip != vm.ip) {
                vm.add_neighbor(other.ip, other.mac)?;
            }
        }
        // The bridge's own MTU follows its ports' minimum once they are attached; check it
        // did, since a silently smaller MTU would make jumbo tests fail confusingly.
        let shown = host.ip(&["link", "show", "dev", Self::BRIDGE])?;
        if !shown.contains(&format!(" mtu {mtu} ")) {
            bail!("bridge {} did not take MTU {mtu}: {}", Self::BRIDGE, shown.trim());
        }
        Ok(BridgeTopology {
            vms,
            host,
            bridge,
            bridge_mac: Self::BRIDGE_MAC,
            bridge_ip: Self::BRIDGE_IP,
        })
    }

    /// One line naming every station, for assertion messages.
    pub fn describe(&self) -> String {
        let vms: Vec<String> = self
            .vms
            .iter()
            .map(|vm| {
                format!("{} {} {} via {}", vm.ns.name(), vm.ip, format_mac(vm.mac), vm.host_port)
            })
            .collect();
        format!(
            "{} {} in {}; {}",
            self.bridge.name(),
            self.bridge_ip,
            self.host.name(),
            vms.join("; ")
        )
    }
}
