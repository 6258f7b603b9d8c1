//! `capture-daemon check`: everything `run` needs, verified without attaching anything.

use std::fmt::Write as _;
use std::path::Path;

use crate::bpf::{Filter, Hooks, TargetTables, error_chain};
use crate::config::{Config, FileGroup, Mode, OutputConfig, format_mac};
use crate::daemon::{ResolvedInterface, describe_target, resolve_interface};
use crate::source::afxdp;
use crate::sys::FsSpace;
use crate::writer::rotate::{check_dir_path, check_future_dir_path, floor_bytes};
use crate::{libvirt, netdev, nic, sys};

/// The banner `check` and the docs use: in mirror mode the capture NIC loses the frames it captures.
pub const MIRROR_WARNING: &str = "\
WARNING: mirror mode. Matched frames are redirected to capture-daemon and taken OUT of the kernel's
network path on the capture interface. Use a NIC fed by a SPAN/mirror port or a network TAP. Do not
point it at a live uplink or a VM's bridge port: the captured VMs would lose that traffic.";

#[derive(Default)]
pub struct Report {
    pub lines: Vec<String>,
    pub problems: usize,
}

impl Report {
    fn ok(&mut self, what: &str, detail: impl AsRef<str>) {
        self.lines.push(format!("ok    {what}: {}", detail.as_ref()));
    }
    /// Works, but probably not as the admin wants: said, not counted as a problem.
    fn warn(&mut self, what: &str, detail: impl AsRef<str>) {
        self.lines.push(format!("WARN  {what}: {}", detail.as_ref()));
    }
    fn finding(&mut self, what: &str, f: nic::Finding) {
        match f.level {
            nic::Level::Ok => self.ok(what, f.text),
            nic::Level::Warn => self.warn(what, f.text),
        }
    }
    fn fail(&mut self, what: &str, detail: impl AsRef<str>) {
        self.problems += 1;
        self.lines.push(format!("FAIL  {what}: {}", detail.as_ref()));
    }
    pub fn render(&self) -> String {
        let mut s = String::new();
        for l in &self.lines {
            let _ = writeln!(s, "{l}");
        }
        s
    }
}

/// Runs every check and reports them all (one failure does not hide the next).
pub fn check(config: &Config, config_path: &Path) -> Report {
    let mut r = Report::default();
    r.ok(
        "config",
        format!(
            "{} ({} interface(s), {} target(s))",
            config_path.display(),
            config.interfaces.len(),
            config.targets.len()
        ),
    );
    for t in &config.targets {
        r.ok("target", describe_target(t));
    }
    check_vms(&mut r, config);

    match sys::kernel_version() {
        Some((maj, min)) if config.capture.busy_poll_us > 0 && (maj, min) < (5, 11) => r.fail(
            "kernel",
            format!(
                "{}: busy_poll_us needs Linux >= 5.11 (SO_PREFER_BUSY_POLL); set it to 0",
                sys::os_release()
            ),
        ),
        Some((maj, min)) if (maj, min) >= (5, 9) => {
            r.ok("kernel", format!("{} (bpf_link XDP attach needs >= 5.9)", sys::os_release()));
        }
        Some(_) => r.fail(
            "kernel",
            format!(
                "{}: too old; capture-daemon needs Linux >= 5.9 (XDP bpf_link, AF_XDP statistics)",
                sys::os_release()
            ),
        ),
        None => r.fail("kernel", "cannot read /proc/sys/kernel/osrelease"),
    }

    let missing = sys::missing_caps();
    if missing.is_empty() {
        r.ok("privileges", "all needed capabilities present");
    } else {
        for (cap, why) in missing {
            r.fail(
                "privileges",
                format!("missing {cap}: needed to {why} (run as root or grant it)"),
            );
        }
    }

    for i in &config.interfaces {
        let what = format!("interface {}", i.name);
        match netdev::lookup(&i.name) {
            // Not a problem for `run`: it starts without it and waits for it.
            Ok(None) => {
                r.warn(
                    &what,
                    "not on this host now; `run` starts without it and captures it as soon as it \
                     appears (a NIC can come up late at boot); if it never should, check the name \
                     (`ip link`)",
                );
                continue;
            }
            Ok(Some(_)) => {}
            Err(e) => {
                r.fail(&what, format!("cannot look it up: {e}"));
                continue;
            }
        }
        let i = match resolve_interface(i) {
            Ok(i) => i,
            // The error names the interface.
            Err(e) => {
                r.fail("interface", format!("{e:#}"));
                continue;
            }
        };
        let driver = netdev::driver(&i.name).unwrap_or_else(|| "unknown".into());
        let detail = match i.mode {
            Mode::Mirror => format!(
                "driver {driver}, {} RX queue(s), capturing queue(s) {:?}; {}",
                i.rx_queues,
                i.queues,
                i.mode.meaning()
            ),
            Mode::Tap => format!("driver {driver}; {}", i.mode.meaning()),
        };
        r.ok(&what, detail);
        if i.mode == Mode::Mirror {
            let frames = mirror_frames(netdev::mtu(&i.name), sys::kernel_version());
            r.ok(&format!("interface {} frames", i.name), frames);
        }
        check_nic(&mut r, config, &i, &driver);
    }

    let uses = |m| config.interfaces.iter().any(|i| i.mode == m);
    let slots: Vec<usize> = (0..config.targets.len()).collect();
    match TargetTables::build(&config.capture, &config.targets, &slots) {
        Ok(tables) => {
            if uses(Mode::Mirror) {
                match Filter::load("check", Hooks::Mirror, &tables) {
                    Ok(f) if f.multi_buffer_program() => r.ok(
                        "XDP program",
                        "multi-buffer program loaded and accepted by the kernel verifier (not \
                         attached)",
                    ),
                    Ok(_) => r.ok(
                        "XDP program",
                        "the kernel refused the multi-buffer program; the single-buffer one \
                         loaded and was accepted by the verifier (not attached)",
                    ),
                    Err(e) => r.fail("XDP program", error_chain(&e)),
                }
            }
            if uses(Mode::Tap) {
                let hooks = Hooks::Tap { ring_bytes: config.capture.tap_ring_bytes };
                match Filter::load("check", hooks, &tables) {
                    Ok(f) => r.ok(
                        "tcx programs",
                        format!(
                            "loaded and accepted by the kernel verifier (not attached); {} \
                             per-CPU rings of {} KiB each per tap-mode interface",
                            f.ring_count(),
                            config.capture.tap_ring_bytes / 1024
                        ),
                    ),
                    Err(e) => r.fail("tcx programs", error_chain(&e)),
                }
            }
        }
        Err(e) => r.fail("targets", e.to_string()),
    }

    if uses(Mode::Mirror) {
        // SAFETY: plain socket call; closed right away.
        let fd = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if fd >= 0 {
            // SAFETY: we own fd.
            unsafe { libc::close(fd) };
            r.ok("AF_XDP", "socket created");
        } else {
            r.fail(
                "AF_XDP",
                format!("cannot create a socket: {}", std::io::Error::last_os_error()),
            );
        }
    }

    check_output(&mut r, &config.output);
    if let Some(group) = &config.output.group {
        if sys::may_chown_to(group.gid) {
            r.ok("output group", format!("files go to group {} (gid {})", group.name, group.gid));
        } else {
            r.fail(
                "output group",
                format!(
                    "cannot give files to group {} (gid {}): not a member and no CAP_CHOWN; add \
                     SupplementaryGroups={} to the systemd unit",
                    group.name, group.gid, group.name
                ),
            );
        }
    }
    r
}

/// Which VMs of the `vm` targets libvirt knows on this host. Neither an absent VM nor an
/// unreachable libvirt stops `run`: both are warnings.
fn check_vms(r: &mut Report, config: &Config) {
    let names: Vec<&str> = config.targets.iter().filter_map(|t| t.vm.as_deref()).collect();
    if names.is_empty() {
        return;
    }
    let uri = &config.libvirt.uri;
    let found = libvirt::connect(uri).and_then(|mut conn| {
        let found = libvirt::resolve(&conn, uri, names.iter().copied());
        let _ = conn.close();
        found
    });
    let found = match found {
        Ok(f) => f,
        Err(e) => {
            r.warn(
                "libvirt",
                format!(
                    "{e}; `run` starts with the vm targets matching nothing and keeps trying (is \
                     libvirtd running? may this user open its socket, e.g. \
                     /run/libvirt/libvirt-sock-ro? see docs/operations.md)"
                ),
            );
            return;
        }
    };
    r.ok("libvirt", format!("connected to {uri}"));
    if config.vm_taps {
        let mut taps: Vec<&str> =
            found.values().flatten().flat_map(|i| &i.taps).map(String::as_str).collect();
        taps.dedup();
        r.ok(
            "vm_taps",
            format!(
                "capturing in tap mode on the taps of the running VMs, now: {} (attached and \
                 detached as the VMs come and go)",
                if taps.is_empty() { "none".to_owned() } else { taps.join(", ") }
            ),
        );
    }
    for t in config.targets.iter().filter(|t| t.vm.is_some()) {
        let vm = t.vm.as_deref().unwrap_or_default();
        let what = format!("vm {vm}");
        match found.get(vm) {
            Some(Some(info)) => {
                let macs: Vec<String> = info.macs.iter().map(format_mac).collect();
                let taps = if info.taps.is_empty() { "none".into() } else { info.taps.join(", ") };
                r.ok(
                    &what,
                    format!(
                        "found, running (target {}): MACs {}; taps {taps}",
                        t.name,
                        if macs.is_empty() { "none".into() } else { macs.join(", ") }
                    ),
                );
            }
            _ => r.warn(
                &what,
                format!(
                    "absent: not running on this host (target {} matches nothing until it \
                     starts or migrates here)",
                    t.name
                ),
            ),
        }
    }
}

/// What the interface's driver and offloads mean for its capture (see [`nic`]).
fn check_nic(r: &mut Report, config: &Config, i: &ResolvedInterface, driver: &str) {
    if i.mode == Mode::Mirror {
        let meta = nic::metadata(driver, i.xdp_mode, i.zero_copy);
        r.finding(&format!("interface {} metadata", i.name), meta);
    }
    let what = format!("interface {} offloads", i.name);
    match netdev::features(&i.name) {
        Ok(f) => {
            let hook = nic::Hook::planned(i.mode, i.xdp_mode);
            let vlans = config.targets.iter().any(|t| t.vlan.is_some());
            for finding in nic::offloads(&i.name, driver, &f, hook, vlans) {
                r.finding(&what, finding);
            }
        }
        Err(e) => r.warn(&what, format!("cannot read them (ethtool -k): {e}")),
    }
}

/// What mirror mode captures of the frames an interface of this MTU carries on this kernel.
fn mirror_frames(mtu: Option<u32>, kernel: Option<(u32, u32)>) -> String {
    let cap = afxdp::FRAME_CAPACITY;
    let Some(mtu) = mtu else { return "MTU unknown".into() };
    // The Ethernet header and one VLAN tag.
    if mtu + 18 <= cap {
        return format!("MTU {mtu}: every frame fits one UMEM frame and is captured whole");
    }
    let cut = format!("frames above {cap} bytes are cut to {cap} (original length recorded)");
    match kernel {
        Some(v) if v >= (6, 6) => format!(
            "MTU {mtu}: longer frames span several UMEM frames and are captured whole (AF_XDP \
             multi-buffer); where a zero-copy driver has no multi-buffer, {cut} (the start-up \
             log says so per RX queue)"
        ),
        Some(v) if v >= (5, 18) => {
            format!("MTU {mtu}: no AF_XDP multi-buffer before Linux 6.6: {cut}")
        }
        _ => format!(
            "MTU {mtu}: no AF_XDP multi-buffer before Linux 6.6: {cut}; no multi-buffer XDP \
             before 5.18: native XDP may be refused at this MTU (generic XDP is used then)"
        ),
    }
}

/// The directory itself, or the nearest existing parent `run` would create it under (a relative
/// path is relative to the working directory).
fn nearest_existing(dir: &Path) -> &Path {
    let mut existing = dir;
    while !existing.exists() {
        match existing.parent() {
            Some(p) if p.as_os_str().is_empty() => existing = Path::new("."),
            Some(p) => existing = p,
            None => break,
        }
    }
    existing
}

/// What keeps the output from filling its file system (`space`: that file system), or why
/// nothing does.
fn output_bound(output: &OutputConfig, space: Option<FsSpace>) -> Result<String, String> {
    let gib = |b: u64| format!("{:.1} GiB", b as f64 / f64::from(1u32 << 30));
    if output.keep_free_bytes != 0 || output.keep_free_percent != 0 {
        let Some(space) = space else {
            return Ok("keeps the free-space floor (the file system's size is unknown)".into());
        };
        let floor = floor_bytes(output, space.total);
        if floor >= space.total {
            return Err(format!(
                "keep_free_bytes ({}) is the whole file system ({}): nothing can be written",
                gib(floor),
                gib(space.total)
            ));
        }
        let mut s = format!(
            "keeps {} of {} free (keep_free_percent = {}, keep_free_bytes = {}): the oldest \
             files are deleted first",
            gib(floor),
            gib(space.total),
            output.keep_free_percent,
            output.keep_free_bytes
        );
        if space.free < floor {
            let _ = write!(
                s,
                "; only {} is free now, so capture starts by deleting old capture files, and \
                 drops frames if there are none",
                gib(space.free)
            );
        }
        return Ok(s);
    }
    if output.keep_bytes != 0 {
        return Ok(format!(
            "at most keep_bytes ({}) plus the file being written",
            gib(output.keep_bytes)
        ));
    }
    if output.keep_files != 0 && output.rotate_bytes != 0 {
        return Ok(format!(
            "at most {} files of up to rotate_bytes ({}) each",
            output.keep_files + 1,
            gib(output.rotate_bytes)
        ));
    }
    Err("nothing bounds the output: with keep_free_percent = 0, keep_free_bytes = 0 and \
         keep_bytes = 0, capture writes until the file system is full; set keep_free_percent \
         (the default is 10)"
        .into())
}

/// The output directory, then what bounds the output on its file system (read once for both).
fn check_output(r: &mut Report, output: &OutputConfig) {
    let existing = nearest_existing(&output.directory);
    let space = sys::fs_space(existing);
    check_output_dir(r, &output.directory, output.group.as_ref(), existing, space);
    match output_bound(output, space) {
        Ok(bound) => r.ok("retention", bound),
        Err(unbounded) => r.warn("retention", unbounded),
    }
}

fn check_output_dir(
    r: &mut Report,
    dir: &Path,
    group: Option<&FileGroup>,
    existing: &Path,
    space: Option<FsSpace>,
) {
    // What `run` refuses, with its words.
    let safe = if existing == dir {
        check_dir_path(dir, group)
    } else {
        check_future_dir_path(dir, existing)
    };
    if let Err(e) = safe {
        r.fail("output", e.to_string());
        return;
    }
    let Ok(c) = std::ffi::CString::new(existing.as_os_str().as_encoded_bytes()) else {
        r.fail("output", format!("{}: bad path", dir.display()));
        return;
    };
    // SAFETY: valid C string.
    if unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) } != 0 {
        r.fail(
            "output",
            format!("{} is not writable: {}", existing.display(), std::io::Error::last_os_error()),
        );
        return;
    }
    let free = space.map_or_else(String::new, |s| {
        format!(", {:.1} GiB free", s.free as f64 / f64::from(1u32 << 30))
    });
    let what = if existing == dir { "writable" } else { "will be created" };
    r.ok("output", format!("{} {what}{free}", dir.display()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_bound_names_the_floor_or_warns() {
        let space = Some(FsSpace { free: 50 << 30, total: 100 << 30 });
        let mut o = OutputConfig::default();
        let s = output_bound(&o, space).unwrap();
        assert!(s.starts_with("keeps 10.0 GiB of 100.0 GiB free"), "{s}");
        o.keep_free_bytes = 20 << 30;
        assert!(output_bound(&o, space).unwrap().starts_with("keeps 20.0 GiB"));
        let low = Some(FsSpace { free: 5 << 30, total: 100 << 30 });
        assert!(output_bound(&o, low).unwrap().contains("only 5.0 GiB is free now"));
        o.keep_free_bytes = 200 << 30;
        assert!(output_bound(&o, space).unwrap_err().contains("nothing can be written"));
        o = OutputConfig { keep_free_percent: 0, ..OutputConfig::default() };
        let e = output_bound(&o, space).unwrap_err();
        assert!(e.starts_with("nothing bounds the output"), "{e}");
        o.keep_files = 3;
        assert_eq!(
            output_bound(&o, space).unwrap(),
            "at most 4 files of up to rotate_bytes (1.0 GiB) each"
        );
        o.keep_bytes = 1 << 40;
        assert!(output_bound(&o, space).unwrap().starts_with("at most keep_bytes (1024.0 GiB)"));
    }

    #[test]
    fn mirror_frames_say_what_is_cut() {
        let whole = mirror_frames(Some(1500), Some((5, 10)));
        assert!(whole.contains("captured whole"), "{whole}");
        let sg = mirror_frames(Some(9000), Some((6, 18)));
        assert!(sg.contains("captured whole (AF_XDP multi-buffer)"), "{sg}");
        let old = mirror_frames(Some(9000), Some((6, 1)));
        assert!(old.contains("frames above 3840 bytes are cut to 3840"), "{old}");
        assert!(!old.contains("generic"), "{old}");
        let older = mirror_frames(Some(9000), Some((5, 15)));
        assert!(older.contains("cut to 3840") && older.contains("generic XDP"), "{older}");
    }
}
