//! Our languages under Judge0 CE 1.13.1's ids (its `db/languages/active.rb`), named with our
//! versions. CE gives some languages an id per compiler version (C and C++ three GCCs each);
//! every one of those ids is ours too, listed and run by our one compiler, since clients pick
//! them by number (the `judge0` Python SDK's `LanguageAlias.CPP` is 52, GCC 7.4.0). A CE id of
//! another language (Python 2 is 70) does not exist here. PyPy, which CE lacks, has an id of its
//! own outside CE's range.
use onpyrunner_languages::Language;
use serde::Serialize;

/// One id: ours in the language table, and how the name is made from its version.
struct Id {
    id: u32,
    ours: &'static str,
    /// The name, `{}` standing for the leading word of the table's version (`3.15`, `16`).
    name: &'static str,
}

const IDS: &[Id] = &[
    Id {
        id: 48,
        ours: "c",
        name: "C (GCC {})",
    },
    Id {
        id: 49,
        ours: "c",
        name: "C (GCC {})",
    },
    Id {
        id: 50,
        ours: "c",
        name: "C (GCC {})",
    },
    Id {
        id: 52,
        ours: "cpp",
        name: "C++ (GCC {})",
    },
    Id {
        id: 53,
        ours: "cpp",
        name: "C++ (GCC {})",
    },
    Id {
        id: 54,
        ours: "cpp",
        name: "C++ (GCC {})",
    },
    Id {
        id: 60,
        ours: "go",
        name: "Go ({})",
    },
    Id {
        id: 62,
        ours: "java",
        name: "Java (OpenJDK {})",
    },
    Id {
        id: 63,
        ours: "node",
        name: "JavaScript (Node.js {})",
    },
    Id {
        id: 71,
        ours: "python",
        name: "Python ({})",
    },
    Id {
        id: 73,
        ours: "rust",
        name: "Rust ({})",
    },
    Id {
        id: PYPY,
        ours: "pypy",
        name: "Python (PyPy {})",
    },
];

/// PyPy's id: CE 1.13.1 has none, and its ids end at 89 (1.14's at 111, the extra flavour's
/// at 24), so ours stays clear of every published one.
pub const PYPY: u32 = 1071;

/// A language as `/languages/{id}` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Judge0Language {
    pub id: u32,
    pub name: String,
    pub is_archived: bool,
    pub source_file: String,
    pub compile_cmd: Option<String>,
    pub run_cmd: String,
    #[serde(skip)]
    pub ours: &'static Language,
}

/// Every id we serve, sorted by name then id (as Judge0 orders them).
pub fn all() -> Vec<Judge0Language> {
    let mut list: Vec<Judge0Language> = IDS.iter().filter_map(language).collect();
    list.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
    list
}

/// The language of a Judge0 id, if we serve it.
pub fn find(id: u32) -> Option<Judge0Language> {
    IDS.iter().find(|i| i.id == id).and_then(language)
}

/// The id a language of ours is listed under first (a rendered submission's `language`).
pub fn id_of(ours: &Language) -> Option<u32> {
    IDS.iter().rev().find(|i| i.ours == ours.id).map(|i| i.id)
}

fn language(id: &Id) -> Option<Judge0Language> {
    let ours = onpyrunner_languages::find(id.ours)?;
    let version = ours.version.split_whitespace().next().unwrap_or("");
    let files = ours.source_file.clone();
    let command = |argv: &[String]| {
        argv.iter()
            .map(|a| if a == "{files}" { files.as_str() } else { a })
            .collect::<Vec<_>>()
            .join(" ")
    };
    Some(Judge0Language {
        id: id.id,
        name: id.name.replace("{}", version),
        is_archived: false,
        source_file: ours.source_file.clone(),
        compile_cmd: (!ours.compile.is_empty()).then(|| command(&ours.compile)),
        run_cmd: command(&ours.run),
        ours,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ce_ids_name_our_languages_with_our_versions() {
        for (id, ours) in [
            (71, "python"),
            (62, "java"),
            (63, "node"),
            (48, "c"),
            (50, "c"),
            (52, "cpp"),
            (54, "cpp"),
            (73, "rust"),
            (60, "go"),
            (PYPY, "pypy"),
        ] {
            assert_eq!(find(id).map(|l| l.ours.id.as_str()), Some(ours), "{id}");
        }
        assert!(find(70).is_none(), "Python 2 is not Python 3");
        assert!(find(51).is_none());
        assert_eq!(find(71).unwrap().name, "Python (3.15)");
        assert_eq!(find(50).unwrap().name, "C (GCC 16)");
        assert_eq!(find(71).unwrap().compile_cmd, None);
        assert!(find(50)
            .unwrap()
            .compile_cmd
            .unwrap()
            .starts_with("gcc main.c "));
        assert_eq!(id_of(onpyrunner_languages::find("c").unwrap()), Some(50));
        assert_eq!(id_of(onpyrunner_languages::find("cpp").unwrap()), Some(54));
        let names: Vec<String> = all().iter().map(|l| l.name.clone()).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        // Every language of the table has an id.
        for l in onpyrunner_languages::languages() {
            assert!(id_of(l).is_some(), "{}", l.id);
        }
    }
}
