//! The console: a small page served at `/console/` (event tester, delivery
//! overview, dead letters, configuration) over the admin and destination
//! routes. Its files are compiled into the binary (`console/assets/`): no build
//! step, no third-party origin.
//!
//! The files hold no secret and need no token; everything they show comes from
//! `/admin/*` and `/v1/destinations/*`, called with the admin token as a bearer
//! header (kept in the tab's `sessionStorage`, never in a cookie or a URL the
//! server sees, so there is nothing for a cross-site request to ride on).
//! Answers carry a strict Content-Security-Policy: `self` only, no inline
//! script or style, no framing.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;

use super::AppState;

/// The page's policy: its own files and API only.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                       connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; \
                       frame-ancestors 'none'";

const INDEX: &str = include_str!("console/assets/index.html");
const SCRIPT: &str = include_str!("console/assets/app.js");
const STYLE: &str = include_str!("console/assets/app.css");
const ICON: &str = include_str!("console/assets/icon.svg");

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/console", get(|| async { Redirect::permanent("/console/") }))
        .route("/console/", get(|| async { asset(INDEX, "text/html; charset=utf-8") }))
        .route(
            "/console/app.js",
            get(|| async { asset(SCRIPT, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/console/app.css",
            get(|| async { asset(STYLE, "text/css; charset=utf-8") }),
        )
        .route("/console/icon.svg", get(|| async { asset(ICON, "image/svg+xml") }))
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut response = (StatusCode::OK, body).into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}
