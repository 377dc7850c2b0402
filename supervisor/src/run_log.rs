//! The ordered log of one run's events, read by any number of followers at their own pace.
//!
//! Positions: the log starts at 0; an event takes 1, output takes its byte count
//! ([`Event::size`]). A follower is at a position, and the position after an event is that
//! event's sequence number, so a client that had everything up to `seq` resumes by following
//! from `seq`: it gets exactly what came after, whatever the chunking was.
//!
//! Memory: output of one stream that follows output of the same stream grows the last entry (up
//! to [`MERGE_BYTES`]), so a program writing a byte at a time costs one entry per 64 KiB, not
//! one per write; positions do not change when entries merge. The output itself is bounded by
//! the run's output cap, and the entries by [`MAX_ENTRIES`]: past that [`RunLog::push`] says
//! so, and the engine ends the run as `output_limit`.
//!
//! Backpressure: the producer waits ([`RunLog::room`]) while the slowest follower is more than
//! a window behind, so a slow client slows the program down as before; with no follower (a
//! client that dropped and may come back), output is kept up to the run's output cap.
use bytes::{Bytes, BytesMut};
use onpyrunner_protocol::{Event, OutputChunk, OutputStream, RunState};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// Output entries grow up to this size by merging.
pub const MERGE_BYTES: usize = 64 * 1024;
/// Entries a log may hold (a program alternating stdout and stderr a byte at a time makes one
/// entry per byte).
pub const MAX_ENTRIES: usize = 256 * 1024;
/// Largest piece of output one read returns.
pub const MAX_READ_BYTES: usize = 64 * 1024;

enum Item {
    Event(Event),
    Output {
        stream: OutputStream,
        data: BytesMut,
    },
}

struct Entry {
    start: u64,
    item: Item,
}

impl Entry {
    fn end(&self) -> u64 {
        self.start
            + match &self.item {
                Item::Event(e) => e.size(),
                Item::Output { data, .. } => data.len() as u64,
            }
    }
}

#[derive(Default)]
struct Data {
    entries: Vec<Entry>,
    end: u64,
    /// The summary is in: nothing more will come.
    closed: bool,
    /// The last state event's state.
    state: Option<RunState>,
    /// Where each follower is, for backpressure.
    followers: HashMap<u64, u64>,
    next_follower: u64,
}

/// Where a reader of one stream's output is (see [`RunLog::output_piece`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamCursor {
    entry: usize,
    within: usize,
}

/// The log is full (see [`MAX_ENTRIES`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the run's output was written in more than {MAX_ENTRIES} pieces")]
pub struct LogFull;

/// One run's log. Cheap to clone; every clone is the same log.
#[derive(Clone)]
pub struct RunLog {
    inner: Arc<Shared>,
}

struct Shared {
    data: Mutex<Data>,
    /// Bumped when something is appended.
    appended: watch::Sender<()>,
    /// Bumped when a follower moves or leaves.
    progressed: watch::Sender<()>,
}

impl Default for RunLog {
    fn default() -> Self {
        RunLog {
            inner: Arc::new(Shared {
                data: Mutex::new(Data::default()),
                appended: watch::channel(()).0,
                progressed: watch::channel(()).0,
            }),
        }
    }
}

impl RunLog {
    fn lock(&self) -> std::sync::MutexGuard<'_, Data> {
        self.inner.data.lock().expect("run log lock")
    }

    /// Append an event. A `Summary` closes the log.
    pub fn push(&self, event: Event) -> Result<(), LogFull> {
        {
            let mut data = self.lock();
            let d = &mut *data;
            if d.closed {
                return Ok(());
            }
            let start = d.end;
            match event {
                Event::Output(chunk) => {
                    if chunk.data.is_empty() {
                        return Ok(());
                    }
                    d.end += chunk.data.len() as u64;
                    let mut merged = false;
                    if let Some(Entry {
                        item: Item::Output { stream, data },
                        ..
                    }) = d.entries.last_mut()
                    {
                        if *stream == chunk.stream && data.len() + chunk.data.len() <= MERGE_BYTES {
                            data.extend_from_slice(&chunk.data);
                            merged = true;
                        }
                    }
                    if !merged {
                        if d.entries.len() >= MAX_ENTRIES {
                            d.end = start;
                            return Err(LogFull);
                        }
                        d.entries.push(Entry {
                            start,
                            item: Item::Output {
                                stream: chunk.stream,
                                data: BytesMut::from(&chunk.data[..]),
                            },
                        });
                    }
                }
                event => {
                    d.closed = matches!(event, Event::Summary(_));
                    if let Event::State { state, .. } = event {
                        d.state = Some(state);
                    }
                    d.end += 1;
                    d.entries.push(Entry {
                        start,
                        item: Item::Event(event),
                    });
                }
            }
        }
        self.inner.appended.send_replace(());
        Ok(())
    }

    /// Give back the room the log grew into beyond what it holds.
    pub fn shrink(&self) {
        let mut data = self.lock();
        data.entries.shrink_to_fit();
        data.followers.shrink_to_fit();
    }

    /// The position after the last event.
    pub fn end(&self) -> u64 {
        self.lock().end
    }

    /// The run's state as its log says (READY before the first event).
    pub fn state(&self) -> RunState {
        self.lock().state.unwrap_or(RunState::Ready)
    }

    /// Whether the summary is in.
    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Output bytes kept, both streams.
    pub fn output_bytes(&self) -> u64 {
        let data = self.lock();
        data.entries
            .iter()
            .map(|e| match &e.item {
                Item::Output { data, .. } => data.len() as u64,
                Item::Event(_) => 0,
            })
            .sum()
    }

    /// The event at `pos` and the position after it, as the log is now. Output is returned from
    /// `pos` on, at most [`MAX_READ_BYTES`].
    pub fn read(&self, pos: u64) -> Option<(Event, u64)> {
        let data = self.lock();
        read_at(&data.entries, pos, false, data.closed)
    }

    /// All output of `stream` so far, in order.
    pub fn output(&self, stream: OutputStream) -> Vec<u8> {
        let data = self.lock();
        let mut out = Vec::new();
        for entry in &data.entries {
            if let Item::Output { stream: s, data } = &entry.item {
                if *s == stream {
                    out.extend_from_slice(data);
                }
            }
        }
        out
    }

    /// Up to [`MAX_READ_BYTES`] of `stream`'s output from `at` on (start from the default),
    /// gathered across entries, and where to go on from; `None` at its end, as the log is now.
    /// Lets a reader render one stream a piece at a time instead of copying all of it at once,
    /// in time linear in the log however the output was chunked.
    pub fn output_piece(
        &self,
        stream: OutputStream,
        at: StreamCursor,
    ) -> Option<(Bytes, StreamCursor)> {
        let data = self.lock();
        let mut out = Vec::new();
        let mut cursor = at;
        while let Some(entry) = data.entries.get(cursor.entry) {
            match &entry.item {
                Item::Output { stream: s, data } if *s == stream => {
                    let take = (MAX_READ_BYTES - out.len()).min(data.len() - cursor.within);
                    out.extend_from_slice(&data[cursor.within..cursor.within + take]);
                    cursor.within += take;
                    if cursor.within == data.len() {
                        cursor = StreamCursor {
                            entry: cursor.entry + 1,
                            within: 0,
                        };
                    }
                    if out.len() == MAX_READ_BYTES {
                        break;
                    }
                }
                _ => {
                    cursor = StreamCursor {
                        entry: cursor.entry + 1,
                        within: 0,
                    }
                }
            }
        }
        (!out.is_empty()).then(|| (Bytes::from(out), cursor))
    }

    /// The last `Queued` position while the run is still READY.
    pub fn queue_position(&self) -> Option<usize> {
        let data = self.lock();
        if data.state.is_some_and(|s| s != RunState::Ready) {
            return None;
        }
        data.entries.iter().rev().find_map(|e| match &e.item {
            Item::Event(Event::Queued { position }) => Some(*position),
            _ => None,
        })
    }

    /// The summary, once it is in.
    pub fn summary(&self) -> Option<onpyrunner_protocol::Summary> {
        let data = self.lock();
        match data.entries.last().map(|e| &e.item) {
            Some(Item::Event(Event::Summary(summary))) => Some(summary.clone()),
            _ => None,
        }
    }

    /// Wait until the summary is in.
    pub async fn closed(&self) {
        let mut appended = self.inner.appended.subscribe();
        loop {
            appended.borrow_and_update();
            if self.is_closed() || appended.changed().await.is_err() {
                return;
            }
        }
    }

    /// Follow the log from `pos` (0 for the start), setting the producer's pace (see
    /// [`RunLog::room`]). `None` when `pos` is past the end.
    pub fn follow(&self, pos: u64) -> Option<Follower> {
        let mut follower = self.watch(pos)?;
        follower.pacing = true;
        self.lock().followers.insert(follower.id, pos);
        self.inner.progressed.send_replace(());
        Some(follower)
    }

    /// Follow the log from `pos` without setting the producer's pace: a reader of a job, which
    /// runs at full speed whoever watches it. `None` when `pos` is past the end.
    pub fn watch(&self, pos: u64) -> Option<Follower> {
        let mut data = self.lock();
        if pos > data.end {
            return None;
        }
        let id = data.next_follower;
        data.next_follower += 1;
        drop(data);
        Some(Follower {
            log: self.clone(),
            id,
            pos,
            pacing: false,
            text: false,
            appended: self.inner.appended.subscribe(),
        })
    }

    /// Wait until the slowest follower is at most `window` behind the end (at once when there
    /// is none).
    pub async fn room(&self, window: u64) {
        let mut progressed = self.inner.progressed.subscribe();
        loop {
            progressed.borrow_and_update();
            {
                let data = self.lock();
                let slowest = data.followers.values().min().copied();
                match slowest {
                    None => return,
                    Some(pos) if data.end.saturating_sub(pos) <= window => return,
                    Some(_) => {}
                }
            }
            if progressed.changed().await.is_err() {
                return;
            }
        }
    }

    /// How many followers there are.
    pub fn followers(&self) -> usize {
        self.lock().followers.len()
    }
}

/// The event at `pos`. With `text`, output ends on a character boundary wherever the rest of
/// the character is still to come (later in the same entry, or not written yet), so text
/// renderings never replace a character split between two writes.
fn read_at(entries: &[Entry], pos: u64, text: bool, closed: bool) -> Option<(Event, u64)> {
    let index = entries.partition_point(|e| e.end() <= pos);
    let entry = entries.get(index)?;
    match &entry.item {
        Item::Event(event) => Some((event.clone(), entry.end())),
        Item::Output { stream, data } => {
            let from = (pos.saturating_sub(entry.start)) as usize;
            let mut to = data.len().min(from + MAX_READ_BYTES);
            let more_to_come = to < data.len() || (index + 1 == entries.len() && !closed);
            if text && more_to_come {
                to = from + complete_prefix(&data[from..to]);
                if to == from {
                    return None; // only the start of a character so far
                }
            }
            let chunk = OutputChunk {
                stream: *stream,
                data: Bytes::copy_from_slice(&data[from..to]),
            };
            Some((Event::Output(chunk), entry.start + to as u64))
        }
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

/// A reader of a run's log from some position on. While it exists the producer keeps within a
/// window of it (see [`RunLog::room`]).
pub struct Follower {
    log: RunLog,
    id: u64,
    pos: u64,
    /// Whether the producer keeps within a window of this follower.
    pacing: bool,
    /// Whether output ends on character boundaries (see `read_at`).
    text: bool,
    appended: watch::Receiver<()>,
}

impl Follower {
    /// The position after the last event returned: what a client that had all of them resumes
    /// from.
    pub fn seq(&self) -> u64 {
        self.pos
    }

    /// From now on, output ends on UTF-8 character boundaries wherever the rest of a character
    /// is still to come, for renderings as text (SSE, polling).
    pub fn as_text(mut self) -> Self {
        self.text = true;
        self
    }

    /// The next event and the position after it, if there is one already.
    pub fn try_next(&mut self) -> Option<(Event, u64)> {
        let read = {
            let data = self.log.lock();
            read_at(&data.entries, self.pos, self.text, data.closed)
        };
        let (event, after) = read?;
        self.pos = after;
        if self.pacing {
            self.log.lock().followers.insert(self.id, after);
            self.log.inner.progressed.send_replace(());
        }
        Some((event, after))
    }

    /// The next event and the position after it; waits for one. `None` after the summary.
    pub async fn next(&mut self) -> Option<(Event, u64)> {
        loop {
            self.appended.borrow_and_update();
            if let Some(read) = self.try_next() {
                return Some(read);
            }
            if self.log.is_closed() && self.try_next().is_none() {
                return None;
            }
            if self.appended.changed().await.is_err() {
                return None;
            }
        }
    }

    /// The next event if there is one already, without waiting.
    pub fn try_recv(&mut self) -> Option<Event> {
        self.try_next().map(|(event, _)| event)
    }

    /// The next event; `None` after the summary.
    pub async fn recv(&mut self) -> Option<Event> {
        self.next().await.map(|(event, _)| event)
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        if self.pacing {
            self.log.lock().followers.remove(&self.id);
            self.log.inner.progressed.send_replace(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use onpyrunner_protocol::{Reason, Stage, Summary, Usage};

    fn out(stream: OutputStream, data: &'static [u8]) -> Event {
        Event::Output(OutputChunk {
            stream,
            data: Bytes::from_static(data),
        })
    }

    fn state(state: RunState) -> Event {
        Event::State {
            state,
            at_unix_ms: 1,
        }
    }

    fn summary() -> Event {
        Event::Summary(Summary::new(Reason::Exited, Usage::new(Stage::Run)))
    }

    /// Everything a follower from `pos` gets, output joined per stream and in order.
    async fn drain(log: &RunLog, pos: u64) -> (Vec<Event>, Vec<u8>, Vec<u8>) {
        let mut f = log.follow(pos).unwrap();
        let (mut events, mut stdout, mut stderr) = (vec![], vec![], vec![]);
        while let Some(event) = f.recv().await {
            match event {
                Event::Output(c) if c.stream == OutputStream::Stdout => {
                    stdout.extend_from_slice(&c.data)
                }
                Event::Output(c) => stderr.extend_from_slice(&c.data),
                e => events.push(e),
            }
        }
        (events, stdout, stderr)
    }

    fn sample() -> RunLog {
        let log = RunLog::default();
        log.push(state(RunState::Ready)).unwrap();
        log.push(state(RunState::Running)).unwrap();
        log.push(out(OutputStream::Stdout, b"hi")).unwrap();
        log.push(out(OutputStream::Stdout, b"\n")).unwrap();
        log.push(out(OutputStream::Stderr, b"x")).unwrap();
        log.push(state(RunState::Finished)).unwrap();
        log.push(summary()).unwrap();
        log
    }

    #[tokio::test]
    async fn positions_are_those_of_the_protocol_doc() {
        // READY 1 | RUNNING 2 | "hi\n" ends at 5 | "x" at 6 | FINISHED 7 | summary 8
        let log = sample();
        assert_eq!(log.end(), 8);
        let mut f = log.follow(0).unwrap();
        let mut seqs = vec![];
        while let Some((_, seq)) = f.next().await {
            seqs.push(seq);
        }
        assert_eq!(
            seqs,
            [1, 2, 5, 6, 7, 8],
            "same-stream output merged into one entry"
        );
    }

    #[tokio::test]
    async fn following_from_any_position_gives_exactly_what_came_after() {
        let log = sample();
        let (_, all_out, all_err) = drain(&log, 0).await;
        for pos in 0..=log.end() {
            let (events, stdout, stderr) = drain(&log, pos).await;
            // The bytes after `pos` are the tail of the whole.
            let had_out = pos.clamp(2, 5) as usize - 2;
            assert_eq!(stdout, all_out[had_out..], "from {pos}");
            let had_err = pos.clamp(5, 6) as usize - 5;
            assert_eq!(stderr, all_err[had_err..], "from {pos}");
            assert_eq!(events.last(), (pos < 8).then(summary).as_ref());
        }
        assert!(log.follow(9).is_none(), "past the end");
    }

    #[tokio::test]
    async fn a_follower_waits_for_what_comes_next() {
        let log = RunLog::default();
        let mut f = log.follow(0).unwrap();
        let writer = log.clone();
        let task = tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            writer.push(out(OutputStream::Stdout, b"late")).unwrap();
            writer.push(summary()).unwrap();
        });
        let (event, seq) = f.next().await.unwrap();
        assert_eq!(event, out(OutputStream::Stdout, b"late"));
        assert_eq!(seq, 4);
        assert_eq!(f.recv().await, Some(summary()));
        assert_eq!(f.recv().await, None, "nothing after the summary");
        task.await.unwrap();
    }

    #[tokio::test]
    async fn the_producer_waits_for_the_slowest_follower_only_while_it_follows() {
        let log = RunLog::default();
        log.push(out(OutputStream::Stdout, &[b'x'; 1000])).unwrap();
        // Nobody follows: room at once.
        log.room(10).await;
        let mut f = log.follow(0).unwrap();
        let waiting = tokio::time::timeout(std::time::Duration::from_millis(50), log.room(10));
        assert!(waiting.await.is_err(), "1000 bytes behind a window of 10");
        f.next().await.unwrap();
        log.room(10).await;
        log.push(out(OutputStream::Stdout, &[b'x'; 1000])).unwrap();
        drop(f);
        log.room(10).await;
    }

    #[tokio::test]
    async fn text_reads_hold_back_a_character_split_between_writes() {
        let log = RunLog::default();
        let mut f = log.watch(0).unwrap().as_text();
        log.push(out(OutputStream::Stdout, b"d\xc3")).unwrap();
        let (event, seq) = f.try_next().unwrap();
        assert_eq!(
            event,
            out(OutputStream::Stdout, b"d"),
            "the lone lead byte waits"
        );
        assert_eq!(seq, 1);
        assert!(f.try_next().is_none());
        log.push(out(OutputStream::Stdout, b"\xa9j\xc3")).unwrap();
        assert_eq!(
            f.try_next().unwrap(),
            (out(OutputStream::Stdout, b"\xc3\xa9j"), 4)
        );
        // The end of the run: what is held back is given, to be replaced.
        log.push(summary()).unwrap();
        assert_eq!(
            f.try_next().unwrap(),
            (out(OutputStream::Stdout, b"\xc3"), 5)
        );
        assert_eq!(f.try_next().unwrap(), (summary(), 6));
        assert_eq!(log.output(OutputStream::Stdout), b"d\xc3\xa9j\xc3");
        // A watcher never holds the producer back.
        log.room(0).await;
    }

    #[test]
    fn text_pieces_of_a_long_entry_end_on_character_boundaries() {
        let log = RunLog::default();
        let text = "é".repeat(MERGE_BYTES / 2);
        for piece in text.as_bytes().chunks(1000) {
            log.push(Event::Output(OutputChunk {
                stream: OutputStream::Stdout,
                data: Bytes::copy_from_slice(piece),
            }))
            .unwrap();
        }
        log.push(summary()).unwrap();
        let mut f = log.watch(0).unwrap().as_text();
        let mut joined = String::new();
        while let Some((Event::Output(c), _)) = f.try_next() {
            joined.push_str(std::str::from_utf8(&c.data).expect("whole characters"));
        }
        assert_eq!(joined, text);
    }

    #[test]
    fn one_streams_output_comes_in_pieces_across_entries_in_linear_time() {
        let log = RunLog::default();
        for i in 0..(2 * MERGE_BYTES) {
            let (stream, byte): (OutputStream, &'static [u8]) = if i % 2 == 0 {
                (OutputStream::Stdout, b"o")
            } else {
                (OutputStream::Stderr, b"e")
            };
            log.push(out(stream, byte)).unwrap();
        }
        let (mut cursor, mut pieces, mut bytes) = (StreamCursor::default(), 0, 0);
        while let Some((piece, next)) = log.output_piece(OutputStream::Stdout, cursor) {
            assert!(piece.iter().all(|&b| b == b'o'));
            pieces += 1;
            bytes += piece.len();
            cursor = next;
        }
        assert_eq!(bytes, MERGE_BYTES, "every stdout byte once");
        assert_eq!(
            pieces, 1,
            "64 Ki one-byte entries come as one piece, not 64 Ki reads"
        );
    }

    #[test]
    fn complete_prefix_stops_before_an_unfinished_character() {
        assert_eq!(complete_prefix(b"abc"), 3);
        assert_eq!(complete_prefix(b"ab\xc3"), 2);
        assert_eq!(complete_prefix(b"ab\xe2\x82"), 2);
        assert_eq!(complete_prefix(b"ab\xe2\x82\xac"), 5);
        assert_eq!(complete_prefix(b"\xf0\x9f\x98"), 0);
        assert_eq!(
            complete_prefix(b"\xff"),
            1,
            "invalid bytes count as complete"
        );
    }

    #[test]
    fn byte_at_a_time_output_costs_one_entry_per_merge_size() {
        let log = RunLog::default();
        for _ in 0..(3 * MERGE_BYTES) {
            log.push(out(OutputStream::Stdout, b"y")).unwrap();
        }
        assert_eq!(log.lock().entries.len(), 3);
        assert_eq!(log.output_bytes(), 3 * MERGE_BYTES as u64);
    }

    #[test]
    fn alternating_streams_fill_the_log_and_say_so() {
        let log = RunLog::default();
        let mut full = None;
        for i in 0..=MAX_ENTRIES {
            let stream = if i % 2 == 0 {
                OutputStream::Stdout
            } else {
                OutputStream::Stderr
            };
            if let Err(e) = log.push(out(stream, b"z")) {
                full = Some((i, e));
                break;
            }
        }
        assert_eq!(full, Some((MAX_ENTRIES, LogFull)));
        assert_eq!(
            log.end(),
            MAX_ENTRIES as u64,
            "the refused byte is not counted"
        );
        // The summary still goes in.
        log.push(summary()).unwrap();
        assert!(log.is_closed());
    }
}
