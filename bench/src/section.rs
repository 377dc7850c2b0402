//! A report's own section of a Markdown file (`docs/BENCHMARKS.md` holds the `bench` and the
//! `load` sections): replaced in place, or appended, and the rest of the file left alone.
use anyhow::Context;
use std::path::Path;

/// Put `content` between `<!-- NAME:begin -->` and `<!-- NAME:end -->` in the file at `path`
/// (appended when the markers are not there yet), leaving the rest of the file alone.
pub fn write_section(path: &Path, name: &str, content: &str) -> anyhow::Result<()> {
    let old = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let new = replace_section(&old, name, content);
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    std::fs::write(path, new).with_context(|| format!("cannot write {}", path.display()))
}

/// `old` with the section `name` holding `content`.
pub fn replace_section(old: &str, name: &str, content: &str) -> String {
    let begin = format!("<!-- {name}:begin -->\n");
    let end = format!("<!-- {name}:end -->\n");
    let body = if content.ends_with('\n') {
        content.to_string()
    } else {
        format!("{content}\n")
    };
    if let (Some(b), Some(e)) = (old.find(&begin), old.find(&end)) {
        if b < e {
            return format!("{}{begin}{body}{}", &old[..b], &old[e..]);
        }
    }
    let sep = if old.is_empty() || old.ends_with("\n\n") {
        ""
    } else if old.ends_with('\n') {
        "\n"
    } else {
        "\n\n"
    };
    format!("{old}{sep}{begin}{body}{end}")
}

/// This process's arguments as a reader would type them again, without `--write FILE`.
pub fn command_line() -> String {
    std::env::args()
        .skip(1)
        .filter(|a| a != "--write" && !a.ends_with(".md"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Write `markdown` as the `name` section of `write`, or print it when there is no file.
pub fn publish(name: &str, write: Option<&Path>, markdown: &str) -> anyhow::Result<()> {
    match write {
        Some(path) => {
            write_section(path, name, markdown)?;
            eprintln!("{name}: wrote the {name} section of {}", path.display());
        }
        None => print!("{markdown}"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_are_replaced_in_place_or_appended() {
        let first = replace_section("# Benchmarks\n", "load", "A\n");
        assert_eq!(
            first,
            "# Benchmarks\n\n<!-- load:begin -->\nA\n<!-- load:end -->\n"
        );
        let again = replace_section(&format!("{first}tail\n"), "load", "B");
        assert_eq!(
            again,
            "# Benchmarks\n\n<!-- load:begin -->\nB\n<!-- load:end -->\ntail\n"
        );
        let other = replace_section(&again, "bench", "C\n");
        assert!(
            other.contains("<!-- load:begin -->\nB\n") && other.ends_with("<!-- bench:end -->\n")
        );
    }
}
