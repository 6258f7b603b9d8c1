//! The daemon's TOML configuration: parsing, defaults and validation.
//!
//! Everything an admin can get wrong is reported as one [`ConfigError`] that names the file, the
//! 1-based line and column, and the key, e.g.
//!
//! ```text
//! /etc/capture-daemon/capture.toml:12:8: key `vlan`: VLAN 4095 is reserved; use 1..=4094
//! ```
//!
//! How positions are kept: the raw structs below are deserialized by serde with validating value
//! types, so toml attaches the offending value's byte span to each value error; checks across
//! entries (duplicates, counts) keep spans with [`Spanned`]. The key of a toml error is found again
//! by walking the parsed document for the innermost key or value containing the error's span.
//!
//! `docs/config.md` and `config/capture.toml` are checked against this parser by the tests at the
//! end of this file: change all three together.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::ops::Range;
use std::path::{Path, PathBuf};

use capture_common::{MAX_QUEUES, MAX_TARGETS};
use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// Where the daemon looks for its configuration unless told otherwise.
pub const DEFAULT_PATH: &str = "/etc/capture-daemon/capture.toml";

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const GIB: u64 = 1024 * MIB;

/// Smallest useful snap length: one Ethernet header.
const MIN_SNAPLEN: u32 = 14;
/// Largest frame an XDP program sees in one buffer (and pcapng's customary snap length).
const MAX_SNAPLEN: u32 = 65535;
const MIN_RING_SIZE: u32 = 64;
const MAX_RING_SIZE: u32 = 65536;
const MIN_BUFFER_BYTES: u64 = MIB;
/// A BPF ring buffer is a power-of-two number of pages; below 64 KiB it holds too few frames to
/// ride out the reader's timer.
const MIN_TAP_RING_BYTES: u64 = 64 * KIB;
const MAX_TAP_RING_BYTES: u64 = GIB;
const MAX_BUFFER_BYTES: u64 = 4 * GIB;
/// Busy polling longer than a millisecond per call only burns CPU.
const MAX_BUSY_POLL_US: u32 = 1000;
/// Beyond 20 ms a default-sized ring overflows at under 50 kpps.
const MAX_BATCH_DELAY_US: u32 = 20_000;
/// Below one page a rotation threshold would rotate on nearly every frame.
const MIN_ROTATE_BYTES: u64 = 4096;
/// Room for the writer's timestamp/sequence suffix within NAME_MAX (255).
const MAX_PREFIX_LEN: usize = 128;
/// IFNAMSIZ - 1.
const MAX_IFNAME_LEN: usize = 15;
const MAX_TARGET_NAME_LEN: usize = 64;

/// The whole configuration, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub capture: CaptureConfig,
    pub output: OutputConfig,
    pub metrics: MetricsConfig,
    /// At least one, names unique.
    pub interfaces: Vec<InterfaceConfig>,
    /// 1..=`MAX_TARGETS`, names unique, in file order.
    pub targets: Vec<TargetConfig>,
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
    /// Delete the oldest files while the file system has less than this free; 0 = no limit.
    pub keep_free_bytes: u64,
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

/// One `[[target]]`: frames to capture. Without `mac` and `vlan` it matches every frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetConfig {
    pub name: String,
    /// Matches frames with this source or destination MAC; `None` = any MAC.
    pub mac: Option<[u8; 6]>,
    /// Matches frames whose outer VLAN tag has this ID; `None` = any VLAN or untagged.
    pub vlan: Option<u16>,
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read (missing, no permission, not UTF-8...).
    #[error("{}: cannot read config file: {source}", .path.display())]
    Read { path: PathBuf, source: io::Error },
    /// The file is not valid TOML. `snippet` is empty or starts with a newline.
    #[error("{}:{line}:{column}: invalid TOML: {message}{snippet}", .path.display())]
    Syntax { path: PathBuf, line: usize, column: usize, message: String, snippet: String },
    /// Valid TOML, but not a valid configuration.
    #[error("{}:{line}:{column}: {}{message}", .path.display(), key_prefix(.key.as_deref()))]
    Invalid { path: PathBuf, line: usize, column: usize, key: Option<String>, message: String },
}

fn key_prefix(key: Option<&str>) -> String {
    key.map(|k| format!("key `{k}`: ")).unwrap_or_default()
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

/// Parses a size: a plain number of bytes, or a number (integer or decimal) with a unit.
///
/// Units are case-insensitive: B; k/kB = 1000, KiB = 1024; M/MB, MiB; G/GB, GiB; T/TB, TiB.
/// Fractions of a unit are rounded down to whole bytes ("1.1 KiB" = 1126); a fraction of a byte
/// is an error.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err(
            "empty size; write a number of bytes with an optional unit, e.g. \"64 MiB\"".to_owned()
        );
    }
    if t.starts_with('-') {
        return Err(format!("invalid size \"{s}\": sizes cannot be negative"));
    }
    let num_end = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (number, unit) = (&t[..num_end], t[num_end..].trim_start());
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(int) || (number.contains('.') && !all_digits(frac)) {
        return Err(format!(
            "invalid size \"{s}\": expected a number (like 64 or 1.5) and an optional unit (like MiB)"
        ));
    }
    let multiplier = size_unit(unit).ok_or_else(|| {
        format!(
            "invalid size \"{s}\": unknown unit \"{unit}\"; use B, k, kB, KiB, M, MB, MiB, G, GB, GiB, \
             T, TB or TiB"
        )
    })?;
    let too_large = || format!("invalid size \"{s}\": larger than the maximum, {} bytes", u64::MAX);
    // Exact decimal arithmetic, so "1.5 GiB" is exactly 1610612736 bytes.
    let int: u128 = int.parse().map_err(|_| too_large())?;
    let mut total = int.checked_mul(u128::from(multiplier)).ok_or_else(too_large)?;
    // Digits past the 18th cannot change the result by a whole byte at any unit up to TiB.
    let frac = &frac[..frac.len().min(18)];
    if !frac.is_empty() {
        if multiplier == 1 && frac.bytes().any(|b| b != b'0') {
            return Err(format!("invalid size \"{s}\": a number of bytes must be whole"));
        }
        let digits = u32::try_from(frac.len()).map_err(|_| too_large())?;
        let frac: u128 = frac.parse().map_err(|_| too_large())?;
        total += frac * u128::from(multiplier) / 10u128.pow(digits);
    }
    u64::try_from(total).map_err(|_| too_large())
}

fn size_unit(unit: &str) -> Option<u64> {
    Some(match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1000,
        "kib" => KIB,
        "m" | "mb" => 1000 * 1000,
        "mib" => MIB,
        "g" | "gb" => 1000 * 1000 * 1000,
        "gib" => GIB,
        "t" | "tb" => 1000 * 1000 * 1000 * 1000,
        "tib" => 1024 * GIB,
        _ => return None,
    })
}

/// Formats a MAC address the usual way: lower-case hex pairs joined by ':'.
#[must_use]
pub fn format_mac(mac: &[u8; 6]) -> String {
    let [a, b, c, d, e, f] = mac;
    format!("{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{f:02x}")
}

// ---------------------------------------------------------------------------------------------
// Value checks. Each takes what TOML gave and returns the value or a message for the admin.

fn check_unmatched(s: &str) -> Result<Unmatched, String> {
    match s {
        "pass" => Ok(Unmatched::Pass),
        "drop" => Ok(Unmatched::Drop),
        _ => Err(format!("unknown verdict \"{s}\"; use \"pass\" or \"drop\"")),
    }
}

fn check_mode(s: &str) -> Result<Mode, String> {
    match s {
        "tap" => Ok(Mode::Tap),
        "mirror" => Ok(Mode::Mirror),
        _ => Err(format!("unknown mode \"{s}\"; use \"tap\" or \"mirror\"")),
    }
}

fn check_tap_ring_bytes(v: u64) -> Result<u64, String> {
    if !(MIN_TAP_RING_BYTES..=MAX_TAP_RING_BYTES).contains(&v) {
        return Err(format!(
            "ring size {v} bytes is out of range; use a power of two in 64 KiB..=1 GiB"
        ));
    }
    if !v.is_power_of_two() {
        return Err(format!(
            "ring size {v} bytes is not a power of two; use e.g. {} ({} MiB)",
            v.next_power_of_two(),
            v.next_power_of_two() / MIB
        ));
    }
    Ok(v)
}

fn check_xdp_mode(s: &str) -> Result<XdpMode, String> {
    match s {
        "auto" => Ok(XdpMode::Auto),
        "native" => Ok(XdpMode::Native),
        "generic" => Ok(XdpMode::Generic),
        _ => Err(format!("unknown XDP mode \"{s}\"; use \"auto\", \"native\" or \"generic\"")),
    }
}

fn check_zero_copy(s: &str) -> Result<ZeroCopy, String> {
    match s {
        "auto" => Ok(ZeroCopy::Auto),
        "on" => Ok(ZeroCopy::On),
        "off" => Ok(ZeroCopy::Off),
        _ => Err(format!("unknown zero-copy setting \"{s}\"; use \"auto\", \"on\" or \"off\"")),
    }
}

fn check_busy_poll(v: i128) -> Result<u32, String> {
    match u32::try_from(v) {
        Ok(v) if v <= MAX_BUSY_POLL_US => Ok(v),
        _ => Err(format!(
            "busy-poll time {v} is out of range; use 0 (off) to {MAX_BUSY_POLL_US} microseconds"
        )),
    }
}

fn check_batch_delay(v: i128) -> Result<u32, String> {
    match u32::try_from(v) {
        Ok(v) if v <= MAX_BATCH_DELAY_US => Ok(v),
        _ => Err(format!(
            "batch delay {v} is out of range; use 0 (read at once) to {MAX_BATCH_DELAY_US} microseconds"
        )),
    }
}

fn check_listen(s: &str) -> Result<std::net::SocketAddr, String> {
    let addr: std::net::SocketAddr = s.parse().map_err(|_| {
        format!("\"{s}\" is not an address and port; use e.g. \"127.0.0.1:9464\" or \"[::1]:9464\"")
    })?;
    if addr.port() == 0 {
        // A port the kernel picks would be one that `status` and Prometheus cannot know.
        return Err(format!("\"{s}\": port 0 is not a fixed port; use e.g. 9464"));
    }
    Ok(addr)
}

fn check_snaplen(v: i128) -> Result<u32, String> {
    match u32::try_from(v) {
        Ok(0) => Ok(0),
        Ok(v) if (MIN_SNAPLEN..=MAX_SNAPLEN).contains(&v) => Ok(v),
        Ok(v) if v < MIN_SNAPLEN => Err(format!(
            "snap length {v} is shorter than an Ethernet header; use 0 (whole frame) or \
             {MIN_SNAPLEN}..={MAX_SNAPLEN}"
        )),
        _ => Err(format!(
            "snap length {v} is out of range; use 0 (whole frame) or {MIN_SNAPLEN}..={MAX_SNAPLEN}"
        )),
    }
}

fn check_ring_size(v: i128) -> Result<u32, String> {
    match u32::try_from(v) {
        Ok(v) if (MIN_RING_SIZE..=MAX_RING_SIZE).contains(&v) && v.is_power_of_two() => Ok(v),
        Ok(v) if (MIN_RING_SIZE..=MAX_RING_SIZE).contains(&v) => Err(format!(
            "ring size {v} is not a power of two; use e.g. {}",
            v.next_power_of_two().min(MAX_RING_SIZE)
        )),
        _ => Err(format!(
            "ring size {v} is out of range; use a power of two in {MIN_RING_SIZE}..={MAX_RING_SIZE}"
        )),
    }
}

fn check_buffer_bytes(v: u64) -> Result<u64, String> {
    if (MIN_BUFFER_BYTES..=MAX_BUFFER_BYTES).contains(&v) {
        Ok(v)
    } else {
        Err(format!("buffer size {v} bytes is out of range; use 1 MiB..=4 GiB"))
    }
}

fn check_rotate_bytes(v: u64) -> Result<u64, String> {
    if v == 0 || v >= MIN_ROTATE_BYTES {
        Ok(v)
    } else {
        Err(format!(
            "rotating every {v} bytes would make a file per frame; use 0 (never) or at least \
             {MIN_ROTATE_BYTES}"
        ))
    }
}

fn check_count(v: i128) -> Result<u64, String> {
    u64::try_from(v).map_err(|_| {
        if v < 0 {
            format!("{v} is negative; use 0 or a positive integer")
        } else {
            format!("{v} is too large")
        }
    })
}

fn check_directory(s: &str) -> Result<PathBuf, String> {
    if s.is_empty() {
        return Err("empty directory; give the directory for capture files, e.g. \
                    \"/var/lib/capture-daemon\""
            .to_owned());
    }
    if s.contains('\0') {
        return Err("directory contains a NUL character".to_owned());
    }
    Ok(PathBuf::from(s))
}

fn check_group(s: &str) -> Result<Option<FileGroup>, String> {
    if s.is_empty() {
        return Ok(None);
    }
    let gid = match s.parse::<u32>() {
        Ok(gid) => gid,
        Err(_) => crate::sys::group_id(s).ok_or_else(|| {
            format!("no group \"{s}\" on this host (see getent group); create it or use \"\"")
        })?,
    };
    Ok(Some(FileGroup { name: s.to_owned(), gid }))
}

fn check_prefix(s: &str) -> Result<String, String> {
    if s.is_empty() {
        return Err("empty prefix; it starts every file name, e.g. \"capture\"".to_owned());
    }
    if let Some(c) =
        s.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "prefix \"{s}\" contains {c:?}; use only A-Z, a-z, 0-9, '.', '_' and '-' (it becomes \
             part of file names)"
        ));
    }
    if s.starts_with('.') {
        return Err(format!("prefix \"{s}\" starts with '.', which would hide the capture files"));
    }
    if s.len() > MAX_PREFIX_LEN {
        return Err(format!(
            "prefix is {} characters long; use at most {MAX_PREFIX_LEN} (file names are limited)",
            s.len()
        ));
    }
    Ok(s.to_owned())
}

/// Same rules as the kernel's `dev_valid_name()`.
fn check_ifname(s: &str) -> Result<String, String> {
    if s.is_empty() {
        return Err("empty interface name".to_owned());
    }
    if s.len() > MAX_IFNAME_LEN {
        return Err(format!(
            "interface name \"{s}\" is {} bytes long; Linux allows at most {MAX_IFNAME_LEN}",
            s.len()
        ));
    }
    if s == "." || s == ".." {
        return Err(format!("\"{s}\" is not a valid interface name"));
    }
    if let Some(c) =
        s.chars().find(|&c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
    {
        return Err(format!(
            "interface name \"{s}\" contains {c:?}; Linux interface names cannot contain '/', ':', \
             whitespace or control characters"
        ));
    }
    Ok(s.to_owned())
}

fn check_target_name(s: &str) -> Result<String, String> {
    if s.is_empty() {
        return Err("empty target name".to_owned());
    }
    if let Some(c) =
        s.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-')))
    {
        return Err(format!(
            "target name \"{s}\" contains {c:?}; use only A-Z, a-z, 0-9, '.', '_', ':' and '-'"
        ));
    }
    if s.len() > MAX_TARGET_NAME_LEN {
        return Err(format!(
            "target name is {} characters long; use at most {MAX_TARGET_NAME_LEN}",
            s.len()
        ));
    }
    Ok(s.to_owned())
}

/// Parses a MAC address as the config does (also used by `capture --mac`).
pub fn check_mac(s: &str) -> Result<[u8; 6], String> {
    let bad = || {
        format!(
            "invalid MAC address \"{s}\"; write six hex pairs separated by ':' or '-', e.g. \
             \"52:54:00:12:34:56\""
        )
    };
    let separator = if s.contains('-') { '-' } else { ':' };
    let mut mac = [0u8; 6];
    let mut parts = s.split(separator);
    for byte in &mut mac {
        let part = parts.next().ok_or_else(bad)?;
        if part.len() != 2 {
            return Err(bad());
        }
        *byte = u8::from_str_radix(part, 16).map_err(|_| bad())?;
    }
    if parts.next().is_some() {
        return Err(bad());
    }
    if mac == [0; 6] {
        return Err(
            "the all-zero MAC 00:00:00:00:00:00 is not a real address; give the VM's MAC, \
                    or leave out `mac` to match any MAC"
                .to_owned(),
        );
    }
    Ok(mac)
}

fn check_vlan(v: i128) -> Result<u16, String> {
    match v {
        0 => Err("VLAN 0 is reserved (it marks priority-tagged frames); use 1..=4094".to_owned()),
        4095 => Err("VLAN 4095 is reserved; use 1..=4094".to_owned()),
        1..=4094 => u16::try_from(v).map_err(|_| format!("VLAN {v} is out of range; use 1..=4094")),
        _ => Err(format!("VLAN {v} is out of range; use 1..=4094")),
    }
}

fn check_queue(v: i128) -> Result<u32, String> {
    match u32::try_from(v) {
        Ok(q) if q < MAX_QUEUES => Ok(q),
        _ => Err(format!("RX queue {v} is out of range; use 0..={}", MAX_QUEUES - 1)),
    }
}

// ---------------------------------------------------------------------------------------------
// Value types. Each visitor takes one TOML value of the expected kind and checks it right there,
// inside toml's deserialize call, so toml gives the error that value's own span (also inside
// arrays). `expecting` completes serde's "invalid type: ..., expected ..." message.

/// An integer value.
struct IntegerValue<F> {
    expecting: &'static str,
    check: F,
}

impl<T, F: FnOnce(i128) -> Result<T, String>> Visitor<'_> for IntegerValue<F> {
    type Value = T;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.expecting)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        (self.check)(i128::from(v)).map_err(E::custom)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        (self.check)(i128::from(v)).map_err(E::custom)
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<T, E> {
        (self.check)(v).map_err(E::custom)
    }
}

/// A string value.
struct StringValue<F> {
    expecting: &'static str,
    check: F,
}

impl<T, F: FnOnce(&str) -> Result<T, String>> Visitor<'_> for StringValue<F> {
    type Value = T;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.expecting)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        (self.check)(v).map_err(E::custom)
    }
}

/// A size: integer bytes, or a string for [`parse_size`].
struct SizeValue<F> {
    expecting: &'static str,
    check: F,
}

impl<T, F: FnOnce(u64) -> Result<T, String>> Visitor<'_> for SizeValue<F> {
    type Value = T;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.expecting)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        let v = u64::try_from(v).map_err(|_| E::custom(format!("size {v} is negative")))?;
        (self.check)(v).map_err(E::custom)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        (self.check)(v).map_err(E::custom)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        parse_size(v).and_then(self.check).map_err(E::custom)
    }
}

macro_rules! value_type {
    ($name:ident($inner:ty) = $visitor:ident($expecting:literal, $check:expr)) => {
        struct $name($inner);
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                d.deserialize_any($visitor { expecting: $expecting, check: $check }).map($name)
            }
        }
    };
}

value_type!(UnmatchedValue(Unmatched) = StringValue("\"pass\" or \"drop\"", check_unmatched));
value_type!(Snaplen(u32) = IntegerValue("an integer number of bytes", check_snaplen));
value_type!(RingSize(u32) = IntegerValue("an integer power of two", check_ring_size));
value_type!(
    BufferBytes(u64) =
        SizeValue("a size: integer bytes or a string such as \"64 MiB\"", check_buffer_bytes)
);
value_type!(
    RotateBytes(u64) =
        SizeValue("a size: integer bytes or a string such as \"1 GiB\"", check_rotate_bytes)
);
value_type!(Size(u64) = SizeValue("a size: integer bytes or a string such as \"100 GiB\"", Ok));
value_type!(Count(u64) = IntegerValue("an integer", check_count));
value_type!(Directory(PathBuf) = StringValue("a directory path (a string)", check_directory));
value_type!(Prefix(String) = StringValue("a file name prefix (a string)", check_prefix));
value_type!(GroupValue(Option<FileGroup>) = StringValue("a group name (a string)", check_group));
value_type!(IfName(String) = StringValue("an interface name (a string)", check_ifname));
value_type!(
    XdpModeValue(XdpMode) = StringValue("\"auto\", \"native\" or \"generic\"", check_xdp_mode)
);
value_type!(ModeValue(Mode) = StringValue("\"tap\" or \"mirror\"", check_mode));
value_type!(
    TapRingBytes(u64) =
        SizeValue("a size: integer bytes or a string such as \"4 MiB\"", check_tap_ring_bytes)
);
value_type!(ZeroCopyValue(ZeroCopy) = StringValue("\"auto\", \"on\" or \"off\"", check_zero_copy));
value_type!(BusyPoll(u32) = IntegerValue("an integer number of microseconds", check_busy_poll));
value_type!(BatchDelay(u32) = IntegerValue("an integer number of microseconds", check_batch_delay));
value_type!(
    ListenAddr(std::net::SocketAddr) =
        StringValue("an address and port (a string such as \"127.0.0.1:9464\")", check_listen)
);
value_type!(TargetName(String) = StringValue("a target name (a string)", check_target_name));
value_type!(
    Mac([u8; 6]) = StringValue("a MAC address (a string such as \"52:54:00:12:34:56\")", check_mac)
);
value_type!(Vlan(u16) = IntegerValue("a VLAN ID (an integer)", check_vlan));
value_type!(QueueIndex(u32) = IntegerValue("an RX queue index (an integer)", check_queue));

/// `queues`: "all" or a list of indices. Duplicates are checked later, with each element's span.
enum RawQueues {
    All,
    List(Vec<Spanned<QueueIndex>>),
}

impl<'de> Deserialize<'de> for RawQueues {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawQueues;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("\"all\" or a list of RX queue indices such as [0, 1]")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawQueues, E> {
                if v == "all" {
                    Ok(RawQueues::All)
                } else {
                    Err(E::custom(format!(
                        "unknown value \"{v}\"; use \"all\" or a list of RX queue indices such as [0, 1]"
                    )))
                }
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawQueues, A::Error> {
                let mut list = Vec::new();
                while let Some(q) = seq.next_element()? {
                    list.push(q);
                }
                if list.is_empty() {
                    return Err(de::Error::custom(
                        "empty queue list; list at least one RX queue index, or use \"all\"",
                    ));
                }
                Ok(RawQueues::List(list))
            }
        }
        d.deserialize_any(V)
    }
}

/// What to call a section's table in "expected ..." messages.
trait TableName {
    /// One table, e.g. "a [capture] table".
    const ONE: &'static str;
    /// The array, for array-of-tables sections.
    const MANY: &'static str = "";
}

/// One table and nothing else: serde's derived structs would also take an array of values in
/// field order, so `[[capture]]` or `interface = [["eth0"]]` would be misread.
struct Section<T>(T);

impl<'de, T: Deserialize<'de> + TableName> Deserialize<'de> for Section<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de> + TableName> Visitor<'de> for V<T> {
            type Value = Section<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(T::ONE)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Section<T>, A::Error> {
                T::deserialize(de::value::MapAccessDeserializer::new(map)).map(Section)
            }
        }
        d.deserialize_map(V(PhantomData))
    }
}

/// An array of tables (`[[interface]]`, `[[target]]`), each element keeping its span.
struct Tables<T>(Vec<Spanned<Section<T>>>);

impl<'de, T: Deserialize<'de> + TableName> Deserialize<'de> for Tables<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de> + TableName> Visitor<'de> for V<T> {
            type Value = Tables<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(T::MANY)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Tables<T>, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Tables(items))
            }
        }
        d.deserialize_seq(V(PhantomData))
    }
}

// ---------------------------------------------------------------------------------------------
// The file's shape. Field names here are the keys the parser accepts (the docs test reads them).

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    capture: Option<Section<RawCapture>>,
    output: Option<Section<RawOutput>>,
    metrics: Option<Section<RawMetrics>>,
    interface: Option<Spanned<Tables<RawInterface>>>,
    target: Option<Spanned<Tables<RawTarget>>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawCapture {
    unmatched: Option<Spanned<UnmatchedValue>>,
    snaplen: Option<Snaplen>,
    ring_size: Option<RingSize>,
    buffer_bytes: Option<BufferBytes>,
    busy_poll_us: Option<BusyPoll>,
    batch_delay_us: Option<BatchDelay>,
    tap_ring_bytes: Option<TapRingBytes>,
}

impl TableName for RawCapture {
    const ONE: &'static str = "a [capture] table";
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawMetrics {
    enabled: Option<bool>,
    listen: Option<ListenAddr>,
}

impl TableName for RawMetrics {
    const ONE: &'static str = "a [metrics] table";
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawOutput {
    directory: Option<Directory>,
    prefix: Option<Prefix>,
    rotate_bytes: Option<RotateBytes>,
    rotate_seconds: Option<Count>,
    rotate_packets: Option<Count>,
    keep_files: Option<Count>,
    keep_bytes: Option<Size>,
    keep_free_bytes: Option<Size>,
    group: Option<GroupValue>,
}

impl TableName for RawOutput {
    const ONE: &'static str = "an [output] table";
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInterface {
    name: Option<Spanned<IfName>>,
    mode: Option<ModeValue>,
    queues: Option<Spanned<RawQueues>>,
    xdp_mode: Option<Spanned<XdpModeValue>>,
    zero_copy: Option<Spanned<ZeroCopyValue>>,
}

impl TableName for RawInterface {
    const ONE: &'static str = "an [[interface]] table";
    const MANY: &'static str = "one or more [[interface]] tables (note the double brackets)";
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTarget {
    name: Option<Spanned<TargetName>>,
    mac: Option<Mac>,
    vlan: Option<Vlan>,
}

impl TableName for RawTarget {
    const ONE: &'static str = "a [[target]] table";
    const MANY: &'static str = "one or more [[target]] tables (note the double brackets)";
}

/// The `name` of one `[[section]]` table: present, and not used by an earlier table (`seen` maps
/// names to the offset of their first use; `duplicate` words the error from the name and line).
fn unique_name(
    name: Option<(Range<usize>, String)>,
    table_span: Range<usize>,
    section: &str,
    seen: &mut HashMap<String, usize>,
    text: &str,
    duplicate: impl Fn(&str, usize) -> String,
) -> Result<String, Problem> {
    let (span, name) = name.ok_or_else(|| {
        Problem::new(table_span, "name", format!("missing: every [[{section}]] needs a name"))
    })?;
    if let Some(&first) = seen.get(&name) {
        return Err(Problem::new(span, "name", duplicate(&name, line_column(text, first).0)));
    }
    seen.insert(name.clone(), span.start);
    Ok(name)
}

/// An error found after deserialization: where, which key, what.
struct Problem {
    span: Range<usize>,
    key: &'static str,
    message: String,
}

impl Problem {
    fn new(span: Range<usize>, key: &'static str, message: String) -> Self {
        Self { span, key, message }
    }

    fn into_error(self, text: &str, path: &Path) -> ConfigError {
        let (line, column) = line_column(text, self.span.start);
        ConfigError::Invalid {
            path: path.to_owned(),
            line,
            column,
            key: Some(self.key.to_owned()),
            message: self.message,
        }
    }
}

impl RawConfig {
    /// Checks across entries, then builds the public [`Config`].
    fn validate(self, text: &str) -> Result<Config, Problem> {
        let unmatched_span;
        let capture = {
            let d = CaptureConfig::default();
            let r = self.capture.map(|s| s.0).unwrap_or_default();
            unmatched_span = r.unmatched.as_ref().map(Spanned::span);
            CaptureConfig {
                unmatched: r.unmatched.map_or(d.unmatched, |v| v.into_inner().0),
                snaplen: r.snaplen.map_or(d.snaplen, |v| v.0),
                ring_size: r.ring_size.map_or(d.ring_size, |v| v.0),
                buffer_bytes: r.buffer_bytes.map_or(d.buffer_bytes, |v| v.0),
                busy_poll_us: r.busy_poll_us.map_or(d.busy_poll_us, |v| v.0),
                batch_delay_us: r.batch_delay_us.map_or(d.batch_delay_us, |v| v.0),
                tap_ring_bytes: r.tap_ring_bytes.map_or(d.tap_ring_bytes, |v| v.0),
            }
        };
        let output = {
            let d = OutputConfig::default();
            let r = self.output.map(|s| s.0).unwrap_or_default();
            OutputConfig {
                directory: r.directory.map_or(d.directory, |v| v.0),
                prefix: r.prefix.map_or(d.prefix, |v| v.0),
                rotate_bytes: r.rotate_bytes.map_or(d.rotate_bytes, |v| v.0),
                rotate_seconds: r.rotate_seconds.map_or(d.rotate_seconds, |v| v.0),
                rotate_packets: r.rotate_packets.map_or(d.rotate_packets, |v| v.0),
                keep_files: r.keep_files.map_or(d.keep_files, |v| v.0),
                keep_bytes: r.keep_bytes.map_or(d.keep_bytes, |v| v.0),
                keep_free_bytes: r.keep_free_bytes.map_or(d.keep_free_bytes, |v| v.0),
                group: r.group.map_or(d.group, |v| v.0),
            }
        };
        let interfaces = validate_interfaces(self.interface, text)?;
        if capture.unmatched == Unmatched::Drop
            && let Some(tap) = interfaces.iter().find(|i| i.mode == Mode::Tap)
        {
            return Err(Problem::new(
                unmatched_span.unwrap_or(FILE_START),
                "unmatched",
                format!(
                    "\"drop\" applies to mirror mode only, and interface \"{}\" is in tap mode \
                     (the default), where every frame goes on untouched; remove `unmatched`, or \
                     set mode = \"mirror\" on interfaces fed by a SPAN/TAP port",
                    tap.name
                ),
            ));
        }
        let targets = validate_targets(self.target, text)?;
        let metrics = {
            let d = MetricsConfig::default();
            let r = self.metrics.map(|s| s.0).unwrap_or_default();
            MetricsConfig {
                enabled: r.enabled.unwrap_or(d.enabled),
                listen: r.listen.map_or(d.listen, |v| v.0),
            }
        };
        Ok(Config { capture, output, metrics, interfaces, targets })
    }
}

/// Whole-file problems with no better position point at the start of the file.
const FILE_START: Range<usize> = 0..0;

fn validate_interfaces(
    raw: Option<Spanned<Tables<RawInterface>>>,
    text: &str,
) -> Result<Vec<InterfaceConfig>, Problem> {
    let tables = match raw {
        Some(t) if !t.get_ref().0.is_empty() => t.into_inner().0,
        other => {
            return Err(Problem::new(
                other.map_or(FILE_START, |t| t.span()),
                "interface",
                "no [[interface]] configured; add one naming the NIC to capture on, e.g. \
                 [[interface]] name = \"enp65s0f0\""
                    .to_owned(),
            ));
        }
    };
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut interfaces = Vec::with_capacity(tables.len());
    for table in tables {
        let table_span = table.span();
        let raw = table.into_inner().0;
        let name = unique_name(
            raw.name.map(|n| (n.span(), n.into_inner().0)),
            table_span,
            "interface",
            &mut seen,
            text,
            |name, line| {
                format!(
                    "interface \"{name}\" is already configured on line {line}; list each interface once"
                )
            },
        )?;
        let queue_span = raw.queues.as_ref().map(Spanned::span);
        let queues = match raw.queues {
            None => Queues::All,
            Some(q) => match q.into_inner() {
                RawQueues::All => Queues::All,
                RawQueues::List(list) => {
                    let mut out: Vec<u32> = Vec::with_capacity(list.len());
                    for q in list {
                        let index = q.get_ref().0;
                        if out.contains(&index) {
                            return Err(Problem::new(
                                q.span(),
                                "queues",
                                format!("RX queue {index} is listed twice"),
                            ));
                        }
                        out.push(index);
                    }
                    Queues::List(out)
                }
            },
        };
        let mode = raw.mode.map_or(Mode::Tap, |m| m.0);
        if mode == Mode::Tap {
            // Keys of the AF_XDP path: in tap mode they would silently do nothing.
            let spans = [
                ("queues", queue_span),
                ("xdp_mode", raw.xdp_mode.as_ref().map(Spanned::span)),
                ("zero_copy", raw.zero_copy.as_ref().map(Spanned::span)),
            ];
            if let Some((key, Some(span))) = spans.into_iter().find(|(_, s)| s.is_some()) {
                return Err(Problem::new(
                    span,
                    key,
                    format!(
                        "applies to mirror mode only, and interface \"{name}\" is in tap mode (the \
                         default: frames are copied, the traffic goes on untouched); remove `{key}`, \
                         or add mode = \"mirror\" if this NIC is fed by a SPAN/TAP port"
                    ),
                ));
            }
        }
        let xdp_mode = raw.xdp_mode.map_or(XdpMode::Auto, |m| m.into_inner().0);
        let zero_copy = raw.zero_copy.map_or(ZeroCopy::Auto, |z| z.into_inner().0);
        interfaces.push(InterfaceConfig { name, mode, queues, xdp_mode, zero_copy });
    }
    Ok(interfaces)
}

fn validate_targets(
    raw: Option<Spanned<Tables<RawTarget>>>,
    text: &str,
) -> Result<Vec<TargetConfig>, Problem> {
    let tables = match raw {
        Some(t) if !t.get_ref().0.is_empty() => t.into_inner().0,
        other => {
            return Err(Problem::new(
                other.map_or(FILE_START, |t| t.span()),
                "target",
                "no [[target]] configured: nothing would be captured; add one (a target with \
                 neither mac nor vlan captures everything)"
                    .to_owned(),
            ));
        }
    };
    if let Some(extra) = tables.get(MAX_TARGETS) {
        return Err(Problem::new(
            extra.span(),
            "target",
            format!(
                "too many targets: {} configured, at most {MAX_TARGETS} (each takes one bit of the \
                 XDP program's match mask)",
                tables.len()
            ),
        ));
    }
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut targets = Vec::with_capacity(tables.len());
    for table in tables {
        let table_span = table.span();
        let raw = table.into_inner().0;
        let name = unique_name(
            raw.name.map(|n| (n.span(), n.into_inner().0)),
            table_span,
            "target",
            &mut seen,
            text,
            |name, line| {
                format!(
                    "target name \"{name}\" is already used on line {line}; target names must be unique"
                )
            },
        )?;
        targets.push(TargetConfig { name, mac: raw.mac.map(|m| m.0), vlan: raw.vlan.map(|v| v.0) });
    }
    Ok(targets)
}

// ---------------------------------------------------------------------------------------------
// Positions.

/// 1-based line and column (in characters, as editors count) of byte offset `at`.
fn line_column(text: &str, at: usize) -> (usize, usize) {
    let at = at.min(text.len());
    let before = text.get(..at).unwrap_or(text);
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = before.matches('\n').count() + 1;
    let column = without_bom(&before[line_start..], line_start).chars().count() + 1;
    (line, column)
}

/// `s`, less a byte-order mark if it starts the file (`at` is its offset): the TOML parser
/// skips one, and an editor shows none, so columns on line 1 do not count it.
fn without_bom(s: &str, at: usize) -> &str {
    if at == 0 { s.strip_prefix('\u{feff}').unwrap_or(s) } else { s }
}

fn syntax_error(e: &toml::de::Error, text: &str, path: &Path) -> ConfigError {
    let span = e.span().unwrap_or(FILE_START);
    let (line, column) = line_column(text, span.start);
    let mut message = e.message().to_owned();
    // toml says only "duplicate key": name it.
    if message == "duplicate key"
        && let Some(key) = text.get(span.clone())
        && !key.is_empty()
    {
        message = format!("duplicate key `{key}`");
    }
    ConfigError::Syntax {
        path: path.to_owned(),
        line,
        column,
        message,
        snippet: snippet(text, span),
    }
}

/// The offending line with carets under the span, indented like a compiler's.
fn snippet(text: &str, span: Range<usize>) -> String {
    let start = span.start.min(text.len());
    let (Some(before), Some(after)) = (text.get(..start), text.get(start..)) else {
        return String::new();
    };
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line_end = after.find('\n').map_or(text.len(), |i| start + i);
    let content = without_bom(&text[line_start..line_end], line_start).trim_end_matches('\r');
    let (line, _) = line_column(text, start);
    // Keep tabs so the carets line up under tab-indented text.
    let pad: String = without_bom(&before[line_start..], line_start)
        .chars()
        .map(|c| if c == '\t' { '\t' } else { ' ' })
        .collect();
    let end = span.end.clamp(start, line_end);
    let carets = text.get(start..end).map_or(0, |s| s.chars().count()).max(1);
    let gutter = " ".repeat(line.to_string().len());
    format!("\n {gutter} |\n {line} | {content}\n {gutter} | {pad}{}", "^".repeat(carets))
}

fn value_error(e: &toml::de::Error, text: &str, path: &Path) -> ConfigError {
    let span = e.span().unwrap_or(FILE_START);
    let (line, column) = line_column(text, span.start);
    let key = DeTable::parse(text).ok().and_then(|doc| key_at(doc.get_ref(), &span));
    ConfigError::Invalid {
        path: path.to_owned(),
        line,
        column,
        key,
        message: e.message().to_owned(),
    }
}

/// The key whose name or value most tightly encloses `span`.
fn key_at(doc: &DeTable<'_>, span: &Range<usize>) -> Option<String> {
    fn contains(outer: &Range<usize>, inner: &Range<usize>) -> bool {
        outer.start <= inner.start && inner.end <= outer.end
    }
    fn visit(
        key: &str,
        value: &Spanned<DeValue<'_>>,
        span: &Range<usize>,
        best: &mut Option<(usize, String)>,
    ) {
        let vspan = value.span();
        if contains(&vspan, span) && best.as_ref().is_none_or(|(len, _)| vspan.len() <= *len) {
            *best = Some((vspan.len(), key.to_owned()));
        }
        // Table spans cover only their header, so search inside whatever the span.
        match value.get_ref() {
            DeValue::Table(t) => walk(t, span, best),
            DeValue::Array(items) => {
                for item in items.iter() {
                    visit(key, item, span, best);
                }
            }
            _ => {}
        }
    }
    fn walk(table: &DeTable<'_>, span: &Range<usize>, best: &mut Option<(usize, String)>) {
        for (k, v) in table.iter() {
            let kspan = k.span();
            if contains(&kspan, span) && best.as_ref().is_none_or(|(len, _)| kspan.len() <= *len) {
                *best = Some((kspan.len(), k.get_ref().to_string()));
            }
            visit(k.get_ref(), v, span, best);
        }
    }
    let mut best = None;
    walk(doc, span, &mut best);
    best.map(|(_, key)| key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, BTreeSet};

    const P: &str = "/etc/capture-daemon/capture.toml";
    /// The smallest valid tail: one interface, one catch-all target.
    const BASE: &str = "[[interface]]\nname = \"eth0\"\n\n[[target]]\nname = \"all\"\n";
    const EXAMPLE: &str = include_str!("../../config/capture.toml");
    const DOCS: &str = include_str!("../../docs/config.md");

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new(P))
    }

    #[track_caller]
    fn ok(text: &str) -> Config {
        parse(text)
            .unwrap_or_else(|e| panic!("expected a valid config, got:\n{e}\n--- input:\n{text}"))
    }

    #[track_caller]
    fn err(text: &str) -> String {
        match parse(text) {
            Ok(c) => panic!("expected an error, got {c:?}\n--- input:\n{text}"),
            Err(e) => e.to_string(),
        }
    }

    /// `extra` (sections before the interface and target) + BASE.
    fn with_base(extra: &str) -> String {
        format!("{extra}\n{BASE}")
    }

    fn target(body: &str) -> String {
        format!("[[interface]]\nname = \"eth0\"\n\n[[target]]\n{body}\n")
    }

    fn interface(body: &str) -> String {
        format!("[[interface]]\n{body}\n\n[[target]]\nname = \"all\"\n")
    }

    // --- good configs ----------------------------------------------------------------------

    #[test]
    fn minimal_config_gets_defaults() {
        let c = ok(BASE);
        assert_eq!(c.capture, CaptureConfig::default());
        assert_eq!(c.output, OutputConfig::default());
        assert_eq!(
            c.interfaces,
            vec![InterfaceConfig {
                name: "eth0".into(),
                mode: Mode::Tap,
                queues: Queues::All,
                xdp_mode: XdpMode::Auto,
                zero_copy: ZeroCopy::Auto,
            }]
        );
        assert_eq!(c.targets, vec![TargetConfig { name: "all".into(), mac: None, vlan: None }]);
    }

    #[test]
    fn defaults_are_the_documented_values() {
        let c = CaptureConfig::default();
        assert_eq!(
            (c.unmatched, c.snaplen, c.ring_size, c.buffer_bytes, c.tap_ring_bytes),
            (Unmatched::Pass, 0, 4096, 64 << 20, 4 << 20)
        );
        let o = OutputConfig::default();
        assert_eq!(o.directory, Path::new("/var/lib/capture-daemon"));
        assert_eq!(o.prefix, "capture");
        assert_eq!(
            (o.rotate_bytes, o.rotate_seconds, o.rotate_packets, o.keep_files, o.keep_bytes),
            (1 << 30, 300, 0, 0, 0)
        );
    }

    #[test]
    fn every_key_set() {
        let c = ok(r#"
[capture]
unmatched = "drop"
snaplen = 128
ring_size = 2048
buffer_bytes = 8388608
busy_poll_us = 50
batch_delay_us = 500
tap_ring_bytes = "16 MiB"

[output]
directory = "/srv/pcap"
prefix = "hv01_cap-1.0"
rotate_bytes = "500 MB"
rotate_seconds = 0
rotate_packets = 1000000
keep_files = 48
keep_bytes = "2 TiB"
keep_free_bytes = "50 GiB"
group = "0"

[[interface]]
name = "enp65s0f0"
mode = "mirror"
queues = [0, 3, 1]
xdp_mode = "native"
zero_copy = "on"

[[interface]]
name = "bond0.100"
mode = "mirror"
xdp_mode = "generic"
zero_copy = "off"

[[target]]
name = "web01"
mac = "52-54-00-AB-cd-EF"
vlan = 4094

[[target]]
name = "vlan:7"
vlan = 1

[[target]]
name = "bcast"
mac = "ff:ff:ff:ff:ff:ff"
"#);
        assert_eq!(
            c.capture,
            CaptureConfig {
                unmatched: Unmatched::Drop,
                snaplen: 128,
                ring_size: 2048,
                buffer_bytes: 8 << 20,
                busy_poll_us: 50,
                batch_delay_us: 500,
                tap_ring_bytes: 16 << 20,
            }
        );
        assert_eq!(
            c.output,
            OutputConfig {
                directory: "/srv/pcap".into(),
                prefix: "hv01_cap-1.0".into(),
                rotate_bytes: 500_000_000,
                rotate_seconds: 0,
                rotate_packets: 1_000_000,
                keep_files: 48,
                keep_bytes: 2 << 40,
                keep_free_bytes: 50 << 30,
                group: Some(FileGroup { name: "0".into(), gid: 0 }),
            }
        );
        assert_eq!(
            c.interfaces,
            vec![
                InterfaceConfig {
                    name: "enp65s0f0".into(),
                    mode: Mode::Mirror,
                    queues: Queues::List(vec![0, 3, 1]),
                    xdp_mode: XdpMode::Native,
                    zero_copy: ZeroCopy::On,
                },
                InterfaceConfig {
                    name: "bond0.100".into(),
                    mode: Mode::Mirror,
                    queues: Queues::All,
                    xdp_mode: XdpMode::Generic,
                    zero_copy: ZeroCopy::Off,
                },
            ]
        );
        assert_eq!(
            c.targets,
            vec![
                TargetConfig {
                    name: "web01".into(),
                    mac: Some([0x52, 0x54, 0x00, 0xab, 0xcd, 0xef]),
                    vlan: Some(4094)
                },
                TargetConfig { name: "vlan:7".into(), mac: None, vlan: Some(1) },
                TargetConfig { name: "bcast".into(), mac: Some([0xff; 6]), vlan: None },
            ]
        );
    }

    #[test]
    fn inline_tables_and_dotted_keys() {
        let c = ok(r#"
capture.snaplen = 96
output = { prefix = "x", keep_files = 3 }
interface = [{ name = "eth1", mode = "mirror", queues = [2] }]
target = [{ name = "a", vlan = 5 }, { name = "b" }]
"#);
        assert_eq!(c.capture.snaplen, 96);
        assert_eq!((c.output.prefix.as_str(), c.output.keep_files), ("x", 3));
        assert_eq!(c.interfaces[0].queues, Queues::List(vec![2]));
        assert_eq!(c.targets.len(), 2);
    }

    #[test]
    fn boundary_values_accepted() {
        for (section, key, value) in [
            ("capture", "snaplen", "14"),
            ("capture", "snaplen", "65535"),
            ("capture", "ring_size", "64"),
            ("capture", "ring_size", "65536"),
            ("capture", "buffer_bytes", "\"1 MiB\""),
            ("capture", "buffer_bytes", "4294967296"),
            ("capture", "busy_poll_us", "0"),
            ("capture", "busy_poll_us", "1000"),
            ("capture", "batch_delay_us", "0"),
            ("capture", "batch_delay_us", "20000"),
            ("output", "rotate_bytes", "0"),
            ("output", "rotate_bytes", "4096"),
            ("output", "rotate_bytes", "\"4 KiB\""),
            ("output", "keep_bytes", "\"0\""),
        ] {
            ok(&with_base(&format!("[{section}]\n{key} = {value}")));
        }
        ok(&interface("name = \"a23456789012345\"\nmode = \"mirror\"\nqueues = [255, 0]"));
        ok(&target(&format!("name = \"{}\"\nvlan = 1", "t".repeat(64))));
    }

    #[test]
    fn target_without_mac_or_vlan_is_fine() {
        let c = ok(&target("name = \"everything\""));
        assert_eq!(c.targets[0], TargetConfig { name: "everything".into(), mac: None, vlan: None });
    }

    #[test]
    fn sixty_four_targets_are_allowed() {
        let mut text = String::from("[[interface]]\nname = \"eth0\"\n");
        for i in 0..64 {
            text += &format!("[[target]]\nname = \"t{i}\"\nvlan = {}\n", i + 1);
        }
        assert_eq!(ok(&text).targets.len(), 64);
    }

    #[test]
    fn crlf_line_endings() {
        let text = "[capture]\r\nsnaplen = 64\r\n\r\n[[interface]]\r\nname = \"eth0\"\r\n[[target]]\r\nname = \"a\"\r\nvlan = 4095\r\n";
        assert_eq!(err(text), format!("{P}:8:8: key `vlan`: VLAN 4095 is reserved; use 1..=4094"));
    }

    // --- the example file and the docs -----------------------------------------------------

    #[test]
    fn example_config_is_valid_and_shows_the_defaults() {
        let c = Config::parse(EXAMPLE, Path::new("config/capture.toml"))
            .unwrap_or_else(|e| panic!("config/capture.toml: {e}"));
        // The example claims every value it shows is the default.
        assert_eq!(c.capture, CaptureConfig::default());
        assert_eq!(c.output, OutputConfig::default());
        // A tap-mode interface with every default, and a mirror-mode one with its keys at
        // their defaults.
        let mirror = |name: &str| InterfaceConfig {
            name: name.into(),
            mode: Mode::Mirror,
            queues: Queues::All,
            xdp_mode: XdpMode::Auto,
            zero_copy: ZeroCopy::Auto,
        };
        assert_eq!(
            c.interfaces,
            vec![InterfaceConfig { mode: Mode::Tap, ..mirror("br0") }, mirror("enp65s0f0")]
        );
        assert_eq!(c.targets.len(), 2);
        assert_eq!(c.targets[0].mac.map(|m| format_mac(&m)).as_deref(), Some("52:54:00:12:34:56"));
        assert_eq!(c.targets[0].vlan, Some(100));
    }

    /// Field names of a derived `Deserialize` struct: the keys the parser accepts.
    fn fields_of<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
        struct Grab<'a>(&'a mut &'static [&'static str]);
        impl<'de> Deserializer<'de> for Grab<'_> {
            type Error = de::value::Error;
            fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
                Err(de::Error::custom("not a struct"))
            }
            fn deserialize_struct<V: Visitor<'de>>(
                self,
                _: &'static str,
                fields: &'static [&'static str],
                _: V,
            ) -> Result<V::Value, Self::Error> {
                *self.0 = fields;
                Err(de::Error::custom("fields taken"))
            }
            serde::forward_to_deserialize_any! {
                bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
                option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
                ignored_any
            }
        }
        let mut fields: &'static [&'static str] = &[];
        let _ = T::deserialize(Grab(&mut fields));
        fields
    }

    /// Each section the parser knows, with the keys it accepts, straight from the raw structs.
    fn parser_sections() -> BTreeMap<&'static str, BTreeSet<&'static str>> {
        let sections = BTreeMap::from([
            ("capture", fields_of::<RawCapture>().iter().copied().collect()),
            ("output", fields_of::<RawOutput>().iter().copied().collect()),
            ("metrics", fields_of::<RawMetrics>().iter().copied().collect()),
            ("interface", fields_of::<RawInterface>().iter().copied().collect()),
            ("target", fields_of::<RawTarget>().iter().copied().collect()),
        ]);
        // A section added to RawConfig must be added above (and so to the docs and the example).
        let top: BTreeSet<&str> = fields_of::<RawConfig>().iter().copied().collect();
        assert_eq!(top, sections.keys().copied().collect::<BTreeSet<_>>());
        assert!(sections.values().all(|keys: &BTreeSet<&str>| !keys.is_empty()));
        sections
    }

    /// docs/config.md's key tables: section ("## `[capture]`") -> rows (key, default cell).
    fn doc_tables() -> BTreeMap<String, Vec<(String, String)>> {
        let mut tables: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
        let mut section: Option<String> = None;
        for line in DOCS.lines() {
            if let Some(heading) = line.strip_prefix("## ") {
                section = heading
                    .trim()
                    .strip_prefix('`')
                    .and_then(|h| h.strip_suffix('`'))
                    .map(|h| h.trim_matches(['[', ']']).to_owned());
                if let Some(s) = &section {
                    tables.entry(s.clone()).or_default();
                }
            } else if let Some(s) = &section
                && line.starts_with("| `")
            {
                let cells: Vec<&str> = line.split('|').map(str::trim).collect();
                assert!(cells.len() >= 5, "docs/config.md: short table row: {line}");
                let key = cells[1].trim_matches('`').to_owned();
                tables.entry(s.clone()).or_default().push((key, cells[3].to_owned()));
            }
        }
        tables
    }

    #[test]
    fn docs_key_tables_match_the_parser() {
        let parser = parser_sections();
        let docs = doc_tables();
        let doc_sections: BTreeSet<&str> = docs.keys().map(String::as_str).collect();
        assert_eq!(doc_sections, parser.keys().copied().collect(), "docs/config.md sections");
        for (section, keys) in &parser {
            let documented: BTreeSet<&str> =
                docs[*section].iter().map(|(k, _)| k.as_str()).collect();
            assert_eq!(
                &documented, keys,
                "docs/config.md: keys of [{section}] (left: docs, right: parser)"
            );
            for key in keys {
                assert!(DOCS.contains(&format!("`{key}`")), "docs/config.md never writes `{key}`");
            }
        }
    }

    #[test]
    fn example_has_every_key_and_only_known_ones() {
        let example: toml::Table = toml::from_str(EXAMPLE).expect("config/capture.toml is TOML");
        let parser = parser_sections();
        assert_eq!(
            example.keys().map(String::as_str).collect::<BTreeSet<_>>(),
            parser.keys().copied().collect()
        );
        for (section, keys) in &parser {
            let tables: Vec<&toml::Table> = match &example[*section] {
                toml::Value::Table(t) => vec![t],
                toml::Value::Array(a) => a.iter().filter_map(toml::Value::as_table).collect(),
                other => panic!("[{section}] is {other:?}"),
            };
            let present: BTreeSet<&str> =
                tables.iter().flat_map(|t| t.keys()).map(String::as_str).collect();
            assert_eq!(
                &present, keys,
                "config/capture.toml: keys of [{section}] (left: example, right: parser)"
            );
        }
    }

    /// The example file's value for `section.key`, as TOML source.
    fn example_value(section: &str, key: &str) -> String {
        let example: toml::Table = toml::from_str(EXAMPLE).expect("config/capture.toml is TOML");
        let value = match &example[section] {
            toml::Value::Array(a) => a.iter().find_map(|t| t.get(key)),
            t => t.get(key),
        };
        value.unwrap_or_else(|| panic!("config/capture.toml has no {section}.{key}")).to_string()
    }

    /// Keys that apply to mirror mode only (an error on a tap-mode interface).
    const MIRROR_KEYS: [&str; 3] = ["queues", "xdp_mode", "zero_copy"];

    /// A minimal valid config with `key = value` in `section` (a mirror-mode interface for the
    /// keys of mirror mode).
    fn config_with(section: &str, key: &str, value: &str) -> String {
        let mirror = MIRROR_KEYS.iter().any(|k| key.starts_with(k));
        match section {
            "interface" if key == "name" => interface(&format!("name = {value}")),
            "interface" if mirror => {
                interface(&format!("name = \"eth0\"\nmode = \"mirror\"\n{key} = {value}"))
            }
            "interface" => interface(&format!("name = \"eth0\"\n{key} = {value}")),
            "target" if key == "name" => target(&format!("name = {value}")),
            "target" => target(&format!("name = \"t\"\n{key} = {value}")),
            _ => with_base(&format!("[{section}]\n{key} = {value}")),
        }
    }

    #[test]
    fn each_documented_key_is_accepted_and_a_misspelt_one_is_not() {
        for (section, rows) in doc_tables() {
            for (key, _) in rows {
                ok(&config_with(&section, &key, &example_value(&section, &key)));
                let typo = format!("{key}x");
                let e = err(&config_with(&section, &typo, &example_value(&section, &key)));
                assert!(
                    e.contains(&format!("key `{typo}`: unknown field `{typo}`, expected")),
                    "{e}"
                );
            }
        }
    }

    #[test]
    fn documented_defaults_are_the_parser_defaults() {
        for (section, rows) in doc_tables() {
            for (key, default) in rows {
                let literal = default.strip_prefix('`').and_then(|d| d.strip_suffix('`'));
                let Some(literal) = literal else {
                    // Only required and optional-without-default keys may lack a literal default.
                    assert!(
                        matches!(section.as_str(), "interface" | "target")
                            && ["name", "mac", "vlan"].contains(&key.as_str()),
                        "docs/config.md: [{section}] {key} has no default written as `value`: {default}"
                    );
                    continue;
                };
                let explicit = ok(&config_with(&section, &key, literal));
                let implicit = match section.as_str() {
                    "interface" if MIRROR_KEYS.contains(&key.as_str()) => {
                        ok(&interface("name = \"eth0\"\nmode = \"mirror\""))
                    }
                    "interface" => ok(&interface("name = \"eth0\"")),
                    "target" => ok(&target("name = \"t\"")),
                    _ => ok(BASE),
                };
                assert_eq!(
                    explicit, implicit,
                    "docs/config.md: [{section}] {key} default {literal}"
                );
            }
        }
    }

    #[test]
    fn interfaces_are_in_tap_mode_unless_they_say_mirror() {
        let c = ok(&interface("name = \"br0\""));
        assert_eq!(c.interfaces[0].mode, Mode::Tap);
        let c = ok(&interface("name = \"span0\"\nmode = \"mirror\"\nxdp_mode = \"native\""));
        assert_eq!(
            (c.interfaces[0].mode, c.interfaces[0].xdp_mode),
            (Mode::Mirror, XdpMode::Native)
        );
        assert_eq!(
            err(&interface("name = \"eth0\"\nmode = \"steal\"")),
            format!("{P}:3:8: key `mode`: unknown mode \"steal\"; use \"tap\" or \"mirror\"")
        );
    }

    #[test]
    fn mirror_only_settings_on_a_tap_interface_are_errors() {
        for (line, column) in
            [("queues = [0]", 10), ("xdp_mode = \"native\"", 12), ("zero_copy = \"on\"", 13)]
        {
            let key = line.split(' ').next().unwrap_or_default();
            let e = err(&interface(&format!("name = \"vnet3\"\n{line}")));
            assert_eq!(
                e,
                format!(
                    "{P}:3:{column}: key `{key}`: applies to mirror mode only, and interface \"vnet3\" \
                     is in tap mode (the default: frames are copied, the traffic goes on \
                     untouched); remove `{key}`, or add mode = \"mirror\" if this NIC is fed by a \
                     SPAN/TAP port"
                )
            );
        }
        let e = err(&with_base("[capture]\nunmatched = \"drop\""));
        assert!(
            e.starts_with(&format!(
                "{P}:2:13: key `unmatched`: \"drop\" applies to mirror mode only"
            )),
            "{e}"
        );
        ok(&interface("name = \"span0\"\nmode = \"mirror\"")
            .replace("[[interface]]", "[capture]\nunmatched = \"drop\"\n\n[[interface]]"));
    }

    #[test]
    fn tap_ring_bytes_is_a_power_of_two_in_range() {
        let text = |v: &str| with_base(&format!("[capture]\ntap_ring_bytes = {v}"));
        assert_eq!(ok(&text("\"256 KiB\"")).capture.tap_ring_bytes, 256 << 10);
        assert_eq!(
            err(&text("\"3 MiB\"")),
            format!(
                "{P}:2:18: key `tap_ring_bytes`: ring size 3145728 bytes is not a power of two; use e.g. 4194304 (4 MiB)"
            )
        );
        assert_eq!(
            err(&text("4096")),
            format!(
                "{P}:2:18: key `tap_ring_bytes`: ring size 4096 bytes is out of range; use a power of two in 64 KiB..=1 GiB"
            )
        );
    }

    // --- value errors, with positions --------------------------------------------------------

    #[test]
    fn metrics_listen_needs_a_fixed_port() {
        let text = |l: &str| with_base(&format!("[metrics]\nlisten = \"{l}\""));
        assert_eq!(ok(&text("[::1]:9000")).metrics.listen.port(), 9000);
        let e = err(&text("127.0.0.1:0"));
        assert!(
            e.contains(":2:10: key `listen`: \"127.0.0.1:0\": port 0 is not a fixed port"),
            "{e}"
        );
    }

    #[test]
    fn output_group_is_looked_up_when_the_config_is_read() {
        let text = |g: &str| with_base(&format!("[output]\ngroup = \"{g}\""));
        // "root" is group 0 on every Linux host.
        assert_eq!(ok(&text("root")).output.group, Some(FileGroup { name: "root".into(), gid: 0 }));
        assert_eq!(ok(&text("")).output.group, None);
        let e = err(&text("no-such-group-x"));
        assert!(e.contains(":2:9: key `group`: no group \"no-such-group-x\" on this host"), "{e}");
    }

    #[test]
    fn vlan_errors_name_line_column_and_key() {
        let text = target("name = \"web01\"\nvlan = 4095");
        // [[interface]], name, blank, [[target]], name, vlan: line 6, value at column 8.
        assert_eq!(err(&text), format!("{P}:6:8: key `vlan`: VLAN 4095 is reserved; use 1..=4094"));
        assert_eq!(
            err(&target("name = \"a\"\nvlan = 0")),
            format!(
                "{P}:6:8: key `vlan`: VLAN 0 is reserved (it marks priority-tagged frames); use 1..=4094"
            )
        );
        assert_eq!(
            err(&target("name = \"a\"\nvlan = 5000")),
            format!("{P}:6:8: key `vlan`: VLAN 5000 is out of range; use 1..=4094")
        );
        assert_eq!(
            err(&target("name = \"a\"\nvlan = -3")),
            format!("{P}:6:8: key `vlan`: VLAN -3 is out of range; use 1..=4094")
        );
        assert_eq!(
            err(&target("name = \"a\"\nvlan = \"100\"")),
            format!(
                "{P}:6:8: key `vlan`: invalid type: string \"100\", expected a VLAN ID (an integer)"
            )
        );
    }

    #[test]
    fn mac_errors() {
        let bad = |mac: &str| {
            format!(
                "{P}:6:7: key `mac`: invalid MAC address \"{mac}\"; write six hex pairs separated by ':' or '-', e.g. \"52:54:00:12:34:56\""
            )
        };
        for mac in [
            "52:54:00:12:34",
            "52:54:00:12:34:56:78",
            "52:54:00:12:34:5g",
            "52:54-00:12:34:56",
            "5254.0012.3456",
            "525400123456",
            "",
            "52:54:00:12:34:5",
            "52:54:00:12:34:566",
        ] {
            assert_eq!(err(&target(&format!("name = \"a\"\nmac = \"{mac}\""))), bad(mac), "{mac}");
        }
        assert_eq!(
            err(&target("name = \"a\"\nmac = \"00:00:00:00:00:00\"")),
            format!(
                "{P}:6:7: key `mac`: the all-zero MAC 00:00:00:00:00:00 is not a real address; give the VM's MAC, or leave out `mac` to match any MAC"
            )
        );
        assert_eq!(
            err(&target("name = \"a\"\nmac = 42")),
            format!(
                "{P}:6:7: key `mac`: invalid type: integer `42`, expected a MAC address (a string such as \"52:54:00:12:34:56\")"
            )
        );
        // Any other MAC is accepted, multicast and broadcast included.
        for (mac, bytes) in [
            ("FF-FF-FF-FF-FF-FF", [0xff; 6]),
            ("01:00:5e:00:00:fb", [0x01, 0x00, 0x5e, 0x00, 0x00, 0xfb]),
            ("00:00:00:00:00:01", [0, 0, 0, 0, 0, 1]),
        ] {
            assert_eq!(
                ok(&target(&format!("name = \"a\"\nmac = \"{mac}\""))).targets[0].mac,
                Some(bytes)
            );
        }
    }

    #[test]
    fn format_mac_is_lower_case_colon_separated() {
        assert_eq!(format_mac(&[0x52, 0x54, 0x00, 0x12, 0x34, 0x56]), "52:54:00:12:34:56");
        assert_eq!(format_mac(&[0xAB, 0xcd, 0xEF, 0x01, 0x02, 0xff]), "ab:cd:ef:01:02:ff");
        let parsed = check_mac(&format_mac(&[1, 2, 3, 4, 5, 6])).expect("round trip");
        assert_eq!(parsed, [1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn enum_display() {
        assert_eq!(Unmatched::Pass.to_string(), "pass");
        assert_eq!(Unmatched::Drop.to_string(), "drop");
        assert_eq!(XdpMode::Auto.to_string(), "auto");
        assert_eq!(XdpMode::Native.to_string(), "native");
        assert_eq!(XdpMode::Generic.to_string(), "generic");
        // Display gives back what the parser takes.
        for m in [XdpMode::Auto, XdpMode::Native, XdpMode::Generic] {
            assert_eq!(check_xdp_mode(&m.to_string()), Ok(m));
        }
        for u in [Unmatched::Pass, Unmatched::Drop] {
            assert_eq!(check_unmatched(&u.to_string()), Ok(u));
        }
    }

    #[test]
    fn capture_errors() {
        let e = |body: &str| err(&with_base(&format!("[capture]\n{body}")));
        assert_eq!(
            e("batch_delay_us = -1"),
            format!(
                "{P}:2:18: key `batch_delay_us`: batch delay -1 is out of range; use 0 (read at once) to 20000 microseconds"
            )
        );
        assert_eq!(
            e("busy_poll_us = 5000"),
            format!(
                "{P}:2:16: key `busy_poll_us`: busy-poll time 5000 is out of range; use 0 (off) to 1000 microseconds"
            )
        );
        assert_eq!(
            e("unmatched = \"Drop\""),
            format!(
                "{P}:2:13: key `unmatched`: unknown verdict \"Drop\"; use \"pass\" or \"drop\""
            )
        );
        assert_eq!(
            e("unmatched = true"),
            format!(
                "{P}:2:13: key `unmatched`: invalid type: boolean `true`, expected \"pass\" or \"drop\""
            )
        );
        assert_eq!(
            e("snaplen = 13"),
            format!(
                "{P}:2:11: key `snaplen`: snap length 13 is shorter than an Ethernet header; use 0 (whole frame) or 14..=65535"
            )
        );
        assert_eq!(
            e("snaplen = 65536"),
            format!(
                "{P}:2:11: key `snaplen`: snap length 65536 is out of range; use 0 (whole frame) or 14..=65535"
            )
        );
        assert_eq!(
            e("snaplen = -1"),
            format!(
                "{P}:2:11: key `snaplen`: snap length -1 is out of range; use 0 (whole frame) or 14..=65535"
            )
        );
        assert_eq!(
            e("snaplen = 1.5"),
            format!(
                "{P}:2:11: key `snaplen`: invalid type: floating point `1.5`, expected an integer number of bytes"
            )
        );
        assert_eq!(
            e("ring_size = 1000"),
            format!(
                "{P}:2:13: key `ring_size`: ring size 1000 is not a power of two; use e.g. 1024"
            )
        );
        assert_eq!(
            e("ring_size = 32"),
            format!(
                "{P}:2:13: key `ring_size`: ring size 32 is out of range; use a power of two in 64..=65536"
            )
        );
        assert_eq!(
            e("ring_size = 131072"),
            format!(
                "{P}:2:13: key `ring_size`: ring size 131072 is out of range; use a power of two in 64..=65536"
            )
        );
        assert_eq!(
            e("buffer_bytes = \"512 KiB\""),
            format!(
                "{P}:2:16: key `buffer_bytes`: buffer size 524288 bytes is out of range; use 1 MiB..=4 GiB"
            )
        );
        assert_eq!(
            e("buffer_bytes = \"4.5 GiB\""),
            format!(
                "{P}:2:16: key `buffer_bytes`: buffer size 4831838208 bytes is out of range; use 1 MiB..=4 GiB"
            )
        );
        assert_eq!(
            e("buffer_bytes = -1"),
            format!("{P}:2:16: key `buffer_bytes`: size -1 is negative")
        );
        assert_eq!(
            e("buffer_bytes = 64.0"),
            format!(
                "{P}:2:16: key `buffer_bytes`: invalid type: floating point `64.0`, expected a size: integer bytes or a string such as \"64 MiB\""
            )
        );
        assert_eq!(
            e("buffer_bytes = \"64 MiBs\""),
            format!(
                "{P}:2:16: key `buffer_bytes`: invalid size \"64 MiBs\": unknown unit \"MiBs\"; use B, k, kB, KiB, M, MB, MiB, G, GB, GiB, T, TB or TiB"
            )
        );
    }

    #[test]
    fn output_errors() {
        let e = |body: &str| err(&with_base(&format!("[output]\n{body}")));
        assert_eq!(
            e("directory = \"\""),
            format!(
                "{P}:2:13: key `directory`: empty directory; give the directory for capture files, e.g. \"/var/lib/capture-daemon\""
            )
        );
        assert_eq!(
            e("prefix = \"\""),
            format!(
                "{P}:2:10: key `prefix`: empty prefix; it starts every file name, e.g. \"capture\""
            )
        );
        assert_eq!(
            e("prefix = \".cap\""),
            format!(
                "{P}:2:10: key `prefix`: prefix \".cap\" starts with '.', which would hide the capture files"
            )
        );
        assert_eq!(
            e("prefix = \"hv/01\""),
            format!(
                "{P}:2:10: key `prefix`: prefix \"hv/01\" contains '/'; use only A-Z, a-z, 0-9, '.', '_' and '-' (it becomes part of file names)"
            )
        );
        assert_eq!(
            e(&format!("prefix = \"{}\"", "p".repeat(129))),
            format!(
                "{P}:2:10: key `prefix`: prefix is 129 characters long; use at most 128 (file names are limited)"
            )
        );
        assert_eq!(
            e("rotate_bytes = 100"),
            format!(
                "{P}:2:16: key `rotate_bytes`: rotating every 100 bytes would make a file per frame; use 0 (never) or at least 4096"
            )
        );
        assert_eq!(
            e("rotate_seconds = -5"),
            format!("{P}:2:18: key `rotate_seconds`: -5 is negative; use 0 or a positive integer")
        );
        assert_eq!(
            e("rotate_packets = \"1M\""),
            format!(
                "{P}:2:18: key `rotate_packets`: invalid type: string \"1M\", expected an integer"
            )
        );
        assert_eq!(
            e("keep_files = 2.0"),
            format!(
                "{P}:2:14: key `keep_files`: invalid type: floating point `2.0`, expected an integer"
            )
        );
        assert_eq!(
            e("keep_bytes = \"-1 GiB\""),
            format!(
                "{P}:2:14: key `keep_bytes`: invalid size \"-1 GiB\": sizes cannot be negative"
            )
        );
        assert_eq!(
            ok(&with_base("[output]\nkeep_bytes = \"10 GB\"")).output.keep_bytes,
            10_000_000_000
        );
    }

    #[test]
    fn columns_count_characters_not_bytes() {
        // "ü" and "ï" are two bytes each in UTF-8; editors count them as one column.
        let text = with_base("output = { directory = \"/srv/üï\", prefix = \".x\" }");
        assert_eq!(
            err(&text),
            format!(
                "{P}:1:44: key `prefix`: prefix \".x\" starts with '.', which would hide the capture files"
            )
        );
    }

    #[test]
    fn interface_errors() {
        assert_eq!(
            err(&interface("name = \"eth0\"\nzero_copy = \"yes\"")),
            format!(
                "{P}:3:13: key `zero_copy`: unknown zero-copy setting \"yes\"; use \"auto\", \"on\" or \"off\""
            )
        );
        assert_eq!(
            err(&interface("name = \"enp65s0f0np0xyzw\"")),
            format!(
                "{P}:2:8: key `name`: interface name \"enp65s0f0np0xyzw\" is 16 bytes long; Linux allows at most 15"
            )
        );
        assert_eq!(
            err(&interface("name = \"eth 0\"")),
            format!(
                "{P}:2:8: key `name`: interface name \"eth 0\" contains ' '; Linux interface names cannot contain '/', ':', whitespace or control characters"
            )
        );
        assert!(err(&interface("name = \"eth/0\"")).contains("contains '/'"));
        assert!(err(&interface("name = \"eth0:1\"")).contains("contains ':'"));
        assert_eq!(
            err(&interface("name = \"\"")),
            format!("{P}:2:8: key `name`: empty interface name")
        );
        assert_eq!(
            err(&interface("name = \"..\"")),
            format!("{P}:2:8: key `name`: \"..\" is not a valid interface name")
        );
        assert_eq!(
            err(&interface("queues = \"all\"")),
            format!("{P}:1:1: key `name`: missing: every [[interface]] needs a name")
        );
        assert_eq!(
            err(&interface("name = \"eth0\"\nqueues = [0, 1, 300]")),
            format!("{P}:3:17: key `queues`: RX queue 300 is out of range; use 0..=255")
        );
        assert_eq!(
            err(&interface("name = \"eth0\"\nqueues = [0, -1]")),
            format!("{P}:3:14: key `queues`: RX queue -1 is out of range; use 0..=255")
        );
        assert_eq!(
            err(&interface("name = \"eth0\"\nqueues = [2, 3, 2]")),
            format!("{P}:3:17: key `queues`: RX queue 2 is listed twice")
        );
        assert_eq!(
            err(&interface("name = \"eth0\"\nqueues = []")),
            format!(
                "{P}:3:10: key `queues`: empty queue list; list at least one RX queue index, or use \"all\""
            )
        );
        assert_eq!(
            err(&interface("name = \"eth0\"\nqueues = \"any\"")),
            format!(
                "{P}:3:10: key `queues`: unknown value \"any\"; use \"all\" or a list of RX queue indices such as [0, 1]"
            )
        );
        assert_eq!(
            err(&interface("name = \"eth0\"\nqueues = 4")),
            format!(
                "{P}:3:10: key `queues`: invalid type: integer `4`, expected \"all\" or a list of RX queue indices such as [0, 1]"
            )
        );
        assert_eq!(
            err(&interface("name = \"eth0\"\nxdp_mode = \"skb\"")),
            format!(
                "{P}:3:12: key `xdp_mode`: unknown XDP mode \"skb\"; use \"auto\", \"native\" or \"generic\""
            )
        );
        assert_eq!(
            err(
                "[[interface]]\nname = \"eth0\"\n[[interface]]\nname = \"eth0\"\n[[target]]\nname = \"a\"\n"
            ),
            format!(
                "{P}:4:8: key `name`: interface \"eth0\" is already configured on line 2; list each interface once"
            )
        );
    }

    #[test]
    fn missing_or_empty_interfaces() {
        let msg = "no [[interface]] configured; add one naming the NIC to capture on, e.g. [[interface]] name = \"enp65s0f0\"";
        assert_eq!(err("[[target]]\nname = \"a\"\n"), format!("{P}:1:1: key `interface`: {msg}"));
        assert_eq!(
            err("[capture]\ninterface = 1\n"),
            format!(
                "{P}:2:1: key `interface`: unknown field `interface`, expected one of `unmatched`, `snaplen`, `ring_size`, `buffer_bytes`, `busy_poll_us`, `batch_delay_us`, `tap_ring_bytes`"
            )
        );
        assert_eq!(
            err("interface = []\n[[target]]\nname = \"a\"\n"),
            format!("{P}:1:13: key `interface`: {msg}")
        );
        assert_eq!(
            err("[interface]\nname = \"eth0\"\n[[target]]\nname = \"a\"\n"),
            format!(
                "{P}:1:1: key `interface`: invalid type: map, expected one or more [[interface]] tables (note the double brackets)"
            )
        );
    }

    #[test]
    fn target_errors() {
        let zero = "no [[target]] configured: nothing would be captured; add one (a target with neither mac nor vlan captures everything)";
        assert_eq!(
            err("[[interface]]\nname = \"eth0\"\n"),
            format!("{P}:1:1: key `target`: {zero}")
        );
        assert_eq!(
            err("target = []\n[[interface]]\nname = \"eth0\"\n"),
            format!("{P}:1:10: key `target`: {zero}")
        );
        assert_eq!(
            err(&target("vlan = 5")),
            format!("{P}:4:1: key `name`: missing: every [[target]] needs a name")
        );
        assert_eq!(
            err(&target("name = \"web 01\"")),
            format!(
                "{P}:5:8: key `name`: target name \"web 01\" contains ' '; use only A-Z, a-z, 0-9, '.', '_', ':' and '-'"
            )
        );
        assert_eq!(err(&target("name = \"\"")), format!("{P}:5:8: key `name`: empty target name"));
        assert_eq!(
            err(&target(&format!("name = \"{}\"", "t".repeat(65)))),
            format!("{P}:5:8: key `name`: target name is 65 characters long; use at most 64")
        );
        assert_eq!(
            err(&target("name = \"web01\"\n\n[[target]]\nname = \"web01\"")),
            format!(
                "{P}:8:8: key `name`: target name \"web01\" is already used on line 5; target names must be unique"
            )
        );
        assert_eq!(
            err("[[interface]]\nname = \"eth0\"\n[target]\nname = \"a\"\n"),
            format!(
                "{P}:3:1: key `target`: invalid type: map, expected one or more [[target]] tables (note the double brackets)"
            )
        );
    }

    #[test]
    fn too_many_targets() {
        let mut text = String::from("[[interface]]\nname = \"eth0\"\n");
        for i in 0..70 {
            text += &format!("[[target]]\nname = \"t{i}\"\n");
        }
        // The 65th [[target]] header: after 2 lines, 64 targets of 2 lines each.
        assert_eq!(
            err(&text),
            format!(
                "{P}:131:1: key `target`: too many targets: 70 configured, at most 64 (each takes one bit of the XDP program's match mask)"
            )
        );
    }

    #[test]
    fn unknown_keys_name_the_key_and_the_allowed_ones() {
        assert_eq!(
            err(&with_base("[capture]\nsnap_len = 64")),
            format!(
                "{P}:2:1: key `snap_len`: unknown field `snap_len`, expected one of `unmatched`, `snaplen`, `ring_size`, `buffer_bytes`, `busy_poll_us`, `batch_delay_us`, `tap_ring_bytes`"
            )
        );
        assert_eq!(
            err(&with_base("[output]\nrotate_minutes = 5")),
            format!(
                "{P}:2:1: key `rotate_minutes`: unknown field `rotate_minutes`, expected one of `directory`, `prefix`, `rotate_bytes`, `rotate_seconds`, `rotate_packets`, `keep_files`, `keep_bytes`, `keep_free_bytes`, `group`"
            )
        );
        assert_eq!(
            err(&interface("name = \"eth0\"\nqueue = [0]")),
            format!(
                "{P}:3:1: key `queue`: unknown field `queue`, expected one of `name`, `mode`, `queues`, `xdp_mode`, `zero_copy`"
            )
        );
        assert_eq!(
            err(&target("name = \"a\"\nip = \"10.0.0.1\"")),
            format!("{P}:6:1: key `ip`: unknown field `ip`, expected one of `name`, `mac`, `vlan`")
        );
        assert_eq!(
            err(&with_base("[outputs]\nprefix = \"x\"")),
            format!(
                "{P}:1:2: key `outputs`: unknown field `outputs`, expected one of `capture`, `output`, `metrics`, `interface`, `target`"
            )
        );
        assert_eq!(
            err(&with_base("[capture.extra]\nx = 1")),
            format!(
                "{P}:1:10: key `extra`: unknown field `extra`, expected one of `unmatched`, `snaplen`, `ring_size`, `buffer_bytes`, `busy_poll_us`, `batch_delay_us`, `tap_ring_bytes`"
            )
        );
        assert_eq!(
            err("interface = [[\"eth0\"]]\n[[target]]\nname = \"a\"\n"),
            format!(
                "{P}:1:14: key `interface`: invalid type: sequence, expected an [[interface]] table"
            )
        );
        assert_eq!(
            err(&with_base("[[capture]]\nsnaplen = 1")),
            format!("{P}:1:1: key `capture`: invalid type: sequence, expected a [capture] table")
        );
    }

    #[test]
    fn syntax_errors_show_the_line() {
        assert_eq!(
            err("[capture]\nsnaplen = 64\n\n[capture]\n"),
            format!(
                "{P}:4:2: invalid TOML: duplicate key `capture`\n   |\n 4 | [capture]\n   |  ^^^^^^^"
            )
        );
        assert_eq!(
            err("[output]\n\tprefix = cap\n"),
            format!(
                "{P}:2:11: invalid TOML: string values must be quoted, expected literal string\n   |\n 2 | \tprefix = cap\n   | \t         ^^^"
            )
        );
        match parse("[capture\n") {
            Err(ConfigError::Syntax { line: 1, column: 9, .. }) => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn odd_inputs() {
        let none = "no [[interface]] configured; add one naming the NIC to capture on, e.g. [[interface]] name = \"enp65s0f0\"";
        assert_eq!(err(""), format!("{P}:1:1: key `interface`: {none}"));
        assert_eq!(err("# only a comment\n"), format!("{P}:1:1: key `interface`: {none}"));
        // A byte-order mark, as some Windows editors write, is fine, and not a column.
        ok(&format!("\u{feff}{BASE}"));
        let e = err(&format!("\u{feff}[capture]\nsnaplen = 5\n{BASE}"));
        assert!(e.starts_with(&format!("{P}:2:11: key `snaplen`")), "{e}");
        let e = err(&format!("\u{feff}bogus = 1\n{BASE}"));
        assert!(e.starts_with(&format!("{P}:1:1: ")), "{e}");
        assert_eq!(
            err(&with_base("[capture]\nsnaplen = 99999999999999999999")),
            format!(
                "{P}:2:11: key `snaplen`: snap length 99999999999999999999 is out of range; use 0 (whole frame) or 14..=65535"
            )
        );
        // At the end of the file, the caret goes just past the line.
        assert_eq!(
            err("[capture]\nsnaplen ="),
            format!(
                "{P}:2:10: invalid TOML: string values must be quoted, expected literal string\n   |\n 2 | snaplen =\n   |          ^"
            )
        );
        // Errors inside inline tables and arrays point at the element.
        assert_eq!(
            err("interface = [{ name = \"eth0\", queues = [0, 0] }]\ntarget = [{ vlan = 7 }]\n"),
            format!("{P}:1:44: key `queues`: RX queue 0 is listed twice")
        );
        assert_eq!(
            err("interface = [{ name = \"eth0\" }]\ntarget = [{ name = \"a\" }, { vlan = 7 }]\n"),
            format!("{P}:2:27: key `name`: missing: every [[target]] needs a name")
        );
        assert_eq!(
            err(
                "interface = [{ name = \"eth0\", speed = \"native\" }]\ntarget = [{ name = \"a\" }]\n"
            ),
            format!(
                "{P}:1:31: key `speed`: unknown field `speed`, expected one of `name`, `mode`, `queues`, `xdp_mode`, `zero_copy`"
            )
        );
    }

    #[test]
    fn error_variants_carry_positions() {
        match parse(&target("name = \"a\"\nvlan = 0")) {
            Err(ConfigError::Invalid { path, line: 6, column: 8, key: Some(key), .. }) => {
                assert_eq!(path, Path::new(P));
                assert_eq!(key, "vlan");
            }
            other => panic!("{other:?}"),
        }
    }

    // --- load ------------------------------------------------------------------------------

    #[test]
    fn load_reads_the_file_and_names_it_in_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("capture.toml");
        std::fs::write(&path, EXAMPLE).expect("write");
        assert_eq!(Config::load(&path).expect("load").interfaces[0].name, "br0");

        std::fs::write(&path, target("name = \"a\"\nvlan = 4095")).expect("write");
        let e = Config::load(&path).expect_err("invalid");
        assert_eq!(
            e.to_string(),
            format!("{}:6:8: key `vlan`: VLAN 4095 is reserved; use 1..=4094", path.display())
        );

        let missing = dir.path().join("nope.toml");
        let e = Config::load(&missing).expect_err("missing");
        assert!(matches!(e, ConfigError::Read { .. }));
        assert!(
            e.to_string().starts_with(&format!("{}: cannot read config file: ", missing.display())),
            "{e}"
        );

        std::fs::write(&path, b"\xff\xfe").expect("write");
        assert!(matches!(Config::load(&path), Err(ConfigError::Read { .. })));
    }

    // --- sizes -----------------------------------------------------------------------------

    #[test]
    fn parse_size_accepts_units() {
        for (s, want) in [
            ("0", 0),
            ("1", 1),
            ("4096", 4096),
            ("7 B", 7),
            ("7b", 7),
            ("1k", 1000),
            ("1 kB", 1000),
            ("1 KB", 1000),
            ("1 KiB", 1024),
            ("1kib", 1024),
            ("2 M", 2_000_000),
            ("2 MB", 2_000_000),
            ("64 MiB", 64 << 20),
            ("64MiB", 64 << 20),
            ("  64 mib  ", 64 << 20),
            ("1 G", 1_000_000_000),
            ("1 GB", 1_000_000_000),
            ("1 GiB", 1 << 30),
            ("1.5 GiB", 3 << 29),
            ("0.5 KiB", 512),
            ("1.1 KiB", 1126),
            ("1.0 B", 1),
            ("1 T", 1_000_000_000_000),
            ("1 TB", 1_000_000_000_000),
            ("1 TiB", 1 << 40),
            ("2.25 TiB", 9 << 38),
            ("18446744073709551615", u64::MAX),
            ("16777215.999999999999999999999 TiB", u64::MAX),
        ] {
            assert_eq!(parse_size(s), Ok(want), "{s:?}");
        }
    }

    #[test]
    fn parse_size_rejects_nonsense() {
        let unit_list = "use B, k, kB, KiB, M, MB, MiB, G, GB, GiB, T, TB or TiB";
        let number = "expected a number (like 64 or 1.5) and an optional unit (like MiB)";
        let max = format!("larger than the maximum, {} bytes", u64::MAX);
        for (s, want) in [
            (
                "",
                "empty size; write a number of bytes with an optional unit, e.g. \"64 MiB\""
                    .to_owned(),
            ),
            (
                "   ",
                "empty size; write a number of bytes with an optional unit, e.g. \"64 MiB\""
                    .to_owned(),
            ),
            ("-1", "invalid size \"-1\": sizes cannot be negative".to_owned()),
            ("-1 MiB", "invalid size \"-1 MiB\": sizes cannot be negative".to_owned()),
            ("MiB", format!("invalid size \"MiB\": {number}")),
            ("+5", format!("invalid size \"+5\": {number}")),
            (".5 KiB", format!("invalid size \".5 KiB\": {number}")),
            ("1. KiB", format!("invalid size \"1. KiB\": {number}")),
            ("1.2.3 KiB", format!("invalid size \"1.2.3 KiB\": {number}")),
            ("1,5 KiB", format!("invalid size \"1,5 KiB\": unknown unit \",5 KiB\"; {unit_list}")),
            ("5 XB", format!("invalid size \"5 XB\": unknown unit \"XB\"; {unit_list}")),
            ("5 Mi", format!("invalid size \"5 Mi\": unknown unit \"Mi\"; {unit_list}")),
            (
                "5 MiB extra",
                format!("invalid size \"5 MiB extra\": unknown unit \"MiB extra\"; {unit_list}"),
            ),
            ("1.5", "invalid size \"1.5\": a number of bytes must be whole".to_owned()),
            ("1.5 B", "invalid size \"1.5 B\": a number of bytes must be whole".to_owned()),
            ("18446744073709551616", format!("invalid size \"18446744073709551616\": {max}")),
            ("16777216 TiB", format!("invalid size \"16777216 TiB\": {max}")),
            (
                "99999999999999999999999999999999999999999 B",
                format!("invalid size \"99999999999999999999999999999999999999999 B\": {max}"),
            ),
        ] {
            assert_eq!(parse_size(s), Err(want), "{s:?}");
        }
    }

    /// Error examples shown in docs/config.md, with the TOML that produces each.
    const DOC_ERRORS: &[(&str, &str)] = &[
        (
            "[[interface]]\nname = \"enp65s0f0\"\n\n[[target]]\nname = \"web01\"\nvlan = 4095\n",
            "/etc/capture-daemon/capture.toml:6:8: key `vlan`: VLAN 4095 is reserved; use 1..=4094",
        ),
        (
            "[[interface]]\nname = \"enp65s0f0\"\n\n[[target]]\nname = \"web01\"\nmac = \"00:00:00:00:00:00\"\n",
            "/etc/capture-daemon/capture.toml:6:7: key `mac`: the all-zero MAC 00:00:00:00:00:00 is not a real address; give the VM's MAC, or leave out `mac` to match any MAC",
        ),
        (
            "[[interface]]\nname = \"enp65s0f0\"\n\n[[target]]\nname = \"web01\"\nmac = \"52:54:00:12:34\"\n",
            "/etc/capture-daemon/capture.toml:6:7: key `mac`: invalid MAC address \"52:54:00:12:34\"; write six hex pairs separated by ':' or '-', e.g. \"52:54:00:12:34:56\"",
        ),
        (
            "[capture]\nsnap_len = 128\n",
            "/etc/capture-daemon/capture.toml:2:1: key `snap_len`: unknown field `snap_len`, expected one of `unmatched`, `snaplen`, `ring_size`, `buffer_bytes`, `busy_poll_us`, `batch_delay_us`, `tap_ring_bytes`",
        ),
        (
            "[capture]\nsnaplen = 10\n",
            "/etc/capture-daemon/capture.toml:2:11: key `snaplen`: snap length 10 is shorter than an Ethernet header; use 0 (whole frame) or 14..=65535",
        ),
        (
            "[capture]\nring_size = 1000\n",
            "/etc/capture-daemon/capture.toml:2:13: key `ring_size`: ring size 1000 is not a power of two; use e.g. 1024",
        ),
        (
            "[capture]\nbuffer_bytes = \"64 MB/s\"\n",
            "/etc/capture-daemon/capture.toml:2:16: key `buffer_bytes`: invalid size \"64 MB/s\": unknown unit \"MB/s\"; use B, k, kB, KiB, M, MB, MiB, G, GB, GiB, T, TB or TiB",
        ),
        (
            "[output]\nprefix = \".capture\"\n",
            "/etc/capture-daemon/capture.toml:2:10: key `prefix`: prefix \".capture\" starts with '.', which would hide the capture files",
        ),
        (
            "[output]\nrotate_bytes = 100\n",
            "/etc/capture-daemon/capture.toml:2:16: key `rotate_bytes`: rotating every 100 bytes would make a file per frame; use 0 (never) or at least 4096",
        ),
        (
            "[[interface]]\nname = \"enp65s0f0np0-mgmt\"\n",
            "/etc/capture-daemon/capture.toml:2:8: key `name`: interface name \"enp65s0f0np0-mgmt\" is 17 bytes long; Linux allows at most 15",
        ),
        (
            "[[interface]]\nname = \"enp65s0f0\"\nqueues = [0, 1, 300]\n",
            "/etc/capture-daemon/capture.toml:3:17: key `queues`: RX queue 300 is out of range; use 0..=255",
        ),
        (
            "[[interface]]\nname = \"enp65s0f0\"\nxdp_mode = \"skb\"\n",
            "/etc/capture-daemon/capture.toml:3:12: key `xdp_mode`: unknown XDP mode \"skb\"; use \"auto\", \"native\" or \"generic\"",
        ),
        (
            "[[interface]]\nname = \"enp65s0f0\"\n",
            "/etc/capture-daemon/capture.toml:1:1: key `target`: no [[target]] configured: nothing would be captured; add one (a target with neither mac nor vlan captures everything)",
        ),
        (
            "[[target]]\nname = \"web01\"\n",
            "/etc/capture-daemon/capture.toml:1:1: key `interface`: no [[interface]] configured; add one naming the NIC to capture on, e.g. [[interface]] name = \"enp65s0f0\"",
        ),
        (
            "[[interface]]\nname = \"enp65s0f0\"\n\n[[target]]\nname = \"web01\"\n\n[[target]]\nname = \"web01\"\nvlan = 200\n",
            "/etc/capture-daemon/capture.toml:8:8: key `name`: target name \"web01\" is already used on line 5; target names must be unique",
        ),
        (
            "[[interface]]\nname = \"enp65s0f0\"\n\n[[target]]\nmac = \"52:54:00:12:34:56\"\n",
            "/etc/capture-daemon/capture.toml:4:1: key `name`: missing: every [[target]] needs a name",
        ),
        (
            "[[interface]]\nname = \"enp65s0f0\"\n\n[target]\nname = \"web01\"\n",
            "/etc/capture-daemon/capture.toml:4:1: key `target`: invalid type: map, expected one or more [[target]] tables (note the double brackets)",
        ),
        (
            "[capture]\nsnaplen = 128\n\n[capture]\nring_size = 2048\n",
            "/etc/capture-daemon/capture.toml:4:2: invalid TOML: duplicate key `capture`\n   |\n 4 | [capture]\n   |  ^^^^^^^",
        ),
    ];

    #[test]
    fn documented_error_examples_are_real() {
        for (text, message) in DOC_ERRORS {
            assert_eq!(&err(text), message);
            assert!(DOCS.contains(message), "docs/config.md lacks the example:\n{message}");
        }
    }
}
