//! The one error type of the HTTP API. Every refusal has a status, a stable code
//! and a message that names the problem; it becomes
//! `{"success": false, "code": ..., "message": ...}`.

use std::time::Duration;

use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

/// An API refusal.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub retry_after: Option<Duration>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn too_large(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", message)
    }

    pub fn unsupported_media(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", message)
    }

    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn unavailable(message: impl Into<String>, retry_after: Duration) -> ApiError {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "unavailable",
            message: message.into(),
            retry_after: Some(retry_after),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(json!({"success": false, "code": self.code, "message": self.message}));
        let mut response = (self.status, body).into_response();
        if let Some(after) = self.retry_after {
            let secs = after.as_secs().max(1).to_string();
            if let Ok(v) = HeaderValue::from_str(&secs) {
                response.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        response
    }
}

/// A layer's answer: every refusal is JSON. An error answer that is not (an
/// extractor's or a middleware's `text/plain`, an empty 4xx) is replaced by an
/// [`ApiError`] of the same status, its message the original text (bounded);
/// the other headers (`Retry-After`, `Allow`, `Connection`) are kept.
pub async fn json_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    if !response.status().is_client_error() && !response.status().is_server_error() {
        return response;
    }
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = first_bytes(body, MAX_REWRITTEN_BYTES).await;
    let text = String::from_utf8_lossy(&text);
    let status = parts.status;
    let message = match text.trim() {
        "" => status.canonical_reason().unwrap_or("error").to_owned(),
        t => t.to_owned(),
    };
    let code = match status {
        StatusCode::BAD_REQUEST => "bad_request",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::REQUEST_TIMEOUT => "timeout",
        StatusCode::PAYLOAD_TOO_LARGE => "too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        s if s.is_server_error() => "internal",
        _ => "error",
    };
    let mut rewritten = ApiError::new(status, code, message).into_response();
    parts.headers.remove(header::CONTENT_TYPE);
    parts.headers.remove(header::CONTENT_LENGTH);
    for (name, value) in rewritten.headers() {
        parts.headers.insert(name.clone(), value.clone());
    }
    *rewritten.headers_mut() = parts.headers;
    rewritten
}

/// At most this much of a non-JSON error body becomes the message.
const MAX_REWRITTEN_BYTES: usize = 4096;

/// The first `max` bytes of a body (all of it when shorter; what could be
/// read when it fails).
async fn first_bytes(mut body: axum::body::Body, max: usize) -> Vec<u8> {
    use http_body_util::BodyExt as _;
    let mut out = Vec::new();
    while out.len() < max {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    let room = max - out.len();
                    out.extend_from_slice(data.get(..room.min(data.len())).unwrap_or_default());
                }
            }
            Some(Err(_)) | None => break,
        }
    }
    out
}

/// The answer when a handler panicked: JSON 500. The panic's text is kept
/// out of the answer and of this log line (it may hold event data); where it
/// happened is in the panic hook's report.
pub fn panicked(_panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("a request handler panicked; the request was answered 500");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "internal error: the request was not completed; retry it",
    )
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::routing::get;
    use axum::Router;
    use tower::ServiceExt as _;

    async fn call(router: Router, path: &str) -> (StatusCode, axum::http::HeaderMap, serde_json::Value) {
        let request = Request::builder().uri(path).body(Body::empty()).unwrap();
        let response = router
            .layer(axum::middleware::from_fn(json_errors))
            .oneshot(request)
            .await
            .unwrap();
        let (parts, body) = response.into_parts();
        let bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap();
        (
            parts.status,
            parts.headers,
            serde_json::from_slice(&bytes).unwrap_or_default(),
        )
    }

    #[tokio::test]
    async fn error_answers_that_are_not_json_become_api_errors() {
        let router = Router::new()
            .route(
                "/plain",
                get(|| async { (StatusCode::BAD_REQUEST, [(header::RETRY_AFTER, "7")], "no good") }),
            )
            .route("/empty", get(|| async { StatusCode::REQUEST_TIMEOUT }))
            .route("/ok", get(|| async { "fine" }))
            .route(
                "/json",
                get(|| async { ApiError::bad_request("mine", "kept as it is") }),
            );
        let (status, headers, body) = call(router.clone(), "/plain").await;
        assert_eq!(status, 400);
        assert_eq!(
            body,
            json!({"success": false, "code": "bad_request", "message": "no good"})
        );
        assert_eq!(headers[header::RETRY_AFTER], "7");
        assert!(headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("application/json"));
        let (status, _, body) = call(router.clone(), "/empty").await;
        assert_eq!(
            (status, body["code"].as_str()),
            (StatusCode::REQUEST_TIMEOUT, Some("timeout"))
        );
        assert_eq!(body["message"], "Request Timeout");
        let (_, _, body) = call(router.clone(), "/json").await;
        assert_eq!(body["code"], "mine");
        let request = Request::builder().uri("/ok").body(Body::empty()).unwrap();
        let ok = router
            .clone()
            .layer(axum::middleware::from_fn(json_errors))
            .oneshot(request)
            .await
            .unwrap();
        assert_eq!(ok.status(), 200);
        let body = axum::body::to_bytes(ok.into_body(), 1 << 20).await.unwrap();
        assert_eq!(&body[..], b"fine", "a success passes untouched");
        // A long text is cut to its first bytes, not dropped.
        let (status, _, body) = call(
            Router::new().route("/long", get(|| async { (StatusCode::NOT_FOUND, "x".repeat(10_000)) })),
            "/long",
        )
        .await;
        assert_eq!(status, 404);
        assert_eq!(body["message"].as_str().map(str::len), Some(MAX_REWRITTEN_BYTES));
    }

    #[tokio::test]
    async fn a_panic_is_a_json_500_without_its_text() {
        let response = panicked(Box::new("secret-ish event data".to_owned()));
        assert_eq!(response.status(), 500);
        let (parts, body) = response.into_parts();
        let text = axum::body::to_bytes(body, 1 << 20).await.unwrap();
        let body: serde_json::Value = serde_json::from_slice(&text).unwrap();
        assert_eq!(body["code"], "internal");
        assert!(!body.to_string().contains("secret-ish"), "{body}");
        let response = Response::from_parts(parts, Body::empty());
        assert!(response.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("application/json"));
    }
}
