//! The UMEM and the host's reserved huge pages (`vm.nr_hugepages`): on a hypervisor that pool
//! belongs to the VMs. By default the daemon leaves it alone; with `umem_reserved_huge_pages`
//! it takes 2 MiB pages from it and gives every one back when it stops.
//!
//! These tests set the pool's size for a while (restored on drop); they run one at a time.

use std::path::Path;

use capture_tests::*;

const POOL: &str = "/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages";
/// 2 RX queues x a UMEM of 2 x 1024 4-KiB frames (8 MiB): 8 pages of 2 MiB.
const QUEUES: u32 = 2;
const RING: u32 = 1024;
const PAGES_USED: u64 = 8;

/// The 2 MiB pool grown by `extra` pages for as long as it lives.
struct Pool {
    before: u64,
}

impl Pool {
    fn grow(extra: u64) -> Pool {
        let before = read_u64(Path::new(POOL));
        std::fs::write(POOL, (before + extra).to_string()).expect("growing the huge page pool");
        let now = read_u64(Path::new(POOL));
        assert_eq!(now, before + extra, "the kernel found only {} of {extra} pages", now - before);
        Pool { before }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        let _ = std::fs::write(POOL, self.before.to_string());
    }
}

fn read_u64(path: &Path) -> u64 {
    let text = std::fs::read_to_string(path).expect("reading a counter");
    text.trim().parse().expect("a number")
}

/// A `/proc/meminfo` or `/proc/PID/status` field's number ("HugePages_Free:  12" -> 12,
/// "HugetlbPages:  16384 kB" -> 16384).
fn field(text: &str, name: &str) -> u64 {
    let line = text.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("no {name}"));
    line[name.len()..].trim().trim_end_matches(" kB").trim().parse().expect("a number")
}

fn free_pages() -> u64 {
    field(&std::fs::read_to_string("/proc/meminfo").expect("/proc/meminfo"), "HugePages_Free:")
}

/// The reserved huge pages mapped by process `pid`, in kB.
fn hugetlb_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("process status");
    field(&status, "HugetlbPages:")
}

/// Runs a mirror-mode capture with `capture` lines while the pool has free pages enough for
/// every UMEM twice over, checks it captured, that the daemon held `held_kb` of reserved huge
/// pages while it ran, and that the pool had as many free pages after it as before.
fn capture_with(capture: &str, held_kb: u64) {
    // The pool is the host's: the two tests of this file would otherwise count each other's.
    static POOL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = POOL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let _pool = Pool::grow(2 * PAGES_USED);
    let lab = Lab::new(QUEUES);
    let config =
        lab.config(&format!("ring_size = {RING}\n{capture}"), "", "[[target]]\nname = \"all\"\n");
    let free_before = free_pages();
    let daemon = lab.start(&config);
    let held = hugetlb_kb(daemon.pid());
    let frames: Vec<Vec<u8>> = (0..20)
        .map(|i| test_frame([0x52, 0x54, 0, 0, 0, 1], [0x52, 0x54, 0, 0, 0, 2], &[], i, 100))
        .collect();
    lab.send(&frames);
    let (status, _) = daemon.stop();
    assert!(status.success(), "daemon exit: {status}");
    let (files, _) = lab.files();
    assert_eq!(ids(&read_all(&files)), (0..20).collect::<Vec<u32>>(), "captured frames");
    assert_eq!(held, held_kb, "reserved huge pages (kB) the daemon held while capturing");
    assert_eq!(free_pages(), free_before, "free reserved huge pages before and after the capture");
}

#[test]
fn by_default_the_umem_takes_no_reserved_huge_pages() {
    if root_or_skip() {
        capture_with("", 0);
    }
}

#[test]
fn when_configured_the_umem_takes_reserved_huge_pages_and_gives_them_back() {
    if root_or_skip() {
        capture_with("umem_reserved_huge_pages = true", PAGES_USED * 2048);
    }
}
