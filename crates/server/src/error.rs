//! The API's errors: a status code and a JSON body `{"error": {"code", "message"}}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    /// A stable, machine-readable code (documented in docs/api.md).
    pub code: &'static str,
    /// What went wrong and what to do about it.
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, code, message: message.into() }
    }
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }
    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
    }
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": { "code": self.code, "message": self.message } });
        (self.status, Json(body)).into_response()
    }
}

impl From<crate::engine_task::SubmitError> for ApiError {
    fn from(e: crate::engine_task::SubmitError) -> ApiError {
        use crate::engine_task::SubmitError;
        match e {
            SubmitError::Journal(why) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_durable",
                format!("the journal could not make the commands durable, so none of them is acknowledged or applied: {why}; check the disk (space, permissions, errors in the system log), then restart the service"),
            ),
            SubmitError::Invalid { index, reason } => ApiError::bad_request("invalid_command", format!("command {index}: {reason}")),
            SubmitError::Stopped => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "stopped", "the engine thread has stopped; the service is shutting down"),
        }
    }
}
