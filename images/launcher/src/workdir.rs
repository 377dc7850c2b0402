//! Writing the run's source files into the work directory.
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use onpyrunner_protocol::launch;
use onpyrunner_protocol::SourceFile;

use crate::error::LaunchError;

/// Create each file in `dir`. Takes the files by value so each content buffer is freed as soon
/// as it is written: the launcher's memory counts against the container's limit.
pub fn write_files(dir: &Path, files: Vec<SourceFile>) -> Result<(), LaunchError> {
    for file in files {
        // decode_body already checked the name; checked again right where it becomes a path,
        // because a name that escaped the work directory would be a host-side bug turned exploit.
        launch::validate_file_name(&file.name).map_err(LaunchError::Frame)?;
        let write_error = |source| LaunchError::WriteFile {
            name: file.name.clone(),
            source,
        };
        // create_new is O_CREAT|O_EXCL: it never truncates an existing file and never follows
        // a symlink planted in place of the name.
        let mut out = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(dir.join(&file.name))
            .map_err(write_error)?;
        out.write_all(&file.content).map_err(write_error)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::path::PathBuf;

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> Self {
            let path = std::env::temp_dir().join(format!(
                "onpyrunner-launcher-unit-{tag}-{}",
                std::process::id()
            ));
            let _ = fs::remove_dir_all(&path);
            fs::create_dir(&path).unwrap();
            Self(path)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn file(name: &str, content: &[u8]) -> SourceFile {
        SourceFile {
            name: name.into(),
            content: content.to_vec(),
        }
    }

    #[test]
    fn files_are_written_with_their_exact_content() {
        let dir = TempDir::new("content");
        let binary: Vec<u8> = (0..=255).collect();
        write_files(
            &dir.0,
            vec![file("main.c", b"int main;"), file("data.bin", &binary)],
        )
        .unwrap();
        assert_eq!(fs::read(dir.0.join("main.c")).unwrap(), b"int main;");
        assert_eq!(fs::read(dir.0.join("data.bin")).unwrap(), binary);
    }

    #[test]
    fn an_existing_file_is_never_overwritten() {
        let dir = TempDir::new("exists");
        fs::write(dir.0.join("main.py"), b"original").unwrap();
        let err = write_files(&dir.0, vec![file("main.py", b"replacement")]).unwrap_err();
        assert!(
            matches!(&err, LaunchError::WriteFile { name, source }
                if name == "main.py" && source.kind() == std::io::ErrorKind::AlreadyExists),
            "{err:?}"
        );
        assert_eq!(fs::read(dir.0.join("main.py")).unwrap(), b"original");
    }

    #[test]
    fn names_that_leave_the_directory_are_refused_before_touching_the_disk() {
        let dir = TempDir::new("escape");
        let inner = dir.0.join("work");
        fs::create_dir(&inner).unwrap();
        for name in ["../x", "/tmp/x", ".hidden", "a/b", ""] {
            let err = write_files(&inner, vec![file(name, b"x")]).unwrap_err();
            assert!(matches!(err, LaunchError::Frame(_)), "{name:?}: {err:?}");
        }
        assert!(!dir.0.join("x").exists());
        assert_eq!(fs::read_dir(&inner).unwrap().count(), 0);
    }
}
