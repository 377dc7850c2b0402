//! What keeps a browser from being used against the server: a page on another site can make
//! the user's browser send requests to a runner on their machine or network, and with DNS
//! rebinding it can even make those requests look same-origin.
//! - **Host**: every request must name a host the server answers to (default: the loopback
//!   names, plus the listen address; any, when it listens on every address). A rebinding page
//!   sends its own name, so it is refused.
//! - **Origin**: a request that carries an `Origin` must come from an allowed one (the same
//!   list as the WebSocket's, [`WsConfig::origin_allowed`]).
//! - **Content type**: the routes that start runs take `application/json` only, which a
//!   cross-site page cannot send without a CORS preflight that this server never grants.
use crate::error::ApiError;
use crate::ws_config::WsConfig;
use std::net::SocketAddr;
use std::sync::Arc;
use warp::http::StatusCode;
use warp::{Filter, Rejection};

/// The host names requests may carry in `Host`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hosts {
    /// Any name (a server that listens on every address and was given no names).
    Any,
    /// Only these (lowercase, without port).
    Only(Vec<String>),
}

impl Hosts {
    /// The loopback names, and the listen address's own; any name for an unspecified address.
    pub fn for_listen(addr: SocketAddr, extra: &[String]) -> Hosts {
        if addr.ip().is_unspecified() && extra.is_empty() {
            return Hosts::Any;
        }
        let mut names: Vec<String> = ["localhost", "127.0.0.1", "::1"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        names.push(addr.ip().to_string());
        names.extend(extra.iter().map(|s| s.to_ascii_lowercase()));
        names.dedup();
        Hosts::Only(names)
    }

    /// Whether a `Host` header value (`name`, `name:port`, `[v6]:port`) is allowed.
    pub fn allows(&self, host: &str) -> bool {
        let Hosts::Only(names) = self else {
            return true;
        };
        let host = host.trim().to_ascii_lowercase();
        let name = if let Some(v6) = host.strip_prefix('[') {
            v6.split(']').next().unwrap_or("")
        } else {
            host.rsplit_once(':').map_or(host.as_str(), |(name, port)| {
                if port.bytes().all(|b| b.is_ascii_digit()) {
                    name
                } else {
                    host.as_str()
                }
            })
        };
        let name = name.trim_end_matches('.');
        names.iter().any(|n| n == name)
    }
}

impl Default for Hosts {
    fn default() -> Self {
        Hosts::for_listen(([127, 0, 0, 1], 0).into(), &[])
    }
}

/// A request refused before any route ran.
#[derive(Debug)]
pub struct Refused(pub ApiError);

impl warp::reject::Reject for Refused {}

/// Checks `Host` and `Origin` on every request (see the module docs).
pub fn guard(
    hosts: Arc<Hosts>,
    ws: Arc<WsConfig>,
) -> impl Filter<Extract = (), Error = Rejection> + Clone + Send + Sync + 'static {
    warp::header::optional::<String>("host")
        .and(warp::header::optional::<String>("origin"))
        .and_then(move |host: Option<String>, origin: Option<String>| {
            let (hosts, ws) = (hosts.clone(), ws.clone());
            async move {
                // HTTP/1.1 always has a Host; a request without one is no browser's.
                if let Some(host) = &host {
                    if !hosts.allows(host) {
                        return Err(warp::reject::custom(Refused(
                            ApiError::new(
                                StatusCode::MISDIRECTED_REQUEST,
                                format!("this server does not answer to the host {host:?} (see --allowed-hosts)"),
                            )
                            .field("Host"),
                        )));
                    }
                }
                if origin.is_some() && !ws.origin_allowed(origin.as_deref(), host.as_deref()) {
                    return Err(warp::reject::custom(Refused(
                        ApiError::new(
                            StatusCode::FORBIDDEN,
                            format!(
                                "origin {:?} is not allowed here (see --allowed-origins)",
                                origin.unwrap_or_default()
                            ),
                        )
                        .field("Origin"),
                    )));
                }
                Ok(())
            }
        })
        .untuple_one()
}

/// Refuses a body that is not JSON by its `Content-Type` (415), before it is read; with
/// `any_type`, takes any (the Piston routes, whose clients send `text/plain` and worse: what
/// keeps a cross-site page out of them is [`guard`]'s `Origin` check, for browsers send an
/// `Origin` with every cross-site POST, form or fetch).
pub fn json_only(
    any_type: bool,
) -> impl Filter<Extract = (), Error = Rejection> + Clone + Send + Sync + 'static {
    warp::header::optional::<String>("content-type")
        .and_then(move |kind: Option<String>| async move {
            let json = any_type
                || kind.as_deref().is_some_and(|k| {
                    k.split(';')
                        .next()
                        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
                });
            if json {
                Ok(())
            } else {
                Err(warp::reject::custom(Refused(
                    ApiError::new(
                        StatusCode::UNSUPPORTED_MEDIA_TYPE,
                        format!(
                            "the body must be JSON with Content-Type: application/json (got {})",
                            kind.map_or("none".to_string(), |k| format!("{k:?}"))
                        ),
                    )
                    .field("Content-Type"),
                )))
            }
        })
        .untuple_one()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_compared_by_name_whatever_the_port() {
        let h = Hosts::default();
        for ok in [
            "127.0.0.1:8080",
            "localhost",
            "LOCALHOST:1",
            "[::1]:8080",
            "localhost.",
        ] {
            assert!(h.allows(ok), "{ok}");
        }
        for bad in [
            "evil.example:8080",
            "127.0.0.1.evil.example",
            "[::2]:80",
            "",
            "localhost:x",
        ] {
            assert!(!h.allows(bad), "{bad}");
        }
        let any = Hosts::for_listen("0.0.0.0:8080".parse().unwrap(), &[]);
        assert!(any.allows("anything.example"));
        let named = Hosts::for_listen("0.0.0.0:8080".parse().unwrap(), &["Runner.Example".into()]);
        assert!(named.allows("runner.example:443"));
        assert!(!named.allows("other.example"));
        let lan = Hosts::for_listen("192.168.1.5:8080".parse().unwrap(), &[]);
        assert!(lan.allows("192.168.1.5:8080") && lan.allows("localhost"));
    }
}
