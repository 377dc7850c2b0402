//! An image's root filesystem unpacked on the host, for running a program there with `chroot`
//! and no container: the baseline that shows what the sandbox itself costs a program. The tree
//! comes from the Engine API (a container created from the image and never started, its
//! `export` streamed into `tar -x`), never from the `docker` CLI. `chroot`, `mount` and `tar`
//! are shelled out to: the bench is not on a run's path, and runs as root.
//!
//! Every tree lives under the bench's [`Scratch`] directory. A [`Rootfs`] unmounts its `/proc`
//! and removes itself when dropped (an error or Ctrl-C drops it too); [`Scratch::remove`]
//! unmounts whatever is still mounted under the directory and removes it at the end.
use onpyrunner_languages::{Language, FILES_PLACEHOLDER};
use onpyrunner_supervisor::container::{self, Labels};
use onpyrunner_supervisor::docker::types::{ContainerConfig, HostConfig};
use onpyrunner_supervisor::docker::Docker;
use onpyrunner_supervisor::images;
use onpyrunner_supervisor::run;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::Command;

/// The bench's own temporary directory, holding the unpacked trees.
#[derive(Debug)]
pub struct Scratch {
    dir: PathBuf,
}

impl Scratch {
    /// The directory of the bench tagged `tag` (not made until a tree is unpacked).
    pub fn new(tag: &str) -> Self {
        Scratch {
            dir: std::env::temp_dir().join(format!("onpyrunner-bench-{tag}")),
        }
    }

    /// Where `lang`'s tree goes.
    pub fn tree(&self, lang: &Language) -> PathBuf {
        self.dir.join(&lang.id)
    }

    /// Unmount whatever is still mounted under the directory, then remove it; it stays, and
    /// the error says why, while anything is still mounted there (removing would descend into
    /// the mount).
    pub fn remove(&self) -> Result<(), String> {
        if !self.dir.exists() {
            return Ok(());
        }
        unmount_all_under(&self.dir)?;
        std::fs::remove_dir_all(&self.dir)
            .map_err(|e| format!("cannot remove {}: {e}", self.dir.display()))
    }
}

/// One language's image unpacked at `dir`, with `/proc` mounted in it.
#[derive(Debug)]
pub struct Rootfs {
    dir: PathBuf,
    /// The container's environment (`container::environment`), which the chroot's commands
    /// get instead of the bench's.
    env: Vec<String>,
}

impl Rootfs {
    /// Export `lang`'s image into `dir` (which must not exist yet) and mount `/proc` in it.
    /// The container it is exported from carries `owner` as its owner label and is removed
    /// on every path.
    pub async fn unpack(
        docker: &Docker,
        lang: &Language,
        dir: PathBuf,
        owner: &str,
    ) -> Result<Rootfs, String> {
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        // From here the tree is removed (and unmounted) on every path by Drop.
        let tree = Rootfs {
            dir,
            env: container::environment(&lang.env),
        };
        let config = export_config(&images::image_ref(lang), owner, &lang.id);
        let id = docker
            .create_container(None, &config)
            .await
            .map_err(|e| format!("cannot create a container to export: {e}"))?;
        let exported = tree.untar(docker, &id).await;
        let _ = docker.remove_container(&id).await;
        exported?;
        std::fs::create_dir_all(tree.dir.join("work"))
            .and_then(|()| std::fs::create_dir_all(tree.dir.join("proc")))
            .map_err(|e| format!("cannot make /work and /proc in the tree: {e}"))?;
        // The JVM reads /proc/self (its own memory and cgroup); a container has /proc, so every
        // tree gets one alike.
        shell(
            Command::new("mount")
                .args(["-t", "proc", "proc"])
                .arg(tree.dir.join("proc")),
        )
        .await
        .map_err(|e| format!("cannot mount /proc in the tree: {e}"))?;
        Ok(tree)
    }

    async fn untar(&self, docker: &Docker, id: &str) -> Result<(), String> {
        let mut tar = Command::new("tar")
            .args(["-x", "-f", "-", "-C"])
            .arg(&self.dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start tar: {e}"))?;
        let mut stdin = tar.stdin.take().expect("piped");
        let streamed = docker.export_container(id, &mut stdin).await;
        drop(stdin);
        let out = tar
            .wait_with_output()
            .await
            .map_err(|e| format!("tar: {e}"))?;
        streamed.map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!(
                "tar -x failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(())
    }

    /// Write `source` as `/work/NAME` in the tree.
    pub fn write_source(&self, name: &str, source: &str) -> Result<(), String> {
        let path = self.dir.join("work").join(name);
        std::fs::write(&path, source).map_err(|e| format!("cannot write {}: {e}", path.display()))
    }

    /// `argv` run in `/work` of the tree: `chroot DIR /bin/sh -c 'cd /work && exec "$@"' sh
    /// ARGV...`, with the container's environment and nothing of the bench's.
    pub fn command(&self, argv: &[String]) -> Command {
        let mut c = Command::new("chroot");
        c.arg(&self.dir)
            .args(["/bin/sh", "-c", "cd /work && exec \"$@\"", "sh"])
            .args(argv)
            .env_clear()
            .envs(self.env.iter().filter_map(|kv| kv.split_once('=')))
            .stdin(Stdio::null())
            .kill_on_drop(true);
        c
    }

    /// The table's compile command of a single-file run, in the tree; a language without one
    /// compiles nothing.
    pub async fn compile(&self, lang: &Language) -> Result<(), String> {
        if lang.compile.is_empty() {
            return Ok(());
        }
        let argv = expand_files(&lang.compile, &lang.source_file);
        shell(&mut self.command(&argv))
            .await
            .map_err(|e| format!("the compile in the chroot failed: {e}"))
    }

    /// One run of the table's run command with stdout to a pipe read whole (as the judge
    /// captures it): its wall time from spawn to exit, and its stdout.
    pub async fn time_run(
        &self,
        lang: &Language,
        limit: Duration,
    ) -> Result<(Duration, Vec<u8>), String> {
        let argv = expand_files(&lang.run, &lang.source_file);
        let mut command = self.command(&argv);
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        let begin = Instant::now();
        let child = command
            .spawn()
            .map_err(|e| format!("cannot start chroot: {e}"))?;
        let out = tokio::time::timeout(limit, child.wait_with_output())
            .await
            .map_err(|_| format!("no exit within {limit:?}"))?
            .map_err(|e| format!("chroot: {e}"))?;
        let elapsed = begin.elapsed();
        if !out.status.success() {
            return Err(format!(
                "the run in the chroot failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok((elapsed, out.stdout))
    }
}

impl Drop for Rootfs {
    fn drop(&mut self) {
        // Never remove while something is mounted inside: removal would descend into it.
        if unmount_all_under(&self.dir).is_ok() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The never-started container an image is exported from: no network, our owner label so the
/// bench's sweep finds it if the bench dies before removing it.
fn export_config(image: &str, owner: &str, language: &str) -> ContainerConfig {
    ContainerConfig {
        image: image.to_string(),
        cmd: vec!["true".into()],
        labels: Labels {
            owner: owner.to_string(),
            language: language.to_string(),
            run: "export".into(),
            created_unix: run::unix_now(),
        }
        .to_map(),
        network_disabled: true,
        host_config: HostConfig {
            network_mode: "none".into(),
            ..HostConfig::default()
        },
        ..ContainerConfig::default()
    }
}

/// `argv` with the files placeholder replaced by the one source file.
pub fn expand_files(argv: &[String], source_file: &str) -> Vec<String> {
    argv.iter()
        .map(|a| {
            if a == FILES_PLACEHOLDER {
                source_file.to_string()
            } else {
                a.clone()
            }
        })
        .collect()
}

/// Run a command to its end; an error carries its status and stderr.
async fn shell(command: &mut Command) -> Result<(), String> {
    let out = command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Unmount every mount point under `dir`, deepest first (blocking: also called from Drop).
fn unmount_all_under(dir: &Path) -> Result<(), String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| format!("cannot read /proc/self/mountinfo: {e}"))?;
    for point in mounts_under(&info, dir) {
        let unmounted = std::process::Command::new("umount")
            .arg(&point)
            .status()
            .is_ok_and(|s| s.success())
            || std::process::Command::new("umount")
                .arg("-l")
                .arg(&point)
                .status()
                .is_ok_and(|s| s.success());
        if !unmounted {
            return Err(format!("cannot unmount {}", point.display()));
        }
    }
    Ok(())
}

/// The mount points of a `/proc/self/mountinfo` text that are `dir` or under it, deepest
/// first. The mount point is the fifth field, with spaces and the like escaped in octal.
pub fn mounts_under(mountinfo: &str, dir: &Path) -> Vec<PathBuf> {
    let mut points: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape_octal(p)))
        .filter(|p| p.starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    points.dedup();
    points
}

/// `\040` and the like (mountinfo's escapes) back to their bytes.
fn unescape_octal(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| b[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(d) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounts_under_a_tree_are_found_deepest_first_and_nothing_else() {
        let info = "\
22 1 8:1 / / rw,relatime - ext4 /dev/vda rw
30 22 0:5 / /tmp/onpyrunner-bench-ab/java/proc rw - proc proc rw
31 30 0:6 / /tmp/onpyrunner-bench-ab/java/proc/sys/fs/binfmt_misc rw - binfmt_misc x rw
32 22 0:7 / /tmp/onpyrunner-bench-abc/java/proc rw - proc proc rw
33 22 0:8 / /tmp/onpyrunner-bench-ab/my\\040dir rw - tmpfs tmpfs rw
";
        let found = mounts_under(info, Path::new("/tmp/onpyrunner-bench-ab"));
        assert_eq!(
            found,
            [
                PathBuf::from("/tmp/onpyrunner-bench-ab/java/proc/sys/fs/binfmt_misc"),
                PathBuf::from("/tmp/onpyrunner-bench-ab/java/proc"),
                PathBuf::from("/tmp/onpyrunner-bench-ab/my dir"),
            ]
        );
    }

    #[test]
    fn the_files_placeholder_becomes_the_source_file() {
        let argv: Vec<String> = ["g++", "{files}", "-o", "main"].map(String::from).to_vec();
        assert_eq!(
            expand_files(&argv, "main.cpp"),
            ["g++", "main.cpp", "-o", "main"]
        );
    }

    #[test]
    fn the_export_container_is_ours_and_offline() {
        let c = export_config("img:1", "bench-x-export", "c");
        assert_eq!(c.labels[container::LABEL_OWNER], "bench-x-export");
        assert_eq!(c.host_config.network_mode, "none");
        assert_eq!(c.cmd, ["true"]);
    }
}
