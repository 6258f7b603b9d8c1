//! `capture-daemon status`: a human summary of a running daemon, from its metrics endpoint.

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::bail;

use crate::config::Config;
use crate::metrics::client::{self, Samples, label};

fn sum(samples: &Samples, name: &str, iface: Option<&str>) -> f64 {
    samples
        .iter()
        .filter(|(k, _)| k.split('{').next() == Some(name))
        .filter(|(k, _)| iface.is_none_or(|i| label(k, "interface").as_deref() == Some(i)))
        .map(|(_, v)| v)
        .sum()
}

fn gib(bytes: f64) -> String {
    format!("{:.1} GiB", bytes / f64::from(1u32 << 30))
}

/// Prints the summary; exit status 0 when a daemon answered, 1 when none did.
pub fn print(config: &Config, config_path: &Path) -> anyhow::Result<ExitCode> {
    if !config.metrics.enabled {
        bail!(
            "[metrics] is off in {}: status reads the metrics endpoint, set enabled = true",
            config_path.display()
        );
    }
    let addr = config.metrics.listen;
    let first = match client::scrape(addr) {
        Ok(s) => s,
        Err(e) => {
            println!("no capture-daemon answers at http://{addr}/metrics ({e}): none running?");
            return Ok(ExitCode::from(1));
        }
    };
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(1));
    let second = client::scrape(addr).unwrap_or_else(|_| first.clone());
    let secs = t0.elapsed().as_secs_f64();
    let rate = |name: &str, iface: Option<&str>| {
        // Never below 0: an interface restarted between the scrapes starts its counts again.
        ((sum(&second, name, iface) - sum(&first, name, iface)) / secs).max(0.0)
    };

    let mut interfaces: Vec<String> = second.keys().filter_map(|k| label(k, "interface")).collect();
    interfaces.dedup();
    interfaces.sort_unstable();
    interfaces.dedup();
    let up = |iface: &str| sum(&second, "capture_interface_up", Some(iface)) > 0.0;
    let (captured, missing): (Vec<&str>, Vec<&str>) =
        interfaces.iter().map(String::as_str).partition(|i| up(i));
    println!(
        "capture-daemon at http://{addr}/metrics: capturing on {} interface(s)",
        captured.len()
    );
    for (k, v) in second.iter().filter(|(k, _)| k.starts_with("capture_target_vm_present{")) {
        let (target, vm) = (label(k, "target"), label(k, "vm"));
        let (target, vm) = (target.as_deref().unwrap_or("?"), vm.as_deref().unwrap_or("?"));
        if *v > 0.0 {
            println!("  target {target}: VM {vm} present on this host (its MACs are captured)");
        } else {
            println!(
                "  target {target}: VM {vm} ABSENT: not running on this host; matches nothing \
                 until it starts or migrates here"
            );
        }
    }
    for iface in &missing {
        println!(
            "  {iface}: NOT CAPTURED: the interface is missing (captured again once it is back)"
        );
    }
    for iface in &captured {
        let i = Some(*iface);
        println!(
            "  {iface}: seen {:.0} ({:.0}/s), matched {:.0}, written {:.0} ({:.0}/s)",
            sum(&second, "capture_frames_seen_total", i),
            rate("capture_frames_seen_total", i),
            sum(&second, "capture_frames_matched_total", i),
            sum(&second, "capture_frames_written_total", i),
            rate("capture_frames_written_total", i),
        );
        let drops: Vec<String> = second
            .iter()
            .filter(|(k, v)| {
                k.starts_with("capture_drops_total{")
                    && label(k, "interface").as_deref() == i
                    && **v > 0.0
            })
            .map(|(k, v)| format!("{} {v:.0}", label(k, "stage").unwrap_or_else(|| "?".into())))
            .collect();
        println!(
            "    drops: {}",
            if drops.is_empty() { "none".to_owned() } else { drops.join(", ") }
        );
        // Only counted while a target has a vni: silent for everyone else.
        let encapsulated = sum(&second, "capture_frames_encapsulated_total", i);
        let malformed = sum(&second, "capture_frames_encap_malformed_total", i);
        if encapsulated > 0.0 || malformed > 0.0 {
            println!("    VXLAN/Geneve: encapsulated {encapsulated:.0}, malformed {malformed:.0}");
        }
        for (k, v) in second.iter().filter(|(k, _)| {
            k.starts_with("capture_target_frames_total{") && label(k, "interface").as_deref() == i
        }) {
            let bytes_key =
                k.replacen("capture_target_frames_total", "capture_target_bytes_total", 1);
            let bytes = second.get(&bytes_key).copied().unwrap_or(0.0);
            println!(
                "    target {}: {v:.0} frames, {bytes:.0} bytes",
                label(k, "target").unwrap_or_else(|| "?".into())
            );
        }
    }
    if second.get("capture_config_last_reload_successful") == Some(&0.0) {
        println!(
            "  configuration: the last reload was REJECTED; the previous configuration runs (the \
             log says why)"
        );
    }
    let lost = sum(&second, "capture_write_error_frames_total", None);
    if lost > 0.0 {
        println!("  frames lost to write errors: {lost:.0}");
    }
    if let Some(file) = second.keys().find(|k| k.starts_with("capture_current_file{")) {
        println!("  writing {}", label(file, "path").unwrap_or_else(|| "?".into()));
    }
    println!(
        "  files closed {:.0}, bytes written {}, disk free {}",
        sum(&second, "capture_files_closed_total", None),
        gib(sum(&second, "capture_bytes_written_total", None)),
        gib(sum(&second, "capture_disk_free_bytes", None)),
    );
    // With targets of output = "own", one line per stream of files (the shared one first).
    let streams: Vec<(&String, &f64)> = second
        .iter()
        .filter(|(k, _)| k.starts_with("capture_stream_frames_written_total{"))
        .collect();
    if streams.len() > 1 {
        for (k, frames) in streams {
            let of = |metric: &str| {
                let key = k.replacen("capture_stream_frames_written_total", metric, 1);
                second.get(&key).copied().unwrap_or(0.0)
            };
            println!(
                "  stream {}: {frames:.0} frames, {} written, {:.0} files closed",
                label(k, "stream").unwrap_or_else(|| "?".into()),
                gib(of("capture_stream_bytes_written_total")),
                of("capture_stream_files_closed_total"),
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
