//! `run --watch-config`: reload when the configuration file changes, as on SIGHUP.
//!
//! The directory is watched, not the file: editors and configuration tools replace a file by
//! renaming a new one over it, and a watch on the old inode would never see that. An event on
//! the file's name only makes the watcher look: it reloads once the name has been quiet for
//! [`SETTLE`] (or [`SETTLE_MAX`] after the first event, however busy) and the file's content
//! differs from what it last saw, so a half-written file is not read mid-write, and touching
//! the file does nothing. When the file is a symbolic link (a Kubernetes ConfigMap swaps a
//! `..data` link next to it), every event in the directory counts, since any may move the
//! link's target, and the target's own directory is watched for its name. Lost events
//! (a queue overflow) count as a change to look at.

use std::io;
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::stop::{self, Stop};

/// How long the file must be quiet after a change before it is read.
pub const SETTLE: Duration = Duration::from_millis(300);
/// Longest wait after the first event, for a file that keeps changing.
pub const SETTLE_MAX: Duration = Duration::from_secs(2);

/// Starts a thread that calls `on_change` each time the content of `path` changes, until `stop`
/// is raised.
pub fn spawn(
    path: &Path,
    stop: Stop,
    on_change: impl Fn() + Send + 'static,
) -> io::Result<JoinHandle<()>> {
    let path = std::path::absolute(path)?;
    let dir = path.parent().map_or_else(|| PathBuf::from("/"), Path::to_path_buf);
    // SAFETY: plain syscall; the fd is owned right away.
    let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC | libc::IN_NONBLOCK) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fresh, valid fd.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let watch = |dir: &Path| -> io::Result<i32> {
        let cdir = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let mask = libc::IN_CLOSE_WRITE
            | libc::IN_MOVED_TO
            | libc::IN_CREATE
            | libc::IN_DELETE
            | libc::IN_MODIFY
            | libc::IN_ATTRIB;
        // SAFETY: valid fd and NUL-terminated path.
        let wd = unsafe { libc::inotify_add_watch(fd.as_raw_fd(), cdir.as_ptr(), mask) };
        if wd < 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(e.kind(), format!("watching {}: {e}", dir.display())));
        }
        Ok(wd)
    };
    let dir_wd = watch(&dir)?;
    let mut seen = std::fs::read(&path).ok();
    let name = path.file_name().map(|n| n.as_encoded_bytes().to_vec()).unwrap_or_default();
    let any_event = path.symlink_metadata().is_ok_and(|m| m.file_type().is_symlink());
    // A link's target is edited where it lives: its directory is watched for its name too.
    let target = if any_event { std::fs::canonicalize(&path).ok() } else { None };
    let target = match target.as_deref().and_then(|t| Some((t.parent()?, t.file_name()?))) {
        Some((tdir, tname)) => Some((watch(tdir)?, tname.as_encoded_bytes().to_vec())),
        None => None,
    };
    std::thread::Builder::new().name("config-watch".into()).spawn(move || {
        // While a change waits to settle: when its first and its last event came.
        let mut pending: Option<(Instant, Instant)> = None;
        // Room for many events at once (each is 16 bytes plus a name of up to 256).
        let mut buf = [0u8; 16 * 1024];
        while !stop.is_raised() {
            let settled = |(first, last): (Instant, Instant)| {
                last.elapsed() >= SETTLE || first.elapsed() >= SETTLE_MAX
            };
            let timeout = pending.map_or(Duration::from_secs(60), |(first, last)| {
                let wait = SETTLE.saturating_sub(last.elapsed());
                wait.min(SETTLE_MAX.saturating_sub(first.elapsed())).max(Duration::from_millis(1))
            });
            let [events, _] = stop::wait_readable([fd.as_raw_fd(), stop.fd().as_raw_fd()], timeout);
            if events {
                let mut hit = false;
                loop {
                    // SAFETY: reading into our buffer; non-blocking fd.
                    let n =
                        unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
                    let Ok(n) = usize::try_from(n) else { break };
                    if n == 0 {
                        break;
                    }
                    hit |= events_of(&buf[..n]).any(|(wd, mask, n)| {
                        // Events were lost: look at the file anyway.
                        mask & libc::IN_Q_OVERFLOW != 0
                            || (wd == dir_wd && (any_event || n == name.as_slice()))
                            || target.as_ref().is_some_and(|(twd, tn)| wd == *twd && n == tn)
                    });
                }
                if hit {
                    let now = Instant::now();
                    pending = Some((pending.map_or(now, |(first, _)| first), now));
                }
                continue;
            }
            if pending.is_some_and(settled) {
                pending = None;
                // A missing file (mid-replace, or deleted) is not a change to act on.
                if let Ok(now) = std::fs::read(&path)
                    && seen.as_ref() != Some(&now)
                {
                    seen = Some(now);
                    log::info!("{} changed; reloading", path.display());
                    on_change();
                }
            }
        }
    })
}

/// (watch, mask, name) of each event in a buffer of `struct inotify_event`s (wd, mask, cookie,
/// len, then `len` bytes of NUL-padded name).
fn events_of(mut buf: &[u8]) -> impl Iterator<Item = (i32, u32, &[u8])> {
    std::iter::from_fn(move || {
        let wd = i32::from_ne_bytes(buf.get(0..4)?.try_into().ok()?);
        let mask = u32::from_ne_bytes(buf.get(4..8)?.try_into().ok()?);
        let len = u32::from_ne_bytes(buf.get(12..16)?.try_into().ok()?) as usize;
        let name = buf.get(16..16 + len)?;
        buf = &buf[16 + len..];
        Some((wd, mask, name.split(|b| *b == 0).next().unwrap_or_default()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// Waits up to 3 s for `count` to reach `want`, then a little longer to catch extras.
    fn settle(count: &AtomicU32, want: u32) -> u32 {
        let start = Instant::now();
        while count.load(Ordering::SeqCst) < want && start.elapsed() < Duration::from_secs(3) {
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(SETTLE * 2);
        count.load(Ordering::SeqCst)
    }

    #[test]
    fn reloads_on_content_changes_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("capture.toml");
        std::fs::write(&path, "a = 1\n").unwrap();
        let count = Arc::new(AtomicU32::new(0));
        let stop = Stop::new().unwrap();
        let counter = Arc::clone(&count);
        let handle = spawn(&path, stop.clone(), move || {
            counter.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();

        std::fs::write(&path, "a = 1\n").unwrap();
        std::fs::write(dir.path().join("other.toml"), "b = 2\n").unwrap();
        assert_eq!(settle(&count, 1), 0, "same content, or another file: no reload");

        std::fs::write(&path, "a = 2\n").unwrap();
        assert_eq!(settle(&count, 1), 1, "written in place");

        // As editors and config tools do it: a new file renamed over the old one.
        let tmp = dir.path().join(".capture.toml.new");
        std::fs::write(&tmp, "a = 3\n").unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        assert_eq!(settle(&count, 2), 2, "replaced by rename");

        // A neighbour written without pause does not hold a change back.
        let busy = dir.path().join("busy.log");
        let writer = std::thread::spawn(move || {
            for i in 0..200 {
                std::fs::write(&busy, format!("{i}\n")).unwrap();
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        std::fs::write(&path, "a = 4\n").unwrap();
        assert_eq!(settle(&count, 3), 3, "next to a busy file");
        writer.join().unwrap();

        stop.raise();
        handle.join().unwrap();
    }

    #[test]
    fn follows_a_link_to_a_file_elsewhere() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        std::fs::create_dir(&real).unwrap();
        std::fs::write(real.join("capture.toml"), "a = 1\n").unwrap();
        let conf = dir.path().join("etc");
        std::fs::create_dir(&conf).unwrap();
        let link = conf.join("capture.toml");
        std::os::unix::fs::symlink(real.join("capture.toml"), &link).unwrap();
        let count = Arc::new(AtomicU32::new(0));
        let stop = Stop::new().unwrap();
        let counter = Arc::clone(&count);
        let handle = spawn(&link, stop.clone(), move || {
            counter.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
        std::fs::write(real.join("capture.toml"), "a = 2\n").unwrap();
        assert_eq!(settle(&count, 1), 1, "the link's target edited in its own directory");
        stop.raise();
        handle.join().unwrap();
    }
}
