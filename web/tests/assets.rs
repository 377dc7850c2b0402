//! The IDE's embedded files through the service's routes, in process (warp's test client),
//! without a Docker daemon.
use onpyrunner::jobs::Jobs;
use onpyrunner::router::routes;
use onpyrunner::state::AppState;
use onpyrunner_e2e::stand_in::StandIn;
use std::time::Duration;

/// The IDE's files need no daemon: a stand-in runner behind the routes.
async fn state(_test: &str) -> AppState {
    AppState::new(StandIn::new(), Jobs::new(10, Duration::from_secs(60)))
}

async fn get(s: &AppState, path: &str, etag: Option<&str>) -> warp::http::Response<bytes::Bytes> {
    let mut request = warp::test::request().method("GET").path(path);
    if let Some(tag) = etag {
        request = request.header("if-none-match", tag);
    }
    request.reply(&routes(s.clone())).await
}

fn header<'a>(response: &'a warp::http::Response<bytes::Bytes>, name: &str) -> &'a str {
    response
        .headers()
        .get(name)
        .map(|v| v.to_str().unwrap())
        .unwrap_or("")
}

#[tokio::test]
async fn root_serves_the_ide_and_assets_have_their_content_types() {
    let s = state("ide").await;

    let page = get(&s, "/", None).await;
    assert_eq!(page.status(), 200);
    assert_eq!(header(&page, "content-type"), "text/html; charset=utf-8");
    let html = String::from_utf8_lossy(page.body());
    assert!(html.contains("<title>onpyrunner</title>"), "{html}");
    assert!(html.contains(r#"src="/assets/app.js""#));
    assert!(header(&page, "content-security-policy").contains("script-src 'self'"));
    assert_eq!(header(&page, "cache-control"), "no-cache");

    let script = get(&s, "/assets/app.js", None).await;
    assert_eq!(script.status(), 200);
    assert_eq!(
        header(&script, "content-type"),
        "text/javascript; charset=utf-8"
    );
    assert_eq!(header(&script, "x-content-type-options"), "nosniff");
    let css = get(&s, "/assets/vendor/xterm/xterm.css", None).await;
    assert_eq!(css.status(), 200);
    assert_eq!(header(&css, "content-type"), "text/css; charset=utf-8");
    let license = get(&s, "/assets/vendor/codemirror/LICENSE", None).await;
    assert_eq!(
        header(&license, "content-type"),
        "text/plain; charset=utf-8"
    );

    // Revalidation: the same ETag gets a 304 without a body.
    let tag = header(&script, "etag").to_string();
    assert!(tag.starts_with('"'), "{tag}");
    let again = get(&s, "/assets/app.js", Some(&tag)).await;
    assert_eq!(again.status(), 304);
    assert!(again.body().is_empty());

    // The installable app: its manifest, and a service worker allowed to control the page.
    assert!(html.contains(r#"<link rel="manifest" href="/assets/manifest.webmanifest">"#));
    let manifest = get(&s, "/assets/manifest.webmanifest", None).await;
    assert_eq!(manifest.status(), 200);
    assert_eq!(
        header(&manifest, "content-type"),
        "application/manifest+json"
    );
    let worker = get(&s, "/assets/sw.js", None).await;
    assert_eq!(worker.status(), 200);
    assert_eq!(header(&worker, "service-worker-allowed"), "/");
    assert_eq!(header(&worker, "cache-control"), "no-cache");

    // Unknown files and paths outside the table are the API's JSON 404; the API still answers.
    for path in [
        "/assets/nope.js",
        "/assets/../Cargo.toml",
        "/assets/vendor/README.md",
    ] {
        let missing = get(&s, path, None).await;
        assert_eq!(missing.status(), 404, "{path}");
        assert_eq!(header(&missing, "content-type"), "application/json");
    }
    let languages = get(&s, "/api/v1/languages", None).await;
    assert_eq!(languages.status(), 200);
    s.engine.shutdown().await;
}

#[tokio::test]
async fn browsers_that_accept_gzip_get_the_javascript_gzipped() {
    let s = state("gzip").await;
    let plain = get(&s, "/assets/vendor/xterm/xterm.js", None).await;
    assert_eq!(header(&plain, "content-encoding"), "");
    assert_eq!(header(&plain, "vary"), "accept-encoding");
    let gzipped = warp::test::request()
        .method("GET")
        .path("/assets/vendor/xterm/xterm.js")
        .header("accept-encoding", "gzip, deflate, br")
        .reply(&routes(s.clone()))
        .await;
    assert_eq!(gzipped.status(), 200);
    assert_eq!(header(&gzipped, "content-encoding"), "gzip");
    assert!(gzipped.body().len() * 3 < plain.body().len());
    let mut back = Vec::new();
    std::io::Read::read_to_end(
        &mut flate2::read::GzDecoder::new(&gzipped.body()[..]),
        &mut back,
    )
    .unwrap();
    assert_eq!(back, plain.body().as_ref());
    assert_ne!(header(&gzipped, "etag"), header(&plain, "etag"));
    s.engine.shutdown().await;
}
