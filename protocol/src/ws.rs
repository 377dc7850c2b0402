//! The messages of the WebSocket protocol at `/api/v1/ws` (written down in docs/protocol.md).
//! Text frames carry these as JSON; binary frames carry output (server to client,
//! [`OutputChunk::frame`](crate::run::OutputChunk::frame)) or raw stdin (client to server).
use crate::run::{Event, RunBody, RunState, Summary, TestResult, Usage};
use serde::{Deserialize, Serialize};

/// A client's text message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMessage {
    Run(RunBody),
    Stdin {
        data: String,
    },
    Eof,
    Stop,
    /// Take back a run after a drop, from the position just after what was had.
    Resume {
        run: String,
        seq: u64,
    },
    /// A heartbeat the browser can send; answered by `Pong`.
    Ping,
}

/// A server's text message. Output goes in binary frames instead.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    State {
        run: String,
        seq: u64,
        state: RunState,
        at_unix_ms: u64,
    },
    Queued {
        run: String,
        seq: u64,
        position: usize,
    },
    /// The compile stage ended well (usage of the compile).
    Compiled {
        run: String,
        seq: u64,
        #[serde(flatten)]
        usage: Usage,
    },
    /// A test of a judged run ended.
    Test {
        run: String,
        seq: u64,
        #[serde(flatten)]
        test: TestResult,
    },
    Summary {
        run: String,
        seq: u64,
        #[serde(flatten)]
        summary: Summary,
    },
    /// The answer to `Resume`: what comes after `seq` follows.
    Resumed {
        run: String,
        seq: u64,
        state: RunState,
    },
    Pong,
    /// A message the server could not act on; nothing was started.
    Error(ErrorBody),
}

/// An error as clients get it, over REST (as the body) and the WebSocket alike.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
    /// The HTTP status the same error gets over REST.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<String>,
    /// Seconds to wait before trying again, where waiting helps (as REST's `Retry-After`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
}

impl ServerMessage {
    /// A run's event as a text message, with the position just after it; `None` for output,
    /// which goes in a binary frame.
    pub fn of_event(run: &str, seq: u64, event: Event) -> Option<Self> {
        let run = run.to_string();
        Some(match event {
            Event::State { state, at_unix_ms } => ServerMessage::State {
                run,
                seq,
                state,
                at_unix_ms,
            },
            Event::Queued { position } => ServerMessage::Queued { run, seq, position },
            Event::Compiled(usage) => ServerMessage::Compiled { run, seq, usage },
            Event::Test(test) => ServerMessage::Test { run, seq, test },
            Event::Summary(summary) => ServerMessage::Summary { run, seq, summary },
            Event::Output(_) => return None,
        })
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a server message serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::{Reason, Usage};
    use crate::Stage;

    #[test]
    fn client_messages_parse_and_unknown_fields_are_refused() {
        let run: ClientMessage =
            serde_json::from_str(r#"{"type":"run","language":"python","code":"print(1)"}"#)
                .unwrap();
        assert!(matches!(run, ClientMessage::Run(b) if b.language == "python"));
        let stdin: ClientMessage =
            serde_json::from_str(r#"{"type":"stdin","data":"x\n"}"#).unwrap();
        assert!(matches!(stdin, ClientMessage::Stdin { data } if data == "x\n"));
        assert_eq!(
            serde_json::from_str::<ClientMessage>(r#"{"type":"eof"}"#).unwrap(),
            ClientMessage::Eof
        );
        assert_eq!(
            serde_json::from_str::<ClientMessage>(r#"{"type":"resume","run":"ab","seq":7}"#)
                .unwrap(),
            ClientMessage::Resume {
                run: "ab".into(),
                seq: 7
            }
        );
        assert!(serde_json::from_str::<ClientMessage>(
            r#"{"type":"run","language":"python","code":"x","bogus":1}"#
        )
        .is_err());
        assert!(serde_json::from_str::<ClientMessage>(r#"{"type":"launch"}"#).is_err());
        assert!(serde_json::from_str::<ClientMessage>(r#"{"type":"resume","run":"ab"}"#).is_err());
    }

    #[test]
    fn server_messages_are_flat_json_with_their_type() {
        let summary = Summary::new(Reason::Exited, Usage::new(Stage::Run));
        let message = ServerMessage::of_event("r1", 8, Event::Summary(summary.clone())).unwrap();
        let json: serde_json::Value = serde_json::from_str(&message.to_json()).unwrap();
        assert_eq!(json["type"], "summary");
        assert_eq!(json["run"], "r1");
        assert_eq!(json["seq"], 8);
        assert_eq!(json["reason"], "exited");
        assert_eq!(json["stage"], "run");
        let back: ServerMessage = serde_json::from_value(json).unwrap();
        assert_eq!(back, message);
        let error = ServerMessage::Error(ErrorBody {
            error: "no".into(),
            status: Some(409),
            field: Some("type".into()),
            limit: None,
            retry_after: None,
        });
        assert_eq!(
            error.to_json(),
            r#"{"type":"error","error":"no","status":409,"field":"type"}"#
        );
        assert_eq!(ServerMessage::Pong.to_json(), r#"{"type":"pong"}"#);
    }
}
