//! Error answers of the API: `{"error": message, "code": CODE}` with the HTTP status of the protocol's code.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use pm_client::ErrorKind;
use pm_protocol::ErrorCode;
use serde_json::{json, Value};

/// An error answer: `{"error": message, "code": CODE}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: String,
    message: String,
    pub(super) extra: Option<Value>,
}

impl ApiError {
    pub(super) fn new(status: StatusCode, code: &str, message: impl Into<String>) -> ApiError {
        ApiError { status, code: code.to_string(), message: message.into(), extra: None }
    }

    pub(super) fn bad(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "INVALID_REQUEST", message)
    }

    /// A `400` about query or body parameter `name`.
    pub(super) fn param(name: &str, message: impl std::fmt::Display) -> ApiError {
        let mut e = ApiError::bad(format!("{name}: {message}"));
        e.extra = Some(json!({"param": name}));
        e
    }

    /// The parameter a `400` names.
    #[cfg(test)]
    pub(super) fn param_name(&self) -> Option<&str> {
        self.extra.as_ref()?.get("param")?.as_str()
    }

    pub(super) fn of_code(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError::new(status_of(code), code.as_str_name(), message)
    }
}

impl From<pm_client::Error> for ApiError {
    fn from(e: pm_client::Error) -> ApiError {
        if let Some(r) = e.redirect() {
            let mut err = ApiError::new(
                StatusCode::MISDIRECTED_REQUEST,
                "REDIRECT",
                format!("node {} owns this key: send the request to its HTTP API", r.node),
            );
            err.extra = Some(json!({"node": r.node}));
            return err;
        }
        match (e.code(), e.kind()) {
            (Some(code), _) => ApiError::of_code(code, e.message()),
            (None, ErrorKind::Timeout) => ApiError::new(StatusCode::GATEWAY_TIMEOUT, "TIMEOUT", e.to_string()),
            _ => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL", e.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({"error": self.message, "code": self.code});
        if let (Some(Value::Object(extra)), Some(obj)) = (self.extra, body.as_object_mut()) {
            obj.extend(extra);
        }
        let mut resp = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

/// The HTTP status of a protocol error code.
pub(super) fn status_of(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::Ok => StatusCode::OK,
        ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
        ErrorCode::RoleNotAllowed => StatusCode::FORBIDDEN,
        ErrorCode::NotFound => StatusCode::NOT_FOUND,
        ErrorCode::AlreadyExists => StatusCode::CONFLICT,
        ErrorCode::InvalidTask | ErrorCode::MalformedFrame => StatusCode::BAD_REQUEST,
        ErrorCode::LimitExceeded | ErrorCode::FrameTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::StoreFull | ErrorCode::StoreFailed | ErrorCode::ShuttingDown | ErrorCode::TooManyConnections => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        ErrorCode::Timeout => StatusCode::GATEWAY_TIMEOUT,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// A `500`: the node answered something it should not have.
pub(super) fn internal(msg: &str) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL", msg)
}
