//! What an interrupted run (Ctrl-C, a CI timeout, `kill -9`) leaves behind: network
//! namespaces ([`NetNs`](crate::NetNs) names them `{prefix}-{pid}-{n}`) and the tmpfs mounts
//! of the disk-full tests and the benchmark (source `capfull-{pid}`, `capbench-{pid}`). `cargo xtask test`, `demo` and
//! `bench` remove, before they start, those of this project whose process is gone. Nothing
//! else is touched: a host's own namespaces and mounts are not ours to delete.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result};

use crate::run_cmd;

/// The namespace name prefixes this project uses: `cap...` (tests, demo, benchmark) and
/// `lab-...` (the lab's own tests). [`NetNs::create`](crate::NetNs::create) takes no other.
pub const NETNS_PREFIXES: [&str; 2] = ["cap", "lab-"];

/// The names of the tmpfs mounts this project makes: the disk-full tests' and the benchmark's.
pub const TMPFS_NAMES: [&str; 2] = ["capfull", "capbench"];

/// The source (`mount -t tmpfs SOURCE DIR`) for a tmpfs that this process mounts: `name`
/// (one of [`TMPFS_NAMES`]) and this process's id, so that [`remove_leftovers`] unmounts it
/// once this process is gone, and only then.
pub fn tmpfs_source(name: &str) -> String {
    debug_assert!(TMPFS_NAMES.contains(&name), "{name} is not in TMPFS_NAMES");
    format!("{name}-{}", std::process::id())
}

/// What [`remove_leftovers`] removed.
#[derive(Debug, Default)]
pub struct Removed {
    pub namespaces: Vec<String>,
    pub mounts: Vec<PathBuf>,
}

/// The pid in a namespace name this project made (`{prefix}-{pid}-{n}`, prefix one of
/// [`NETNS_PREFIXES`]), or `None` for any other name.
pub fn netns_owner(name: &str) -> Option<u32> {
    if !NETNS_PREFIXES.iter().any(|p| name.starts_with(p)) {
        return None;
    }
    let mut parts = name.rsplitn(3, '-');
    let (n, pid, prefix) = (parts.next()?, parts.next()?, parts.next()?);
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if prefix.is_empty() || !digits(n) || !digits(pid) {
        return None;
    }
    pid.parse().ok()
}

/// The pid in a tmpfs source name from [`tmpfs_source`].
fn tmpfs_owner(source: &str) -> Option<u32> {
    let (name, pid) = source.rsplit_once('-')?;
    let ours = TMPFS_NAMES.contains(&name) && !pid.is_empty();
    (ours && pid.bytes().all(|b| b.is_ascii_digit())).then(|| pid.parse().ok())?
}

/// Whether process `pid` exists (in this pid namespace).
fn alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else { return false };
    // SAFETY: signal 0 only checks that the process exists and may be signalled.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Deletes this project's namespaces and unmounts its tmpfs mounts whose process is gone.
pub fn remove_leftovers() -> Result<Removed> {
    let mut removed = Removed::default();
    let list = run_cmd(Command::new("ip").args(["netns", "list"]))?;
    // Lines look like "NAME" or "NAME (id: 3)".
    for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
        if netns_owner(name).is_some_and(|pid| !alive(pid)) {
            run_cmd(Command::new("ip").args(["netns", "delete", name]))
                .with_context(|| format!("deleting the leftover network namespace {name}"))?;
            removed.namespaces.push(name.to_owned());
        }
    }
    let mounts = std::fs::read_to_string("/proc/mounts").context("reading /proc/mounts")?;
    for line in mounts.lines() {
        let mut fields = line.split_whitespace();
        let (Some(source), Some(dir), Some("tmpfs")) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        if tmpfs_owner(source).is_some_and(|pid| !alive(pid)) {
            // /proc/mounts writes a space in a path as \040; test directories have none.
            run_cmd(Command::new("umount").arg(dir))
                .with_context(|| format!("unmounting the leftover tmpfs {dir}"))?;
            removed.mounts.push(PathBuf::from(dir));
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_names_this_project_makes_have_an_owner() {
        assert_eq!(netns_owner("captest-1234-0"), Some(1234));
        assert_eq!(netns_owner("lab-vm0-77-12"), Some(77));
        assert_eq!(netns_owner("capdemo-5-1"), Some(5));
        for other in ["lab-x", "lab-1234", "web-1234-0", "captest-12a-0", "captest--0", "cap-1-"] {
            assert_eq!(netns_owner(other), None, "{other}");
        }
        assert_eq!(tmpfs_owner("capfull-42"), Some(42));
        assert_eq!(tmpfs_owner("capbench-7"), Some(7));
        for other in ["capfull", "capfull-", "capfull-x", "tmpfs", "capfull42", "web-42"] {
            assert_eq!(tmpfs_owner(other), None, "{other}");
        }
        assert_eq!(tmpfs_owner(&tmpfs_source("capfull")), Some(std::process::id()));
        assert!(alive(std::process::id()));
    }
}
