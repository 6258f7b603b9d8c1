//! The daemon's TOML configuration: parsing, defaults and validation.
//!
//! Everything an admin can get wrong is reported as one [`ConfigError`] that names the file, the
//! 1-based line and column, and the key, e.g.
//!
//! ```text
//! /etc/capture-daemon/capture.toml:12:8: key `vlan`: VLAN 4095 is reserved; use 1..=4094
//! ```
//!
//! By concern:
//! - this file: the validated [`Config`] the daemon uses, and [`Config::load`];
//! - `schema`: the file's shape (sections and keys) and checks across entries;
//! - `values`: serde value types that check each value where toml can still give its span;
//! - `checks`: the value checks themselves, one function per key, each with the admin's message;
//! - `sizes`: "64 MiB" and friends;
//! - `errors`: [`ConfigError`], and turning byte spans into line, column, key and a snippet.
//!
//! How positions are kept: the raw structs are deserialized by serde with validating value
//! types, so toml attaches the offending value's byte span to each value error; checks across
//! entries (duplicates, counts) keep spans with [`Spanned`]. The key of a toml error is found again
//! by walking the parsed document for the innermost key or value containing the error's span.
//!
//! `docs/config.md` and `config/capture.toml` are checked against this parser by `docs_tests`:
//! change all three together.

mod checks;
mod errors;
mod schema;
mod sizes;
mod values;

#[cfg(test)]
mod docs_tests;
#[cfg(test)]
mod tests;

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::de::DeTable;

pub use checks::{check_mac, format_mac};
pub use errors::ConfigError;
pub use sizes::parse_size;

use errors::{syntax_error, value_error};
use schema::RawConfig;
use sizes::{GIB, MIB};

/// The output file system keeps this much free by default, so capture never fills a disk it
/// shares with the host (ext4 reserves 5 % for root, and the daemon runs as root).
pub const DEFAULT_KEEP_FREE_PERCENT: u8 = 10;

/// Where the daemon looks for its configuration unless told otherwise.
pub const DEFAULT_PATH: &str = "/etc/capture-daemon/capture.toml";

/// The whole configuration, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub capture: CaptureConfig,
    pub output: OutputConfig,
    pub metrics: MetricsConfig,
    pub libvirt: LibvirtConfig,
    /// Names unique; at least one, unless `vm_taps`.
    pub interfaces: Vec<InterfaceConfig>,
    /// 1..=`MAX_TARGETS`, names unique, in file order.
    pub targets: Vec<TargetConfig>,
    /// `[[interface]] vm_taps = true`: also capture, in tap mode, on the tap devices of the
    /// `vm` targets' VMs while they run.
    pub vm_taps: bool,
}

/// `[metrics]`: the Prometheus text endpoint, which `capture-daemon status` reads too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsConfig {
    pub enabled: bool,
    /// Where to listen; loopback by default, since the counters name VMs and files.
    pub listen: std::net::SocketAddr,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self { enabled: true, listen: std::net::SocketAddr::from(([127, 0, 0, 1], 9464)) }
    }
}

/// `[capture]`: how frames are filtered and moved out of the kernel.
#[derive(Debug, Clone, PartialEq)]
pub struct CaptureConfig {
    /// Verdict for frames no target matches.
    pub unmatched: Unmatched,
    /// Bytes kept per frame; 0 keeps the whole frame, otherwise 14..=65535.
    pub snaplen: u32,
    /// Descriptors in each AF_XDP RX and fill ring; a power of two in 64..=65536.
    pub ring_size: u32,
    /// Hand-off buffer between each RX-queue worker and the writer, in bytes (1 MiB..=4 GiB).
    pub buffer_bytes: u64,
    /// Busy-poll budget in microseconds for the AF_XDP sockets; 0 = off (sleep in poll(2)).
    pub busy_poll_us: u32,
    /// Longest pause, in microseconds, a worker lets frames gather between reads; 0 = none.
    pub batch_delay_us: u32,
    /// Tap mode: bytes of each per-CPU BPF ring buffer, a power of two in 64 KiB..=1 GiB.
    pub tap_ring_bytes: u64,
    /// Mirror mode: put the UMEMs on the host's reserved 2 MiB huge pages (`vm.nr_hugepages`).
    /// Off by default: on a hypervisor that pool belongs to the VMs.
    pub umem_reserved_huge_pages: bool,
    /// UDP destination ports that carry VXLAN, for `vni` targets.
    pub vxlan_ports: Vec<u16>,
    /// UDP destination ports that carry Geneve, for `vni` targets.
    pub geneve_ports: Vec<u16>,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        Self {
            unmatched: Unmatched::Pass,
            snaplen: 0,
            ring_size: 4096,
            buffer_bytes: 64 * MIB,
            busy_poll_us: 0,
            batch_delay_us: 2000,
            tap_ring_bytes: 4 * MIB,
            umem_reserved_huge_pages: false,
            // IANA's VXLAN port, and Linux's own default (the port before IANA assigned one).
            vxlan_ports: vec![4789, 8472],
            geneve_ports: vec![6081],
        }
    }
}

/// What the XDP program does with frames that match no target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unmatched {
    /// Hand them to the kernel stack as if the program were not there.
    Pass,
    /// Drop them (for a NIC or VF dedicated to capture).
    Drop,
}

impl fmt::Display for Unmatched {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Pass => "pass",
            Self::Drop => "drop",
        })
    }
}

/// `[output]`: where pcapng files go and when they rotate and get pruned.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputConfig {
    pub directory: PathBuf,
    /// First part of every file name: `[A-Za-z0-9._-]`, not starting with '.'.
    pub prefix: String,
    /// Rotate after this many bytes; 0 = never.
    pub rotate_bytes: u64,
    /// Rotate after this many seconds; 0 = never.
    pub rotate_seconds: u64,
    /// Rotate after this many packets; 0 = never.
    pub rotate_packets: u64,
    /// Keep at most this many files; 0 = no limit.
    pub keep_files: u64,
    /// Keep at most this many bytes of files; 0 = no limit.
    pub keep_bytes: u64,
    /// Keep at least this much free on the output file system; 0 = no absolute floor.
    pub keep_free_bytes: u64,
    /// Keep at least this percentage of the output file system free; 0 = no relative floor.
    /// The floor is the larger of the two.
    pub keep_free_percent: u8,
    /// The group the output directory and files are given to; `None`: the daemon's own.
    pub group: Option<FileGroup>,
}

/// A group from `[output] group`, looked up when the config is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileGroup {
    pub name: String,
    pub gid: u32,
}

impl OutputConfig {
    /// One file into `directory`, never rotated, nothing deleted: every limit 0.
    #[must_use]
    pub fn unlimited(directory: PathBuf, prefix: &str) -> Self {
        Self {
            directory,
            prefix: prefix.to_owned(),
            rotate_bytes: 0,
            rotate_seconds: 0,
            rotate_packets: 0,
            keep_files: 0,
            keep_bytes: 0,
            keep_free_bytes: 0,
            keep_free_percent: 0,
            group: None,
        }
    }
}

impl Default for OutputConfig {
    fn default() -> Self {
        Self {
            directory: PathBuf::from("/var/lib/capture-daemon"),
            prefix: "capture".to_owned(),
            rotate_bytes: GIB,
            rotate_seconds: 300,
            rotate_packets: 0,
            keep_files: 0,
            keep_bytes: 0,
            keep_free_bytes: 0,
            keep_free_percent: DEFAULT_KEEP_FREE_PERCENT,
            group: None,
        }
    }
}

/// One `[[interface]]`: an interface to capture on.
#[derive(Debug, Clone, PartialEq)]
pub struct InterfaceConfig {
    pub name: String,
    pub mode: Mode,
    pub queues: Queues,
    pub xdp_mode: XdpMode,
    pub zero_copy: ZeroCopy,
}

/// How matched frames are handed to the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    #[default]
    /// tcx ingress and egress copy them into BPF ring buffers; the frames go on untouched.
    /// Safe on live interfaces: uplinks, bridges, VM tap devices.
    Tap,
    /// XDP redirects them into AF_XDP sockets: the fastest path, but the frames leave the host.
    /// Only for a NIC fed by a SPAN port or a network TAP.
    Mirror,
}

impl Mode {
    /// What the mode means for the interface, for `check` and the start-up log.
    pub fn meaning(self) -> &'static str {
        match self {
            Mode::Tap => {
                "tap mode: matched frames are copied in both directions (tcx ingress and                  egress); the interface's traffic goes on untouched"
            }
            Mode::Mirror => {
                "mirror mode: matched frames are taken out of the kernel's path (XDP ->                  AF_XDP); use it only on a NIC fed by a SPAN/TAP port"
            }
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Tap => "tap",
            Self::Mirror => "mirror",
        })
    }
}

/// Whether AF_XDP sockets bind in zero-copy mode (the NIC writes frames straight into the UMEM).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZeroCopy {
    /// Zero-copy where the driver supports it, copy mode otherwise.
    Auto,
    /// Zero-copy or fail.
    On,
    /// Copy mode always.
    Off,
}

impl fmt::Display for ZeroCopy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::On => "on",
            Self::Off => "off",
        })
    }
}

/// RX queues to open AF_XDP sockets on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Queues {
    /// Every RX queue the interface has when the daemon starts.
    All,
    /// These queue indices: non-empty, unique, each < `MAX_QUEUES`, in file order.
    List(Vec<u32>),
}

/// How the XDP program is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XdpMode {
    /// Native (driver) mode if the driver supports it, generic (skb) mode otherwise.
    Auto,
    /// Driver mode only: fail if the driver lacks XDP support.
    Native,
    /// Generic (skb) mode: works everywhere, slower, copies every frame.
    Generic,
}

impl fmt::Display for XdpMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::Native => "native",
            Self::Generic => "generic",
        })
    }
}

/// One `[[target]]`: frames to capture. Without `mac`, `vlan`, `vni` and `vm` it matches every
/// frame.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TargetConfig {
    pub name: String,
    /// Matches frames with this source or destination MAC; `None` = any MAC. With `vni`, the
    /// inner frame's MACs.
    pub mac: Option<[u8; 6]>,
    /// Matches frames whose outer VLAN tag has this ID; `None` = any VLAN or untagged. With
    /// `vni`, the inner frame's outermost tag.
    pub vlan: Option<u16>,
    /// Matches only frames carrying VXLAN or Geneve with this VNI (1..=16777215), by their inner
    /// frame; `None` = the outer headers only.
    pub vni: Option<u32>,
    /// A libvirt domain: its interface MACs join `mac` (see [`LibvirtConfig`]).
    pub vm: Option<String>,
    /// Where the target's frames are written.
    pub output: TargetOutput,
}

impl TargetConfig {
    /// A target called `name` matching every frame, into the shared stream.
    #[must_use]
    pub fn named(name: &str) -> Self {
        Self { name: name.to_owned(), ..Self::default() }
    }
}

/// `[[target]] output`: which stream of files a target's frames go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TargetOutput {
    /// The one stream all such targets share (`{prefix}_{seq}_{time}.pcapng`).
    #[default]
    Shared,
    /// A rotating stream of the target's own (`{prefix}_{target}_{seq}_{time}.pcapng`).
    Own,
}

impl fmt::Display for TargetOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Shared => "shared",
            Self::Own => "own",
        })
    }
}

/// `[libvirt]`: where `vm` targets are looked up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LibvirtConfig {
    pub uri: String,
}

impl Default for LibvirtConfig {
    fn default() -> Self {
        Self { uri: "qemu:///system".to_owned() }
    }
}

impl Config {
    /// Reads and parses the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        Self::parse(&text, path)
    }

    /// Parses `text`; `path` is only used in error messages.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let document = DeTable::parse(text).map_err(|e| syntax_error(&e, text, path))?;
        let raw = RawConfig::deserialize(toml::de::Deserializer::from(document))
            .map_err(|e| value_error(&e, text, path))?;
        raw.validate(text).map_err(|p| p.into_error(text, path))
    }
}
