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
pub const WARM_FILES: &[(&str, &str)] = &[
    (
        "OnpyrunnerWarm.java",
        include_str!("../warm/OnpyrunnerWarm.java"),
    ),
    (
        "OnpyrunnerJudge.java",
        include_str!("../warm/OnpyrunnerJudge.java"),
    ),
    (
        "onpyrunner_fork.py",
        include_str!("../warm/onpyrunner_fork.py"),
    ),
    (
        "onpyrunner_judge.js",
        include_str!("../warm/onpyrunner_judge.js"),
    ),
    (
        "onpyrunner_judge_warmup.js",
        include_str!("../warm/onpyrunner_judge_warmup.js"),
    ),
];

/// Where an image with a `judge_server` keeps its argv, one argument a line; the launcher
/// starts it for a judged run when the file is there.
pub const JUDGE_SERVER_ARGV_FILE: &str = "/usr/local/lib/onpyrunner/judge-server";

/// Where an image with a `judge_process` keeps its argv, one argument a line; the launcher
/// starts it for a judged run of more than one test when the file is there.
pub const JUDGE_PROCESS_ARGV_FILE: &str = "/usr/local/lib/onpyrunner/judge-process";

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
    /// argv of the run stage of an interactive run (the IDE's WebSocket runs, the CLI), whose
    /// output must show as it comes; empty: `run` for every run (see [`live`]).
    #[serde(default)]
    pub run_live: Vec<String>,
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
    /// Commands (argv each) run when the image is built, as root, network off, before the
    /// warm steps: e.g. a precompiled header, or a compiler's cache of its standard library.
    #[serde(default)]
    pub build: Vec<Vec<String>>,
    /// Variables (`NAME=value`) added to the environment of the language's containers, for
    /// its compile and run stages alike. Not part of the image.
    #[serde(default)]
    pub env: Vec<String>,
    /// The OCI runtime this language's containers run under, by its name in the Docker
    /// daemon's configuration (`runsc` for gVisor); absent: the supervisor's `--runtime`, or
    /// the daemon's default. Not part of the image.
    #[serde(default)]
    pub runtime: Option<String>,
    /// argv of the fork server a judged run starts once, to run each test as a fork of it
    /// instead of a fresh process (images/warm/onpyrunner_fork.py); empty for none. It must
    /// begin like `run` (the interpreter and its flags), or the server refuses and the tests
    /// run fresh.
    #[serde(default)]
    pub judge_server: Vec<String>,
    /// argv of a process a judged run of more than one test starts once, after the compile,
    /// that runs every test itself (the warm protocol's `test`, protocol/src/warm.rs; Node's
    /// images/warm/onpyrunner_judge.js), for languages whose runtime cannot fork; empty for
    /// none. It must begin like `run`, as `judge_server` does.
    #[serde(default)]
    pub judge_process: Vec<String>,
    /// Names from `WARM_FILES` copied into `WARM_DIR` for the judge server or process.
    #[serde(default)]
    pub judge_files: Vec<String>,
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
    /// The compile stage's wall clock, apart from `wall_ms` (which the run stage gets whole).
    #[serde(default = "default_compile_wall_ms")]
    pub compile_wall_ms: u64,
    /// What the compile stage may write, apart from `output_bytes`.
    #[serde(default = "default_compile_output_bytes")]
    pub compile_output_bytes: u64,
}

fn default_compile_wall_ms() -> u64 {
    10_000
}

fn default_compile_output_bytes() -> u64 {
    256 * 1024
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

/// Whether a table `env` entry is `NAME=value` with a plain upper-case name.
fn valid_env(var: &str) -> bool {
    let Some((name, value)) = var.split_once('=') else {
        return false;
    };
    !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
        && !value.contains('\0')
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
        if !lang.judge_files.is_empty()
            && lang.judge_server.is_empty()
            && lang.judge_process.is_empty()
        {
            return Err(format!(
                "language {:?} has judge_files but no judge_server or judge_process",
                lang.id
            ));
        }
        if !lang.judge_server.is_empty() && !lang.judge_process.is_empty() {
            return Err(format!(
                "language {:?} has both a judge_server and a judge_process",
                lang.id
            ));
        }
        if let Some(name) = lang.judge_files.iter().find(|n| warm_file(n).is_none()) {
            return Err(format!(
                "language {:?}: judge file {name:?} is not in images/warm/ (WARM_FILES)",
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
        if lang.build.iter().any(|argv| argv.is_empty()) {
            return Err(format!("language {:?} has an empty build command", lang.id));
        }
        if let Some(var) = lang.env.iter().find(|v| !valid_env(v)) {
            return Err(format!(
                "language {:?}: env {var:?} must be NAME=value (NAME of [A-Z0-9_], no NUL)",
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

/// The language as an interactive run uses it: `run_live` in place of `run`, where the table
/// has one (CPython and PyPy: `-u`, output unbuffered, where every other run is buffered as the
/// judges run it). The container is the same (pooled ones are made before the run is known);
/// only the command the launcher is given differs.
pub fn live(lang: &'static Language) -> &'static Language {
    static LIVE: OnceLock<Vec<Language>> = OnceLock::new();
    if lang.run_live.is_empty() {
        return lang;
    }
    let all = LIVE.get_or_init(|| {
        languages()
            .iter()
            .map(|l| {
                let mut l = l.clone();
                if !l.run_live.is_empty() {
                    l.run = l.run_live.clone();
                }
                l
            })
            .collect()
    });
    all.iter().find(|l| l.id == lang.id).unwrap_or(lang)
}

/// The language with this id.
pub fn find(id: &str) -> Option<&'static Language> {
    languages().iter().find(|l| l.id == id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_table_parses_with_every_language() {
        let ids: Vec<_> = languages().iter().map(|l| l.id.as_str()).collect();
        assert_eq!(
            ids,
            ["python", "pypy", "node", "java", "c", "cpp", "rust", "go"]
        );
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
            let class = name.strip_suffix(".java").unwrap();
            assert!(warm_file(name)
                .unwrap()
                .contains(&format!("public final class {class} ")));
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
    fn judge_servers_begin_like_the_run_command_and_their_files_are_embedded() {
        let ids: Vec<_> = languages()
            .iter()
            .filter(|l| !l.judge_server.is_empty())
            .map(|l| l.id.as_str())
            .collect();
        assert_eq!(ids, ["python", "pypy"]);
        let processes: Vec<_> = languages()
            .iter()
            .filter(|l| !l.judge_process.is_empty())
            .map(|l| l.id.as_str())
            .collect();
        assert_eq!(processes, ["node"]);
        for lang in languages() {
            let (server, word) = if lang.judge_server.is_empty() {
                (&lang.judge_process, "judge process")
            } else {
                (&lang.judge_server, "fork server")
            };
            let Some((_server, interpreter)) = server.split_last() else {
                continue;
            };
            // The interpreter and its flags are the run's, so a test has the run's buffering
            // (Python) or heap (Node).
            let (_script, run_prefix) = lang.run.split_last().unwrap();
            assert_eq!(interpreter, run_prefix, "{}", lang.id);
            for name in &lang.judge_files {
                assert!(warm_file(name).unwrap().contains(word), "{name}");
            }
        }
        let python = TABLE.split("\n[[language]]\n").nth(1).unwrap();
        let text = format!("[[language]]\n{python}").replacen(
            "\"onpyrunner_fork.py\"]",
            "\"nope.py\"]",
            1,
        );
        assert!(parse(&text).unwrap_err().contains("nope.py"));
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
    fn build_steps_and_env_are_checked() {
        let python = TABLE.split("\n[[language]]\n").nth(1).unwrap();
        let with = |fields: &str| {
            format!("[[language]]\n{python}").replacen(
                "\npool_size",
                &format!("\n{fields}\npool_size"),
                1,
            )
        };
        let ok = parse(&with(
            "build = [[\"true\"]]\nenv = [\"GOCACHE=/x\", \"A_1=\"]",
        ))
        .unwrap();
        assert_eq!(ok[0].build, [["true"]]);
        assert_eq!(ok[0].env, ["GOCACHE=/x", "A_1="]);
        assert!(parse(&with("build = [[]]"))
            .unwrap_err()
            .contains("empty build command"));
        for bad in ["NOEQUALS", "=x", "lower=x", "1A=x", "A B=x"] {
            let err = parse(&with(&format!("env = [{bad:?}]"))).unwrap_err();
            assert!(err.contains("env"), "{bad}: {err}");
        }
        // Go's cache and C++'s precompiled header are made when the image is built.
        assert!(!find("go").unwrap().build.is_empty());
        assert!(find("cpp").unwrap().build[0]
            .iter()
            .any(|a| a.ends_with("stdc++.h.gch")));
        assert!(languages()
            .iter()
            .filter(|l| !["cpp", "go"].contains(&l.id.as_str()))
            .all(|l| l.build.is_empty() && l.env.is_empty()));
    }

    #[test]
    fn compiled_languages_define_online_judge_as_the_judges_do() {
        for id in ["c", "cpp"] {
            assert!(find(id)
                .unwrap()
                .compile
                .contains(&"-DONLINE_JUDGE".to_string()));
        }
        let rust = &find("rust").unwrap().compile;
        assert!(rust.windows(2).any(|w| w == ["--cfg", "ONLINE_JUDGE"]));
        // The precompiled header is used only under the compile command's own flags.
        let cpp = find("cpp").unwrap();
        for flag in ["-O2", "-std=gnu++20", "-DONLINE_JUDGE"] {
            assert!(cpp.compile.iter().any(|a| a == flag));
            for step in &cpp.build {
                assert!(step.iter().any(|a| a == flag), "{flag} in {step:?}");
            }
        }
    }

    #[test]
    fn python_runs_buffered_and_live_runs_unbuffered() {
        for id in ["python", "pypy"] {
            let lang = find(id).unwrap();
            assert!(
                !lang.run.contains(&"-u".to_string()),
                "{id}: {:?}",
                lang.run
            );
            let live = live(lang);
            assert_eq!(live.id, lang.id);
            assert_eq!(live.run[1], "-u", "{id}: {:?}", live.run);
            assert_eq!(live.run_live, lang.run_live);
            assert!(std::ptr::eq(live, super::live(lang)), "made once");
        }
        let c = find("c").unwrap();
        assert!(
            std::ptr::eq(live(c), c),
            "no run_live: the table's own entry"
        );
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let text = TABLE.replacen("\npool_size", "\npool_sise", 1);
        assert_ne!(text, TABLE);
        assert!(parse(&text).is_err());
    }
}
