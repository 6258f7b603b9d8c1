//! Leftovers of interrupted runs: `remove_leftovers` (what `cargo xtask test | demo | bench`
//! call first) removes this project's namespaces and mounts whose process is gone, and nothing
//! else; `scripts/bootstrap.sh`, which admins run on any host, touches none. Root only.

use std::path::Path;
use std::process::Command;

use anyhow::{Result, ensure};
use capture_lab::{NetNs, remove_leftovers, root_tests_enabled, run_cmd};

/// One test at a time: the first removes the leftovers the second makes on purpose.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn netns_listed(name: &str) -> Result<bool> {
    let out = run_cmd(Command::new("ip").args(["netns", "list"]))?;
    Ok(out.lines().any(|l| l.split_whitespace().next() == Some(name)))
}

/// A pid that no process has: one that just exited.
fn dead_pid() -> Result<u32> {
    let mut child = Command::new("true").spawn()?;
    let pid = child.id();
    child.wait()?;
    Ok(pid)
}

/// A namespace created with `ip netns add` alone, as an admin would, deleted on drop.
struct Named(String);

impl Named {
    fn add(name: String) -> Result<Named> {
        run_cmd(Command::new("ip").args(["netns", "add", &name]))?;
        Ok(Named(name))
    }
}

impl Drop for Named {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "delete", &self.0]).output();
    }
}

/// A tmpfs mounted with `source`, unmounted on drop if still mounted.
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn mount(source: &str) -> Result<Tmpfs> {
        let dir = tempfile::tempdir()?;
        run_cmd(
            Command::new("mount").args(["-t", "tmpfs", "-o", "size=1m", source]).arg(dir.path()),
        )?;
        Ok(Tmpfs(dir))
    }

    fn mounted(&self) -> Result<bool> {
        let mounts = std::fs::read_to_string("/proc/mounts")?;
        let dir = self.0.path().to_str().unwrap_or_default();
        Ok(mounts.lines().any(|l| l.split_whitespace().nth(1) == Some(dir)))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        if self.mounted().unwrap_or(false) {
            let _ = Command::new("umount").arg(self.0.path()).output();
        }
    }
}

#[test]
fn only_this_projects_leftovers_of_dead_processes_are_removed() -> Result<()> {
    if !root_tests_enabled("only_this_projects_leftovers_of_dead_processes_are_removed")? {
        return Ok(());
    }
    let _serial = SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let dead = dead_pid()?;
    let leftover = Named::add(format!("captest-{dead}-0"))?;
    let lab_leftover = Named::add(format!("lab-vm0-{dead}-3"))?;
    let live = NetNs::create("captest")?;
    let admins = Named::add("lab-x".to_owned())?;
    let other = Named::add(format!("web-{dead}-0"))?;
    let dead_fs = Tmpfs::mount(&format!("capfull-{dead}"))?;
    let live_fs = Tmpfs::mount(&capture_lab::tmpfs_source("capfull"))?;
    let admins_fs = Tmpfs::mount("capfull")?;

    let removed = remove_leftovers()?;
    ensure!(!netns_listed(&leftover.0)? && !netns_listed(&lab_leftover.0)?, "{removed:?}");
    ensure!(removed.namespaces.contains(&leftover.0), "{removed:?}");
    ensure!(netns_listed(live.name())?, "a live run's namespace was deleted");
    ensure!(netns_listed(&admins.0)? && netns_listed(&other.0)?, "not ours: {removed:?}");
    ensure!(!dead_fs.mounted()?, "{removed:?}");
    ensure!(removed.mounts.iter().any(|m| m == dead_fs.0.path()), "{removed:?}");
    ensure!(live_fs.mounted()? && admins_fs.mounted()?, "{removed:?}");
    Ok(())
}

#[test]
fn bootstrap_touches_no_namespace_and_no_mount() -> Result<()> {
    if !root_tests_enabled("bootstrap_touches_no_namespace_and_no_mount")? {
        return Ok(());
    }
    let _serial = SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let dead = dead_pid()?;
    // Even names this project makes, of a process that is gone: bootstrap is run by admins on
    // hosts where such a name may mean something else.
    let names =
        [format!("lab-x-{dead}"), format!("lab-host-{dead}-0"), format!("captest-{dead}-1")];
    let namespaces = names.iter().map(|n| Named::add(n.clone())).collect::<Result<Vec<_>>>()?;
    let fs = Tmpfs::mount(&format!("capfull-{dead}"))?;
    // Everything is installed by now (CI and `cargo xtask test` run it first): it only checks.
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/bootstrap.sh");
    let out = Command::new("bash").arg(&script).output()?;
    ensure!(out.status.success(), "bootstrap.sh: {}", String::from_utf8_lossy(&out.stderr));
    for ns in &namespaces {
        ensure!(netns_listed(&ns.0)?, "bootstrap.sh deleted {}", ns.0);
    }
    ensure!(fs.mounted()?, "bootstrap.sh unmounted {}", fs.0.path().display());
    Ok(())
}
