//! Judge mode's comparison of a test's output with its expected output, and its verdicts.
//!
//! Competitive-programming judges (Codeforces, AtCoder, ICPC's default validator) do not compare
//! bytes: a program that prints `"1 2 \r\n"` where `"1 2\n"` was expected is right. Their rule,
//! [`CompareMode::Lines`], ignores what a terminal does not show at the end of a line and at the
//! end of the output, and nothing else: a leading space, a doubled space between tokens or an
//! empty line in the middle is a wrong answer. [`CompareMode::Exact`] is byte for byte, for
//! problems whose format is the point.
//!
//! [`compare`] walks both outputs once without copying them; only the few lines a
//! [`Difference`] shows become text, clipped and escaped so that hostile output can neither
//! flood the report nor drive the reader's terminal.
//!
//! ```
//! use onpyrunner_protocol::judge::{compare, CompareMode};
//!
//! assert_eq!(compare(b"1 2\n3\n", b"1 2  \r\n3\r\n\r\n", CompareMode::Lines), None);
//!
//! let d = compare(b"1 2\n3\n", b"1 2\n4\n", CompareMode::Lines).unwrap();
//! assert_eq!((d.line, d.column), (2, 1));
//! assert_eq!(d.expected.as_deref(), Some("3"));
//! assert_eq!(d.actual.as_deref(), Some("4"));
//! assert_eq!(d.diff, "  1 | 1 2\n- 2 | 3\n+ 2 | 4");
//! ```
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;

/// How output is compared with the expected output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CompareMode {
    /// The judges' default: trailing whitespace (spaces, tabs, '\r') at the end of each line is
    /// ignored, and trailing blank lines at the end of the output are ignored; "\r\n" counts as
    /// "\n"; a missing final newline does not matter. Everything else must match byte for byte
    /// (leading spaces, spaces between tokens, empty lines in the middle all count).
    ///
    /// Lines are shown as compared: without their trailing whitespace.
    #[default]
    Lines,
    /// Byte for byte. A line here includes its '\n', so a missing final newline or a '\r' shows
    /// in the line where it is (as `\n` and `\r`).
    Exact,
}

/// Where the output first differs from the expected output.
///
/// Lines are compared by number, as judges do (no attempt to realign an inserted line): the
/// first line that differs is the one a contestant must fix first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Difference {
    /// 1-based line number of the first differing line.
    pub line: u64,
    /// 1-based column (in characters, of the lossy UTF-8 text) of the first differing character
    /// in that line; for a line that is missing or extra, 1. Two invalid bytes that both show
    /// as U+FFFD still differ there.
    pub column: u64,
    /// The expected line (None when the expected output has no such line: the output has extra
    /// lines), clipped to at most [`MAX_SHOWN_LINE`] chars with "…" marking what was cut,
    /// clipped around the differing column so the difference stays visible, invalid UTF-8
    /// shown lossily, control characters other than tab shown escaped (e.g. "\u{1b}" as
    /// "\x1b") so a terminal never acts on them.
    pub expected: Option<String>,
    /// The actual line, shown as `expected` is (None when the output ended early).
    pub actual: Option<String>,
    /// A short diff of the region: up to [`MAX_DIFF_LINES`] lines, like "  3 | same line",
    /// "- 4 | expected line", "+ 4 | actual line", with up to 2 lines of context before and
    /// the differing lines that follow, up to the first line that agrees again; lines clipped
    /// and escaped as above. Plain text, lines joined with '\n'.
    pub diff: String,
}

/// Most characters of a line that a [`Difference`] shows, escapes included, plus one "…" for
/// each end that was cut (at most `MAX_SHOWN_LINE + 1` in all: a window cut at both ends holds
/// one character less).
///
/// 200 holds a typical judge's line whole (twenty 9-digit numbers, a 100-character grid row) and
/// keeps a whole diff of [`MAX_DIFF_LINES`] lines near 2.5 KB, small enough for one WebSocket
/// message and a screen.
pub const MAX_SHOWN_LINE: usize = 200;

/// Most lines in [`Difference::diff`]: 2 lines of context and 5 pairs of differing lines,
/// enough to see whether the output is shifted or just wrong, and short enough to read at once.
pub const MAX_DIFF_LINES: usize = 12;

/// Lines of context shown before the first differing line.
const CONTEXT_BEFORE: usize = 2;

/// Escaped characters shown before the differing one when a long line is cut.
const SHOWN_BEFORE: usize = MAX_SHOWN_LINE / 3;

// The widest escape ("\u{9b}") must fit in a cut window with the context before it, and the
// first differing pair must fit in the diff after its context.
const _: () = assert!(SHOWN_BEFORE + 6 < MAX_SHOWN_LINE);
const _: () = assert!(CONTEXT_BEFORE + 2 <= MAX_DIFF_LINES);

/// Compare `actual` with `expected` under `mode`: None when they are the same.
///
/// Skips the common prefix a block at a time, then walks the lines from the one where the bytes
/// part (line by line only where they differ but may still be equal, as "\r\n" against "\n");
/// nothing is allocated unless they differ, and then only the lines shown in the
/// [`Difference`] become text. Never panics, whatever the bytes.
pub fn compare(expected: &[u8], actual: &[u8], mode: CompareMode) -> Option<Difference> {
    if expected == actual {
        return None;
    }
    let (expected, actual) = (mode.significant(expected), mode.significant(actual));
    // Every line that ends before the first differing byte is the same on both sides.
    let same = common_prefix_len(expected, actual);
    let start = memchr::memrchr(b'\n', &expected[..same]).map_or(0, |at| at + 1);
    let mut number = 1 + count_newlines(&expected[..start]);
    let mut expected_lines = Lines::starting_at(expected, start, mode);
    let mut actual_lines = Lines::starting_at(actual, start, mode);
    loop {
        match (expected_lines.next(), actual_lines.next()) {
            (None, None) => return None,
            (Some(e), Some(a)) if e.text == a.text => number += 1,
            (e, a) => {
                let sides = Sides {
                    expected,
                    actual,
                    mode,
                };
                return Some(sides.difference(number, e, a));
            }
        }
    }
}

/// A test's verdict, in the judges' words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The output matched the expected output, within the limits.
    Accepted,
    /// The program ran within the limits, but its output differs (see [`Difference`]).
    WrongAnswer,
    /// The program ran past the test's time limit.
    TimeLimit,
    /// The program used more memory than the test allows.
    MemoryLimit,
    /// The program wrote more output than the test allows.
    OutputLimit,
    /// The program crashed or exited with a non-zero status.
    RuntimeError,
    /// The source did not compile; no test ran.
    CompileError,
    /// The judge itself failed; the program is not to blame.
    InternalError,
}

impl Verdict {
    /// What a judge shows, e.g. "Accepted", "Wrong Answer", "Time Limit Exceeded", "Memory
    /// Limit Exceeded", "Output Limit Exceeded", "Runtime Error", "Compile Error", "Internal
    /// Error".
    pub fn words(self) -> &'static str {
        match self {
            Verdict::Accepted => "Accepted",
            Verdict::WrongAnswer => "Wrong Answer",
            Verdict::TimeLimit => "Time Limit Exceeded",
            Verdict::MemoryLimit => "Memory Limit Exceeded",
            Verdict::OutputLimit => "Output Limit Exceeded",
            Verdict::RuntimeError => "Runtime Error",
            Verdict::CompileError => "Compile Error",
            Verdict::InternalError => "Internal Error",
        }
    }

    /// The usual two- or three-letter code: AC, WA, TLE, MLE, OLE, RE, CE, IE.
    pub fn code(self) -> &'static str {
        match self {
            Verdict::Accepted => "AC",
            Verdict::WrongAnswer => "WA",
            Verdict::TimeLimit => "TLE",
            Verdict::MemoryLimit => "MLE",
            Verdict::OutputLimit => "OLE",
            Verdict::RuntimeError => "RE",
            Verdict::CompileError => "CE",
            Verdict::InternalError => "IE",
        }
    }
}

impl CompareMode {
    /// The part of an output that can matter: under `Lines`, what follows the last visible
    /// character is trailing whitespace or trailing blank lines, and both are ignored.
    fn significant(self, output: &[u8]) -> &[u8] {
        match self {
            CompareMode::Lines => trim_end(output, b" \t\r\n"),
            CompareMode::Exact => output,
        }
    }

    /// A line as compared, from its bytes up to and including its '\n' (if any).
    fn line(self, raw: &[u8]) -> &[u8] {
        match self {
            // `raw` holds at most one '\n', its last byte.
            CompareMode::Lines => trim_end(raw, b" \t\r\n"),
            CompareMode::Exact => raw,
        }
    }
}

/// One line of an output: where it starts, and its text as compared.
#[derive(Debug, Clone, Copy)]
struct Line<'a> {
    start: usize,
    text: &'a [u8],
}

/// An output's lines from a line start on. An empty output has no lines, and a final '\n'
/// ends the last line rather than starting an empty one.
struct Lines<'a> {
    output: &'a [u8],
    /// Start of the next line; None once past the last.
    next: Option<usize>,
    mode: CompareMode,
}

impl<'a> Lines<'a> {
    fn starting_at(output: &'a [u8], start: usize, mode: CompareMode) -> Self {
        Lines {
            output,
            next: (start < output.len()).then_some(start),
            mode,
        }
    }

    fn none(mode: CompareMode) -> Self {
        Lines {
            output: &[],
            next: None,
            mode,
        }
    }
}

impl<'a> Iterator for Lines<'a> {
    type Item = Line<'a>;

    fn next(&mut self) -> Option<Line<'a>> {
        let start = self.next?;
        let rest = &self.output[start..];
        let end = memchr::memchr(b'\n', rest).map_or(self.output.len(), |at| start + at + 1);
        self.next = (end < self.output.len()).then_some(end);
        Some(Line {
            start,
            text: self.mode.line(&self.output[start..end]),
        })
    }
}

/// The line that ends just before the line starting at `start`.
fn line_before(output: &[u8], start: usize, mode: CompareMode) -> Option<Line<'_>> {
    // `start` follows a '\n' at `start - 1` (or is 0).
    let newline = start.checked_sub(1)?;
    let begin = memchr::memrchr(b'\n', &output[..newline]).map_or(0, |at| at + 1);
    Some(Line {
        start: begin,
        text: mode.line(&output[begin..start]),
    })
}

/// Both outputs (their significant parts), for building a [`Difference`].
struct Sides<'a> {
    expected: &'a [u8],
    actual: &'a [u8],
    mode: CompareMode,
}

impl Sides<'_> {
    /// The difference at line `number`, where the expected line `e` and the actual line `a`
    /// differ (at least one exists).
    fn difference(&self, number: u64, e: Option<Line<'_>>, a: Option<Line<'_>>) -> Difference {
        let column = match (e, a) {
            (Some(e), Some(a)) => column_of_difference(e.text, a.text),
            _ => 1,
        };
        let expected = e.map(|l| shown(l.text, column));
        let actual = a.map(|l| shown(l.text, column));
        let diff = self.diff(number, column, (e, &expected), (a, &actual));
        Difference {
            line: number,
            column,
            expected,
            actual,
            diff,
        }
    }

    /// The diff around line `number`, given each side's line there and how it is shown.
    fn diff(
        &self,
        number: u64,
        column: u64,
        (e, expected_shown): (Option<Line<'_>>, &Option<String>),
        (a, actual_shown): (Option<Line<'_>>, &Option<String>),
    ) -> String {
        // The lines before are the same on both sides: take them from a side that has this line.
        let (output, anchor) = match (e, a) {
            (Some(e), _) => (self.expected, e.start),
            (None, Some(a)) => (self.actual, a.start),
            (None, None) => return String::new(),
        };
        let mut before = Vec::with_capacity(CONTEXT_BEFORE);
        let mut start = anchor;
        while before.len() < CONTEXT_BEFORE {
            let Some(line) = line_before(output, start, self.mode) else {
                break;
            };
            before.push(line);
            start = line.start;
        }
        let mut rows: Vec<(char, u64, String)> = Vec::with_capacity(MAX_DIFF_LINES);
        let mut n = number - before.len() as u64;
        for line in before.iter().rev() {
            rows.push((' ', n, shown(line.text, column)));
            n += 1;
        }
        // The differing line, as the difference shows it.
        if let Some(text) = expected_shown {
            rows.push(('-', n, text.clone()));
        }
        if let Some(text) = actual_shown {
            rows.push(('+', n, text.clone()));
        }

        // Then the lines after, while they differ.
        let after = |output, line: Option<Line<'_>>| match line {
            Some(line) => Lines::starting_at(output, line.start, self.mode).skip(1),
            None => Lines::none(self.mode).skip(1),
        };
        let mut expected_lines = after(self.expected, e);
        let mut actual_lines = after(self.actual, a);
        loop {
            n += 1;
            match (expected_lines.next(), actual_lines.next()) {
                (None, None) => break,
                (Some(same), Some(other)) if same.text == other.text => {
                    // One line of context after: the outputs agree again here.
                    if rows.len() < MAX_DIFF_LINES {
                        rows.push((' ', n, shown(same.text, column)));
                    }
                    break;
                }
                (e, a) => {
                    if rows.len() + usize::from(e.is_some()) + usize::from(a.is_some())
                        > MAX_DIFF_LINES
                    {
                        break;
                    }
                    if let Some(e) = e {
                        rows.push(('-', n, shown(e.text, column)));
                    }
                    if let Some(a) = a {
                        rows.push(('+', n, shown(a.text, column)));
                    }
                }
            }
        }

        // Numbers right-aligned, so the bars line up.
        let last = rows.iter().map(|r| r.1).max().unwrap_or(0);
        let width = last.checked_ilog10().unwrap_or(0) as usize + 1;
        let len: usize = rows.iter().map(|r| width + 6 + r.2.len()).sum();
        let mut out = String::with_capacity(len);
        for (i, (marker, n, text)) in rows.iter().enumerate() {
            if i > 0 {
                out.push('\n');
            }
            // Writing to a String cannot fail.
            let _ = write!(out, "{marker} {n:>width$} |");
            if !text.is_empty() {
                out.push(' ');
                out.push_str(text);
            }
        }
        out
    }
}

fn trim_end<'a>(bytes: &'a [u8], set: &[u8]) -> &'a [u8] {
    let end = bytes
        .iter()
        .rposition(|b| !set.contains(b))
        .map_or(0, |at| at + 1);
    &bytes[..end]
}

/// Length of the longest common prefix, compared a block at a time (a memcmp each).
fn common_prefix_len(a: &[u8], b: &[u8]) -> usize {
    const BLOCK: usize = 1024;
    let mut same = 0;
    for (x, y) in a.chunks(BLOCK).zip(b.chunks(BLOCK)) {
        if x != y {
            break;
        }
        same += x.len().min(y.len());
    }
    same + a[same..]
        .iter()
        .zip(&b[same..])
        .take_while(|(x, y)| x == y)
        .count()
}

fn count_newlines(bytes: &[u8]) -> u64 {
    // A plain count the compiler vectorizes; memchr's iterator costs a call per line.
    bytes.iter().filter(|&&b| b == b'\n').count() as u64
}

fn is_continuation(byte: u8) -> bool {
    byte & 0xC0 == 0x80
}

/// The lossy text's characters and the bytes each stands for: one per valid character, and one
/// U+FFFD per invalid sequence (the maximal prefix of a valid sequence, as
/// `String::from_utf8_lossy` has it).
fn lossy_segments(bytes: &[u8]) -> impl Iterator<Item = (char, usize)> + '_ {
    bytes.utf8_chunks().flat_map(|chunk| {
        let invalid = chunk.invalid().len();
        chunk
            .valid()
            .chars()
            .map(|c| (c, c.len_utf8()))
            .chain((invalid > 0).then_some((char::REPLACEMENT_CHARACTER, invalid)))
    })
}

fn lossy_chars(bytes: &[u8]) -> impl Iterator<Item = char> + '_ {
    lossy_segments(bytes).map(|(c, _)| c)
}

fn lossy_len(bytes: &[u8]) -> usize {
    bytes
        .utf8_chunks()
        .map(|chunk| chunk.valid().chars().count() + usize::from(!chunk.invalid().is_empty()))
        .sum()
}

/// Bytes of the lossy character that starts at `pos`, a character boundary. A character or an
/// invalid sequence is at most 4 bytes, and what follows them does not change them, so 4 bytes
/// decide.
fn char_len_at(line: &[u8], pos: usize) -> Option<usize> {
    let window = &line[pos..line.len().min(pos + 4)];
    let chunk = window.utf8_chunks().next()?;
    Some(match chunk.valid().chars().next() {
        Some(c) => c.len_utf8(),
        None => chunk.invalid().len(),
    })
}

/// 1-based column of the first lossy character whose bytes differ between two different lines.
fn column_of_difference(e: &[u8], a: &[u8]) -> u64 {
    let same = common_prefix_len(e, a);
    // Back up to a character boundary on both sides: a byte that is not a continuation byte
    // always starts a character, and so does a byte after 3 continuation bytes (no sequence is
    // longer than 4). One of the 4 positions up to `same` is such a boundary.
    let starts_char = |line: &[u8], at: usize| line.get(at).is_none_or(|&b| !is_continuation(b));
    let boundary = |at: usize| {
        (starts_char(e, at) && starts_char(a, at))
            || e[at.saturating_sub(3)..at]
                .iter()
                .all(|&b| is_continuation(b))
    };
    let start = (0..=same).rev().find(|&at| boundary(at)).unwrap_or(0);
    let mut column = lossy_len(&e[..start]) as u64 + 1;
    let mut pos = start;
    while let (Some(el), Some(al)) = (char_len_at(e, pos), char_len_at(a, pos)) {
        if e[pos..pos + el] != a[pos..pos + al] {
            break;
        }
        pos += el;
        column += 1;
    }
    column
}

/// Characters a character takes once escaped.
fn escaped_width(c: char) -> usize {
    match c {
        '\t' => 1,
        '\r' | '\n' => 2,
        c if c.is_control() && (c as u32) < 0x80 => 4,
        // C1 controls (U+0080..U+009F), which some terminals obey: "\u{9b}".
        c if c.is_control() => 6,
        _ => 1,
    }
}

fn push_escaped(out: &mut String, c: char) {
    match c {
        '\t' => out.push('\t'),
        '\r' => out.push_str("\\r"),
        '\n' => out.push_str("\\n"),
        // Writing to a String cannot fail.
        c if c.is_control() && (c as u32) < 0x80 => {
            let _ = write!(out, "\\x{:02x}", c as u32);
        }
        c if c.is_control() => {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        }
        c => out.push(c),
    }
}

/// A line as a [`Difference`] shows it: lossy, escaped, and cut to a window of at most
/// [`MAX_SHOWN_LINE`] escaped characters that holds `column` (or the line's end, when the line
/// is shorter), "…" marking each cut end.
///
/// Only the window is decoded character by character; finding it in a long line costs two
/// counting passes, so a 16 MiB line is cheap to show.
fn shown(line: &[u8], column: u64) -> String {
    let target = usize::try_from(column.saturating_sub(1)).unwrap_or(usize::MAX);
    // Characters from the start that fit in the window, and whether that is the whole line.
    let (mut fitting, mut width, mut whole) = (0, 0, true);
    for c in lossy_chars(line) {
        width += escaped_width(c);
        if width > MAX_SHOWN_LINE {
            whole = false;
            break;
        }
        fitting += 1;
    }
    let mut out = String::new();
    if whole || target < fitting {
        push_window(&mut out, line, MAX_SHOWN_LINE);
        return out;
    }
    // Some context before the target, or the whole tail when the target is near the end; one
    // character less for the "…" at each end. The start is not 0: the target is past the first
    // window, and the line does not fit in one.
    let len = lossy_len(line);
    let target = target.min(len);
    let tail = len.saturating_sub(MAX_SHOWN_LINE - 1);
    // Decode only the characters `lo..hi` that can hold the start. A start within the tail
    // window is after the target's context unless the target is in that window too.
    let lo = target.saturating_sub(SHOWN_BEFORE).min(tail);
    let hi = if tail >= target { target } else { len };
    let lo_byte = char_offset(line, lo);
    let region: Vec<(usize, usize)> = lossy_segments(&line[lo_byte..])
        .take(hi - lo)
        .map(|(c, bytes)| (escaped_width(c), bytes))
        .collect();
    // The first character `i` such that the characters `i..end` fit in `budget`; each takes at
    // least 1, so it is within the region.
    let back_from = |end: usize, budget: usize| {
        let mut used = 0;
        let fit = region[..end - lo]
            .iter()
            .rev()
            .take_while(|(width, _)| {
                used += width;
                used <= budget
            })
            .count();
        end - fit
    };
    let mut start = back_from(target, SHOWN_BEFORE);
    if hi == len {
        start = start.min(back_from(len, MAX_SHOWN_LINE - 1));
    }
    let start_byte = lo_byte + region[..start - lo].iter().map(|r| r.1).sum::<usize>();
    out.push('…');
    push_window(&mut out, &line[start_byte..], MAX_SHOWN_LINE - 1);
    out
}

/// Push the escaped characters of `text` (which starts at a character) while they fit in
/// `budget`, and "…" if it goes on.
fn push_window(out: &mut String, text: &[u8], budget: usize) {
    let mut used = 0;
    for c in lossy_chars(text) {
        let width = escaped_width(c);
        if used + width > budget {
            out.push('…');
            return;
        }
        push_escaped(out, c);
        used += width;
    }
}

/// Byte offset of lossy character `k` (the line's length past its end). Counts rather than
/// decodes: in valid UTF-8, a character starts at each byte that is not a continuation byte.
fn char_offset(line: &[u8], k: usize) -> usize {
    const BLOCK: usize = 4096;
    let (mut left, mut base) = (k, 0);
    for chunk in line.utf8_chunks() {
        let valid = chunk.valid().as_bytes();
        for block in valid.chunks(BLOCK) {
            let starts = block.iter().filter(|&&b| !is_continuation(b)).count();
            if left < starts {
                let at = block
                    .iter()
                    .enumerate()
                    .filter(|&(_, &b)| !is_continuation(b))
                    .nth(left)
                    .map_or(block.len(), |(at, _)| at);
                return base + at;
            }
            left -= starts;
            base += block.len();
        }
        if !chunk.invalid().is_empty() {
            if left == 0 {
                return base;
            }
            left -= 1;
            base += chunk.invalid().len();
        }
    }
    line.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const LINES: CompareMode = CompareMode::Lines;
    const EXACT: CompareMode = CompareMode::Exact;

    fn same(expected: &[u8], actual: &[u8], mode: CompareMode) -> bool {
        compare(expected, actual, mode).is_none()
    }

    fn differ(expected: &[u8], actual: &[u8], mode: CompareMode) -> Difference {
        compare(expected, actual, mode).expect("the outputs differ")
    }

    // The rules of Lines mode.

    #[test]
    fn lines_ignores_trailing_whitespace_on_each_line() {
        assert!(same(b"a\nb\n", b"a  \nb\t\n", LINES));
        assert!(same(b"a\nb\n", b"a\t \t\nb\r\r\n", LINES));
        assert!(same(b"a b\n", b"a b \t \r\n", LINES));
        assert!(same(b"a   \nb\n", b"a\nb\n", LINES));
    }

    #[test]
    fn lines_ignores_trailing_blank_lines() {
        assert!(same(b"a \n\n\n", b"a", LINES));
        assert!(same(b"a", b"a\n\n \n\t\r\n\n", LINES));
        assert!(same(b"", b"\n\n  \r\n", LINES));
        assert!(same(b"\n", b"", LINES));
    }

    #[test]
    fn lines_takes_crlf_for_lf_and_ignores_a_missing_final_newline() {
        assert!(same(b"a\r\nb", b"a\nb\n", LINES));
        assert!(same(b"a\nb\n", b"a\r\nb\r\n", LINES));
        assert!(same(b"1 2 3", b"1 2 3\n", LINES));
    }

    #[test]
    fn lines_counts_leading_spaces() {
        let d = differ(b"a", b" a", LINES);
        assert_eq!((d.line, d.column), (1, 1));
        assert_eq!(d.expected.as_deref(), Some("a"));
        assert_eq!(d.actual.as_deref(), Some(" a"));
    }

    #[test]
    fn lines_counts_spaces_between_tokens() {
        let d = differ(b"a b", b"a  b", LINES);
        assert_eq!((d.line, d.column), (1, 3));
        let d = differ(b"a\tb", b"a b", LINES);
        assert_eq!((d.line, d.column), (1, 2));
    }

    #[test]
    fn lines_counts_empty_lines_in_the_middle() {
        let d = differ(b"a\nb", b"a\n\nb", LINES);
        assert_eq!((d.line, d.column), (2, 1));
        assert_eq!(d.expected.as_deref(), Some("b"));
        assert_eq!(d.actual.as_deref(), Some(""));
        // A blank line made of spaces is still a line.
        assert!(compare(b"a\nb", b"a\n  \nb", LINES).is_some());
    }

    #[test]
    fn lines_counts_a_lone_carriage_return_inside_a_line() {
        let d = differ(b"ab", b"a\rb", LINES);
        assert_eq!((d.line, d.column), (1, 2));
        assert_eq!(d.actual.as_deref(), Some("a\\rb"));
    }

    #[test]
    fn lines_column_comes_after_the_trailing_whitespace_rule() {
        let d = differ(b"abc  ", b"abd", LINES);
        assert_eq!((d.line, d.column), (1, 3));
        assert_eq!(d.expected.as_deref(), Some("abc"));
        assert_eq!(d.actual.as_deref(), Some("abd"));
        // A line that stops short differs just past its end.
        let d = differ(b"abc", b"ab  ", LINES);
        assert_eq!(d.column, 3);
    }

    #[test]
    fn output_ended_early_points_at_the_first_missing_line() {
        let d = differ(b"1\n2\n3\n", b"1\n2\n", LINES);
        assert_eq!((d.line, d.column), (3, 1));
        assert_eq!(d.expected.as_deref(), Some("3"));
        assert_eq!(d.actual, None);
        assert_eq!(d.diff, "  1 | 1\n  2 | 2\n- 3 | 3");

        let d = differ(b"1\n2\n", b"", LINES);
        assert_eq!((d.line, d.column), (1, 1));
        assert_eq!(d.actual, None);
        assert_eq!(d.diff, "- 1 | 1\n- 2 | 2");
    }

    #[test]
    fn extra_lines_point_at_the_first_extra_line() {
        let d = differ(b"1\n", b"1\n2\n3\n\n", LINES);
        assert_eq!((d.line, d.column), (2, 1));
        assert_eq!(d.expected, None);
        assert_eq!(d.actual.as_deref(), Some("2"));
        assert_eq!(d.diff, "  1 | 1\n+ 2 | 2\n+ 3 | 3");

        let d = differ(b"", b"x", LINES);
        assert_eq!((d.line, d.column, d.expected), (1, 1, None));
    }

    #[test]
    fn difference_after_a_long_equal_prefix_has_the_right_line_number() {
        let mut expected = Vec::new();
        for i in 0..1000 {
            expected.extend_from_slice(format!("{i}\n").as_bytes());
        }
        let mut actual = expected.clone();
        actual[expected.len() - 2] = b'8'; // "999" -> "998"
        let d = differ(&expected, &actual, LINES);
        assert_eq!((d.line, d.column), (1000, 3));
        assert_eq!(
            d.diff,
            "   998 | 997\n   999 | 998\n- 1000 | 999\n+ 1000 | 998"
        );
        // The same with CRLF on one side: the walk goes line by line.
        let crlf: Vec<u8> = actual
            .split(|&b| b == b'\n')
            .flat_map(|l| [l, b"\r\n"].concat())
            .collect();
        assert_eq!(compare(&expected, &crlf, LINES), Some(d));
    }

    // Exact mode.

    #[test]
    fn exact_is_byte_for_byte() {
        assert!(same(b"a b\n", b"a b\n", EXACT));
        assert!(same(b"", b"", EXACT));
        let d = differ(b"a\n", b"a \n", EXACT);
        assert_eq!((d.line, d.column), (1, 2));
        assert_eq!(d.expected.as_deref(), Some("a\\n"));
        assert_eq!(d.actual.as_deref(), Some("a \\n"));
    }

    #[test]
    fn exact_shows_carriage_returns_and_final_newlines_where_they_are() {
        let d = differ(b"a\nb\n", b"a\r\nb\r\n", EXACT);
        assert_eq!((d.line, d.column), (1, 2));
        assert_eq!(d.expected.as_deref(), Some("a\\n"));
        assert_eq!(d.actual.as_deref(), Some("a\\r\\n"));

        let d = differ(b"a\nb\n", b"a\nb", EXACT);
        assert_eq!((d.line, d.column), (2, 2));
        assert_eq!(d.expected.as_deref(), Some("b\\n"));
        assert_eq!(d.actual.as_deref(), Some("b"));
    }

    #[test]
    fn exact_missing_and_extra_lines() {
        let d = differ(b"a\nb\n", b"a\n", EXACT);
        assert_eq!((d.line, d.column, d.actual), (2, 1, None));
        assert_eq!(d.expected.as_deref(), Some("b\\n"));
        let d = differ(b"a\n", b"a\n\n", EXACT);
        assert_eq!((d.line, d.column, d.expected), (2, 1, None));
        assert_eq!(d.actual.as_deref(), Some("\\n"));
        let d = differ(b"", b"\n", EXACT);
        assert_eq!((d.line, d.column, d.expected), (1, 1, None));
    }

    #[test]
    fn lines_is_the_default_and_modes_serialize_in_snake_case() {
        assert_eq!(CompareMode::default(), LINES);
        assert_eq!(serde_json::to_string(&LINES).unwrap(), "\"lines\"");
        assert_eq!(serde_json::to_string(&EXACT).unwrap(), "\"exact\"");
        assert_eq!(
            serde_json::from_str::<CompareMode>("\"exact\"").unwrap(),
            EXACT
        );
    }

    // Columns over UTF-8 and invalid bytes.

    #[test]
    fn column_counts_characters_not_bytes() {
        let d = differ("héllo wörld".as_bytes(), "héllo wörlt".as_bytes(), LINES);
        assert_eq!(d.column, 11);
        // Characters that share their first byte.
        let d = differ("aé".as_bytes(), "aè".as_bytes(), LINES);
        assert_eq!(d.column, 2);
        let d = differ("日本語".as_bytes(), "日本人".as_bytes(), LINES);
        assert_eq!(d.column, 3);
        assert_eq!(d.expected.as_deref(), Some("日本語"));
    }

    #[test]
    fn column_counts_invalid_sequences_as_one_character_each() {
        // \xe2\x82 is one invalid sequence (U+FFFD), then 'A'; "€" is \xe2\x82\xac.
        let d = differ(b"\xe2\x82A", "€".as_bytes(), EXACT);
        assert_eq!(d.column, 1);
        assert_eq!(d.expected.as_deref(), Some("\u{fffd}A"));
        assert_eq!(d.actual.as_deref(), Some("€"));
        // Two different invalid bytes both show as U+FFFD, and still differ there.
        let d = differ(b"x\xffy", b"x\xfey", EXACT);
        assert_eq!(d.column, 2);
        assert_eq!(d.expected, d.actual);
        // Lone continuation bytes are one character each.
        let d = differ(b"\x80\x80\x80\x80\x80a", b"\x80\x80\x80\x80\x80b", EXACT);
        assert_eq!(d.column, 6);
        let d = differ(
            b"\xf0\x9f\x98\x80\x80\x80a",
            b"\xf0\x9f\x98\x80\x80\x80b",
            EXACT,
        );
        assert_eq!(d.column, 4);
    }

    // What is shown.

    #[test]
    fn control_characters_are_escaped_and_tabs_kept() {
        let d = differ(b"x", b"\x1b[31mred\x00\x7f\tend", LINES);
        assert_eq!(d.actual.as_deref(), Some("\\x1b[31mred\\x00\\x7f\tend"));
        let d = differ(b"x", "a\u{9b}b".as_bytes(), LINES);
        assert_eq!(d.actual.as_deref(), Some("a\\u{9b}b"));
        assert_eq!(d.diff, "- 1 | x\n+ 1 | a\\u{9b}b");
    }

    #[test]
    fn a_long_line_differing_early_is_cut_at_the_end() {
        let expected = "a".repeat(1000);
        let actual = format!("b{}", "a".repeat(999));
        let d = differ(expected.as_bytes(), actual.as_bytes(), LINES);
        assert_eq!(d.column, 1);
        let shown = d.actual.unwrap();
        assert_eq!(shown, format!("b{}…", "a".repeat(MAX_SHOWN_LINE - 1)));
        assert_eq!(shown.chars().count(), MAX_SHOWN_LINE + 1);
    }

    #[test]
    fn a_long_line_differing_late_is_cut_around_the_difference() {
        let expected = "a".repeat(100_000);
        let mut actual = expected.clone().into_bytes();
        actual[50_000] = b'X';
        let d = differ(expected.as_bytes(), &actual, LINES);
        assert_eq!((d.line, d.column), (1, 50_001));
        let shown = d.actual.unwrap();
        assert_eq!(shown.chars().count(), MAX_SHOWN_LINE + 1);
        assert!(shown.starts_with('…') && shown.ends_with('…'));
        let x = shown.chars().position(|c| c == 'X').unwrap();
        assert_eq!(x, 1 + SHOWN_BEFORE, "the difference keeps its context");
    }

    #[test]
    fn a_long_line_differing_at_its_end_shows_its_tail() {
        let expected = "a".repeat(1000);
        let actual = "a".repeat(999);
        let d = differ(expected.as_bytes(), actual.as_bytes(), LINES);
        assert_eq!(d.column, 1000);
        assert_eq!(
            d.expected.unwrap(),
            format!("…{}", "a".repeat(MAX_SHOWN_LINE - 1))
        );
        assert_eq!(
            d.actual.unwrap(),
            format!("…{}", "a".repeat(MAX_SHOWN_LINE - 1))
        );
    }

    #[test]
    fn escapes_count_toward_the_shown_width() {
        let line = "\x01".repeat(1000);
        let d = differ(line.as_bytes(), b"", LINES);
        let shown = d.expected.unwrap();
        assert_eq!(shown.chars().count(), MAX_SHOWN_LINE + 1);
        assert!(shown.ends_with("\\x01…"));
    }

    #[test]
    fn diff_has_two_lines_of_context_before() {
        let d = differ(b"1\n2\n3\n4\n5\n", b"1\n2\n3\nX\n5\n", LINES);
        assert_eq!(d.diff, "  2 | 2\n  3 | 3\n- 4 | 4\n+ 4 | X\n  5 | 5");
        let d = differ(b"1\n2\n", b"1\nX\n", LINES);
        assert_eq!(d.diff, "  1 | 1\n- 2 | 2\n+ 2 | X");
    }

    #[test]
    fn diff_shows_empty_lines_without_trailing_space() {
        let d = differ(b"a\n\nb", b"a\n\nc", LINES);
        assert_eq!(d.diff, "  1 | a\n  2 |\n- 3 | b\n+ 3 | c");
    }

    #[test]
    fn diff_stops_at_the_line_budget() {
        let expected: Vec<u8> = (0..100)
            .flat_map(|i| format!("{i}\n").into_bytes())
            .collect();
        let actual: Vec<u8> = (0..100)
            .flat_map(|i| format!("{}\n", i + 1).into_bytes())
            .collect();
        let d = differ(&expected, &actual, LINES);
        assert_eq!(d.line, 1);
        let rows: Vec<&str> = d.diff.split('\n').collect();
        assert_eq!(rows.len(), MAX_DIFF_LINES);
        assert_eq!(rows[0], "- 1 | 0");
        assert_eq!(rows[1], "+ 1 | 1");
        assert_eq!(rows[MAX_DIFF_LINES - 1], "+ 6 | 6");

        let mut shifted = b"a\nb\n".to_vec();
        shifted.extend_from_slice(&expected);
        let mut inserted = b"a\nb\n".to_vec();
        inserted.extend_from_slice(&actual);
        let d = differ(&shifted, &inserted, LINES);
        let rows: Vec<&str> = d.diff.split('\n').collect();
        assert_eq!(rows.len(), MAX_DIFF_LINES, "{}", d.diff);
        assert_eq!(rows[0], "  1 | a");
        assert_eq!(rows[MAX_DIFF_LINES - 1], "+ 7 | 5");
    }

    #[test]
    fn diff_line_numbers_are_aligned() {
        let expected: Vec<u8> = (1..=10)
            .flat_map(|i| format!("{i}\n").into_bytes())
            .collect();
        let mut actual = expected.clone();
        actual.truncate(actual.len() - 3); // drop "10\n"
        actual.extend_from_slice(b"1\n11\n");
        let d = differ(&expected, &actual, LINES);
        assert_eq!((d.line, d.column), (10, 2));
        assert_eq!(d.diff, "   8 | 8\n   9 | 9\n- 10 | 10\n+ 10 | 1\n+ 11 | 11");
    }

    #[test]
    fn huge_outputs_compare_without_trouble() {
        let line = b"123456789 987654321 555\n";
        let expected: Vec<u8> = line.repeat(16 * 1024 * 1024 / line.len());
        assert!(same(&expected, &expected.clone(), LINES));
        assert!(same(&expected, &expected.clone(), EXACT));
        let mut actual = expected.clone();
        let last = actual.len() - 2;
        actual[last] = b'6';
        let d = differ(&expected, &actual, LINES);
        assert_eq!(d.line, (expected.len() / line.len()) as u64);
        assert_eq!(d.column, 23);
        // One huge line.
        let one = vec![b'z'; 16 * 1024 * 1024];
        let mut other = one.clone();
        other[8 * 1024 * 1024] = 0x1b;
        let d = differ(&one, &other, EXACT);
        assert_eq!((d.line, d.column), (1, 8 * 1024 * 1024 + 1));
        assert!(d.actual.unwrap().contains("\\x1b"));
    }

    #[test]
    fn verdicts_have_judge_words_and_codes() {
        let all = [
            (Verdict::Accepted, "Accepted", "AC", "accepted"),
            (Verdict::WrongAnswer, "Wrong Answer", "WA", "wrong_answer"),
            (
                Verdict::TimeLimit,
                "Time Limit Exceeded",
                "TLE",
                "time_limit",
            ),
            (
                Verdict::MemoryLimit,
                "Memory Limit Exceeded",
                "MLE",
                "memory_limit",
            ),
            (
                Verdict::OutputLimit,
                "Output Limit Exceeded",
                "OLE",
                "output_limit",
            ),
            (
                Verdict::RuntimeError,
                "Runtime Error",
                "RE",
                "runtime_error",
            ),
            (
                Verdict::CompileError,
                "Compile Error",
                "CE",
                "compile_error",
            ),
            (
                Verdict::InternalError,
                "Internal Error",
                "IE",
                "internal_error",
            ),
        ];
        for (verdict, words, code, json) in all {
            assert_eq!(verdict.words(), words);
            assert_eq!(verdict.code(), code);
            assert_eq!(
                serde_json::to_string(&verdict).unwrap(),
                format!("\"{json}\"")
            );
            let back: Verdict = serde_json::from_str(&format!("\"{json}\"")).unwrap();
            assert_eq!(back, verdict);
        }
    }

    #[test]
    fn difference_round_trips_through_json() {
        let d = differ(b"1\n2\n", b"1\n3\n", LINES);
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(serde_json::from_str::<Difference>(&json).unwrap(), d);
    }

    // Properties, against a plain model that splits into owned lines.

    /// The model's lines: under Lines, split at '\n', trailing whitespace trimmed, trailing
    /// blank lines dropped; under Exact, each line with its '\n'.
    fn model_lines(output: &[u8], mode: CompareMode) -> Vec<Vec<u8>> {
        match mode {
            CompareMode::Lines => {
                let mut lines: Vec<Vec<u8>> = output
                    .split(|&b| b == b'\n')
                    .map(|l| trim_end(l, b" \t\r").to_vec())
                    .collect();
                while lines.last().is_some_and(|l| l.is_empty()) {
                    lines.pop();
                }
                lines
            }
            CompareMode::Exact => output
                .split_inclusive(|&b| b == b'\n')
                .map(<[u8]>::to_vec)
                .collect(),
        }
    }

    /// The model's column: the first lossy character whose bytes differ.
    fn model_column(e: &[u8], a: &[u8]) -> u64 {
        fn pieces(line: &[u8]) -> Vec<&[u8]> {
            let mut out = Vec::new();
            let mut rest = line;
            for chunk in line.utf8_chunks() {
                for c in chunk.valid().chars() {
                    let (piece, tail) = rest.split_at(c.len_utf8());
                    out.push(piece);
                    rest = tail;
                }
                if !chunk.invalid().is_empty() {
                    let (piece, tail) = rest.split_at(chunk.invalid().len());
                    out.push(piece);
                    rest = tail;
                }
            }
            out
        }
        let (e, a) = (pieces(e), pieces(a));
        e.iter().zip(&a).take_while(|(x, y)| x == y).count() as u64 + 1
    }

    fn output() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            Just(b"\n".to_vec()),
            Just(b"\r\n".to_vec()),
            Just(b" ".to_vec()),
            Just(b"\t".to_vec()),
            Just(b"\r".to_vec()),
            Just(b"a".to_vec()),
            Just(b"b".to_vec()),
            Just("é".as_bytes().to_vec()),
            Just("€".as_bytes().to_vec()),
            Just(b"\xe2\x82".to_vec()),
            Just(b"\x80".to_vec()),
            Just(b"\xff".to_vec()),
            Just(b"\x1b".to_vec()),
            Just(b"\0".to_vec()),
            Just("\u{9b}".as_bytes().to_vec()),
            proptest::collection::vec(any::<u8>(), 0..8),
            (1usize..400).prop_map(|n| b"x".repeat(n)),
        ];
        proptest::collection::vec(piece, 0..24).prop_map(|pieces| pieces.concat())
    }

    fn mode() -> impl Strategy<Value = CompareMode> {
        prop_oneof![Just(LINES), Just(EXACT)]
    }

    /// Adds whitespace the Lines rule ignores: at the end of lines, and blank lines at the end.
    fn padded(output: &[u8], pads: &[u8], blank: &[u8]) -> Vec<u8> {
        let ws = |p: u8| match p % 4 {
            0 => &b""[..],
            1 => b" ",
            2 => b"\t",
            _ => b"\r",
        };
        let mut out = Vec::new();
        for (i, line) in output.split(|&b| b == b'\n').enumerate() {
            if i > 0 {
                out.push(b'\n');
            }
            out.extend_from_slice(line);
            let pad = pads.get(i).copied().unwrap_or(0);
            for _ in 0..pad / 4 % 4 {
                out.extend_from_slice(ws(pad));
            }
        }
        for &p in blank {
            out.push(b'\n');
            out.extend_from_slice(ws(p));
        }
        out
    }

    fn check_shown(shown: &str) -> Result<(), TestCaseError> {
        prop_assert!(shown.chars().count() <= MAX_SHOWN_LINE + 1, "{shown:?}");
        prop_assert!(
            !shown.chars().any(|c| c.is_control() && c != '\t'),
            "{shown:?}"
        );
        Ok(())
    }

    proptest! {
        #[test]
        fn an_output_equals_itself(x in output(), mode in mode()) {
            prop_assert_eq!(compare(&x, &x, mode), None);
        }

        #[test]
        fn exact_is_none_iff_the_bytes_are_equal(x in output(), y in output()) {
            prop_assert_eq!(compare(&x, &y, EXACT).is_none(), x == y);
        }

        #[test]
        fn lines_ignores_added_trailing_whitespace_and_blank_lines(
            x in output(),
            y in output(),
            pads in proptest::collection::vec(any::<u8>(), 0..24),
            blank in proptest::collection::vec(any::<u8>(), 0..4),
        ) {
            let base = compare(&x, &y, LINES);
            let px = padded(&x, &pads, &blank);
            let py = padded(&y, &pads, &blank);
            prop_assert_eq!(&compare(&px, &y, LINES), &base);
            prop_assert_eq!(&compare(&x, &py, LINES), &base);
            prop_assert_eq!(&compare(&px, &py, LINES), &base);
            prop_assert_eq!(compare(&x, &px, LINES), None);
        }

        #[test]
        fn compare_agrees_with_the_line_model(x in output(), y in output(), mode in mode()) {
            let (xl, yl) = (model_lines(&x, mode), model_lines(&y, mode));
            let d = compare(&x, &y, mode);
            prop_assert_eq!(d.is_none(), xl == yl);
            if let Some(d) = d {
                let first = xl.iter().zip(&yl).take_while(|(a, b)| a == b).count();
                prop_assert_eq!(d.line, first as u64 + 1);
                prop_assert_eq!(d.expected.is_some(), first < xl.len());
                prop_assert_eq!(d.actual.is_some(), first < yl.len());
                let column = match (xl.get(first), yl.get(first)) {
                    (Some(e), Some(a)) => model_column(e, a),
                    _ => 1,
                };
                prop_assert_eq!(d.column, column);
                // The window keeps the difference in view: lines whose text differs show so.
                if let (Some(e), Some(a)) = (xl.get(first), yl.get(first)) {
                    if String::from_utf8_lossy(e) != String::from_utf8_lossy(a) {
                        prop_assert_ne!(&d.expected, &d.actual);
                    }
                }
            }
        }

        #[test]
        fn a_difference_stays_within_bounds(
            x in output(),
            y in output(),
            mode in mode(),
        ) {
            if let Some(d) = compare(&x, &y, mode) {
                let lines = |o: &[u8]| count_newlines(o) + 1;
                prop_assert!(d.line >= 1 && d.line <= lines(&x).max(lines(&y)) + 1);
                prop_assert!(d.column >= 1);
                prop_assert!(d.expected.is_some() || d.actual.is_some());
                for shown in d.expected.iter().chain(&d.actual) {
                    check_shown(shown)?;
                }
                let rows: Vec<&str> = d.diff.split('\n').collect();
                prop_assert!(rows.len() <= MAX_DIFF_LINES);
                for row in rows {
                    let (head, text) = row.split_once(" |").expect("a diff row has a bar");
                    prop_assert!(head.starts_with([' ', '-', '+']), "{row:?}");
                    check_shown(text.strip_prefix(' ').unwrap_or(text))?;
                }
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(
            x in proptest::collection::vec(any::<u8>(), 0..512),
            y in proptest::collection::vec(any::<u8>(), 0..512),
            mode in mode(),
        ) {
            let _ = compare(&x, &y, mode);
            let _ = compare(&y, &x, mode);
        }
    }
}
