//! Live VM updates, end to end in one process: the daemon's own entry (`daemon::run`) captures
//! on a veth in a network namespace while this test starts and destroys a domain on libvirt's
//! test driver (`test:///default` is one shared instance per process, and it emits lifecycle
//! events). The vm target's MACs must be armed when the VM starts and disarmed when it stops,
//! with no reload, and a plain target's frames must all be captured meanwhile. A reload that
//! names another VM makes the daemon follow that one too. With `vm_taps`, the VM's tap device
//! is attached while the VM runs, and only then.
//!
//! Needs root (a namespace, tcx programs); skipped otherwise unless CAPTURE_REQUIRE_ROOT is set.

use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use capture_daemon::config::Config;
use capture_daemon::daemon::{self, Control, Job};
use std::net::Ipv4Addr;

use capture_lab::{NetNs, Pace, RawSender, TapVm, VethPair};
use pcap_file::pcapng::{Block, PcapNgReader};
use virt::connect::Connect;
use virt::domain::Domain;

const VM_MAC: [u8; 6] = [0x52, 0x54, 0, 0, 0xe0, 0x02];
const PLAIN_MAC: [u8; 6] = [0x52, 0x54, 0, 0, 0xe0, 0x0a];
const PEER_MAC: [u8; 6] = [0x52, 0x54, 0, 0, 0xfe, 0xfe];
const ETHERTYPE: u16 = 0x88b5;

/// A minimal frame from `src` carrying `id`.
fn frame(src: [u8; 6], id: u32) -> Vec<u8> {
    let mut f = Vec::with_capacity(60);
    f.extend_from_slice(&PEER_MAC);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ETHERTYPE.to_be_bytes());
    f.extend_from_slice(&id.to_be_bytes());
    f.resize(60, 0);
    f
}

fn id_of(data: &[u8]) -> Option<u32> {
    (data.len() >= 18 && data[12..14] == ETHERTYPE.to_be_bytes())
        .then(|| u32::from_be_bytes([data[14], data[15], data[16], data[17]]))
}

/// The daemon's log lines, to wait for what it says it did.
struct Lines(Mutex<Vec<String>>);

impl log::Log for Lines {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        if record.level() <= log::Level::Info
            && let Ok(mut v) = self.0.lock()
        {
            eprintln!("daemon | {}", record.args());
            v.push(record.args().to_string());
        }
    }
    fn flush(&self) {}
}

static LINES: Lines = Lines(Mutex::new(Vec::new()));

/// Waits until `count` log lines contain `needle`. The limit only guards against a hang.
fn wait_for(needle: &str, count: usize) {
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let n = LINES.0.lock().unwrap().iter().filter(|l| l.contains(needle)).count();
        if n >= count {
            return;
        }
        assert!(Instant::now() < until, "no {count} log line(s) with {needle:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn send(ns: &NetNs, frames: &[Vec<u8>]) {
    let sent = ns.run(|| RawSender::open("gen0")?.send_all(frames, Pace::default())).unwrap();
    assert_eq!(sent, frames.len() as u64);
    // Let NAPI finish the last frames (not a timing assertion: the file is read at the end).
    std::thread::sleep(Duration::from_millis(300));
}

fn captured_ids(dir: &Path) -> Vec<u32> {
    let mut ids = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "pcapng") {
            continue;
        }
        let mut reader = PcapNgReader::new(std::fs::File::open(&path).unwrap()).unwrap();
        while let Some(block) = reader.next_block() {
            if let Block::EnhancedPacket(epb) = block.unwrap().0 {
                ids.extend(id_of(&epb.data));
            }
        }
    }
    ids.sort_unstable();
    ids
}

struct StopOnDrop<'a>(&'a Control);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.request_shutdown();
    }
}

#[test]
fn a_vm_starting_and_stopping_arms_and_disarms_its_target_without_a_reload() {
    // SAFETY: plain getter.
    if unsafe { libc::geteuid() } != 0 {
        assert!(std::env::var_os("CAPTURE_REQUIRE_ROOT").is_none(), "needs root");
        eprintln!("skipped: needs root");
        return;
    }
    log::set_logger(&LINES).unwrap();
    log::set_max_level(log::LevelFilter::Info);
    let ns = NetNs::create("capvm").unwrap();
    let _veth = VethPair::create(&ns, "cap0", "gen0", 1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let text = format!(
        "[output]\ndirectory = \"{}\"\nprefix = \"t\"\n\n[metrics]\nenabled = false\n\n\
         [libvirt]\nuri = \"test:///default\"\n\n[[interface]]\nname = \"cap0\"\nmode = \"tap\"\n\n\
         [[interface]]\nvm_taps = true\n\n\
         [[target]]\nname = \"evt02\"\nvm = \"evt02\"\n\n\
         [[target]]\nname = \"plain\"\nmac = \"52:54:00:00:e0:0a\"\n",
        out.display()
    );
    let path = dir.path().join("capture.toml");
    std::fs::write(&path, &text).unwrap();
    let config = Config::load(&path).unwrap();

    let control = Control::new().unwrap();
    std::thread::scope(|scope| {
        let daemon = scope.spawn(|| {
            let path = path.clone();
            let reload = Box::new(move || Ok(Config::load(&path)?));
            ns.run(|| daemon::run(config, &control, Job::Service { reload }))
        });
        // Stops the daemon also when an assertion below fails, so the scope can end.
        let _stop = StopOnDrop(&control);
        wait_for("capturing on cap0", 1);
        wait_for("VM evt02: not running on this host", 1);

        // 1: the VM is not here: its frame is not captured.
        send(&ns, &[frame(VM_MAC, 1), frame(PLAIN_MAC, 101)]);

        // The VM's tap device, as libvirt creates it before the VM starts.
        let tap = TapVm::create(&ns, "ctap-evt02", VM_MAC, Ipv4Addr::new(10, 78, 0, 2)).unwrap();
        tap.send_frame(&frame(VM_MAC, 10)).unwrap();

        // 2: the VM starts: armed, and its tap attached (vm_taps), no reload.
        let rw = Connect::open(Some("test:///default")).unwrap();
        let xml = format!(
            "<domain type='test'><name>evt02</name><memory>1024</memory><os><type>hvm</type></os>\
             <devices><interface type='ethernet'><mac address='{}'/>\
             <target dev='ctap-evt02'/></interface></devices></domain>",
            capture_lab::format_mac(VM_MAC)
        );
        let dom = Domain::create_xml(&rw, &xml, 0).unwrap();
        wait_for("VM evt02: on this host, MACs [52:54:00:00:e0:02]", 1);
        send(&ns, &[frame(VM_MAC, 2), frame(PLAIN_MAC, 102)]);
        wait_for("capturing on ctap-evt02 in tap mode", 1);
        tap.send_frame(&frame(VM_MAC, 11)).unwrap();
        // As in `send`: let the stack take the frame before the tap is detached.
        std::thread::sleep(Duration::from_millis(300));

        // Paused (as on a migration's source while its memory is copied): still armed.
        dom.suspend().unwrap();
        wait_for("libvirt: domain \"evt02\" event 3 detail 0", 1);
        send(&ns, &[frame(VM_MAC, 5)]);
        dom.resume().unwrap();

        // 3: the VM stops: disarmed again.
        dom.destroy().unwrap();
        wait_for("VM evt02: not running on this host", 2);
        send(&ns, &[frame(VM_MAC, 3), frame(PLAIN_MAC, 103)]);
        wait_for("vm_taps: capturing on cap0 (was cap0, ctap-evt02)", 1);
        tap.send_frame(&frame(VM_MAC, 12)).unwrap();

        // 4: a reload that names another VM (the test driver's running "test") follows it:
        // the watcher is restarted for the new set of VMs.
        let more = "\n[[target]]\nname = \"deflt\"\nvm = \"test\"\n";
        std::fs::write(&path, format!("{text}{more}")).unwrap();
        control.request_reload();
        wait_for("VM test: on this host, MACs [aa:bb:cc:dd:ee:ff]", 1);
        send(&ns, &[frame([0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff], 4), frame(PLAIN_MAC, 104)]);

        control.request_shutdown();
        daemon.join().unwrap().unwrap();
    });
    let lines = LINES.0.lock().unwrap().clone();
    // The only reload is step 4's: the VM's start and stop were followed without one.
    let reloads = lines.iter().filter(|l| l.contains("reloading the configuration")).count();
    assert_eq!(reloads, 1, "{lines:?}");
    // 11: on the VM's tap while it ran; 10 and 12 on it before and after: not attached then.
    assert_eq!(captured_ids(&out), vec![2, 4, 5, 11, 101, 102, 103, 104]);
}
