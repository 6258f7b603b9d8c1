//! `cargo xtask demo`: the whole product on a lab that fits in one machine.
//!
//! A network namespace holds a veth pair. In tap mode (the default) `cap0` is the hypervisor's
//! live link to a few fake VMs behind `gen0`: the VMs' frames arrive on `cap0` and the host,
//! playing their gateway, answers out of it. Beside them runs an overlay: VMs of two tenants
//! talk across VXLAN between this host's tunnel endpoint and another hypervisor's, one tenant's
//! VM reusing the other's MAC address (overlays allow that).
//!
//! The daemon captures four targets, in both directions:
//! - `web01`, a VM named through libvirt (its MACs come from the domain's XML), into files of
//!   its own;
//! - `app07`, an overlay VM named through libvirt and its VNI, also into files of its own: only
//!   its tenant's frames, not the other tenant's VM with the same MAC;
//! - `vlan200`, a whole VLAN, into the shared files;
//! - `db02`, a VM that is not on this host (it migrated away): it captures nothing, and
//!   `status` says it is absent.
//!
//! libvirt here is its test driver (`test:///…/node.xml`, a real libvirt connection that needs
//! no daemon), describing the fake VMs. The demo checks that every frame still reached the
//! other end (tap mode takes nothing away) and that each stream of files holds exactly the
//! frames of its targets, with their direction and the per-packet target comment.
//! `--mode mirror` shows the SPAN-port case instead: everything arrives from `gen0`, and the
//! captured frames are taken from the host.

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use capture_lab::{
    FakeVm, NetNs, Pace, RawSender, Receiver, VethPair, default_gateway, default_vms, vm_traffic,
};

#[derive(clap::Args)]
pub struct Args {
    /// How long to send traffic for.
    #[arg(long, default_value_t = 8)]
    seconds: u64,
    /// Frames per second sent by the fake VMs together.
    #[arg(long, default_value_t = 2000)]
    rate: u64,
    /// Where the config and the pcapng files go (emptied first).
    #[arg(long, default_value = "lab-output")]
    out: PathBuf,
    /// tap: capture a live link, both directions, nothing taken away; mirror: a SPAN-fed NIC.
    #[arg(long, default_value = "tap", value_parser = ["tap", "mirror"])]
    mode: String,
}

impl Args {
    /// A short run into `target/demo-MODE`, for `cargo xtask test`.
    pub fn short(mode: &str) -> Args {
        Args {
            seconds: 2,
            rate: 2000,
            out: PathBuf::from(format!("target/demo-{mode}")),
            mode: mode.to_owned(),
        }
    }
}

const SNAPLEN: u32 = 128;
const VLAN_TARGET: u16 = 200;
/// The overlay: the VNI of `app07`'s tenant, and of the other tenant's network.
const VNI_TARGET: u32 = 5001;
const VNI_OTHER: u32 = 5002;
const VXLAN_PORT: u16 = 4789;
/// A VM configured by name that is not on this host.
const ABSENT_VM: &str = "db02";

/// The overlay VMs: `app07` (the target, VNI 5001) and its peer on the other hypervisor; on
/// VNI 5002 another tenant's VM with the same MAC as `app07`.
fn overlay_vms() -> (FakeVm, FakeVm) {
    let app07 = FakeVm::new("app07", [0x52, 0x54, 0, 0, 0x07, 0x07], [192, 168, 7, 7], None);
    let peer = FakeVm::new("app08", [0x52, 0x54, 0, 0, 0x07, 0x08], [192, 168, 7, 8], None);
    (app07, peer)
}

/// The tunnel endpoints: this host's (on cap0, answering as the gateway does) and the other
/// hypervisor's, behind gen0.
const LOCAL_VTEP: [u8; 4] = [10, 0, 0, 1];
const REMOTE_VTEP: [u8; 4] = [10, 0, 0, 2];
const REMOTE_VTEP_MAC: [u8; 6] = [0x52, 0x54, 0, 0, 0, 0x02];

/// `inner` inside VXLAN (RFC 7348: I flag, 24-bit VNI) inside UDP/IPv4 between the two
/// tunnel endpoints; `outbound`: sent by this host.
fn vxlan(inner: &[u8], vni: u32, outbound: bool, local_mac: [u8; 6]) -> Vec<u8> {
    let mut payload = Vec::with_capacity(8 + inner.len());
    payload.extend_from_slice(&[0x08, 0, 0, 0]);
    payload.extend_from_slice(&(vni << 8).to_be_bytes());
    payload.extend_from_slice(inner);
    // The source port spreads flows, as Linux's vxlan device does (from the inner frame).
    let sport = 49152 + (u16::from(inner[11]) << 4 | u16::from(inner[5] & 0x0f));
    let (src, dst, smac, dmac) = if outbound {
        (LOCAL_VTEP, REMOTE_VTEP, local_mac, REMOTE_VTEP_MAC)
    } else {
        (REMOTE_VTEP, LOCAL_VTEP, REMOTE_VTEP_MAC, local_mac)
    };
    capture_lab::Frame::ethernet(dmac, smac).ipv4_udp(src, dst, sport, VXLAN_PORT, &payload)
}

/// The overlay's traffic: `count` frames of each tenant, `app07`'s own (VNI 5001) and the
/// other tenant's VM with `app07`'s MAC (VNI 5002). A frame from `app07` (or its twin) leaves
/// through this host's tunnel endpoint.
fn overlay_traffic(count: usize, local_mac: [u8; 6]) -> Vec<Vec<u8>> {
    let (app07, peer) = overlay_vms();
    let mine = vm_traffic(std::slice::from_ref(&app07), &peer, count);
    let theirs = capture_lab::vm_traffic_seeded(std::slice::from_ref(&app07), &peer, count, 7);
    let mut out = Vec::with_capacity(2 * count);
    for (a, b) in mine.iter().zip(&theirs) {
        out.push(vxlan(a, VNI_TARGET, a[6..12] == app07.mac, local_mac));
        out.push(vxlan(b, VNI_OTHER, b[6..12] == app07.mac, local_mac));
    }
    out
}

/// The targets a frame matches, by the daemon's rules.
struct Expect {
    web: [u8; 6],
    app: [u8; 6],
}

impl Expect {
    fn targets(&self, f: &[u8]) -> Vec<&'static str> {
        let mut t = Vec::new();
        let macs = |f: &[u8], m: [u8; 6]| f.len() >= 12 && (f[0..6] == m || f[6..12] == m);
        if macs(f, self.web) {
            t.push("web01");
        }
        let outer_vid = (f.len() >= 18
            && matches!(u16::from_be_bytes([f[12], f[13]]), 0x8100 | 0x88a8 | 0x9100))
        .then(|| u16::from_be_bytes([f[14], f[15]]) & 0x0fff);
        if outer_vid == Some(VLAN_TARGET) {
            t.push("vlan200");
        }
        // Untagged IPv4 (IHL 5) UDP to the VXLAN port with the I flag: the inner frame at 50.
        let vxlan = f.len() >= 64
            && f[12..14] == [0x08, 0x00]
            && f[14] == 0x45
            && f[23] == 17
            && f[36..38] == VXLAN_PORT.to_be_bytes()
            && f[42] & 0x08 != 0;
        if vxlan
            && u32::from_be_bytes([0, f[46], f[47], f[48]]) == VNI_TARGET
            && macs(&f[50..], self.app)
        {
            t.push("app07");
        }
        t
    }
}

/// Where each target's frames go: its own stream, or (None) the shared one.
fn own_stream(target: &str) -> Option<&str> {
    matches!(target, "web01" | "app07").then_some(target)
}

/// libvirt's test driver: a node of domains (running unless they say otherwise), each with its
/// interfaces' MACs and tap devices, as `virsh dumpxml` shows them.
fn write_libvirt_node(path: &Path, vms: &[(&str, [u8; 6], &str)]) -> anyhow::Result<()> {
    let mut xml = String::from("<node>\n");
    for (name, mac, tap) in vms {
        let mac = capture_lab::format_mac(*mac);
        xml.push_str(&format!(
            "  <domain type='test'>\n    <name>{name}</name>\n    <memory>65536</memory>\n    \
             <os><type>hvm</type></os>\n    <devices>\n      <interface type='ethernet'>\n        \
             <mac address='{mac}'/>\n        <target dev='{tap}'/>\n      </interface>\n    \
             </devices>\n  </domain>\n"
        ));
    }
    xml.push_str("</node>\n");
    std::fs::write(path, xml).with_context(|| format!("writing {}", path.display()))
}

fn write_config(path: &Path, pcap_dir: &Path, node: &Path, mode: &str) -> anyhow::Result<()> {
    let interface = if mode == "mirror" {
        "mode = \"mirror\"\nqueues = \"all\"\nxdp_mode = \"native\""
    } else {
        "mode = \"tap\""
    };
    let text = format!(
        r#"# Written by `cargo xtask demo`.
[capture]
unmatched = "pass"
snaplen = {SNAPLEN}

[output]
directory = "{dir}"
prefix = "demo"
rotate_bytes = "1 MiB"
rotate_seconds = 3
keep_files = 50

# libvirt's test driver, describing the lab's VMs (a real libvirt connection, no daemon).
[libvirt]
uri = "test://{node}"

[[interface]]
name = "cap0"
{interface}

# A VM by its libvirt name: its MACs come from libvirt. Its frames go into files of its own.
[[target]]
name = "web01"
vm = "web01"
output = "own"

# An overlay VM: its MACs from libvirt, matched inside VXLAN/Geneve with its tenant's VNI.
[[target]]
name = "app07"
vm = "app07"
vni = {VNI_TARGET}
output = "own"

# A whole VLAN, into the shared files.
[[target]]
name = "vlan{VLAN_TARGET}"
vlan = {VLAN_TARGET}

# A VM that is not on this host now: it captures nothing until it migrates here.
[[target]]
name = "{ABSENT_VM}"
vm = "{ABSENT_VM}"
output = "own"
"#,
        dir = pcap_dir.display(),
        node = node.display(),
    );
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// Starts the daemon in the namespace and waits until it says it is capturing.
fn start_daemon(ns: &NetNs, bin: &Path, config: &Path) -> anyhow::Result<Child> {
    let mut child = ns
        .command(bin.to_str().context("daemon path is not UTF-8")?)
        .args(["run", "--config"])
        .arg(config)
        .stderr(Stdio::piped())
        .spawn()
        .context("starting capture-daemon")?;
    let stderr = child.stderr.take().context("daemon stderr")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("  daemon | {line}");
            if line.contains("capturing on") {
                let _ = tx.send(());
            }
        }
    });
    if rx.recv_timeout(Duration::from_secs(20)).is_err() {
        let _ = child.kill();
        bail!("capture-daemon did not start capturing within 20 s (see its log above)");
    }
    Ok(child)
}

fn tool_output(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub fn demo(args: &Args) -> anyhow::Result<()> {
    capture_lab::require_root().context("the demo creates a network namespace and attaches XDP")?;
    crate::remove_leftovers()?;
    for tool in ["tshark", "capinfos"] {
        if !capture_lab::tool_available(tool) {
            bail!("{tool} not found: run scripts/bootstrap.sh (or ./x.sh demo, which does)");
        }
    }
    let bin = crate::build_daemon()?;
    let out = crate::workspace_root().join(&args.out);
    let pcap_dir = out.join("pcap");
    if pcap_dir.exists() {
        std::fs::remove_dir_all(&pcap_dir)
            .with_context(|| format!("emptying {}", pcap_dir.display()))?;
    }
    std::fs::create_dir_all(&out)?;

    let ns = NetNs::create("capdemo")?;
    let veth = VethPair::create(&ns, "cap0", "gen0", 2)?;
    // The link is also the overlay's underlay: VXLAN adds 50 bytes to a full 1514-byte inner
    // frame, so it needs the 1600 an admin gives a tunnel-carrying uplink.
    for end in [&veth.capture, &veth.peer] {
        ns.set_mtu(end, 1600)?;
    }
    eprintln!(
        "lab: namespace {}, capture NIC {} <- traffic from {}",
        ns.name(),
        veth.capture,
        veth.peer
    );

    let vms = default_vms();
    let gateway = default_gateway();
    let web = vms.first().context("no fake VMs")?;
    let (app07, _) = overlay_vms();
    eprintln!("lab: fake VMs:");
    for vm in vms.iter().chain([&gateway]) {
        let vlan = vm.vlan.map_or_else(|| "untagged".to_owned(), |v| format!("vlan {v}"));
        eprintln!("  {:<10} {} {}", vm.name, capture_lab::format_mac(vm.mac), vlan);
    }
    eprintln!(
        "  {:<10} {} VXLAN VNI {VNI_TARGET}, and another tenant's VM with the same MAC on VNI {VNI_OTHER}",
        app07.name,
        capture_lab::format_mac(app07.mac)
    );
    // libvirt knows this host's VMs; db02 is not among them. (Not `vnetN`: libvirt takes that
    // prefix as its own and renames such taps, so `check` would not show these.)
    let node = out.join("libvirt-node.xml");
    let mut domains: Vec<(&str, [u8; 6], String)> = (vms.iter().enumerate())
        .map(|(i, vm)| (vm.name.as_str(), vm.mac, format!("tap{i}")))
        .collect();
    domains.push((app07.name.as_str(), app07.mac, "tap7".to_owned()));
    let domains: Vec<(&str, [u8; 6], &str)> =
        domains.iter().map(|(n, m, t)| (*n, *m, t.as_str())).collect();
    write_libvirt_node(&node, &domains)?;
    let config = out.join("capture.toml");
    write_config(&config, &pcap_dir, &node, &args.mode)?;
    eprintln!(
        "lab: capturing `web01` and `app07` by their libvirt names (each into files of its own), \
         `vlan{VLAN_TARGET}` by VLAN, and `{ABSENT_VM}`, a VM not on this host; snaplen {SNAPLEN}"
    );
    eprintln!("\n== capture-daemon check");
    let check = ns
        .command(bin.to_str().context("daemon path is not UTF-8")?)
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .context("running capture-daemon check")?;
    for line in String::from_utf8_lossy(&check.stdout).lines() {
        eprintln!("  {line}");
    }
    if !check.status.success() {
        bail!("capture-daemon check failed: {}", String::from_utf8_lossy(&check.stderr));
    }

    let mut daemon = start_daemon(&ns, &bin, &config)?;
    let total =
        usize::try_from(args.seconds * args.rate).context("--seconds x --rate is too large")?;
    let mut frames = vm_traffic(&vms, &gateway, total);
    // An eighth of the frames are the overlay's, interleaved.
    let overlay = overlay_traffic(total / 16, gateway.mac);
    let every = (frames.len() / overlay.len().max(1)).max(1);
    for (i, f) in overlay.into_iter().enumerate() {
        let at = ((i + 1) * every + i).min(frames.len());
        frames.insert(at, f);
    }
    let tap = args.mode == "tap";
    // Tap mode: the host is the gateway and a tunnel endpoint, so its frames leave through
    // cap0; mirror mode: a SPAN port delivers everything to cap0.
    let (from_host, from_vms): (Vec<Vec<u8>>, Vec<Vec<u8>>) =
        frames.iter().cloned().partition(|f| tap && f[6..12] == gateway.mac);
    let burst = 20usize;
    let pause = Duration::from_secs_f64(burst as f64 / args.rate.max(1) as f64);
    eprintln!(
        "\nlab: sending {} frames over about {} s ({} from the VMs into cap0, {} out of cap0)",
        frames.len(),
        args.seconds,
        from_vms.len(),
        from_host.len()
    );
    let started = Instant::now();
    let sent = send_both_ways(&ns, &veth, &from_vms, &from_host, Pace { burst, pause });
    let (sent, arrived) = match sent {
        Ok(r) => r,
        Err(e) => {
            // Dropping a Child does not end it: the daemon must not outlive the demo.
            let _ = daemon.kill();
            let _ = daemon.wait();
            return Err(e);
        }
    };
    eprintln!("lab: sent {sent} frames in {:.1} s", started.elapsed().as_secs_f64());
    eprintln!("\n== capture-daemon status");
    match ns
        .command(bin.to_str().unwrap_or_default())
        .args(["status", "--config"])
        .arg(&config)
        .output()
    {
        Ok(out) => {
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                eprintln!("  {line}");
            }
        }
        Err(e) => eprintln!("  (status failed: {e})"),
    }
    eprintln!("\nlab: stopping the daemon");

    // SAFETY: signalling our own child.
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    let status = daemon.wait()?;
    if !status.success() {
        bail!("capture-daemon exited with {status}");
    }
    drop(veth);
    drop(ns);

    if tap {
        check_nothing_lost(&from_vms, &from_host, &arrived)?;
    }
    let expect = Expect { web: web.mac, app: app07.mac };
    summarize(&pcap_dir, &frames, &expect, tap.then_some(gateway.mac))
}

/// What each end received: (at cap0 from the VMs, at gen0 from the host).
type Arrived = (Vec<Vec<u8>>, Vec<Vec<u8>>);

/// Sends `from_vms` out of gen0 and `from_host` out of cap0 at the same time, each end
/// listening for what the other sends. Returns the frames sent and what arrived.
fn send_both_ways(
    ns: &NetNs,
    veth: &VethPair,
    from_vms: &[Vec<u8>],
    from_host: &[Vec<u8>],
    pace: Pace,
) -> anyhow::Result<(u64, Arrived)> {
    let at_host = ns.run(|| Receiver::open(&veth.capture))?;
    let at_vms = ns.run(|| Receiver::open(&veth.peer))?;
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| ns.run(|| RawSender::open(&veth.peer)?.send_all(from_vms, pace)));
        let b = s.spawn(|| ns.run(|| RawSender::open(&veth.capture)?.send_all(from_host, pace)));
        (a.join(), b.join())
    });
    let sent = a.map_err(|_| anyhow::anyhow!("sender panicked"))??
        + b.map_err(|_| anyhow::anyhow!("sender panicked"))??;
    // Let the last frames land.
    std::thread::sleep(Duration::from_millis(300));
    Ok((sent, (at_host.drain(), at_vms.drain())))
}

/// The frame without its outer VLAN tag: how a packet socket reads a received frame (the
/// kernel keeps the tag apart).
fn untagged(f: &[u8]) -> Vec<u8> {
    if f.len() >= 18 && matches!(u16::from_be_bytes([f[12], f[13]]), 0x8100 | 0x88a8) {
        [&f[..12], &f[16..]].concat()
    } else {
        f.to_vec()
    }
}

/// Tap mode's promise: every frame sent reached the other end while it was captured.
fn check_nothing_lost(
    from_vms: &[Vec<u8>],
    from_host: &[Vec<u8>],
    (at_host, at_vms): &Arrived,
) -> anyhow::Result<()> {
    let count = |frames: &[Vec<u8>], got: &[Vec<u8>]| {
        let mut want: BTreeMap<Vec<u8>, i64> = BTreeMap::new();
        for f in frames {
            *want.entry(untagged(f)).or_default() += 1;
        }
        let mut arrived = 0u64;
        for f in got {
            if let Some(n) = want.get_mut(f)
                && *n > 0
            {
                *n -= 1;
                arrived += 1;
            }
        }
        arrived
    };
    let host = count(from_vms, at_host);
    let vms = count(from_host, at_vms);
    eprintln!("\n== did the traffic get through while it was captured?");
    eprintln!("  VMs  -> host (into cap0):  {host:>6} of {:>6} arrived", from_vms.len());
    eprintln!("  host -> VMs  (out of cap0): {vms:>6} of {:>6} arrived", from_host.len());
    if host != from_vms.len() as u64 || vms != from_host.len() as u64 {
        bail!("frames were lost on their way while the capture ran");
    }
    Ok(())
}

/// The stream a file belongs to, from its name: `demo_{seq}_{time}.pcapng` is the shared
/// stream (None), `demo_{target}_{seq}_{time}.pcapng` the target's own.
fn stream_of(file: &Path) -> Option<String> {
    let stem = file.file_stem()?.to_str()?;
    let mut parts = stem.rsplitn(3, '_');
    let (_time, _seq, rest) = (parts.next()?, parts.next()?, parts.next()?);
    rest.strip_prefix("demo_").map(str::to_owned)
}

/// Reads the files back. `host_mac`, in tap mode: frames from it were sent by the host
/// (outbound), every other one received (inbound).
fn summarize(
    pcap_dir: &Path,
    frames: &[Vec<u8>],
    expect: &Expect,
    host_mac: Option<[u8; 6]>,
) -> anyhow::Result<()> {
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(pcap_dir)?.filter_map(Result::ok).map(|e| e.path()).collect();
    if let Some(part) = files.iter().find(|f| f.to_string_lossy().ends_with(".part")) {
        bail!("{} was left behind", part.display());
    }
    files.retain(|p| p.extension().is_some_and(|e| e == "pcapng"));
    files.sort();
    // (stream, target) -> (expected, captured); stream "" is the shared one.
    let mut table: BTreeMap<(String, &str), (u64, u64)> = BTreeMap::new();
    let mut want: BTreeMap<String, u64> = BTreeMap::new();
    let (mut want_sliced, mut want_out) = (0u64, 0u64);
    for f in frames {
        let targets = expect.targets(f);
        if targets.is_empty() {
            continue;
        }
        let mut streams: Vec<String> =
            targets.iter().map(|t| own_stream(t).unwrap_or_default().to_owned()).collect();
        streams.sort();
        streams.dedup();
        // A frame goes into each of its targets' streams: one record in each.
        for stream in &streams {
            *want.entry(stream.clone()).or_default() += 1;
            want_out += u64::from(host_mac.is_some_and(|m| f[6..12] == m));
            want_sliced += u64::from(f.len() > SNAPLEN as usize);
        }
        for t in &targets {
            table.entry((own_stream(t).unwrap_or_default().to_owned(), t)).or_default().0 += 1;
        }
    }
    eprintln!("\n== files in {}", pcap_dir.display());
    let mut got: BTreeMap<String, u64> = BTreeMap::new();
    let (mut got_sliced, mut got_in, mut got_out, mut bad_comments) = (0u64, 0u64, 0u64, 0u64);
    let (web_mac, app_mac) =
        (capture_lab::format_mac(expect.web), capture_lab::format_mac(expect.app));
    for file in &files {
        let stream = stream_of(file).unwrap_or_default();
        let info = tool_output(Command::new("capinfos").args(["-c", "-M"]).arg(file))?;
        let count = info
            .lines()
            .find_map(|l| l.strip_prefix("Number of packets:"))
            .unwrap_or("?")
            .trim()
            .to_owned();
        let size = std::fs::metadata(file)?.len();
        eprintln!(
            "  {:<44} {size:>9} bytes  {count:>6} frames",
            file.file_name().unwrap_or_default().to_string_lossy()
        );
        let fields = tool_output(Command::new("tshark").args(["-r"]).arg(file).args([
            "-T",
            "fields",
            "-E",
            "separator=|",
            "-e",
            "eth.src",
            "-e",
            "eth.dst",
            "-e",
            "vlan.id",
            "-e",
            "vxlan.vni",
            "-e",
            "frame.len",
            "-e",
            "frame.cap_len",
            "-e",
            "frame.packet_flags_direction",
            "-e",
            "frame.comment",
        ]))?;
        for line in fields.lines() {
            let cols: Vec<&str> = line.split('|').collect();
            let [src, dst, vlan, vni, len, caplen, direction, comment] = cols[..] else { continue };
            // tshark prints epb_flags' direction in hex: 0x00000001 inbound, 0x00000002 outbound.
            match u32::from_str_radix(direction.trim().trim_start_matches("0x"), 16) {
                Ok(1) => got_in += 1,
                Ok(2) => got_out += 1,
                _ => {}
            }
            // Several Ethernet layers where tshark decodes a tunnel: outer first, then inner.
            let nth = |v: &str, n: usize| v.split(',').nth(n).unwrap_or_default().to_owned();
            *got.entry(stream.clone()).or_default() += 1;
            let mut targets = Vec::new();
            if nth(src, 0) == web_mac || nth(dst, 0) == web_mac {
                targets.push("web01");
            }
            if nth(vlan, 0) == "200" {
                targets.push("vlan200");
            }
            if nth(vni, 0) == VNI_TARGET.to_string()
                && (nth(src, 1) == app_mac || nth(dst, 1) == app_mac)
            {
                targets.push("app07");
            }
            for t in &targets {
                if own_stream(t).unwrap_or_default() == stream {
                    table.entry((stream.clone(), t)).or_default().1 += 1;
                }
            }
            // Each record names exactly the targets it matched, in config order.
            let named: Vec<&str> =
                ["web01", "app07", "vlan200"].into_iter().filter(|t| targets.contains(t)).collect();
            let expected = format!("targets: {}", named.join(", "));
            if comment != expected {
                bad_comments += 1;
            }
            if len != caplen {
                got_sliced += 1;
            }
        }
    }
    eprintln!("\n== what tshark reads back");
    eprintln!("  {:<14} {:<10} {:>9} {:>9}", "files", "target", "expected", "captured");
    for ((stream, target), (w, g)) in &table {
        let files = if stream.is_empty() { "shared" } else { stream.as_str() };
        eprintln!("  {files:<14} {target:<10} {w:>9} {g:>9}");
    }
    eprintln!(
        "  {:<14} {:<10} {:>9} {:>9}",
        "",
        ABSENT_VM,
        0,
        got.get(ABSENT_VM).copied().unwrap_or(0)
    );
    let want_total: u64 = want.values().sum();
    let got_total: u64 = got.values().sum();
    eprintln!("  {:<14} {:<10} {want_total:>9} {got_total:>9}", "all", "");
    eprintln!(
        "  {:<25} {want_sliced:>9} {got_sliced:>9}   (longer than snaplen {SNAPLEN}, kept sliced)",
        "sliced"
    );
    let want_in = want_total - want_out;
    eprintln!("  {:<25} {want_in:>9} {got_in:>9}   (received by cap0)", "inbound");
    eprintln!("  {:<25} {want_out:>9} {got_out:>9}   (sent by cap0)", "outbound");
    eprintln!(
        "  {:<25} {:>9} {bad_comments:>9}   (records whose comment is not their targets)",
        "comments", 0
    );
    if files.is_empty()
        || want != got
        || table.values().any(|(w, g)| w != g)
        || want_sliced != got_sliced
        || bad_comments != 0
        || (host_mac.is_some() && (got_in, got_out) != (want_in, want_out))
    {
        bail!("the capture does not hold exactly the expected frames");
    }
    eprintln!(
        "\ndemo OK: every expected frame captured, each in its target's files, nothing else. \
         Open the files with Wireshark, e.g. app07's:"
    );
    let app_file = files.iter().rfind(|f| stream_of(f).as_deref() == Some("app07"));
    eprintln!(
        "  wireshark {}",
        app_file.or(files.last()).map(|f| f.display().to_string()).unwrap_or_default()
    );
    eprintln!(
        "  (in a shared file, `frame.comment matches \"(^targets: |, )vlan200(,|$)\"` selects one \
         target)"
    );
    Ok(())
}
