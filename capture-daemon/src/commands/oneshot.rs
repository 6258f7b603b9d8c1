//! `capture-daemon capture`: a one-shot capture for troubleshooting, dumpcap-style, no config
//! file. It builds a configuration from the flags and runs the daemon's own data path with it
//! (same XDP program, sockets, writer), to a file, a ring of files, or standard output.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};

use crate::config::{
    CaptureConfig, Config, InterfaceConfig, MetricsConfig, Mode, OutputConfig, Queues,
    TargetConfig, XdpMode, ZeroCopy, check_mac,
};
use crate::daemon::{self, Control, Job, OneShot, OneShotOutput, Summary};

/// Flags of `capture-daemon capture`, named as in dumpcap where dumpcap has them.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct CaptureArgs {
    /// Interface to capture on.
    #[arg(short = 'i', long = "interface")]
    pub interface: String,
    /// tap: copy frames in both directions, the traffic goes on untouched; mirror: XDP ->
    /// AF_XDP, matched frames leave the host's path (only for a NIC fed by a SPAN/TAP port).
    #[arg(long = "mode", value_name = "MODE", default_value = "tap", value_parser = parse_mode)]
    pub mode: Mode,
    /// Capture frames to or from this MAC (repeatable).
    #[arg(long = "mac", value_name = "MAC")]
    pub macs: Vec<String>,
    /// Capture frames whose outer VLAN tag is this ID (repeatable).
    #[arg(long = "vlan", value_name = "VID")]
    pub vlans: Vec<u16>,
    /// Bytes kept per frame (0: whole frames).
    #[arg(short = 's', long = "snapshot-length", value_name = "SNAPLEN", default_value_t = 0)]
    pub snaplen: u32,
    /// Stop after this many frames.
    #[arg(short = 'c', value_name = "COUNT")]
    pub count: Option<u64>,
    /// Stop condition: duration:SECS or packets:N (repeatable).
    #[arg(short = 'a', long = "autostop", value_name = "COND")]
    pub autostop: Vec<String>,
    /// Ring buffer: filesize:KB, duration:SECS, packets:N, files:N (repeatable).
    #[arg(short = 'b', long = "ring-buffer", value_name = "COND")]
    pub ring: Vec<String>,
    /// Output: a file, the file name pattern of a ring buffer (with -b), or - for standard output.
    #[arg(short = 'w', value_name = "FILE")]
    pub write: String,
}

fn parse_mode(s: &str) -> Result<Mode, String> {
    match s {
        "tap" => Ok(Mode::Tap),
        "mirror" => Ok(Mode::Mirror),
        _ => Err(format!("unknown mode \"{s}\"; use tap or mirror")),
    }
}

/// What the flags mean for a run.
#[derive(Debug, PartialEq)]
pub struct Plan {
    pub config: Config,
    pub output: Target,
    pub stop_after_packets: Option<u64>,
    pub stop_after: Option<Duration>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Target {
    Stdout,
    File(PathBuf),
    /// A ring of files: the settings are in `config.output`.
    Ring,
}

fn number(cond: &str, value: &str) -> anyhow::Result<u64> {
    value.parse().with_context(|| format!("{cond}: {value:?} is not a whole number"))
}

impl CaptureArgs {
    pub fn plan(&self) -> anyhow::Result<Plan> {
        let mut stop_after_packets = self.count;
        let mut stop_after = None;
        for a in &self.autostop {
            match a.split_once(':') {
                Some(("duration", v)) => stop_after = Some(Duration::from_secs(number(a, v)?)),
                Some(("packets", v)) => stop_after_packets = Some(number(a, v)?),
                _ => bail!("-a {a}: use duration:SECS or packets:N"),
            }
        }
        if stop_after_packets == Some(0) {
            bail!("-c 0: the count must be at least 1");
        }
        let mut output = OutputConfig::unlimited(PathBuf::from("."), "capture");
        for b in &self.ring {
            let positive = |v: &str| match number(b, v)? {
                0 => bail!("-b {b}: must be at least 1"),
                n => Ok(n),
            };
            match b.split_once(':') {
                // dumpcap's kB are 1000 bytes.
                Some(("filesize", v)) => {
                    output.rotate_bytes = positive(v)?.saturating_mul(1000).max(4096)
                }
                Some(("duration", v)) => output.rotate_seconds = positive(v)?,
                Some(("packets", v)) => output.rotate_packets = positive(v)?,
                // N files on disk in all, the one being written included, as in dumpcap.
                Some(("files", v)) => match positive(v)? {
                    1 => bail!("-b {b}: a ring needs at least 2 files"),
                    n => output.keep_files = n,
                },
                _ => bail!("-b {b}: use filesize:KB, duration:SECS, packets:N or files:N"),
            }
        }
        let target = if self.write == "-" {
            if !self.ring.is_empty() {
                bail!("-b needs files: it cannot be used with -w -");
            }
            Target::Stdout
        } else if self.ring.is_empty() {
            Target::File(PathBuf::from(&self.write))
        } else {
            // dumpcap's convention: -w dir/name.pcapng -> dir/name_00001_YYYYmmddHHMMSS.pcapng
            let path = Path::new(&self.write);
            output.directory = match path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => PathBuf::from("."),
            };
            let stem = path.file_name().and_then(|n| n.to_str()).unwrap_or("capture");
            output.prefix = stem.strip_suffix(".pcapng").unwrap_or(stem).to_owned();
            Target::Ring
        };
        if output.keep_files != 0
            && (output.rotate_bytes, output.rotate_seconds, output.rotate_packets) == (0, 0, 0)
        {
            bail!(
                "-b files: needs a condition to switch files: -b filesize:, duration: or packets:"
            );
        }
        if self.snaplen != 0 && !(14..=65535).contains(&self.snaplen) {
            bail!("-s {}: use 0 (whole frames) or 14..=65535", self.snaplen);
        }
        let macs = self
            .macs
            .iter()
            .map(|m| check_mac(m).map_err(anyhow::Error::msg).with_context(|| format!("--mac {m}")))
            .collect::<anyhow::Result<Vec<_>>>()?;
        if let Some(v) = self.vlans.iter().find(|v| !(1..=4094).contains(*v)) {
            bail!("--vlan {v}: use 1..=4094 (0 and 4095 are reserved)");
        }
        // Each MAC on each VLAN; only MACs or only VLANs: each alone; neither: everything.
        let mut targets = Vec::new();
        match (macs.is_empty(), self.vlans.is_empty()) {
            (true, true) => targets.push(TargetConfig::named("all")),
            (false, true) => {
                for m in &macs {
                    targets.push(TargetConfig {
                        name: crate::config::format_mac(m),
                        mac: Some(*m),
                        ..TargetConfig::default()
                    });
                }
            }
            (true, false) => {
                for v in &self.vlans {
                    targets.push(TargetConfig {
                        name: format!("vlan{v}"),
                        mac: None,
                        vlan: Some(*v),
                        ..TargetConfig::default()
                    });
                }
            }
            (false, false) => {
                for m in &macs {
                    for v in &self.vlans {
                        let name = format!("{}@vlan{v}", crate::config::format_mac(m));
                        targets.push(TargetConfig {
                            name,
                            mac: Some(*m),
                            vlan: Some(*v),
                            ..TargetConfig::default()
                        });
                    }
                }
            }
        }
        if targets.len() > capture_common::MAX_TARGETS {
            bail!(
                "{} MAC/VLAN combinations: at most {}",
                targets.len(),
                capture_common::MAX_TARGETS
            );
        }
        let config = Config {
            capture: CaptureConfig {
                snaplen: self.snaplen,
                // A short troubleshooting run: read frames at once, keep memory modest.
                batch_delay_us: 0,
                buffer_bytes: 16 << 20,
                ..CaptureConfig::default()
            },
            output,
            metrics: MetricsConfig { enabled: false, ..MetricsConfig::default() },
            libvirt: crate::config::LibvirtConfig::default(),
            interfaces: vec![InterfaceConfig {
                name: self.interface.clone(),
                mode: self.mode,
                queues: Queues::All,
                xdp_mode: XdpMode::Auto,
                zero_copy: ZeroCopy::Auto,
            }],
            targets,
            vm_taps: false,
        };
        Ok(Plan { config, output: target, stop_after_packets, stop_after })
    }
}

/// Runs the capture; `control` is wired to SIGINT/SIGTERM by the caller.
pub fn run(args: &CaptureArgs, control: &Control) -> anyhow::Result<Summary> {
    let plan = args.plan()?;
    let output = match &plan.output {
        Target::Stdout => OneShotOutput::Stream(Box::new(std::io::stdout())),
        Target::File(path) => {
            OneShotOutput::Stream(Box::new(crate::writer::stream::create_file(path)?))
        }
        Target::Ring => OneShotOutput::Ring,
    };
    daemon::run(
        plan.config,
        control,
        Job::OneShot(OneShot {
            output,
            stop_after_packets: plan.stop_after_packets,
            stop_after: plan.stop_after,
        }),
    )
}

/// dumpcap's closing lines.
pub fn report(summary: &Summary) -> String {
    let mut s = format!("Packets captured: {}\n", summary.frames_written);
    for (name, received, dropped) in &summary.interfaces {
        let total = received + dropped;
        let pct = if total == 0 { 100.0 } else { *received as f64 * 100.0 / total as f64 };
        s += &format!(
            "Packets received/dropped on interface '{name}': {received}/{dropped} ({pct:.1}%)\n"
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> CaptureArgs {
        use clap::Parser as _;
        #[derive(clap::Parser)]
        struct T {
            #[command(flatten)]
            a: CaptureArgs,
        }
        let mut argv = vec!["t", "-i", "eth0"];
        argv.extend_from_slice(extra);
        T::try_parse_from(argv).unwrap().a
    }

    #[test]
    fn dumpcap_style_flags_become_a_plan() {
        let p = args(&["--mac", "52:54:00:00:00:0a", "-s", "128", "-c", "10", "-w", "-"])
            .plan()
            .unwrap();
        assert_eq!(p.output, Target::Stdout);
        assert_eq!(p.stop_after_packets, Some(10));
        assert_eq!(p.config.capture.snaplen, 128);
        assert_eq!(p.config.targets.len(), 1);
        assert_eq!(p.config.targets[0].vlan, None);

        let p = args(&[
            "-b",
            "filesize:100",
            "-b",
            "files:3",
            "-a",
            "duration:5",
            "-w",
            "/tmp/x/web.pcapng",
        ])
        .plan()
        .unwrap();
        assert_eq!(p.output, Target::Ring);
        assert_eq!((p.config.output.rotate_bytes, p.config.output.keep_files), (100_000, 3));
        assert_eq!(p.config.output.directory, PathBuf::from("/tmp/x"));
        assert_eq!(p.config.output.prefix, "web");
        assert_eq!(p.stop_after, Some(Duration::from_secs(5)));
        assert_eq!(p.config.targets[0].name, "all");

        let p = args(&[
            "--mac",
            "52:54:00:00:00:0a",
            "--mac",
            "52:54:00:00:00:0b",
            "--vlan",
            "7",
            "-w",
            "f",
        ])
        .plan()
        .unwrap();
        assert_eq!(p.config.targets.len(), 2, "each MAC on the VLAN");
        assert_eq!(p.output, Target::File("f".into()));
    }

    #[test]
    fn bad_flags_say_which() {
        let e = |a: &[&str]| format!("{:#}", args(a).plan().unwrap_err());
        assert!(e(&["--mac", "nope", "-w", "-"]).contains("--mac nope"));
        assert!(e(&["--vlan", "4095", "-w", "-"]).contains("--vlan 4095: use 1..=4094"));
        assert!(e(&["-b", "size:1", "-w", "f"]).contains("-b size:1: use filesize:KB"));
        assert!(e(&["-b", "files:2", "-w", "-"]).contains("cannot be used with -w -"));
        assert!(e(&["-b", "filesize:0", "-w", "f"]).contains("-b filesize:0: must be at least 1"));
        assert!(e(&["-b", "duration:0", "-w", "f"]).contains("must be at least 1"));
        assert!(e(&["-b", "files:1", "-b", "packets:5", "-w", "f"]).contains("at least 2 files"));
        assert!(e(&["-b", "files:3", "-w", "f"]).contains("needs a condition to switch files"));
        assert!(e(&["-a", "duration:x", "-w", "-"]).contains("is not a whole number"));
        assert!(e(&["-s", "5", "-w", "-"]).contains("-s 5"));
    }
}
