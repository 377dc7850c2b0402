//! Who a request is from: a [`Caller`], resolved once per request from the TCP peer (or, from
//! a trusted proxy, `X-Forwarded-For`: see `proxies`) and the API token it presents (see
//! `tokens`).
//!
//! Without a tokens file the service is open and clients are told apart by address (an IPv6
//! client by its /64). With one, the routes that start or touch runs need a valid token, and
//! the client is the token's name, with the token's quotas; the reads stay open unless the file
//! says `require_for_reads = true`, and the IDE's own files are always open (the page must load
//! to ask for a token). A missing and a wrong token get the same 401, which says nothing about
//! which tokens exist.
use crate::error::ApiError;
use crate::listener::Peer;
use crate::proxies::{self, TrustedProxies};
use crate::tokens::{self, Presented, Token, TokenQuotas, Tokens};
use onpyrunner_supervisor::run::Client;
use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use warp::http::{HeaderMap, StatusCode};

/// What a route needs of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Nothing: the IDE's files.
    Open,
    /// A token only if the tokens file says `require_for_reads`: languages, the OpenAPI
    /// document, health and metrics.
    Read,
    /// A token when the server has a tokens file: the routes that read, stop or follow runs.
    Token,
    /// As `Token`, and the request counts against the caller's rate of starting runs.
    Run,
}

/// What tells clients apart, for the engine's per-client caps and the web layer's quotas.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ClientKey {
    /// The name of the token presented.
    Token(Arc<str>),
    /// The client's address (after trusted proxies): a v4 address or a v6 /64.
    Address(IpAddr),
}

impl ClientKey {
    pub fn address(addr: IpAddr) -> Self {
        ClientKey::Address(proxies::network(addr))
    }
}

impl fmt::Display for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientKey::Token(name) => write!(f, "token:{name}"),
            ClientKey::Address(IpAddr::V6(net)) => write!(f, "{net}/64"),
            ClientKey::Address(v4) => write!(f, "{v4}"),
        }
    }
}

/// Who sent a request.
#[derive(Debug, Clone, Default)]
pub struct Caller {
    /// `None` for a request that has neither a peer nor a token (the in-process test client):
    /// it is not counted against any client's quotas.
    pub key: Option<ClientKey>,
    /// The token presented, when the route needed one and it was valid.
    pub token: Option<Arc<Token>>,
}

impl Caller {
    /// The client as the engine counts it, with the token's quotas.
    pub fn client(&self) -> Option<Client> {
        let key = self.key.as_ref()?;
        let mut client = Client::new(key.to_string());
        if let Some(q) = self.quotas() {
            client.max_in_flight = q.max_in_flight;
            client.max_running = q.max_running;
        }
        Some(client)
    }

    /// The token's quotas, if the caller presented one.
    pub fn quotas(&self) -> Option<&TokenQuotas> {
        self.token.as_deref().map(|t| &t.quotas)
    }

    /// Whether this caller's runs may raise their limits above the language's defaults.
    pub fn raise_limits(&self) -> bool {
        self.quotas().is_some_and(|q| q.raise_limits)
    }
}

/// How callers are identified: the tokens (replaced whole when the file is reloaded) and the
/// trusted proxies.
#[derive(Debug, Default)]
pub struct Identity {
    tokens: RwLock<Option<Arc<Tokens>>>,
    proxies: TrustedProxies,
}

impl Identity {
    /// An open service: no tokens, no trusted proxies.
    pub fn open() -> Self {
        Identity::default()
    }

    pub fn with_tokens(self, tokens: Tokens) -> Self {
        self.replace_tokens(tokens);
        self
    }

    pub fn with_proxies(mut self, proxies: TrustedProxies) -> Self {
        self.proxies = proxies;
        self
    }

    /// The tokens now in force, if the server has a tokens file.
    pub fn tokens(&self) -> Option<Arc<Tokens>> {
        self.tokens.read().expect("tokens lock").clone()
    }

    /// Put a reloaded file in force; requests already admitted keep what they were given.
    pub fn replace_tokens(&self, tokens: Tokens) {
        *self.tokens.write().expect("tokens lock") = Some(Arc::new(tokens));
    }

    /// Reread the tokens file; on an error the tokens in force stay. The number of tokens.
    pub fn reload(&self, path: &std::path::Path) -> Result<usize, tokens::TokensError> {
        let tokens = Tokens::load(path)?;
        let n = tokens.len();
        self.replace_tokens(tokens);
        Ok(n)
    }

    /// The client's address: the peer's, or from a trusted proxy what `X-Forwarded-For` says.
    pub fn address(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let lines = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok());
        self.proxies
            .client_address(peer, lines.collect::<Vec<_>>().into_iter())
    }

    /// Who sent a request to a route that needs `access`, or the 401 that refuses it.
    pub fn identify(
        &self,
        access: Access,
        peer: Option<Peer>,
        headers: &HeaderMap,
    ) -> Result<Caller, ApiError> {
        let by_address = Caller {
            key: peer.map(|p| ClientKey::address(self.address(p.0.ip(), headers))),
            token: None,
        };
        let Some(tokens) = self.tokens() else {
            return Ok(by_address);
        };
        let needed = match access {
            Access::Open => false,
            Access::Read => tokens.require_for_reads,
            Access::Token | Access::Run => true,
        };
        if !needed {
            return Ok(by_address);
        }
        let token = match tokens::presented(headers) {
            Presented::Token(t) => tokens.find(t),
            Presented::None | Presented::Malformed => None,
        };
        let token = token.ok_or_else(unauthorized)?;
        Ok(Caller {
            key: Some(ClientKey::Token(token.name.as_str().into())),
            token: Some(token),
        })
    }
}

/// The one answer to a missing, malformed or unknown token.
pub fn unauthorized() -> ApiError {
    let mut err = ApiError::new(
        StatusCode::UNAUTHORIZED,
        "this server needs a valid API token: send `Authorization: Bearer <token>` \
         (WebSocket: see docs/protocol.md)",
    )
    .field("Authorization");
    err.authenticate = Some("Bearer realm=\"onpyrunner\"");
    err
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append(*name, value.parse().unwrap());
        }
        h
    }

    fn peer(s: &str) -> Option<Peer> {
        Some(Peer(s.parse().unwrap()))
    }

    #[test]
    fn without_tokens_clients_are_their_addresses_and_v6_ones_their_64() {
        let id = Identity::open();
        let none = headers(&[]);
        let c = id
            .identify(Access::Run, peer("198.51.100.7:5000"), &none)
            .unwrap();
        assert_eq!(c.client().unwrap().name, "198.51.100.7");
        let c = id
            .identify(Access::Run, peer("[2001:db8:1:2:3:4:5:6]:5000"), &none)
            .unwrap();
        assert_eq!(c.client().unwrap().name, "2001:db8:1:2::/64");
        let c = id.identify(Access::Run, None, &none).unwrap();
        assert!(c.client().is_none(), "the in-process test client is nobody");
        // A token is ignored by a server without tokens.
        let bearer = headers(&[("authorization", "Bearer whatever")]);
        let c = id
            .identify(Access::Run, peer("198.51.100.7:1"), &bearer)
            .unwrap();
        assert!(c.token.is_none());
    }

    #[test]
    fn with_tokens_a_run_needs_a_valid_one_and_the_client_is_its_name() {
        let tokens = Tokens::parse(&format!(
            "[[token]]\nname = \"ci\"\nsecret = \"{SECRET}\"\nmax_in_flight = 5\nmax_running = 2"
        ))
        .unwrap();
        let id = Identity::open().with_tokens(tokens);
        let from = peer("198.51.100.7:5000");
        for pairs in [
            &[][..],
            &[("authorization", "Bearer nope-nope-nope-nope")][..],
            &[("authorization", "Basic Y2k6c2VjcmV0")][..],
        ] {
            let err = id.identify(Access::Run, from, &headers(pairs)).unwrap_err();
            assert_eq!(err.status, StatusCode::UNAUTHORIZED, "{pairs:?}");
            assert_eq!(err.error, unauthorized().error, "one message for all");
        }
        let bearer = format!("Bearer {SECRET}");
        let c = id
            .identify(Access::Run, from, &headers(&[("authorization", &bearer)]))
            .unwrap();
        assert_eq!(
            c.client().unwrap(),
            Client {
                name: "token:ci".into(),
                max_in_flight: Some(5),
                max_running: Some(2),
            }
        );
        assert!(!c.raise_limits());
        // Reads and the IDE's files are open; the reads close with require_for_reads.
        assert!(id.identify(Access::Read, from, &headers(&[])).is_ok());
        assert!(id.identify(Access::Open, from, &headers(&[])).is_ok());
        id.replace_tokens(Tokens::parse("require_for_reads = true").unwrap());
        assert!(id.identify(Access::Read, from, &headers(&[])).is_err());
        assert!(id.identify(Access::Open, from, &headers(&[])).is_ok());
        assert!(
            id.identify(Access::Run, from, &headers(&[("authorization", &bearer)]))
                .is_err(),
            "a reloaded file without the token refuses it"
        );
    }

    #[test]
    fn forwarded_for_names_the_client_only_behind_a_trusted_proxy() {
        let id = Identity::open().with_proxies(TrustedProxies::parse(&["10.0.0.0/8"]).unwrap());
        let xff = headers(&[("x-forwarded-for", "203.0.113.9")]);
        let c = id.identify(Access::Run, peer("10.0.0.2:80"), &xff).unwrap();
        assert_eq!(c.client().unwrap().name, "203.0.113.9");
        let c = id
            .identify(Access::Run, peer("198.51.100.7:80"), &xff)
            .unwrap();
        assert_eq!(c.client().unwrap().name, "198.51.100.7", "spoofed: ignored");
    }
}
