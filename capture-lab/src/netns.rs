//! Named network namespaces and veth pairs, built with iproute2 so that what the tests do
//! can be reproduced by hand with the same `ip` commands.

use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context, Result, bail};

use crate::frame::{format_mac, parse_mac};
use crate::leftovers::NETNS_PREFIXES;
use crate::{run_cmd, tool_available};

/// Per-process counter; with the pid in the name, parallel tests and processes never collide.
static NEXT_NS: AtomicU32 = AtomicU32::new(0);

/// A named network namespace (`ip netns add`), deleted on drop, which also deletes
/// the veths inside it.
#[derive(Debug)]
pub struct NetNs {
    name: String,
}

impl NetNs {
    /// Creates `{prefix}-{pid}-{n}`, disables IPv6 in it (so the kernel sends no ND/MLD
    /// frames that would pollute packet counts) and sets `lo` up. The prefix starts with one of
    /// [`NETNS_PREFIXES`], so that [`crate::remove_leftovers`] knows the name for ours.
    pub fn create(prefix: &str) -> Result<NetNs> {
        if prefix.is_empty()
            || !prefix.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            bail!("network namespace prefix {prefix:?} must be non-empty [A-Za-z0-9_-]");
        }
        if !NETNS_PREFIXES.iter().any(|p| prefix.starts_with(p)) {
            bail!("network namespace prefix {prefix:?} must start with one of {NETNS_PREFIXES:?}");
        }
        let n = NEXT_NS.fetch_add(1, Ordering::Relaxed);
        let name = format!("{prefix}-{}-{n}", std::process::id());
        run_cmd(Command::new("ip").args(["netns", "add", &name]))
            .with_context(|| format!("creating network namespace {name}"))?;
        // From here on an early return drops `ns`, which deletes the namespace again.
        let ns = NetNs { name };
        ns.disable_ipv6()?;
        ns.ip(&["link", "set", "lo", "up"])
            .with_context(|| format!("setting lo up in {}", ns.name))?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip netns exec NAME program`: also mounts this namespace's /sys for the program,
    /// which is how to read /sys/class/net of interfaces in here.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]);
        cmd
    }

    /// Runs `ip -n NAME ARGS...` and returns its stdout.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        run_cmd(Command::new("ip").args(["-n", &self.name]).args(args))
    }

    /// Runs `f` on a scoped thread that has joined this namespace, so sockets it opens
    /// (e.g. [`crate::RawSender`]) live here; the caller's thread never changes namespace.
    /// Note that /sys seen from that thread is still the host's: use [`NetNs::command`] for /sys.
    /// A panic in `f` is propagated to the caller.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
        let path = self.path();
        let file = File::open(&path)
            .with_context(|| format!("opening {} to enter the namespace", path.display()))?;
        std::thread::scope(|scope| {
            let handle = std::thread::Builder::new()
                .name("netns-run".into())
                .spawn_scoped(scope, move || {
                    // SAFETY: plain syscall on a valid fd; the network namespace is per-thread,
                    // so this affects only this short-lived thread.
                    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                    if rc != 0 {
                        return Err(std::io::Error::last_os_error())
                            .with_context(|| format!("setns into {}", self.name));
                    }
                    drop(file);
                    f()
                })
                .with_context(|| format!("spawning a thread to run in {}", self.name))?;
            match handle.join() {
                Ok(result) => result,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }

    /// Whether the calling thread is in this namespace (compares nsfs inodes).
    pub fn contains_current_thread(&self) -> Result<bool> {
        let ours = std::fs::metadata(self.path())
            .with_context(|| format!("stat {}", self.path().display()))?;
        let current = std::fs::metadata("/proc/thread-self/ns/net")
            .context("stat /proc/thread-self/ns/net")?;
        Ok(ours.dev() == current.dev() && ours.ino() == current.ino())
    }

    /// Reads an interface counter from /sys/class/net/IF/statistics/STAT inside this namespace.
    pub fn link_stat(&self, ifname: &str, stat: &str) -> Result<u64> {
        check_ifname(ifname)?;
        if stat.is_empty() || stat.contains('/') {
            bail!("bad statistics name {stat:?}");
        }
        let path = format!("/sys/class/net/{ifname}/statistics/{stat}");
        let text = run_cmd(self.command("cat").arg(&path))
            .with_context(|| format!("reading {path} in {}", self.name))?;
        text.trim().parse().with_context(|| format!("parsing {path} in {}: {text:?}", self.name))
    }

    /// Number of RX queues of an interface in here (`numrxqueues` of `ip -d link show`).
    pub fn num_rx_queues(&self, ifname: &str) -> Result<u32> {
        self.link_detail_number(ifname, "numrxqueues")
    }

    /// Number of TX queues of an interface in here (`numtxqueues` of `ip -d link show`).
    pub fn num_tx_queues(&self, ifname: &str) -> Result<u32> {
        self.link_detail_number(ifname, "numtxqueues")
    }

    /// `ip addr add CIDR dev IF`, e.g. `add_addr("eth0", "10.0.0.1/24")`; IPv4 only, since
    /// IPv6 is off in these namespaces.
    pub fn add_addr(&self, ifname: &str, cidr: &str) -> Result<()> {
        check_ifname(ifname)?;
        check_ipv4_cidr(cidr)?;
        self.ip(&["addr", "add", cidr, "dev", ifname])
            .with_context(|| format!("adding {cidr} to {ifname} in {}", self.name))?;
        Ok(())
    }

    /// `ip link set dev IF mtu MTU`. Both ends of a veth need it for jumbo frames to cross.
    pub fn set_mtu(&self, ifname: &str, mtu: u32) -> Result<()> {
        check_ifname(ifname)?;
        self.ip(&["link", "set", "dev", ifname, "mtu", &mtu.to_string()])
            .with_context(|| format!("setting the MTU of {ifname} in {} to {mtu}", self.name))?;
        Ok(())
    }

    /// `ip link set dev IF address MAC`: fixed MACs make frames (and captures) predictable.
    pub fn set_mac(&self, ifname: &str, mac: [u8; 6]) -> Result<()> {
        check_ifname(ifname)?;
        let text = format_mac(mac);
        self.ip(&["link", "set", "dev", ifname, "address", &text])
            .with_context(|| format!("setting the MAC of {ifname} in {} to {text}", self.name))?;
        Ok(())
    }

    /// The MAC of an interface in here, from /sys/class/net/IF/address (read through
    /// [`NetNs::command`], since /sys of other threads is the host's).
    pub fn mac_of(&self, ifname: &str) -> Result<[u8; 6]> {
        check_ifname(ifname)?;
        let path = format!("/sys/class/net/{ifname}/address");
        let text = run_cmd(self.command("cat").arg(&path))
            .with_context(|| format!("reading {path} in {}", self.name))?;
        parse_mac(text.trim()).with_context(|| format!("{path} in {}", self.name))
    }

    /// A permanent neighbor (ARP) entry `ip -> mac` on IF, so traffic starts without an ARP
    /// exchange and a capture sees only the test's own frames. Replaces an existing entry.
    pub fn add_neighbor(&self, ifname: &str, ip: Ipv4Addr, mac: [u8; 6]) -> Result<()> {
        check_ifname(ifname)?;
        let (ip_text, mac_text) = (ip.to_string(), format_mac(mac));
        self.ip(&[
            "neigh",
            "replace",
            &ip_text,
            "lladdr",
            &mac_text,
            "dev",
            ifname,
            "nud",
            "permanent",
        ])
        .with_context(|| {
            format!("adding neighbor {ip_text} at {mac_text} on {ifname} in {}", self.name)
        })?;
        Ok(())
    }

    /// `ip link set dev IF up`.
    pub fn set_up(&self, ifname: &str) -> Result<()> {
        check_ifname(ifname)?;
        self.ip(&["link", "set", "dev", ifname, "up"])
            .with_context(|| format!("setting {ifname} up in {}", self.name))?;
        Ok(())
    }

    fn link_detail_number(&self, ifname: &str, key: &str) -> Result<u32> {
        check_ifname(ifname)?;
        let out = self
            .ip(&["-d", "link", "show", "dev", ifname])
            .with_context(|| format!("showing link {ifname} in {}", self.name))?;
        let mut words = out.split_whitespace();
        while let Some(word) = words.next() {
            if word == key {
                let value = words.next().unwrap_or_default();
                return value
                    .parse()
                    .with_context(|| format!("{key} of {ifname} in {}: {value:?}", self.name));
            }
        }
        bail!("`ip -d link show dev {ifname}` in {} printed no {key}", self.name)
    }

    fn path(&self) -> std::path::PathBuf {
        Path::new("/run/netns").join(&self.name)
    }

    fn disable_ipv6(&self) -> Result<()> {
        // A host booted with ipv6.disable=1 has no such sysctls, and nothing to silence.
        if !Path::new("/proc/sys/net/ipv6").exists() {
            return Ok(());
        }
        // "default" covers the veths created later, "all" the lo that exists already.
        let keys = ["net.ipv6.conf.all.disable_ipv6", "net.ipv6.conf.default.disable_ipv6"];
        if tool_available("sysctl") {
            let mut cmd = self.command("sysctl");
            cmd.args(["-q", "-w"]);
            for key in keys {
                cmd.arg(format!("{key}=1"));
            }
            run_cmd(&mut cmd).with_context(|| format!("disabling IPv6 in {}", self.name))?;
            return Ok(());
        }
        for key in keys {
            self.write_sysctl(key, "1")
                .with_context(|| format!("disabling IPv6 in {}", self.name))?;
        }
        Ok(())
    }

    /// Writes a net.* sysctl of this namespace through /proc/sys from a thread inside it
    /// (net sysctls resolve against the writing thread's namespace), for hosts without `sysctl`.
    fn write_sysctl(&self, key: &str, value: &str) -> Result<()> {
        if !key.starts_with("net.") || key.contains('/') || key.contains("..") {
            bail!("{key:?} is not a per-namespace net.* sysctl");
        }
        let path = Path::new("/proc/sys").join(key.replace('.', "/"));
        self.run(|| {
            std::fs::write(&path, value)
                .with_context(|| format!("writing {value} to {}", path.display()))
        })
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        // Deleting the namespace destroys its interfaces once the last user (e.g. an open
        // socket) is gone; a failure here can only be reported, not returned.
        if let Err(err) = run_cmd(Command::new("ip").args(["netns", "delete", &self.name])) {
            eprintln!("capture-lab: failed to delete network namespace {}: {err:#}", self.name);
        }
    }
}

/// A veth pair inside one namespace: `capture` is where the daemon attaches,
/// `peer` is where traffic is sent from. Deleted with its namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VethPair {
    pub capture: String,
    pub peer: String,
}

impl VethPair {
    /// Creates both ends with `queues` TX and RX queues each, sets them up, adds no addresses.
    pub fn create(ns: &NetNs, capture: &str, peer: &str, queues: u32) -> Result<VethPair> {
        check_ifname(capture)?;
        check_ifname(peer)?;
        if queues == 0 {
            bail!("a veth needs at least one queue");
        }
        let q = queues.to_string();
        // `name` must be explicit: a bare first word is parsed as an abbreviated keyword
        // (e.g. "a" as "address").
        ns.ip(&[
            "link",
            "add",
            "name",
            capture,
            "numtxqueues",
            &q,
            "numrxqueues",
            &q,
            "type",
            "veth",
            "peer",
            "name",
            peer,
            "numtxqueues",
            &q,
            "numrxqueues",
            &q,
        ])
        .with_context(|| {
            format!("creating veth pair {capture}/{peer} with {queues} queues in {}", ns.name())
        })?;
        for ifname in [capture, peer] {
            ns.ip(&["link", "set", "dev", ifname, "up"])
                .with_context(|| format!("setting {ifname} up in {}", ns.name()))?;
        }
        Ok(VethPair { capture: capture.to_owned(), peer: peer.to_owned() })
    }

    /// A veth with one end in each namespace, both up, no addresses: `host_if` (the
    /// `capture` end, where a hypervisor's daemon attaches) in `host`, `vm_if` (the `peer`)
    /// in `vm`. This is how a container or a VM namespace really talks to its host, so
    /// traffic captured on `host_if` is traffic the two namespaces exchange. The pair goes
    /// away with whichever namespace is deleted first.
    pub fn create_across(host: &NetNs, vm: &NetNs, host_if: &str, vm_if: &str) -> Result<VethPair> {
        check_ifname(host_if)?;
        check_ifname(vm_if)?;
        if host.name() == vm.name() {
            bail!("create_across needs two namespaces; use VethPair::create within one");
        }
        // `peer ... netns NAME` creates the peer end directly inside the other namespace,
        // so it never exists in (or is visible from) the host's own namespace.
        host.ip(&[
            "link",
            "add",
            "name",
            host_if,
            "type",
            "veth",
            "peer",
            "name",
            vm_if,
            "netns",
            vm.name(),
        ])
        .with_context(|| {
            format!("creating veth {host_if} in {} with peer {vm_if} in {}", host.name(), vm.name())
        })?;
        host.set_up(host_if)?;
        vm.set_up(vm_if)?;
        Ok(VethPair { capture: host_if.to_owned(), peer: vm_if.to_owned() })
    }
}

/// `a.b.c.d/len`: checked here so a typo fails with a clear message, not iproute2's.
fn check_ipv4_cidr(cidr: &str) -> Result<()> {
    let ok = cidr.split_once('/').is_some_and(|(addr, len)| {
        addr.parse::<Ipv4Addr>().is_ok()
            && !len.is_empty()
            && len.bytes().all(|b| b.is_ascii_digit())
            && len.parse::<u8>().is_ok_and(|len| len <= 32)
    });
    if !ok {
        bail!("{cidr:?} is not an IPv4 address with a prefix length, e.g. 10.0.0.1/24");
    }
    Ok(())
}

/// Interface names go into paths and command lines: keep them to what the kernel accepts.
pub(crate) fn check_ifname(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() < libc::IFNAMSIZ
        && name != "."
        && name != ".."
        && !name.bytes().any(|b| b == b'/' || b == b':' || b == 0 || b.is_ascii_whitespace());
    if !ok {
        bail!("{name:?} is not a valid interface name (1-15 bytes, no '/', ':' or whitespace)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_prefix_without_touching_ip() {
        for bad in ["", "a b", "a/b", "x;rm", "test", "la-b"] {
            assert!(NetNs::create(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn cidr_rules() {
        for good in ["10.0.0.1/24", "0.0.0.0/0", "10.0.1.11/32"] {
            assert!(check_ipv4_cidr(good).is_ok(), "{good}");
        }
        for bad in ["", "10.0.0.1", "10.0.0.1/", "10.0.0.1/33", "10.0.0/24", "10.0.0.1/+4", "x/24"]
        {
            assert!(check_ipv4_cidr(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn ifname_rules() {
        for good in ["cap0", "veth-peer_1", "a23456789012345"] {
            assert!(check_ifname(good).is_ok(), "{good}");
        }
        for bad in ["", "a234567890123456", "a/b", "a:b", "a b", ".", ".."] {
            assert!(check_ifname(bad).is_err(), "{bad:?}");
        }
    }

    /// The /proc/sys fallback used when `sysctl` is missing must hit the namespace, not the host.
    #[test]
    fn write_sysctl_stays_in_namespace() -> Result<()> {
        if !crate::root_tests_enabled("write_sysctl_stays_in_namespace")? {
            return Ok(());
        }
        let host_before = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")?;
        let ns = NetNs::create("lab-sysctl")?;
        ns.write_sysctl("net.ipv4.ip_forward", "1")?;
        let inside = run_cmd(ns.command("cat").arg("/proc/sys/net/ipv4/ip_forward"))?;
        assert_eq!(inside.trim(), "1");
        // Read-only look at the host: the write must not have leaked there.
        let host_after = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")?;
        assert_eq!(host_before, host_after);
        assert!(ns.write_sysctl("kernel.hostname", "x").is_err());
        Ok(())
    }
}
