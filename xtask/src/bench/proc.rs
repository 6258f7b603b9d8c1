//! Processes under measurement: start a tool with its output captured, wait until it says it is
//! ready, read its CPU time and I/O counters from /proc, stop it and collect its totals with
//! `waitid(WNOWAIT)` (its /proc/PID/io while it is a zombie) and `wait4` (its rusage).
//! The guard kills and reaps the process if the benchmark ends early.

use std::io::{BufRead as _, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

/// Set by SIGINT/SIGTERM: every wait of the benchmark checks it.
pub static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

/// Makes SIGINT and SIGTERM set [`STOP`] instead of killing xtask, so that the guards
/// (processes, namespace, tmpfs) get to clean up. Children get default handlers back at exec.
pub fn install_signal_handlers() -> Result<()> {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: sigaction is plain data; the handler only stores to an atomic, which is
        // async-signal-safe.
        let rc = unsafe {
            let mut act: libc::sigaction = std::mem::zeroed();
            act.sa_sigaction = on_signal as *const () as usize;
            libc::sigemptyset(&raw mut act.sa_mask);
            libc::sigaction(sig, &raw const act, std::ptr::null_mut())
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error()).context("installing a signal handler");
        }
    }
    Ok(())
}

pub fn check_stop() -> Result<()> {
    if STOP.load(Ordering::Relaxed) {
        bail!("interrupted");
    }
    Ok(())
}

/// Sleeps `d`, waking early (with an error) when interrupted.
pub fn sleep(d: Duration) -> Result<()> {
    let end = Instant::now() + d;
    loop {
        check_stop()?;
        let now = Instant::now();
        if now >= end {
            return Ok(());
        }
        std::thread::sleep((end - now).min(Duration::from_millis(50)));
    }
}

/// CPU time and I/O of a process at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// utime + stime in ns.
    pub cpu_ns: u64,
    /// `syscw` of /proc/PID/io: write-like syscalls (write, writev, pwrite, sendmsg...).
    pub syscw: u64,
    /// `wchar` of /proc/PID/io: bytes passed to those syscalls.
    pub wchar: u64,
}

/// What a process did in total, known once it has exited.
#[derive(Debug, Clone, Default)]
pub struct Finished {
    /// CPU time and I/O totals: rusage from wait4 (all threads), /proc/PID/io read while a zombie.
    pub total: Usage,
    /// Whether `total.syscw/wchar` are the zombie's totals (else: the last reading before the stop).
    pub io_after_exit: bool,
    /// Exit status as `wait4` gives it.
    pub status: i32,
    /// Everything it printed, stdout and stderr interleaved by line.
    pub lines: Vec<String>,
}

impl Finished {
    pub fn exited_ok(&self) -> bool {
        libc::WIFEXITED(self.status) && libc::WEXITSTATUS(self.status) == 0
    }

    pub fn describe_status(&self) -> String {
        if libc::WIFEXITED(self.status) {
            format!("exit status {}", libc::WEXITSTATUS(self.status))
        } else if libc::WIFSIGNALED(self.status) {
            format!("killed by signal {}", libc::WTERMSIG(self.status))
        } else {
            format!("wait status {:#x}", self.status)
        }
    }

    /// The last `n` lines, for error messages.
    pub fn tail(&self, n: usize) -> String {
        let skip = self.lines.len().saturating_sub(n);
        self.lines[skip..].join("\n")
    }
}

/// A running child whose stdout and stderr are read line by line. Killed and reaped on drop
/// unless [`Measured::stop`] already did.
pub struct Measured {
    name: String,
    child: Option<Child>,
    pid: i32,
    lines: Arc<Mutex<Vec<String>>>,
    readers: Vec<JoinHandle<()>>,
    ready: mpsc::Receiver<()>,
}

impl Measured {
    /// Spawns `cmd` (stdin null, stdout and stderr piped) in a process group of its own, so that
    /// signals reach the processes it forks (trafgen forks one per CPU) and Ctrl-C on the
    /// terminal reaches only xtask, which stops everything in order. A line containing
    /// `ready_marker` (on either stream) makes [`Measured::wait_ready`] return.
    pub fn spawn(name: &str, cmd: &mut Command, ready_marker: &'static str) -> Result<Measured> {
        use std::os::unix::process::CommandExt as _;
        let mut child = cmd
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {name}: {cmd:?}"))?;
        let pid = i32::try_from(child.id()).context("pid")?;
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, ready) = mpsc::channel();
        let mut readers = Vec::new();
        let streams: [Box<dyn Read + Send>; 2] = [
            Box::new(child.stdout.take().context("stdout")?),
            Box::new(child.stderr.take().context("stderr")?),
        ];
        for stream in streams {
            let lines = Arc::clone(&lines);
            let tx = tx.clone();
            readers.push(std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if line.contains(ready_marker) {
                        let _ = tx.send(());
                    }
                    if let Ok(mut l) = lines.lock() {
                        l.push(line);
                    }
                }
            }));
        }
        Ok(Measured { name: name.to_owned(), child: Some(child), pid, lines, readers, ready })
    }

    /// Waits for the ready line; fails if the process exits first, after `timeout`, or on Ctrl-C.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let end = Instant::now() + timeout;
        loop {
            check_stop()?;
            match self.ready.recv_timeout(Duration::from_millis(50)) {
                Ok(()) => return Ok(()),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {}
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None; // reaped by try_wait
                let log = self.join_lines();
                bail!(
                    "{} exited ({status}) before it was ready; its output:\n{}",
                    self.name,
                    log.join("\n")
                );
            }
            if Instant::now() >= end {
                bail!(
                    "{} was not ready within {} s; its output so far:\n{}",
                    self.name,
                    timeout.as_secs(),
                    self.lines.lock().map(|l| l.join("\n")).unwrap_or_default()
                );
            }
        }
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// CPU time (sum of every live thread's run time, ns) and I/O counters now.
    pub fn usage(&self) -> Result<Usage> {
        let (syscw, wchar) = read_io(self.pid)?;
        Ok(Usage { cpu_ns: threads_cpu_ns(self.pid)?, syscw, wchar })
    }

    /// Sends `signal` to the process group, waits up to `timeout` for the exit (then SIGKILL
    /// to the group), reads the totals.
    pub fn stop(mut self, signal: i32, timeout: Duration) -> Result<Finished> {
        let before = self.usage().ok();
        // SAFETY: signalling the group of our own unreaped child (its pid is the group id, and
        // cannot have been reused while the child is not reaped).
        unsafe { libc::kill(-self.pid, signal) };
        let end = Instant::now() + timeout;
        let mut killed = false;
        loop {
            // SAFETY: siginfo_t is plain data; waitid fills it.
            let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
            let id = libc::id_t::try_from(self.pid).context("pid")?;
            // Leave it a zombie (WNOWAIT) so that /proc/PID/io still holds its totals.
            // SAFETY: valid pointer to a siginfo_t.
            let rc = unsafe {
                libc::waitid(
                    libc::P_PID,
                    id,
                    &raw mut info,
                    libc::WEXITED | libc::WNOWAIT | libc::WNOHANG,
                )
            };
            if rc != 0 {
                return Err(std::io::Error::last_os_error())
                    .with_context(|| format!("waiting for {}", self.name));
            }
            // SAFETY: filled by waitid; 0 means nothing has exited yet.
            if unsafe { info.si_pid() } != 0 {
                break;
            }
            if Instant::now() >= end && !killed {
                eprintln!(
                    "  {} did not exit within {} s: killing it",
                    self.name,
                    timeout.as_secs()
                );
                // SAFETY: as above.
                unsafe { libc::kill(-self.pid, libc::SIGKILL) };
                killed = true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let zombie_io = read_io(self.pid).ok();
        // Anything it forked and left behind would keep its output pipes open.
        // SAFETY: as above; the group leader is a zombie, so the group id is still ours.
        unsafe { libc::kill(-self.pid, libc::SIGKILL) };
        let mut status = 0;
        // SAFETY: rusage is plain data; wait4 fills it.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: valid pointers; the child has exited, so this returns at once.
        let rc = unsafe { libc::wait4(self.pid, &raw mut status, 0, &raw mut ru) };
        if rc != self.pid {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("reaping {}", self.name));
        }
        // Reaped: the guard must not touch the pid again. Child's Drop does not wait or kill.
        self.child = None;
        let tv_ns = |tv: libc::timeval| {
            u64::try_from(tv.tv_sec).unwrap_or(0) * 1_000_000_000
                + u64::try_from(tv.tv_usec).unwrap_or(0) * 1000
        };
        let cpu_ns = tv_ns(ru.ru_utime) + tv_ns(ru.ru_stime);
        let (io_after_exit, (syscw, wchar)) = match (zombie_io, before) {
            (Some(io), _) => (true, io),
            (None, Some(b)) => (false, (b.syscw, b.wchar)),
            (None, None) => (false, (0, 0)),
        };
        let lines = self.join_lines();
        if killed {
            bail!("{} had to be killed; its output:\n{}", self.name, lines.join("\n"));
        }
        Ok(Finished { total: Usage { cpu_ns, syscw, wchar }, io_after_exit, status, lines })
    }

    fn join_lines(&mut self) -> Vec<String> {
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        self.lines.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

impl Drop for Measured {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: the group of our own unreaped child.
            unsafe { libc::kill(-self.pid, libc::SIGKILL) };
            let _ = child.wait();
        }
    }
}

/// Sum over /proc/PID/task/*/schedstat of the first field: ns on a CPU, per live thread.
fn threads_cpu_ns(pid: i32) -> Result<u64> {
    let dir = format!("/proc/{pid}/task");
    let mut total = 0u64;
    for entry in std::fs::read_dir(&dir).with_context(|| format!("listing {dir}"))? {
        let path = entry?.path().join("schedstat");
        // A thread may exit between the listing and the read.
        let Ok(text) = std::fs::read_to_string(&path) else { continue };
        let ns: u64 = text
            .split_whitespace()
            .next()
            .and_then(|f| f.parse().ok())
            .with_context(|| format!("parsing {}: {text:?}", path.display()))?;
        total += ns;
    }
    Ok(total)
}

/// (`syscw`, `wchar`) of /proc/PID/io.
fn read_io(pid: i32) -> Result<(u64, u64)> {
    let path = format!("/proc/{pid}/io");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let field = |key: &str| -> Result<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
            .and_then(|v| v.trim().parse().ok())
            .with_context(|| format!("{path} has no {key}"))
    };
    Ok((field("syscw")?, field("wchar")?))
}

/// Whole-system CPU time from the first line of /proc/stat, over all CPUs, in ns (the kernel
/// counts in USER_HZ ticks).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SystemCpu {
    /// user + nice + system + irq + softirq.
    pub busy_ns: u64,
    /// irq + softirq alone (time no process is charged with).
    pub irq_ns: u64,
}

impl SystemCpu {
    pub fn since(&self, before: &SystemCpu) -> SystemCpu {
        SystemCpu {
            busy_ns: self.busy_ns.saturating_sub(before.busy_ns),
            irq_ns: self.irq_ns.saturating_sub(before.irq_ns),
        }
    }
}

pub fn system_cpu() -> Result<SystemCpu> {
    let text = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    parse_proc_stat(&text, clock_ticks()?)
}

fn clock_ticks() -> Result<u64> {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(hz).ok().filter(|&h| h > 0).context("sysconf(_SC_CLK_TCK)")
}

fn parse_proc_stat(text: &str, hz: u64) -> Result<SystemCpu> {
    let line =
        text.lines().find(|l| l.starts_with("cpu ")).context("/proc/stat has no cpu line")?;
    let v: Vec<u64> = line.split_whitespace().skip(1).map_while(|f| f.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal guest guest_nice (guest is inside user).
    let [user, nice, system, _idle, _iowait, irq, softirq, ..] = v[..] else {
        bail!("/proc/stat cpu line has too few fields: {line:?}");
    };
    let tick = 1_000_000_000 / hz;
    Ok(SystemCpu {
        busy_ns: (user + nice + system + irq + softirq) * tick,
        irq_ns: (irq + softirq) * tick,
    })
}

/// CPU time of the calling thread, ns.
pub fn thread_cpu_ns() -> u64 {
    // SAFETY: timespec is plain data; clock_gettime fills it.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer; CLOCK_THREAD_CPUTIME_ID always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &raw mut ts) };
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_busy_time() {
        let text = "cpu  100 2 30 5000 7 1 4 0 0 0\ncpu0 50 1 15 2500 3 0 2 0 0 0\n";
        let cpu = parse_proc_stat(text, 100).ok();
        assert_eq!(cpu.map(|c| c.busy_ns), Some((100 + 2 + 30 + 1 + 4) * 10_000_000));
        assert_eq!(cpu.map(|c| c.irq_ns), Some(5 * 10_000_000));
        assert!(parse_proc_stat("cpu  1 2 3\n", 100).is_err());
        assert!(system_cpu().is_ok());
        let t0 = thread_cpu_ns();
        let mut x = 0u64;
        for i in 0..1_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        assert!(thread_cpu_ns() > t0 || x == 1);
    }

    #[test]
    fn measures_a_child_and_its_zombie_io() -> Result<()> {
        let mut cmd = Command::new("sh");
        cmd.args([
            "-c",
            "echo ready; i=0; while [ $i -lt 50 ]; do echo x >/dev/null; i=$((i+1)); done; exec sleep 5",
        ]);
        let mut m = Measured::spawn("sh", &mut cmd, "ready")?;
        m.wait_ready(Duration::from_secs(5))?;
        std::thread::sleep(Duration::from_millis(100));
        let now = m.usage()?;
        assert!(now.syscw >= 50, "{now:?}");
        let done = m.stop(libc::SIGTERM, Duration::from_secs(5))?;
        assert!(done.io_after_exit);
        assert!(done.total.syscw >= now.syscw);
        assert!(done.total.cpu_ns > 0);
        assert_eq!(done.describe_status(), "killed by signal 15");
        assert_eq!(done.lines, ["ready"]);
        Ok(())
    }

    #[test]
    fn a_process_that_dies_early_is_reported() -> Result<()> {
        let mut m = Measured::spawn(
            "false",
            Command::new("sh").args(["-c", "echo oops; exit 3"]),
            "never",
        )?;
        let err = m.wait_ready(Duration::from_secs(5)).expect_err("it exits");
        let msg = format!("{err:#}");
        assert!(msg.contains("oops") && msg.contains("exited"), "{msg}");
        Ok(())
    }
}
