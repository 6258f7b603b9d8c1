//! `capture-daemon capture`: the dumpcap-style one-shot command, on the daemon's data path.

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use capture_tests::*;

const A: [u8; 6] = [0x52, 0x54, 0, 0, 0, 0x0a];
const B: [u8; 6] = [0x52, 0x54, 0, 0, 0, 0x0b];
const X: [u8; 6] = [0x52, 0x54, 0, 0, 0, 0x99];

/// Starts `capture-daemon capture ARGS` in the lab and waits until it is attached (its
/// mirror-mode warning). Returns the child and its stderr lines as they come.
fn start(lab: &Lab, args: &[&str], stdout: Stdio) -> (std::process::Child, mpsc::Receiver<String>) {
    let mut cmd = lab.ns.command(daemon_bin().to_str().unwrap());
    cmd.arg("capture").args(args).stdout(stdout).stderr(Stdio::piped());
    start_command(cmd)
}

/// Like [`start`], for a `capture` command made by the caller (its stderr piped).
fn start_command(mut cmd: Command) -> (std::process::Child, mpsc::Receiver<String>) {
    let mut child = cmd.spawn().expect("starting capture-daemon capture");
    let (tx, rx) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("capture | {line}");
            let _ = tx.send(line);
        }
    });
    loop {
        let Ok(line) = rx.recv_timeout(Duration::from_secs(20)) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("capture never attached");
        };
        if line.contains("capturing on") {
            return (child, rx);
        }
    }
}

fn rest(rx: &mpsc::Receiver<String>) -> String {
    let mut text = String::new();
    while let Ok(l) = rx.recv_timeout(Duration::from_secs(2)) {
        text += &l;
        text.push('\n');
    }
    text
}

#[test]
fn count_limited_capture_pipes_into_tshark() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new(1);
    let (mut capture, rx) = start(
        &lab,
        &["-i", CAPTURE_IF, "--mac", "52:54:00:00:00:0a", "-c", "10", "-w", "-"],
        Stdio::piped(),
    );
    let tshark = Command::new("tshark")
        .args(["-r", "-", "-T", "fields", "-e", "frame.len", "-e", "eth.src"])
        .stdin(capture.stdout.take().unwrap())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting tshark");
    let frames: Vec<Vec<u8>> =
        (0..40).map(|i| test_frame(if i % 2 == 0 { A } else { B }, X, &[], i, 90)).collect();
    lab.send(&frames);
    let status = capture.wait().unwrap();
    assert!(status.success(), "{status}");
    let out = tshark.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let rows: Vec<&str> = text.lines().collect();
    assert_eq!(rows.len(), 10, "tshark read: {text}");
    assert!(rows.iter().all(|r| r.starts_with("90\t") || r.starts_with("90 ")), "{text}");
    assert!(rest(&rx).contains("Packets captured: 10"));
}

#[test]
fn ctrl_c_ends_a_file_capture_with_dumpcap_counts() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new(1);
    let file = lab.dir.path().join("one.pcapng");
    // An old file in the way: overwritten from the start, and no longer readable by everyone.
    std::fs::write(&file, vec![0xee; 100_000]).unwrap();
    std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o666)).unwrap();
    let (capture, rx) = start(
        &lab,
        &["-i", CAPTURE_IF, "--vlan", "100", "-s", "64", "-w", file.to_str().unwrap()],
        Stdio::null(),
    );
    let frames: Vec<Vec<u8>> = (0..20)
        .map(|i| test_frame(A, X, &[(0x8100, if i < 15 { 100 } else { 200 })], i, 200))
        .collect();
    lab.send(&frames);
    // SAFETY: signalling our own child.
    unsafe { libc::kill(capture.id() as i32, libc::SIGINT) };
    let output = capture.wait_with_output().unwrap();
    assert!(output.status.success());
    let text = rest(&rx);
    assert!(text.contains("Packets captured: 15"), "{text}");
    assert!(text.contains("Packets received/dropped on interface 'cap0': 15/0 (100.0%)"), "{text}");
    let packets = read_pcapng(&file).packets;
    assert_eq!(ids(&packets), (0..15).collect::<Vec<_>>());
    assert!(packets.iter().all(|p| p.data.len() == 64 && p.orig_len == 200));
    assert!(!lab.xdp_attached());
    let meta = std::fs::metadata(&file).unwrap();
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777, 0o640);

    // Another user's file is refused before anything is attached, and left as it was.
    std::os::unix::fs::chown(&file, Some(65534), None).unwrap();
    let (code, text) =
        lab.run_daemon(&[], &["capture", "-i", CAPTURE_IF, "-w", file.to_str().unwrap()]);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("it belongs to uid 65534, and this process runs as uid 0"), "{text}");
    assert_eq!(ids(&read_pcapng(&file).packets), (0..15).collect::<Vec<_>>());
}

#[test]
fn ring_buffer_and_autostop_follow_dumpcap() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new(1);
    let pattern = lab.out_dir().join("web.pcapng");
    let (capture, rx) = start(
        &lab,
        &[
            "-i",
            CAPTURE_IF,
            "-b",
            "packets:5",
            "-b",
            "files:2",
            "-a",
            "duration:3",
            "-w",
            pattern.to_str().unwrap(),
        ],
        Stdio::null(),
    );
    let frames: Vec<Vec<u8>> = (0..23).map(|i| test_frame(A, X, &[], i, 100)).collect();
    lab.send(&frames);
    let output = capture.wait_with_output().unwrap(); // stops by itself after 3 s
    assert!(output.status.success());
    assert!(rest(&rx).contains("Packets captured: 23"));
    let (files, parts) = lab.files();
    assert!(parts.is_empty());
    assert_eq!(files.len(), 2, "files:2 keeps two: {files:?}");
    for f in &files {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with("web_"), "{name}");
    }
    // The newest frames are the ones kept: 20..23 in the last file, 15..20 before it.
    assert_eq!(ids(&read_all(&files)), (15..23).collect::<Vec<_>>());
}

#[test]
fn log_levels_take_their_usual_names_and_refuse_others() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new(1);
    let file = lab.dir.path().join("levels.pcapng");
    // Mirror mode logs a warning once attached: `warning` must show it, as `warn` does
    // (env_logger alone took `warning` for a module name and logged nothing at all).
    let capture =
        |level: &str, rust_log: Option<&str>| {
            let mut cmd = lab.ns.command(daemon_bin().to_str().unwrap());
            cmd.args(["capture", "--log-level", level, "-i", CAPTURE_IF, "--mode", "mirror"])
                .args(["-a", "duration:1", "-w", file.to_str().unwrap()]);
            match rust_log {
                Some(spec) => cmd.env("RUST_LOG", spec),
                None => cmd.env_remove("RUST_LOG"),
            };
            let out = cmd.output().expect("running capture-daemon capture");
            (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
        };
    for level in ["warn", "warning", "WARNING"] {
        let (code, text) = capture(level, None);
        assert_eq!(code, Some(0), "{text}");
        assert!(text.contains("mirror mode: matched frames are taken out"), "{level}: {text}");
    }
    let (code, text) = capture("err", None);
    assert_eq!(code, Some(0), "{text}");
    assert!(!text.contains("mirror mode"), "{text}");
    let (code, text) = capture("info", Some("warning"));
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("mirror mode: matched") && !text.contains("capturing on"), "{text}");

    let (code, text) = capture("loud", None);
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("unknown log level \"loud\": use off, error, warn, info"), "{text}");
    let (code, text) = capture("info", Some("capture_daemon=loud"));
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("RUST_LOG=\"capture_daemon=loud\""), "{text}");
    assert!(!lab.xdp_attached());
}

/// A new pseudo-terminal: (master, slave). Both ends are opened close-on-exec from the start
/// (std opens with O_CLOEXEC): the tests of this file run in parallel, and a master fd that
/// leaked into another test's child in the window before an fcntl would keep the terminal up,
/// so closing ours would hang nothing up (seen in CI: "kept running after its terminal went
/// away"). The capture gets the slave through dup2, which clears the flag on its copies.
fn open_pty() -> (std::fs::File, std::fs::File) {
    use std::os::fd::AsRawFd as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let open = |path: &str| {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOCTTY)
            .open(path)
            .unwrap_or_else(|e| panic!("opening {path}: {e}"))
    };
    let master = open("/dev/ptmx");
    let mut name = [0 as libc::c_char; 128];
    // SAFETY: plain calls on our own fd; ptsname_r writes at most name.len() bytes.
    unsafe {
        assert_eq!(libc::grantpt(master.as_raw_fd()), 0, "grantpt");
        assert_eq!(libc::unlockpt(master.as_raw_fd()), 0, "unlockpt");
        assert_eq!(libc::ptsname_r(master.as_raw_fd(), name.as_mut_ptr(), name.len()), 0);
    }
    // SAFETY: ptsname_r wrote a NUL-terminated path into name.
    let path = unsafe { std::ffi::CStr::from_ptr(name.as_ptr()) };
    let slave = open(path.to_str().expect("a pts path is ASCII"));
    (master, slave)
}

#[test]
fn a_hangup_ends_the_capture_with_the_file_whole() {
    use std::io::Read as _;
    use std::os::unix::process::CommandExt as _;
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new(1);
    let file = lab.dir.path().join("hup.pcapng");
    // A terminal of its own, as `capture` started from an SSH session has. Closing the master
    // end is the session going away: the kernel sends SIGHUP to the session's leader, and the
    // terminal is gone for the report written after it.
    let (mut master, slave) = open_pty();
    let mut cmd = lab.ns.command(daemon_bin().to_str().unwrap());
    cmd.args(["capture", "-i", CAPTURE_IF, "--mac", "52:54:00:00:00:0a"])
        .args(["-w", file.to_str().unwrap()])
        .stdin(slave.try_clone().unwrap())
        .stdout(slave.try_clone().unwrap())
        .stderr(slave);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            // A session of its own, with the terminal (on fd 0 by now) as its controlling one;
            // `ip netns exec` then execs the daemon, which stays the session leader.
            if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut capture = cmd.spawn().expect("starting capture-daemon capture");
    drop(cmd);
    // Reads the terminal until the capture says it is attached.
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains("capturing on") {
        let mut buf = [0u8; 1024];
        match master.read(&mut buf) {
            Ok(n) if n > 0 => seen.extend_from_slice(&buf[..n]),
            other => panic!("the terminal ended ({other:?}): {}", String::from_utf8_lossy(&seen)),
        }
    }
    let frames: Vec<Vec<u8>> = (0..50).map(|i| test_frame(A, X, &[], i, 120)).collect();
    lab.send(&frames);

    drop(master);
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(status) = capture.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > Duration::from_secs(30) {
            let _ = capture.kill();
            let _ = capture.wait();
            panic!("the capture kept running after its terminal went away");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
    assert!(!lab.xdp_attached() && tcx_prog_ids(&lab.ns, CAPTURE_IF, Tcx::Ingress).is_empty());
    // Whole: every frame, the statistics block at the end, readable by every tool.
    let pcapng = read_pcapng(&file);
    assert_eq!(ids(&pcapng.packets), (0..50).collect::<Vec<_>>());
    assert!(!pcapng.isbs.is_empty(), "closed with its statistics");
    assert_eq!(capinfos_count(&file), 50);
    assert_eq!(tshark_fields(&file, &["frame.len"]).len(), 50);

    // Under `nohup` (SIGHUP ignored from the start) it stays ignored, as tcpdump leaves it:
    // frames sent after a SIGHUP are still captured.
    let mut cmd = lab.ns.command(daemon_bin().to_str().unwrap());
    cmd.args(["capture", "-i", CAPTURE_IF, "--mac", "52:54:00:00:00:0a"])
        .args(["-w", file.to_str().unwrap()])
        .stderr(Stdio::piped());
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::signal(libc::SIGHUP, libc::SIG_IGN);
            Ok(())
        });
    }
    let (mut capture, rx) = start_command(cmd);
    // SAFETY: signalling our own child.
    unsafe { libc::kill(capture.id() as i32, libc::SIGHUP) };
    lab.send(&frames);
    assert!(capture.try_wait().unwrap().is_none(), "SIGHUP ended the capture under nohup");
    // SAFETY: signalling our own child.
    unsafe { libc::kill(capture.id() as i32, libc::SIGINT) };
    assert!(capture.wait_with_output().unwrap().status.success());
    assert!(rest(&rx).contains("Packets captured: 50"));
    assert_eq!(ids(&read_pcapng(&file).packets), (0..50).collect::<Vec<_>>());
}
