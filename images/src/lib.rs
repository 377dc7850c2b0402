//! The table of languages (`languages.toml`), parsed once and shared by the image builder and
//! the supervisor.
use serde::{Deserialize, Serialize};
use std::sync::OnceLock;

/// The table's source text, embedded so the binary needs no file at run time.
pub const TABLE: &str = include_str!("../languages.toml");

/// Placeholder in `compile`/`run` argv that expands to every source file of a run.
pub const FILES_PLACEHOLDER: &str = "{files}";

/// Where an image keeps its warm process's files (`warm_files`, and what `warm_build` makes).
pub const WARM_DIR: &str = "/usr/local/lib/onpyrunner";

/// The files a table's `warm_files` may name, embedded like the table itself.
pub const WARM_FILES: &[(&str, &str)] = &[(
    "OnpyrunnerWarm.java",
    include_str!("../warm/OnpyrunnerWarm.java"),
)];

/// The content of an embedded warm file.
pub fn warm_file(name: &str) -> Option<&'static str> {
    WARM_FILES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, text)| *text)
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Language {
    pub id: String,
    pub name: String,
    pub version: String,
    pub packages: Vec<String>,
    pub source_file: String,
    pub compile: Vec<String>,
    pub run: Vec<String>,
    pub pool_size: usize,
    pub limits: DefaultLimits,
    /// argv of the warm process the launcher starts when the container starts, before the run
    /// arrives; empty for none (see `onpyrunner_protocol::warm`).
    #[serde(default)]
    pub warm: Vec<String>,
    /// Names from `WARM_FILES` copied into `WARM_DIR` of the image.
    #[serde(default)]
    pub warm_files: Vec<String>,
    /// Commands (argv each) run when the image is built, as root, network off, after the
    /// warm files were copied.
    #[serde(default)]
    pub warm_build: Vec<Vec<String>>,
    /// The OCI runtime this language's containers run under, by its name in the Docker
    /// daemon's configuration (`runsc` for gVisor); absent: the supervisor's `--runtime`, or
    /// the daemon's default. Not part of the image.
    #[serde(default)]
    pub runtime: Option<String>,
}

impl Language {
    /// Whether containers of this language start a warm process.
    pub fn is_warm(&self) -> bool {
        !self.warm.is_empty()
    }
}

/// Per-language default limits.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DefaultLimits {
    pub wall_ms: u64,
    pub memory_mib: u64,
    pub cpus: f64,
    pub pids: i64,
    pub output_bytes: u64,
    pub file_size_mib: u64,
    pub tmpfs_mib: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Table {
    language: Vec<Language>,
}

/// Whether a name can be a Docker runtime's (`runc`, `runsc`, `io.containerd.runc.v2`).
pub fn valid_runtime_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Parse a table; the embedded one goes through `languages()`.
pub fn parse(text: &str) -> Result<Vec<Language>, String> {
    let table: Table = toml::from_str(text).map_err(|e| e.to_string())?;
    for (i, lang) in table.language.iter().enumerate() {
        if table.language[..i].iter().any(|l| l.id == lang.id) {
            return Err(format!("language id {:?} appears twice", lang.id));
        }
        let id_ok = !lang.id.is_empty()
            && lang
                .id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !id_ok {
            return Err(format!("language id {:?} must be [a-z0-9-]+", lang.id));
        }
        if lang.run.is_empty() {
            return Err(format!("language {:?} has an empty run command", lang.id));
        }
        if lang.packages.is_empty() {
            return Err(format!("language {:?} lists no packages", lang.id));
        }
        let has_warm_parts = !lang.warm_files.is_empty() || !lang.warm_build.is_empty();
        if has_warm_parts && !lang.is_warm() {
            return Err(format!(
                "language {:?} has warm_files or warm_build but no warm command",
                lang.id
            ));
        }
        if let Some(name) = lang.warm_files.iter().find(|n| warm_file(n).is_none()) {
            return Err(format!(
                "language {:?}: warm file {name:?} is not in images/warm/ (WARM_FILES)",
                lang.id
            ));
        }
        if let Some(runtime) = &lang.runtime {
            if !valid_runtime_name(runtime) {
                return Err(format!(
                    "language {:?}: runtime {runtime:?} must be [A-Za-z0-9._-]+",
                    lang.id
                ));
            }
        }
        if lang.warm_build.iter().any(|argv| argv.is_empty()) {
            return Err(format!(
                "language {:?} has an empty warm_build command",
                lang.id
            ));
        }
    }
    Ok(table.language)
}

/// Every language, in table order.
pub fn languages() -> &'static [Language] {
    static LANGS: OnceLock<Vec<Language>> = OnceLock::new();
    LANGS.get_or_init(|| parse(TABLE).expect("images/languages.toml is valid (checked by tests)"))
}

/// The language with this id.
pub fn find(id: &str) -> Option<&'static Language> {
    languages().iter().find(|l| l.id == id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_table_parses_with_the_four_languages() {
        let ids: Vec<_> = languages().iter().map(|l| l.id.as_str()).collect();
        assert_eq!(ids, ["python", "pypy", "node", "java"]);
    }

    #[test]
    fn duplicate_ids_are_rejected() {
        let one = TABLE.split("\n[[language]]\n").nth(1).unwrap();
        let text = format!("[[language]]\n{one}\n[[language]]\n{one}");
        assert!(parse(&text).unwrap_err().contains("twice"));
    }

    #[test]
    fn only_java_is_warm_and_its_files_are_embedded() {
        let warm: Vec<_> = languages().iter().filter(|l| l.is_warm()).collect();
        assert_eq!(warm.len(), 1);
        assert_eq!(warm[0].id, "java");
        for name in &warm[0].warm_files {
            assert!(warm_file(name).unwrap().contains("class OnpyrunnerWarm"));
        }
        assert!(languages()
            .iter()
            .filter(|l| !l.is_warm())
            .all(|l| l.warm_files.is_empty() && l.warm_build.is_empty()));
    }

    #[test]
    fn warm_files_must_be_embedded_and_need_a_warm_command() {
        let java = TABLE.split("\n[[language]]\n").nth(4).unwrap();
        let text =
            format!("[[language]]\n{java}").replacen("\"OnpyrunnerWarm.java\"", "\"Nope.java\"", 1);
        assert!(parse(&text).unwrap_err().contains("Nope.java"));
        let python = TABLE.split("\n[[language]]\n").nth(1).unwrap();
        let text = format!("[[language]]\n{python}").replacen(
            "\npool_size",
            "\nwarm_files = [\"OnpyrunnerWarm.java\"]\npool_size",
            1,
        );
        assert!(parse(&text).unwrap_err().contains("no warm command"));
    }

    #[test]
    fn a_language_may_name_its_runtime() {
        assert!(
            languages().iter().all(|l| l.runtime.is_none()),
            "the daemon's default"
        );
        let python = TABLE.split("\n[[language]]\n").nth(1).unwrap();
        let with = |runtime: &str| {
            format!("[[language]]\n{python}").replacen(
                "\npool_size",
                &format!("\nruntime = {runtime:?}\npool_size"),
                1,
            )
        };
        assert_eq!(
            parse(&with("runsc")).unwrap()[0].runtime.as_deref(),
            Some("runsc")
        );
        let err = parse(&with("run sc; rm")).unwrap_err();
        assert!(err.contains("runtime"), "{err}");
        assert!(!valid_runtime_name(""));
        assert!(valid_runtime_name("io.containerd.runc.v2"));
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let text = TABLE.replacen("\npool_size", "\npool_sise", 1);
        assert_ne!(text, TABLE);
        assert!(parse(&text).is_err());
    }
}
