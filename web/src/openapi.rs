//! `GET /api/v1/openapi.json`: the OpenAPI 3.0 document of the HTTP API, kept as a file
//! (`web/openapi.json`) and embedded in the binary. `web/tests/openapi.rs` keeps it honest:
//! every documented operation is called and must answer a documented status with a body of the
//! documented shape, and every route the server answers must be documented.
use warp::http::header::CONTENT_TYPE;
use warp::reply::Response;
use warp::Reply;

/// The document.
pub const DOCUMENT: &str = include_str!("../openapi.json");

/// The answer to `GET /api/v1/openapi.json`.
pub fn reply() -> Response {
    warp::reply::with_header(DOCUMENT, CONTENT_TYPE, "application/json").into_response()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_document_is_json_of_openapi_3_0() {
        let doc: serde_json::Value = serde_json::from_str(super::DOCUMENT).unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.0."));
        assert!(doc["paths"].as_object().unwrap().len() >= 9);
    }
}
