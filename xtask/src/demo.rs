//! `cargo xtask demo`: the whole product on a lab that fits in one machine.
//!
//! A network namespace holds a veth pair. In tap mode (the default) `cap0` is the hypervisor's
//! live link to a few fake VMs behind `gen0`: the VMs' frames arrive on `cap0` and the host,
//! playing their gateway, answers out of it. The daemon captures two targets (one VM by MAC, one
//! VLAN) in both directions, and the demo checks that every frame still reached the other end
//! (tap mode takes nothing away) and that the files hold exactly the expected frames, with their
//! direction. `--mode mirror` shows the SPAN-port case instead: everything arrives from `gen0`,
//! and the captured frames are taken from the host.

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

const SNAPLEN: u32 = 128;
const VLAN_TARGET: u16 = 200;

/// Which demo targets a frame matches, by the daemon's rules: (MAC target, VLAN target).
fn expected_targets(frame: &[u8], web_mac: [u8; 6]) -> (bool, bool) {
    let mac = frame.len() >= 12 && (frame[0..6] == web_mac || frame[6..12] == web_mac);
    let outer_vid = (frame.len() >= 18
        && matches!(u16::from_be_bytes([frame[12], frame[13]]), 0x8100 | 0x88a8 | 0x9100))
    .then(|| u16::from_be_bytes([frame[14], frame[15]]) & 0x0fff);
    (mac, outer_vid == Some(VLAN_TARGET))
}

fn write_config(path: &Path, pcap_dir: &Path, web: &FakeVm, mode: &str) -> anyhow::Result<()> {
    let interface = if mode == "mirror" {
        "mode = \"mirror\"\nqueues = \"all\"\nxdp_mode = \"native\""
    } else {
        "mode = \"tap\""
    };
    let mac = web.mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":");
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

[[interface]]
name = "cap0"
{interface}

[[target]]
name = "{name}"
mac = "{mac}"

[[target]]
name = "vlan{VLAN_TARGET}"
vlan = {VLAN_TARGET}
"#,
        dir = pcap_dir.display(),
        name = web.name,
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
    eprintln!(
        "lab: namespace {}, capture NIC {} <- traffic from {}",
        ns.name(),
        veth.capture,
        veth.peer
    );

    let vms = default_vms();
    let gateway = default_gateway();
    let web = vms.first().context("no fake VMs")?;
    eprintln!("lab: fake VMs:");
    for vm in vms.iter().chain([&gateway]) {
        let vlan = vm.vlan.map_or_else(|| "untagged".to_owned(), |v| format!("vlan {v}"));
        eprintln!(
            "  {:<10} {} {}",
            vm.name,
            vm.mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":"),
            vlan
        );
    }
    let config = out.join("capture.toml");
    write_config(&config, &pcap_dir, web, &args.mode)?;
    eprintln!(
        "lab: capturing `{}` (by MAC) and `vlan{VLAN_TARGET}` (by VLAN), snaplen {SNAPLEN}",
        web.name
    );

    let mut daemon = start_daemon(&ns, &bin, &config)?;
    let total =
        usize::try_from(args.seconds * args.rate).context("--seconds x --rate is too large")?;
    let frames = vm_traffic(&vms, &gateway, total);
    let tap = args.mode == "tap";
    // Tap mode: the host is the gateway, so its frames leave through cap0; mirror mode: a SPAN
    // port delivers everything to cap0.
    let (from_host, from_vms): (Vec<Vec<u8>>, Vec<Vec<u8>>) =
        frames.iter().cloned().partition(|f| tap && f[6..12] == gateway.mac);
    let burst = 20usize;
    let pause = Duration::from_secs_f64(burst as f64 / args.rate.max(1) as f64);
    eprintln!(
        "lab: sending {} frames over about {} s ({} from the VMs into cap0, {} out of cap0)",
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
    eprintln!(
        "lab: sent {sent} frames in {:.1} s; stopping the daemon",
        started.elapsed().as_secs_f64()
    );

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
    summarize(&pcap_dir, &frames, web, tap.then_some(gateway.mac))
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

/// Reads the files back. `host_mac`, in tap mode: frames from it were sent by the host
/// (outbound), every other one received (inbound).
fn summarize(
    pcap_dir: &Path,
    frames: &[Vec<u8>],
    web: &FakeVm,
    host_mac: Option<[u8; 6]>,
) -> anyhow::Result<()> {
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(pcap_dir)?.filter_map(Result::ok).map(|e| e.path()).collect();
    if let Some(part) = files.iter().find(|f| f.to_string_lossy().ends_with(".part")) {
        bail!("{} was left behind", part.display());
    }
    files.retain(|p| p.extension().is_some_and(|e| e == "pcapng"));
    files.sort();
    eprintln!("\n== files in {}", pcap_dir.display());
    let mut by_target: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    let (mut want_total, mut want_sliced, mut want_out) = (0u64, 0u64, 0u64);
    for f in frames {
        let (mac, vlan) = expected_targets(f, web.mac);
        if (mac || vlan) && host_mac.is_some_and(|m| f[6..12] == m) {
            want_out += 1;
        }
        if mac {
            by_target.entry(web.name.as_str()).or_default().0 += 1;
        }
        if vlan {
            by_target.entry("vlan200").or_default().0 += 1;
        }
        if mac || vlan {
            want_total += 1;
            want_sliced += u64::from(f.len() > SNAPLEN as usize);
        }
    }
    let (mut got_total, mut got_sliced, mut got_in, mut got_out) = (0u64, 0u64, 0u64, 0u64);
    for file in &files {
        let info = tool_output(Command::new("capinfos").args(["-c", "-M"]).arg(file))?;
        let count = info
            .lines()
            .find_map(|l| l.strip_prefix("Number of packets:"))
            .unwrap_or("?")
            .trim()
            .to_owned();
        let size = std::fs::metadata(file)?.len();
        eprintln!(
            "  {}  {size:>9} bytes  {count:>6} frames",
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
            "frame.len",
            "-e",
            "frame.cap_len",
            "-e",
            "frame.packet_flags_direction",
        ]))?;
        let web_mac = web.mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":");
        for line in fields.lines() {
            let cols: Vec<&str> = line.split('|').collect();
            let [src, dst, vlan, len, caplen, direction] = cols[..] else { continue };
            // tshark prints epb_flags' direction in hex: 0x00000001 inbound, 0x00000002 outbound.
            match u32::from_str_radix(direction.trim().trim_start_matches("0x"), 16) {
                Ok(1) => got_in += 1,
                Ok(2) => got_out += 1,
                _ => {}
            }
            // tshark may find more Ethernet layers inside payloads (tunnels, or heuristics on
            // random bytes): the outermost one is the first value.
            let first = |v: &str| v.split(',').next().unwrap_or_default().to_owned();
            let (src, dst) = (first(src), first(dst));
            got_total += 1;
            if src == web_mac || dst == web_mac {
                by_target.entry(web.name.as_str()).or_default().1 += 1;
            }
            if first(vlan) == "200" {
                by_target.entry("vlan200").or_default().1 += 1;
            }
            if len != caplen {
                got_sliced += 1;
            }
        }
    }
    eprintln!("\n== what tshark reads back");
    eprintln!("  {:<10} {:>9} {:>9}", "target", "expected", "captured");
    for (name, (want, got)) in &by_target {
        eprintln!("  {name:<10} {want:>9} {got:>9}");
    }
    eprintln!("  {:<10} {want_total:>9} {got_total:>9}", "all");
    eprintln!(
        "  {:<10} {want_sliced:>9} {got_sliced:>9}   (frames longer than snaplen {SNAPLEN}, kept sliced)",
        "sliced"
    );
    let want_in = want_total - want_out;
    eprintln!("  {:<10} {want_in:>9} {got_in:>9}   (received by cap0)", "inbound");
    eprintln!("  {:<10} {want_out:>9} {got_out:>9}   (sent by cap0)", "outbound");
    if files.is_empty()
        || (got_in, got_out) != (want_in, want_out)
        || got_total != want_total
        || by_target.values().any(|(w, g)| w != g)
        || want_sliced != got_sliced
    {
        bail!("the capture does not hold exactly the expected frames");
    }
    eprintln!(
        "\ndemo OK: every expected frame captured, nothing else. Open the files with Wireshark:"
    );
    eprintln!("  wireshark {}", files.last().map(|f| f.display().to_string()).unwrap_or_default());
    Ok(())
}
