//! Finishing capture files off the writer thread.
//!
//! A file is finished once its last block is written: fsync, rename from `.part` to its final
//! name (while still open and locked, so no other writer "recovers" it meanwhile), fsync of the
//! directory, then retention (deleting the oldest files). With a large file in the page cache
//! the fsync alone took hundreds of milliseconds, during which the writer read no hand-off ring.
//! So the writer hands the file to this thread, through a short queue, and goes on with the
//! next one. Progressive writeback (`RotatingWriter::flush` starts writing each few MiB behind
//! the write position) keeps that fsync short as well.
//!
//! Each job carries the output directory it belongs to, held open ([`OutDir`]): the rename,
//! the directory's fsync and the deletions happen in it, whatever has become of its name.
//!
//! The semantics on disk are unchanged: a name without `.part` is only ever a whole, synced
//! file, and a `.part` file left by a crash is recovered at the next start. Errors are counted
//! with the writer's (see [`Finisher::counters`]) and logged at most every 10 s. Stopping waits
//! for every file handed over ([`Finisher::close`], and on drop).

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use log::{info, warn};

use super::dir::OutDir;
use super::rotate::{Policy, delete_oldest, space_and_floor, sync_dir};

/// Files waiting for the finisher before the writer waits for it in turn (a disk that far
/// behind loses frames either way).
const QUEUE: usize = 4;
/// At most one warning per this interval.
const ERROR_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// A file whose last block is written, handed over to be finished.
pub(super) struct Written {
    /// Open and locked until it has its final name.
    pub(super) file: File,
    /// The directory it is in.
    pub(super) dir: Arc<OutDir>,
    pub(super) part_name: String,
    pub(super) final_name: String,
    /// For messages.
    pub(super) part_path: PathBuf,
    pub(super) packets: u64,
    pub(super) bytes: u64,
}

/// What retention keeps, as the writer's settings were when the job was queued.
pub(super) struct Retention {
    /// The directory it applies to.
    pub(super) dir: Arc<OutDir>,
    pub(super) policy: Policy,
    /// `policy.keep_files`, less the place of a file being written where that counts.
    pub(super) keep_files: u64,
    /// Prefixes of the other streams in the directory (the floor is the directory's).
    pub(super) others: Vec<String>,
}

enum Job {
    /// Finish the file, then apply retention.
    Finish(Written, Retention),
    /// Apply retention only (no file to finish, or after a failed write).
    Retention(Retention),
}

/// What the finisher did, read by the writer's counters.
#[derive(Default)]
struct Shared {
    files_closed: AtomicU64,
    files_deleted: AtomicU64,
    errors: AtomicU64,
    /// Bytes in the finished files of the prefix after the last retention pass (plus what the
    /// writer handed over since).
    retained_bytes: AtomicU64,
    /// The outcome of the last file finished: its final name, or `None` if that failed.
    last: Mutex<Option<PathBuf>>,
    /// Jobs queued and not done yet.
    pending: Mutex<usize>,
    idle: Condvar,
    /// The threads that fsynced capture files, for tests that check it is not the writer's.
    #[cfg(test)]
    synced_on: Mutex<Vec<std::thread::ThreadId>>,
}

/// The finishing thread of one writer, and the queue to it.
pub(super) struct Finisher {
    jobs: Option<SyncSender<Job>>,
    thread: Option<JoinHandle<()>>,
    shared: Arc<Shared>,
}

impl Finisher {
    pub(super) fn start() -> io::Result<Finisher> {
        let (jobs, queue) = mpsc::sync_channel::<Job>(QUEUE);
        let shared = Arc::new(Shared::default());
        let thread = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new().name("file-finisher".into()).spawn(move || {
                let mut log = Limiter::default();
                for job in queue {
                    // A panic costs that job, not the thread: the files queued behind it are
                    // still finished, and the writer is not left waiting for them.
                    let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        run(job, &shared, &mut log);
                    }));
                    if ran.is_err() {
                        log::error!("finishing a capture file panicked; going on with the next");
                    }
                    done(&shared);
                }
            })?
        };
        Ok(Finisher { jobs: Some(jobs), thread: Some(thread), shared })
    }

    /// Hands `file` over to be finished, then `retention` to be applied.
    pub(super) fn finish(&mut self, file: Written, retention: Retention) {
        self.shared.retained_bytes.fetch_add(file.bytes, Relaxed);
        self.send(Job::Finish(file, retention));
    }

    /// Has `retention` applied, after the files handed over before.
    pub(super) fn retain(&mut self, retention: Retention) {
        self.send(Job::Retention(retention));
    }

    /// [`Finisher::retain`], unless the queue is full: then a pass is queued already, and the
    /// writer does not wait (a full disk fails every write; each asks for a pass).
    pub(super) fn retain_soon(&mut self, retention: Retention) {
        if let Some(jobs) = &self.jobs {
            self.add_pending();
            if jobs.try_send(Job::Retention(retention)).is_err() {
                done(&self.shared);
            }
        }
    }

    fn add_pending(&self) {
        *self.shared.pending.lock().unwrap_or_else(PoisonError::into_inner) += 1;
    }

    fn send(&mut self, job: Job) {
        self.add_pending();
        let Some(jobs) = &self.jobs else {
            return self.run_here(job);
        };
        let job = match jobs.try_send(job) {
            Ok(()) => return,
            Err(TrySendError::Full(job)) => {
                warn!(
                    "{QUEUE} capture files are waiting to be synced to disk: the writer waits \
                     for the disk (frames may be lost meanwhile)"
                );
                match jobs.send(job) {
                    Ok(()) => return,
                    Err(mpsc::SendError(job)) => job,
                }
            }
            Err(TrySendError::Disconnected(job)) => job,
        };
        // The thread is gone (it could not be kept alive): the files are still finished, here.
        log::error!("the file-finishing thread is gone; finishing files on the writer thread");
        self.jobs = None;
        self.run_here(job);
    }

    fn run_here(&self, job: Job) {
        run(job, &self.shared, &mut Limiter::default());
        done(&self.shared);
    }

    /// Waits until every job handed over is done.
    pub(super) fn wait_idle(&self) {
        let mut pending = self.shared.pending.lock().unwrap_or_else(PoisonError::into_inner);
        while *pending > 0 {
            pending = self.shared.idle.wait(pending).unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Finishes every job handed over and ends the thread. Returns the final name of the last
    /// file finished, `None` if it could not be finished.
    pub(super) fn close(&mut self) -> Option<PathBuf> {
        self.jobs = None;
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            log::error!("the file-finishing thread panicked");
        }
        self.shared.last.lock().unwrap_or_else(PoisonError::into_inner).take()
    }

    /// (files finished, files deleted, I/O errors) so far.
    pub(super) fn counters(&self) -> (u64, u64, u64) {
        let s = &self.shared;
        (s.files_closed.load(Relaxed), s.files_deleted.load(Relaxed), s.errors.load(Relaxed))
    }

    /// Bytes the finished files hold, as of the last retention pass plus the files handed over
    /// since.
    pub(super) fn retained_bytes(&self) -> u64 {
        self.shared.retained_bytes.load(Relaxed)
    }

    pub(super) fn set_retained_bytes(&self, bytes: u64) {
        self.shared.retained_bytes.store(bytes, Relaxed);
    }

    #[cfg(test)]
    pub(super) fn synced_on(&self) -> Vec<std::thread::ThreadId> {
        self.shared.synced_on.lock().unwrap().clone()
    }
}

impl Drop for Finisher {
    /// Files handed over are finished before the writer is gone.
    fn drop(&mut self) {
        self.close();
    }
}

fn done(shared: &Shared) {
    let mut pending = shared.pending.lock().unwrap_or_else(PoisonError::into_inner);
    *pending = pending.saturating_sub(1);
    if *pending == 0 {
        shared.idle.notify_all();
    }
}

fn run(job: Job, shared: &Shared, log: &mut Limiter) {
    let retention = match job {
        Job::Finish(file, retention) => {
            let finished = finish(file, shared, log);
            *shared.last.lock().unwrap_or_else(PoisonError::into_inner) = finished;
            retention
        }
        Job::Retention(retention) => retention,
    };
    let (dir, policy) = (&*retention.dir, &retention.policy);
    let need_free = space_and_floor(dir, policy).map_or(0, |(_, floor)| floor);
    let pruned =
        delete_oldest(dir, policy, retention.keep_files, need_free, None, &retention.others);
    shared.files_deleted.fetch_add(pruned.deleted, Relaxed);
    if let Some(bytes) = pruned.retained_bytes {
        shared.retained_bytes.store(bytes, Relaxed);
    }
    if let Some(err) = pruned.error {
        log.report(shared, "cannot list capture directory", dir.path(), &err);
    }
}

/// fsync, rename to the final name, fsync of the directory. Returns the final name if the file
/// got it.
fn finish(w: Written, shared: &Shared, log: &mut Limiter) -> Option<PathBuf> {
    #[cfg(test)]
    shared.synced_on.lock().unwrap().push(std::thread::current().id());
    if let Err(err) = w.file.sync_all() {
        log.report(shared, "cannot fsync capture file", &w.part_path, &err);
    }
    if let Err(err) = w.dir.rename_noreplace(&w.part_name, &w.final_name) {
        // Left as `.part`: the next start recovers it.
        log.report(shared, "cannot rename capture file", &w.part_path, &err);
        return None;
    }
    sync_dir(&w.dir);
    shared.files_closed.fetch_add(1, Relaxed);
    let final_path = w.dir.join(&w.final_name);
    info!("finished {} ({} packets, {} bytes)", final_path.display(), w.packets, w.bytes);
    // Closed, and so unlocked, once it has its final name.
    drop(w);
    Some(final_path)
}

/// Counts I/O errors and logs them at most once per [`ERROR_LOG_INTERVAL`].
#[derive(Default)]
struct Limiter {
    last: Option<Instant>,
    unlogged: u64,
}

impl Limiter {
    fn report(&mut self, shared: &Shared, what: &str, path: &Path, err: &io::Error) {
        shared.errors.fetch_add(1, Relaxed);
        if self.last.is_some_and(|t| t.elapsed() < ERROR_LOG_INTERVAL) {
            self.unlogged += 1;
            return;
        }
        warn!(
            "{what} {}: {err} ({} more errors finishing files since the last warning)",
            path.display(),
            self.unlogged
        );
        self.last = Some(Instant::now());
        self.unlogged = 0;
    }
}
