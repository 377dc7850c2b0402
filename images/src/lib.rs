//! The table of languages (`languages.toml`), parsed once and shared by the image builder and
//! the supervisor.
use serde::{Deserialize, Serialize};
use std::sync::OnceLock;

/// The table's source text, embedded so the binary needs no file at run time.
pub const TABLE: &str = include_str!("../languages.toml");

/// Placeholder in `compile`/`run` argv that expands to every source file of a run.
pub const FILES_PLACEHOLDER: &str = "{files}";

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
    fn unknown_fields_are_rejected() {
        let text = TABLE.replacen("\npool_size", "\npool_sise", 1);
        assert_ne!(text, TABLE);
        assert!(parse(&text).is_err());
    }
}
