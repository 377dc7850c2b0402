//! Judge0 CE 1.13.1's routes in process (warp's test client): the information routes and the
//! refusals over a stand-in runner; submissions over a real engine, daemon and images. Each
//! test asserts what a Judge0 client sees.
mod support;
use onpyrunner::judge0::callback::Callbacks;
use onpyrunner::router::routes;
use onpyrunner::state::AppState;
use serde_json::{json, Value};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TIMEOUT: Duration = Duration::from_secs(180);

/// The answer's status, content type and body (JSON, or the text as a JSON string).
async fn send(s: &AppState, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut request = warp::test::request()
        .method(method)
        .path(path)
        .header("host", "127.0.0.1:2358");
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    let response = tokio::time::timeout(TIMEOUT, request.reply(&routes(s.clone())))
        .await
        .unwrap_or_else(|_| panic!("{method} {path} answers within the timeout"));
    let body = serde_json::from_slice(response.body())
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(response.body()).into()));
    (response.status().as_u16(), body)
}

async fn get(s: &AppState, path: &str) -> Value {
    let (status, body) = send(s, "GET", path, None).await;
    assert_eq!(status, 200, "{path} -> {body}");
    body
}

/// Create with `wait=true` and the given query; the 201 answer.
async fn run(s: &AppState, query: &str, submission: Value) -> Value {
    let path = format!("/submissions?wait=true&{query}");
    let (status, body) = send(s, "POST", &path, Some(submission.clone())).await;
    assert_eq!(status, 201, "{submission} -> {body}");
    body
}

/// Judge0's default fields, and only those.
fn assert_default_fields(view: &Value) {
    let mut keys: Vec<&str> = view
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    keys.sort();
    // SubmissionSerializer.default_fields, sorted.
    let default = [
        "compile_output",
        "memory",
        "message",
        "status",
        "stderr",
        "stdout",
        "time",
        "token",
    ];
    assert_eq!(keys, default, "{view}");
}

fn status_id(view: &Value) -> u64 {
    view["status"]["id"]
        .as_u64()
        .unwrap_or_else(|| panic!("{view}"))
}

#[tokio::test]
async fn information_routes_answer_in_judge0s_shapes() {
    let s = support::stand_in_state();
    let about = get(&s, "/about").await;
    assert_eq!(about["version"], "1.13.1");
    assert_eq!(about["homepage"], "/");
    assert!(about["maintainer"].is_string(), "{about}");
    assert!(about.get("source_code").is_some(), "{about}");
    assert_eq!(get(&s, "/version").await, json!("1.13.1"));
    let config = get(&s, "/config_info").await;
    assert_eq!(config.as_object().unwrap().len(), 39, "{config}");
    assert_eq!(config["enable_network"], false);
    assert_eq!(config["allow_enable_network"], false);
    assert_eq!(config["enable_callbacks"], false);
    assert_eq!(config["max_submission_batch_size"], 20);
    assert_eq!(config["max_wall_time_limit"], 10.0);
    assert_eq!(config["max_memory_limit"], 256 * 1024);
    let statuses = get(&s, "/statuses").await;
    assert_eq!(statuses.as_array().unwrap().len(), 14);
    assert_eq!(statuses[0], json!({"id": 1, "description": "In Queue"}));
    assert_eq!(
        statuses[10],
        json!({"id": 11, "description": "Runtime Error (NZEC)"})
    );
    let languages = get(&s, "/languages").await;
    let list = languages.as_array().unwrap();
    let names: Vec<&str> = list.iter().map(|l| l["name"].as_str().unwrap()).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "sorted by name");
    for l in list {
        assert_eq!(l.as_object().unwrap().len(), 2, "{l}");
    }
    let ids: Vec<u64> = list.iter().map(|l| l["id"].as_u64().unwrap()).collect();
    for id in [48, 49, 50, 52, 53, 54, 60, 62, 63, 71, 73, 1071] {
        assert!(ids.contains(&id), "{id} listed");
    }
    assert!(!ids.contains(&70), "Python 2 is not ours");
    let python = get(&s, "/languages/71").await;
    assert_eq!(python["name"], "Python (3.15)");
    assert_eq!(python["is_archived"], false);
    assert_eq!(python["source_file"], "main.py");
    assert_eq!(python["compile_cmd"], Value::Null);
    assert!(python["run_cmd"].as_str().unwrap().contains("main.py"));
    let c = get(&s, "/languages/50").await;
    assert_eq!(c["name"], "C (GCC 16)");
    assert!(c["compile_cmd"].as_str().unwrap().starts_with("gcc main.c"));
    let all = get(&s, "/languages/all").await;
    assert_eq!(all[0]["is_archived"], false);
    let (status, body) = send(&s, "GET", "/languages/70", None).await;
    assert_eq!(
        (status, body),
        (404, json!({"status": 404, "error": "Not Found"}))
    );
    let workers = get(&s, "/workers").await;
    assert_eq!(workers[0]["queue"], "1.13.1");
    assert!(get(&s, "/system_info").await["CPU(s)"].is_string());
    // The IDE is still served at `/`.
    let (status, _) = send(&s, "GET", "/", None).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn refusals_are_judge0s_words_and_statuses() {
    let s = support::stand_in_state();
    let post = |body: Value| {
        let s = s.clone();
        async move { send(&s, "POST", "/submissions", Some(body)).await }
    };
    assert_eq!(
        post(json!({"source_code": "x", "language_id": 999})).await,
        (
            422,
            json!({"language_id": ["language with id 999 doesn't exist"]})
        )
    );
    assert_eq!(
        post(json!({"source_code": "x", "language_id": 71, "wall_time_limit": 1000, "memory_limit": 10_000_000})).await,
        (
            422,
            json!({"wall_time_limit": ["must be less than or equal to 10.0"],
                   "memory_limit": ["must be less than or equal to 262144"]})
        )
    );
    assert_eq!(
        post(json!({"source_code": "x", "language_id": 71, "enable_network": true})).await,
        (
            422,
            json!({"enable_network": ["enabling network is not allowed"]})
        )
    );
    assert_eq!(
        post(json!({"source_code": "x", "language_id": 71, "callback_url": "http://127.0.0.1:1/"}))
            .await,
        (
            422,
            json!({"callback_url": ["setting callback is not allowed"]})
        )
    );
    let (status, body) = send(&s, "POST", "/submissions?fields=a,b", Some(json!({}))).await;
    assert_eq!(
        (status, body),
        (400, json!({"error": "invalid fields: [a, b]"}))
    );
    let unknown = "/submissions/2f7b1a8e-0000-4000-8000-000000000000";
    let (status, body) = send(&s, "GET", unknown, None).await;
    assert_eq!(
        (status, body),
        (404, json!({"status": 404, "error": "Not Found"}))
    );
    assert_eq!(send(&s, "DELETE", unknown, None).await.0, 404);
    let (status, body) = send(&s, "GET", "/submissions/batch", None).await;
    assert_eq!(
        (status, body),
        (
            400,
            json!({"error": "there should be at least one submission in a batch"})
        )
    );
    let many = vec![json!({"source_code": "x", "language_id": 71}); 21];
    let (status, body) = send(
        &s,
        "POST",
        "/submissions/batch",
        Some(json!({"submissions": many})),
    )
    .await;
    assert_eq!(
        (status, body),
        (
            400,
            json!({"error": "number of submissions in a batch should be less than or equal to 20"})
        )
    );
}

#[tokio::test]
async fn submissions_run_in_each_language_and_are_read_back() {
    let s = support::engine_state("judge0-languages").await;
    let programs = [
        (71, "print('hello', input())"),
        (
            62,
            "import java.util.*; public class Main { public static void main(String[] a) { \
             System.out.println(\"hello \" + new Scanner(System.in).nextLine()); } }",
        ),
        (63, "const l = require('fs').readFileSync(0, 'utf8').trim(); console.log('hello ' + l);"),
        (
            50,
            "#include <stdio.h>\nint main(void){char b[32];scanf(\"%31s\",b);printf(\"hello %s\\n\",b);}",
        ),
        (
            54,
            "#include <iostream>\n#include <string>\nint main(){std::string w;std::cin>>w;std::cout<<\"hello \"<<w<<\"\\n\";}",
        ),
    ];
    for (id, code) in programs {
        let (status, created) = send(
            &s,
            "POST",
            "/submissions",
            Some(json!({"source_code": code, "language_id": id, "stdin": "judge"})),
        )
        .await;
        assert_eq!(status, 201, "{id}: {created}");
        assert_eq!(created.as_object().unwrap().len(), 1, "only the token");
        let token = created["token"].as_str().unwrap().to_string();
        assert_eq!(token.len(), 36);
        assert_eq!(&token[14..15], "4", "a version-4 UUID");
        s.jobs.finished(&token).await.unwrap();
        let view = get(&s, &format!("/submissions/{token}")).await;
        assert_default_fields(&view);
        assert_eq!(view["stdout"], "hello judge\n", "{id}: {view}");
        assert_eq!(view["status"], json!({"id": 3, "description": "Accepted"}));
        let time = view["time"].as_str().unwrap();
        assert!(time.parse::<f64>().is_ok() && time.contains('.'), "{time}");
        assert!(view["memory"].as_u64().unwrap() > 0);
    }
}

#[tokio::test]
async fn wait_base64_fields_and_expected_output_render_as_judge0_does() {
    let s = support::engine_state("judge0-render").await;
    // Base64 in (leniently, no padding) and out (Ruby's encode64: 60 columns, a last newline).
    let code = "print('x' * 100)";
    let b64 = data_encoding::BASE64_NOPAD.encode(code.as_bytes());
    let view = run(
        &s,
        "base64_encoded=true&fields=*",
        json!({"source_code": b64, "language_id": 71}),
    )
    .await;
    let stdout = view["stdout"].as_str().unwrap();
    let lines: Vec<&str> = stdout.split_terminator('\n').collect();
    assert!(stdout.ends_with('\n'));
    assert_eq!(lines[0].len(), 60);
    let flat: String = lines.concat();
    let decoded = data_encoding::BASE64.decode(flat.as_bytes()).unwrap();
    assert_eq!(decoded, format!("{}\n", "x".repeat(100)).into_bytes());
    assert_eq!(
        view.as_object().unwrap().len(),
        35,
        "fields=*: every column"
    );
    assert_eq!(view["language"], json!({"id": 71, "name": "Python (3.15)"}));
    assert_eq!(view["language_id"], 71);
    assert_eq!(view["status_id"], 3);
    assert_eq!(view["exit_code"], 0);
    assert_eq!(view["exit_signal"], Value::Null);
    assert_eq!(view["wall_time_limit"], "10.0");
    let created = view["created_at"].as_str().unwrap();
    assert_eq!(created.len(), 24, "{created}");
    assert!(created.ends_with('Z') && created.as_bytes()[19] == b'.');
    assert!(view["finished_at"].is_string());
    assert!(view["wall_time"].is_string());
    // A fields list.
    let token = view["token"].as_str().unwrap();
    let picked = get(
        &s,
        &format!("/submissions/{token}?fields=stdout,status_id,language_id"),
    )
    .await;
    assert_eq!(
        picked,
        json!({"stdout": format!("{}\n", "x".repeat(100)), "status_id": 3, "language_id": 71})
    );
    // Expected output: Judge0's whitespace rule, Accepted and Wrong Answer.
    let accepted = run(
        &s,
        "",
        json!({"source_code": "print(int(input()) * 2, '  ')\nprint()", "language_id": 71,
               "stdin": "21", "expected_output": "42"}),
    )
    .await;
    assert_eq!(status_id(&accepted), 3, "{accepted}");
    let wrong = run(
        &s,
        "",
        json!({"source_code": "print(41)", "language_id": 71, "expected_output": "42"}),
    )
    .await;
    assert_eq!(
        wrong["status"],
        json!({"id": 4, "description": "Wrong Answer"})
    );
    assert_eq!(wrong["stdout"], "41\n");
}

#[tokio::test]
async fn failures_get_judge0s_statuses() {
    let s = support::engine_state("judge0-failures").await;
    let compile = run(
        &s,
        "fields=status,compile_output,stdout,time,memory",
        json!({"source_code": "int main( {", "language_id": 50}),
    )
    .await;
    assert_eq!(
        compile["status"],
        json!({"id": 6, "description": "Compilation Error"})
    );
    assert!(
        compile["compile_output"]
            .as_str()
            .unwrap()
            .contains("error"),
        "{compile}"
    );
    assert_eq!(compile["stdout"], Value::Null);
    assert_eq!(compile["time"], Value::Null);
    assert_eq!(compile["memory"], Value::Null);

    let timeout = run(
        &s,
        "fields=status,message,exit_code",
        json!({"source_code": "while True: pass", "language_id": 71, "cpu_time_limit": 1}),
    )
    .await;
    assert_eq!(
        timeout["status"],
        json!({"id": 5, "description": "Time Limit Exceeded"})
    );
    assert_eq!(timeout["message"], "Time limit exceeded");

    let nzec = run(
        &s,
        "fields=status,message,exit_code,exit_signal,stderr",
        json!({"source_code": "import sys\nprint('bad', file=sys.stderr)\nsys.exit(3)", "language_id": 71}),
    )
    .await;
    assert_eq!(
        nzec["status"],
        json!({"id": 11, "description": "Runtime Error (NZEC)"})
    );
    assert_eq!(nzec["exit_code"], 3);
    assert_eq!(nzec["exit_signal"], Value::Null);
    assert_eq!(nzec["message"], "Exited with error status 3");
    assert_eq!(nzec["stderr"], "bad\n");

    let segfault = run(
        &s,
        "fields=status,message,exit_code,exit_signal",
        json!({"source_code": "int main(void){volatile int *p = 0; *p = 1; return 0;}", "language_id": 50}),
    )
    .await;
    assert_eq!(
        segfault["status"],
        json!({"id": 7, "description": "Runtime Error (SIGSEGV)"})
    );
    assert_eq!(segfault["exit_signal"], 11);
    assert_eq!(segfault["exit_code"], 0);
    assert_eq!(segfault["message"], "Caught fatal signal 11");
}

#[tokio::test]
async fn batches_mix_valid_and_invalid_and_delete_forgets() {
    let s = support::engine_state("judge0-batch").await;
    let (status, answer) = send(
        &s,
        "POST",
        "/submissions/batch",
        Some(json!({"submissions": [
            {"source_code": "print(1)", "language_id": 71},
            {"source_code": "x", "language_id": 999},
            {"source_code": "print(2)", "language_id": 71},
        ]})),
    )
    .await;
    assert_eq!(status, 201, "{answer}");
    assert_eq!(
        answer[1],
        json!({"language_id": ["language with id 999 doesn't exist"]})
    );
    let tokens: Vec<String> = [0, 2]
        .iter()
        .map(|&i| answer[i]["token"].as_str().unwrap().to_string())
        .collect();
    for token in &tokens {
        s.jobs.finished(token).await.unwrap();
    }
    let unknown = "00000000-0000-4000-8000-000000000000";
    let path = format!(
        "/submissions/batch?tokens={},{unknown},{}&fields=stdout,token",
        tokens[0], tokens[1]
    );
    let batch = get(&s, &path).await;
    assert_eq!(
        batch,
        json!({"submissions": [
            {"stdout": "1\n", "token": tokens[0]},
            null,
            {"stdout": "2\n", "token": tokens[1]},
        ]})
    );
    // The index lists the caller's own, newest first.
    let page = get(&s, "/submissions?per_page=1&fields=token").await;
    assert_eq!(page["meta"]["total_count"], 2);
    assert_eq!(page["meta"]["total_pages"], 2);
    assert_eq!(page["meta"]["next_page"], 2);
    assert_eq!(page["meta"]["prev_page"], Value::Null);
    // DELETE answers what was deleted, base64, and forgets it.
    let one = format!("/submissions/{}?fields=stdout,status", tokens[0]);
    let (status, deleted) = send(&s, "DELETE", &one, None).await;
    assert_eq!(status, 200);
    assert_eq!(deleted["stdout"], "MQo=\n");
    assert_eq!(deleted["status"]["id"], 3);
    assert_eq!(send(&s, "GET", &one, None).await.0, 404);
}

/// One HTTP request read off `listener`, answered 200: its request line, headers and body.
async fn hear_one(listener: tokio::net::TcpListener) -> (String, String) {
    let (mut conn, _) = listener.accept().await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let n = conn.read(&mut buf).await.unwrap();
        assert!(n > 0, "the request ended early");
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).to_string();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            if body.len() >= length {
                conn.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                )
                .await
                .unwrap();
                return (head.to_string(), body.to_string());
            }
        }
    }
}

#[tokio::test]
async fn a_callback_is_put_to_an_allowed_host_only() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let s = support::engine_state("judge0-callback")
        .await
        .with_judge0_callbacks(Callbacks::parse(&[format!("127.0.0.1:{port}")]).unwrap());
    // Another port of the same host is not allowed.
    let (status, body) = send(
        &s,
        "POST",
        "/submissions",
        Some(json!({"source_code": "print(1)", "language_id": 71,
                    "callback_url": format!("http://127.0.0.1:{}/", port + 1)})),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert!(body["callback_url"][0]
        .as_str()
        .unwrap()
        .contains("not allowed"));
    let config = get(&s, "/config_info").await;
    assert_eq!(config["enable_callbacks"], true);
    let (status, created) = send(
        &s,
        "POST",
        "/submissions",
        Some(
            json!({"source_code": "print('called back')", "language_id": 71,
                    "callback_url": format!("http://127.0.0.1:{port}/hook?x=1")}),
        ),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let (head, body) = tokio::time::timeout(TIMEOUT, hear_one(listener))
        .await
        .expect("the callback comes");
    assert!(head.starts_with("PUT /hook?x=1 HTTP/1.1"), "{head}");
    assert!(head
        .to_ascii_lowercase()
        .contains("content-type: application/json"));
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["token"], created["token"]);
    assert_eq!(body["status"]["id"], 3);
    assert_eq!(body["stdout"], "Y2FsbGVkIGJhY2sK\n", "base64");
    assert_default_fields(&body);
}
