//! Language images, built here from Debian packages (never pulled) and tagged by a hash of
//! their recipe, so an unchanged recipe is never rebuilt.
//!
//! Two steps per language:
//! 1. base `onpyrunner/base-<id>:<hash>`: `debootstrap --variant=minbase --include=<packages>`
//!    of Debian sid, trimmed, with the unprivileged run user added, imported through
//!    `POST /images/create?fromSrc=-` (slow: tens of seconds; cached by the recipe hash);
//! 2. `onpyrunner/<id>:<hash>`: the base plus the launcher, built through `POST /build` and
//!    labelled with the launcher's digest (fast; redone whenever the launcher changes). A warm
//!    language also gets its warm files and `warm_build` steps here (network off).
//!
//! The base is tagged by the hash of `base_recipe` (what debootstrap makes); the final image by
//! the hash of `recipe`, which adds the warm fields when there are any. A language without
//! them has one hash for both, as before the warm fields existed.
use crate::docker::{stream_body, Docker, DockerError};
use onpyrunner_languages::Language;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use tokio::io::{AsyncBufReadExt, BufReader};

/// Bump when the build steps change in a way the table does not show.
pub const BUILDER_VERSION: u32 = 1;
pub const SUITE: &str = "sid";
pub const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";
/// Label on the final image: digest of the launcher inside it.
pub const LABEL_LAUNCHER: &str = "onpyrunner.launcher";
pub const LABEL_RECIPE: &str = "onpyrunner.recipe";
/// Directories emptied after debootstrap: documentation, translations and apt's caches.
const TRIMMED: &[&str] = &[
    "usr/share/doc",
    "usr/share/man",
    "usr/share/info",
    "usr/share/locale",
    "usr/share/lintian",
    "var/cache/apt",
    "var/lib/apt/lists",
    "var/log",
];

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImageError {
    #[error(transparent)]
    Docker(#[from] DockerError),
    #[error("{step} failed: {message}")]
    Step { step: String, message: String },
    #[error("launcher binary not found at {0}; build it with `cargo build --release --bins` (scripts/setup.sh does)")]
    LauncherMissing(PathBuf),
}

fn step_err(step: impl Into<String>, message: impl std::fmt::Display) -> ImageError {
    ImageError::Step {
        step: step.into(),
        message: message.to_string(),
    }
}

/// Everything that decides what goes into a language's image, as canonical text: the base
/// recipe, the version of the records the launcher writes, the table's build steps when there
/// are any, plus the warm command, files and build steps of a warm language.
///
/// The records' version is here so that a supervisor and the launcher layer always speak the
/// same records: supervisors of two versions sharing one daemon (a rolling update, two
/// checkouts) use two image tags over the same base image, instead of re-layering one tag
/// back and forth.
pub fn recipe(lang: &Language) -> String {
    let mut recipe = base_recipe(lang);
    recipe.push_str(&format!(
        "records={}\n",
        onpyrunner_protocol::status::RECORDS_VERSION
    ));
    if !lang.build.is_empty() {
        recipe.push_str(&format!("build={}\n", json(&lang.build)));
    }
    if lang.is_warm() {
        // JSON keeps argv boundaries unambiguous.
        recipe.push_str(&format!("warm={}\n", json(&lang.warm)));
        for name in &lang.warm_files {
            let text = onpyrunner_languages::warm_file(name).unwrap_or_default();
            recipe.push_str(&format!(
                "warm_file={name}:{}\n",
                hex(&Sha256::digest(text.as_bytes()))
            ));
        }
        recipe.push_str(&format!("warm_build={}\n", json(&lang.warm_build)));
    }
    if !lang.judge_process.is_empty() {
        recipe.push_str(&format!("judge_process={}\n", json(&lang.judge_process)));
    }
    if !lang.judge_server.is_empty() || !lang.judge_process.is_empty() {
        if !lang.judge_server.is_empty() {
            recipe.push_str(&format!("judge_server={}\n", json(&lang.judge_server)));
        }
        for name in &lang.judge_files {
            let text = onpyrunner_languages::warm_file(name).unwrap_or_default();
            recipe.push_str(&format!(
                "judge_file={name}:{}\n",
                hex(&Sha256::digest(text.as_bytes()))
            ));
        }
    }
    recipe
}

fn json(value: &impl serde::Serialize) -> String {
    serde_json::to_string(value).expect("strings and lists of strings serialize")
}

/// Everything that decides what goes into a language's base image, as canonical text.
pub fn base_recipe(lang: &Language) -> String {
    let mut packages = lang.packages.clone();
    packages.sort();
    format!(
        "builder={BUILDER_VERSION}\nsuite={SUITE}\nvariant=minbase\npackages={}\ntrim={}\nuser=1000\n",
        packages.join(","),
        TRIMMED.join(",")
    )
}

/// The first 16 hex digits of the recipe's SHA-256.
pub fn recipe_hash(lang: &Language) -> String {
    hex(&Sha256::digest(recipe(lang).as_bytes()))[..16].to_string()
}

/// The image a run of this language uses.
pub fn image_ref(lang: &Language) -> String {
    format!("onpyrunner/{}:{}", lang.id, recipe_hash(lang))
}

pub fn base_ref(lang: &Language) -> String {
    let hash = hex(&Sha256::digest(base_recipe(lang).as_bytes()));
    format!("onpyrunner/base-{}:{}", lang.id, &hash[..16])
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Where the launcher binary is by default: beside the running executable.
pub fn default_launcher_path() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("onpyrunner-launcher")))
        .unwrap_or_else(|| PathBuf::from("onpyrunner-launcher"))
}

/// What is there for one language.
#[derive(Debug, Clone)]
pub struct ImageStatus {
    pub language: String,
    pub image: String,
    /// The final image exists.
    pub present: bool,
    /// Its id when present.
    pub id: Option<String>,
    /// Size in bytes when present.
    pub size: i64,
    /// Digest of the launcher inside, when present.
    pub launcher: Option<String>,
}

pub async fn status(docker: &Docker, lang: &Language) -> Result<ImageStatus, DockerError> {
    let image = image_ref(lang);
    let found = docker.inspect_image(&image).await?;
    Ok(ImageStatus {
        language: lang.id.clone(),
        present: found.is_some(),
        id: found.as_ref().map(|i| i.id.clone()),
        size: found.as_ref().map_or(0, |i| i.size),
        launcher: found
            .and_then(|i| i.config)
            .and_then(|c| c.labels)
            .and_then(|mut l| l.remove(LABEL_LAUNCHER)),
        image,
    })
}

/// What `ensure` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Built {
    /// Up to date already.
    Present,
    /// Only the launcher layer was (re)built.
    LauncherLayer,
    /// Built from scratch.
    Everything,
}

/// Options of an image build.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub launcher: PathBuf,
    pub mirror: String,
    /// Where debootstrap keeps downloaded packages between builds.
    pub cache_dir: PathBuf,
    /// Scratch space for root filesystems.
    pub work_dir: PathBuf,
}

impl Default for BuildOptions {
    fn default() -> Self {
        BuildOptions {
            launcher: default_launcher_path(),
            mirror: std::env::var("ONPYRUNNER_MIRROR").unwrap_or_else(|_| DEFAULT_MIRROR.into()),
            cache_dir: PathBuf::from("/var/cache/onpyrunner/debs"),
            work_dir: PathBuf::from("/var/tmp/onpyrunner-build"),
        }
    }
}

/// Make sure the language's image exists with the current launcher; build what is missing.
pub async fn ensure(
    docker: &Docker,
    lang: &Language,
    opts: &BuildOptions,
    progress: &mut (dyn FnMut(&str) + Send),
) -> Result<Built, ImageError> {
    let launcher = std::fs::read(&opts.launcher)
        .map_err(|_| ImageError::LauncherMissing(opts.launcher.clone()))?;
    let launcher_digest = hex(&Sha256::digest(&launcher));
    let current = status(docker, lang).await?;
    if current.present && current.launcher.as_deref() == Some(launcher_digest.as_str()) {
        return Ok(Built::Present);
    }
    let mut built = Built::LauncherLayer;
    if docker.inspect_image(&base_ref(lang)).await?.is_none() {
        build_base(docker, lang, opts, progress).await?;
        built = Built::Everything;
    }
    progress(&format!("{}: adding the launcher layer", lang.id));
    let context = launcher_context(lang, &launcher, &launcher_digest)
        .map_err(|e| step_err("writing the build context", e))?;
    docker
        .build_image(&current.image, context, progress)
        .await?;
    if let Some(old) = current.id {
        // The previous launcher layer is now untagged; it may still be in use, so a failure
        // to remove it is not an error.
        let _ = docker.remove_image(&old).await;
    }
    Ok(built)
}

fn launcher_context(lang: &Language, launcher: &[u8], digest: &str) -> std::io::Result<Vec<u8>> {
    let mut files: Vec<(String, &[u8], u32)> = Vec::new();
    // The table's build steps, then the warm steps, come first: the build cache then keeps
    // their layers when only the launcher changed.
    let mut warm_steps = String::new();
    for argv in &lang.build {
        // Exec form: no shell between the table and the command.
        warm_steps.push_str(&format!("RUN {}\n", json(argv)));
    }
    for name in &lang.warm_files {
        let text = onpyrunner_languages::warm_file(name).ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::NotFound, format!("warm file {name}"))
        })?;
        warm_steps.push_str(&format!(
            "COPY warm/{name} {dir}/{name}\n",
            dir = onpyrunner_languages::WARM_DIR
        ));
        files.push((format!("warm/{name}"), text.as_bytes(), 0o644));
    }
    let lines = |argv: &[String]| -> String { argv.iter().map(|arg| format!("{arg}\n")).collect() };
    let (judge_argv, process_argv) = (lines(&lang.judge_server), lines(&lang.judge_process));
    for name in &lang.judge_files {
        let text = onpyrunner_languages::warm_file(name).ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::NotFound, format!("judge file {name}"))
        })?;
        warm_steps.push_str(&format!(
            "COPY warm/{name} {dir}/{name}\n",
            dir = onpyrunner_languages::WARM_DIR
        ));
        files.push((format!("warm/{name}"), text.as_bytes(), 0o644));
    }
    if !lang.judge_server.is_empty() {
        warm_steps.push_str(&format!(
            "COPY judge-server {}\n",
            onpyrunner_languages::JUDGE_SERVER_ARGV_FILE
        ));
        files.push(("judge-server".into(), judge_argv.as_bytes(), 0o644));
    }
    if !lang.judge_process.is_empty() {
        warm_steps.push_str(&format!(
            "COPY judge-process {}\n",
            onpyrunner_languages::JUDGE_PROCESS_ARGV_FILE
        ));
        files.push(("judge-process".into(), process_argv.as_bytes(), 0o644));
    }
    for argv in &lang.warm_build {
        // Exec form: no shell between the table and the command.
        warm_steps.push_str(&format!("RUN {}\n", json(argv)));
    }
    let dockerfile = format!(
        "FROM {base}\n\
         {warm_steps}\
         COPY onpyrunner-launcher /usr/local/bin/onpyrunner-launcher\n\
         LABEL onpyrunner.language=\"{id}\" {LABEL_RECIPE}=\"{hash}\" {LABEL_LAUNCHER}=\"{digest}\"\n",
        base = base_ref(lang),
        id = lang.id,
        hash = recipe_hash(lang),
    );
    files.insert(0, ("Dockerfile".into(), dockerfile.as_bytes(), 0o644));
    files.insert(1, ("onpyrunner-launcher".into(), launcher, 0o755));
    let mut tar = tar::Builder::new(Vec::new());
    for (name, data, mode) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(mode);
        header.set_mtime(0);
        header.set_cksum();
        tar.append_data(&mut header, name, data)?;
    }
    tar.into_inner()
}

async fn build_base(
    docker: &Docker,
    lang: &Language,
    opts: &BuildOptions,
    progress: &mut (dyn FnMut(&str) + Send),
) -> Result<(), ImageError> {
    let rootfs = opts
        .work_dir
        .join(format!("{}-{}", lang.id, recipe_hash(lang)));
    if rootfs.exists() {
        std::fs::remove_dir_all(&rootfs).map_err(|e| step_err("clearing old scratch", e))?;
    }
    std::fs::create_dir_all(&opts.cache_dir).map_err(|e| step_err("creating the cache", e))?;
    std::fs::create_dir_all(&opts.work_dir).map_err(|e| step_err("creating the scratch", e))?;
    let result = async {
        progress(&format!(
            "{}: debootstrap {SUITE} with {} (about a minute)",
            lang.id,
            lang.packages.join(" ")
        ));
        debootstrap(lang, &rootfs, opts, progress).await?;
        trim(&rootfs).map_err(|e| step_err("trimming the root filesystem", e))?;
        add_run_user(&rootfs).map_err(|e| step_err("adding the run user", e))?;
        let mib = dir_size(&rootfs) / (1024 * 1024);
        progress(&format!(
            "{}: importing the root filesystem ({mib} MiB)",
            lang.id
        ));
        import(docker, lang, &rootfs, progress).await
    }
    .await;
    let _ = std::fs::remove_dir_all(&rootfs);
    result
}

async fn debootstrap(
    lang: &Language,
    rootfs: &Path,
    opts: &BuildOptions,
    progress: &mut (dyn FnMut(&str) + Send),
) -> Result<(), ImageError> {
    let mut child = tokio::process::Command::new("debootstrap")
        .arg("--variant=minbase")
        .arg(format!("--include={}", lang.packages.join(",")))
        .arg(format!("--cache-dir={}", opts.cache_dir.display()))
        .arg(SUITE)
        .arg(rootfs)
        .arg(&opts.mirror)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            step_err(
                "debootstrap",
                format!("{e}; install it with `apt-get install debootstrap`"),
            )
        })?;
    let stdout = child.stdout.take().expect("piped");
    let stderr = child.stderr.take().expect("piped");
    let mut out = BufReader::new(stdout).lines();
    let mut err_lines = BufReader::new(stderr).lines();
    let mut errors: Vec<String> = Vec::new();
    let (mut out_done, mut err_done) = (false, false);
    while !(out_done && err_done) {
        tokio::select! {
            line = out.next_line(), if !out_done => match line {
                Ok(Some(line)) => progress(&format!("{}: {line}", lang.id)),
                _ => out_done = true,
            },
            line = err_lines.next_line(), if !err_done => match line {
                Ok(Some(line)) => { progress(&format!("{}: {line}", lang.id)); errors.push(line) }
                _ => err_done = true,
            },
        }
    }
    let status = child.wait().await.map_err(|e| step_err("debootstrap", e))?;
    if !status.success() {
        let tail = errors
            .iter()
            .rev()
            .take(5)
            .rev()
            .cloned()
            .collect::<Vec<_>>()
            .join("\n");
        let log = rootfs.join("debootstrap/debootstrap.log");
        return Err(step_err(
            "debootstrap",
            format!("{status}: {tail} (see {})", log.display()),
        ));
    }
    Ok(())
}

fn trim(rootfs: &Path) -> std::io::Result<()> {
    for dir in TRIMMED {
        let dir = rootfs.join(dir);
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for entry in entries {
                let path = entry?.path();
                if path.is_dir() && !path.is_symlink() {
                    std::fs::remove_dir_all(&path)?;
                } else {
                    std::fs::remove_file(&path)?;
                }
            }
        }
    }
    Ok(())
}

/// A named user 1000:1000, which programs ran as before each container got a uid of its own
/// from the supervisor's range (`uids`; those have no entry, and HOME says where home is).
/// Kept because it is part of the base recipe: removing it would rebuild every image.
fn add_run_user(rootfs: &Path) -> std::io::Result<()> {
    use std::io::Write;
    let append = |file: &str, line: &str| -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(rootfs.join(file))?;
        f.write_all(line.as_bytes())
    };
    append(
        "etc/passwd",
        "runner:x:1000:1000:onpyrunner:/work:/usr/sbin/nologin\n",
    )?;
    append("etc/group", "runner:x:1000:\n")
}

fn dir_size(path: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.path().symlink_metadata() else {
                continue;
            };
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                total += meta.len();
            }
        }
    }
    total
}

/// Stream the root filesystem as a tar (made by `tar`, which knows device nodes, hard links
/// and ownership) into `POST /images/create?fromSrc=-`.
async fn import(
    docker: &Docker,
    lang: &Language,
    rootfs: &Path,
    progress: &mut (dyn FnMut(&str) + Send),
) -> Result<(), ImageError> {
    let mut child = tokio::process::Command::new("tar")
        .args([
            "--numeric-owner",
            "--exclude=./dev/*",
            "--exclude=./proc/*",
            "--exclude=./sys/*",
        ])
        .arg("-C")
        .arg(rootfs)
        .args(["-cf", "-", "."])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| step_err("tar", e))?;
    let stdout = child.stdout.take().expect("piped");
    let body = stream_body(tokio_util::io::ReaderStream::new(stdout));
    let base = base_ref(lang);
    let (repo, tag) = base.split_once(':').expect("base ref has a tag");
    let imported = docker.import_image(repo, tag, &[], body, progress).await;
    let output = child
        .wait_with_output()
        .await
        .map_err(|e| step_err("tar", e))?;
    if !output.status.success() {
        return Err(step_err("tar", String::from_utf8_lossy(&output.stderr)));
    }
    imported?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_tags_are_stable_and_change_with_the_packages() {
        let python = onpyrunner_languages::find("python").unwrap();
        assert_eq!(recipe_hash(python), recipe_hash(python));
        assert_eq!(recipe_hash(python).len(), 16);
        let mut other = python.clone();
        other.packages.push("extra".into());
        assert_ne!(recipe_hash(python), recipe_hash(&other));
        assert!(image_ref(python).starts_with("onpyrunner/python:"));
        assert!(base_ref(python).starts_with("onpyrunner/base-python:"));
    }

    #[test]
    fn package_order_does_not_change_the_hash() {
        let python = onpyrunner_languages::find("python").unwrap();
        let mut a = python.clone();
        a.packages = vec!["a".into(), "b".into()];
        let mut b = python.clone();
        b.packages = vec!["b".into(), "a".into()];
        assert_eq!(recipe_hash(&a), recipe_hash(&b));
    }

    #[test]
    fn launcher_context_has_a_dockerfile_and_the_launcher() {
        let go = onpyrunner_languages::find("go").unwrap();
        let tar_bytes = launcher_context(go, b"\x7fELF", "abc").unwrap();
        let mut archive = tar::Archive::new(&tar_bytes[..]);
        let names: Vec<String> = archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        assert_eq!(names, ["Dockerfile", "onpyrunner-launcher"]);
    }

    /// The files of a language's launcher build context, by name, as text.
    fn context_files(lang: &Language) -> std::collections::BTreeMap<String, String> {
        let tar_bytes = launcher_context(lang, b"\x7fELF", "abc").unwrap();
        let mut archive = tar::Archive::new(&tar_bytes[..]);
        let mut entries = std::collections::BTreeMap::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let name = entry.path().unwrap().display().to_string();
            let mut text = String::new();
            std::io::Read::read_to_string(&mut entry, &mut text).unwrap_or_default();
            entries.insert(name, text);
        }
        entries
    }

    #[test]
    fn a_judge_server_language_gets_its_server_and_its_argv_file() {
        let python = onpyrunner_languages::find("python").unwrap();
        let entries = context_files(python);
        assert!(entries["warm/onpyrunner_fork.py"].contains("os.fork()"));
        assert_eq!(
            entries["judge-server"],
            "python3.15\n/usr/local/lib/onpyrunner/onpyrunner_fork.py\n"
        );
        let dockerfile = &entries["Dockerfile"];
        assert!(dockerfile.contains(
            "COPY warm/onpyrunner_fork.py /usr/local/lib/onpyrunner/onpyrunner_fork.py\n"
        ));
        assert!(dockerfile.contains(&format!(
            "COPY judge-server {}\n",
            onpyrunner_languages::JUDGE_SERVER_ARGV_FILE
        )));
        let mut without = python.clone();
        without.judge_server.clear();
        without.judge_files.clear();
        assert_ne!(recipe_hash(&without), recipe_hash(python));
        assert_eq!(base_ref(&without), base_ref(python), "the same base image");
    }

    #[test]
    fn a_judge_process_language_gets_its_script_and_its_argv_file() {
        let node = onpyrunner_languages::find("node").unwrap();
        let entries = context_files(node);
        assert!(entries["warm/onpyrunner_judge.js"].contains("Module.runMain"));
        assert_eq!(
            entries["judge-process"],
            "node\n--max-old-space-size-percentage=100\n--stack-size=65536\n/usr/local/lib/onpyrunner/onpyrunner_judge.js\n"
        );
        assert!(!entries.contains_key("judge-server"));
        assert!(entries["Dockerfile"].contains(&format!(
            "COPY judge-process {}\n",
            onpyrunner_languages::JUDGE_PROCESS_ARGV_FILE
        )));
        let mut without = node.clone();
        without.judge_process.clear();
        without.judge_files.clear();
        assert_ne!(recipe_hash(&without), recipe_hash(node));
    }

    #[test]
    fn the_records_version_and_the_warm_fields_make_the_tag_over_the_same_base() {
        let c = onpyrunner_languages::find("c").unwrap();
        assert_eq!(
            recipe(c),
            format!(
                "{}records={}\n",
                base_recipe(c),
                onpyrunner_protocol::status::RECORDS_VERSION
            )
        );
        let java = onpyrunner_languages::find("java").unwrap();
        assert!(recipe(java).starts_with(&base_recipe(java)));
        assert_ne!(
            base_ref(java).rsplit_once(':').unwrap().1,
            recipe_hash(java)
        );
        let mut cold = java.clone();
        cold.warm.clear();
        cold.warm_files.clear();
        cold.warm_build.clear();
        assert_eq!(base_ref(&cold), base_ref(java), "the same base image");
        let mut other = java.clone();
        other.warm.push("-Dx".into());
        assert_ne!(recipe_hash(&other), recipe_hash(java));
    }

    #[test]
    fn build_steps_are_part_of_the_recipe_and_run_before_the_launcher() {
        let python = onpyrunner_languages::find("python").unwrap();
        let mut built = python.clone();
        built.build = vec![vec!["touch".into(), "/x".into()]];
        assert_ne!(recipe_hash(&built), recipe_hash(python));
        assert_eq!(base_ref(&built), base_ref(python), "the same base image");
        let tar_bytes = launcher_context(&built, b"\x7fELF", "abc").unwrap();
        let mut archive = tar::Archive::new(&tar_bytes[..]);
        let mut dockerfile = String::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            if entry.path().unwrap().to_str() == Some("Dockerfile") {
                std::io::Read::read_to_string(&mut entry, &mut dockerfile).unwrap();
            }
        }
        let step = dockerfile
            .find("RUN [\"touch\",\"/x\"]\n")
            .expect(&dockerfile);
        assert!(step < dockerfile.find("COPY onpyrunner-launcher").unwrap());
    }

    #[test]
    fn warm_language_context_copies_its_files_and_runs_its_build_steps_first() {
        let java = onpyrunner_languages::find("java").unwrap();
        let tar_bytes = launcher_context(java, b"\x7fELF", "abc").unwrap();
        let mut archive = tar::Archive::new(&tar_bytes[..]);
        let mut entries = std::collections::BTreeMap::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let name = entry.path().unwrap().display().to_string();
            let mut text = String::new();
            std::io::Read::read_to_string(&mut entry, &mut text).unwrap_or_default();
            entries.insert(name, text);
        }
        let java_source = &entries["warm/OnpyrunnerWarm.java"];
        assert!(java_source.contains("class OnpyrunnerWarm"));
        let dockerfile = &entries["Dockerfile"];
        let copy_warm = dockerfile
            .find("COPY warm/OnpyrunnerWarm.java /usr/local/lib/onpyrunner/")
            .unwrap();
        let run = dockerfile.find("RUN [\"javac\"").unwrap();
        let copy_launcher = dockerfile.find("COPY onpyrunner-launcher").unwrap();
        assert!(copy_warm < run && run < copy_launcher, "{dockerfile}");
        assert_eq!(dockerfile.matches("\nRUN ").count(), java.warm_build.len());
    }
}
