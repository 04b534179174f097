//! The one HTTP client to Mixpanel: connection pooling, timeouts, gzip for
//! `/import`. It sends a [`Request`] and returns the raw answer; what the answer
//! means is decided by `delivery::outcome::classify`.

use std::io::Write as _;
use std::time::Duration;

use flate2::write::GzEncoder;
use flate2::Compression;

use super::api::{Endpoint, Request};

/// A raw answer from Mixpanel.
#[derive(Clone, Debug)]
pub struct Response {
    pub status: u16,
    pub retry_after: Option<String>,
    /// At most [`MAX_ANSWER_BYTES`] of the body.
    pub body: Vec<u8>,
    /// The body was longer than what is kept: its length when Mixpanel said
    /// (`content-length`), else `None` with `truncated` set.
    pub truncated: bool,
    pub length: Option<u64>,
}

/// The most of an answer's body that is read and kept: enough for a strict
/// `/import` answer that lists every one of 2,000 refused records; anything
/// longer is cut there (the connection is dropped rather than read to the end).
pub const MAX_ANSWER_BYTES: usize = 1 << 20;

/// The process's client to Mixpanel (cheap to clone; clones share the pool).
#[derive(Clone, Debug)]
pub struct Client {
    http: reqwest::Client,
}

/// The `User-Agent` sent to Mixpanel.
pub const USER_AGENT: &str = concat!("mixpanel-actions/", env!("CARGO_PKG_VERSION"));

/// Gzips a body (fast level: bodies are JSON, already cheap to compress).
pub fn gzip(bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut enc = GzEncoder::new(Vec::with_capacity(bytes.len() / 4 + 64), Compression::fast());
    enc.write_all(bytes)?;
    enc.finish()
}

impl Client {
    pub fn new(timeout: Duration) -> Result<Client, reqwest::Error> {
        let http = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(64)
            .build()?;
        Ok(Client { http })
    }

    /// Sends `request`; `gzip_import` compresses `/import` bodies. `Err` is a
    /// transport failure (nothing was answered).
    pub async fn send(&self, request: &Request, gzip_import: bool) -> Result<Response, String> {
        let wire = Wire::encode(request, gzip_import)?;
        self.send_wire(&wire).await
    }

    /// Sends an encoded request (retries reuse the same bytes).
    pub async fn send_wire(&self, wire: &Wire) -> Result<Response, String> {
        let mut builder = self.http.post(&wire.url);
        for (name, value) in &wire.headers {
            builder = builder.header(*name, value);
        }
        let response = builder.body(wire.body.clone()).send().await.map_err(describe)?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let length = response.content_length();
        let mut response = response;
        let mut body = Vec::new();
        let mut truncated = false;
        while let Some(chunk) = response.chunk().await.map_err(describe)? {
            let room = MAX_ANSWER_BYTES - body.len();
            if chunk.len() > room {
                body.extend_from_slice(&chunk[..room]);
                truncated = true;
                break;
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Response {
            status,
            retry_after,
            body,
            truncated,
            length,
        })
    }
}

/// A request as it goes on the wire: URL, headers and the (possibly gzip'd)
/// body bytes. Encoding is CPU work; callers with large bodies do it off the
/// async threads, once per batch.
#[derive(Clone, Debug)]
pub struct Wire {
    pub url: String,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

impl Wire {
    pub fn encode(request: &Request, gzip_import: bool) -> Result<Wire, String> {
        let raw = request.body.encode();
        let mut headers = request.headers.clone();
        let body = if gzip_import && request.endpoint == Endpoint::Import {
            headers.push(("content-encoding", "gzip".to_owned()));
            gzip(&raw).map_err(|e| format!("gzip failed: {e}"))?
        } else {
            raw
        };
        Ok(Wire {
            url: request.url.clone(),
            headers,
            body,
        })
    }
}

/// A transport error without the URL's query or credentials.
fn describe(e: reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_body() || e.is_decode() {
        "reading the answer failed"
    } else {
        "request failed"
    };
    let e = e.without_url();
    format!("{kind}: {e}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read as _;

    #[tokio::test]
    async fn a_huge_answer_is_read_only_up_to_the_cap() {
        let app = axum::Router::new().route(
            "/import",
            axum::routing::post(|| async { (axum::http::StatusCode::BAD_REQUEST, "e".repeat(5 << 20)) }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/import", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let wire = Wire {
            url,
            headers: vec![],
            body: b"[]".to_vec(),
        };
        let answer = Client::new(Duration::from_secs(5))
            .unwrap()
            .send_wire(&wire)
            .await
            .unwrap();
        assert_eq!(answer.status, 400);
        assert_eq!(answer.body.len(), MAX_ANSWER_BYTES);
        assert!(answer.truncated);
        assert_eq!(answer.length, Some(5 << 20));
    }

    #[test]
    fn gzip_round_trips() {
        let data = b"[{\"event\":\"E\"}]".repeat(100);
        let packed = gzip(&data).unwrap();
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&packed[..]).read_to_end(&mut out).unwrap();
        assert_eq!(out, data);
        assert!(packed.len() < data.len());
    }
}
