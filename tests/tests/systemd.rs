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

/// A private systemd, PID 1 of its own pid, mount, uts and cgroup namespaces in the lab's
/// network namespace, booted on an overlay of / by `systemd/boot.sh` with the shipped unit
/// installed. Killed on drop, with the cgroups it made.
struct Systemd {
    launcher: Child,
    /// PID 1, as the host numbers it.
    pid1: u32,
    /// The cgroups it was started in, one per hierarchy: all it made is below them.
    cgroups: Vec<std::path::PathBuf>,
}

impl Systemd {
    fn boot(lab: &Lab, config: &std::path::Path, drop_ins: &[std::path::PathBuf]) -> Systemd {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let script = root.join("tests/systemd/boot.sh");
        let unit = root.join("../config/capture-daemon.service");
        let cgroups = own_cgroups();
        let procs: Vec<String> =
            cgroups.iter().map(|c| c.join("cgroup.procs").display().to_string()).collect();
        // Into the new cgroups first (ip netns exec hides /sys/fs/cgroup), then the namespaces.
        let mut launcher = std::process::Command::new("bash")
            .args([
                "-c",
                "set -e; for f in $CGROUP_PROCS; do echo $$ > \"$f\"; done; exec \"$@\"",
                "boot",
            ])
            .args(["ip", "netns", "exec", lab.ns.name(), "unshare", "--pid", "--fork", "--mount"])
            .args(["--uts", "--cgroup", "--propagation", "private", "bash"])
            .arg(&script)
            .arg(&unit)
            .arg(config)
            .arg(daemon_bin())
            .args(drop_ins)
            .env("CGROUP_PROCS", procs.join(" "))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting systemd");
        let start = Instant::now();
        let pid1 = loop {
            let children =
                std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", launcher.id()))
                    .unwrap_or_default();
            if let Some(pid) = children.split_whitespace().next() {
                break pid.parse().unwrap();
            }
            if let Some(status) = launcher.try_wait().unwrap() {
                panic!("booting systemd failed: {status}");
            }
            assert!(start.elapsed() < Duration::from_secs(30), "systemd did not start");
            std::thread::sleep(Duration::from_millis(50));
        };
        let sd = Systemd { launcher, pid1, cgroups };
        loop {
            let (_, state) = sd.run(&["systemctl", "is-system-running"]);
            if state.trim() == "running" {
                return sd;
            }
            assert!(start.elapsed() < Duration::from_secs(60), "systemd is {state}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Runs a command inside (its namespaces and root).
    fn run(&self, args: &[&str]) -> (bool, String) {
        let out = std::process::Command::new("nsenter")
            .args(["-t", &self.pid1.to_string(), "-m", "-p", "-u", "-n", "-r", "-w"])
            .args(args)
            .output()
            .expect("running nsenter");
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), text)
    }

    fn systemctl(&self, args: &[&str]) -> String {
        let mut all = vec!["systemctl", "--no-pager"];
        all.extend_from_slice(args);
        let (ok, text) = self.run(&all);
        assert!(ok, "systemctl {args:?}: {text}\ndaemon log:\n{}", self.daemon_log());
        text
    }

    fn show(&self, property: &str) -> String {
        self.systemctl(&["show", "-p", property, "--value", "capture-daemon"]).trim().to_owned()
    }

    /// A path inside, as the host reaches it.
    fn path(&self, inside: &str) -> std::path::PathBuf {
        std::path::PathBuf::from(format!("/proc/{}/root{inside}", self.pid1))
    }

    fn daemon_log(&self) -> String {
        std::fs::read_to_string(self.path("/run/daemon.log")).unwrap_or_default()
    }
}

impl Drop for Systemd {
    fn drop(&mut self) {
        // PID 1 of a pid namespace takes every process in it along.
        // SAFETY: signalling the PID 1 this test started.
        unsafe { libc::kill(self.pid1 as i32, libc::SIGKILL) };
        let _ = self.launcher.wait();
        for cgroup in &self.cgroups {
            remove_cgroup_tree(cgroup);
        }
    }
}

/// A new cgroup below this process's own in each hierarchy mounted here (cgroup2, and the v1
/// ones of a hybrid host), so that what a systemd started in them makes stays below them.
fn own_cgroups() -> Vec<std::path::PathBuf> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let mounts: Vec<(String, String, String, Vec<String>)> = mountinfo
        .lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let left: Vec<&str> = left.split_whitespace().collect();
            let right: Vec<&str> = right.split_whitespace().collect();
            let options = right.get(2)?.split(',').map(str::to_owned).collect();
            Some((right[0].to_owned(), left[3].to_owned(), left[4].to_owned(), options))
        })
        .filter(|(fs, ..)| fs == "cgroup" || fs == "cgroup2")
        .collect();
    let tag = format!("capsd-{}", std::process::id());
    let mut dirs = Vec::new();
    for line in std::fs::read_to_string("/proc/self/cgroup").unwrap().lines() {
        let mut parts = line.splitn(3, ':');
        let (id, controllers, path) =
            (parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap());
        let mount = mounts.iter().find(|(fs, _, _, options)| {
            if id == "0" {
                fs == "cgroup2"
            } else {
                fs == "cgroup" && controllers.split(',').all(|c| options.iter().any(|o| o == c))
            }
        });
        // A hierarchy that is not mounted here is none that systemd will use.
        let Some((_, root, point, _)) = mount else { continue };
        let relative = path.strip_prefix(root.as_str()).unwrap_or(path).trim_start_matches('/');
        let dir = std::path::Path::new(point).join(relative).join(&tag);
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("creating cgroup {}: {e}", dir.display()));
        // A v1 cpuset takes no process before it has CPUs and memory nodes: its parent's.
        for file in ["cpuset.cpus", "cpuset.mems"] {
            if let Ok(value) = std::fs::read_to_string(dir.parent().unwrap().join(file)) {
                std::fs::write(dir.join(file), value.trim()).unwrap();
            }
        }
        dirs.push(dir);
    }
    dirs
}

/// Removes a cgroup and those below it, deepest first, once their processes are gone.
fn remove_cgroup_tree(dir: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.filter_map(Result::ok) {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            remove_cgroup_tree(&e.path());
        }
    }
    for _ in 0..100 {
        if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("could not remove cgroup {}", dir.display());
}

/// A capability set (`CapEff`, `CapBnd`, ...) in a `/proc/PID/status` text.
fn caps(status: &str, set: &str) -> u64 {
    let hex = status.lines().find_map(|l| l.strip_prefix(set)?.strip_prefix(':')).unwrap().trim();
    u64::from_str_radix(hex, 16).unwrap()
}

#[test]
fn the_shipped_unit_runs_the_daemon_under_its_sandbox() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new(1);
    // Mirror mode on cap0 (AF_XDP), tap mode on an interface that appears after the start, and
    // the metrics endpoint on every address so that the unit's IP allow-list is what refuses.
    let config = lab.dir.path().join("capture.toml");
    std::fs::write(
        &config,
        "[metrics]\nlisten = \"0.0.0.0:9464\"\n\n[[interface]]\nname = \"cap0\"\nmode = \
         \"mirror\"\n\n[[interface]]\nname = \"late0\"\n\n[[target]]\nname = \"all\"\n",
    )
    .unwrap();
    // LimitMEMLOCK=infinity (instead of CAP_IPC_LOCK) needs a manager with CAP_SYS_RESOURCE;
    // where the test runs without it (some VMs), the UMEM can only be locked with
    // CAP_IPC_LOCK: granted by a drop-in, and said.
    let ours = std::fs::read_to_string("/proc/self/status").unwrap();
    let sys_resource = caps(&ours, "CapBnd") & (1 << 24) != 0;
    let mut drop_ins = Vec::new();
    if !sys_resource {
        eprintln!("note: no CAP_SYS_RESOURCE here: CAP_IPC_LOCK stands in for LimitMEMLOCK");
        let d = lab.dir.path().join("memlock.conf");
        std::fs::write(
            &d,
            "[Service]\nAmbientCapabilities=CAP_IPC_LOCK\nCapabilityBoundingSet=CAP_IPC_LOCK\n",
        )
        .unwrap();
        drop_ins.push(d);
    }
    let sd = Systemd::boot(&lab, &config, &drop_ins);
    sd.systemctl(&["start", "capture-daemon"]);
    assert_eq!(sd.show("ActiveState"), "active");
    // The unit's check passed with the missing interface, and the daemon says it is missing.
    assert!(sd.show("StatusText").contains("NOT CAPTURED: late0"), "{}", sd.daemon_log());

    // Its sandbox is in force: the system call filter, no new privileges, exactly the
    // capabilities of the unit, a /dev without the host's devices.
    let main = sd.show("MainPID");
    let (_, status) = sd.run(&["cat", &format!("/proc/{main}/status")]);
    assert!(status.contains("Seccomp:\t2") && status.contains("NoNewPrivs:\t1"), "{status}");
    let (net_admin, net_raw, bpf, perfmon, ipc_lock) = (12, 13, 39, 38, 14);
    let mut want = [net_admin, net_raw, bpf, perfmon].iter().fold(0u64, |m, b| m | 1 << b);
    if !sys_resource {
        want |= 1 << ipc_lock;
    }
    assert_eq!(caps(&status, "CapEff"), want, "{status}");
    let (_, dev) = sd.run(&["nsenter", "-t", &main, "-m", "ls", "/dev"]);
    assert!(dev.contains("null") && !dev.contains("kmsg"), "{dev}");

    // It captures, and serves its metrics on loopback.
    lab.send(&(0..40).map(|i| test_frame(A, X, &[], i, 100)).collect::<Vec<_>>());
    let page = scrape_metrics(&lab.ns);
    assert_eq!(metric(&page, "capture_frames_written_total{interface=\"cap0\"}"), Some(40));
    // Not to any other address: IPAddressDeny=any drops what comes from one.
    lab.ns.ip(&["addr", "add", "10.77.0.1/24", "dev", CAPTURE_IF]).unwrap();
    let elsewhere = lab.ns.run(|| {
        let addr = "10.77.0.1:9464".parse().unwrap();
        Ok(std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(3)).is_ok())
    });
    assert!(!elsewhere.unwrap(), "the endpoint answered a non-loopback address");

    // The interface that was missing is captured once it appears.
    let _late = lab.add_pair("late0", "latep0", 1);
    let start = Instant::now();
    while metric(&scrape_metrics(&lab.ns), "capture_interface_up{interface=\"late0\"}") != Some(1) {
        assert!(start.elapsed() < Duration::from_secs(10), "{}", sd.daemon_log());
        std::thread::sleep(Duration::from_millis(100));
    }
    lab.send_from("latep0", &(100..130).map(|i| test_frame(A, X, &[], i, 100)).collect::<Vec<_>>());

    // systemctl reload: a rejected one shows in the status line, until one applies.
    let installed = sd.path("/etc/capture-daemon/capture.toml");
    let good = std::fs::read_to_string(&installed).unwrap();
    std::fs::write(
        &installed,
        "[[interface]]\nname = \"cap0\"\n[[target]]\nname = \"x\"\nvlan = 0\n",
    )
    .unwrap();
    sd.systemctl(&["reload", "capture-daemon"]);
    assert!(sd.show("StatusText").starts_with("RELOAD REJECTED"), "{}", sd.daemon_log());
    std::fs::write(&installed, good).unwrap();
    sd.systemctl(&["reload", "capture-daemon"]);
    assert!(!sd.show("StatusText").contains("REJECTED"), "{}", sd.daemon_log());

    sd.systemctl(&["stop", "capture-daemon"]);
    assert_eq!(sd.show("Result"), "success", "{}", sd.daemon_log());
    // The files, in the state directory: the service user's, 0640 in a 0750 directory.
    use std::os::unix::fs::MetadataExt as _;
    let dir = sd.path("/var/lib/capture-daemon");
    assert_eq!(std::fs::metadata(&dir).unwrap().mode() & 0o7777, 0o750);
    let (files, parts) = capture_files(&dir);
    assert!(parts.is_empty() && !files.is_empty(), "{files:?} {parts:?}");
    for f in &files {
        let meta = std::fs::metadata(f).unwrap();
        assert_eq!((meta.mode() & 0o7777, meta.uid()), (0o640, 990), "{}", f.display());
    }
    let by = ids_by_interface(&files);
    assert_eq!(by.get("cap0"), Some(&(0..40).collect::<Vec<_>>()));
    assert_eq!(by.get("late0"), Some(&(100..130).collect::<Vec<_>>()));
}
