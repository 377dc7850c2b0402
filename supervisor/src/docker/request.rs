//! Request shapes, built apart from sending them so they are unit-tested without a daemon.
use super::types::ContainerConfig;
use hyper::Method;
use std::collections::HashMap;

/// API version we speak; docker.io 20.10 serves 1.41.
pub const API_VERSION: &str = "v1.41";

/// Body of a request before it is sent.
#[derive(Debug, PartialEq)]
pub enum Payload {
    Empty,
    Json(Vec<u8>),
    /// A tar archive, given whole (small build contexts).
    Tar(Vec<u8>),
    /// A tar archive streamed by the caller (a root filesystem).
    TarStream,
}

/// A request to the Engine API: method, path with query, body, and a name for errors.
#[derive(Debug, PartialEq)]
pub struct ApiRequest {
    pub op: &'static str,
    pub method: Method,
    pub path: String,
    pub payload: Payload,
}

impl ApiRequest {
    fn new(op: &'static str, method: Method, path: String) -> Self {
        ApiRequest {
            op,
            method,
            path: format!("/{API_VERSION}{path}"),
            payload: Payload::Empty,
        }
    }
}

/// Percent-encode a query value (RFC 3986 unreserved characters pass as they are).
pub fn encode_query_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `filters` query value: `{"label": ["k=v", ...]}` and the like.
pub fn filters(filters: &[(&str, Vec<String>)]) -> String {
    let map: HashMap<&str, &Vec<String>> = filters.iter().map(|(k, v)| (*k, v)).collect();
    encode_query_value(&serde_json::to_string(&map).expect("string map serializes"))
}

/// Container ids and image names go into paths: refuse anything that could change the path.
fn path_segment(value: &str) -> String {
    encode_query_value(value)
}

pub fn ping() -> ApiRequest {
    ApiRequest::new("ping", Method::GET, "/_ping".into())
}

pub fn info() -> ApiRequest {
    ApiRequest::new("info", Method::GET, "/info".into())
}

pub fn version() -> ApiRequest {
    ApiRequest::new("version", Method::GET, "/version".into())
}

pub fn inspect_image(name: &str) -> ApiRequest {
    ApiRequest::new(
        "inspect image",
        Method::GET,
        format!("/images/{}/json", path_segment(name)),
    )
}

/// `POST /images/create?fromSrc=-`: import a root filesystem tarball streamed as the body.
pub fn import_image(repo: &str, tag: &str, changes: &[&str]) -> ApiRequest {
    let mut path = format!(
        "/images/create?fromSrc=-&repo={}&tag={}",
        encode_query_value(repo),
        encode_query_value(tag)
    );
    for change in changes {
        path.push_str(&format!("&changes={}", encode_query_value(change)));
    }
    let mut req = ApiRequest::new("import image", Method::POST, path);
    req.payload = Payload::TarStream;
    req
}

/// `POST /build` with a whole build context (a tar with a Dockerfile at its root).
pub fn build_image(tag: &str, context_tar: Vec<u8>) -> ApiRequest {
    let path = format!(
        "/build?t={}&rm=1&forcerm=1&networkmode=none",
        encode_query_value(tag)
    );
    let mut req = ApiRequest::new("build image", Method::POST, path);
    req.payload = Payload::Tar(context_tar);
    req
}

pub fn remove_image(name: &str) -> ApiRequest {
    ApiRequest::new(
        "remove image",
        Method::DELETE,
        format!("/images/{}", path_segment(name)),
    )
}

pub fn create_container(name: Option<&str>, config: &ContainerConfig) -> ApiRequest {
    let path = match name {
        Some(name) => format!("/containers/create?name={}", encode_query_value(name)),
        None => "/containers/create".into(),
    };
    let mut req = ApiRequest::new("create container", Method::POST, path);
    req.payload = Payload::Json(serde_json::to_vec(config).expect("container config serializes"));
    req
}

fn container_op(op: &'static str, method: Method, id: &str, action: &str) -> ApiRequest {
    ApiRequest::new(
        op,
        method,
        format!("/containers/{}{action}", path_segment(id)),
    )
}

pub fn start_container(id: &str) -> ApiRequest {
    container_op("start container", Method::POST, id, "/start")
}

/// The attach request; sent on its own connection and upgraded to a raw stream.
pub fn attach_container(id: &str) -> ApiRequest {
    container_op(
        "attach container",
        Method::POST,
        id,
        "/attach?stream=1&stdin=1&stdout=1&stderr=1",
    )
}

/// `condition=next-exit` is wrong for a container that already exited; `not-running` returns
/// at once in that case.
pub fn wait_container(id: &str) -> ApiRequest {
    container_op(
        "wait container",
        Method::POST,
        id,
        "/wait?condition=not-running",
    )
}

/// `GET /containers/{id}/export`: the container's filesystem as a tar stream (it need not have
/// been started).
pub fn export_container(id: &str) -> ApiRequest {
    container_op("export container", Method::GET, id, "/export")
}

pub fn inspect_container(id: &str) -> ApiRequest {
    container_op("inspect container", Method::GET, id, "/json")
}

/// One sample of the container's cgroup counters, without waiting for a second one.
pub fn container_stats(id: &str) -> ApiRequest {
    container_op(
        "container stats",
        Method::GET,
        id,
        "/stats?stream=false&one-shot=true",
    )
}

pub fn kill_container(id: &str, signal: &str) -> ApiRequest {
    let action = format!("/kill?signal={}", encode_query_value(signal));
    container_op("kill container", Method::POST, id, &action)
}

/// A process to run in a running container, as the container's own user, with no stdio
/// attached. The command is an argument vector (no shell parses it unless it is a shell).
pub fn create_exec(id: &str, cmd: &[&str]) -> ApiRequest {
    let mut req = container_op("create exec", Method::POST, id, "/exec");
    let body = serde_json::json!({
        "Cmd": cmd,
        "AttachStdin": false,
        "AttachStdout": false,
        "AttachStderr": false,
        "Tty": false,
    });
    req.payload = Payload::Json(body.to_string().into_bytes());
    req
}

/// Start an exec made by [`create_exec`], detached: the daemon answers once it started.
pub fn start_exec(exec_id: &str) -> ApiRequest {
    let mut req = ApiRequest::new(
        "start exec",
        Method::POST,
        format!("/exec/{}/start", path_segment(exec_id)),
    );
    req.payload = Payload::Json(br#"{"Detach":true,"Tty":false}"#.to_vec());
    req
}

pub fn pause_container(id: &str) -> ApiRequest {
    container_op("pause container", Method::POST, id, "/pause")
}

pub fn unpause_container(id: &str) -> ApiRequest {
    container_op("unpause container", Method::POST, id, "/unpause")
}

/// Force-remove with its anonymous volumes: works on running and paused containers too.
pub fn remove_container(id: &str) -> ApiRequest {
    container_op("remove container", Method::DELETE, id, "?force=1&v=1")
}

/// Every container (running or not) carrying all of these labels (`key` or `key=value`).
pub fn list_containers(labels: &[String]) -> ApiRequest {
    let path = format!(
        "/containers/json?all=1&filters={}",
        filters(&[("label", labels.to_vec())])
    );
    ApiRequest::new("list containers", Method::GET, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_containers_filters_by_label_url_encoded() {
        let req = list_containers(&["onpyrunner.owner=abc".into()]);
        assert_eq!(req.method, Method::GET);
        assert_eq!(
            req.path,
            "/v1.41/containers/json?all=1&filters=%7B%22label%22%3A%5B%22onpyrunner.owner%3Dabc%22%5D%7D"
        );
    }

    #[test]
    fn remove_is_forced_and_removes_volumes() {
        let req = remove_container("abc123");
        assert_eq!(req.method, Method::DELETE);
        assert_eq!(req.path, "/v1.41/containers/abc123?force=1&v=1");
    }

    #[test]
    fn ids_cannot_escape_their_path_segment() {
        let req = start_container("../../images/x");
        assert_eq!(req.path, "/v1.41/containers/..%2F..%2Fimages%2Fx/start");
    }

    #[test]
    fn create_sends_pascal_case_json() {
        let config = ContainerConfig {
            image: "img:1".into(),
            ..Default::default()
        };
        let req = create_container(Some("run-1"), &config);
        assert_eq!(req.path, "/v1.41/containers/create?name=run-1");
        let Payload::Json(body) = req.payload else {
            panic!("json body expected")
        };
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["Image"], "img:1");
        assert_eq!(v["HostConfig"]["ReadonlyRootfs"], false);
        assert!(v["HostConfig"]["LogConfig"].get("Type").is_some());
    }

    #[test]
    fn import_carries_repo_tag_and_changes() {
        let req = import_image("onpyrunner-base-python", "abc", &["WORKDIR /work"]);
        assert_eq!(
            req.path,
            "/v1.41/images/create?fromSrc=-&repo=onpyrunner-base-python&tag=abc&changes=WORKDIR%20%2Fwork"
        );
        assert_eq!(req.payload, Payload::TarStream);
    }

    #[test]
    fn stats_take_one_sample() {
        assert_eq!(
            container_stats("c").path,
            "/v1.41/containers/c/stats?stream=false&one-shot=true"
        );
    }

    #[test]
    fn export_is_a_get_of_the_containers_tar() {
        let req = export_container("c1");
        assert_eq!(req.method, Method::GET);
        assert_eq!(req.path, "/v1.41/containers/c1/export");
        assert_eq!(req.payload, Payload::Empty);
    }

    #[test]
    fn an_exec_runs_its_argument_vector_detached_and_its_id_stays_in_its_segment() {
        let create = create_exec("c", &["/bin/sh", "-c", "kill -s \"$1\" -- -1", "sh", "15"]);
        assert_eq!(create.method, Method::POST);
        assert_eq!(create.path, "/v1.41/containers/c/exec");
        let Payload::Json(body) = create.payload else {
            panic!("a JSON body")
        };
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["Cmd"][3], "sh");
        assert_eq!(body["Cmd"][4], "15");
        assert_eq!(body["AttachStdout"], false);
        let start = start_exec("../x?y");
        assert_eq!(start.path, "/v1.41/exec/..%2Fx%3Fy/start");
        assert_eq!(
            start.payload,
            Payload::Json(br#"{"Detach":true,"Tty":false}"#.to_vec())
        );
    }

    #[test]
    fn kill_names_the_signal() {
        assert_eq!(
            kill_container("c", "SIGKILL").path,
            "/v1.41/containers/c/kill?signal=SIGKILL"
        );
    }
}
