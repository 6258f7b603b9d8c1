//! `cargo xtask bench`: capture-daemon (mirror and tap mode) side by side with tcpdump, dumpcap,
//! netsniff-ng and an XDP_DROP ceiling, on the same traffic through a veth pair, plus what each
//! RX hook costs the host; and `bench writer`, the offline pcapng writer benchmark. How to run
//! it and what each number means: docs/bench.md.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use capture_lab::{
    BENCH_TARGET_MAC, BlastConfig, BlastReport, Blaster, FrameSet, Limit, trafgen_config,
};

mod json;
mod lab;
mod perf;
mod proc;
mod report;
mod writer;

use lab::{Counters, GENERATOR_IF, Lab, OutputFs};
use proc::{Measured, check_stop};

/// The generator runs here; veth's XDP and softirq work runs here too (see docs/bench.md).
const GEN_CPU: usize = 0;
/// The capture tool (all its threads) runs here.
const CAPTURE_CPU: usize = 1;
/// The libpcap filter the packet-socket tools get: the same frames as the daemon's target.
const FILTER: &str = "ether host 52:54:00:00:00:0a";
/// A MAC that never occurs: the target of the XDP_DROP ceiling and of the hook-cost tools.
const NEVER_MAC: &str = "02:00:00:00:00:01";
/// tcpdump's filter for the hook cost: evaluated on every frame, matches none.
const NEVER_FILTER: &str = "ether host 02:00:00:00:00:01";
/// The haystack load: one frame in this many is the captured VM's (1 %).
pub const HAYSTACK_ONE_IN: u64 = 100;

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    #[command(subcommand)]
    mode: Option<Mode>,
    #[command(flatten)]
    capture: CaptureArgs,
}

#[derive(clap::Subcommand)]
enum Mode {
    /// Live capture through a veth pair, every tool on the same traffic (the default).
    Capture(CaptureArgs),
    /// The offline pcapng writer benchmark (the capture-daemon example `writer_bench`).
    Writer(writer::Args),
}

#[derive(clap::Args, Clone)]
pub struct CaptureArgs {
    /// Smoke run: 1 repetition, 1 s runs, 64 B frames only.
    #[arg(long)]
    quick: bool,
    /// Repetitions of each (tool, frame set, snaplen, load) combination.
    #[arg(long, default_value_t = 5)]
    reps: u32,
    /// Seconds of traffic per run.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// After the traffic stops, how long every tool gets to write out what it holds before it
    /// is told to stop (tcpdump and dumpcap hand over partly filled ring blocks only after up to
    /// 1 s).
    #[arg(long, default_value_t = 1200)]
    drain_ms: u64,
    /// Loads (comma-separated): `max` (generator flat out), `fixed` (--rate pps of 64 B frames),
    /// `haystack` (as fixed, 1 % of the frames match), `hook` (flat out 64 B, RX hooks that
    /// capture nothing, against no hook); `both` = max,fixed.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "both")]
    load: Vec<LoadArg>,
    /// Packet rate of the `fixed` and `haystack` loads.
    #[arg(long, default_value_t = 150_000)]
    rate: u64,
    /// Frame sets for the `max` load (comma-separated): 64, imix, 1514.
    #[arg(long, value_delimiter = ',', value_parser = FrameSet::parse,
          default_value = "64,imix,1514")]
    frames: Vec<FrameSet>,
    /// Snaplens (comma-separated; 0 = whole frames).
    #[arg(long, value_delimiter = ',', default_value = "0,128")]
    snaplen: Vec<u32>,
    /// Tools (comma-separated). The generator-only baseline always runs.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "capture-daemon,capture-daemon-tap,tcpdump,dumpcap,netsniff-ng,xdp-drop"
    )]
    tools: Vec<Tool>,
    /// RX queues of cap0 (1 or 2); with 2, two generator threads on CPU 0 and 1.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=2))]
    queues: u32,
    /// Where the tools write: a private tmpfs under /run/capbench, or target/bench/disk.
    #[arg(long, value_enum, default_value_t = FsArg::Tmpfs)]
    fs: FsArg,
    /// Which program sends the traffic.
    #[arg(long, value_enum, default_value_t = GeneratorArg::Own)]
    generator: GeneratorArg,
    /// capture-daemon's `unmatched` (what XDP does with frames of no target): `pass` like a
    /// host NIC, `drop` like a NIC dedicated to a SPAN port.
    #[arg(long, value_enum, default_value_t = UnmatchedArg::Pass)]
    unmatched: UnmatchedArg,
    /// Frames per sendmmsg of the built-in generator.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Seed of the run order (default: from the clock; printed either way).
    #[arg(long)]
    seed: Option<u64>,
    /// Size of the tmpfs.
    #[arg(long, default_value = "8g")]
    tmpfs_size: String,
    /// After the measured runs, one more run per row with `perf record -g` on the tool's pid and
    /// on the whole machine; files in target/bench/perf/ (not in the summary).
    #[arg(long)]
    perf: bool,
}

impl CaptureArgs {
    /// The loads to run, in table order.
    fn loads(&self) -> Vec<Load> {
        let mut loads: Vec<Load> = self
            .load
            .iter()
            .flat_map(|l| match l {
                LoadArg::Max => &[Load::Max][..],
                LoadArg::Fixed => &[Load::Fixed],
                LoadArg::Haystack => &[Load::Haystack],
                LoadArg::Hook => &[Load::Hook],
                LoadArg::Both => &[Load::Max, Load::Fixed],
            })
            .copied()
            .collect();
        loads.sort();
        loads.dedup();
        loads
    }
}

#[derive(clap::ValueEnum, Clone, Copy, PartialEq, Eq)]
enum LoadArg {
    Max,
    Fixed,
    Haystack,
    Hook,
    Both,
}

#[derive(clap::ValueEnum, Clone, Copy, PartialEq, Eq)]
enum FsArg {
    Tmpfs,
    Disk,
}

#[derive(clap::ValueEnum, Clone, Copy, PartialEq, Eq)]
enum GeneratorArg {
    Own,
    Trafgen,
}

#[derive(clap::ValueEnum, Clone, Copy, PartialEq, Eq)]
enum UnmatchedArg {
    Pass,
    Drop,
}

impl UnmatchedArg {
    fn name(self) -> &'static str {
        match self {
            UnmatchedArg::Pass => "pass",
            UnmatchedArg::Drop => "drop",
        }
    }
}

#[derive(clap::ValueEnum, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub enum Tool {
    /// The generator alone: no capture tool, no XDP program (what the others are measured against).
    #[value(skip)]
    Baseline,
    /// capture-daemon in mirror mode (XDP -> AF_XDP; matched frames leave the host's path).
    CaptureDaemon,
    /// capture-daemon in tap mode (tcx ingress + egress copy into BPF ring buffers).
    CaptureDaemonTap,
    Tcpdump,
    Dumpcap,
    NetsniffNg,
    /// capture-daemon with a target that never matches and `unmatched = "drop"`.
    XdpDrop,
    /// Hook load: capture-daemon's tap programs attached, a target that never matches.
    #[value(skip)]
    TapNoMatch,
    /// Hook load: capture-daemon in mirror mode, a target that never matches, `unmatched = "pass"`.
    #[value(skip)]
    XdpPass,
    /// Hook load: tcpdump with a filter that never matches.
    #[value(skip)]
    TcpdumpNoMatch,
}

/// What the `hook` load runs besides the generator alone, whatever --tools says.
const HOOK_TOOLS: [Tool; 3] = [Tool::TapNoMatch, Tool::XdpPass, Tool::TcpdumpNoMatch];

impl Tool {
    pub fn name(self) -> &'static str {
        match self {
            Tool::Baseline => "generator-only",
            Tool::CaptureDaemon => "capture-daemon",
            Tool::CaptureDaemonTap => "capture-daemon-tap",
            Tool::Tcpdump => "tcpdump",
            Tool::Dumpcap => "dumpcap",
            Tool::NetsniffNg => "netsniff-ng",
            Tool::XdpDrop => "xdp-drop",
            Tool::TapNoMatch => "tap-nomatch",
            Tool::XdpPass => "xdp-pass",
            Tool::TcpdumpNoMatch => "tcpdump-nomatch",
        }
    }

    /// Whether the tool writes a capture file (so that snaplen matters).
    fn captures(self) -> bool {
        matches!(
            self,
            Tool::CaptureDaemon
                | Tool::CaptureDaemonTap
                | Tool::Tcpdump
                | Tool::Dumpcap
                | Tool::NetsniffNg
        )
    }

    /// capture-daemon's `mode` for the tools that are capture-daemon.
    pub fn daemon_mode(self) -> Option<&'static str> {
        match self {
            Tool::CaptureDaemon | Tool::XdpDrop | Tool::XdpPass => Some("mirror"),
            Tool::CaptureDaemonTap | Tool::TapNoMatch => Some("tap"),
            _ => None,
        }
    }

    /// Where the tool takes frames from the receive path.
    pub fn rx_hook(self) -> Option<&'static str> {
        match self.daemon_mode() {
            Some("mirror") => Some("xdp"),
            Some(_) => Some("tcx"),
            None if self == Tool::Baseline => None,
            None => Some("packet socket"),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub enum Load {
    Max,
    Fixed,
    Haystack,
    Hook,
}

impl Load {
    pub fn name(self) -> &'static str {
        match self {
            Load::Max => "max",
            Load::Fixed => "fixed",
            Load::Haystack => "haystack",
            Load::Hook => "hook",
        }
    }

    /// One frame in this many matches the target.
    pub fn one_in(self) -> u64 {
        if self == Load::Haystack { HAYSTACK_ONE_IN } else { 2 }
    }

    /// The generator's rate limit: None = flat out.
    fn rate(self, fixed_rate: u64) -> Option<u64> {
        match self {
            Load::Max | Load::Hook => None,
            Load::Fixed | Load::Haystack => Some(fixed_rate),
        }
    }
}

/// One run to do.
#[derive(Clone, Copy, Debug)]
pub struct Job {
    pub load: Load,
    pub frames: FrameSet,
    /// None for the tools that write nothing (baseline, xdp-drop).
    pub snaplen: Option<u32>,
    pub tool: Tool,
    pub rep: u32,
}

/// What one run measured: the raw numbers, written to runs.jsonl as they are.
#[derive(Debug, Clone, Default)]
pub struct RunRecord {
    pub index: usize,
    pub elapsed_s: f64,
    pub gen_sent: u64,
    pub gen_errors: u64,
    pub counters: Counters,
    /// `ethtool -S cap0` deltas (XDP runs only).
    pub xdp_packets: Option<u64>,
    pub xdp_drops: Option<u64>,
    /// cap0's `otherhost` drops (`ip -s -s link`): frames that got through every hook to the
    /// IP stack, which drops them there because they are for other hosts' MACs.
    pub host_rx: Option<u64>,
    /// Frames in the capture file(s), by capinfos.
    pub captured: Option<u64>,
    /// capture-daemon's own count ("written N" of its last log line), and "seen N".
    pub daemon_written: Option<u64>,
    pub daemon_seen: Option<u64>,
    /// Drops the tool reports itself (tcpdump "dropped by kernel", dumpcap's dropped, netsniff-ng
    /// "failed filter (out of space)", capture-daemon "kernel + writer-queue").
    pub tool_drops: Option<u64>,
    pub system_cpu_ns: u64,
    /// Of `system_cpu_ns`: irq + softirq time (charged to no process).
    pub irq_cpu_ns: u64,
    /// Wall time of the system CPU window (generator start to tool exit).
    pub window_s: f64,
    /// CPU time of the generator's threads (or trafgen processes).
    pub generator_cpu_ns: u64,
    pub process_cpu_ns: Option<u64>,
    pub process_cpu_before_stop_ns: Option<u64>,
    pub write_syscalls: Option<u64>,
    pub write_bytes: Option<u64>,
    pub write_syscalls_before_stop: Option<u64>,
    pub io_after_exit: bool,
    pub file_bytes: Option<u64>,
}

impl RunRecord {
    pub fn offered(&self) -> u64 {
        self.counters.offered()
    }

    /// Busy CPU time in the window that neither the generator, the tool nor irq/softirq work
    /// accounts for: other processes on the machine (and xtask itself). Large values mean the
    /// machine was not quiet and the system CPU numbers are unreliable.
    pub fn background_cpu_ns(&self) -> u64 {
        self.system_cpu_ns
            .saturating_sub(self.irq_cpu_ns)
            .saturating_sub(self.generator_cpu_ns)
            .saturating_sub(self.process_cpu_ns.unwrap_or(0))
    }
}

pub fn bench(args: &Args) -> Result<()> {
    match &args.mode {
        Some(Mode::Writer(w)) => writer::run(w),
        Some(Mode::Capture(c)) => capture(c),
        None => capture(&args.capture),
    }
}

fn need_tools(tools: &[&str]) -> Result<()> {
    let missing: Vec<&str> =
        tools.iter().copied().filter(|t| !capture_lab::tool_available(t)).collect();
    if !missing.is_empty() {
        bail!(
            "missing tool(s): {}; run scripts/bootstrap.sh (as root) to install them",
            missing.join(", ")
        );
    }
    Ok(())
}

/// splitmix64: a small, well-mixed PRNG for the run order (no dependency needed).
pub struct SplitMix(pub u64);

impl SplitMix {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Fisher-Yates.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = usize::try_from(self.next_u64() % (i as u64 + 1)).unwrap_or(0);
            items.swap(i, j);
        }
    }
}

/// Every run of the benchmark, in a seeded random order.
fn plan(args: &CaptureArgs, seed: u64) -> Vec<Job> {
    let mut jobs = Vec::new();
    let mut loads = Vec::new();
    for load in args.loads() {
        if load == Load::Max {
            loads.extend(args.frames.iter().map(|&f| (load, f)));
        } else {
            loads.push((load, FrameSet::Small));
        }
    }
    for rep in 0..args.reps {
        for &(load, frames) in &loads {
            jobs.push(Job { load, frames, snaplen: None, tool: Tool::Baseline, rep });
            let tools = if load == Load::Hook { &HOOK_TOOLS[..] } else { &args.tools[..] };
            for &tool in tools {
                if tool.captures() {
                    for &snaplen in &args.snaplen {
                        jobs.push(Job { load, frames, snaplen: Some(snaplen), tool, rep });
                    }
                } else {
                    jobs.push(Job { load, frames, snaplen: None, tool, rep });
                }
            }
        }
    }
    SplitMix(seed).shuffle(&mut jobs);
    jobs
}

struct Ctx<'a> {
    args: &'a CaptureArgs,
    lab: Lab,
    fs: &'a OutputFs,
    daemon_bin: PathBuf,
    blasters: Vec<Blaster>,
    duration: Duration,
}

fn capture(args: &CaptureArgs) -> Result<()> {
    let mut args = args.clone();
    if args.quick {
        args.reps = 1;
        args.seconds = 1.0;
        args.frames = vec![FrameSet::Small];
    }
    if args.reps == 0 || args.seconds.is_nan() || args.seconds <= 0.0 {
        bail!("--reps and --seconds must be positive");
    }
    if args.frames.is_empty() || args.snaplen.is_empty() || args.load.is_empty() {
        bail!("--frames, --snaplen and --load need at least one value");
    }
    for &s in &args.snaplen {
        if s != 0 && !(14..=65535).contains(&s) {
            bail!("snaplen {s}: use 0 (whole frames) or 14 to 65535");
        }
    }
    let mut tools = args.tools.clone();
    tools.sort();
    tools.dedup();
    args.tools = tools;
    capture_lab::require_root().context("the benchmark creates a network namespace and a tmpfs")?;
    crate::remove_leftovers()?;
    // SAFETY: sysconf has no preconditions.
    let cpus = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    if cpus < 2 {
        bail!(
            "the benchmark pins the generator to CPU {GEN_CPU} and the tool to CPU {CAPTURE_CPU}: it needs 2 CPUs, this machine has {cpus}"
        );
    }
    let mut needed = vec!["ip", "taskset", "stdbuf", "ethtool", "capinfos", "mount", "umount"];
    let hook = args.loads().contains(&Load::Hook);
    for tool in args.tools.iter().chain(if hook { &HOOK_TOOLS[..] } else { &[] }) {
        match tool {
            Tool::Tcpdump | Tool::TcpdumpNoMatch => needed.push("tcpdump"),
            Tool::Dumpcap => needed.push("dumpcap"),
            Tool::NetsniffNg => needed.push("netsniff-ng"),
            _ => {}
        }
    }
    if args.generator == GeneratorArg::Trafgen {
        needed.push("trafgen");
    }
    if args.perf {
        needed.push("perf");
    }
    needed.sort_unstable();
    needed.dedup();
    need_tools(&needed)?;
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_secs() ^ u64::from(d.subsec_nanos()))
    });
    let daemon_bin = crate::build_daemon()?;
    proc::install_signal_handlers()?;

    let out_dir = crate::workspace_root().join("target/bench");
    std::fs::create_dir_all(&out_dir)?;
    let jobs = plan(&args, seed);
    let fs = match args.fs {
        FsArg::Tmpfs => OutputFs::tmpfs(&args.tmpfs_size)?,
        FsArg::Disk => OutputFs::disk(out_dir.join("disk"))?,
    };
    let lab = Lab::create(args.queues)?;
    let blasters = if args.generator == GeneratorArg::Own {
        let n = args.queues;
        lab.ns.run(|| (0..n).map(|_| Blaster::open(GENERATOR_IF)).collect::<Result<Vec<_>>>())?
    } else {
        Vec::new()
    };
    let duration = Duration::from_secs_f64(args.seconds);
    let ctx = Ctx { args: &args, lab, fs: &fs, daemon_bin, blasters, duration };

    let settings = Settings::from_args(&args, seed, fs.kind);
    eprintln!(
        "bench: {} runs of {:.1} s (+ start, {} ms drain, stop), seed {seed} (rerun this order with --seed {seed})",
        jobs.len(),
        args.seconds,
        args.drain_ms
    );
    eprintln!(
        "bench: lab {}: {} <- {} ({} RX queue(s)); generator `{}` on CPU {GEN_CPU} (and 1 with 2 queues), tools on CPU \
         {CAPTURE_CPU}; files on {} ({}); capture-daemon unmatched = \"{}\"",
        ctx.lab.ns.name(),
        ctx.lab.veth.capture,
        ctx.lab.veth.peer,
        args.queues,
        settings.generator,
        fs.kind,
        fs.root.display(),
        args.unmatched.name()
    );
    let runs_path = out_dir.join("runs.jsonl");
    let mut runs_file = std::fs::File::create(&runs_path)
        .with_context(|| format!("creating {}", runs_path.display()))?;
    let mut done: Vec<(Job, RunRecord)> = Vec::new();
    for (i, job) in jobs.iter().enumerate() {
        check_stop()?;
        let started = Instant::now();
        let rec = run_one(&ctx, job, i).with_context(|| {
            format!(
                "run {} of {}: {} {} frames {} snaplen {}",
                i + 1,
                jobs.len(),
                job.tool.name(),
                job.load.name(),
                job.frames,
                job.snaplen.map_or_else(|| "-".to_owned(), |s| s.to_string())
            )
        })?;
        eprintln!(
            "[{:>3}/{}] {:<18} {:<8} {:<4} snap {:<3} offered {:>7.0} kpps  captured {:>9}  ({:.1} s)",
            i + 1,
            jobs.len(),
            job.tool.name(),
            job.load.name(),
            job.frames.name(),
            job.snaplen.map_or_else(|| "-".to_owned(), |s| s.to_string()),
            rec.offered() as f64 / rec.elapsed_s / 1000.0,
            rec.captured.map_or_else(|| "-".to_owned(), |c| c.to_string()),
            started.elapsed().as_secs_f64()
        );
        writeln!(runs_file, "{}", report::run_json(job, &rec, &settings))?;
        done.push((*job, rec));
    }
    let summary = report::summarize(&done, &settings);
    report::print_table(&summary, &settings);
    let goals = report::goals(&summary, &settings);
    report::print_goals(&summary, &goals);
    let summary_path = out_dir.join("summary.json");
    std::fs::write(&summary_path, format!("{}\n", report::summary_json(&summary, &settings)))
        .with_context(|| format!("writing {}", summary_path.display()))?;
    let goals_path = out_dir.join("goals.json");
    std::fs::write(&goals_path, format!("{}\n", report::goals_json(&goals)))
        .with_context(|| format!("writing {}", goals_path.display()))?;
    eprintln!(
        "bench: wrote {}, {} and {}",
        summary_path.display(),
        goals_path.display(),
        runs_path.display()
    );
    if args.perf {
        perf::record_all(&ctx, &jobs, &out_dir.join("perf"))?;
    }
    Ok(())
}

/// Settings that hold for every run, repeated in the output files.
pub struct Settings {
    pub seed: u64,
    pub fs: &'static str,
    pub generator: &'static str,
    pub unmatched: &'static str,
    pub queues: u32,
    pub seconds: f64,
    pub rate: u64,
}

impl Settings {
    fn from_args(args: &CaptureArgs, seed: u64, fs: &'static str) -> Settings {
        Settings {
            seed,
            fs,
            generator: match args.generator {
                GeneratorArg::Own => "own",
                GeneratorArg::Trafgen => "trafgen",
            },
            unmatched: args.unmatched.name(),
            queues: args.queues,
            seconds: args.seconds,
            rate: args.rate,
        }
    }
}

/// A started capture tool and where its output goes.
struct Started {
    proc: Measured,
    stop_signal: i32,
}

/// `unmatched` is mirror mode's (tap mode refuses the key: its frames always go on).
fn write_daemon_config(
    path: &Path,
    out: &Path,
    snaplen: u32,
    unmatched: Option<&str>,
    mac: &str,
) -> Result<()> {
    let (unmatched, interface) = match unmatched {
        Some(u) => (format!("unmatched = \"{u}\"\n"), "mode = \"mirror\"\nxdp_mode = \"native\"\n"),
        None => (String::new(), "mode = \"tap\"\n"),
    };
    let text = format!(
        r#"# Written by `cargo xtask bench`.
[capture]
{unmatched}snaplen = {snaplen}

[output]
directory = "{dir}"
prefix = "bench"
rotate_bytes = 0
rotate_seconds = 0

[[interface]]
name = "cap0"
{interface}
[[target]]
name = "vm"
mac = "{mac}"
"#,
        dir = out.display()
    );
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

fn path_str(p: &Path) -> Result<&str> {
    p.to_str().with_context(|| format!("{} is not UTF-8", p.display()))
}

/// Starts the tool of `job` pinned to the capture CPU inside the lab, and waits until it is
/// capturing. The command line is `ip netns exec NS taskset -c 1 TOOL ...`: both exec, so the
/// child's pid is the tool's own.
fn start_tool(ctx: &Ctx, job: &Job, run_dir: &Path) -> Result<Option<Started>> {
    let snaplen = job.snaplen.unwrap_or(0);
    let pcap_dir = run_dir.join("pcap");
    std::fs::create_dir_all(&pcap_dir)?;
    let cpu = CAPTURE_CPU.to_string();
    let mut cmd = ctx.lab.ns.command("taskset");
    cmd.args(["-c", &cpu]);
    let (marker, signal) = match job.tool {
        Tool::Baseline => return Ok(None),
        Tool::CaptureDaemon
        | Tool::CaptureDaemonTap
        | Tool::XdpDrop
        | Tool::XdpPass
        | Tool::TapNoMatch => {
            let config = run_dir.join("capture.toml");
            let m = BENCH_TARGET_MAC;
            let target = format!(
                "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
                m[0], m[1], m[2], m[3], m[4], m[5]
            );
            let (unmatched, mac) = match job.tool {
                Tool::XdpDrop => (Some("drop"), NEVER_MAC),
                Tool::XdpPass => (Some("pass"), NEVER_MAC),
                Tool::TapNoMatch => (None, NEVER_MAC),
                Tool::CaptureDaemonTap => (None, target.as_str()),
                _ => (Some(ctx.args.unmatched.name()), target.as_str()),
            };
            write_daemon_config(&config, &pcap_dir, snaplen, unmatched, mac)?;
            cmd.arg(&ctx.daemon_bin).args(["run", "--log-level", "info", "--config"]).arg(&config);
            ("capturing on", libc::SIGTERM)
        }
        Tool::Tcpdump | Tool::TcpdumpNoMatch => {
            let file = pcap_dir.join("tcpdump.pcap");
            let filter = if job.tool == Tool::Tcpdump { FILTER } else { NEVER_FILTER };
            // -Z root: keep root, so the file can be written wherever the benchmark puts it.
            cmd.args(["tcpdump", "-Z", "root", "-i", "cap0", "-w", path_str(&file)?, "-s"])
                .arg(snaplen.to_string())
                .arg(filter);
            ("listening on", libc::SIGTERM)
        }
        Tool::Dumpcap => {
            let file = pcap_dir.join("dumpcap.pcapng");
            // dumpcap's "appropriate maximum" is 262144, what tcpdump's -s 0 means too.
            let snap = if snaplen == 0 { 262_144 } else { snaplen };
            cmd.args(["dumpcap", "-i", "cap0", "-w", path_str(&file)?, "-s"])
                .arg(snap.to_string())
                .args(["-f", FILTER, "-q"]);
            ("Capturing on", libc::SIGTERM)
        }
        Tool::NetsniffNg => {
            let file = pcap_dir.join("netsniff-ng.pcap");
            // No snaplen option: it always keeps whole frames. --notouch-irq and --no-sock-mem:
            // leave IRQ affinity and the (host-wide) socket buffer sysctls alone. stdbuf: its
            // "Running!" line would otherwise sit in a pipe buffer until it exits.
            cmd.args(["stdbuf", "-oL", "netsniff-ng", "--in", "cap0", "--out", path_str(&file)?])
                .args(["--silent", "--notouch-irq", "--no-sock-mem", "--filter", FILTER]);
            ("Running!", libc::SIGTERM)
        }
    };
    let mut proc = Measured::spawn(job.tool.name(), &mut cmd, marker)?;
    // netsniff-ng sets up a ring of a few GiB before it runs: allow for it.
    proc.wait_ready(Duration::from_secs(30))?;
    Ok(Some(Started { proc, stop_signal: signal }))
}

/// Sends the traffic of `job` and returns what the generator says it did, and its CPU time.
fn generate(ctx: &Ctx, job: &Job) -> Result<(BlastReport, u64)> {
    let one_in = usize::try_from(job.load.one_in()).unwrap_or(2);
    let frames = job.frames.frames_one_in(BENCH_TARGET_MAC, one_in);
    let queues = ctx.lab.queues;
    let rate = job.load.rate(ctx.args.rate);
    if ctx.args.generator == GeneratorArg::Trafgen {
        return trafgen(ctx, &frames, rate);
    }
    let stop = &proc::STOP;
    let reports = std::thread::scope(|s| {
        let handles: Vec<_> = ctx
            .blasters
            .iter()
            .enumerate()
            .map(|(i, blaster)| {
                let config = BlastConfig {
                    limit: Limit::Duration(ctx.duration),
                    // Two flows share the rate; the first takes the odd packet.
                    rate_pps: rate.map(|r| {
                        r / u64::from(queues) + u64::from(i == 0) * (r % u64::from(queues))
                    }),
                    batch: ctx.args.batch,
                    cpu: Some(GEN_CPU + i),
                };
                let frames = &frames;
                s.spawn(move || {
                    let t0 = proc::thread_cpu_ns();
                    let r = blaster.blast(frames, &config, stop)?;
                    Ok((r, proc::thread_cpu_ns().saturating_sub(t0)))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(anyhow::anyhow!("generator thread panicked"))))
            .collect::<Result<Vec<_>>>()
    })?;
    let mut total = BlastReport::default();
    let mut cpu = 0;
    for (r, c) in &reports {
        total.merge(r);
        cpu += c;
    }
    check_stop()?;
    Ok((total, cpu))
}

/// trafgen as the generator: the same frames from a config file, `--cpus` = queues (it pins
/// process i to CPU i), stopped with SIGINT after the run's duration.
fn trafgen(ctx: &Ctx, frames: &[Vec<u8>], rate: Option<u64>) -> Result<(BlastReport, u64)> {
    let cfg = ctx.fs.root.join("trafgen.cfg");
    std::fs::write(&cfg, trafgen_config(frames))?;
    let queues = ctx.lab.queues;
    let mut cmd = ctx.lab.ns.command("stdbuf");
    cmd.args(["-oL", "trafgen", "--dev", GENERATOR_IF, "--conf", path_str(&cfg)?, "--cpus"])
        .arg(queues.to_string())
        // Leave the (host-wide) socket memory sysctls and IRQ affinity alone.
        .args(["--no-sock-mem", "-Q"]);
    if let Some(r) = rate {
        // The rate is per trafgen process (one per CPU).
        cmd.arg("--rate").arg(format!("{}pps", r / u64::from(queues)));
    }
    let mut p = Measured::spawn("trafgen", &mut cmd, "Running!")?;
    p.wait_ready(Duration::from_secs(10))?;
    let start = Instant::now();
    proc::sleep(ctx.duration)?;
    let done = p.stop(libc::SIGINT, Duration::from_secs(5))?;
    let elapsed = start.elapsed();
    let sent = done
        .lines
        .iter()
        .find_map(|l| l.trim().strip_suffix("packets outgoing")?.trim().parse::<u64>().ok())
        .with_context(|| format!("trafgen printed no \"packets outgoing\":\n{}", done.tail(20)))?;
    Ok((BlastReport { sent, send_errors: 0, elapsed }, done.total.cpu_ns))
}

fn run_one(ctx: &Ctx, job: &Job, index: usize) -> Result<RunRecord> {
    let run_dir = ctx.fs.root.join(format!("run{index}"));
    std::fs::create_dir_all(&run_dir)?;
    let result = measure(ctx, job, index, &run_dir);
    // The capture files are read back already: free the tmpfs for the next run.
    let _ = std::fs::remove_dir_all(&run_dir);
    result
}

fn measure(ctx: &Ctx, job: &Job, index: usize, run_dir: &Path) -> Result<RunRecord> {
    let xdp = job.tool.rx_hook() == Some("xdp");
    let mut started = start_tool(ctx, job, run_dir)?;
    // Let the tool settle (first page faults of its buffers, the daemon's first stats read).
    proc::sleep(Duration::from_millis(300))?;
    let xdp0 = if xdp { Some(ctx.lab.xdp_counters()?) } else { None };
    // Starts a process: read before the measured window opens, like the XDP counters.
    let host0 = ctx.lab.host_rx()?;
    let c0 = ctx.lab.counters()?;
    let u0 = started.as_ref().map(|s| s.proc.usage()).transpose()?;
    let s0 = proc::system_cpu()?;
    let window = Instant::now();
    let (sent, generator_cpu_ns) = generate(ctx, job)?;
    proc::sleep(Duration::from_millis(ctx.args.drain_ms))?;
    let c1 = ctx.lab.counters()?;
    let mut rec = RunRecord {
        index,
        elapsed_s: sent.elapsed.as_secs_f64(),
        gen_sent: sent.sent,
        gen_errors: sent.send_errors,
        counters: c1.delta(&c0),
        generator_cpu_ns,
        ..RunRecord::default()
    };
    if let (Some(s), Some(u0)) = (started.take(), u0) {
        let before_stop = s.proc.usage()?;
        let done = s.proc.stop(s.stop_signal, Duration::from_secs(10))?;
        rec.process_cpu_ns = Some(done.total.cpu_ns.saturating_sub(u0.cpu_ns));
        rec.process_cpu_before_stop_ns = Some(before_stop.cpu_ns.saturating_sub(u0.cpu_ns));
        rec.write_syscalls = Some(done.total.syscw.saturating_sub(u0.syscw));
        rec.write_bytes = Some(done.total.wchar.saturating_sub(u0.wchar));
        rec.write_syscalls_before_stop = Some(before_stop.syscw.saturating_sub(u0.syscw));
        rec.io_after_exit = done.io_after_exit;
        if !done.exited_ok() {
            bail!(
                "{} ended with {}; its output:\n{}",
                job.tool.name(),
                done.describe_status(),
                done.tail(30)
            );
        }
        rec.tool_drops = report::tool_drops(job.tool, &done.lines);
        if job.tool.daemon_mode().is_some() {
            (rec.daemon_seen, rec.daemon_written) = report::daemon_counts(&done.lines);
        }
    }
    let sys = proc::system_cpu()?.since(&s0);
    rec.window_s = window.elapsed().as_secs_f64();
    rec.system_cpu_ns = sys.busy_ns;
    rec.irq_cpu_ns = sys.irq_ns;
    if let Some((p0, d0)) = xdp0 {
        let (p1, d1) = ctx.lab.xdp_counters()?;
        rec.xdp_packets = Some(p1.saturating_sub(p0));
        rec.xdp_drops = Some(d1.saturating_sub(d0));
    }
    rec.host_rx = Some(ctx.lab.host_rx()?.saturating_sub(host0));
    if job.tool.captures() {
        let (captured, bytes) = read_back(&run_dir.join("pcap"))?;
        rec.captured = Some(captured);
        rec.file_bytes = Some(bytes);
    }
    Ok(rec)
}

/// Frames and bytes of every capture file in `dir`, counted by capinfos (pcap and pcapng).
fn read_back(dir: &Path) -> Result<(u64, u64)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("no capture file in {}", dir.display());
    }
    let (mut packets, mut bytes) = (0, 0);
    for f in &files {
        bytes += std::fs::metadata(f)?.len();
        let out = Command::new("capinfos").args(["-c", "-M"]).arg(f).output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let n = text
            .lines()
            .find_map(|l| l.strip_prefix("Number of packets:"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .with_context(|| {
                format!(
                    "capinfos could not count {}: {}{}",
                    f.display(),
                    text.trim(),
                    String::from_utf8_lossy(&out.stderr).trim()
                )
            })?;
        packets += n;
    }
    Ok((packets, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: CaptureArgs,
    }

    fn args(extra: &[&str]) -> CaptureArgs {
        let mut argv = vec!["bench"];
        argv.extend_from_slice(extra);
        Cli::try_parse_from(argv).expect("parses").args
    }

    #[test]
    fn default_plan_covers_every_combination_five_times() {
        let a = args(&[]);
        let jobs = plan(&a, 7);
        // max: 3 frame sets x (baseline + xdp-drop + 5 tools x 2 snaplens) = 36; fixed: 12.
        assert_eq!(jobs.len(), 5 * 48);
        let n = |tool: Tool, load: Load| {
            jobs.iter().filter(|j| j.tool == tool && j.load == load).count()
        };
        assert_eq!(n(Tool::Baseline, Load::Max), 15);
        assert_eq!(n(Tool::Tcpdump, Load::Max), 30);
        assert_eq!(n(Tool::XdpDrop, Load::Fixed), 5);
        assert!(jobs.iter().filter(|j| j.load == Load::Fixed).all(|j| j.frames == FrameSet::Small));
        // Seeded: the same seed gives the same order, another seed another one.
        let order =
            |seed| plan(&a, seed).iter().map(|j| (j.tool, j.rep, j.snaplen)).collect::<Vec<_>>();
        assert_eq!(order(7), order(7));
        assert_ne!(order(7), order(8));
    }

    #[test]
    fn quick_and_narrowed_plans() {
        let a = args(&["--load", "fixed", "--tools", "tcpdump", "--snaplen", "128", "--reps", "2"]);
        let jobs = plan(&a, 1);
        assert_eq!(jobs.len(), 2 * 2);
        assert!(args(&["--frames", "64,IMIX"]).frames == [FrameSet::Small, FrameSet::Imix]);
        assert!(Cli::try_parse_from(["bench", "--frames", "9000"]).is_err());
        assert!(Cli::try_parse_from(["bench", "--queues", "3"]).is_err());
        assert!(Cli::try_parse_from(["bench", "--tools", "baseline"]).is_err());
        // The hook tools are not for --tools: the hook load always runs all of them.
        assert!(Cli::try_parse_from(["bench", "--tools", "xdp-pass"]).is_err());
    }

    #[test]
    fn loads_expand_and_the_tap_comparison_fits() {
        assert_eq!(args(&[]).loads(), [Load::Max, Load::Fixed]);
        assert_eq!(
            args(&["--load", "hook,both,fixed"]).loads(),
            [Load::Max, Load::Fixed, Load::Hook]
        );
        assert!(Cli::try_parse_from(["bench", "--load", "fast"]).is_err());
        // The command docs/bench.md gives for the tap comparison.
        let a = args(&[
            "--tools",
            "capture-daemon-tap,tcpdump,dumpcap,netsniff-ng",
            "--load",
            "max,fixed,haystack,hook",
            "--frames",
            "64",
            "--snaplen",
            "0",
            "--seconds",
            "3",
        ]);
        let jobs = plan(&a, 3);
        // max, fixed, haystack: baseline + 4 tools; hook: baseline + 3 hook tools.
        assert_eq!(jobs.len(), 5 * (3 * 5 + 4));
        let hook: Vec<Tool> = {
            let mut t: Vec<Tool> = jobs
                .iter()
                .filter(|j| j.load == Load::Hook && j.rep == 0)
                .map(|j| j.tool)
                .collect();
            t.sort();
            t
        };
        assert_eq!(hook, [Tool::Baseline, Tool::TapNoMatch, Tool::XdpPass, Tool::TcpdumpNoMatch]);
        assert!(jobs.iter().all(|j| j.frames == FrameSet::Small));
        assert!(jobs.iter().filter(|j| !j.tool.captures()).all(|j| j.snaplen.is_none()));
        assert_eq!(Load::Haystack.one_in(), 100);
        assert_eq!((Load::Haystack.rate(150_000), Load::Hook.rate(150_000)), (Some(150_000), None));
    }

    #[test]
    fn daemon_config_per_mode() -> Result<()> {
        let dir = std::env::temp_dir().join(format!("xtask-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let path = dir.join("c.toml");
        write_daemon_config(&path, &dir, 0, None, NEVER_MAC)?;
        let tap = std::fs::read_to_string(&path)?;
        // Tap mode refuses mirror-only keys (xdp_mode, unmatched = "drop").
        assert!(tap.contains("mode = \"tap\"") && !tap.contains("xdp_mode"), "{tap}");
        assert!(!tap.contains("unmatched"), "{tap}");
        write_daemon_config(&path, &dir, 128, Some("drop"), NEVER_MAC)?;
        let mirror = std::fs::read_to_string(&path)?;
        assert!(mirror.contains("mode = \"mirror\"\nxdp_mode = \"native\""), "{mirror}");
        assert!(mirror.contains("unmatched = \"drop\"\nsnaplen = 128"), "{mirror}");
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }

    #[test]
    fn shuffle_is_a_permutation() {
        let mut v: Vec<u32> = (0..100).collect();
        SplitMix(42).shuffle(&mut v);
        let mut sorted = v.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..100).collect::<Vec<_>>());
        assert_ne!(v, sorted);
    }
}
