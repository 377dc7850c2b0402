//! The web IDE's static files, embedded in the binary: `/` is the IDE's page, `/assets/<path>`
//! the rest (`web/assets/<path>` in the source tree). Nothing is read from disk at run time,
//! so a path can never reach outside the table.
//!
//! Caching: the paths carry no version, so every response says `no-cache` with a strong
//! `ETag` (a hash of the bytes): a browser revalidates on each load and gets a body-less 304
//! unless this binary serves different bytes.
//!
//! Compression: text files are gzipped once, on first use, and sent gzipped to clients that
//! accept it (the IDE's JavaScript goes from about 1 MB to about 250 KB, which a phone feels).
//! The gzipped form has its own `ETag`, and every response says `Vary: Accept-Encoding`.
//!
//! Offline: `sw.js` is the IDE's service worker. It lives under `/assets/` like the rest but
//! controls the whole page, which `Service-Worker-Allowed: /` permits; it keeps the files in
//! its cache and asks for them again (these same `no-cache` revalidations) each time the page
//! opens, so a new binary's files reach installed IDEs on their next start.
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::OnceLock;
use warp::http::{header, HeaderValue, StatusCode};
use warp::reply::Response;
use warp::{Filter, Rejection};

/// One embedded file.
pub struct Asset {
    /// Path under `web/assets/` and under `/assets/`.
    pub path: &'static str,
    pub body: &'static [u8],
}

macro_rules! assets {
    ($($path:literal),* $(,)?) => {
        &[$(Asset { path: $path, body: include_bytes!(concat!("../assets/", $path)) }),*]
    };
}

/// Every file served. `scripts/vendor.sh` rewrites `vendor/`; a test checks that every file
/// under `web/assets/` (but the docs) is listed here.
pub static ASSETS: &[Asset] = assets![
    "index.html",
    "app.js",
    "app.css",
    "i18n.js",
    "sw.js",
    "manifest.webmanifest",
    "icon.svg",
    "icon-192.png",
    "icon-512.png",
    "vendor/xterm/xterm.js",
    "vendor/xterm/xterm.css",
    "vendor/xterm/LICENSE",
    "vendor/xterm-addon-fit/addon-fit.js",
    "vendor/xterm-addon-fit/LICENSE",
    "vendor/codemirror/codemirror.js",
    "vendor/codemirror/lang-python.js",
    "vendor/codemirror/lang-javascript.js",
    "vendor/codemirror/lang-java.js",
    "vendor/codemirror/lang-cpp.js",
    "vendor/codemirror/LICENSE",
];

/// Files under `web/assets/` that document the tree and are not served.
pub const NOT_SERVED: &[&str] = &["vendor/README.md", "vendor/VERSIONS"];

/// The page's policy: scripts and connections only to this origin. Inline styles stay allowed
/// because xterm.js themes its DOM renderer with a `<style>` element. The WebSocket's origin
/// is also named outright (from `Host`): older Safari does not let `'self'` match `ws:`.
pub fn content_security_policy(host: Option<&str>) -> String {
    let mut connect = String::from("'self'");
    // Only a plain host[:port]: anything else could smuggle in a directive.
    if let Some(host) = host.filter(|h| {
        !h.is_empty()
            && h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
    }) {
        connect = format!("'self' ws://{host} wss://{host}");
    }
    format!(
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
         img-src 'self' data:; connect-src {connect}; base-uri 'none'; form-action 'none'; \
         frame-ancestors 'none'"
    )
}

/// The embedded file at `path` (relative to `web/assets/`), if any.
pub fn find(path: &str) -> Option<(usize, &'static Asset)> {
    ASSETS.iter().enumerate().find(|(_, a)| a.path == path)
}

/// The `Content-Type` for a file name.
pub fn content_type(path: &str) -> &'static str {
    let name = path.rsplit('/').next().unwrap_or(path);
    match name.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") | Some("mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("json") => "application/json",
        Some("webmanifest") => "application/manifest+json",
        Some("map") => "application/json",
        // LICENSE, README and other extension-less text.
        None | Some("md") | Some("txt") => "text/plain; charset=utf-8",
        Some(_) => "application/octet-stream",
    }
}

/// A strong validator per asset, computed once (the bytes never change within a binary).
fn etag(index: usize) -> &'static str {
    static ETAGS: OnceLock<Vec<String>> = OnceLock::new();
    &ETAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|a| {
                let mut h = DefaultHasher::new();
                a.body.hash(&mut h);
                format!("\"{:016x}-{:x}\"", h.finish(), a.body.len())
            })
            .collect()
    })[index]
}

/// An asset's gzipped bytes and their `ETag`.
type Gzipped = (Vec<u8>, String);

/// The gzipped form of each asset, made once; `None` where gzip does not make it smaller.
fn gzipped(index: usize) -> Option<&'static Gzipped> {
    static GZIPPED: OnceLock<Vec<Option<Gzipped>>> = OnceLock::new();
    GZIPPED.get_or_init(|| {
        ASSETS
            .iter()
            .enumerate()
            .map(|(i, a)| {
                let kind = content_type(a.path);
                if !kind.starts_with("text/") && kind != "image/svg+xml" && !kind.ends_with("json")
                {
                    return None;
                }
                let mut gz = flate2::write::GzEncoder::new(
                    Vec::with_capacity(a.body.len() / 3),
                    flate2::Compression::best(),
                );
                std::io::Write::write_all(&mut gz, a.body).ok()?;
                let body = gz.finish().ok()?;
                let tag = format!("{}-gz\"", etag(i).trim_end_matches('"'));
                (body.len() < a.body.len()).then_some((body, tag))
            })
            .collect()
    })[index]
        .as_ref()
}

/// Whether an `Accept-Encoding` value accepts gzip (and does not refuse it with `q=0`).
pub fn accepts_gzip(accept_encoding: Option<&str>) -> bool {
    accept_encoding.is_some_and(|v| {
        v.split(',').any(|coding| {
            let mut parts = coding.split(';').map(str::trim);
            let name = parts.next().unwrap_or("");
            let refused = parts.any(|p| {
                p.strip_prefix("q=")
                    .and_then(|q| q.parse::<f32>().ok())
                    .is_some_and(|q| q == 0.0)
            });
            (name.eq_ignore_ascii_case("gzip") || name == "*") && !refused
        })
    })
}

/// The response for one asset: 200 with the body (gzipped when `gzip` and it helps), or 304
/// when `if_none_match` names the tag of the form that would be sent.
pub fn respond(
    index: usize,
    asset: &'static Asset,
    if_none_match: Option<&str>,
    host: Option<&str>,
    gzip: bool,
) -> Response {
    let (body, tag, encoded): (&'static [u8], &'static str, bool) =
        match gzipped(index).filter(|_| gzip) {
            Some((body, tag)) => (body, tag, true),
            None => (asset.body, etag(index), false),
        };
    let fresh =
        if_none_match.is_some_and(|v| v.split(',').any(|t| t.trim() == tag || t.trim() == "*"));
    let mut response = if fresh {
        let mut r = Response::new(bytes::Bytes::new().into());
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r
    } else {
        Response::new(body.into())
    };
    let headers = response.headers_mut();
    if encoded {
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(asset.path)),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(header::ETAG, HeaderValue::from_static(tag));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if asset.path == "sw.js" {
        headers.insert("service-worker-allowed", HeaderValue::from_static("/"));
    }
    if asset.path.ends_with(".html") {
        if let Ok(policy) = HeaderValue::from_str(&content_security_policy(host)) {
            headers.insert(header::CONTENT_SECURITY_POLICY, policy);
        }
        headers.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
    }
    response
}

/// What an answer depends on besides the path: the validator the client holds, the `Host` it
/// asked (for the page's policy) and whether it accepts gzip.
#[derive(Debug, Clone, Default)]
pub struct Conditions {
    pub if_none_match: Option<String>,
    pub host: Option<String>,
    pub gzip: bool,
}

/// The request's [`Conditions`]. The route table (`crate::router`) matches the path and the
/// method (GET or HEAD) before this runs.
pub fn conditions(
) -> impl Filter<Extract = (Conditions,), Error = Rejection> + Clone + Send + Sync + 'static {
    warp::header::optional::<String>("if-none-match")
        .and(warp::header::optional::<String>("host"))
        .and(warp::header::optional::<String>("accept-encoding"))
        .map(
            |if_none_match: Option<String>, host: Option<String>, accept: Option<String>| {
                Conditions {
                    if_none_match,
                    host,
                    gzip: accepts_gzip(accept.as_deref()),
                }
            },
        )
}

/// The answer for the embedded file at `path` (relative to `web/assets/`), if there is one.
pub fn serve(path: &str, c: &Conditions) -> Option<Response> {
    let (i, asset) = find(path)?;
    Some(respond(
        i,
        asset,
        c.if_none_match.as_deref(),
        c.host.as_deref(),
        c.gzip,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn files_under(dir: &Path, base: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                files_under(&path, base, out);
            } else {
                let rel = path.strip_prefix(base).unwrap().to_string_lossy();
                out.push(rel.replace('\\', "/"));
            }
        }
    }

    #[test]
    fn every_file_under_web_assets_is_served() {
        let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets");
        let mut files = Vec::new();
        files_under(&base, &base, &mut files);
        let missing: Vec<&String> = files
            .iter()
            .filter(|f| find(f).is_none() && !NOT_SERVED.contains(&f.as_str()))
            .collect();
        assert!(
            missing.is_empty(),
            "add to ASSETS in web/src/assets.rs: {missing:?}"
        );
    }

    #[test]
    fn vendored_libraries_keep_their_licenses() {
        for lib in ["xterm", "xterm-addon-fit", "codemirror"] {
            let (_, license) = find(&format!("vendor/{lib}/LICENSE")).expect(lib);
            assert!(String::from_utf8_lossy(license.body).contains("Permission is hereby granted"));
        }
    }

    /// What the page loads, as `/`-rooted paths: its `src` and `href` attributes.
    fn loaded_by_the_page() -> Vec<String> {
        let (_, page) = find("index.html").unwrap();
        let page = String::from_utf8_lossy(page.body);
        let mut found = vec!["/".to_string()];
        for attr in ["src=\"", "href=\""] {
            for piece in page.split(attr).skip(1) {
                let url = piece.split('"').next().unwrap();
                if url.starts_with("/assets/") {
                    found.push(url.to_string());
                }
            }
        }
        found
    }

    #[test]
    fn the_service_worker_keeps_every_file_the_page_needs_offline() {
        let (_, sw) = find("sw.js").unwrap();
        let sw = String::from_utf8_lossy(sw.body);
        let list = sw.split("const FILES = [").nth(1).unwrap();
        let list = list.split("];").next().unwrap();
        let kept: Vec<&str> = list.split('\'').skip(1).step_by(2).collect();
        for path in loaded_by_the_page() {
            assert!(kept.contains(&path.as_str()), "sw.js does not keep {path}");
        }
        // The language modes app.js loads on demand, and the manifest's icons.
        for asset in ASSETS {
            let served = format!("/assets/{}", asset.path);
            let needed = (asset.path.starts_with("vendor/") && asset.path.ends_with(".js"))
                || asset.path.ends_with(".png")
                || asset.path == "manifest.webmanifest";
            if needed {
                assert!(
                    kept.contains(&served.as_str()),
                    "sw.js does not keep {served}"
                );
            }
        }
        for path in &kept {
            let file = path.strip_prefix("/assets/").unwrap_or("index.html");
            assert!(
                find(file).is_some(),
                "sw.js keeps {path}, which is not served"
            );
        }
    }

    #[test]
    fn the_service_worker_may_control_the_whole_page() {
        let (i, sw) = find("sw.js").unwrap();
        let response = respond(i, sw, None, None, true);
        assert_eq!(response.headers()["service-worker-allowed"], "/");
        assert_eq!(response.headers()[header::CACHE_CONTROL], "no-cache");
        let (i, page) = find("index.html").unwrap();
        let response = respond(i, page, None, None, true);
        assert!(response.headers().get("service-worker-allowed").is_none());
        let policy = response.headers()[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap();
        assert!(policy.contains("script-src 'self';"), "{policy}");
    }

    #[test]
    fn content_types_follow_the_extension() {
        assert_eq!(content_type("index.html"), "text/html; charset=utf-8");
        assert_eq!(
            content_type("vendor/xterm/xterm.js"),
            "text/javascript; charset=utf-8"
        );
        assert_eq!(content_type("app.css"), "text/css; charset=utf-8");
        assert_eq!(
            content_type("vendor/xterm/LICENSE"),
            "text/plain; charset=utf-8"
        );
        assert_eq!(content_type("icon.svg"), "image/svg+xml");
        assert_eq!(content_type("icon-192.png"), "image/png");
        assert_eq!(
            content_type("manifest.webmanifest"),
            "application/manifest+json"
        );
    }

    #[test]
    fn etags_differ_between_assets_and_match_on_revalidation() {
        let (i, app) = find("app.js").unwrap();
        let (j, _) = find("app.css").unwrap();
        assert_ne!(etag(i), etag(j));
        let response = respond(i, app, Some(etag(i)), None, false);
        assert_eq!(response.status(), StatusCode::NOT_MODIFIED);
        let response = respond(i, app, Some("\"other\""), None, false);
        assert_eq!(response.status(), StatusCode::OK);
        // The gzipped form is another representation with its own tag.
        let response = respond(i, app, Some(etag(i)), None, true);
        assert_eq!(response.status(), StatusCode::OK);
        let gz_tag = gzipped(i).unwrap().1.as_str();
        assert_ne!(gz_tag, etag(i));
        let response = respond(i, app, Some(gz_tag), None, true);
        assert_eq!(response.status(), StatusCode::NOT_MODIFIED);
    }

    #[test]
    fn gzip_is_negotiated_from_accept_encoding() {
        assert!(accepts_gzip(Some("gzip, deflate, br")));
        assert!(accepts_gzip(Some("br;q=1.0, GZIP;q=0.5")));
        assert!(accepts_gzip(Some("*")));
        assert!(!accepts_gzip(Some("gzip;q=0")));
        assert!(!accepts_gzip(Some("br, deflate")));
        assert!(!accepts_gzip(Some("gzipx")));
        assert!(!accepts_gzip(None));
    }

    #[test]
    fn every_text_asset_gzips_smaller_and_back_to_the_same_bytes() {
        let mut plain = 0;
        let mut sent = 0;
        for (i, asset) in ASSETS.iter().enumerate() {
            plain += asset.body.len();
            let Some((gz, _)) = gzipped(i) else {
                sent += asset.body.len();
                continue;
            };
            let mut back = Vec::new();
            std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gz[..]), &mut back)
                .unwrap();
            assert_eq!(back, asset.body, "{}", asset.path);
            sent += gz.len();
        }
        assert!(sent * 3 < plain, "gzipped {sent} of {plain} bytes");
    }

    #[test]
    fn the_policy_names_the_websocket_origin_only_for_a_plain_host() {
        let policy = content_security_policy(Some("127.0.0.1:8080"));
        assert!(policy.contains("connect-src 'self' ws://127.0.0.1:8080 wss://127.0.0.1:8080;"));
        assert!(content_security_policy(Some("[::1]:80")).contains("ws://[::1]:80"));
        for bad in ["evil.example; script-src *", "a b", ""] {
            assert!(content_security_policy(Some(bad)).contains("connect-src 'self';"));
        }
        assert!(content_security_policy(None).contains("connect-src 'self';"));
    }
}
