//! `--perf`: after the measured runs, one more run per row with two `perf record -g` sessions,
//! one on the capture tool's pid (its process CPU) and one on the whole machine (the softirq
//! work on the generator's CPU is where packet sockets, tcx and XDP spend: the system CPU).
//! These runs are not in the summary: sampling changes what it measures. A missed goal is
//! explained from these profiles, not guessed.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, Result};

use super::proc::{self, Measured};
use super::{Ctx, Job, Tool, generate, path_str, start_tool};

/// One profiled run for each distinct (load, frame set, snaplen, tool) of `jobs` that starts a
/// tool; files `LOAD-SIZE-snapN-TOOL.{process,system}.data` and a `perf report` of each as
/// `.txt` in `dir`.
pub fn record_all(ctx: &Ctx, jobs: &[Job], dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut rows: Vec<Job> = jobs.iter().filter(|j| j.tool != Tool::Baseline).copied().collect();
    rows.sort_by_key(|j| (j.load, j.frames, j.snaplen, j.tool));
    rows.dedup_by_key(|j| (j.load, j.frames, j.snaplen, j.tool));
    for (i, job) in rows.iter().enumerate() {
        proc::check_stop()?;
        let stem = format!(
            "{}-{}-snap{}-{}",
            job.load.name(),
            job.frames.name(),
            job.snaplen.map_or_else(|| "-".to_owned(), |s| s.to_string()),
            job.tool.name()
        );
        eprintln!("[perf {:>2}/{}] {stem}", i + 1, rows.len());
        let run_dir = ctx.fs.root.join(format!("perf{i}"));
        std::fs::create_dir_all(&run_dir)?;
        let result = record_one(ctx, job, &run_dir, dir, &stem);
        let _ = std::fs::remove_dir_all(&run_dir);
        result.with_context(|| format!("perf run {stem}"))?;
    }
    eprintln!("bench: perf profiles in {} (perf report -i FILE)", dir.display());
    Ok(())
}

fn record_one(ctx: &Ctx, job: &Job, run_dir: &Path, dir: &Path, stem: &str) -> Result<()> {
    let Some(tool) = start_tool(ctx, job, run_dir)? else { return Ok(()) };
    proc::sleep(Duration::from_millis(300))?;
    let pid = tool.proc.pid().to_string();
    let process = dir.join(format!("{stem}.process.data"));
    let system = dir.join(format!("{stem}.system.data"));
    let mut sessions = Vec::new();
    let targets: [(&Path, &[&str]); 2] = [(&process, &["-p", &pid]), (&system, &["-a"])];
    for (file, target) in targets {
        let mut cmd = Command::new("perf");
        // Both run until SIGINT.
        cmd.args(["record", "-g", "-o", path_str(file)?]).args(target);
        sessions.push(Measured::spawn("perf record", &mut cmd, "\0never printed")?);
    }
    // perf prints nothing when it has attached: give it the time it takes here.
    proc::sleep(Duration::from_millis(500))?;
    generate(ctx, job)?;
    proc::sleep(Duration::from_millis(ctx.args.drain_ms))?;
    for s in sessions {
        let done = s.stop(libc::SIGINT, Duration::from_secs(60))?;
        if !done.lines.iter().any(|l| l.contains("Captured and wrote")) {
            eprintln!("  perf record said:\n{}", done.tail(10));
        }
    }
    tool.proc.stop(tool.stop_signal, Duration::from_secs(10))?;
    // Flat profiles to read first: without frame pointers the user-space call chains are
    // mostly noise; `perf report -i FILE` shows the (kernel) call graphs. The machine-wide one
    // is mostly idle and its softirq work spread thin over many symbols: by process and
    // object first, then by symbol with a lower threshold.
    let reports: [(&Path, &[(&str, &str)]); 2] = [
        (&process, &[("comm,dso,sym", "0.3")]),
        (&system, &[("comm,dso", "0.1"), ("comm,dso,sym", "0.05")]),
    ];
    for (file, views) in reports {
        let mut text = Vec::new();
        for (sort, limit) in views {
            let out = Command::new("perf")
                .args(["report", "--stdio", "--no-children", "-g", "none", "--percent-limit"])
                .args([limit, "--sort", sort, "-i"])
                .arg(file)
                .output()
                .with_context(|| format!("perf report -i {}", file.display()))?;
            text.extend_from_slice(&out.stdout);
        }
        let txt = file.with_extension("txt");
        std::fs::write(&txt, &text).with_context(|| format!("writing {}", txt.display()))?;
    }
    Ok(())
}
