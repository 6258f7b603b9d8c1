//! Failure safety: a full disk, retention by free space, a crash mid-file.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use capture_tests::*;

const A: [u8; 6] = [0x52, 0x54, 0, 0, 0, 0x0a];
const X: [u8; 6] = [0x52, 0x54, 0, 0, 0, 0x99];
const ALL: &str = "[[target]]\nname = \"all\"\n";

fn frames(range: std::ops::Range<u32>, len: usize) -> Vec<Vec<u8>> {
    range.map(|i| test_frame(A, X, &[], i, len)).collect()
}

fn config_in(lab: &Lab, dir: &Path, output: &str) -> PathBuf {
    let path = lab.dir.path().join("full.toml");
    std::fs::write(
        &path,
        format!(
            "[output]\ndirectory = \"{}\"\nprefix = \"t\"\nrotate_seconds = 0\n{output}\n\n\
             [[interface]]\nname = \"{CAPTURE_IF}\"\n\n{ALL}",
            dir.display()
        ),
    )
    .unwrap();
    path
}

fn finished(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".pcapng"))
        .collect();
    v.sort();
    v
}

#[test]
fn a_full_disk_counts_its_losses_keeps_files_whole_and_recovers() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new(1);
    let fs = SmallFs::mount(lab.dir.path().join("small"), "256k");
    // No floor: this test is about what a full disk does.
    let config = config_in(&lab, &fs.path, "rotate_bytes = 32768\nkeep_free_percent = 0");
    let daemon = lab.start(&config);
    // ~1 MB of frames into 256 KiB: the disk fills up part way.
    lab.send(&frames(0..2000, 500));
    std::thread::sleep(Duration::from_millis(1500)); // the writer flushes within a second
    daemon.wait_for_log("No space left on device", Duration::from_secs(5));
    for f in finished(&fs.path) {
        capinfos_count(&f); // every finished file is whole
    }
    // Space comes back: the daemon goes on writing, without a restart.
    for f in finished(&fs.path) {
        std::fs::remove_file(f).unwrap();
    }
    // A file that could not be created is retried once a second.
    std::thread::sleep(Duration::from_millis(2500));
    lab.send(&frames(10_000..10_050, 500));
    let log = daemon.log_handle();
    let (status, _) = daemon.stop();
    assert!(status.success(), "the daemon kept running through a full disk: {status}");
    let packets = read_all(&finished(&fs.path));
    let late: Vec<u32> = ids(&packets).into_iter().filter(|i| *i >= 10_000).collect();
    assert_eq!(late, (10_000..10_050).collect::<Vec<_>>(), "writing resumed once space was back");
    let log = log.text();
    let lost: u64 = log
        .split("write-errors ")
        .last()
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("the stop line reports write errors");
    assert!(lost > 0, "losses are counted: {log}");
}

#[test]
fn keep_free_bytes_deletes_the_oldest_files_before_the_disk_fills() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new(1);
    let fs = SmallFs::mount(lab.dir.path().join("small"), "512k");
    let config = config_in(&lab, &fs.path, "rotate_bytes = 32768\nkeep_free_bytes = \"192 KiB\"");
    let daemon = lab.start(&config);
    lab.send(&frames(0..3000, 500)); // ~1.5 MB through a 512 KiB file system
    let log = daemon.log_handle();
    assert!(daemon.stop().0.success());
    let log = log.text();
    assert!(log.contains("to keep within retention limits"), "{log}");
    assert!(!log.contains("No space left"), "retention made room in time: {log}");
    let kept = ids(&read_all(&finished(&fs.path)));
    assert_eq!(kept.last(), Some(&2999), "the newest frames are kept");
    assert!(kept.windows(2).all(|w| w[1] == w[0] + 1), "what is kept is one unbroken stretch");
}

/// The smallest free space seen on `path` until `stop` is set, sampled every 2 ms.
fn watch_free_space(path: PathBuf, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut min = u64::MAX;
        while !stop.load(Ordering::Relaxed) {
            min = min.min(fs_space(&path).0);
            std::thread::sleep(Duration::from_millis(2));
        }
        min
    })
}

/// (free, total) bytes of the file system holding `path`, as an unprivileged writer sees them.
fn fs_space(path: &Path) -> (u64, u64) {
    let out = Command::new("stat").args(["-f", "-c", "%a %b %S"]).arg(path).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let n: Vec<u64> = text.split_whitespace().map(|v| v.parse().unwrap()).collect();
    (n[0] * n[2], n[1] * n[2])
}

#[test]
fn the_default_config_keeps_a_tenth_of_the_disk_free() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new(1);
    let fs = SmallFs::mount(lab.dir.path().join("small"), "16m");
    // No keep_* key and no rotation limit: before the free-space floor, this filled the disk.
    let config = config_in(&lab, &fs.path, "");
    let daemon = lab.start(&config);
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = watch_free_space(fs.path.clone(), stop.clone());
    // ~60 MB of matched frames through a 16 MiB file system.
    for chunk in 0..10 {
        lab.send(&frames(chunk * 4300..(chunk + 1) * 4300, 1400));
    }
    let log = daemon.log_handle();
    let (status, _) = daemon.stop();
    stop.store(true, Ordering::Relaxed);
    let min_free = watcher.join().unwrap();
    assert!(status.success());
    let log = log.text();
    let (_, total) = fs_space(&fs.path);
    let floor = total / 10;
    assert!(
        min_free >= floor,
        "the free space went down to {min_free} bytes, below the floor of {floor}: {log}"
    );
    assert!(!log.contains("No space left"), "{log}");
    assert!(log.contains("write-errors 0"), "nothing was lost to a full disk: {log}");
    assert!(log.contains("to keep within retention limits"), "old files made room: {log}");
    let files = finished(&fs.path);
    assert!(files.len() >= 2, "files rotated below rotate_bytes on a small disk: {files:?}");
    for f in &files {
        capinfos_count(f); // every file left is whole
    }
    let kept = ids(&read_all(&files));
    assert_eq!(kept.last(), Some(&42_999), "the newest frames are kept");
    assert!(kept.windows(2).all(|w| w[1] == w[0] + 1), "what is kept is one unbroken stretch");
}

#[test]
fn after_kill_9_the_next_start_recovers_the_unfinished_file() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new(1);
    let config = lab.config("", "", ALL);
    let daemon = lab.start(&config);
    lab.send(&frames(0..100, 200));
    std::thread::sleep(Duration::from_millis(1500)); // flushed to the .part file
    daemon.kill9();
    let (done, parts) = lab.files();
    assert!(done.is_empty());
    assert_eq!(parts.len(), 1, "the file being written stays a .part");
    // Readable up to its last whole block.
    assert_eq!(capinfos_count(&parts[0]), 100);

    let daemon = lab.start(&config);
    assert!(
        daemon.log_text().contains("recovered unfinished capture file"),
        "{}",
        daemon.log_text()
    );
    lab.send(&frames(100..110, 200));
    assert!(daemon.stop().0.success());
    let (done, parts) = lab.files();
    assert!(parts.is_empty());
    assert_eq!(done.len(), 2);
    assert_eq!(ids(&read_all(&done)), (0..110).collect::<Vec<_>>());
    for f in &done {
        capinfos_count(f);
    }
}

#[test]
fn output_group_owns_the_directory_and_every_file() {
    if !root_or_skip() {
        return;
    }
    use std::os::unix::fs::MetadataExt as _;
    let lab = Lab::new(1);
    // A gid no account uses: only the daemon's chown can have put it there.
    let config = lab.config("", "rotate_packets = 50\ngroup = \"4242\"", ALL);
    let daemon = lab.start(&config);
    lab.send(&frames(0..120, 100));
    assert!(daemon.stop().0.success());
    let out = lab.out_dir();
    assert_eq!(std::fs::metadata(&out).unwrap().gid(), 4242, "the directory");
    let files = finished(&out);
    assert_eq!(files.len(), 3, "{files:?}");
    for f in &files {
        let m = std::fs::metadata(f).unwrap();
        assert_eq!((m.gid(), m.mode() & 0o777), (4242, 0o640), "{}", f.display());
    }

    // Without CAP_CHOWN and not a member of the group: refused at start-up, nothing attached.
    // (A new directory: keeping a group a directory already has needs no privilege.) `timeout`
    // so that a daemon that wrongly starts cannot hang the test.
    // The directory already has the group: keeping it needs no privilege, giving the files
    // to it does, and that must be what is checked.
    let fresh = lab.dir.path().join("fresh");
    std::fs::create_dir(&fresh).unwrap();
    std::os::unix::fs::chown(&fresh, None, Some(4242)).unwrap();
    let config = lab.dir.path().join("group.toml");
    std::fs::write(
        &config,
        format!(
            "[output]\ndirectory = \"{}\"\ngroup = \"4242\"\n[[interface]]\nname = \"{CAPTURE_IF}\"\n{ALL}",
            fresh.display()
        ),
    )
    .unwrap();
    let no_chown = ["setpriv", "--bounding-set=-chown", "--clear-groups"];
    let (code, text) = lab.run_daemon(
        &[&["timeout", "20"][..], &no_chown].concat(),
        &["run", "--config", config.to_str().unwrap()],
    );
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("cannot give") && text.contains("to group 4242"), "{text}");
    assert!(text.contains("CAP_CHOWN"), "{text}");
    assert!(!lab.xdp_attached());

    // `check` says so beforehand, and says fine when it is.
    let check = ["check", "--config", config.to_str().unwrap()];
    let (code, text) = lab.run_daemon(&no_chown, &check);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("FAIL  output group: cannot give files to group 4242"), "{text}");
    let (code, text) = lab.run_daemon(&[], &check);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("ok    output group: files go to group 4242"), "{text}");

    // A reload that asks for such a group is rejected, and the capture goes on as it was.
    let plain = lab.config("", "", ALL);
    let daemon = Daemon::start_via(&lab.ns, &no_chown, &plain, &[]);
    lab.config("", "group = \"4242\"", ALL);
    daemon.signal(libc::SIGHUP);
    daemon.wait_for_log("reload rejected", Duration::from_secs(5));
    assert!(daemon.log_text().contains("cannot give"), "{}", daemon.log_text());
    lab.send(&frames(500..510, 100));
    assert!(daemon.stop().0.success());
    let last = finished(&lab.out_dir()).pop().unwrap();
    assert_eq!(ids(&read_pcapng(&last).packets), (500..510).collect::<Vec<_>>());
}
