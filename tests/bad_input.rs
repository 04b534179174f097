//! Bad inputs against the real server: each gets the status that fits and a
//! message naming the problem, nothing reaches Mixpanel, and the server keeps
//! serving afterwards.

#[cfg(test)]
mod common;

use axum::http::Method;
use common::{destination, gzip, json_body, track, Mock, Send, Server};
use serde_json::{json, Value};

const KEY: &str = "wk-bad";

struct Case {
    name: &'static str,
    send: Send,
    status: u16,
    /// A substring of the error message.
    message: &'static str,
}

/// `depth` nested arrays inside an otherwise valid track event.
fn nested(depth: usize) -> Vec<u8> {
    format!(
        r#"{{"userId":"u","event":"E","properties":{{"deep":{}{}}}}}"#,
        "[".repeat(depth),
        "]".repeat(depth)
    )
    .into_bytes()
}

/// A multi-member gzip stream that inflates to `megabytes` MB of zeros (cheap to
/// build: one compressed megabyte, repeated).
fn gzip_bomb(megabytes: usize) -> Vec<u8> {
    let member = gzip(&vec![0u8; 1 << 20]);
    member.repeat(megabytes)
}

fn cases() -> Vec<Case> {
    let post = |path: &str, body: Vec<u8>| Send::raw(path, Some(KEY), body);
    let big_event = json!({"userId": "u", "event": "E", "properties": {"blob": "x".repeat(33 * 1024)}});
    // 20 events of 30 KB: each under the event limit, together over 500 KB.
    let big_batch: Vec<Value> = (0..20)
        .map(|i| json!({"type": "track", "userId": "u", "event": "E", "messageId": format!("m{i}"), "properties": {"blob": "x".repeat(30_000)}}))
        .collect();
    let too_many: Vec<Value> = (0..2501).map(|_| json!({})).collect();
    vec![
        Case {
            name: "invalid JSON",
            send: post("/v1/track", br#"{"userId": "u", "event": "#.to_vec()),
            status: 400,
            message: "invalid JSON",
        },
        Case {
            name: "empty body",
            send: post("/v1/track", Vec::new()),
            status: 400,
            message: "request body is empty",
        },
        Case {
            name: "body not an object",
            send: post("/v1/track", b"[1, 2]".to_vec()),
            status: 400,
            message: "request body must be a JSON object",
        },
        Case {
            name: "batch not an array",
            send: post("/v1/batch", json_body(&json!({"batch": {"type": "track"}}))),
            status: 400,
            message: "field \"batch\" must be an array",
        },
        Case {
            name: "batch missing",
            send: post("/v1/batch", json_body(&json!({"events": []}))),
            status: 400,
            message: "field \"batch\" is required",
        },
        Case {
            name: "event not an object",
            send: post(
                "/v1/batch",
                json_body(&json!({"batch": [track("u", "E", "m0"), "nope"]})),
            ),
            status: 400,
            message: "event 1: must be a JSON object",
        },
        Case {
            name: "missing userId and anonymousId",
            send: post(
                "/v1/batch",
                json_body(
                    &json!({"batch": [track("u", "E", "m0"), track("u", "E", "m1"), {"type": "track", "event": "E"}]}),
                ),
            ),
            status: 400,
            message: "event 2: one of \"userId\" or \"anonymousId\" is required",
        },
        Case {
            name: "empty userId counts as missing",
            send: post("/v1/identify", json_body(&json!({"userId": "", "traits": {}}))),
            status: 400,
            message: "event 0: one of \"userId\" or \"anonymousId\"",
        },
        Case {
            name: "track without event",
            send: post("/v1/track", json_body(&json!({"userId": "u"}))),
            status: 400,
            message: "event 0: field \"event\" is required for a track event",
        },
        Case {
            name: "event name not a string",
            send: post("/v1/track", json_body(&json!({"userId": "u", "event": 42}))),
            status: 400,
            message: "field \"event\" must be a string",
        },
        Case {
            name: "unknown type in a batch",
            send: post(
                "/v1/batch",
                json_body(&json!({"batch": [{"type": "purchase", "userId": "u"}]})),
            ),
            status: 400,
            message: "event 0: field \"type\"",
        },
        Case {
            name: "oversize event",
            send: post("/v1/track", json_body(&big_event)),
            status: 413,
            message: "the limit is 32768 bytes per event",
        },
        Case {
            name: "oversize request",
            send: post("/v1/batch", json_body(&json!({ "batch": big_batch }))),
            status: 413,
            message: "500000 bytes",
        },
        Case {
            name: "too many events in a batch",
            send: post("/v1/batch", json_body(&json!({ "batch": too_many }))),
            status: 413,
            message: "batch has 2501 events; the limit is 2500",
        },
        Case {
            name: "gzip header, not gzip",
            send: Send {
                content_encoding: Some("gzip".into()),
                ..post("/v1/track", json_body(&track("u", "E", "m")))
            },
            status: 400,
            message: "not valid gzip",
        },
        Case {
            name: "gzip bomb",
            send: Send {
                content_encoding: Some("gzip".into()),
                ..post("/v1/track", gzip_bomb(50))
            },
            status: 413,
            message: "decompresses to more than the limit of 500000 bytes",
        },
        Case {
            name: "unsupported content encoding",
            send: Send {
                content_encoding: Some("br".into()),
                ..post("/v1/track", json_body(&track("u", "E", "m")))
            },
            status: 415,
            message: "Content-Encoding \"br\" is not supported",
        },
        Case {
            name: "deep nesting",
            send: post("/v1/track", nested(100)),
            status: 400,
            message: "JSON nesting exceeds the limit of 64 levels",
        },
        Case {
            name: "deep nesting on the synchronous endpoint",
            send: post("/v1/destinations/d/events", nested(100)),
            status: 400,
            message: "JSON nesting exceeds the limit of 64 levels",
        },
        Case {
            name: "unknown write key",
            send: Send::raw("/v1/track", Some("who-is-this"), json_body(&track("u", "E", "m"))),
            status: 401,
            message: "unknown write key",
        },
        Case {
            name: "missing write key",
            send: Send::raw("/v1/track", None, json_body(&track("u", "E", "m"))),
            status: 401,
            message: "missing write key",
        },
        Case {
            name: "malformed Basic auth",
            send: Send {
                authorization: Some("Basic !!!not-base64".into()),
                ..Send::raw("/v1/track", None, json_body(&track("u", "E", "m")))
            },
            status: 401,
            message: "missing write key",
        },
        Case {
            name: "write key not routed to the destination",
            send: Send::raw(
                "/v1/destinations/d/events",
                Some("who-is-this"),
                json_body(&track("u", "E", "m")),
            ),
            status: 401,
            message: "not routed to destination \"d\"",
        },
        Case {
            name: "wrong method",
            send: Send {
                method: Some(Method::GET),
                ..Send::raw("/v1/track", Some(KEY), Vec::new())
            },
            status: 405,
            message: "GET is not allowed on /v1/track",
        },
        Case {
            name: "wrong method on the synchronous endpoint",
            send: Send {
                method: Some(Method::PUT),
                ..post("/v1/destinations/d/events", json_body(&track("u", "E", "m")))
            },
            status: 405,
            message: "PUT is not allowed",
        },
        Case {
            name: "unknown route",
            send: post("/v2/track", json_body(&track("u", "E", "m"))),
            status: 404,
            message: "no route for /v2/track",
        },
        Case {
            name: "unknown event kind",
            send: post("/v1/purchase", json_body(&track("u", "E", "m"))),
            status: 404,
            message: "no route for /v1/purchase",
        },
        Case {
            name: "unknown destination id",
            send: post("/v1/destinations/nope/events", json_body(&track("u", "E", "m"))),
            status: 404,
            message: "no destination with id \"nope\"",
        },
        Case {
            name: "unknown destination id (preview)",
            send: post(
                "/v1/destinations/nope/preview",
                json_body(&json!({"event": track("u", "E", "m")})),
            ),
            status: 404,
            message: "no destination with id \"nope\"",
        },
        Case {
            name: "synchronous endpoint: batch not an array",
            send: post("/v1/destinations/d/events", json_body(&json!({"batch": 3}))),
            status: 400,
            message: "field \"batch\" must be an array",
        },
        Case {
            name: "synchronous endpoint: missing identity names the index",
            send: post(
                "/v1/destinations/d/events",
                json_body(&json!([track("u", "E", "m0"), {"type": "track", "event": "E"}])),
            ),
            status: 400,
            message: "event 1: one of \"userId\" or \"anonymousId\" is required",
        },
    ]
}

#[tokio::test]
async fn bad_inputs_are_refused_and_the_server_keeps_serving() {
    let mock = Mock::start().await;
    let server = Server::start(json!({ "destinations": [destination("d", KEY, &mock)] })).await;

    let mut failures = Vec::new();
    for case in cases() {
        let answer = server.client.send(case.send).await;
        let message = answer.json["message"].as_str().unwrap_or("");
        let well_formed = answer.json["success"] == false && answer.json["code"].is_string();
        if answer.status != case.status || !message.contains(case.message) || !well_formed {
            failures.push(format!(
                "{}: expected {} with \"{}\", got {} {}",
                case.name, case.status, case.message, answer.status, answer.text
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
    assert!(
        mock.requests().is_empty(),
        "a refused request reached Mixpanel: {:?}",
        mock.requests()
    );

    // Still alive and still delivering.
    let health = server.client.get("/healthz").await;
    assert_eq!(health.status, 200);
    assert_eq!(health.json["status"], "ok");
    let answer = server.client.post("/v1/track", KEY, &track("u", "E", "m-after")).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.json["success"], true);
    let imports = mock.requests_to("/import");
    assert_eq!(imports.len(), 1);
    assert_eq!(imports[0].insert_ids(), ["m-after"]);
}

#[tokio::test]
async fn limits_follow_the_configuration() {
    let mock = Mock::start().await;
    let server = Server::start(json!({
        "limits": {"max_event_bytes": "1KiB", "max_request_bytes": "4KiB", "max_nesting_depth": 4, "max_batch_events": 3},
        "destinations": [destination("d", KEY, &mock)],
    }))
    .await;
    let cases = [
        (
            json!({"userId": "u", "event": "E", "properties": {"blob": "x".repeat(1100)}}),
            "/v1/track",
            413,
            "the limit is 1024 bytes per event",
        ),
        (
            json!({"batch": (0..4).map(|i| track("u", "E", &format!("m{i}"))).collect::<Vec<_>>()}),
            "/v1/batch",
            413,
            "the limit is 3 per request",
        ),
        (
            json!({"userId": "u", "event": "E", "properties": {"a": {"b": {"c": {"d": 1}}}}}),
            "/v1/track",
            400,
            "limit of 4 levels",
        ),
        (
            json!({"batch": (0..3).map(|i| json!({"type": "track", "userId": "u", "event": "E", "messageId": format!("m{i}"), "properties": {"blob": "x".repeat(900)}})).collect::<Vec<_>>(), "pad": "y".repeat(2000)}),
            "/v1/batch",
            413,
            "4096 bytes",
        ),
    ];
    for (body, path, status, message) in cases {
        let answer = server.client.post(path, KEY, &body).await;
        assert_eq!(answer.status, status, "{path}: {answer:?}");
        let text = answer.json["message"].as_str().unwrap_or("");
        assert!(text.contains(message), "{path}: expected \"{message}\" in {text}");
    }
    assert!(mock.requests().is_empty());
    // Just under every limit: delivered.
    let ok = json!({"userId": "u", "event": "E", "messageId": "m-ok", "properties": {"a": {"b": 1}}});
    let answer = server.client.post("/v1/track", KEY, &ok).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(mock.requests_to("/import")[0].insert_ids(), ["m-ok"]);
}

/// A compact track event of exactly `size` bytes as sent (no `type`: the route
/// gives it; ingest then adds `messageId`, `receivedAt` and `timestamp`).
fn event_bytes(size: usize, message_id: &str) -> Vec<u8> {
    let head = format!(r#"{{"userId":"u","event":"E","messageId":"{message_id}","properties":{{"pad":""#);
    let tail = r#""}}"#;
    let pad = size - head.len() - tail.len();
    let bytes = format!("{head}{}{tail}", "x".repeat(pad)).into_bytes();
    assert_eq!(bytes.len(), size);
    bytes
}

#[tokio::test]
async fn the_event_limit_counts_the_event_as_sent() {
    let mock = Mock::start().await;
    let server = Server::start(json!({
        "limits": {"max_event_bytes": "1KiB", "max_request_bytes": "8KiB"},
        "destinations": [destination("d", KEY, &mock)],
    }))
    .await;
    // Exactly the limit: accepted, though enrichment makes it larger.
    let at = server
        .client
        .send(Send::raw("/v1/track", Some(KEY), event_bytes(1024, "m-at")))
        .await;
    assert_eq!(at.status, 200, "{at:?}");
    // One byte more: refused, naming the size and the limit.
    let over = server
        .client
        .send(Send::raw("/v1/track", Some(KEY), event_bytes(1025, "m-over")))
        .await;
    assert_eq!(over.status, 413, "{over:?}");
    assert_eq!(over.json["code"], "too_large", "{over:?}");
    let message = over.json["message"].as_str().unwrap_or("");
    assert!(message.contains("1025 bytes") && message.contains("1024"), "{message}");
    // The same in a batch (the element as sent, with its `type`).
    let element = |size: usize, id: &str| {
        let mut e: Value = serde_json::from_slice(&event_bytes(size - r#","type":"track""#.len(), id)).unwrap();
        e["type"] = json!("track");
        assert_eq!(json_body(&e).len(), size);
        e
    };
    let batch = json!({"batch": [element(1024, "m-batch-at")]});
    let answer = server.client.post("/v1/batch", KEY, &batch).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let batch = json!({"batch": [element(1024, "m-batch-ok"), element(1025, "m-batch-over")]});
    let answer = server.client.post("/v1/batch", KEY, &batch).await;
    assert_eq!(answer.status, 413, "{answer:?}");
    assert!(
        answer.json["message"]
            .as_str()
            .unwrap_or("")
            .contains("event 1 is 1025 bytes"),
        "{answer:?}"
    );
    let delivered: Vec<String> = mock
        .requests_to("/import")
        .iter()
        .flat_map(|r| r.insert_ids())
        .collect();
    assert_eq!(delivered, ["m-at", "m-batch-at"]);
}
