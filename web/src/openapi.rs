//! `GET /api/v1/openapi.json`: the OpenAPI 3.0 document of the HTTP API, kept as a file
//! (`web/openapi.json`) and embedded in the binary. `web/tests/openapi.rs` keeps it honest:
//! every documented operation is called and must answer a documented status with a body of the
//! documented shape, and every route the server answers must be documented; and
//! `scripts/schemathesis.sh` generates requests from it.
//!
//! The document served is the file with `RunBody` split by language ([`document`]), so that
//! each language's `limits` has the bounds this server holds requests to: the language's
//! defaults (a request may only lower them), or the server's caps with
//! `serve --allow-raised-limits` (a token may let its holder ask for more). The file alone
//! gives the caps, and a run within them was refused for a language whose default is lower
//! (schemathesis: schema-valid request rejected).
use onpyrunner_supervisor::limits::{Caps, Limits};
use serde_json::{json, Value};
use warp::http::header::CONTENT_TYPE;
use warp::reply::Response;
use warp::Reply;

/// The file.
pub const DOCUMENT: &str = include_str!("../openapi.json");

/// The document as a server with `caps` serves it: `RunBody` is one of `RunBody_<language>`,
/// each the file's `RunBody` for that language alone, with its own `LimitRequest_<language>`.
pub fn document(caps: &Caps) -> String {
    let mut doc: Value = serde_json::from_str(DOCUMENT).expect("the document is JSON");
    let schemas = doc["components"]["schemas"]
        .as_object_mut()
        .expect("the document has schemas");
    let run = schemas["RunBody"].clone();
    let limits = schemas["LimitRequest"].clone();
    let mut variants = Vec::new();
    for language in onpyrunner_languages::languages() {
        let id = &language.id;
        let (min, max) = Limits::request_range(language, caps);
        let mut bounded = limits.clone();
        for (field, min, max) in [
            ("wall_ms", json!(min.wall_ms), json!(max.wall_ms)),
            ("memory_mib", json!(min.memory_mib), json!(max.memory_mib)),
            ("cpus", json!(min.cpus), json!(max.cpus)),
            (
                "output_bytes",
                json!(min.output_bytes),
                json!(max.output_bytes),
            ),
        ] {
            bounded["properties"][field]["minimum"] = min;
            bounded["properties"][field]["maximum"] = max;
        }
        bounded["description"] = format!(
            "{} Here, for {id}: `maximum` is what this server lets a request ask for.",
            limits["description"].as_str().unwrap_or_default()
        )
        .into();
        let mut variant = run.clone();
        variant["title"] = format!("A {id} run").into();
        variant["properties"]["language"]["enum"] = json!([id]);
        variant["properties"]["language"]["example"] = json!(id);
        variant["properties"]["limits"] =
            json!({"$ref": format!("#/components/schemas/LimitRequest_{id}")});
        schemas.insert(format!("LimitRequest_{id}"), bounded);
        schemas.insert(format!("RunBody_{id}"), variant);
        variants.push(json!({"$ref": format!("#/components/schemas/RunBody_{id}")}));
    }
    schemas.insert(
        "RunBody".into(),
        json!({"description": run["description"], "oneOf": variants}),
    );
    doc.to_string()
}

/// The answer to `GET /api/v1/openapi.json`, with the document made by [`document`].
pub fn reply(document: &str) -> Response {
    warp::reply::with_header(document.to_string(), CONTENT_TYPE, "application/json").into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use onpyrunner_supervisor::limits::LimitRequest;

    #[test]
    fn the_document_is_json_of_openapi_3_0() {
        let doc: Value = serde_json::from_str(super::DOCUMENT).unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.0."));
        assert!(doc["paths"].as_object().unwrap().len() >= 9);
    }

    /// A request at each language's documented bounds is accepted, and one step past them is
    /// refused, with limits that only go down and with raised ones.
    #[test]
    fn each_language_s_documented_limits_are_the_ones_its_runs_are_held_to() {
        for raise in [false, true] {
            let caps = Caps {
                raise,
                ..Caps::default()
            };
            let doc: Value = serde_json::from_str(&document(&caps)).unwrap();
            let schemas = &doc["components"]["schemas"];
            assert_eq!(
                schemas["RunBody"]["oneOf"].as_array().unwrap().len(),
                onpyrunner_languages::languages().len()
            );
            for language in onpyrunner_languages::languages() {
                let run = &schemas[format!("RunBody_{}", language.id)];
                assert_eq!(run["properties"]["language"]["enum"], json!([language.id]));
                let limits = &schemas[format!("LimitRequest_{}", language.id)]["properties"];
                let bound = |field: &str, end: &str| limits[field][end].as_f64().unwrap();
                let at = |end: &str| LimitRequest {
                    wall_ms: Some(bound("wall_ms", end) as u64),
                    memory_mib: Some(bound("memory_mib", end) as u64),
                    cpus: Some(bound("cpus", end)),
                    output_bytes: Some(bound("output_bytes", end) as u64),
                };
                for end in ["minimum", "maximum"] {
                    Limits::resolve(language, &at(end), &caps)
                        .unwrap_or_else(|e| panic!("{} at its {end}s: {e}", language.id));
                }
                let past = [
                    LimitRequest {
                        wall_ms: Some(bound("wall_ms", "maximum") as u64 + 1),
                        ..LimitRequest::default()
                    },
                    LimitRequest {
                        memory_mib: Some(bound("memory_mib", "maximum") as u64 + 1),
                        ..LimitRequest::default()
                    },
                    LimitRequest {
                        cpus: Some(bound("cpus", "maximum") + 0.01),
                        ..LimitRequest::default()
                    },
                    LimitRequest {
                        output_bytes: Some(bound("output_bytes", "maximum") as u64 + 1),
                        ..LimitRequest::default()
                    },
                ];
                for request in past {
                    assert!(
                        Limits::resolve(language, &request, &caps).is_err(),
                        "{} past its maximum: {request:?}",
                        language.id
                    );
                }
            }
        }
    }
}
