//! The benchmark's lab and file systems: a namespace with the veth pair, interface counters read
//! without starting a process, a private tmpfs that is unmounted on drop.

use std::fs::File;
use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail};
use capture_lab::{NetNs, VethPair, run_cmd};

pub const CAPTURE_IF: &str = "cap0";
pub const GENERATOR_IF: &str = "gen0";

/// Interface counters of one moment (the same numbers as /sys/class/net/IF/statistics and
/// `NetNs::link_stat`: both come from the kernel's dev_get_stats).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub gen_tx_packets: u64,
    pub gen_tx_dropped: u64,
    pub cap_rx_packets: u64,
    pub cap_rx_dropped: u64,
}

impl Counters {
    pub fn delta(&self, before: &Counters) -> Counters {
        Counters {
            gen_tx_packets: self.gen_tx_packets.saturating_sub(before.gen_tx_packets),
            gen_tx_dropped: self.gen_tx_dropped.saturating_sub(before.gen_tx_dropped),
            cap_rx_packets: self.cap_rx_packets.saturating_sub(before.cap_rx_packets),
            cap_rx_dropped: self.cap_rx_dropped.saturating_sub(before.cap_rx_dropped),
        }
    }

    /// Frames that reached cap0: what gen0 transmitted minus what veth dropped on the way
    /// (a full peer ring with an XDP program attached).
    pub fn offered(&self) -> u64 {
        self.gen_tx_packets.saturating_sub(self.gen_tx_dropped)
    }
}

/// Namespace + veth pair; both are removed on drop (the namespace takes its veths with it).
pub struct Lab {
    /// Declared before `ns` so that it is dropped (closed) first.
    net_dev: File,
    pub veth: VethPair,
    pub ns: NetNs,
    pub queues: u32,
}

impl Lab {
    pub fn create(queues: u32) -> Result<Lab> {
        let ns = NetNs::create("capbench")?;
        let veth = VethPair::create(&ns, CAPTURE_IF, GENERATOR_IF, queues)?;
        // /proc/thread-self/net is the net namespace of the thread that opens it, and stays so
        // for the open file: re-reading it costs no process start inside the measured window.
        let net_dev =
            ns.run(|| File::open("/proc/thread-self/net/dev").context("opening /proc/net/dev"))?;
        let lab = Lab { net_dev, veth, ns, queues };
        // Cross-check once against the documented source of the same numbers.
        let c = lab.counters()?;
        let sys = lab.ns.link_stat(GENERATOR_IF, "tx_packets")?;
        if c.gen_tx_packets != sys {
            bail!("/proc/net/dev says gen0 sent {} frames, sysfs {sys}", c.gen_tx_packets);
        }
        Ok(lab)
    }

    pub fn counters(&self) -> Result<Counters> {
        let mut f = &self.net_dev;
        f.seek(SeekFrom::Start(0))?;
        let mut text = String::new();
        f.read_to_string(&mut text).context("reading /proc/net/dev of the lab")?;
        let (_, gen_tx) = net_dev_line(&text, GENERATOR_IF)?;
        let (cap_rx, _) = net_dev_line(&text, CAPTURE_IF)?;
        Ok(Counters {
            gen_tx_packets: gen_tx.0,
            gen_tx_dropped: gen_tx.1,
            cap_rx_packets: cap_rx.0,
            cap_rx_dropped: cap_rx.1,
        })
    }

    /// Sum over RX queues of cap0's `ethtool -S` counters `rx_queue_N_xdp_packets` (frames the
    /// XDP program ran on) and `rx_queue_N_xdp_drops`. Starts a process: call it outside the
    /// measured window.
    pub fn xdp_counters(&self) -> Result<(u64, u64)> {
        let out = run_cmd(self.ns.command("ethtool").args(["-S", CAPTURE_IF]))?;
        Ok(parse_ethtool_xdp(&out))
    }

    /// cap0's `otherhost` counter (`rx_otherhost_dropped` of IFLA_STATS64, which /proc/net/dev
    /// and sysfs lack): frames that got past XDP, tcx and the packet taps into `ip_rcv`, which
    /// drops them because they are for other MACs. So: what the host stack received. Starts a
    /// process: call it outside the measured window.
    pub fn host_rx(&self) -> Result<u64> {
        let out =
            run_cmd(self.ns.command("ip").args(["-s", "-s", "-j", "link", "show", CAPTURE_IF]))?;
        parse_otherhost(&out)
            .with_context(|| format!("`ip -s -s -j link` shows no otherhost counter: {out}"))
    }
}

/// The `"otherhost":N` of `ip -s -s -j link`. iproute2 prints it with the RX errors, and only
/// when it is not 0.
fn parse_otherhost(text: &str) -> Option<u64> {
    let Some(at) = text.find("\"otherhost\":") else {
        return text.contains("\"stats64\":{\"rx\":{").then_some(0);
    };
    let rest = &text[at + "\"otherhost\":".len()..];
    let end = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// ((rx packets, rx drop), (tx packets, tx drop)) of one interface in /proc/net/dev.
fn net_dev_line(text: &str, ifname: &str) -> Result<((u64, u64), (u64, u64))> {
    for line in text.lines() {
        let Some((name, rest)) = line.split_once(':') else { continue };
        if name.trim() != ifname {
            continue;
        }
        let v: Vec<u64> = rest.split_whitespace().filter_map(|f| f.parse().ok()).collect();
        if v.len() < 16 {
            bail!("short /proc/net/dev line: {line:?}");
        }
        // rx: bytes packets errs drop fifo frame compressed multicast; tx: bytes packets errs drop
        return Ok(((v[1], v[3]), (v[9], v[11])));
    }
    bail!("{ifname} is not in the lab's /proc/net/dev")
}

fn parse_ethtool_xdp(text: &str) -> (u64, u64) {
    let mut packets = 0;
    let mut drops = 0;
    for line in text.lines() {
        let Some((key, value)) = line.trim().split_once(':') else { continue };
        let Ok(value) = value.trim().parse::<u64>() else { continue };
        if key.starts_with("rx_queue_") {
            if key.ends_with("_xdp_packets") {
                packets += value;
            } else if key.ends_with("_xdp_drops") {
                drops += value;
            }
        }
    }
    (packets, drops)
}

/// Where the capture files go: a tmpfs of our own (unmounted on drop) or a disk directory.
pub struct OutputFs {
    pub root: PathBuf,
    pub kind: &'static str,
    mounted: bool,
}

impl OutputFs {
    /// Mounts a tmpfs at /run/capbench/PID (PID keeps parallel benchmarks apart).
    pub fn tmpfs(size: &str) -> Result<OutputFs> {
        let root = Path::new("/run/capbench").join(std::process::id().to_string());
        std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
        run_cmd(
            Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0755")])
                .arg(capture_lab::tmpfs_source("capbench"))
                .arg(&root),
        )
        .with_context(|| format!("mounting a tmpfs on {}", root.display()))?;
        Ok(OutputFs { root, kind: "tmpfs", mounted: true })
    }

    /// A directory on the disk that holds the workspace (emptied first).
    pub fn disk(root: PathBuf) -> Result<OutputFs> {
        if root.exists() {
            std::fs::remove_dir_all(&root)
                .with_context(|| format!("emptying {}", root.display()))?;
        }
        std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
        Ok(OutputFs { root, kind: "disk", mounted: false })
    }
}

impl Drop for OutputFs {
    fn drop(&mut self) {
        if self.mounted {
            if let Err(e) = run_cmd(Command::new("umount").arg(&self.root)) {
                eprintln!("bench: failed to unmount {}: {e:#}", self.root.display());
                return;
            }
            let _ = std::fs::remove_dir(&self.root);
            // The parent is shared by concurrent runs: remove it only if it is empty.
            if let Some(parent) = self.root.parent() {
                let _ = std::fs::remove_dir(parent);
            }
        } else {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_net_dev_and_ethtool() -> Result<()> {
        let text = "Inter-|   Receive |  Transmit\n face |bytes packets ...\n\
                    \x20 gen0:     586       7    0    1    0     0          0         0    60586    1007    0    3    0     0       0          0\n\
                    \x20 cap0:   60586    1007    0    2    0     0          0         0      586       7    0    0    0     0       0          0\n";
        assert_eq!(net_dev_line(text, "gen0")?, ((7, 1), (1007, 3)));
        assert_eq!(net_dev_line(text, "cap0")?, ((1007, 2), (7, 0)));
        assert!(net_dev_line(text, "eth0").is_err());
        let ethtool = "NIC statistics:\n     peer_ifindex: 2\n     rx_queue_0_xdp_packets: 10\n     \
                       rx_queue_0_xdp_drops: 4\n     rx_queue_1_xdp_packets: 5\n     rx_queue_1_xdp_drops: 1\n     \
                       tx_queue_0_xdp_xmit: 99\n";
        assert_eq!(parse_ethtool_xdp(ethtool), (15, 5));
        let ip = r#"[{"ifindex":3,"ifname":"cap0","stats64":{"rx":{"bytes":6180,"packets":102,"fifo_errors":0,"missed_errors":0,"otherhost":100},"tx":{"bytes":176}}}]"#;
        assert_eq!(parse_otherhost(ip), Some(100));
        assert_eq!(parse_otherhost(r#"{"stats64":{"rx":{"packets":0}}}"#), Some(0));
        assert_eq!(parse_otherhost(r#"[{"ifname":"cap0"}]"#), None);
        let c = Counters {
            gen_tx_packets: 100,
            gen_tx_dropped: 7,
            cap_rx_packets: 0,
            cap_rx_dropped: 0,
        };
        assert_eq!(c.offered(), 93);
        Ok(())
    }
}
