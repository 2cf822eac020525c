//! The dashboard at `/`: one self-contained page (inline CSS and JS, nothing fetched from
//! elsewhere) that reads the API with a key given in the URL fragment (`/#key=...`, never sent
//! to the server in the page request) and follows the event stream over the WebSocket.

use axum::http::header;
use axum::response::{IntoResponse, Response};

const PAGE: &str = include_str!("dashboard.html");

pub async fn page() -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8"), (header::CACHE_CONTROL, "no-store")], PAGE).into_response()
}
