//! `run --watch-config`: reload when the configuration file changes, as on SIGHUP.
//!
//! The directory is watched, not the file: editors and configuration tools replace a file by
//! renaming a new one over it, and a watch on the old inode would never see that. Any event in
//! the directory only makes the watcher look: it reloads once things have been quiet for
//! [`SETTLE`] and the file's content differs from what it last saw, so a half-written file is
//! not read mid-write, and touching the file or editing a neighbour does nothing.

use std::io;
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::stop::{self, Stop};

/// How long the directory must be quiet after a change before the file is read.
pub const SETTLE: Duration = Duration::from_millis(300);

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
    let cdir = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mask = libc::IN_CLOSE_WRITE
        | libc::IN_MOVED_TO
        | libc::IN_CREATE
        | libc::IN_DELETE
        | libc::IN_MODIFY
        | libc::IN_ATTRIB;
    // SAFETY: valid fd and NUL-terminated path.
    if unsafe { libc::inotify_add_watch(fd.as_raw_fd(), cdir.as_ptr(), mask) } < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("watching {}: {e}", dir.display())));
    }
    let mut seen = std::fs::read(&path).ok();
    std::thread::Builder::new().name("config-watch".into()).spawn(move || {
        // When the last event came, while a change is waiting to settle.
        let mut changed_at: Option<Instant> = None;
        let mut buf = [0u8; 4096];
        while !stop.is_raised() {
            let timeout = changed_at.map_or(Duration::from_secs(60), |t| {
                SETTLE.saturating_sub(t.elapsed()).max(Duration::from_millis(1))
            });
            let [events, _] = stop::wait_readable([fd.as_raw_fd(), stop.fd().as_raw_fd()], timeout);
            if events {
                // SAFETY: reading into our buffer; non-blocking fd. The events themselves do
                // not matter, only that something happened in the directory.
                while unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) } > 0
                {
                }
                changed_at = Some(Instant::now());
                continue;
            }
            if changed_at.is_some_and(|t| t.elapsed() >= SETTLE) {
                changed_at = None;
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

        stop.raise();
        handle.join().unwrap();
    }
}
