//! Request bodies: size limit, gzip, nesting limit, JSON. Every refusal is an
//! [`ApiError`] that names the limit or the problem.

use std::io::Read as _;

use axum::body::{Body, Bytes};
use axum::http::HeaderMap;
use http_body_util::{BodyExt as _, LengthLimitError, Limited};
use serde_json::Value;

use super::error::ApiError;

/// Reads a whole body, at most `max_bytes` of it. Over the limit: 413
/// `too_large`; a body that cannot be read (a malformed chunk size, a
/// connection closed before the declared length): 400 `invalid_body`.
pub async fn read_limited(body: Body, max_bytes: usize) -> Result<Bytes, ApiError> {
    match Limited::new(body, max_bytes).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if over_limit(e.as_ref()) => Err(ApiError::too_large(format!(
            "request body exceeds the limit of {max_bytes} bytes"
        ))),
        Err(e) => Err(ApiError::bad_request(
            "invalid_body",
            format!("the request body could not be read: {e}"),
        )),
    }
}

/// Whether `e`, or an error it wraps, is the length limit's.
fn over_limit(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(e);
    while let Some(e) = current {
        if e.is::<LengthLimitError>() {
            return true;
        }
        current = e.source();
    }
    false
}

/// Decompresses (when `Content-Encoding: gzip`) and parses a JSON body, holding
/// the decompressed size to `max_bytes` and the nesting to `max_depth`.
pub fn parse_json(headers: &HeaderMap, raw: &[u8], max_bytes: usize, max_depth: usize) -> Result<Value, ApiError> {
    let encoding = headers
        .get("content-encoding")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let decoded;
    let bytes: &[u8] = match encoding.as_str() {
        "" | "identity" => raw,
        "gzip" | "x-gzip" => {
            decoded = gunzip(raw, max_bytes)?;
            &decoded
        }
        other => {
            return Err(ApiError::unsupported_media(format!(
                "Content-Encoding \"{other}\" is not supported (use gzip or none)"
            )))
        }
    };
    if bytes.len() > max_bytes {
        return Err(ApiError::too_large(format!(
            "request body is {} bytes; the limit is {max_bytes} bytes",
            bytes.len()
        )));
    }
    if let Some(depth) = exceeds_depth(bytes, max_depth) {
        return Err(ApiError::bad_request(
            "nesting_too_deep",
            format!("JSON nesting exceeds the limit of {max_depth} levels (at byte {depth})"),
        ));
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(
            "empty_body",
            "request body is empty; expected a JSON object",
        ));
    }
    crate::segment::json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request("invalid_json", format!("invalid JSON: {e}")))
}

/// Inflates gzip, refusing to produce more than `max_bytes` (a gzip bomb stops
/// at the limit instead of filling memory).
fn gunzip(raw: &[u8], max_bytes: usize) -> Result<Vec<u8>, ApiError> {
    let mut out = Vec::with_capacity(raw.len().saturating_mul(4).min(max_bytes));
    let limit = u64::try_from(max_bytes).unwrap_or(u64::MAX).saturating_add(1);
    let mut decoder = flate2::read::MultiGzDecoder::new(raw).take(limit);
    decoder
        .read_to_end(&mut out)
        .map_err(|e| ApiError::bad_request("invalid_gzip", format!("body is not valid gzip: {e}")))?;
    if out.len() > max_bytes {
        return Err(ApiError::too_large(format!(
            "request body decompresses to more than the limit of {max_bytes} bytes"
        )));
    }
    Ok(out)
}

/// The byte offset where nesting first goes deeper than `max_depth`, if it does.
/// Brackets inside strings do not count.
fn exceeds_depth(bytes: &[u8], max_depth: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for (i, &b) in bytes.iter().enumerate() {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > max_depth {
                    return Some(i);
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn gz(data: &[u8]) -> Vec<u8> {
        crate::mixpanel::client::gzip(data).unwrap()
    }

    fn gz_headers() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("content-encoding", HeaderValue::from_static("gzip"));
        h
    }

    #[tokio::test]
    async fn only_a_body_over_the_limit_is_too_large() {
        let ok = read_limited(Body::from("12345"), 5).await.unwrap();
        assert_eq!(&ok[..], b"12345");
        let e = read_limited(Body::from("123456"), 5).await.unwrap_err();
        assert_eq!((e.status.as_u16(), e.code), (413, "too_large"));
        let broken = futures_util::stream::iter(vec![
            Ok::<_, std::io::Error>(Bytes::from_static(b"12")),
            Err(std::io::Error::other("connection reset")),
        ]);
        let e = read_limited(Body::from_stream(broken), 5).await.unwrap_err();
        assert_eq!((e.status.as_u16(), e.code), (400, "invalid_body"));
        assert!(e.message.contains("connection reset"), "{}", e.message);
    }

    #[test]
    fn plain_and_gzip_json() {
        assert_eq!(parse_json(&HeaderMap::new(), b"{\"a\":1}", 100, 8).unwrap()["a"], 1);
        assert_eq!(parse_json(&gz_headers(), &gz(b"{\"a\":2}"), 100, 8).unwrap()["a"], 2);
    }

    #[test]
    fn refusals_name_the_problem() {
        let e = parse_json(&gz_headers(), b"not gzip", 100, 8).unwrap_err();
        assert_eq!(e.code, "invalid_gzip");
        let bomb = gz(&vec![b' '; 10_000_000]);
        let e = parse_json(&gz_headers(), &bomb, 500_000, 8).unwrap_err();
        assert_eq!(e.status.as_u16(), 413);
        let e = parse_json(&HeaderMap::new(), b"[[[[1]]]]", 100, 3).unwrap_err();
        assert_eq!(e.code, "nesting_too_deep");
        assert!(parse_json(&HeaderMap::new(), b"\"[[[[[\"", 100, 3).is_ok());
        let e = parse_json(&HeaderMap::new(), b"{", 100, 3).unwrap_err();
        assert_eq!(e.code, "invalid_json");
        let e = parse_json(&HeaderMap::new(), b"  ", 100, 3).unwrap_err();
        assert_eq!(e.code, "empty_body");
    }
}
