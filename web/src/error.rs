//! Errors as clients get them: JSON `{error, field?, limit?}` with a fitting status (and
//! `Retry-After` where waiting helps), the same on REST, SSE and WebSocket. On Piston's routes
//! (`/api/v2/`) they also carry Piston's `message` ([`for_path`]).
use onpyrunner_supervisor::engine::SubmitError;
use serde::Serialize;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::Reply;

/// An error as clients get it.
#[derive(Debug, Clone, Serialize)]
pub struct ApiError {
    #[serde(skip)]
    pub status: StatusCode,
    #[serde(skip)]
    pub retry_after: Option<u64>,
    /// The `WWW-Authenticate` challenge of a 401.
    #[serde(skip)]
    pub authenticate: Option<&'static str>,
    pub error: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, error: impl Into<String>) -> Self {
        ApiError {
            status,
            retry_after: None,
            authenticate: None,
            error: error.into(),
            field: None,
            limit: None,
        }
    }

    pub fn field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    pub fn limit(mut self, limit: impl ToString) -> Self {
        self.limit = Some(limit.to_string());
        self
    }

    /// The answer. The error stays in the response's extensions, for [`for_path`].
    pub fn into_response(self) -> Response {
        let status = self.status;
        let retry_after = self.retry_after;
        let authenticate = self.authenticate;
        let mut response =
            warp::reply::with_status(warp::reply::json(&self), status).into_response();
        response.extensions_mut().insert(Rendered(self));
        if let Some(secs) = retry_after {
            response
                .headers_mut()
                .insert("retry-after", secs.to_string().parse().expect("digits"));
        }
        if let Some(challenge) = authenticate {
            response.headers_mut().insert(
                "www-authenticate",
                warp::http::HeaderValue::from_static(challenge),
            );
        }
        response
    }
}

/// The error an answer was made from (see [`ApiError::into_response`]).
#[derive(Debug, Clone)]
struct Rendered(ApiError);

/// The prefix of Piston's routes (`piston.rs`, `piston_ws.rs`).
pub const PISTON_PREFIX: &str = "/api/v2/";

/// The answer to a request for `path`, as it leaves the service. A Piston client reads an
/// error's `message` (Piston answers `{message}`), so on Piston's routes an error of ours,
/// whichever layer refused (tokens, rate, body bounds, Host, Origin, the WebSocket cap, the
/// queue), also carries `message`, equal to `error`, beside our own fields. Every such error
/// is made by [`ApiError::into_response`], so this one place sees them all.
pub fn for_path(path: &str, mut response: Response) -> Response {
    let Some(Rendered(err)) = response.extensions_mut().remove::<Rendered>() else {
        return response;
    };
    if !path.starts_with(PISTON_PREFIX) {
        return response;
    }
    #[derive(Serialize)]
    struct WithMessage<'a> {
        message: &'a str,
        #[serde(flatten)]
        error: &'a ApiError,
    }
    let body = serde_json::to_vec(&WithMessage {
        message: &err.error,
        error: &err,
    })
    .expect("errors always serialize");
    *response.body_mut() = warp::hyper::body::Bytes::from(body).into();
    response
}

impl From<SubmitError> for ApiError {
    fn from(e: SubmitError) -> Self {
        let message = e.to_string();
        match e {
            SubmitError::Invalid(invalid) => {
                let mut err =
                    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, message).field(invalid.field);
                err.limit = invalid.limit;
                err
            }
            SubmitError::Busy(busy) => {
                let mut err =
                    ApiError::new(StatusCode::TOO_MANY_REQUESTS, message).limit(busy.max_queued);
                err.retry_after = Some(busy.retry_after_secs());
                err
            }
            SubmitError::ClientBusy { max } => {
                let mut err = ApiError::new(StatusCode::TOO_MANY_REQUESTS, message)
                    .field("client")
                    .limit(max);
                err.retry_after = Some(1);
                err
            }
            SubmitError::LanguageUnavailable { .. } => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, message).field("language")
            }
            _ => {
                let mut err = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, message);
                err.retry_after = Some(5);
                err
            }
        }
    }
}

/// 404 for a job id the table does not hold.
pub fn no_such_job(id: &str) -> Response {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("no job {id:?} (unknown, or expired)"),
    )
    .field("id")
    .into_response()
}
