//! Who made a container, and whether they still live. Every engine's containers carry its owner
//! label, `<instance>.<pid>-<rand>`, and while the engine lives it holds an exclusive lock on
//! `<dir>/<owner>.lock`. A sweep removes another owner's containers only when it can take that
//! lock: the owner is gone (the kernel drops the lock when the process ends, SIGKILL included).
//! So two supervisors on one daemon never remove each other's containers, even under one
//! instance name, while what a crashed one left is still cleaned up by the next.
use std::fs::{File, OpenOptions, TryLockError};
use std::io;
use std::path::PathBuf;

/// Where the owners' lock files are: `ONPYRUNNER_LOCK_DIR`, else `/run/onpyrunner` when it can
/// be made, else `onpyrunner-owners` in the temporary directory.
pub fn lock_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("ONPYRUNNER_LOCK_DIR") {
        return PathBuf::from(dir);
    }
    let run = PathBuf::from("/run/onpyrunner");
    if std::fs::create_dir_all(&run).is_ok() {
        return run;
    }
    std::env::temp_dir().join("onpyrunner-owners")
}

fn lock_path(owner: &str) -> Option<PathBuf> {
    // Owner labels come from the daemon: only ours have this shape, and no other string may
    // make a path.
    let safe = !owner.is_empty()
        && owner.len() <= 80
        && owner
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        && !owner.starts_with('.');
    safe.then(|| lock_dir().join(format!("{owner}.lock")))
}

/// An engine's proof of life, held as long as the engine runs.
#[derive(Debug)]
pub struct OwnerLock {
    path: PathBuf,
    _file: File,
}

impl OwnerLock {
    /// Take `owner`'s lock (its file is made if needed).
    pub fn acquire(owner: &str) -> io::Result<OwnerLock> {
        let path = lock_path(owner).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, format!("bad owner {owner:?}"))
        })?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)?;
        match file.try_lock() {
            Ok(()) => Ok(OwnerLock { path, _file: file }),
            Err(TryLockError::WouldBlock) => Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} is locked by another process", path.display()),
            )),
            Err(TryLockError::Error(e)) => Err(e),
        }
    }
}

impl Drop for OwnerLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Whether the owner of these containers still runs: its lock is held. An owner without a lock
/// file (gone, or made by a version without locks) is not alive; a stale file is removed.
pub fn is_alive(owner: &str) -> bool {
    let Some(path) = lock_path(owner) else {
        return false;
    };
    let Ok(file) = OpenOptions::new().write(true).open(&path) else {
        return false;
    };
    match file.try_lock() {
        Ok(()) => {
            let _ = std::fs::remove_file(&path);
            false
        }
        Err(TryLockError::WouldBlock) => true,
        // Cannot tell: count it alive, so that nothing live is removed.
        Err(TryLockError::Error(_)) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_owner_is_alive_while_its_lock_is_held_and_not_after() {
        let owner = format!(
            "t-owner.{}-{}",
            std::process::id(),
            crate::ids::random_hex(4)
        );
        assert!(!is_alive(&owner), "never started");
        let lock = OwnerLock::acquire(&owner).unwrap();
        assert!(is_alive(&owner));
        assert!(OwnerLock::acquire(&owner).is_err(), "one holder at a time");
        drop(lock);
        assert!(!is_alive(&owner));
    }

    #[test]
    fn only_owner_shaped_labels_make_paths() {
        assert!(lock_path("local.12-ab").is_some());
        for bad in ["", "../x", "a/b", ".hidden", "a b", &"x".repeat(81)] {
            assert!(lock_path(bad).is_none(), "{bad:?}");
            assert!(!is_alive(bad));
        }
    }
}
