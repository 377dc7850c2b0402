//! Every route of the service, in one table: [`ROUTES`]. The filter tree ([`routes`]) and the
//! `Allow` header of a 405 ([`allowed_methods`]) are both derived from it, and
//! `web/tests/openapi.rs` holds it against `web/openapi.json`, so a route cannot be added in
//! one place and forgotten in another.
//!
//! Each route says what it needs of its caller ([`Access`]); who the caller is is resolved
//! once, after the path and method matched and before the body is read (see `identity`).
//!
//! Errors are JSON `{error, field?, limit?}` with a fitting status: 400 (malformed body),
//! 401 with `WWW-Authenticate` (no valid token, when the server has tokens), 404 (no such route
//! or job), 405 with `Allow` (a known route, another method), 411, 413 (body too large), 422 (a
//! field is invalid or out of range), 429 with `Retry-After` (queue or job table full, or this
//! client past its rate or its WebSockets), 503 (shutting down, daemon down, image missing).
//! On Piston's routes (`/api/v2/`) they also carry Piston's `message` (`error::for_path`).
use crate::body::Received;
use crate::error::{self, ApiError};
use crate::identity::{Access, Caller};
use crate::judge0::{info as judge0_info, submissions as judge0};
use crate::listener::{Peer, Place};
use crate::state::AppState;
use crate::ws_socket::{self, Socket};
use crate::{api, assets, browser, metrics, openapi, piston, piston_ws, sse, ws};
use std::convert::Infallible;
use std::future::Future;
use warp::filters::BoxedFilter;
use warp::http::{HeaderMap, HeaderValue, Method, StatusCode};
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

/// Largest request body: the source cap, the stdin cap and room for JSON escaping.
pub const MAX_BODY_BYTES: u64 = 40 * 1024 * 1024;

/// One route: a path pattern, the methods it answers and the filter that answers them.
pub struct Route {
    /// As OpenAPI writes paths: literal segments, `{name}` for one non-empty segment, and a
    /// last `{*name}` for everything after the slash that precedes it (possibly nothing).
    pub path: &'static str,
    pub methods: &'static [&'static str],
    /// Whether `web/openapi.json` documents it (the IDE's files are not part of the API).
    pub documented: bool,
    /// What it needs of its caller.
    pub access: Access,
    /// Builds the answer. It gets the filter that matched this route's path and method and
    /// admitted its caller, and extracts the path's parameters, in the pattern's order, and the
    /// caller.
    filter: fn(Matched, &AppState) -> BoxedFilter<(Response,)>,
}

/// The filter a route's answer starts from: it extracts the path's parameters and the caller.
type Matched = BoxedFilter<(Vec<String>, Caller)>;

/// The service's routes. A path answers the union of the methods of the rows it matches, in
/// this order.
pub static ROUTES: &[Route] = &[
    Route {
        path: "/",
        methods: &["GET", "HEAD"],
        documented: false,
        access: Access::Open,
        filter: |at, _| {
            at.and(assets::conditions())
                .map(|_, _, c: assets::Conditions| {
                    assets::serve("index.html", &c).expect("index.html is embedded")
                })
                .boxed()
        },
    },
    Route {
        path: "/assets/{*path}",
        methods: &["GET", "HEAD"],
        documented: false,
        access: Access::Open,
        filter: |at, _| {
            at.and(assets::conditions())
                .and_then(|p: Vec<String>, _, c: assets::Conditions| async move {
                    assets::serve(&p[0], &c).ok_or_else(warp::reject::not_found)
                })
                .boxed()
        },
    },
    Route {
        path: "/healthz",
        methods: &["GET"],
        documented: true,
        access: Access::Read,
        filter: |at, s| {
            let s = s.clone();
            at.map(move |_, _| api::healthz(&s)).boxed()
        },
    },
    Route {
        path: "/metrics",
        methods: &["GET"],
        documented: true,
        access: Access::Read,
        filter: |at, s| {
            let engine = s.engine.clone();
            at.map(move |_, _| metrics::reply(engine.as_ref())).boxed()
        },
    },
    Route {
        path: "/api/v1/openapi.json",
        methods: &["GET"],
        documented: true,
        access: Access::Read,
        filter: |at, s| {
            // Made at the first request, not with the routes (tests build them per request).
            let caps = s.engine.caps().clone();
            let document = std::sync::Arc::new(std::sync::OnceLock::new());
            at.map(move |_, _| openapi::reply(document.get_or_init(|| openapi::document(&caps))))
                .boxed()
        },
    },
    Route {
        path: "/api/v1/languages",
        methods: &["GET"],
        documented: true,
        access: Access::Read,
        filter: |at, s| {
            let s = s.clone();
            at.map(move |_, _| api::languages(&s)).boxed()
        },
    },
    Route {
        path: "/api/v1/runs",
        methods: &["POST"],
        documented: true,
        access: Access::Run,
        filter: |at, s| {
            let s = s.clone();
            at.and(body(&s, false))
                .then(move |_, caller: Caller, body: Received| {
                    let s = s.clone();
                    async move {
                        api::post_run(s, body, caller)
                            .await
                            .unwrap_or_else(ApiError::into_response)
                    }
                })
                .boxed()
        },
    },
    Route {
        path: "/api/v1/jobs",
        methods: &["POST"],
        documented: true,
        access: Access::Run,
        filter: |at, s| {
            let s = s.clone();
            at.and(body(&s, false))
                .map(move |_, caller: Caller, body: Received| {
                    api::post_job(&s, body, &caller).unwrap_or_else(ApiError::into_response)
                })
                .boxed()
        },
    },
    Route {
        path: "/api/v1/jobs/{id}",
        methods: &["GET"],
        documented: true,
        access: Access::Token,
        filter: |at, s| {
            let s = s.clone();
            at.map(move |p: Vec<String>, _| api::job(&s, &p[0])).boxed()
        },
    },
    Route {
        path: "/api/v1/jobs/{id}",
        methods: &["DELETE"],
        documented: true,
        access: Access::Token,
        filter: |at, s| {
            let s = s.clone();
            at.map(move |p: Vec<String>, _| api::stop_job(&s, &p[0]))
                .boxed()
        },
    },
    Route {
        path: "/api/v1/jobs/{id}/events",
        methods: &["GET"],
        documented: true,
        access: Access::Token,
        // `sse::route` matches its path itself (tests mount it alone).
        filter: |at, s| {
            at.and(sse::route(s.jobs.clone(), sse::KEEP_ALIVE))
                .map(|_, _, r: Response| r)
                .boxed()
        },
    },
    Route {
        path: "/api/v1/ws",
        methods: &["GET"],
        documented: true,
        // Each run started on the connection counts against the rate, not the upgrade.
        access: Access::Token,
        filter: |at, s| websocket(at, s, "docs/protocol.md", ws::connection),
    },
    // Piston v2 (piston.rs), at its own paths and under the public host's prefix.
    Route {
        path: "/api/v2/runtimes",
        methods: &["GET"],
        documented: true,
        access: Access::Read,
        filter: piston_runtimes,
    },
    Route {
        path: "/api/v2/execute",
        methods: &["POST"],
        documented: true,
        access: Access::Run,
        filter: piston_execute,
    },
    Route {
        path: "/api/v2/connect",
        methods: &["GET"],
        documented: true,
        // The connection's `init` counts against the rate, not the upgrade.
        access: Access::Token,
        filter: |at, s| websocket(at, s, "docs/compat.md", piston_ws::connection),
    },
    Route {
        path: "/api/v2/piston/runtimes",
        methods: &["GET"],
        documented: true,
        access: Access::Read,
        filter: piston_runtimes,
    },
    Route {
        path: "/api/v2/piston/execute",
        methods: &["POST"],
        documented: true,
        access: Access::Run,
        filter: piston_execute,
    },
    Route {
        path: "/api/v2/piston/connect",
        methods: &["GET"],
        documented: true,
        access: Access::Token,
        filter: |at, s| websocket(at, s, "docs/compat.md", piston_ws::connection),
    },
    // Judge0 CE 1.13.1 (judge0/), at its own paths.
    Route {
        path: "/about",
        methods: &["GET"],
        documented: true,
        access: Access::Read,
        filter: |at, _| at.map(|_, _| judge0_info::about()).boxed(),
    },
    Route {
        path: "/version",
        methods: &["GET"],
        documented: true,
        access: Access::Read,
        filter: |at, _| at.map(|_, _| judge0_info::version()).boxed(),
    },
    Route {
        path: "/config_info",
        methods: &["GET"],
        documented: true,
        access: Access::Read,
        filter: |at, s| {
            let s = s.clone();
            at.map(move |_, caller: Caller| {
                let caps = crate::request::caps_of(s.engine.as_ref(), &caller);
                judge0_info::config_info(&caps, &s.judge0_callbacks, s.jobs.max())
            })
            .boxed()
        },
    },
    Route {
        path: "/system_info",
        methods: &["GET"],
        documented: true,
        access: Access::Read,
        filter: |at, _| at.map(|_, _| judge0_info::system_info()).boxed(),
    },
    Route {
        path: "/workers",
        methods: &["GET"],
        documented: true,
        access: Access::Read,
        filter: |at, s| {
            let s = s.clone();
            at.map(move |_, _| judge0_info::workers(&s)).boxed()
        },
    },
    Route {
        path: "/statuses",
        methods: &["GET"],
        documented: true,
        access: Access::Read,
        filter: |at, _| at.map(|_, _| judge0_info::statuses()).boxed(),
    },
    Route {
        path: "/languages",
        methods: &["GET"],
        documented: true,
        access: Access::Read,
        filter: |at, _| at.map(|_, _| judge0_info::languages()).boxed(),
    },
    Route {
        path: "/languages/all",
        methods: &["GET"],
        documented: true,
        access: Access::Read,
        filter: |at, _| at.map(|_, _| judge0_info::languages_all()).boxed(),
    },
    Route {
        path: "/languages/{id}",
        methods: &["GET"],
        documented: true,
        access: Access::Read,
        filter: |at, _| {
            at.map(|p: Vec<String>, _| judge0_info::language(&p[0]))
                .boxed()
        },
    },
    // Before `/submissions/{token}`, which would take `batch` for a token.
    Route {
        path: "/submissions/batch",
        methods: &["POST"],
        documented: true,
        access: Access::Run,
        filter: |at, s| {
            let s = s.clone();
            at.and(query())
                .and(body(&s, true))
                .map(move |_, caller: Caller, q, body| judge0::batch_create(&s, &q, body, &caller))
                .boxed()
        },
    },
    Route {
        path: "/submissions/batch",
        methods: &["GET"],
        documented: true,
        access: Access::Token,
        filter: |at, s| {
            let s = s.clone();
            at.and(query())
                .and(warp::header::optional::<String>("tokens"))
                .map(move |_, _, q, tokens: Option<String>| {
                    judge0::batch_show(&s, &q, tokens.as_deref())
                })
                .boxed()
        },
    },
    Route {
        path: "/submissions",
        methods: &["POST"],
        documented: true,
        access: Access::Run,
        filter: |at, s| {
            let s = s.clone();
            at.and(query())
                .and(body(&s, true))
                .then(move |_, caller: Caller, q, body| judge0::create(s.clone(), q, body, caller))
                .boxed()
        },
    },
    Route {
        path: "/submissions",
        methods: &["GET"],
        documented: true,
        access: Access::Token,
        filter: |at, s| {
            let s = s.clone();
            at.and(query())
                .map(move |_, caller: Caller, q| judge0::index(&s, &q, &caller))
                .boxed()
        },
    },
    Route {
        path: "/submissions/{id}",
        methods: &["GET"],
        documented: true,
        access: Access::Token,
        filter: |at, s| {
            let s = s.clone();
            at.and(query())
                .map(move |p: Vec<String>, _, q| judge0::show(&s, &p[0], &q))
                .boxed()
        },
    },
    Route {
        path: "/submissions/{id}",
        methods: &["DELETE"],
        documented: true,
        access: Access::Token,
        filter: |at, s| {
            let s = s.clone();
            at.and(query())
                .map(move |p: Vec<String>, _, q| judge0::destroy(&s, &p[0], &q))
                .boxed()
        },
    },
    // Judge0's checks of its two tokens: 200 with no body once the caller is admitted.
    Route {
        path: "/authenticate",
        methods: &["POST"],
        documented: true,
        access: Access::Token,
        filter: |at, _| at.map(|_, _| empty_ok()).boxed(),
    },
    Route {
        path: "/authorize",
        methods: &["POST"],
        documented: true,
        access: Access::Token,
        filter: |at, _| at.map(|_, _| empty_ok()).boxed(),
    },
];

fn empty_ok() -> Response {
    warp::reply::reply().into_response()
}

/// The query string as Judge0's controllers read it (none is an empty one).
fn query(
) -> impl Filter<Extract = (judge0::Query,), Error = Infallible> + Clone + Send + Sync + 'static {
    warp::query::raw()
        .or(warp::any().map(String::new))
        .unify()
        .map(|raw: String| judge0::Query::parse(&raw))
}

fn piston_runtimes(at: Matched, s: &AppState) -> BoxedFilter<(Response,)> {
    let s = s.clone();
    at.map(move |_, _| piston::list(&s)).boxed()
}

/// Piston's clients send JSON as any content type: it is taken as JSON whatever it says.
fn piston_execute(at: Matched, s: &AppState) -> BoxedFilter<(Response,)> {
    let s = s.clone();
    at.and(body(&s, true))
        .then(move |_, caller: Caller, body: Received| piston::execute(s.clone(), body, caller))
        .boxed()
}

/// A WebSocket route: the upgrade (`ws_socket`), then `serve`, the protocol named in `about`.
fn websocket<Fut>(
    at: Matched,
    s: &AppState,
    about: &'static str,
    serve: fn(Socket, AppState, Caller) -> Fut,
) -> BoxedFilter<(Response,)>
where
    Fut: Future<Output = ()> + Send + 'static,
{
    let s = s.clone();
    at.and(warp::header::headers_cloned())
        .and(warp::ext::optional::<hyper::upgrade::OnUpgrade>())
        .and(warp::ext::optional::<Place>())
        .map(move |_, caller, headers: HeaderMap, on_upgrade, place| {
            ws_socket::upgrade(&headers, on_upgrade, s.clone(), caller, place, about, serve)
        })
        .boxed()
}

impl Route {
    /// The path's parameters if `path` matches the pattern. Like warp's own path filters,
    /// segments compare raw (no percent-decoding) and one trailing slash is allowed.
    pub fn matches(&self, path: &str) -> Option<Vec<String>> {
        let mut params = Vec::new();
        let mut rest = path.strip_prefix('/')?;
        // Whether `rest` starts right after a slash (a segment, even an empty one, follows).
        let mut after_slash = true;
        for pattern in self.path.split('/').filter(|p| !p.is_empty()) {
            if pattern.starts_with("{*") {
                if !after_slash {
                    return None;
                }
                params.push(rest.to_string());
                return Some(params);
            }
            if !after_slash {
                return None;
            }
            let (segment, tail) = match rest.split_once('/') {
                Some((segment, tail)) => (segment, Some(tail)),
                None => (rest, None),
            };
            if pattern.starts_with('{') {
                if segment.is_empty() {
                    return None;
                }
                params.push(segment.to_string());
            } else if segment != pattern {
                return None;
            }
            (rest, after_slash) = match tail {
                Some(tail) => (tail, true),
                None => ("", false),
            };
        }
        rest.is_empty().then_some(params)
    }

    /// This route's path and method, or a not-found rejection (so the next route is tried);
    /// then its caller, or the refusal (401, or 429 for a run past the caller's rate).
    fn matched(&'static self, state: &AppState) -> Matched {
        let (identity, quotas) = (state.identity.clone(), state.quotas.clone());
        warp::path::full()
            .and(warp::method())
            .and_then(
                move |path: warp::path::FullPath, method: Method| async move {
                    match self.matches(path.as_str()) {
                        Some(params)
                            if self.methods.contains(&method.as_str())
                                && !shadowed(params.len(), path.as_str()) =>
                        {
                            Ok(params)
                        }
                        _ => Err(warp::reject::not_found()),
                    }
                },
            )
            .and(warp::ext::optional::<Peer>())
            .and(warp::header::headers_cloned())
            .and_then(move |params, peer, headers: HeaderMap| {
                let (identity, quotas) = (identity.clone(), quotas.clone());
                async move {
                    let refuse = |err: ApiError| warp::reject::custom(browser::Refused(err));
                    let caller = identity
                        .identify(self.access, peer, &headers)
                        .map_err(refuse)?;
                    if self.access == Access::Run {
                        quotas.start_run(&caller).map_err(|e| refuse(e.into()))?;
                    }
                    Ok::<_, Rejection>((params, caller))
                }
            })
            .untuple_one()
            .boxed()
    }
}

/// The request body, up to [`MAX_BODY_BYTES`], received within the server's body bounds;
/// `application/json` only unless `any_type`.
fn body(
    state: &AppState,
    any_type: bool,
) -> impl Filter<Extract = (Received,), Error = Rejection> + Clone + Send + Sync + 'static {
    let bodies = state.bodies.clone();
    warp::body::content_length_limit(MAX_BODY_BYTES)
        .and(browser::json_only(any_type))
        .and(warp::body::stream())
        .and_then(move |stream| {
            let bodies = bodies.clone();
            async move {
                bodies
                    .receive(stream)
                    .await
                    .map_err(|e| warp::reject::custom(browser::Refused(e)))
            }
        })
}

/// Every route of the service, then 405 for a known path asked with another method, then the
/// JSON answer to every rejection.
pub fn routes(
    state: AppState,
) -> impl Filter<Extract = (Response,), Error = Infallible> + Clone + Send + Sync + 'static {
    let mut tree: BoxedFilter<(Response,)> = wrong_method().boxed();
    for route in ROUTES.iter().rev() {
        tree = (route.filter)(route.matched(&state), &state)
            .or(tree)
            .unify()
            .boxed();
    }
    warp::path::full()
        .and(
            browser::guard(state.hosts.clone(), state.ws.clone())
                .and(tree)
                .recover(recover)
                .unify(),
        )
        .map(|path: warp::path::FullPath, response| error::for_path(path.as_str(), response))
}

/// Whether a row that matches `path` with `params` parameters gives way to a row that matches
/// it with fewer: a literal segment wins over a parameter, as in most routers, so
/// `/submissions/batch` is the batch routes' and never the token `batch` of
/// `/submissions/{id}`, for every method (a DELETE there is 405, not a delete).
fn shadowed(params: usize, path: &str) -> bool {
    ROUTES
        .iter()
        .any(|r| r.matches(path).is_some_and(|p| p.len() < params))
}

/// The methods a path answers (`GET, HEAD`), for `405` and its `Allow` header; `None` for a
/// path no route matches.
pub fn allowed_methods(path: &str) -> Option<String> {
    let mut methods: Vec<&str> = Vec::new();
    let matching = ROUTES
        .iter()
        .filter_map(|r| r.matches(path).map(|params| (r, params.len())));
    for (route, _) in matching.filter(|(_, params)| !shadowed(*params, path)) {
        for method in route.methods {
            if !methods.contains(method) {
                methods.push(method);
            }
        }
    }
    (!methods.is_empty()).then(|| methods.join(", "))
}

/// A known route asked with a method it does not answer: 405 with `Allow`. Anything else is
/// left to the other rejections (not found, body too large...).
fn wrong_method(
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone + Send + Sync + 'static {
    warp::path::full().and(warp::method()).and_then(
        |path: warp::path::FullPath, method: Method| async move {
            let Some(allow) = allowed_methods(path.as_str()) else {
                return Err(warp::reject::not_found());
            };
            if allow.split(", ").any(|m| m == method.as_str()) {
                return Err(warp::reject::not_found());
            }
            let mut response = ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                format!(
                    "{method} is not allowed on {}; allowed: {allow}",
                    path.as_str()
                ),
            )
            .into_response();
            let allow = HeaderValue::from_str(&allow).expect("method names are header-safe");
            response.headers_mut().insert("allow", allow);
            Ok(response)
        },
    )
}

async fn recover(rejection: Rejection) -> Result<Response, Infallible> {
    let err = if let Some(browser::Refused(err)) = rejection.find() {
        err.clone()
    } else if rejection.is_not_found() {
        ApiError::new(StatusCode::NOT_FOUND, "no such route")
    } else if rejection.find::<warp::reject::PayloadTooLarge>().is_some() {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body exceeds the limit of {MAX_BODY_BYTES} bytes"),
        )
        .limit(MAX_BODY_BYTES)
    } else if rejection.find::<warp::reject::LengthRequired>().is_some() {
        ApiError::new(
            StatusCode::LENGTH_REQUIRED,
            "a Content-Length header is required",
        )
    } else if rejection.find::<warp::reject::MethodNotAllowed>().is_some() {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed on this route",
        )
    } else {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("bad request: {rejection:?}"),
        )
    };
    Ok(err.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(path: &str) -> &'static Route {
        ROUTES.iter().find(|r| r.path == path).unwrap()
    }

    #[test]
    fn patterns_match_like_warps_path_filters() {
        let job = route("/api/v1/jobs/{id}");
        assert_eq!(job.matches("/api/v1/jobs/abc"), Some(vec!["abc".into()]));
        assert_eq!(job.matches("/api/v1/jobs/abc/"), Some(vec!["abc".into()]));
        assert_eq!(job.matches("/api/v1/jobs/%41"), Some(vec!["%41".into()]));
        assert_eq!(job.matches("/api/v1/jobs/"), None);
        assert_eq!(job.matches("/api/v1/jobs"), None);
        assert_eq!(job.matches("/api/v1/jobs/abc//"), None);
        assert_eq!(job.matches("/api/v1/jobs/abc/events"), None);
        let root = route("/");
        assert_eq!(root.matches("/"), Some(vec![]));
        assert_eq!(root.matches("//"), None);
        assert_eq!(root.matches("/x"), None);
        let assets = route("/assets/{*path}");
        assert_eq!(
            assets.matches("/assets/vendor/x.js"),
            Some(vec!["vendor/x.js".into()])
        );
        assert_eq!(assets.matches("/assets/"), Some(vec!["".into()]));
        assert_eq!(assets.matches("/assets"), None);
        assert_eq!(assets.matches("/assetsx/a"), None);
    }

    #[test]
    fn allow_is_the_union_of_the_matching_rows() {
        assert_eq!(allowed_methods("/").as_deref(), Some("GET, HEAD"));
        assert_eq!(allowed_methods("/assets/a/b").as_deref(), Some("GET, HEAD"));
        assert_eq!(allowed_methods("/healthz").as_deref(), Some("GET"));
        assert_eq!(allowed_methods("/api/v1/runs").as_deref(), Some("POST"));
        assert_eq!(
            allowed_methods("/api/v1/jobs/x").as_deref(),
            Some("GET, DELETE")
        );
        assert_eq!(
            allowed_methods("/api/v1/jobs/x/events").as_deref(),
            Some("GET")
        );
        assert_eq!(allowed_methods("/api/v1/nothing"), None);
        // A trailing slash is the route without it, as warp's filters see it.
        assert_eq!(allowed_methods("/api/v1/jobs/").as_deref(), Some("POST"));
        assert_eq!(allowed_methods("/healthz/").as_deref(), Some("GET"));
    }
}
