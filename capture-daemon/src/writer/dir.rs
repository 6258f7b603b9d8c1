//! The output directory, held open.
//!
//! The strict-mode checks (`rotate::check_dir_path`) judge a directory by its path, once. Had the
//! writer gone on using paths, renaming the directory (or one above it) and putting a symlink
//! or another directory in its place would have sent every later file, rename and deletion
//! there. So the directory is opened once, its fd judged by the same rule, and every operation
//! is relative to that fd (`openat`, `renameat2`, `unlinkat`, `fstatat`, `fstatvfs`): whatever
//! happens to its name, the writer keeps working in the directory it checked. Its path is kept
//! for messages only.

use std::ffi::{CStr, CString, OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt as _, OsStringExt as _};
use std::path::{Path, PathBuf};

use crate::sys::FsSpace;

/// An open output directory (see the module docs).
#[derive(Debug)]
pub(super) struct OutDir {
    fd: OwnedFd,
    /// The configured path, for messages: the directory may have another name by now.
    path: PathBuf,
}

/// What `fstat` says of the directory held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct DirStat {
    pub(super) dev: u64,
    pub(super) ino: u64,
    pub(super) uid: u32,
    pub(super) gid: u32,
    pub(super) mode: u32,
}

impl OutDir {
    /// Opens the directory `path` names now. A symlink the admin set up on the way is resolved
    /// once, here; the directory itself is opened with `O_NOFOLLOW`, so a symlink swapped in
    /// after resolving is refused rather than followed.
    pub(super) fn open(path: &Path) -> io::Result<OutDir> {
        let real = std::fs::canonicalize(path)?;
        let c = CString::new(real.as_os_str().as_bytes())?;
        let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC | libc::O_NOFOLLOW;
        let fd = open_at(libc::AT_FDCWD, &c, flags, 0)?;
        Ok(OutDir { fd, path: path.to_path_buf() })
    }

    /// The path it was opened by, for messages.
    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// `name` in it, for messages.
    pub(super) fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Owner, group, mode and identity of the directory held.
    pub(super) fn stat(&self) -> io::Result<DirStat> {
        // SAFETY: a valid fd and an out-struct fstat fills.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        if unsafe { libc::fstat(self.fd.as_raw_fd(), &raw mut st) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(DirStat {
            dev: st.st_dev,
            ino: st.st_ino,
            uid: st.st_uid,
            gid: st.st_gid,
            mode: st.st_mode,
        })
    }

    /// Creates file `name` for writing: never an existing name (`O_EXCL`), never through a
    /// symlink (`O_NOFOLLOW`), with `mode` (less the umask).
    pub(super) fn create_new(&self, name: &str, mode: u32) -> io::Result<File> {
        let flags =
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC;
        let fd = open_at(self.fd.as_raw_fd(), &c_name(name)?, flags, mode)?;
        Ok(File::from(fd))
    }

    /// Opens file `name` to read and write, never through a symlink (ELOOP if it is one).
    pub(super) fn open_rw(&self, name: &str) -> io::Result<File> {
        let flags = libc::O_RDWR | libc::O_NOFOLLOW | libc::O_CLOEXEC;
        let fd = open_at(self.fd.as_raw_fd(), &c_name(name)?, flags, 0)?;
        Ok(File::from(fd))
    }

    /// `Some(length)` if `name` is a regular file, `None` if it is something else (a symlink is
    /// not followed).
    pub(super) fn file_len(&self, name: &str) -> io::Result<Option<u64>> {
        let st = self.lstat(name)?;
        Ok((st.st_mode & libc::S_IFMT == libc::S_IFREG)
            .then(|| u64::try_from(st.st_size).unwrap_or(0)))
    }

    /// Whether anything, a dangling symlink included, has the name `name`.
    pub(super) fn exists(&self, name: &str) -> bool {
        self.lstat(name).is_ok()
    }

    fn lstat(&self, name: &str) -> io::Result<libc::stat> {
        let c = c_name(name)?;
        // SAFETY: a valid fd and C string, and an out-struct fstatat fills.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        let rc = unsafe {
            libc::fstatat(self.fd.as_raw_fd(), c.as_ptr(), &raw mut st, libc::AT_SYMLINK_NOFOLLOW)
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(st)
    }

    /// Renames `from` to `to`, failing with `AlreadyExists` rather than replacing `to`.
    pub(super) fn rename_noreplace(&self, from: &str, to: &str) -> io::Result<()> {
        let (c_from, c_to) = (c_name(from)?, c_name(to)?);
        let fd = self.fd.as_raw_fd();
        // SAFETY: a valid fd and C strings that outlive the call.
        let rc = unsafe {
            libc::renameat2(fd, c_from.as_ptr(), fd, c_to.as_ptr(), libc::RENAME_NOREPLACE)
        };
        if rc == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            // A file system (or kernel) without RENAME_NOREPLACE: check, then rename. Racy, but
            // the names are ours and created with O_EXCL.
            Some(libc::EINVAL | libc::ENOSYS) => {
                if self.exists(to) {
                    return Err(io::ErrorKind::AlreadyExists.into());
                }
                // SAFETY: as above.
                if unsafe { libc::renameat(fd, c_from.as_ptr(), fd, c_to.as_ptr()) } != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            }
            _ => Err(err),
        }
    }

    /// Removes file `name` (a symlink itself, never what it points to).
    pub(super) fn remove(&self, name: &str) -> io::Result<()> {
        let c = c_name(name)?;
        // SAFETY: a valid fd and C string.
        if unsafe { libc::unlinkat(self.fd.as_raw_fd(), c.as_ptr(), 0) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Makes the renames and deletions in it durable.
    pub(super) fn sync(&self) -> io::Result<()> {
        // SAFETY: a valid fd.
        if unsafe { libc::fsync(self.fd.as_raw_fd()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// The names in it (without `.` and `..`).
    ///
    /// Read through a new open file description of the directory (`openat(fd, ".")`), not a
    /// `dup` of the fd: a dup shares the read position, and the writer and the file-finishing
    /// thread may list at the same time.
    pub(super) fn list(&self) -> io::Result<Vec<OsString>> {
        let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC;
        let own = open_at(self.fd.as_raw_fd(), c".", flags, 0)?;
        let raw: RawFd = own.as_raw_fd();
        // SAFETY: fdopendir takes the fd over on success (closedir closes it); on failure it
        // is still ours, and `own` closes it.
        let dir = unsafe { libc::fdopendir(raw) };
        if dir.is_null() {
            return Err(io::Error::last_os_error());
        }
        std::mem::forget(own);
        let stream = DirStream(dir);
        let mut names = Vec::new();
        loop {
            // readdir reports an error only through errno, and leaves it alone at the end.
            // SAFETY: errno is thread-local; the stream is open.
            unsafe { *libc::__errno_location() = 0 };
            let entry = unsafe { libc::readdir(stream.0) };
            if entry.is_null() {
                let err = io::Error::last_os_error();
                if err.raw_os_error() == Some(0) {
                    break;
                }
                return Err(err);
            }
            // SAFETY: d_name is a NUL-terminated string inside the entry readdir returned,
            // valid until the next call on this stream.
            let name = unsafe { CStr::from_ptr((*entry).d_name.as_ptr()) }.to_bytes();
            if name != b"." && name != b".." {
                names.push(OsString::from_vec(name.to_vec()));
            }
        }
        drop(stream);
        Ok(names)
    }

    /// Size and free space of its file system (`fstatvfs`); `None` if that fails.
    pub(super) fn space(&self) -> Option<FsSpace> {
        crate::sys::fd_space(self.fd.as_fd())
    }
}

impl AsFd for OutDir {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// A `DIR*` from `fdopendir`, closed (with its fd) on drop.
struct DirStream(*mut libc::DIR);

impl Drop for DirStream {
    fn drop(&mut self) {
        // SAFETY: opened by fdopendir and closed only here.
        unsafe { libc::closedir(self.0) };
    }
}

/// A name in the directory: one component, never a path that could lead out of it.
fn c_name(name: &str) -> io::Result<CString> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name:?} is not a file name in the capture directory"),
        ));
    }
    Ok(CString::new(OsStr::new(name).as_bytes())?)
}

fn open_at(dirfd: RawFd, path: &CStr, flags: libc::c_int, mode: u32) -> io::Result<OwnedFd> {
    // SAFETY: a valid fd (or AT_FDCWD) and C string; the mode is read only with O_CREAT.
    let fd = unsafe { libc::openat(dirfd, path.as_ptr(), flags, mode) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn every_operation_stays_in_the_directory_opened() {
        let base = tempfile::tempdir().unwrap();
        let (a, old, b) = (base.path().join("a"), base.path().join("a.old"), base.path().join("b"));
        fs::create_dir(&a).unwrap();
        fs::create_dir(&b).unwrap();
        let dir = OutDir::open(&a).unwrap();
        let held = dir.stat().unwrap();
        fs::rename(&a, &old).unwrap();
        std::os::unix::fs::symlink(&b, &a).unwrap();
        fs::write(b.join("x"), b"in b").unwrap();

        assert!(!dir.exists("x"), "the new a's file is not seen");
        use std::io::Write as _;
        dir.create_new("x", 0o640).unwrap().write_all(b"held").unwrap();
        assert_eq!(dir.create_new("x", 0o640).unwrap_err().kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(dir.file_len("x").unwrap(), Some(4));
        dir.create_new("y", 0o640).unwrap();
        assert_eq!(
            dir.rename_noreplace("x", "y").unwrap_err().kind(),
            io::ErrorKind::AlreadyExists,
            "never replaced"
        );
        dir.remove("y").unwrap();
        dir.rename_noreplace("x", "y").unwrap();
        dir.sync().unwrap();
        let mut names = dir.list().unwrap();
        names.sort();
        assert_eq!(names, vec![OsString::from("y")]);
        assert_eq!(fs::read(old.join("y")).unwrap(), b"held");
        assert_eq!(fs::read(b.join("x")).unwrap(), b"in b", "b untouched");
        assert_eq!(fs::read_dir(&b).unwrap().count(), 1);
        assert_eq!(dir.stat().unwrap(), held);
        assert!(dir.space().is_some_and(|s| s.total > 0));
        assert_eq!(dir.path(), a, "messages keep the configured name");
    }

    #[test]
    fn listing_twice_or_from_two_threads_sees_every_name() {
        let base = tempfile::tempdir().unwrap();
        let dir = OutDir::open(base.path()).unwrap();
        for i in 0..200 {
            dir.create_new(&format!("f{i}"), 0o640).unwrap();
        }
        std::thread::scope(|s| {
            let lists: Vec<_> = (0..4).map(|_| s.spawn(|| dir.list().unwrap().len())).collect();
            for list in lists {
                assert_eq!(list.join().unwrap(), 200);
            }
        });
        assert_eq!(dir.list().unwrap().len(), 200);
    }

    #[test]
    fn symlinks_are_neither_followed_nor_opened() {
        let base = tempfile::tempdir().unwrap();
        let victim = base.path().join("victim");
        fs::write(&victim, b"precious").unwrap();
        let dir = OutDir::open(base.path()).unwrap();
        std::os::unix::fs::symlink(&victim, base.path().join("link")).unwrap();
        assert_eq!(dir.open_rw("link").unwrap_err().raw_os_error(), Some(libc::ELOOP));
        assert_eq!(dir.create_new("link", 0o640).unwrap_err().kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(dir.file_len("link").unwrap(), None, "not a regular file");
        dir.remove("link").unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
        for bad in ["", ".", "..", "../victim", "a/b"] {
            assert_eq!(dir.remove(bad).unwrap_err().kind(), io::ErrorKind::InvalidInput, "{bad}");
        }
        assert!(victim.exists());
    }

    #[test]
    fn an_admins_symlink_to_the_directory_is_resolved_once() {
        let base = tempfile::tempdir().unwrap();
        let (real, link) = (base.path().join("real"), base.path().join("link"));
        fs::create_dir(&real).unwrap();
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let dir = OutDir::open(&link).unwrap();
        dir.create_new("f", 0o640).unwrap();
        assert!(real.join("f").exists());
        assert_eq!(dir.path(), link);
        // A file is not a directory.
        assert_eq!(OutDir::open(&real.join("f")).unwrap_err().raw_os_error(), Some(libc::ENOTDIR));
    }
}
