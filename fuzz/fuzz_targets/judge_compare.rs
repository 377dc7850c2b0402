//! Arbitrary expected and actual outputs in both modes: never a panic; an output equals itself;
//! Exact differs exactly when the bytes do; a difference's line is within the outputs, and what
//! it shows is clipped and free of control characters other than tab.
#![no_main]

use libfuzzer_sys::fuzz_target;
use onpyrunner_protocol::judge::{compare, CompareMode, MAX_DIFF_LINES, MAX_SHOWN_LINE};

fn check_shown(shown: &str) {
    assert!(shown.chars().count() <= MAX_SHOWN_LINE + 1, "{shown:?}");
    assert!(
        !shown.chars().any(|c| c.is_control() && c != '\t'),
        "{shown:?}"
    );
}

fuzz_target!(|data: (bool, &[u8], &[u8])| {
    let (exact, expected, actual) = data;
    let mode = if exact {
        CompareMode::Exact
    } else {
        CompareMode::Lines
    };
    assert_eq!(compare(expected, expected, mode), None);
    let Some(d) = compare(expected, actual, mode) else {
        assert!(!exact || expected == actual);
        return;
    };
    assert_ne!(expected, actual);
    let lines = |o: &[u8]| o.iter().filter(|&&b| b == b'\n').count() as u64 + 1;
    assert!(d.line >= 1 && d.line <= lines(expected).max(lines(actual)) + 1);
    assert!(d.column >= 1);
    assert!(d.expected.is_some() || d.actual.is_some());
    d.expected
        .iter()
        .chain(&d.actual)
        .for_each(|s| check_shown(s));
    let rows: Vec<&str> = d.diff.split('\n').collect();
    assert!(rows.len() <= MAX_DIFF_LINES);
    for row in rows {
        let (_, text) = row.split_once(" |").expect("a diff row has a bar");
        check_shown(text.strip_prefix(' ').unwrap_or(text));
    }
});
