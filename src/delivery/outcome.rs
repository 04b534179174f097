//! What a Mixpanel answer means, decided by one pure function ([`classify`]) so the
//! whole table is tested in one place. A non-2xx answer is an outcome, not an error.
//!
//! | answer | outcome |
//! |---|---|
//! | 2xx (`/import`), or `status: 1` (`/track`, `/engage`, `/groups`) | delivered |
//! | 400 from strict `/import` with `failed_records` | those records rejected, the rest delivered |
//! | 200 from `/import` with `failed_records` | the same |
//! | 2xx with `status: 0` on the form endpoints | rejected, with Mixpanel's `error` |
//! | 429, 408, 5xx except 501, network errors | retry (after `Retry-After` when given) |
//! | 413 | split the batch and retry the halves (a single record: rejected) |
//! | other 4xx, 501 | rejected |

use std::time::Duration;

use serde_json::Value;

use crate::mixpanel::api::Endpoint;

/// One rejected record of a batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordFailure {
    /// Index of the record in the request body.
    pub index: usize,
    pub message: String,
}

/// The decision for one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Every record accepted.
    Delivered,
    /// Some records rejected (strict mode); the others were accepted.
    Partial { failed: Vec<RecordFailure> },
    /// Temporary failure: try again, no sooner than `after` when Mixpanel said so.
    Retry { after: Option<Duration>, reason: String },
    /// The body is too large: send it in smaller pieces.
    Split,
    /// Permanent failure of the whole request.
    Rejected { status: u16, reason: String },
}

/// A parsed HTTP answer, or a transport failure.
#[derive(Clone, Debug)]
pub enum Answer<'a> {
    Http {
        status: u16,
        retry_after: Option<&'a str>,
        body: &'a [u8],
    },
    /// Connection refused/reset, timeout, DNS, TLS...
    Network { error: String },
}

/// Upper bound on honoured `Retry-After` values.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// Parses `Retry-After` in seconds (HTTP dates are not used by Mixpanel).
pub fn parse_retry_after(value: Option<&str>) -> Option<Duration> {
    let secs: f64 = value?.trim().parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs).min(MAX_RETRY_AFTER))
}

fn error_text(body: &Value, raw: &[u8]) -> String {
    match body.get("error").and_then(Value::as_str) {
        Some(e) => e.to_owned(),
        None => {
            let text = String::from_utf8_lossy(raw);
            let text = text.trim();
            if text.len() > 300 {
                format!("{}...", text.chars().take(300).collect::<String>())
            } else {
                text.to_owned()
            }
        }
    }
}

fn failed_records(body: &Value) -> Option<Vec<RecordFailure>> {
    let list = body.get("failed_records")?.as_array()?;
    Some(
        list.iter()
            .filter_map(|r| {
                let index = usize::try_from(r.get("index")?.as_u64()?).ok()?;
                let message = r
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("rejected")
                    .to_owned();
                Some(RecordFailure { index, message })
            })
            .collect(),
    )
}

/// Decides what an answer from `endpoint` means for the request.
pub fn classify(endpoint: Endpoint, answer: &Answer<'_>) -> Outcome {
    let (status, retry_after, raw) = match answer {
        Answer::Network { error } => {
            return Outcome::Retry {
                after: None,
                reason: format!("network error: {error}"),
            };
        }
        Answer::Http {
            status,
            retry_after,
            body,
        } => (*status, *retry_after, *body),
    };
    let body: Value = serde_json::from_slice(raw).unwrap_or(Value::Null);
    match status {
        200..=299 => success(endpoint, &body, raw),
        400 if endpoint == Endpoint::Import => match failed_records(&body) {
            Some(failed) if !failed.is_empty() => Outcome::Partial { failed },
            _ => Outcome::Rejected {
                status,
                reason: error_text(&body, raw),
            },
        },
        413 => Outcome::Split,
        408 | 429 => Outcome::Retry {
            after: parse_retry_after(retry_after),
            reason: format!("HTTP {status}: {}", error_text(&body, raw)),
        },
        501 => Outcome::Rejected {
            status,
            reason: error_text(&body, raw),
        },
        500..=599 => Outcome::Retry {
            after: parse_retry_after(retry_after),
            reason: format!("HTTP {status}: {}", error_text(&body, raw)),
        },
        _ => Outcome::Rejected {
            status,
            reason: error_text(&body, raw),
        },
    }
}

fn success(endpoint: Endpoint, body: &Value, raw: &[u8]) -> Outcome {
    if endpoint == Endpoint::Import {
        return match failed_records(body) {
            Some(failed) if !failed.is_empty() => Outcome::Partial { failed },
            _ => Outcome::Delivered,
        };
    }
    // Form endpoints answer `1`/`0`, or `{"status": 1|0, "error"}` with verbose=1.
    let ok = match body {
        Value::Number(n) => n.as_i64() == Some(1),
        Value::Object(_) => body.get("status").and_then(Value::as_i64) == Some(1),
        _ => true,
    };
    if ok {
        Outcome::Delivered
    } else {
        Outcome::Rejected {
            status: 400,
            reason: error_text(body, raw),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http(endpoint: Endpoint, status: u16, retry_after: Option<&str>, body: &str) -> Outcome {
        classify(
            endpoint,
            &Answer::Http {
                status,
                retry_after,
                body: body.as_bytes(),
            },
        )
    }

    #[test]
    fn outcome_table() {
        use Endpoint::*;
        let strict = r#"{"code":400,"num_records_imported":1,"failed_records":[{"index":1,"$insert_id":"x","field":"time","message":"bad time"}]}"#;
        let cases: Vec<(Endpoint, u16, Option<&str>, &str, Outcome)> = vec![
            (
                Import,
                200,
                None,
                r#"{"code":200,"status":"OK","num_records_imported":2}"#,
                Outcome::Delivered,
            ),
            (
                Import,
                400,
                None,
                strict,
                Outcome::Partial {
                    failed: vec![RecordFailure {
                        index: 1,
                        message: "bad time".into(),
                    }],
                },
            ),
            (
                Import,
                200,
                None,
                strict,
                Outcome::Partial {
                    failed: vec![RecordFailure {
                        index: 1,
                        message: "bad time".into(),
                    }],
                },
            ),
            (
                Import,
                400,
                None,
                r#"{"error":"no events"}"#,
                Outcome::Rejected {
                    status: 400,
                    reason: "no events".into(),
                },
            ),
            (
                Import,
                401,
                None,
                r#"{"error":"Invalid credentials"}"#,
                Outcome::Rejected {
                    status: 401,
                    reason: "Invalid credentials".into(),
                },
            ),
            (
                Import,
                403,
                None,
                "forbidden",
                Outcome::Rejected {
                    status: 403,
                    reason: "forbidden".into(),
                },
            ),
            (Import, 413, None, "", Outcome::Split),
            (
                Import,
                429,
                Some("7"),
                "",
                Outcome::Retry {
                    after: Some(Duration::from_secs(7)),
                    reason: "HTTP 429: ".into(),
                },
            ),
            (
                Track,
                408,
                None,
                "",
                Outcome::Retry {
                    after: None,
                    reason: "HTTP 408: ".into(),
                },
            ),
            (
                Engage,
                500,
                None,
                r#"{"error":"boom"}"#,
                Outcome::Retry {
                    after: None,
                    reason: "HTTP 500: boom".into(),
                },
            ),
            (
                Groups,
                503,
                Some("bogus"),
                "",
                Outcome::Retry {
                    after: None,
                    reason: "HTTP 503: ".into(),
                },
            ),
            (
                Import,
                501,
                None,
                "",
                Outcome::Rejected {
                    status: 501,
                    reason: "".into(),
                },
            ),
            (Track, 200, None, "1", Outcome::Delivered),
            (
                Track,
                200,
                None,
                "0",
                Outcome::Rejected {
                    status: 400,
                    reason: "0".into(),
                },
            ),
            (Engage, 200, None, r#"{"status":1,"error":null}"#, Outcome::Delivered),
            (
                Groups,
                200,
                None,
                r#"{"status":0,"error":"bad $group_key"}"#,
                Outcome::Rejected {
                    status: 400,
                    reason: "bad $group_key".into(),
                },
            ),
            (
                Engage,
                404,
                None,
                "",
                Outcome::Rejected {
                    status: 404,
                    reason: "".into(),
                },
            ),
        ];
        for (endpoint, status, ra, body, want) in cases {
            assert_eq!(http(endpoint, status, ra, body), want, "{endpoint:?} {status} {body}");
        }
    }

    #[test]
    fn network_errors_retry() {
        let o = classify(
            Endpoint::Import,
            &Answer::Network {
                error: "connection reset".into(),
            },
        );
        assert!(matches!(o, Outcome::Retry { after: None, .. }));
    }

    #[test]
    fn retry_after_is_bounded() {
        assert_eq!(parse_retry_after(Some("1.5")), Some(Duration::from_millis(1500)));
        assert_eq!(parse_retry_after(Some("999999")), Some(MAX_RETRY_AFTER));
        assert_eq!(parse_retry_after(Some("-1")), None);
        assert_eq!(parse_retry_after(None), None);
    }
}
