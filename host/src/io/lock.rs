//! One writer per output: an advisory lock (the operating system's `flock`, through
//! [`std::fs::File::try_lock`]) taken before any work starts and held until the output is
//! complete. A second writer is refused with exit code 2, naming the process that holds the
//! output. The lock is released by the kernel when its holder exits, killed or not, so a
//! killed run never blocks the next one; the next writer then removes what the killed one left
//! behind (hidden temporary files `.NAME.PID.tmp`; an unfinished checkpoint is the
//! checkpoint's own recovery to clean).
//!
//! Taking the lock is also the check that the output's folder exists and is writable.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::error::{Result, input};

/// The lock file of an output directory.
pub const DIR_LOCK: &str = ".lock";

/// A held lock on one output (a directory or a file).
#[derive(Debug)]
pub struct OutputLock {
    _file: File,
    /// The lock file, removed when the lock is dropped.
    remove: Option<PathBuf>,
}

impl Drop for OutputLock {
    fn drop(&mut self) {
        if let Some(p) = &self.remove {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// The folder that holds `path` (`.` for a bare file name).
pub fn parent_of(path: &Path) -> &Path {
    path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

impl OutputLock {
    /// Locks the output directory `dir` (`flag` names it in messages), creating it (not its
    /// parent) if missing. Returns the lock and whether this call created the directory.
    pub fn dir(dir: &Path, flag: &str) -> Result<(Self, bool)> {
        let shown = || format!("{flag} {}", dir.display());
        let parent = parent_of(dir);
        if !parent.is_dir() {
            return Err(input(format!("{}: the folder {} does not exist", shown(), parent.display())));
        }
        let created = match std::fs::metadata(dir) {
            Ok(m) if m.is_dir() => false,
            Ok(_) => return Err(input(format!("{}: is a file, expected a folder", shown()))),
            Err(_) => {
                std::fs::create_dir(dir).map_err(|e| input(format!("{}: cannot create the folder ({e})", shown())))?;
                true
            }
        };
        let lock = Self::acquire(&dir.join(DIR_LOCK), &shown(), true).inspect_err(|_| {
            if created {
                let _ = std::fs::remove_dir_all(dir);
            }
        })?;
        remove_stale_temps(dir, None);
        Ok((lock, created))
    }

    /// Locks the output file `path` through `.NAME.lock` beside it (removed again when the lock
    /// is dropped). Refuses a path that is a folder or whose folder does not exist.
    pub fn file(path: &Path, flag: &str) -> Result<Self> {
        let shown = || format!("{flag} {}", path.display());
        let parent = parent_of(path);
        if !parent.is_dir() {
            return Err(input(format!("{}: the folder {} does not exist", shown(), parent.display())));
        }
        if path.is_dir() {
            return Err(input(format!("{}: is a folder, expected a file name", shown())));
        }
        let name = path.file_name().ok_or_else(|| input(format!("{}: expected a file name", shown())))?;
        let lock_path = parent.join(format!(".{}.lock", name.to_string_lossy()));
        let lock = Self::acquire(&lock_path, &shown(), true)?;
        remove_stale_temps(parent, Some(&name.to_string_lossy()));
        Ok(lock)
    }

    /// Refuses the output directory `dir` if another process holds its lock, without taking
    /// the lock or creating anything: the check a command makes before it reads what the
    /// directory holds, so a busy output is reported as busy (not as, say, already written).
    pub fn check_dir_free(dir: &Path, flag: &str) -> Result<()> {
        let Ok(mut file) = File::open(dir.join(DIR_LOCK)) else { return Ok(()) };
        match file.try_lock_shared() {
            Err(TryLockError::WouldBlock) => Err(in_use(&mut file, &format!("{flag} {}", dir.display()))),
            _ => Ok(()),
        }
    }

    fn acquire(lock_path: &Path, shown: &str, remove: bool) -> Result<Self> {
        // A lock file removed by its holder between our open and our lock would be locked in
        // vain: retry until the locked file is the one at the path.
        for _ in 0..8 {
            let mut file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(lock_path)
                .map_err(|e| input(format!("{shown}: cannot write there ({e})")))?;
            match file.try_lock() {
                Ok(()) => {}
                Err(TryLockError::WouldBlock) => return Err(in_use(&mut file, shown)),
                Err(TryLockError::Error(e)) => return Err(input(format!("{shown}: cannot lock ({e})"))),
            }
            let same = match (file.metadata(), std::fs::metadata(lock_path)) {
                (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
                _ => false,
            };
            if !same {
                continue;
            }
            let _ = file.set_len(0);
            let _ = file.rewind();
            let _ = write!(file, "{}", std::process::id());
            let _ = file.flush();
            return Ok(OutputLock { _file: file, remove: remove.then(|| lock_path.to_path_buf()) });
        }
        Err(input(format!("{shown}: could not lock (the lock file keeps changing)")))
    }
}

/// The error for an output whose lock `file` another process holds (its pid is the file's text).
fn in_use(file: &mut File, shown: &str) -> crate::error::Error {
    let mut holder = String::new();
    let _ = file.read_to_string(&mut holder);
    let holder = holder.trim();
    let who = if holder.is_empty() { String::new() } else { format!(" (pid {holder})") };
    input(format!("{shown}: in use by another elbo process{who}; wait for it or choose another output"))
}

/// Removes the hidden temporary files of [`super::write_atomic`] in `dir` (only those of the
/// file `name`, if given): called with the output's lock held, so their writers are gone. (An
/// unfinished checkpoint is [`crate::checkpoint::recover`]'s to clean.)
fn remove_stale_temps(dir: &Path, name: Option<&str>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let f = e.file_name();
        let f = f.to_string_lossy();
        let temp = f.starts_with('.') && f.ends_with(".tmp");
        let ours = match name {
            Some(n) => f.starts_with(&format!(".{n}.")),
            None => true,
        };
        if temp && ours {
            let _ = std::fs::remove_file(e.path());
        }
    }
}
