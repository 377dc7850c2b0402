//! The ordered record of one job's events, read by any number of subscribers at their own pace.
//!
//! Output bytes are kept once, in one buffer per stream (what `GET /api/v1/jobs/{id}` shows);
//! the log itself only says in which order things happened: a state, a queue position, "output
//! up to these offsets", the summary. Consecutive output of one stream grows a single entry, so
//! the log's length does not depend on how the program chunked its writes. Its memory is
//! therefore the output (bounded by the run's output cap) plus a few words per switch between
//! stdout and stderr, up to [`MAX_ENTRIES`]; past that, output is merged into the last entry and
//! the order between stdout and stderr inside it is no longer kept (stdout is read first).
//!
//! A reader holds a [`Cursor`]: the entry it is at and how many bytes of each stream it has
//! had. Replaying a finished job, following a live one, and resuming from an SSE
//! `Last-Event-ID` are the same operation, [`JobLog::read`] from a cursor, so nothing is lost or
//! repeated between what was stored and what comes next.
use onpyrunner_protocol::{Event, OutputStream, RunState, Summary};
use std::fmt;

/// Entries kept in order; beyond this, output is merged into the last entry.
pub const MAX_ENTRIES: usize = 65_536;
/// Largest piece of output one event carries.
pub const MAX_EVENT_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq)]
enum Entry {
    State {
        state: RunState,
        at_unix_ms: u64,
    },
    Queued {
        position: usize,
    },
    /// Output up to these offsets of the two buffers.
    Output {
        stdout_end: usize,
        stderr_end: usize,
    },
    Summary(Box<Summary>),
}

/// One job's events and output.
#[derive(Debug, Default)]
pub struct JobLog {
    entries: Vec<Entry>,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    /// Which streams the last entry holds output of, when it is an `Output` entry.
    last_has: (bool, bool),
}

/// Where a reader is: the entry it is at and the bytes of each stream it has had.
/// Written `entry.stdout.stderr` in SSE event ids.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cursor {
    pub entry: usize,
    pub stdout: usize,
    pub stderr: usize,
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.entry, self.stdout, self.stderr)
    }
}

impl std::str::FromStr for Cursor {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        let mut parts = s.split('.').map(|p| p.parse::<usize>().map_err(|_| ()));
        let cursor = Cursor {
            entry: parts.next().ok_or(())??,
            stdout: parts.next().ok_or(())??,
            stderr: parts.next().ok_or(())??,
        };
        match parts.next() {
            None => Ok(cursor),
            Some(_) => Err(()),
        }
    }
}

/// What a reader gets, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum LogEvent {
    State {
        state: RunState,
        at_unix_ms: u64,
    },
    Queued {
        position: usize,
    },
    /// Output as text: invalid UTF-8 replaced by U+FFFD. A character split across writes is
    /// held back until it is complete, so it is never replaced.
    Output {
        stream: OutputStream,
        text: String,
    },
    Summary(Summary),
}

/// What one read gives.
#[derive(Debug, Default)]
pub struct Read {
    /// Each event with the cursor just after it.
    pub events: Vec<(LogEvent, Cursor)>,
    /// The reader has had everything, the summary included: nothing more will come.
    pub complete: bool,
}

impl JobLog {
    pub fn push(&mut self, event: &Event) {
        match event {
            Event::State { state, at_unix_ms } => self.entries.push(Entry::State {
                state: *state,
                at_unix_ms: *at_unix_ms,
            }),
            Event::Queued { position } => self.entries.push(Entry::Queued {
                position: *position,
            }),
            Event::Summary(summary) => self.entries.push(Entry::Summary(Box::new(summary.clone()))),
            Event::Output(chunk) => {
                if chunk.data.is_empty() {
                    return;
                }
                let is_stdout = chunk.stream == OutputStream::Stdout;
                match chunk.stream {
                    OutputStream::Stdout => self.stdout.extend_from_slice(&chunk.data),
                    OutputStream::Stderr => self.stderr.extend_from_slice(&chunk.data),
                }
                let ends = (self.stdout.len(), self.stderr.len());
                let only_this_stream = if is_stdout {
                    !self.last_has.1
                } else {
                    !self.last_has.0
                };
                let full = self.entries.len() >= MAX_ENTRIES;
                if let Some(Entry::Output {
                    stdout_end,
                    stderr_end,
                }) = self.entries.last_mut()
                {
                    if only_this_stream || full {
                        (*stdout_end, *stderr_end) = ends;
                        if is_stdout {
                            self.last_has.0 = true;
                        } else {
                            self.last_has.1 = true;
                        }
                        return;
                    }
                }
                self.entries.push(Entry::Output {
                    stdout_end: ends.0,
                    stderr_end: ends.1,
                });
                self.last_has = (is_stdout, !is_stdout);
                return;
            }
        }
        self.last_has = (false, false);
    }

    pub fn stdout(&self) -> &[u8] {
        &self.stdout
    }

    pub fn stderr(&self) -> &[u8] {
        &self.stderr
    }

    /// Whether `cursor` could have come from a read of this log.
    pub fn contains(&self, cursor: Cursor) -> bool {
        if cursor.entry > self.entries.len()
            || cursor.stdout > self.stdout.len()
            || cursor.stderr > self.stderr.len()
        {
            return false;
        }
        // What the entries before the cursor hold must have been had (but for a held-back
        // character), and no more than the entry it is at holds.
        let ends = |entries: &[Entry]| {
            entries
                .iter()
                .rev()
                .find_map(|e| match e {
                    Entry::Output {
                        stdout_end,
                        stderr_end,
                    } => Some((*stdout_end, *stderr_end)),
                    _ => None,
                })
                .unwrap_or((0, 0))
        };
        let lower = ends(&self.entries[..cursor.entry]);
        let upper = match self.entries.get(cursor.entry) {
            Some(Entry::Output { .. }) => ends(&self.entries[..=cursor.entry]),
            _ => lower,
        };
        let fits = |had: usize, lower: usize, upper: usize| had + 4 > lower && had <= upper;
        fits(cursor.stdout, lower.0, upper.0) && fits(cursor.stderr, lower.1, upper.1)
    }

    /// The events after `cursor`, at most `max` of them. `ended`: no event will be pushed any
    /// more, so incomplete characters at the end are given (replaced) rather than held back.
    pub fn read(&self, cursor: Cursor, ended: bool, max: usize) -> Read {
        let mut reader = Reader {
            log: self,
            at: cursor,
            events: Vec::new(),
        };
        while reader.at.entry < self.entries.len() && reader.events.len() < max {
            let last = reader.at.entry + 1 == self.entries.len();
            match &self.entries[reader.at.entry] {
                Entry::Output {
                    stdout_end,
                    stderr_end,
                } => {
                    let flush = ended && last;
                    let full = reader.output(OutputStream::Stdout, *stdout_end, flush, max)
                        && reader.output(OutputStream::Stderr, *stderr_end, flush, max);
                    if !full || last {
                        // Full: come back for the rest. Last: it may still grow.
                        break;
                    }
                    reader.at.entry += 1;
                }
                Entry::State { state, at_unix_ms } => {
                    if state.is_final() && !reader.flush(max) {
                        break;
                    }
                    reader.at.entry += 1;
                    reader.push(LogEvent::State {
                        state: *state,
                        at_unix_ms: *at_unix_ms,
                    });
                }
                Entry::Queued { position } => {
                    reader.at.entry += 1;
                    reader.push(LogEvent::Queued {
                        position: *position,
                    });
                }
                Entry::Summary(summary) => {
                    if !reader.flush(max) {
                        break;
                    }
                    reader.at.entry += 1;
                    reader.push(LogEvent::Summary((**summary).clone()));
                }
            }
        }
        if ended && reader.at.entry == self.entries.len() && reader.events.len() < max {
            reader.flush(max);
        }
        let at = reader.at;
        let complete = at.entry == self.entries.len()
            && at.stdout == self.stdout.len()
            && at.stderr == self.stderr.len()
            && (ended || matches!(self.entries.last(), Some(Entry::Summary(_))));
        Read {
            events: reader.events,
            complete,
        }
    }
}

struct Reader<'a> {
    log: &'a JobLog,
    at: Cursor,
    events: Vec<(LogEvent, Cursor)>,
}

impl Reader<'_> {
    fn push(&mut self, event: LogEvent) {
        self.events.push((event, self.at));
    }

    /// Give `stream`'s bytes up to `end` (holding back an incomplete character unless
    /// `flush`), in pieces of at most `MAX_EVENT_BYTES`. `false` when `max` events were reached
    /// before the end.
    fn output(&mut self, stream: OutputStream, end: usize, flush: bool, max: usize) -> bool {
        let buffer = match stream {
            OutputStream::Stdout => &self.log.stdout,
            OutputStream::Stderr => &self.log.stderr,
        };
        loop {
            let had = match stream {
                OutputStream::Stdout => self.at.stdout,
                OutputStream::Stderr => self.at.stderr,
            };
            let mut available = &buffer[had.min(end)..end];
            if !flush {
                available = &available[..complete_prefix(available)];
            }
            if available.is_empty() {
                return true;
            }
            if self.events.len() >= max {
                return false;
            }
            let mut piece = &available[..available.len().min(MAX_EVENT_BYTES)];
            if piece.len() < available.len() {
                piece = &piece[..complete_prefix(piece)];
            }
            match stream {
                OutputStream::Stdout => self.at.stdout += piece.len(),
                OutputStream::Stderr => self.at.stderr += piece.len(),
            }
            let text = String::from_utf8_lossy(piece).into_owned();
            self.push(LogEvent::Output { stream, text });
        }
    }

    /// Give what was held back of both streams (no more output will come).
    fn flush(&mut self, max: usize) -> bool {
        let (out, err) = (self.log.stdout.len(), self.log.stderr.len());
        self.output(OutputStream::Stdout, out, true, max)
            && self.output(OutputStream::Stderr, err, true, max)
    }
}

/// The length of the longest prefix of `bytes` that does not end inside a UTF-8 character
/// still waiting for its continuation bytes. Invalid bytes count as complete (they will be
/// replaced either way).
pub fn complete_prefix(bytes: &[u8]) -> usize {
    let len = bytes.len();
    for i in (len.saturating_sub(3)..len).rev() {
        let b = bytes[i];
        if b & 0xC0 == 0x80 {
            continue; // a continuation byte: look further back for the lead byte
        }
        let needed = match b {
            0xC2..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF4 => 4,
            _ => 1,
        };
        return if len - i < needed { i } else { len };
    }
    len
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use onpyrunner_protocol::Stage;
    use onpyrunner_protocol::{OutputChunk, Reason, Usage};

    fn out(stream: OutputStream, data: &[u8]) -> Event {
        Event::Output(OutputChunk {
            stream,
            data: Bytes::copy_from_slice(data),
        })
    }

    fn state(state: RunState) -> Event {
        Event::State {
            state,
            at_unix_ms: 7,
        }
    }

    fn summary() -> Summary {
        let mut summary = Summary::new(Reason::Exited, Usage::new(Stage::Run));
        summary.usage.exit_code = Some(0);
        summary
    }

    use OutputStream::{Stderr, Stdout};

    /// Read everything from `cursor` in batches of `batch`, as a subscriber would.
    fn read_all(log: &JobLog, mut cursor: Cursor, ended: bool, batch: usize) -> Vec<LogEvent> {
        let mut events = Vec::new();
        loop {
            let read = log.read(cursor, ended, batch);
            if read.events.is_empty() {
                return events;
            }
            for (event, after) in read.events {
                events.push(event);
                cursor = after;
            }
        }
    }

    /// Adjacent output events of one stream joined, to compare what a reader saw.
    fn joined(events: Vec<LogEvent>) -> Vec<LogEvent> {
        let mut joined: Vec<LogEvent> = Vec::new();
        for event in events {
            if let (
                Some(LogEvent::Output { stream: s, text: t }),
                LogEvent::Output { stream, text },
            ) = (joined.last_mut(), &event)
            {
                if s == stream {
                    t.push_str(text);
                    continue;
                }
            }
            joined.push(event);
        }
        joined
    }

    fn text(stream: OutputStream, text: &str) -> LogEvent {
        LogEvent::Output {
            stream,
            text: text.into(),
        }
    }

    fn sample() -> (JobLog, Vec<Event>) {
        let events = vec![
            state(RunState::Ready),
            Event::Queued { position: 2 },
            Event::Queued { position: 1 },
            state(RunState::Running),
            out(Stdout, b"a"),
            out(Stdout, b"b\n"),
            out(Stderr, b"oops\n"),
            out(Stdout, b"c\n"),
            state(RunState::Finished),
            Event::Summary(summary()),
        ];
        let mut log = JobLog::default();
        for e in &events {
            log.push(e);
        }
        (log, events)
    }

    #[test]
    fn a_reader_gets_every_event_in_order_with_output_merged_per_stream() {
        let (log, _) = sample();
        let want = vec![
            LogEvent::State {
                state: RunState::Ready,
                at_unix_ms: 7,
            },
            LogEvent::Queued { position: 2 },
            LogEvent::Queued { position: 1 },
            LogEvent::State {
                state: RunState::Running,
                at_unix_ms: 7,
            },
            text(Stdout, "ab\n"),
            text(Stderr, "oops\n"),
            text(Stdout, "c\n"),
            LogEvent::State {
                state: RunState::Finished,
                at_unix_ms: 7,
            },
            LogEvent::Summary(summary()),
        ];
        for batch in [1, 2, 3, 100] {
            assert_eq!(
                read_all(&log, Cursor::default(), false, batch),
                want,
                "{batch}"
            );
        }
        let read = log.read(Cursor::default(), false, 100);
        assert!(read.complete);
        assert_eq!(
            log.entries.len(),
            9,
            "consecutive stdout writes share one entry"
        );
        assert_eq!(log.stdout(), b"ab\nc\n");
    }

    #[test]
    fn resuming_from_any_cursor_gives_exactly_the_rest() {
        let (log, _) = sample();
        let all = log.read(Cursor::default(), false, 100).events;
        for (i, (_, cursor)) in all.iter().enumerate() {
            let rest: Vec<_> = log.read(*cursor, false, 100).events;
            assert_eq!(rest, all[i + 1..].to_vec(), "after event {i}");
            let id = cursor.to_string();
            assert_eq!(id.parse::<Cursor>(), Ok(*cursor));
            assert!(log.contains(*cursor));
        }
        let end = all.last().unwrap().1;
        assert!(log.read(end, false, 100).complete);
    }

    #[test]
    fn a_live_reader_and_a_late_reader_see_the_same_events() {
        let (full, events) = sample();
        let want = read_all(&full, Cursor::default(), false, 100);
        // A live reader reads after every push; it sees the same events, output maybe split.
        let mut log = JobLog::default();
        let mut cursor = Cursor::default();
        let mut seen = Vec::new();
        for e in &events {
            log.push(e);
            for (event, after) in log.read(cursor, false, 100).events {
                seen.push(event);
                cursor = after;
            }
        }
        assert_eq!(joined(seen), want);
    }

    #[test]
    fn a_character_split_across_writes_is_held_back_until_complete() {
        let mut log = JobLog::default();
        log.push(&state(RunState::Running));
        log.push(&out(Stdout, "h\u{e9}".as_bytes().split_last().unwrap().1));
        let read = log.read(Cursor::default(), false, 100);
        assert_eq!(read.events.last().unwrap().0, text(Stdout, "h"));
        let cursor = read.events.last().unwrap().1;
        assert!(!read.complete);
        assert!(log.contains(cursor), "a held-back byte is a valid position");
        log.push(&out(Stdout, &[0xa9]));
        let read = log.read(cursor, false, 100);
        assert_eq!(read.events[0].0, text(Stdout, "\u{e9}"));
        // An incomplete character at the very end is replaced once the run ended.
        log.push(&out(Stdout, &[b'x', 0xe2, 0x82]));
        log.push(&state(RunState::Finished));
        let rest = joined(read_all(&log, read.events[0].1, false, 100));
        assert_eq!(rest[0], text(Stdout, "x\u{fffd}"));
        assert!(matches!(rest[1], LogEvent::State { .. }));
    }

    #[test]
    fn invalid_bytes_are_replaced_and_not_held_back() {
        let mut log = JobLog::default();
        log.push(&out(Stderr, &[b'a', 0xff, b'b', 0x80]));
        let events = read_all(&log, Cursor::default(), false, 100);
        assert_eq!(events, vec![text(Stderr, "a\u{fffd}b\u{fffd}")]);
    }

    #[test]
    fn large_output_comes_in_pieces_cut_between_characters() {
        let mut log = JobLog::default();
        let big = "\u{20ac}".repeat(MAX_EVENT_BYTES); // three bytes each
        log.push(&out(Stdout, big.as_bytes()));
        log.push(&Event::Summary(summary()));
        let events = read_all(&log, Cursor::default(), false, 100);
        let pieces: Vec<&str> = events
            .iter()
            .filter_map(|e| match e {
                LogEvent::Output { text, .. } => Some(text.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(
            pieces.len(),
            4,
            "65535 bytes (21845 characters) each, then the rest"
        );
        assert!(pieces.iter().all(|p| p.len() <= MAX_EVENT_BYTES));
        assert!(!pieces.concat().contains('\u{fffd}'));
        assert_eq!(pieces.concat(), big);
    }

    #[test]
    fn the_log_stays_bounded_when_streams_alternate_forever() {
        let mut log = JobLog::default();
        for i in 0..MAX_ENTRIES + 1000 {
            let stream = if i % 2 == 0 { Stdout } else { Stderr };
            log.push(&out(stream, b"x"));
        }
        assert_eq!(log.entries.len(), MAX_ENTRIES);
        let events = read_all(&log, Cursor::default(), true, 1000);
        let bytes: usize = events
            .iter()
            .map(|e| match e {
                LogEvent::Output { text, .. } => text.len(),
                _ => 0,
            })
            .sum();
        assert_eq!(bytes, MAX_ENTRIES + 1000, "no byte is lost past the cap");
    }

    #[test]
    fn cursors_that_no_read_could_give_are_refused() {
        let (log, _) = sample();
        for bad in ["9.0.0", "0.99.0", "8.0.0", "x", "1.2", "1.2.3.4", ""] {
            let ok = bad.parse::<Cursor>().map(|c| log.contains(c));
            assert_ne!(ok, Ok(true), "{bad}");
        }
        assert!(log.contains(Cursor::default()));
    }
}
