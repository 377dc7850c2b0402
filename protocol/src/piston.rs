//! The messages of Piston v2's WebSocket, `/api/v2/connect` (engineer-man/piston, API 3.1.1,
//! `api/src/api/v2.js` and `api/src/job.js`), as its server sends them, and its close codes.
//! The server reads a client's messages as Piston does, field by field from any JSON (an
//! unknown `type` is ignored, a `data` without `stream: "stdin"` is closed with 4004), so
//! there is no strict client type here. docs/compat.md describes the exchange.
use serde::{Deserialize, Serialize};

/// A server's message (a text frame of JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// The run was accepted: the language and version it runs.
    Runtime { language: String, version: String },
    /// A stage starts.
    Stage { stage: PistonStage },
    /// Output of the current stage, as text (a character split across reads is sent whole).
    Data { stream: PistonStream, data: String },
    /// A stage ended: its exit code when it exited, the signal's name when it was killed.
    Exit {
        stage: PistonStage,
        code: Option<i32>,
        signal: Option<String>,
    },
    /// What went wrong; the connection is then closed with [`Close::ErrorNotified`].
    Error { message: String },
}

impl ServerMessage {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("messages always serialize")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PistonStage {
    Compile,
    Run,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PistonStream {
    Stdin,
    Stdout,
    Stderr,
}

/// Why the server closes the connection: Piston's codes and reasons.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Close {
    /// A second `init`.
    AlreadyInitialized,
    /// No `init` within [`INIT_TIMEOUT_MS`] of the connection opening.
    InitializationTimeout,
    /// After an `error` message.
    ErrorNotified,
    /// `data` or `signal` before `init`.
    NotInitialized,
    /// `data` whose `stream` is not `stdin`.
    CanOnlyWriteToStdin,
    /// A `signal` Piston does not know.
    InvalidSignal,
    /// The run ended (after its last `exit`).
    JobCompleted,
}

/// How long a connection may go without an `init`, as in Piston.
pub const INIT_TIMEOUT_MS: u64 = 1000;

impl Close {
    pub const ALL: [Close; 7] = [
        Close::AlreadyInitialized,
        Close::InitializationTimeout,
        Close::ErrorNotified,
        Close::NotInitialized,
        Close::CanOnlyWriteToStdin,
        Close::InvalidSignal,
        Close::JobCompleted,
    ];

    pub fn code(self) -> u16 {
        match self {
            Close::AlreadyInitialized => 4000,
            Close::InitializationTimeout => 4001,
            Close::ErrorNotified => 4002,
            Close::NotInitialized => 4003,
            Close::CanOnlyWriteToStdin => 4004,
            Close::InvalidSignal => 4005,
            Close::JobCompleted => 4999,
        }
    }

    /// Piston's words.
    pub fn reason(self) -> &'static str {
        match self {
            Close::AlreadyInitialized => "Already Initialized",
            Close::InitializationTimeout => "Initialization Timeout",
            Close::ErrorNotified => "Notified Error",
            Close::NotInitialized => "Not yet initialized",
            Close::CanOnlyWriteToStdin => "Can only write to stdin",
            Close::InvalidSignal => "Invalid signal",
            Close::JobCompleted => "Job Completed",
        }
    }

    pub fn of_code(code: u16) -> Option<Close> {
        Close::ALL.into_iter().find(|c| c.code() == code)
    }
}

/// Linux's signal names, as Piston knows them (`api/src/globals.js`): 1 to 31, then the
/// real-time ones, 34 (`SIGRTMIN`) to 64 (`SIGRTMAX`).
pub fn signal_name(n: i32) -> Option<String> {
    const NAMES: [&str; 31] = [
        "SIGHUP",
        "SIGINT",
        "SIGQUIT",
        "SIGILL",
        "SIGTRAP",
        "SIGABRT",
        "SIGBUS",
        "SIGFPE",
        "SIGKILL",
        "SIGUSR1",
        "SIGSEGV",
        "SIGUSR2",
        "SIGPIPE",
        "SIGALRM",
        "SIGTERM",
        "SIGSTKFLT",
        "SIGCHLD",
        "SIGCONT",
        "SIGSTOP",
        "SIGTSTP",
        "SIGTTIN",
        "SIGTTOU",
        "SIGURG",
        "SIGXCPU",
        "SIGXFSZ",
        "SIGVTALRM",
        "SIGPROF",
        "SIGWINCH",
        "SIGIO",
        "SIGPWR",
        "SIGSYS",
    ];
    match n {
        1..=31 => Some(NAMES[(n - 1) as usize].to_string()),
        34 => Some("SIGRTMIN".into()),
        35..=49 => Some(format!("SIGRTMIN+{}", n - 34)),
        50..=63 => Some(format!("SIGRTMAX-{}", 64 - n)),
        64 => Some("SIGRTMAX".into()),
        _ => None,
    }
}

/// The number of a signal Piston knows by that name.
pub fn signal_number(name: &str) -> Option<i32> {
    (1..=64).find(|&n| signal_name(n).as_deref() == Some(name))
}

/// One stream's output as `data` messages carry it: text, with a character whose bytes came
/// in two reads sent whole in the second (Piston decodes each read apart, so such a character
/// becomes two U+FFFD). Bytes that are not UTF-8 are U+FFFD.
#[derive(Debug, Default)]
pub struct OutputText {
    /// The start of a character whose end has not come yet: at most 3 bytes.
    partial: Vec<u8>,
}

impl OutputText {
    /// The text of what was held and `bytes`, holding back a character cut at the end.
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.partial.extend_from_slice(bytes);
        let cut = cut_char_len(&self.partial);
        let held = self.partial.split_off(self.partial.len() - cut);
        let text = String::from_utf8_lossy(&self.partial).into_owned();
        self.partial = held;
        text
    }

    /// What is held, at the stream's end (a cut character is U+FFFD).
    pub fn finish(&mut self) -> String {
        let text = String::from_utf8_lossy(&self.partial).into_owned();
        self.partial.clear();
        text
    }
}

/// How many bytes at the end of `bytes` begin a character that is not complete yet.
fn cut_char_len(bytes: &[u8]) -> usize {
    for back in 1..=bytes.len().min(3) {
        let byte = bytes[bytes.len() - back];
        if byte & 0xC0 != 0x80 {
            let needs = match byte {
                0xC2..=0xDF => 2,
                0xE0..=0xEF => 3,
                0xF0..=0xF4 => 4,
                _ => 1,
            };
            return if needs > back { back } else { 0 };
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_character_split_across_reads_is_sent_whole() {
        let text = "añ€😀 ok\n".as_bytes();
        for at in 0..=text.len() {
            for second in at..=text.len() {
                let mut out = OutputText::default();
                let mut got = out.push(&text[..at]);
                got += &out.push(&text[at..second]);
                got += &out.push(&text[second..]);
                got += &out.finish();
                assert_eq!(got, "añ€😀 ok\n", "cut at {at} and {second}");
            }
        }
        let mut out = OutputText::default();
        assert_eq!(out.push(b"\xff a \xe2\x82"), "\u{fffd} a ");
        assert_eq!(out.finish(), "\u{fffd}");
        assert_eq!(out.push(b"\x80\x80\x80"), "\u{fffd}\u{fffd}\u{fffd}");
    }

    #[test]
    fn messages_are_pistons_shapes() {
        let exit = ServerMessage::Exit {
            stage: PistonStage::Run,
            code: None,
            signal: Some("SIGKILL".into()),
        };
        assert_eq!(
            exit.to_json(),
            r#"{"type":"exit","stage":"run","code":null,"signal":"SIGKILL"}"#
        );
        let data = ServerMessage::Data {
            stream: PistonStream::Stdout,
            data: "hi\n".into(),
        };
        assert_eq!(
            data.to_json(),
            r#"{"type":"data","stream":"stdout","data":"hi\n"}"#
        );
        for message in [exit, data] {
            let back: ServerMessage = serde_json::from_str(&message.to_json()).unwrap();
            assert_eq!(back, message);
        }
    }

    #[test]
    fn signal_names_are_pistons_table() {
        assert_eq!(signal_name(9).as_deref(), Some("SIGKILL"));
        assert_eq!(signal_name(31).as_deref(), Some("SIGSYS"));
        assert_eq!(signal_name(32), None);
        assert_eq!(signal_name(33), None);
        assert_eq!(signal_name(35).as_deref(), Some("SIGRTMIN+1"));
        assert_eq!(signal_name(49).as_deref(), Some("SIGRTMIN+15"));
        assert_eq!(signal_name(50).as_deref(), Some("SIGRTMAX-14"));
        assert_eq!(signal_name(63).as_deref(), Some("SIGRTMAX-1"));
        assert_eq!(signal_name(64).as_deref(), Some("SIGRTMAX"));
        assert_eq!(signal_number("SIGTERM"), Some(15));
        assert_eq!(signal_number("SIGRTMAX-14"), Some(50));
        assert_eq!(signal_number("sigterm"), None);
        assert_eq!(signal_number("TERM"), None);
        for close in Close::ALL {
            assert_eq!(Close::of_code(close.code()), Some(close));
        }
    }
}
