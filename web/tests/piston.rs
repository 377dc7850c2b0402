//! Piston v2's REST routes in process (warp's test client): the runs over a real engine, daemon
//! and images; the listing and the refusals, which start nothing, over a stand-in runner.
mod support;
use onpyrunner::router::routes;
use onpyrunner::state::AppState;
use serde_json::{json, Value};
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(120);

/// The answer's status and JSON body; `headers` are sent as they are (no content type is
/// added).
async fn send(
    s: &AppState,
    method: &str,
    path: &str,
    body: &str,
    headers: &[(&str, &str)],
) -> (u16, Value) {
    let mut request = warp::test::request()
        .method(method)
        .path(path)
        .header("host", "127.0.0.1:2000");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = tokio::time::timeout(TIMEOUT, request.body(body).reply(&routes(s.clone())))
        .await
        .unwrap_or_else(|_| panic!("{method} {path} answers within the timeout"));
    let json = serde_json::from_slice(response.body()).unwrap_or(Value::Null);
    (response.status().as_u16(), json)
}

async fn execute(s: &AppState, body: Value) -> Value {
    let (status, answer) = send(
        s,
        "POST",
        "/api/v2/execute",
        &body.to_string(),
        &[("content-type", "application/json")],
    )
    .await;
    assert_eq!(status, 200, "{body} -> {answer}");
    answer
}

#[tokio::test]
async fn runtimes_list_every_language_with_pistons_names_aliases_and_semver() {
    let s = support::stand_in_state();
    for path in [
        "/api/v2/runtimes",
        "/api/v2/runtimes/",
        "/api/v2/piston/runtimes",
        "/api/v2/piston/runtimes/",
    ] {
        let (status, list) = send(&s, "GET", path, "", &[]).await;
        assert_eq!(status, 200, "{path}");
        let list = list.as_array().unwrap().clone();
        assert_eq!(list.len(), onpyrunner_languages::languages().len());
        for runtime in &list {
            let version = runtime["version"].as_str().unwrap();
            let parts: Vec<&str> = version.split('.').collect();
            assert_eq!(parts.len(), 3, "{runtime}");
            assert!(parts.iter().all(|p| p.parse::<u64>().is_ok()), "{runtime}");
            assert!(runtime["aliases"].is_array(), "{runtime}");
        }
        let find = |name: &str| {
            list.iter()
                .find(|r| r["language"] == name)
                .unwrap_or_else(|| panic!("{name} listed"))
                .clone()
        };
        let python = find("python");
        assert!(python["version"].as_str().unwrap().starts_with("3.15."));
        for alias in ["py", "python3"] {
            assert!(python["aliases"]
                .as_array()
                .unwrap()
                .contains(&json!(alias)));
        }
        let js = find("javascript");
        assert_eq!(js["runtime"], "node");
        for alias in ["js", "node"] {
            assert!(js["aliases"].as_array().unwrap().contains(&json!(alias)));
        }
        let cpp = find("c++");
        assert_eq!(cpp["runtime"], "gcc");
        assert!(cpp["aliases"].as_array().unwrap().contains(&json!("cpp")));
        assert!(find("c")["aliases"]
            .as_array()
            .unwrap()
            .contains(&json!("gcc")));
        assert!(find("rust")["aliases"]
            .as_array()
            .unwrap()
            .contains(&json!("rs")));
        assert!(find("go")["aliases"]
            .as_array()
            .unwrap()
            .contains(&json!("golang")));
        assert!(find("pypy")["aliases"]
            .as_array()
            .unwrap()
            .contains(&json!("pypy3")));
        find("java");
    }
}

#[tokio::test]
async fn refusals_are_400_with_pistons_message_and_nothing_runs() {
    let s = support::stand_in_state();
    let files = json!([{"content": "print(1)"}]);
    for (body, message) in [
        (
            json!({"version": "*", "files": files}),
            "language is required as a string",
        ),
        (
            json!({"language": "py", "files": files}),
            "version is required as a string",
        ),
        (
            json!({"language": "py", "version": "*"}),
            "files is required as an array",
        ),
        (
            json!({"language": "py", "version": "*", "files": [{"name": "a.py"}]}),
            "files[0].content is required as a string",
        ),
        (
            json!({"language": "html", "version": "5.0.0", "files": files}),
            "html-5.0.0 runtime is unknown",
        ),
        (
            json!({"language": "python", "version": "2.7", "files": files}),
            "python-2.7 runtime is unknown",
        ),
        (
            json!({"language": "py", "version": "*", "files": [{"content": "eA==", "encoding": "base64"}]}),
            "files must include at least one utf8 encoded file",
        ),
        (
            json!({"language": "py", "version": "*", "files": files, "run_timeout": "3000"}),
            "If specified, run_timeout must be a number",
        ),
        (
            json!({"language": "py", "version": "*", "files": files, "run_memory_limit": 1e15}),
            "run_memory_limit cannot exceed the configured limit of 268435456",
        ),
        (
            json!({"language": "py", "version": "*", "files": files, "run_cpu_time": -1}),
            "run_cpu_time must be non-negative",
        ),
    ] {
        for path in ["/api/v2/execute", "/api/v2/piston/execute/"] {
            let (status, answer) = send(
                &s,
                "POST",
                path,
                &body.to_string(),
                &[("content-type", "application/json")],
            )
            .await;
            assert_eq!(status, 400, "{body}");
            assert_eq!(answer, json!({"message": message}), "{body}");
        }
    }
    let (status, answer) = send(&s, "POST", "/api/v2/execute", "{oops", &[]).await;
    assert_eq!(status, 400);
    assert!(answer["message"].is_string(), "{answer}");
}

#[tokio::test]
async fn a_cross_site_page_cannot_post_even_as_text_plain() {
    let s = support::stand_in_state();
    let body = json!({"language": "py", "version": "*", "files": [{"content": "print(1)"}]});
    for origin in ["http://evil.example", "null"] {
        let (status, _) = send(
            &s,
            "POST",
            "/api/v2/execute",
            &body.to_string(),
            &[("content-type", "text/plain"), ("origin", origin)],
        )
        .await;
        assert_eq!(status, 403, "{origin}");
    }
}

#[tokio::test]
async fn hello_in_python_and_c_with_stdin_args_and_the_compile_stage_only_for_c() {
    let s = support::engine_state("piston-hello").await;
    let python = execute(
        &s,
        json!({"language": "py", "version": "3.x", "files": [{"name": "hello.py",
            "content": "import sys\nprint('hello', input(), sys.argv[1:])"}],
            "stdin": "you", "args": ["a", "b"]}),
    )
    .await;
    assert_eq!(python["language"], "python");
    assert!(python["version"].as_str().unwrap().starts_with("3.15."));
    assert!(python.get("compile").is_none(), "{python}");
    let run = &python["run"];
    assert_eq!(run["stdout"], "hello you ['a', 'b']\n");
    assert_eq!(run["stderr"], "");
    assert_eq!(run["output"], run["stdout"]);
    assert_eq!(run["code"], 0);
    assert_eq!(run["signal"], Value::Null);
    assert_eq!(run["status"], Value::Null);
    assert_eq!(run["message"], Value::Null);
    assert!(
        run["memory"].as_u64().unwrap() > 1024 * 1024,
        "bytes: {run}"
    );
    for field in ["cpu_time", "wall_time"] {
        assert!(run[field].is_u64(), "{field}: {run}");
    }

    // No name, and stdin without its newline: Piston adds one, so a line read gets it.
    let c = execute(
        &s,
        json!({"language": "c", "version": "*", "files": [{"name": null, "content":
            "#include <stdio.h>\nint main(void){char b[16];fgets(b,16,stdin);fprintf(stderr,\"e\");printf(\"hello %s\", b);return 0;}"}],
            "stdin": "c"}),
    )
    .await;
    assert_eq!(c["language"], "c");
    let compile = &c["compile"];
    assert_eq!(compile["code"], 0, "{c}");
    assert_eq!(compile["status"], Value::Null);
    assert_eq!(c["run"]["stdout"], "hello c\n", "{c}");
    assert_eq!(c["run"]["stderr"], "e");
    assert_eq!(c["run"]["code"], 0);

    // Under the public host's prefix, with a trailing slash, as text/plain (as curl -d sends),
    // and with the memory limits piston-client sends by default: -1, Piston's "no limit", is
    // the language's default here (Piston with its default config checks nothing else).
    let body = json!({"language": "python3", "version": "*", "files": [{"content": "print(2)"}],
        "compile_memory_limit": -1, "run_memory_limit": -1});
    let (status, answer) = send(
        &s,
        "POST",
        "/api/v2/piston/execute/",
        &body.to_string(),
        &[("content-type", "text/plain")],
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["run"]["stdout"], "2\n");
    s.engine.shutdown().await;
}

#[tokio::test]
async fn failures_have_pistons_status_code_and_signal() {
    let s = support::engine_state("piston-failures").await;
    // A failed compile skips the run, and `run` is the compile.
    let broken = execute(
        &s,
        json!({"language": "gcc", "version": "*", "files": [{"name": "x.c", "content": "int main( {"}]}),
    )
    .await;
    let compile = &broken["compile"];
    assert_eq!(compile["status"], "RE", "{broken}");
    assert_eq!(compile["code"], 1);
    assert!(compile["stderr"].as_str().unwrap().contains("error"));
    assert_eq!(broken["run"], *compile);

    let exit = execute(
        &s,
        json!({"language": "python", "version": "*", "files": [{"content": "import sys\nprint('x')\nsys.exit(3)"}]}),
    )
    .await;
    assert_eq!(exit["run"]["code"], 3);
    assert_eq!(exit["run"]["status"], "RE");
    assert_eq!(exit["run"]["stdout"], "x\n");

    let timeout = execute(
        &s,
        json!({"language": "python", "version": "*", "run_timeout": 1000,
            "files": [{"content": "while True: pass"}]}),
    )
    .await;
    assert_eq!(timeout["run"]["status"], "TO", "{timeout}");
    assert_eq!(timeout["run"]["signal"], "SIGKILL");
    assert_eq!(timeout["run"]["code"], Value::Null);

    let killed = execute(
        &s,
        json!({"language": "python", "version": "*",
            "files": [{"content": "import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)"}]}),
    )
    .await;
    assert_eq!(killed["run"]["status"], "SG", "{killed}");
    assert_eq!(killed["run"]["signal"], "SIGSEGV");

    // Past the output cap (1 MiB): stdout is OL, stderr EL.
    for (stream, status) in [("stdout", "OL"), ("stderr", "EL")] {
        let answer = execute(
            &s,
            json!({"language": "python", "version": "*", "files": [{"content":
                format!("import sys\nwhile True: sys.{stream}.write('x' * 65536)")}]}),
        )
        .await;
        let run = &answer["run"];
        assert_eq!(run["status"], status, "{stream}: {}", run["message"]);
        assert_eq!(run["signal"], "SIGKILL");
        assert!(run[stream].as_str().unwrap().len() <= 1024 * 1024);
    }
    s.engine.shutdown().await;
}

/// Our own layers refuse before the Piston code runs (tokens, rate, body bounds, Host, Origin,
/// the WebSocket cap, a route or method that is not there): on Piston's routes the answer keeps
/// our `{error, field?, limit?}` and carries Piston's `message` too, the same text. Elsewhere it
/// does not. (A full queue is in tests/piston_ws.rs, over a real engine.)
#[tokio::test]
async fn our_refusals_on_pistons_routes_also_carry_pistons_message() {
    use onpyrunner::body::Bodies;
    use onpyrunner::identity::{Access, Identity};
    use onpyrunner::listener::Peer;
    use onpyrunner::quota::{QuotaConfig, Quotas, Rate};
    use onpyrunner::tokens::Tokens;
    let secret = "piston-secret-0123456789";
    let tokens = Tokens::parse(&format!(
        "[[token]]\nname = \"t\"\nsecret = \"{secret}\"\nmax_websockets = 1"
    ))
    .unwrap();
    let quotas = QuotaConfig {
        runs: Rate {
            per_minute: 1,
            burst: 1,
        },
        ..QuotaConfig::default()
    };
    let s = support::stand_in_state()
        .with_identity(Identity::open().with_tokens(tokens))
        .with_quotas(Quotas::new(quotas));
    let bearer = format!("Bearer {secret}");
    let body =
        json!({"language": "py", "version": "*", "files": [{"content": "print(1)"}]}).to_string();
    let call = async |s: &AppState, method: &str, path: &str, headers: &[(&str, &str)]| {
        let mut request = warp::test::request()
            .method(method)
            .path(path)
            .header("host", "127.0.0.1:2000")
            .extension(Peer("198.51.100.7:1".parse().unwrap()))
            .body(&body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = tokio::time::timeout(TIMEOUT, request.reply(&routes(s.clone())))
            .await
            .unwrap();
        let json: Value = serde_json::from_slice(response.body()).unwrap_or(Value::Null);
        (response.status().as_u16(), json)
    };
    let with_message = |status: u16, answer: &Value, what: &str| {
        assert!(answer["error"].is_string(), "{what}: {status} {answer}");
        assert_eq!(
            answer["message"], answer["error"],
            "{what}: {status} {answer}"
        );
    };
    let token = [("authorization", bearer.as_str())];

    let (status, answer) = call(&s, "POST", "/api/v2/execute", &[]).await;
    assert_eq!(status, 401);
    with_message(status, &answer, "no token");
    let (status, answer) = call(&s, "GET", "/api/v2/connect", &[]).await;
    assert_eq!(status, 401);
    with_message(status, &answer, "no token on the WebSocket");

    let (status, _) = call(&s, "POST", "/api/v2/execute", &token).await;
    assert_eq!(status, 200);
    let (status, answer) = call(&s, "POST", "/api/v2/piston/execute", &token).await;
    assert_eq!(status, 429);
    with_message(status, &answer, "past the rate");
    assert_eq!(answer["field"], "runs_per_minute");

    // Without tokens or rates, so that the body is what is refused.
    let open = support::stand_in_state();
    let too_large = [("content-length", "50000000")];
    let (status, answer) = call(&open, "POST", "/api/v2/execute", &too_large).await;
    assert_eq!(status, 413);
    with_message(status, &answer, "body too large");
    assert!(answer["limit"].is_string(), "{answer}");

    let (status, answer) = call(&s, "POST", "/api/v2/execute", &[("host", "evil.example")]).await;
    assert_eq!(status, 421);
    with_message(status, &answer, "Host");
    assert_eq!(answer["field"], "Host");
    let (status, answer) = call(
        &s,
        "POST",
        "/api/v2/execute",
        &[("origin", "http://evil.example")],
    )
    .await;
    assert_eq!(status, 403);
    with_message(status, &answer, "Origin");

    // The token's one WebSocket is taken.
    let mut headers = warp::http::HeaderMap::new();
    headers.insert("authorization", bearer.parse().unwrap());
    let caller = s.identity.identify(Access::Token, None, &headers).unwrap();
    let held = s.quotas.open_websocket(&caller).unwrap();
    let (status, answer) = call(&s, "GET", "/api/v2/piston/connect", &token).await;
    assert_eq!(status, 429);
    with_message(status, &answer, "WebSocket cap");
    assert_eq!(answer["field"], "websockets");
    drop(held);

    let (status, answer) = call(&s, "GET", "/api/v2/execute", &[]).await;
    assert_eq!(status, 405);
    with_message(status, &answer, "method");
    let (status, answer) = call(&s, "GET", "/api/v2/nothing", &[]).await;
    assert_eq!(status, 404);
    with_message(status, &answer, "route");

    // No room for bodies: 503.
    let mut busy = support::stand_in_state();
    busy.bodies = Bodies::new(0, Duration::from_secs(30));
    let (status, answer) = call(&busy, "POST", "/api/v2/execute", &[]).await;
    assert_eq!(status, 503);
    with_message(status, &answer, "body budget");

    // Our own routes keep our shape alone.
    let (status, answer) = call(&s, "POST", "/api/v1/runs", &[("host", "evil.example")]).await;
    assert_eq!(status, 421);
    assert!(answer.get("message").is_none(), "{answer}");
}

/// A body that does not arrive within the server's bound is 408, with Piston's `message` on
/// its routes (over a real listener: the in-process client sends bodies whole).
#[tokio::test]
async fn a_body_too_slow_is_408_with_pistons_message() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = support::stand_in_state();
    s.bodies = onpyrunner::body::Bodies::new(1 << 20, Duration::from_millis(200));
    let listener = onpyrunner::server::listen("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(warp::serve(routes(s)).incoming(listener).run());
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(
        format!(
            "POST /api/v2/execute HTTP/1.1\r\nhost: {addr}\r\ncontent-length: 100\r\n\r\n{{\"langu"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(TIMEOUT, async {
        let mut buf = [0; 4096];
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
            if answer.ends_with(b"}") {
                break;
            }
        }
    })
    .await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    let body: Value = serde_json::from_str(answer.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(body["message"], body["error"], "{body}");
}
