//! API tokens: the file `serve --tokens FILE` reads, and finding the token a request presents.
//!
//! ```toml
//! # Whether the reads (languages, the OpenAPI document, /healthz, /metrics) need a token too.
//! require_for_reads = false
//!
//! [[token]]
//! name = "ci"                    # the client's name: runs are counted as "token:ci"
//! secret = "3f1c...e9"           # or secret_sha256 = "<64 hex digits>", the secret's digest
//! max_in_flight = 32             # runs waiting or running at once (--max-runs-per-client)
//! max_running = 4                # runs executing at once
//! runs_per_minute = 600          # run-starting requests (--runs-per-minute)
//! runs_burst = 100               # of which at once (--runs-burst)
//! max_websockets = 32            # WebSockets open at once (--max-websockets-per-client)
//! raise_limits = true            # may ask for limits above the language's defaults
//! ```
//!
//! A secret is kept only as its SHA-256 digest, and a presented token is hashed and compared
//! with every digest in constant time (`subtle`), so neither the memory of the process nor the
//! time an answer takes tells anything about the secrets. Secrets are 16 to 256 characters of
//! `A-Z a-z 0-9 - . _ ~ +`: safe in a header, in a WebSocket subprotocol and in a URL fragment
//! (`openssl rand -hex 32` makes one).
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::path::Path;
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// Shortest and longest secret, in characters.
pub const MIN_SECRET: usize = 16;
pub const MAX_SECRET: usize = 256;
/// Longest token name.
pub const MAX_NAME: usize = 64;

/// One token: who presents it, and what they may take.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    /// Names the client (`token:<name>`); unique in the file.
    pub name: String,
    digest: [u8; 32],
    pub quotas: TokenQuotas,
}

/// Without the digest: an unsalted digest of a weak secret can be guessed offline.
impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("name", &self.name)
            .field("quotas", &self.quotas)
            .finish_non_exhaustive()
    }
}

/// What a token's client may take; `None` is the server's default for every client.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenQuotas {
    pub max_in_flight: Option<usize>,
    pub max_running: Option<usize>,
    pub runs_per_minute: Option<u32>,
    pub runs_burst: Option<u32>,
    pub max_websockets: Option<usize>,
    /// Whether its runs may raise their limits above the language's defaults, up to the
    /// server's caps (as `--allow-raised-limits` lets every client).
    pub raise_limits: bool,
}

/// The tokens a server accepts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tokens {
    tokens: Vec<Arc<Token>>,
    /// Whether the reads need a token too (the IDE's own files never do).
    pub require_for_reads: bool,
}

/// A tokens file that cannot be used; names the key at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokensError {
    // The causes are said in the message, not chained as sources (anyhow would say them twice).
    #[error("cannot read {path}: {error}")]
    Read { path: String, error: std::io::Error },
    #[error("{path}: {error}")]
    Syntax {
        path: String,
        error: Box<toml::de::Error>,
    },
    #[error("{key}: {message}")]
    Invalid { key: String, message: String },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    require_for_reads: bool,
    #[serde(default)]
    token: Vec<Entry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    name: String,
    secret: Option<String>,
    secret_sha256: Option<String>,
    // The quotas, as in `TokenQuotas` (serde cannot deny unknown fields through a flatten).
    max_in_flight: Option<usize>,
    max_running: Option<usize>,
    runs_per_minute: Option<u32>,
    runs_burst: Option<u32>,
    max_websockets: Option<usize>,
    #[serde(default)]
    raise_limits: bool,
}

impl Tokens {
    /// Read and check a tokens file.
    pub fn load(path: &Path) -> Result<Tokens, TokensError> {
        let text = std::fs::read_to_string(path).map_err(|error| TokensError::Read {
            path: path.display().to_string(),
            error,
        })?;
        Tokens::parse(&text).map_err(|e| match e {
            TokensError::Syntax { error, .. } => TokensError::Syntax {
                path: path.display().to_string(),
                error,
            },
            e => e,
        })
    }

    /// Check the text of a tokens file.
    pub fn parse(text: &str) -> Result<Tokens, TokensError> {
        let file: File = toml::from_str(text).map_err(|error| TokensError::Syntax {
            path: "the tokens file".into(),
            error: Box::new(error),
        })?;
        let mut tokens: Vec<Arc<Token>> = Vec::with_capacity(file.token.len());
        for (i, entry) in file.token.into_iter().enumerate() {
            let invalid = |field: &str, message: String| TokensError::Invalid {
                key: format!("token[{i}].{field}"),
                message,
            };
            let name = entry.name;
            if name.is_empty()
                || name.len() > MAX_NAME
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
            {
                return Err(invalid(
                    "name",
                    format!("{name:?}: 1 to {MAX_NAME} characters of A-Z a-z 0-9 - . _"),
                ));
            }
            if tokens.iter().any(|t| t.name == name) {
                return Err(invalid("name", format!("{name:?} is named twice")));
            }
            let digest = match (entry.secret, entry.secret_sha256) {
                (Some(secret), None) => {
                    if !valid_secret(&secret) {
                        return Err(invalid(
                            "secret",
                            format!(
                                "{MIN_SECRET} to {MAX_SECRET} characters of A-Z a-z 0-9 - . _ ~ + \
                                 (e.g. `openssl rand -hex 32`)"
                            ),
                        ));
                    }
                    digest(&secret)
                }
                (None, Some(hex)) => parse_digest(&hex).ok_or_else(|| {
                    invalid("secret_sha256", "64 hexadecimal digits expected".into())
                })?,
                _ => {
                    return Err(invalid(
                        "secret",
                        "give exactly one of secret and secret_sha256".into(),
                    ))
                }
            };
            if tokens.iter().any(|t| bool::from(t.digest.ct_eq(&digest))) {
                return Err(invalid(
                    "secret",
                    "the same secret as an earlier token".into(),
                ));
            }
            let q = TokenQuotas {
                max_in_flight: entry.max_in_flight,
                max_running: entry.max_running,
                runs_per_minute: entry.runs_per_minute,
                runs_burst: entry.runs_burst,
                max_websockets: entry.max_websockets,
                raise_limits: entry.raise_limits,
            };
            for (field, value) in [
                ("max_in_flight", q.max_in_flight),
                ("max_running", q.max_running),
                ("runs_per_minute", q.runs_per_minute.map(|n| n as usize)),
                ("runs_burst", q.runs_burst.map(|n| n as usize)),
                ("max_websockets", q.max_websockets),
            ] {
                if value == Some(0) {
                    return Err(invalid(field, "must be at least 1".into()));
                }
            }
            tokens.push(Arc::new(Token {
                name,
                digest,
                quotas: q,
            }));
        }
        Ok(Tokens {
            tokens,
            require_for_reads: file.require_for_reads,
        })
    }

    /// The token whose secret is `presented`. Every digest is compared, in constant time, so
    /// the time taken does not depend on which token (if any) matches, nor where.
    pub fn find(&self, presented: &str) -> Option<Arc<Token>> {
        // No secret is that long (the bound is public): not worth hashing.
        if presented.len() > MAX_SECRET {
            return None;
        }
        let wanted = digest(presented);
        let mut found = None;
        for token in &self.tokens {
            if bool::from(token.digest.ct_eq(&wanted)) {
                found = Some(token.clone());
            }
        }
        found
    }

    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }
}

/// Whether `secret` has the length and characters a secret must have.
pub fn valid_secret(secret: &str) -> bool {
    (MIN_SECRET..=MAX_SECRET).contains(&secret.len())
        && secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+".contains(&b))
}

fn digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

fn parse_digest(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.as_bytes();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in hex.chunks(2).enumerate() {
        let text = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(text, 16).ok()?;
    }
    Some(out)
}

/// Where a request's token was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presented<'a> {
    /// No token in any of the accepted forms.
    None,
    /// A token (maybe not a valid one).
    Token(&'a str),
    /// An `Authorization` header of another scheme (`Basic ...`): never valid.
    Malformed,
}

/// The WebSocket subprotocol a browser offers to say it speaks our protocol; the server
/// answers with it when a client offers it.
pub const WS_PROTOCOL: &str = "onpyrunner";
/// The prefix of the subprotocol that carries a token: `onpyrunner.token.<secret>` (browsers
/// cannot set headers on a WebSocket, but they can offer subprotocols).
pub const WS_TOKEN_PREFIX: &str = "onpyrunner.token.";

/// The token a request presents, in the first of these forms it has:
/// - `Authorization: Bearer <t>` (RFC 6750; the scheme in any case);
/// - `Authorization: <t>`, without a scheme (as Piston's clients send it);
/// - `X-Auth-Token: <t>`, then `X-Auth-User: <t>` (Judge0's authentication and authorization
///   headers: one token of ours answers both);
/// - a WebSocket subprotocol `onpyrunner.token.<t>` in `Sec-WebSocket-Protocol`.
///
/// A query parameter (`?token=`, which Judge0 also takes) is not accepted: URLs end up in logs
/// and browser histories.
pub fn presented(headers: &warp::http::HeaderMap) -> Presented<'_> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(value) = headers.get("authorization") {
        let Ok(value) = value.to_str() else {
            return Presented::Malformed;
        };
        let value = value.trim();
        return match value.split_once(' ') {
            Some((scheme, t)) if scheme.eq_ignore_ascii_case("bearer") => {
                Presented::Token(t.trim())
            }
            Some(_) => Presented::Malformed,
            None => Presented::Token(value),
        };
    }
    if let Some(t) = text("x-auth-token").or_else(|| text("x-auth-user")) {
        return Presented::Token(t.trim());
    }
    let offered = headers
        .get_all("sec-websocket-protocol")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim);
    for protocol in offered {
        if let Some(t) = protocol.strip_prefix(WS_TOKEN_PREFIX) {
            return Presented::Token(t);
        }
    }
    Presented::None
}

#[cfg(test)]
mod tests {
    use super::*;
    use warp::http::HeaderMap;

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbb-._~+";

    fn file() -> String {
        format!(
            r#"
            require_for_reads = true
            [[token]]
            name = "alice"
            secret = "{A}"
            max_in_flight = 3
            raise_limits = true
            [[token]]
            name = "bob"
            secret_sha256 = "{}"
            "#,
            hex(&digest(B))
        )
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn a_file_gives_its_tokens_found_by_secret_or_by_digest() {
        let tokens = Tokens::parse(&file()).unwrap();
        assert!(tokens.require_for_reads);
        assert_eq!(tokens.len(), 2);
        let alice = tokens.find(A).unwrap();
        assert_eq!(alice.name, "alice");
        assert_eq!(alice.quotas.max_in_flight, Some(3));
        assert!(alice.quotas.raise_limits);
        let bob = tokens.find(B).unwrap();
        assert_eq!((bob.name.as_str(), bob.quotas.raise_limits), ("bob", false));
        assert!(tokens.find("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaab").is_none());
        assert!(tokens.find("").is_none());
        assert!(
            tokens.find(&hex(&digest(B))).is_none(),
            "a digest is no secret"
        );
        let empty = Tokens::parse("").unwrap();
        assert!(empty.is_empty() && !empty.require_for_reads);
    }

    #[test]
    fn a_bad_file_is_refused_naming_the_key() {
        let cases = [
            (format!("[[token]]\nname = \"a b\"\nsecret = \"{A}\""), "token[0].name"),
            (
                format!("[[token]]\nname = \"a\"\nsecret = \"{A}\"\n[[token]]\nname = \"a\"\nsecret = \"{B}\""),
                "token[1].name",
            ),
            (
                format!("[[token]]\nname = \"a\"\nsecret = \"{A}\"\n[[token]]\nname = \"b\"\nsecret = \"{A}\""),
                "token[1].secret",
            ),
            ("[[token]]\nname = \"a\"\nsecret = \"short\"".into(), "token[0].secret"),
            ("[[token]]\nname = \"a\"".into(), "token[0].secret"),
            (
                format!("[[token]]\nname = \"a\"\nsecret = \"{A}\"\nsecret_sha256 = \"{}\"", "0".repeat(64)),
                "token[0].secret",
            ),
            ("[[token]]\nname = \"a\"\nsecret_sha256 = \"xyz\"".into(), "token[0].secret_sha256"),
            (format!("[[token]]\nname = \"a\"\nsecret = \"{A}\"\nmax_running = 0"), "token[0].max_running"),
        ];
        for (text, key) in cases {
            match Tokens::parse(&text) {
                Err(TokensError::Invalid { key: k, .. }) => assert_eq!(k, key, "{text}"),
                other => panic!("{text}: {other:?}"),
            }
        }
        for text in [
            format!("[[token]]\nname = \"a\"\nsecret = \"{A}\"\nmax_runing = 1"),
            "require_for_read = true".to_string(),
        ] {
            let err = Tokens::parse(&text).unwrap_err();
            assert!(matches!(err, TokensError::Syntax { .. }), "{text}: {err}");
            assert!(err.to_string().contains("unknown field"), "{err}");
        }
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append(*name, value.parse().unwrap());
        }
        h
    }

    #[test]
    fn a_token_is_taken_from_the_first_form_present() {
        let cases: [(&[(&str, &str)], Presented); 11] = [
            (&[("authorization", "Bearer abc")], Presented::Token("abc")),
            (
                &[("authorization", "bearer  abc ")],
                Presented::Token("abc"),
            ),
            (&[("authorization", "abc")], Presented::Token("abc")),
            (&[("authorization", "Basic YTpi")], Presented::Malformed),
            (&[("x-auth-token", "abc")], Presented::Token("abc")),
            (&[("x-auth-user", "abc")], Presented::Token("abc")),
            (
                &[("x-auth-user", "two"), ("x-auth-token", "one")],
                Presented::Token("one"),
            ),
            (
                &[("authorization", "Bearer one"), ("x-auth-token", "two")],
                Presented::Token("one"),
            ),
            (
                &[("sec-websocket-protocol", "onpyrunner, onpyrunner.token.abc")],
                Presented::Token("abc"),
            ),
            (
                &[
                    ("sec-websocket-protocol", "onpyrunner"),
                    ("sec-websocket-protocol", "onpyrunner.token.abc"),
                ],
                Presented::Token("abc"),
            ),
            (&[("sec-websocket-protocol", "onpyrunner")], Presented::None),
        ];
        for (pairs, want) in cases {
            let h = headers(pairs);
            assert_eq!(presented(&h), want, "{pairs:?}");
        }
        assert_eq!(presented(&HeaderMap::new()), Presented::None);
    }
}
