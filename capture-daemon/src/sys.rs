//! Host facts and process set-up: privileges, memory-lock limit, names for the pcapng header.

/// Capabilities the daemon needs, with the reason `check` prints.
pub const NEEDED_CAPS: &[(u32, &str, &str)] = &[
    (12, "CAP_NET_ADMIN", "attach XDP programs to interfaces"),
    (13, "CAP_NET_RAW", "open AF_XDP sockets"),
    (39, "CAP_BPF", "load the XDP program and create its maps"),
    (38, "CAP_PERFMON", "let the verifier accept pointer arithmetic on packet data"),
    (14, "CAP_IPC_LOCK", "lock UMEM pages (or a high enough RLIMIT_MEMLOCK)"),
];
const CAP_SYS_ADMIN: u32 = 21;

/// Effective capability mask of this process (from /proc/self/status).
pub fn effective_caps() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?.trim();
    u64::from_str_radix(hex, 16).ok()
}

/// Needed capabilities this process lacks, as (name, reason). CAP_SYS_ADMIN stands in for
/// CAP_BPF and CAP_PERFMON, as on kernels before 5.8.
pub fn missing_caps() -> Vec<(&'static str, &'static str)> {
    let Some(eff) = effective_caps() else { return Vec::new() };
    let has = |bit: u32| eff & (1u64 << bit) != 0;
    NEEDED_CAPS
        .iter()
        .filter(|(bit, _, _)| !has(*bit) && !((*bit == 39 || *bit == 38) && has(CAP_SYS_ADMIN)))
        .filter(|(bit, _, _)| !(*bit == 14 && memlock_unlimited()))
        .map(|(_, name, why)| (*name, *why))
        .collect()
}

fn memlock_unlimited() -> bool {
    let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: valid out-pointer.
    unsafe {
        libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut r) == 0 && r.rlim_cur == libc::RLIM_INFINITY
    }
}

/// UMEM pages count against RLIMIT_MEMLOCK unless the process has CAP_IPC_LOCK: lift the limit
/// when allowed, and say so when not.
pub fn raise_memlock_limit() {
    let r = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
    // SAFETY: valid rlimit struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &r) } != 0 {
        log::debug!("could not lift RLIMIT_MEMLOCK: {}", std::io::Error::last_os_error());
    }
}

/// Bytes available to unprivileged users on the file system holding `path`.
pub fn free_bytes(path: &std::path::Path) -> Option<u64> {
    fs_space(path).map(|s| s.free)
}

/// A file system's size and the space an unprivileged writer could still use, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FsSpace {
    pub free: u64,
    pub total: u64,
}

/// statvfs(3) of the file system holding `path`; `None` if that fails.
pub fn fs_space(path: &std::path::Path) -> Option<FsSpace> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: statvfs with a valid C string and an out-struct it fills.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    Some(FsSpace::of(&st))
}

/// fstatvfs(3) of the file system holding `fd` (the output directory, held open); `None` if
/// that fails.
pub fn fd_space(fd: std::os::fd::BorrowedFd<'_>) -> Option<FsSpace> {
    use std::os::fd::AsRawFd as _;
    // SAFETY: fstatvfs with a valid fd and an out-struct it fills.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstatvfs(fd.as_raw_fd(), &mut st) } != 0 {
        return None;
    }
    Some(FsSpace::of(&st))
}

impl FsSpace {
    fn of(st: &libc::statvfs) -> FsSpace {
        FsSpace {
            free: st.f_bavail.saturating_mul(st.f_frsize),
            total: st.f_blocks.saturating_mul(st.f_frsize),
        }
    }
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown-host".into())
}

pub fn cpu_model() -> Option<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let model = info.lines().find_map(|l| l.strip_prefix("model name"))?;
    Some(model.trim_start_matches([' ', '\t', ':']).trim().to_owned())
}

/// "Linux 6.18.44 x86_64"
pub fn os_release() -> String {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("Linux {} {}", release.trim(), std::env::consts::ARCH)
}

/// Kernel version as (major, minor), from /proc/sys/kernel/osrelease.
pub fn kernel_version() -> Option<(u32, u32)> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
    let mut parts = release.trim().split(['.', '-']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// The id of group `name` in this host's group database (`/etc/group`, NSS), if it exists.
pub fn group_id(name: &str) -> Option<u32> {
    let cname = std::ffi::CString::new(name).ok()?;
    // Large directory groups (LDAP, SSSD) need more room than usual: grow on ERANGE.
    let mut len = 16 * 1024;
    loop {
        let mut buf = vec![0u8; len];
        // SAFETY: `group` is plain data the call fills; `buf` outlives the call and its length
        // is passed; `result` is set to null or to `&group`.
        let (rc, gid) = unsafe {
            let mut group: libc::group = std::mem::zeroed();
            let mut result: *mut libc::group = std::ptr::null_mut();
            let rc = libc::getgrnam_r(
                cname.as_ptr(),
                &raw mut group,
                buf.as_mut_ptr().cast(),
                buf.len(),
                &raw mut result,
            );
            (rc, (!result.is_null()).then_some(group.gr_gid))
        };
        if rc == libc::ERANGE && len < 16 << 20 {
            len *= 4;
            continue;
        }
        return if rc == 0 { gid } else { None };
    }
}

/// True when this process may give its files to group `gid`: it is a member (effective or
/// supplementary group), or it has CAP_CHOWN.
pub fn may_chown_to(gid: u32) -> bool {
    const CAP_CHOWN: u32 = 0;
    if effective_caps().is_some_and(|c| c & (1 << CAP_CHOWN) != 0) {
        return true;
    }
    // SAFETY: plain syscalls; the buffer is sized by the first call.
    unsafe {
        if libc::getegid() == gid {
            return true;
        }
        let n = libc::getgroups(0, std::ptr::null_mut());
        let mut groups = vec![0; usize::try_from(n).unwrap_or(0)];
        let n = libc::getgroups(n, groups.as_mut_ptr());
        groups.truncate(usize::try_from(n).unwrap_or(0));
        groups.contains(&gid)
    }
}

/// Gives `fd` (a file or a directory) to group `gid`, keeping its owner.
pub fn fchown_group(fd: std::os::fd::BorrowedFd<'_>, gid: u32) -> std::io::Result<()> {
    use std::os::fd::AsRawFd as _;
    // SAFETY: plain syscall on a valid fd; uid -1 leaves the owner unchanged.
    if unsafe { libc::fchown(fd.as_raw_fd(), u32::MAX, gid) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn host_facts_are_readable() {
        assert!(super::kernel_version().is_some());
        assert!(super::os_release().starts_with("Linux "));
        assert!(super::effective_caps().is_some());
    }
}
