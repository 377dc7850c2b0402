//! Keeps `web/openapi.json` honest, in process over a real engine, daemon and images:
//! - every operation in the document is called, and every answer has a documented status, a
//!   documented content type, the documented headers and a JSON body of the documented shape;
//! - the request bodies the server accepts are valid RunBody documents, and bodies the schema
//!   refuses are refused by the server too;
//! - every route under `/api/`, `/healthz` and `/metrics` that the server answers (with
//!   anything but "no such route" or 405) is in the document.
//!
//! The IDE's static files are not part of the API document and are not probed.
use onpyrunner::jobs::Jobs;
use onpyrunner::router::routes;
use onpyrunner::state::AppState;
use onpyrunner_supervisor::docker::Docker;
use onpyrunner_supervisor::engine::{Engine, EngineConfig};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(90);

async fn state() -> AppState {
    let docker = Docker::from_host(None).unwrap();
    let config = EngineConfig {
        max_running: 1,
        max_queued: 1,
        ..onpyrunner_e2e::engine_config("openapi", &[])
    };
    let engine = Engine::start(docker, config)
        .await
        .expect("engine starts (is the daemon running? `bash scripts/setup.sh`)");
    AppState::new(engine, Jobs::new(100, Duration::from_secs(60)))
}

struct Answer {
    status: u16,
    content_type: String,
    headers: BTreeSet<String>,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    fn is_no_such_route(&self) -> bool {
        self.status == 404 && self.json()["error"] == "no such route"
    }
}

async fn send(
    s: &AppState,
    method: &str,
    path: &str,
    body: Option<&str>,
    headers: &[(&str, &str)],
) -> Answer {
    let mut request = warp::test::request().method(method).path(path);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    if let Some(body) = body {
        if !headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("content-type"))
        {
            request = request.header("content-type", "application/json");
        }
        request = request.body(body);
    }
    let response = tokio::time::timeout(TIMEOUT, request.reply(&routes(s.clone())))
        .await
        .unwrap_or_else(|_| panic!("{method} {path} answers within the timeout"));
    Answer {
        status: response.status().as_u16(),
        content_type: response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default(),
        headers: response
            .headers()
            .keys()
            .map(|k| k.as_str().to_string())
            .collect(),
        body: response.body().to_vec(),
    }
}

/// The documented path a concrete path falls under (`{param}` matches one segment; the query
/// is not part of it).
fn template_of<'a>(doc: &'a Value, path: &str) -> Option<&'a str> {
    let path = path.split('?').next().unwrap_or(path);
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    doc["paths"].as_object().unwrap().keys().find_map(|t| {
        let parts: Vec<&str> = t.split('/').filter(|s| !s.is_empty()).collect();
        let fits = parts.len() == segments.len()
            && parts
                .iter()
                .zip(&segments)
                .all(|(p, s)| p == s || (p.starts_with('{') && p.ends_with('}')));
        fits.then_some(t.as_str())
    })
}

fn resolve<'a>(doc: &'a Value, mut schema: &'a Value) -> &'a Value {
    while let Some(reference) = schema["$ref"].as_str() {
        let pointer = reference.strip_prefix('#').expect("local reference");
        schema = doc
            .pointer(pointer)
            .unwrap_or_else(|| panic!("dangling {reference}"));
    }
    schema
}

/// Check `value` against the OpenAPI 3.0 schema subset the document uses; errors name where.
fn validate(doc: &Value, schema: &Value, value: &Value, at: &str, errors: &mut Vec<String>) {
    let schema = resolve(doc, schema);
    if value.is_null() {
        if schema["nullable"] != true {
            errors.push(format!("{at}: null is not allowed"));
        }
        return;
    }
    if let Some(all) = schema["allOf"].as_array() {
        for s in all {
            validate(doc, s, value, at, errors);
        }
    }
    if let Some(one) = schema["oneOf"].as_array() {
        let matching = one
            .iter()
            .filter(|s| {
                let mut e = Vec::new();
                validate(doc, s, value, at, &mut e);
                e.is_empty()
            })
            .count();
        if matching != 1 {
            errors.push(format!("{at}: matches {matching} of oneOf, not 1"));
        }
    }
    if let Some(kind) = schema["type"].as_str() {
        let ok = match kind {
            "object" => value.is_object(),
            "array" => value.is_array(),
            "string" => value.is_string(),
            "integer" => value.is_i64() || value.is_u64(),
            "number" => value.is_number(),
            "boolean" => value.is_boolean(),
            other => panic!("{at}: unknown type {other}"),
        };
        if !ok {
            errors.push(format!("{at}: {value} is not of type {kind}"));
            return;
        }
    }
    if let Some(options) = schema["enum"].as_array() {
        if !options.contains(value) {
            errors.push(format!("{at}: {value} is not one of {options:?}"));
        }
    }
    if let (Some(min), Some(v)) = (schema["minimum"].as_f64(), value.as_f64()) {
        if v < min {
            errors.push(format!("{at}: {v} is below the minimum {min}"));
        }
    }
    if let (Some(max), Some(v)) = (schema["maximum"].as_f64(), value.as_f64()) {
        if v > max {
            errors.push(format!("{at}: {v} is above the maximum {max}"));
        }
    }
    // `pattern` is not checked (no regex engine here); lengths count characters.
    if let (Some(max), Some(v)) = (schema["maxLength"].as_u64(), value.as_str()) {
        if v.chars().count() as u64 > max {
            errors.push(format!("{at}: longer than {max}"));
        }
    }
    if let Some(object) = value.as_object() {
        for name in schema["required"].as_array().into_iter().flatten() {
            if !object.contains_key(name.as_str().unwrap()) {
                errors.push(format!("{at}: {name} is required"));
            }
        }
        let properties = schema["properties"].as_object();
        for (key, v) in object {
            match properties.and_then(|p| p.get(key)) {
                Some(s) => validate(doc, s, v, &format!("{at}.{key}"), errors),
                None => match &schema["additionalProperties"] {
                    Value::Bool(false) => errors.push(format!("{at}: unknown property {key}")),
                    s @ Value::Object(_) => validate(doc, s, v, &format!("{at}.{key}"), errors),
                    _ => {}
                },
            }
        }
    }
    if let Some(items) = value.as_array() {
        if let Some(min) = schema["minItems"].as_u64() {
            if (items.len() as u64) < min {
                errors.push(format!("{at}: fewer than {min} items"));
            }
        }
        if let Some(max) = schema["maxItems"].as_u64() {
            if items.len() as u64 > max {
                errors.push(format!("{at}: more than {max} items"));
            }
        }
        if !schema["items"].is_null() {
            for (i, item) in items.iter().enumerate() {
                validate(doc, &schema["items"], item, &format!("{at}[{i}]"), errors);
            }
        }
    }
}

fn schema_errors(doc: &Value, schema: &Value, value: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    validate(doc, schema, value, "$", &mut errors);
    errors
}

/// Check one answer against the document; returns the operation's key ("GET /path").
fn check(doc: &Value, method: &str, path: &str, answer: &Answer) -> Option<String> {
    let template =
        template_of(doc, path).unwrap_or_else(|| panic!("{method} {path} is not documented"));
    let key = format!("{method} {template}");
    let operation = &doc["paths"][template][method.to_lowercase()];
    assert!(operation.is_object(), "{key} is not documented");
    let status = answer.status.to_string();
    let documented = resolve(doc, &operation["responses"][&status]);
    assert!(
        documented.is_object(),
        "{key} answered {status}, which is not documented: {}",
        String::from_utf8_lossy(&answer.body)
    );
    for (name, header) in documented["headers"].as_object().into_iter().flatten() {
        let header = resolve(doc, header);
        if header["required"] == true || status == "429" {
            assert!(
                answer.headers.contains(&name.to_lowercase()),
                "{key} {status} lacks the documented {name} header"
            );
        }
    }
    match documented["content"].as_object() {
        None => assert!(answer.body.is_empty(), "{key} {status} has a body"),
        Some(content) => {
            let media = answer.content_type.split(';').next().unwrap().trim();
            let Some(entry) = content.get(media) else {
                panic!("{key} {status} answered {media:?}, documented {content:?}");
            };
            if media == "application/json" {
                let body: Value = serde_json::from_slice(&answer.body)
                    .unwrap_or_else(|e| panic!("{key} {status}: not JSON: {e}"));
                let errors = schema_errors(doc, &entry["schema"], &body);
                assert!(errors.is_empty(), "{key} {status}: {errors:?} in {body}");
            }
        }
    }
    Some(key)
}

fn documented_operations(doc: &Value) -> BTreeSet<String> {
    let mut all = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in ["get", "post", "put", "patch", "delete"] {
            if item[method].is_object() {
                all.insert(format!("{} {path}", method.to_uppercase()));
            }
        }
    }
    all
}

#[tokio::test]
async fn every_documented_operation_answers_as_documented_and_nothing_else_is_served() {
    let s = state().await;
    let served = send(&s, "GET", "/api/v1/openapi.json", None, &[]).await;
    assert_eq!(served.status, 200);
    assert_eq!(served.content_type, "application/json");
    let doc: Value = served.json();
    let caps = onpyrunner_supervisor::limits::Caps::default();
    assert_eq!(
        doc,
        serde_json::from_str::<Value>(&onpyrunner::openapi::document(&caps)).unwrap(),
        "the file, with each language's limits"
    );
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.0."));
    let body_schema = json!({"$ref": "#/components/schemas/RunBody"});
    let mut exercised = BTreeSet::new();
    let mut call =
        async |method: &str, path: &str, body: Option<&str>, headers: &[(&str, &str)]| {
            let answer = send(&s, method, path, body, headers).await;
            if let Some(key) = check(&doc, method, path, &answer) {
                exercised.insert(key);
            }
            answer
        };

    for path in ["/healthz", "/metrics", "/api/v1/languages"] {
        assert_eq!(call("GET", path, None, &[]).await.status, 200, "{path}");
    }

    // Accepted bodies are valid RunBody documents.
    let good = [
        json!({"language": "python", "code": "print(input())", "stdin": "hi\n", "limits": {"wall_ms": 5000}}),
        json!({"language": "python", "files": [{"name": "main.py", "content": "import sys\nprint(sys.argv[1:])"}], "args": ["a"]}),
    ];
    for body in &good {
        assert_eq!(
            schema_errors(&doc, &body_schema, body),
            Vec::<String>::new()
        );
        let answer = call("POST", "/api/v1/runs", Some(&body.to_string()), &[]).await;
        assert_eq!(
            answer.status,
            200,
            "{}",
            String::from_utf8_lossy(&answer.body)
        );
    }
    // Piston's routes, at both prefixes: a run as text/plain, a refusal.
    let piston = json!({"language": "py", "version": "*", "files": [{"content": "print(1)"}]});
    let piston_schema = json!({"$ref": "#/components/schemas/PistonExecute"});
    assert_eq!(
        schema_errors(&doc, &piston_schema, &piston),
        Vec::<String>::new()
    );
    for prefix in ["/api/v2", "/api/v2/piston"] {
        let runtimes = format!("{prefix}/runtimes");
        assert_eq!(call("GET", &runtimes, None, &[]).await.status, 200);
        let execute = format!("{prefix}/execute");
        let text = [("content-type", "text/plain")];
        let answer = call("POST", &execute, Some(&piston.to_string()), &text).await;
        assert_eq!(
            answer.status,
            200,
            "{}",
            String::from_utf8_lossy(&answer.body)
        );
        assert_eq!(call("POST", &execute, Some("{}"), &[]).await.status, 400);
    }
    // Judge0's routes: the information, a submission to its end, its refusals.
    for path in [
        "/about",
        "/version",
        "/config_info",
        "/system_info",
        "/workers",
        "/statuses",
        "/languages",
        "/languages/all",
        "/languages/71",
    ] {
        assert_eq!(call("GET", path, None, &[]).await.status, 200, "{path}");
    }
    assert_eq!(call("GET", "/languages/70", None, &[]).await.status, 404);
    for path in ["/authenticate", "/authorize"] {
        assert_eq!(call("POST", path, None, &[]).await.status, 200, "{path}");
    }
    let submission = json!({"source_code": "print(input())", "language_id": 71, "stdin": "hi"});
    let created = call(
        "POST",
        "/submissions?wait=true&fields=*",
        Some(&submission.to_string()),
        &[],
    )
    .await;
    assert_eq!(
        created.status,
        201,
        "{}",
        String::from_utf8_lossy(&created.body)
    );
    let token = created.json()["token"].as_str().unwrap().to_string();
    let one = format!("/submissions/{token}");
    assert_eq!(call("GET", &one, None, &[]).await.status, 200);
    assert_eq!(
        call("GET", &format!("{one}?fields=nope"), None, &[])
            .await
            .status,
        400
    );
    let batch = format!("/submissions/batch?tokens={token},nope");
    assert_eq!(call("GET", &batch, None, &[]).await.status, 200);
    assert_eq!(
        call("GET", "/submissions/batch", None, &[]).await.status,
        400
    );
    assert_eq!(
        call("GET", "/submissions?per_page=5", None, &[])
            .await
            .status,
        200
    );
    assert_eq!(
        call("GET", "/submissions?page=0", None, &[]).await.status,
        400
    );
    let refused = json!({"submissions": [{"source_code": "x", "language_id": 70}]});
    let answer = call(
        "POST",
        "/submissions/batch",
        Some(&refused.to_string()),
        &[],
    )
    .await;
    assert_eq!(answer.status, 422);
    let items = json!({"submissions": [{"source_code": "print(2)", "language_id": 71}, {}]});
    let answer = call("POST", "/submissions/batch", Some(&items.to_string()), &[]).await;
    assert_eq!(answer.status, 201);
    let second = answer.json()[0]["token"].as_str().unwrap().to_string();
    s.jobs.finished(&second).await.unwrap();
    let answer = call("POST", "/submissions/batch", Some("{}"), &[]).await;
    assert_eq!(answer.status, 400);
    let answer = call("POST", "/submissions", Some(r#"{"language_id": 70}"#), &[]).await;
    assert_eq!(answer.status, 422);
    assert_eq!(
        call("POST", "/submissions", Some("{x"), &[]).await.status,
        400
    );
    assert_eq!(call("DELETE", &one, None, &[]).await.status, 200);
    assert_eq!(call("DELETE", &one, None, &[]).await.status, 404);
    assert_eq!(call("GET", &one, None, &[]).await.status, 404);
    // Bodies the schema refuses are refused by the server too.
    let refused = [
        json!({"language": "python", "code": "x", "files": [{"name": "a.py", "content": ""}]}),
        json!({"language": "python"}),
        json!({"language": "python", "code": "x", "colour": "red"}),
        json!({"language": "python", "code": "x", "limits": {"wall_ms": 5}}),
        json!({"language": "python", "files": []}),
        json!({"code": "x"}),
        json!({"language": "python", "files": [{"name": "a.py"}]}),
        json!({"language": "cobol", "code": "x"}),
        json!({"language": "python", "code": "x", "limits": {"wall_ms": 1_000_000}}),
        json!({"language": "python", "code": "x", "args": vec!["a"; 65]}),
        json!({"language": "python", "files": (0..65)
            .map(|i| json!({"name": format!("f{i}.py"), "content": ""}))
            .collect::<Vec<_>>()}),
    ];
    for body in &refused {
        assert_ne!(
            schema_errors(&doc, &body_schema, body),
            Vec::<String>::new(),
            "{body}"
        );
        let answer = call("POST", "/api/v1/runs", Some(&body.to_string()), &[]).await;
        assert_eq!(answer.status, 422, "{body}");
    }
    // Refusals the schema cannot see (`pattern` is not checked here).
    let bad_name = json!({"language": "python", "files": [{"name": "../x.py", "content": ""}]});
    let answer = call("POST", "/api/v1/runs", Some(&bad_name.to_string()), &[]).await;
    assert_eq!(answer.status, 422);
    let big = json!({"language": "python", "code": "#".repeat(2 << 20)}).to_string();
    assert_eq!(
        call("POST", "/api/v1/runs", Some(&big), &[]).await.status,
        413
    );
    assert_eq!(
        call("POST", "/api/v1/runs", Some("{oops"), &[])
            .await
            .status,
        400
    );
    assert_eq!(call("POST", "/api/v1/runs", None, &[]).await.status, 411);
    assert_eq!(
        call("POST", "/api/v1/jobs", Some("[]"), &[]).await.status,
        422
    );

    // One job holds the only slot and one waits in the one-place queue: the next runs are
    // refused with 429. (A run's slot is free only once its container is gone: wait for that.)
    let started = std::time::Instant::now();
    while s.engine.status().running + s.engine.status().queued > 0 {
        assert!(started.elapsed() < TIMEOUT, "the slot was never released");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let sleeper = json!({"language": "python", "code": "import time\ntime.sleep(30)"});
    let mut sleepers = Vec::new();
    for _ in 0..2 {
        let answer = call("POST", "/api/v1/jobs", Some(&sleeper.to_string()), &[]).await;
        assert_eq!(answer.status, 202);
        sleepers.push(answer.json()["id"].as_str().unwrap().to_string());
    }
    let one = json!({"language": "python", "code": "print(1)"}).to_string();
    for path in ["/api/v1/runs", "/api/v1/jobs"] {
        assert_eq!(
            call("POST", path, Some(&one), &[]).await.status,
            429,
            "{path}"
        );
    }
    // The second one hears its queue position as soon as its session task runs. The first is
    // stopped only once RUNNING: a Stop while its container is being created can leave that
    // container behind (the engine drops the create request mid-way).
    let (first, second) = (
        format!("/api/v1/jobs/{}", sleepers[0]),
        format!("/api/v1/jobs/{}", sleepers[1]),
    );
    loop {
        let queued = call("GET", &second, None, &[]).await;
        assert_eq!(queued.status, 200);
        let running = call("GET", &first, None, &[]).await.json()["state"] == "RUNNING";
        if queued.json()["queue_position"] == 1 && running {
            assert_eq!(queued.json()["state"], "READY");
            break;
        }
        assert!(started.elapsed() < TIMEOUT, "never queued");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The queued one first: stopped while queued, it never gets a container.
    for id in sleepers.iter().rev() {
        let path = format!("/api/v1/jobs/{id}");
        assert_eq!(call("DELETE", &path, None, &[]).await.status, 202);
        s.jobs.finished(id).await.unwrap();
    }
    let id = sleepers[0].clone();
    let job = format!("/api/v1/jobs/{id}");
    assert_eq!(call("GET", &job, None, &[]).await.status, 200);
    assert_eq!(call("GET", &job, None, &[]).await.status, 200);
    assert_eq!(
        call("GET", "/api/v1/jobs/nope", None, &[]).await.status,
        404
    );
    assert_eq!(
        call("DELETE", "/api/v1/jobs/nope", None, &[]).await.status,
        404
    );

    let events = format!("{job}/events");
    let answer = call("GET", &events, None, &[]).await;
    assert_eq!(answer.status, 200);
    let last_id = String::from_utf8(answer.body)
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("id:"))
        .next_back()
        .unwrap()
        .to_string();
    let resumed = call("GET", &events, None, &[("last-event-id", &last_id)]).await;
    assert_eq!(resumed.status, 204);
    let bad = call("GET", &events, None, &[("last-event-id", "x")]).await;
    assert_eq!(bad.status, 400);
    let missing = call("GET", "/api/v1/jobs/nope/events", None, &[]).await;
    assert_eq!(missing.status, 404);

    // The WebSocket routes: a plain GET, an upgrade from a foreign origin, an upgrade.
    let upgrade = [
        ("connection", "upgrade"),
        ("upgrade", "websocket"),
        ("sec-websocket-version", "13"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];
    let mut foreign = upgrade.to_vec();
    foreign.push(("origin", "http://elsewhere.example"));
    for path in ["/api/v1/ws", "/api/v2/connect", "/api/v2/piston/connect"] {
        assert_eq!(call("GET", path, None, &[]).await.status, 400, "{path}");
        assert_eq!(
            call("GET", path, None, &foreign).await.status,
            403,
            "{path}"
        );
        assert_eq!(
            call("GET", path, None, &upgrade).await.status,
            101,
            "{path}"
        );
    }

    // Probing: whatever is answered is documented.
    let mut probes: BTreeSet<String> = doc["paths"]
        .as_object()
        .unwrap()
        .keys()
        .map(|p| p.replace("{id}", &id))
        .collect();
    for extra in [
        "/api",
        "/api/",
        "/api/v1",
        "/api/v1/",
        "/api/v1/run",
        "/api/v1/runs/x",
        "/api/v1/jobs/",
        "/api/v1/jobs/x/y",
        "/api/v1/jobs/x/events/y",
        "/api/v1/jobs/x/stdin",
        "/api/v1/health",
        "/api/v1/metrics",
        "/api/v1/openapi.yaml",
        "/api/v2/execute",
        "/api/v2/runtimes",
        "/healthz/",
        "/healthz/x",
        "/metrics/",
        "/metrics/x",
    ] {
        probes.insert(extra.to_string());
    }
    for path in &probes {
        for method in ["GET", "POST", "PUT", "PATCH", "DELETE"] {
            let answer = send(&s, method, path, Some("{}"), &[]).await;
            if answer.is_no_such_route() || answer.status == 405 {
                continue;
            }
            let template = template_of(&doc, path);
            assert!(
                template.is_some_and(|t| doc["paths"][t][method.to_lowercase()].is_object()),
                "{method} {path} answers {} but is not documented",
                answer.status
            );
            check(&doc, method, path, &answer);
        }
    }

    // Shutting down: 503 from health and from runs.
    s.engine.shutdown().await;
    assert_eq!(call("GET", "/healthz", None, &[]).await.status, 503);
    assert_eq!(
        call("POST", "/api/v1/runs", Some(&one), &[]).await.status,
        503
    );
    assert_eq!(
        call("POST", "/api/v1/jobs", Some(&one), &[]).await.status,
        503
    );
    assert_eq!(
        call("GET", "/api/v1/openapi.json", None, &[]).await.status,
        200
    );

    let missing: BTreeSet<String> = documented_operations(&doc)
        .difference(&exercised)
        .cloned()
        .collect();
    assert!(missing.is_empty(), "not exercised: {missing:?}");
}

/// The bounds the document states are the code's (the caps are not configurable yet).
#[test]
fn documented_bounds_are_the_servers() {
    use onpyrunner_protocol::launch::{MAX_FILES, MAX_NAME_LEN};
    use onpyrunner_supervisor::limits::Caps;
    use onpyrunner_supervisor::run::{MAX_ARGS, MAX_ARG_BYTES, MAX_SOURCE_BYTES};
    let doc: Value = serde_json::from_str(onpyrunner::openapi::DOCUMENT).unwrap();
    let schemas = &doc["components"]["schemas"];
    let body = &schemas["RunBody"]["properties"];
    let ids: Vec<Value> = onpyrunner_languages::languages()
        .iter()
        .map(|l| json!(l.id))
        .collect();
    assert_eq!(
        body["language"]["enum"],
        json!(ids),
        "the language table changed"
    );
    assert_eq!(body["code"]["maxLength"], json!(MAX_SOURCE_BYTES));
    assert_eq!(body["files"]["maxItems"], json!(MAX_FILES));
    assert_eq!(body["args"]["maxItems"], json!(MAX_ARGS));
    assert_eq!(body["args"]["items"]["maxLength"], json!(MAX_ARG_BYTES));
    let caps = Caps::default();
    assert_eq!(body["stdin"]["maxLength"], json!(caps.stdin_bytes));
    let name = &schemas["File"]["properties"]["name"];
    assert_eq!(name["maxLength"], json!(MAX_NAME_LEN));
    let limits = &schemas["LimitRequest"]["properties"];
    assert_eq!(limits["wall_ms"]["maximum"], json!(caps.wall_ms));
    assert_eq!(limits["memory_mib"]["maximum"], json!(caps.memory_mib));
    assert_eq!(limits["cpus"]["maximum"].as_f64(), Some(caps.cpus));
    assert_eq!(limits["output_bytes"]["maximum"], json!(caps.output_bytes));
}

#[test]
fn the_validator_catches_what_the_test_relies_on() {
    let doc: Value = serde_json::from_str(onpyrunner::openapi::DOCUMENT).unwrap();
    let summary = json!({"$ref": "#/components/schemas/Summary"});
    let good = json!({"state": "FINISHED", "reason": "exited", "stage": "run", "exit_code": 0,
        "signal": null, "wall_ms": 1, "cpu_ms": 1, "memory_kib": 1, "oom_killed": false,
        "output_truncated": false, "queued_ms": 0, "error": null, "compile": null, "judge": null});
    assert_eq!(schema_errors(&doc, &summary, &good), Vec::<String>::new());
    let mut bad = good.clone();
    bad["state"] = json!("RUNNING");
    bad["wall_ms"] = json!("1");
    bad.as_object_mut().unwrap().remove("reason");
    assert_eq!(schema_errors(&doc, &summary, &bad).len(), 3);
    let job = json!({"$ref": "#/components/schemas/Job"});
    let view = json!({"id": "a", "language": "python", "state": "READY", "stdout": "",
        "stderr": "", "summary": null});
    assert_eq!(schema_errors(&doc, &job, &view), Vec::<String>::new());
    let mut view = view;
    view["summary"] = json!({"state": "FINISHED"});
    assert!(
        !schema_errors(&doc, &job, &view).is_empty(),
        "a nullable $ref is still checked"
    );
    assert_eq!(
        template_of(&doc, "/api/v1/jobs/abc/events"),
        Some("/api/v1/jobs/{id}/events")
    );
    assert_eq!(template_of(&doc, "/api/v1/nothing"), None);
}

/// The route table and the document list the same operations, path by path and method by
/// method; the IDE's page and files are the only routes left out of it, by design.
#[test]
fn the_route_table_is_the_documents_list_of_operations() {
    use onpyrunner::router::ROUTES;
    let doc: Value = serde_json::from_str(onpyrunner::openapi::DOCUMENT).unwrap();
    let methods = [
        "get", "put", "post", "delete", "options", "head", "patch", "trace",
    ];
    let mut in_document = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in methods.iter().filter(|m| item[**m].is_object()) {
            in_document.insert(format!("{} {path}", method.to_uppercase()));
        }
    }
    let mut in_table = BTreeSet::new();
    let mut undocumented = BTreeSet::new();
    for route in ROUTES {
        for method in route.methods {
            let operation = format!("{method} {}", route.path);
            if route.documented {
                assert!(in_table.insert(operation.clone()), "twice: {operation}");
            } else {
                undocumented.insert(operation);
            }
        }
    }
    assert_eq!(in_table, in_document);
    assert_eq!(
        undocumented,
        BTreeSet::from([
            "GET /".to_string(),
            "HEAD /".to_string(),
            "GET /assets/{*path}".to_string(),
            "HEAD /assets/{*path}".to_string(),
        ]),
        "only the IDE's files are left out of the document"
    );
}

/// The refusals of the per-client rules, over a stand-in runner (no daemon): 401 on every
/// route that needs a token, 429 past the rate of starting runs and past the WebSocket cap,
/// each with the documented status, headers and body.
#[tokio::test]
async fn refusals_for_tokens_rate_and_websockets_answer_as_documented() {
    use onpyrunner::identity::{Access, Identity};
    use onpyrunner::listener::Peer;
    use onpyrunner::quota::{QuotaConfig, Quotas, Rate};
    use onpyrunner::router::ROUTES;
    use onpyrunner::tokens::Tokens;
    let doc: Value = serde_json::from_str(onpyrunner::openapi::DOCUMENT).unwrap();
    let secret = "openapi-secret-0123456789";
    let tokens = Tokens::parse(&format!(
        "require_for_reads = true\n[[token]]\nname = \"t\"\nsecret = \"{secret}\"\nmax_websockets = 1"
    ))
    .unwrap();
    let quotas = QuotaConfig {
        runs: Rate {
            per_minute: 1,
            burst: 1,
        },
        ..QuotaConfig::default()
    };
    let s = AppState::new(
        onpyrunner_e2e::stand_in::StandIn::new(),
        Jobs::new(10, Duration::from_secs(60)),
    )
    .with_identity(Identity::open().with_tokens(tokens))
    .with_quotas(Quotas::new(quotas));
    let send = async |method: &str, path: &str, token: Option<&str>| {
        let mut request = warp::test::request()
            .method(method)
            .path(path)
            .extension(Peer("198.51.100.7:1".parse().unwrap()))
            .header("content-type", "application/json");
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        if method == "POST" {
            request = request.body(r#"{"language": "python", "code": "x"}"#);
        }
        let response = request.reply(&routes(s.clone())).await;
        Answer {
            status: response.status().as_u16(),
            content_type: response
                .headers()
                .get("content-type")
                .map(|v| v.to_str().unwrap().to_string())
                .unwrap_or_default(),
            headers: response
                .headers()
                .keys()
                .map(|k| k.as_str().to_string())
                .collect(),
            body: response.body().to_vec(),
        }
    };
    for route in ROUTES.iter().filter(|r| r.documented) {
        assert_ne!(
            route.access,
            Access::Open,
            "{}: documented routes are API",
            route.path
        );
        let path = route.path.replace("{id}", "0123");
        for method in route.methods {
            let answer = send(method, &path, None).await;
            assert_eq!(answer.status, 401, "{method} {path}");
            check(&doc, method, &path, &answer);
            let answer = send(method, &path, Some("wrong-0123456789abcdef")).await;
            assert_eq!(answer.status, 401, "{method} {path}");
            check(&doc, method, &path, &answer);
        }
    }
    for path in ["/api/v1/runs", "/api/v1/jobs"] {
        let _ = send("POST", path, Some(secret)).await;
        let answer = send("POST", path, Some(secret)).await;
        assert_eq!(answer.status, 429, "{path}");
        assert_eq!(answer.json()["field"], "runs_per_minute");
        check(&doc, "POST", path, &answer);
    }
    // The token's one WebSocket is taken.
    let mut headers = warp::http::HeaderMap::new();
    let bearer = format!("Bearer {secret}");
    headers.insert("authorization", bearer.parse().unwrap());
    let caller = s.identity.identify(Access::Token, None, &headers).unwrap();
    let held = s.quotas.open_websocket(&caller).unwrap();
    let answer = send("GET", "/api/v1/ws", Some(secret)).await;
    assert_eq!(answer.status, 429);
    assert_eq!(answer.json()["field"], "websockets");
    check(&doc, "GET", "/api/v1/ws", &answer);
    drop(held);
}
