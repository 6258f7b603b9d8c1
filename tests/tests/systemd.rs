//! The daemon as systemd sees it: the sd_notify protocol, and a watchdog that stops being fed
//! when a thread hangs (systemd then kills the service, and the kernel detaches its program).

use std::os::unix::net::UnixDatagram;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use capture_tests::*;

const A: [u8; 6] = [0x52, 0x54, 0, 0, 0, 0x0a];
const X: [u8; 6] = [0x52, 0x54, 0, 0, 0, 0x99];
const ALL: &str = "[[target]]\nname = \"all\"\n";

/// Plays systemd's side of `$NOTIFY_SOCKET`.
struct NotifySocket {
    socket: UnixDatagram,
    path: std::path::PathBuf,
}

impl NotifySocket {
    fn bind(lab: &Lab) -> NotifySocket {
        let path = lab.dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&path).expect("binding the notify socket");
        NotifySocket { socket, path }
    }

    /// The next message, if one comes within `timeout`.
    fn recv(&self, timeout: Duration) -> Option<String> {
        self.socket.set_read_timeout(Some(timeout)).unwrap();
        let mut buf = [0u8; 4096];
        let n = self.socket.recv(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    /// Waits for a message containing `line`; returns the messages seen on the way.
    fn expect(&self, line: &str, timeout: Duration) -> Vec<String> {
        let start = Instant::now();
        let mut seen = Vec::new();
        while start.elapsed() < timeout {
            if let Some(m) = self.recv(Duration::from_millis(200)) {
                let found = m.lines().any(|l| l == line);
                seen.push(m);
                if found {
                    return seen;
                }
            }
        }
        panic!("no {line:?} within {timeout:?}; got {seen:?}");
    }
}

/// Starts the daemon in the lab with systemd's environment: a notify socket and a 2 s watchdog.
fn spawn(lab: &Lab, notify: &NotifySocket, args: &[&str], stdout: Stdio) -> Child {
    lab.ns
        .command(daemon_bin().to_str().unwrap())
        .args(args)
        .env("NOTIFY_SOCKET", &notify.path)
        .env("WATCHDOG_USEC", "2000000")
        .env_remove("WATCHDOG_PID")
        .stdout(stdout)
        .stderr(Stdio::inherit())
        .spawn()
        .expect("starting capture-daemon")
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: signalling our own child (`ip netns exec` execs the daemon).
    unsafe { libc::kill(child.id() as i32, sig) };
}

#[test]
fn tells_systemd_ready_reloading_stopping_and_feeds_the_watchdog() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new(1);
    let notify = NotifySocket::bind(&lab);
    let config = lab.config("", "", ALL);
    let mut child =
        spawn(&lab, &notify, &["run", "--config", config.to_str().unwrap()], Stdio::null());
    let before = notify.expect("READY=1", Duration::from_secs(20));
    assert!(before.iter().all(|m| !m.contains("WATCHDOG=1")), "no pings before READY: {before:?}");
    assert!(lab.xdp_attached(), "READY only once attached");
    // Pings every second (half of WATCHDOG_USEC) while healthy.
    let start = Instant::now();
    notify.expect("WATCHDOG=1", Duration::from_secs(3));
    notify.expect("WATCHDOG=1", Duration::from_secs(3));
    assert!(start.elapsed() < Duration::from_secs(4));

    signal(&child, libc::SIGHUP);
    let reload = notify.expect("RELOADING=1", Duration::from_secs(5));
    let after = notify.expect("READY=1", Duration::from_secs(5));
    assert!(after.iter().any(|m| m.contains("STATUS=")), "{reload:?} {after:?}");
    // A rejected reload shows in `systemctl status`, until a reload is applied.
    let good = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, "[[interface]]\nname = \"cap0\"\n[[target]]\nname = \"x\"\nvlan = 0\n")
        .unwrap();
    signal(&child, libc::SIGHUP);
    let after = notify.expect("READY=1", Duration::from_secs(5));
    let status = after.last().unwrap();
    assert!(
        status.contains("STATUS=RELOAD REJECTED, the previous configuration runs"),
        "{after:?}"
    );
    std::fs::write(&config, good).unwrap();
    signal(&child, libc::SIGHUP);
    let after = notify.expect("READY=1", Duration::from_secs(5));
    assert!(!after.last().unwrap().contains("REJECTED"), "{after:?}");

    signal(&child, libc::SIGTERM);
    notify.expect("STOPPING=1", Duration::from_secs(5));
    assert!(child.wait().unwrap().success());
}

#[test]
fn a_stuck_writer_stops_the_watchdog_pings() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new(1);
    let notify = NotifySocket::bind(&lab);
    // The output is a pipe nobody reads: once it is full the writer blocks for good, as it
    // would on a hung NFS mount.
    // Mirror mode: what is left attached after the kill is visible with `ip link`.
    let args = ["capture", "-i", CAPTURE_IF, "--mode", "mirror", "-w", "-"];
    let mut child = spawn(&lab, &notify, &args, Stdio::piped());
    notify.expect("READY=1", Duration::from_secs(20));
    notify.expect("WATCHDOG=1", Duration::from_secs(3));
    let frames: Vec<Vec<u8>> = (0..4000).map(|i| test_frame(A, X, &[], i, 1400)).collect();
    let start = Instant::now();
    lab.send(&frames);

    // The pings go on until the writer's heartbeat is 10 s old, then stop.
    let mut last_ping = Instant::now();
    while last_ping.elapsed() < Duration::from_secs(4) {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the watchdog is still fed while the writer is stuck"
        );
        if notify.recv(Duration::from_millis(200)).is_some_and(|m| m.contains("WATCHDOG=1")) {
            last_ping = Instant::now();
        }
    }
    assert!(start.elapsed() >= Duration::from_secs(8), "pings stopped before the writer hung");
    // What systemd does next: kill it. The kernel detaches the program with the process.
    assert!(lab.xdp_attached());
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!lab.xdp_attached(), "no XDP program left behind");
}
