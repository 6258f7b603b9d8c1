//! `[[target]] output = "own"`: a target's frames in files of their own
//! (`{prefix}_{target}_{seq}_{time}.pcapng`), the shared stream for the rest, and on every
//! packet a comment naming the targets it matched. The real daemon in both modes, the files
//! read back with pcap-file, capinfos and tshark.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use capture_lab::format_mac;
use capture_tests::*;

const WEB01: [u8; 6] = [0x52, 0x54, 0, 0, 1, 0x01];
const DB01: [u8; 6] = [0x52, 0x54, 0, 0, 2, 0x01];
const WEB012: [u8; 6] = [0x52, 0x54, 0, 0, 1, 0x12];
const REST: [u8; 6] = [0x52, 0x54, 0, 0, 9, 0x09];
const OTHER: [u8; 6] = [0x52, 0x54, 0, 0, 7, 0x07];

fn target(name: &str, mac: [u8; 6], output: &str) -> String {
    format!(
        "[[target]]\nname = \"{name}\"\nmac = \"{}\"\noutput = \"{output}\"\n\n",
        format_mac(mac)
    )
}

/// web01 and db01 with files of their own; web012 and rest shared.
fn targets() -> String {
    [
        target("web01", WEB01, "own"),
        target("db01", DB01, "own"),
        target("web012", WEB012, "shared"),
        target("rest", REST, "shared"),
    ]
    .concat()
}

fn frames(dst: [u8; 6], src: [u8; 6], ids: std::ops::Range<u32>) -> Vec<Vec<u8>> {
    ids.map(|i| test_frame(dst, src, &[], i, 100)).collect()
}

/// Finished files by stream: the part of the name before `_{seq}_{time}.pcapng` (`t` is the
/// shared stream, `t_web01` web01's). No `.part` may be left.
fn streams(out: &Path) -> BTreeMap<String, Vec<PathBuf>> {
    let (_, parts) = capture_files(out);
    assert!(parts.is_empty(), "unfinished files after a clean stop: {parts:?}");
    finished_streams(out)
}

/// [`streams`] while the daemon runs: the files being written are left out.
fn finished_streams(out: &Path) -> BTreeMap<String, Vec<PathBuf>> {
    let (files, _) = capture_files(out);
    let mut by: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for f in files {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        let body = name.strip_suffix(".pcapng").unwrap();
        let mut parts = body.rsplitn(3, '_');
        let (stamp, seq, stream) = (parts.next(), parts.next(), parts.next());
        assert!(
            stamp.is_some_and(|s| s.len() == 14) && seq.is_some_and(|s| s.len() >= 5),
            "{name}: not {{prefix}}_{{seq:05}}_{{YYYYmmddHHMMSS}}.pcapng"
        );
        by.entry(stream.unwrap().to_owned()).or_default().push(f);
    }
    by
}

/// (id, comment) of every packet of `files`, sorted by id; every file whole to capinfos and
/// its comments the same to tshark.
fn packets(files: &[PathBuf]) -> Vec<(u32, String)> {
    let mut all = Vec::new();
    for file in files {
        let f = read_pcapng(file);
        assert_eq!(capinfos_count(file), f.packets.len() as u64, "{}", file.display());
        let ours: Vec<String> =
            f.packets.iter().map(|p| p.comment.clone().unwrap_or_default()).collect();
        let theirs: Vec<String> =
            tshark_fields(file, &["frame.comment"]).into_iter().map(|r| r.concat()).collect();
        assert_eq!(theirs, ours, "tshark reads the comments of {}", file.display());
        assert_eq!(f.interfaces.len(), 1, "{}: one IDB, as in every stream", file.display());
        assert_eq!(f.interfaces[0].0, CAPTURE_IF, "{}", file.display());
        all.extend(
            f.packets.iter().map(|p| (frame_id(&p.data).unwrap(), p.comment.clone().unwrap())),
        );
    }
    all.sort();
    all
}

fn labelled(ids: std::ops::Range<u32>, comment: &str) -> Vec<(u32, String)> {
    ids.map(|i| (i, comment.to_owned())).collect()
}

/// Ids of the packets `filter` selects in `file`, to tshark.
fn tshark_select(file: &Path, filter: &str) -> Vec<u32> {
    let out = Command::new("tshark")
        .arg("-r")
        .arg(file)
        .args(["-Y", filter, "-T", "fields", "-e", "frame.number"])
        .output()
        .expect("running tshark");
    assert!(out.status.success(), "tshark -Y {filter}: {}", String::from_utf8_lossy(&out.stderr));
    let numbers: Vec<usize> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| l.trim().parse().unwrap()).collect();
    let f = read_pcapng(file);
    numbers.iter().map(|n| frame_id(&f.packets[n - 1].data).unwrap()).collect()
}

#[test]
fn each_own_target_gets_exactly_its_frames_and_every_packet_names_its_targets() {
    if !root_or_skip() {
        return;
    }
    for mode in ["mirror", "tap"] {
        let lab = Lab::new(1);
        let iface = format!("name = \"{CAPTURE_IF}\"\nmode = \"{mode}\"");
        let config = lab.config_on(&[&iface], "", "", &targets());
        let daemon = lab.start(&config);
        let mut sent = Vec::new();
        sent.extend(frames(WEB01, OTHER, 1000..1010)); // web01
        sent.extend(frames(DB01, OTHER, 2000..2010)); // db01
        sent.extend(frames(REST, OTHER, 3000..3010)); // rest
        sent.extend(frames(DB01, WEB01, 4000..4010)); // web01 and db01
        sent.extend(frames(REST, WEB01, 5000..5010)); // web01 and rest
        sent.extend(frames(WEB012, OTHER, 6000..6010)); // web012
        sent.extend(frames(OTHER, OTHER, 7000..7010)); // no target
        lab.send(&sent);
        // Per-stream counters: written frames reach them once the writer has flushed (within
        // a second), so poll for the values rather than time them.
        let want = [("t", 30), ("t_web01", 30), ("t_db01", 20)];
        let line = |(stream, n): (&str, u32)| {
            format!("capture_stream_frames_written_total{{stream=\"{stream}\"}} {n}\n")
        };
        let mut page = String::new();
        for _ in 0..50 {
            page = scrape_metrics(&lab.ns);
            if want.iter().all(|w| page.contains(&line(*w))) {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        for w in want {
            assert!(page.contains(&line(w)), "{mode}: {}:\n{page}", line(w));
        }
        let (code, text) = lab.run_daemon(&[], &["status", "--config", config.to_str().unwrap()]);
        assert_eq!(code, 0, "{text}");
        for (stream, n) in want {
            let line = format!("  stream {stream}: {n} frames, ");
            assert!(text.contains(&line), "{mode}: status lacks {line:?}:\n{text}");
        }
        let (status, _) = daemon.stop();
        assert!(status.success(), "{mode}: daemon exit: {status}");

        let by = streams(&lab.out_dir());
        let names: Vec<&str> = by.keys().map(String::as_str).collect();
        assert_eq!(names, ["t", "t_db01", "t_web01"], "{mode}: one stream per own target");
        let web = |ids| labelled(ids, "targets: web01");
        let both = |ids| labelled(ids, "targets: web01, db01");
        let web_rest = |ids| labelled(ids, "targets: web01, rest");
        assert_eq!(
            packets(&by["t_web01"]),
            [web(1000..1010), both(4000..4010), web_rest(5000..5010)].concat(),
            "{mode}: web01's files hold web01's frames and nothing else"
        );
        assert_eq!(
            packets(&by["t_db01"]),
            [labelled(2000..2010, "targets: db01"), both(4000..4010)].concat(),
            "{mode}"
        );
        assert_eq!(
            packets(&by["t"]),
            [
                labelled(3000..3010, "targets: rest"),
                web_rest(5000..5010),
                labelled(6000..6010, "targets: web012"),
            ]
            .concat(),
            "{mode}: the shared stream: frames of a shared target, whatever else they matched"
        );

        // One VM out of a shared file: the documented filter, and the simple one that also
        // takes web012.
        let shared = &by["t"][0];
        let exact = tshark_select(shared, r#"frame.comment matches "(^targets: |, )web01(,|$)""#);
        assert_eq!(exact, (5000..5010).collect::<Vec<_>>(), "{mode}");
        let loose = tshark_select(shared, r#"frame.comment contains "web01""#);
        assert_eq!(loose, [(5000..5010).collect::<Vec<_>>(), (6000..6010).collect()].concat());
    }
}

#[test]
fn without_a_shared_target_no_shared_file_is_made() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new(1);
    let config = lab.config("", "", &target("web01", WEB01, "own"));
    let daemon = lab.start(&config);
    lab.send(&[frames(WEB01, OTHER, 1..6), frames(OTHER, OTHER, 100..105)].concat());
    assert!(daemon.stop().0.success());
    let by = streams(&lab.out_dir());
    assert_eq!(by.keys().collect::<Vec<_>>(), ["t_web01"]);
    assert_eq!(packets(&by["t_web01"]), labelled(1..6, "targets: web01"));
}

/// `rotate_packets` and `keep_files` apply to each stream alone: web01's many files do not
/// push the shared stream's one out.
#[test]
fn rotation_and_retention_apply_per_stream() {
    if !root_or_skip() {
        return;
    }
    for mode in ["mirror", "tap"] {
        let lab = Lab::new(1);
        let iface = format!("name = \"{CAPTURE_IF}\"\nmode = \"{mode}\"");
        let config = lab.config_on(
            &[&iface],
            "",
            "rotate_packets = 4\nkeep_files = 2",
            &[target("web01", WEB01, "own"), target("rest", REST, "shared")].concat(),
        );
        let daemon = lab.start(&config);
        lab.send(&frames(REST, OTHER, 1..4));
        lab.send(&frames(WEB01, OTHER, 100..124));
        let log = daemon.log_handle();
        assert!(daemon.stop().0.success());
        let by = streams(&lab.out_dir());
        assert_eq!(packets(&by["t"]), labelled(1..4, "targets: rest"), "{mode}: shared kept");
        let web = &by["t_web01"];
        assert_eq!(web.len(), 2, "{mode}: keep_files = 2 in web01's stream: {web:?}");
        for f in web {
            assert!(read_pcapng(f).packets.len() <= 4, "{mode}: rotate_packets: {}", f.display());
        }
        let kept: Vec<u32> = packets(web).into_iter().map(|(id, _)| id).collect();
        assert!(kept.iter().all(|id| *id >= 116), "{mode}: web01's newest are kept: {kept:?}");
        let log = log.text();
        assert!(log.contains("t_web01_00001_"), "{mode}: web01's first file was deleted: {log}");
    }
}

/// The free-space floor is the directory's: when web01's stream fills the disk, the oldest
/// finished file goes, and that is the shared stream's.
#[test]
fn the_free_space_floor_deletes_the_oldest_file_of_any_stream() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new(1);
    let fs = SmallFs::mount(lab.dir.path().join("small"), "512k");
    let config = lab.dir.path().join("floor.toml");
    std::fs::write(
        &config,
        format!(
            "[output]\ndirectory = \"{}\"\nprefix = \"t\"\nrotate_seconds = 0\n\
             rotate_bytes = 32768\nkeep_free_bytes = \"192 KiB\"\n\n\
             [[interface]]\nname = \"{CAPTURE_IF}\"\nmode = \"mirror\"\n\n{}",
            fs.path.display(),
            [target("web01", WEB01, "own"), target("rest", REST, "shared")].concat()
        ),
    )
    .unwrap();
    let daemon = lab.start(&config);
    // The shared stream: a bit over one file's worth, so its first file is finished.
    let big = |dst, ids: std::ops::Range<u32>| -> Vec<Vec<u8>> {
        ids.map(|i| test_frame(dst, OTHER, &[], i, 500)).collect()
    };
    lab.send(&big(REST, 0..80));
    // Names carry seconds: web01's files must be younger by their names too.
    std::thread::sleep(Duration::from_millis(1100));
    let shared_first: Vec<PathBuf> = finished_streams(&fs.path).remove("t").unwrap_or_default();
    assert_eq!(shared_first.len(), 1, "the shared stream finished one file: {shared_first:?}");
    // ~1.5 MB for web01 through 512 KiB.
    lab.send(&big(WEB01, 1000..4000));
    let log = daemon.log_handle();
    assert!(daemon.stop().0.success());
    let log = log.text();
    assert!(!log.contains("No space left"), "the floor made room in time: {log}");
    assert!(
        !shared_first[0].exists(),
        "the shared stream's old file went for web01's newer ones: {log}"
    );
    let first = shared_first[0].file_name().unwrap().to_string_lossy().into_owned();
    assert!(log.contains(&first) && log.contains("to keep the free-space floor"), "{log}");
    let web: Vec<u32> =
        packets(&streams(&fs.path)["t_web01"]).into_iter().map(|(id, _)| id).collect();
    assert_eq!(web.last(), Some(&3999), "web01's newest frames are kept");
}

/// A reload makes web01 shared and gives db01 files of its own: web01's stream is finished at
/// once, db01's starts, nothing is lost on the way.
#[test]
fn a_reload_adds_and_removes_own_streams() {
    if !root_or_skip() {
        return;
    }
    for mode in ["mirror", "tap"] {
        let lab = Lab::new(1);
        let iface = format!("name = \"{CAPTURE_IF}\"\nmode = \"{mode}\"");
        let before = [target("web01", WEB01, "own"), target("db01", DB01, "shared")].concat();
        let config = lab.config_on(&[&iface], "", "", &before);
        let daemon = lab.start(&config);
        lab.send(&[frames(WEB01, OTHER, 100..105), frames(DB01, OTHER, 200..205)].concat());
        let after = [target("web01", WEB01, "shared"), target("db01", DB01, "own")].concat();
        lab.config_on(&[&iface], "", "", &after);
        daemon.signal(libc::SIGHUP);
        daemon.wait_for_log("target db01 gets files of its own", Duration::from_secs(5));
        // web01's own stream is finished by the reload, not at the stop.
        let web_files = finished_streams(&lab.out_dir()).remove("t_web01").unwrap_or_default();
        assert_eq!(web_files.len(), 1, "{mode}: {web_files:?}");
        lab.send(&[frames(WEB01, OTHER, 110..115), frames(DB01, OTHER, 210..215)].concat());
        assert!(daemon.stop().0.success());
        let by = streams(&lab.out_dir());
        assert_eq!(packets(&by["t_web01"]), labelled(100..105, "targets: web01"), "{mode}");
        assert_eq!(packets(&by["t_db01"]), labelled(210..215, "targets: db01"), "{mode}");
        assert_eq!(
            packets(&by["t"]),
            [labelled(110..115, "targets: web01"), labelled(200..205, "targets: db01")].concat(),
            "{mode}"
        );
    }
}
