//! A run's output in a JSON object, produced a piece at a time from the run's log: what comes
//! before, `"stdout":"…","stderr":"…"`, and what comes after. A job's view and a sync run's
//! answer are both rendered so.
//!
//! A piece is at most [`ESCAPE_BYTES`] of output, escaped (six times that for control bytes),
//! and the next is made only when the connection has taken the last: a client that never reads
//! its answer costs the server about one piece and hyper's write buffer, not its output copied
//! and escaped whole (a 1 MB output of control bytes was 6 MB for each unread answer).
use bytes::Bytes;
use futures_util::Stream;
use onpyrunner_protocol::OutputStream;
use onpyrunner_supervisor::run_log::{complete_prefix, RunLog, StreamCursor};
use std::convert::Infallible;

/// Output escaped into one piece at most.
pub const ESCAPE_BYTES: usize = 16 * 1024;

/// `{` + `opening` (fields, without braces) + `,"stdout":"…","stderr":"…"` + `closing(log)` +
/// `}`: the output as the log has it when each part is reached. `opening` must not be empty.
pub fn stream(
    log: RunLog,
    opening: String,
    closing: impl FnOnce(&RunLog) -> String + Send + Sync + 'static,
) -> impl Stream<Item = Result<Bytes, Infallible>> + Send + Sync + 'static {
    enum Part<C> {
        Opening(String),
        /// One stream: where the log is read from, and output read but not yet escaped (the
        /// rest of a piece, and the start of a character cut at its end).
        Stream(OutputStream, StreamCursor, Vec<u8>, C),
        Closing(C),
        Done,
    }
    let start = Part::Opening(opening);
    futures_util::stream::unfold(
        (log, Some(start), Some(closing)),
        |(log, part, mut closing)| async move {
            let (text, next) = match part? {
                Part::Opening(opening) => (
                    format!("{{{opening},\"stdout\":\""),
                    Part::Stream(
                        OutputStream::Stdout,
                        StreamCursor::default(),
                        Vec::new(),
                        (),
                    ),
                ),
                Part::Stream(stream, cursor, mut held, ()) => {
                    let mut cursor = Some(cursor);
                    if held.len() < ESCAPE_BYTES {
                        match log.output_piece(stream, cursor.expect("set")) {
                            Some((piece, after)) => {
                                held.extend_from_slice(&piece);
                                cursor = Some(after);
                            }
                            None => cursor = None,
                        }
                    }
                    match cursor {
                        Some(cursor) => {
                            // At most a piece's worth, ending on a whole character (the
                            // start of one is kept for the next piece, which has the rest).
                            let cut = complete_prefix(&held[..held.len().min(ESCAPE_BYTES)]);
                            let rest = held.split_off(cut);
                            (escape(&held), Part::Stream(stream, cursor, rest, ()))
                        }
                        // The stream's end: what is held goes, a cut character replaced.
                        None => {
                            let mut text = escape(&held);
                            text.push('"');
                            match stream {
                                OutputStream::Stdout => {
                                    text.push_str(",\"stderr\":\"");
                                    let start = StreamCursor::default();
                                    let next =
                                        Part::Stream(OutputStream::Stderr, start, Vec::new(), ());
                                    (text, next)
                                }
                                OutputStream::Stderr => (text, Part::Closing(())),
                            }
                        }
                    }
                }
                Part::Closing(()) => {
                    let closing = closing.take().expect("closed once");
                    (format!("{}}}", closing(&log)), Part::Done)
                }
                Part::Done => return None,
            };
            Some((Ok(Bytes::from(text)), (log, Some(next), closing)))
        },
    )
}

/// Bytes as the inside of a JSON string, invalid UTF-8 replaced.
fn escape(bytes: &[u8]) -> String {
    let quoted =
        serde_json::to_string(&String::from_utf8_lossy(bytes)).expect("a string serializes");
    quoted[1..quoted.len() - 1].to_string()
}
