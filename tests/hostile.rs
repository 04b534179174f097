//! Hostile clients, black-box: raw TCP clients on loopback against the real
//! server configured with small limits (`limits.header_timeout`, `body_timeout`,
//! `idle_timeout`, `max_connections`, `max_requests`), so each test takes about
//! a second. Every wait is bounded.

#[cfg(test)]
mod common;

use std::time::{Duration, Instant};

use common::{basic, destination, track, Mock, Server};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

const KEY: &str = "wk-hostile";

/// Upper bound on any wait for the server to act on a limit.
const BOUND: Duration = Duration::from_secs(5);

/// A server (direct mode) with one destination sending to `mock`, and these
/// `[limits]`.
async fn server(mock: &Mock, limits: Value) -> Server {
    Server::start(json!({
        "limits": limits,
        "destinations": [destination("d", KEY, mock)],
    }))
    .await
}

/// What the server did with a raw connection.
#[derive(Debug)]
enum Outcome {
    /// An HTTP answer (then the connection may have been closed).
    Answer { status: u16, head: String, json: Value },
    /// Closed (EOF or reset) without an answer; how (read in failure messages).
    Closed(#[allow(dead_code)] String),
}

impl Outcome {
    fn status(&self) -> Option<u16> {
        match self {
            Outcome::Answer { status, .. } => Some(*status),
            Outcome::Closed(_) => None,
        }
    }
}

/// Reads one HTTP/1.1 answer (head and `Content-Length` body), or the close;
/// panics if neither happens within `within`.
async fn read_outcome(stream: &mut (impl tokio::io::AsyncRead + Unpin), within: Duration) -> Outcome {
    let read = async {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                let length = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse::<usize>().ok())?
                    })
                    .unwrap_or(0);
                if buf.len() >= end + 4 + length {
                    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
                    let json = serde_json::from_slice(&buf[end + 4..end + 4 + length]).unwrap_or(Value::Null);
                    return Outcome::Answer { status, head, json };
                }
            }
            match stream.read(&mut chunk).await {
                Ok(0) if buf.is_empty() => return Outcome::Closed("eof".into()),
                Ok(0) => return Outcome::Closed(format!("eof after {:?}", String::from_utf8_lossy(&buf))),
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) => return Outcome::Closed(e.to_string()),
            }
        }
    };
    tokio::time::timeout(within, read)
        .await
        .unwrap_or_else(|_| panic!("the server neither answered nor closed the connection within {within:?}"))
}

/// A request head for `POST /v1/track` announcing `length` body bytes.
fn track_head(length: usize) -> String {
    format!(
        "POST /v1/track HTTP/1.1\r\nhost: test\r\nauthorization: {}\r\ncontent-type: application/json\r\ncontent-length: {length}\r\n\r\n",
        basic(&format!("{KEY}:"))
    )
}

/// Sends `bytes` one at a time, `every` apart, ignoring write errors (the
/// server may close first).
async fn trickle(mut writer: impl tokio::io::AsyncWrite + Unpin, bytes: Vec<u8>, every: Duration) {
    for b in bytes {
        if writer.write_all(&[b]).await.is_err() {
            return;
        }
        tokio::time::sleep(every).await;
    }
}

#[tokio::test]
async fn a_slow_body_gets_408_naming_the_limit_within_the_body_timeout() {
    let mock = Mock::start().await;
    let server = server(&mock, json!({"body_timeout": "500ms"})).await;
    let body = serde_json::to_vec(&track("u", "Slow", "m-slow")).unwrap();
    let stream = TcpStream::connect(server.addr).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    writer.write_all(track_head(body.len()).as_bytes()).await.unwrap();
    let started = Instant::now();
    // 1 byte per 100 ms: the body would take several seconds.
    let sender = tokio::spawn(trickle(writer, body, Duration::from_millis(100)));
    let outcome = read_outcome(&mut reader, BOUND).await;
    let took = started.elapsed();
    sender.abort();
    let Outcome::Answer { status, json, .. } = &outcome else {
        panic!("expected a 408, got {outcome:?}");
    };
    assert_eq!(*status, 408, "{outcome:?}");
    assert_eq!(json["success"], false, "{outcome:?}");
    assert_eq!(json["code"], "body_timeout", "{outcome:?}");
    let message = json["message"].as_str().unwrap_or_default();
    assert!(message.contains("limits.body_timeout"), "{message}");
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_secs(3),
        "answered after {took:?}"
    );
    assert!(mock.requests().is_empty(), "nothing was delivered");
    // The server is fine for everyone else.
    let answer = server
        .client
        .post("/v1/track", KEY, &track("u", "Fast", "m-fast"))
        .await;
    assert_eq!(answer.status, 200, "{answer:?}");
}

#[tokio::test]
async fn slow_headers_are_disconnected_after_the_header_timeout() {
    let mock = Mock::start().await;
    let server = server(&mock, json!({"header_timeout": "500ms", "idle_timeout": "30s"})).await;
    let stream = TcpStream::connect(server.addr).await.unwrap();
    let (mut reader, writer) = stream.into_split();
    let started = Instant::now();
    let head = track_head(10).into_bytes();
    let sender = tokio::spawn(trickle(writer, head, Duration::from_millis(50)));
    let outcome = read_outcome(&mut reader, BOUND).await;
    let took = started.elapsed();
    sender.abort();
    // hyper answers 408 to a half-sent head, or just closes.
    assert!(
        matches!(outcome, Outcome::Closed(_)) || outcome.status() == Some(408),
        "{outcome:?}"
    );
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_secs(3),
        "disconnected after {took:?}"
    );

    // A client that connects and sends nothing is closed as well (before the
    // much longer idle timeout).
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    let started = Instant::now();
    let outcome = read_outcome(&mut silent, BOUND).await;
    assert!(
        matches!(outcome, Outcome::Closed(_)) || outcome.status() == Some(408),
        "{outcome:?}"
    );
    let took = started.elapsed();
    assert!(took < Duration::from_secs(3), "closed after {took:?}");
    // So is one stuck on the first byte, while the protocol is not known yet
    // ("P" could still be HTTP/2's "PRI * HTTP/2.0" preface).
    let mut stuck = TcpStream::connect(server.addr).await.unwrap();
    stuck.write_all(b"P").await.unwrap();
    let started = Instant::now();
    let outcome = read_outcome(&mut stuck, BOUND).await;
    assert!(
        matches!(outcome, Outcome::Closed(_)) || outcome.status() == Some(408),
        "{outcome:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "closed after {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed_after_the_idle_timeout() {
    let mock = Mock::start().await;
    let server = server(&mock, json!({"header_timeout": "4s", "idle_timeout": "300ms"})).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    // Requests on one keep-alive connection, each within the idle timeout of
    // the last one: the connection stays open.
    let mut idle_from = Instant::now();
    for _ in 0..3 {
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nhost: test\r\n\r\n")
            .await
            .unwrap();
        let outcome = read_outcome(&mut stream, BOUND).await;
        assert_eq!(outcome.status(), Some(200), "{outcome:?}");
        idle_from = Instant::now();
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    // Then nothing: closed after the idle timeout, well before the header
    // timeout.
    let outcome = read_outcome(&mut stream, BOUND).await;
    let idle = idle_from.elapsed();
    assert!(matches!(outcome, Outcome::Closed(_)), "{outcome:?}");
    assert!(
        idle >= Duration::from_millis(250) && idle < Duration::from_secs(3),
        "closed after {idle:?} idle"
    );
}

#[tokio::test]
async fn connections_beyond_the_cap_are_refused_at_once_and_slots_free_up() {
    let mock = Mock::start().await;
    let max = 8;
    let server = server(
        &mock,
        json!({"max_connections": max, "header_timeout": "3s", "idle_timeout": "3s"}),
    )
    .await;
    // Silent connections hold slots (the harness's own pooled connection may
    // hold one more) until one is refused.
    let mut held = Vec::new();
    let refused = loop {
        assert!(
            held.len() <= max,
            "{} connections held, over the cap of {max}",
            held.len()
        );
        let stream = TcpStream::connect(server.addr).await.unwrap();
        let started = Instant::now();
        let mut byte = [0u8; 1];
        match tokio::time::timeout(Duration::from_millis(100), stream.peek(&mut byte)).await {
            Err(_) => held.push(stream),
            Ok(_) => break (stream, started),
        }
    };
    assert!(
        held.len() >= max - 1,
        "refused with only {} connections held",
        held.len()
    );
    let (mut stream, started) = refused;
    let outcome = read_outcome(&mut stream, BOUND).await;
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "refusal took {:?}",
        started.elapsed()
    );
    let Outcome::Answer { status, head, json } = &outcome else {
        panic!("expected a 503, got {outcome:?}");
    };
    assert_eq!(*status, 503, "{outcome:?}");
    assert!(head.to_ascii_lowercase().contains("retry-after: 1"), "{head}");
    assert_eq!(json["code"], "too_many_connections", "{outcome:?}");
    assert!(
        matches!(read_outcome(&mut stream, BOUND).await, Outcome::Closed(_)),
        "the refused connection is closed"
    );
    // The held connections send nothing: each is closed after the header
    // timeout, which frees the slots for legitimate clients.
    for mut h in held {
        let outcome = read_outcome(&mut h, BOUND).await;
        assert!(
            matches!(outcome, Outcome::Closed(_)) || outcome.status() == Some(408),
            "{outcome:?}"
        );
    }
    let answer = server.client.post("/v1/track", KEY, &track("u", "E", "m-after")).await;
    assert_eq!(answer.status, 200, "{answer:?}");
}

#[tokio::test]
async fn requests_beyond_the_concurrency_cap_get_503_overloaded_with_retry_after() {
    let mock = Mock::start().await;
    let server = server(&mock, json!({"max_requests": 2, "body_timeout": "10s"})).await;
    // Two requests whose bodies stall hold both request slots.
    let mut stalled = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        stream.write_all(track_head(100).as_bytes()).await.unwrap();
        stream.write_all(b"{\"type\":").await.unwrap();
        stalled.push(stream);
    }
    // Until both are in the handler, a third request may still get through.
    let deadline = Instant::now() + BOUND;
    let answer = loop {
        let started = Instant::now();
        let answer = server.client.post("/v1/track", KEY, &track("u", "E", "m-3")).await;
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "took {:?}",
            started.elapsed()
        );
        if answer.status == 503 || Instant::now() > deadline {
            break answer;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(answer.status, 503, "{answer:?}");
    assert_eq!(answer.header("retry-after"), Some("1"), "{answer:?}");
    assert_eq!(answer.json["success"], false, "{answer:?}");
    assert_eq!(answer.json["code"], "overloaded", "{answer:?}");
    assert!(
        answer.json["message"]
            .as_str()
            .unwrap_or_default()
            .contains("limits.max_requests"),
        "{answer:?}"
    );
    // Probes are not counted: a busy server is still alive and ready.
    assert_eq!(server.client.get("/healthz").await.status, 200);
    assert_eq!(server.client.get("/readyz").await.status, 200);
    // The stalled senders go away: their slots are free again.
    drop(stalled);
    let deadline = Instant::now() + BOUND;
    loop {
        let answer = server.client.post("/v1/track", KEY, &track("u", "E", "m-4")).await;
        if answer.status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "slots not freed: {answer:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn http2_with_prior_knowledge_is_served() {
    let mock = Mock::start().await;
    let server = server(&mock, json!({})).await;
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .no_proxy()
        .timeout(BOUND)
        .build()
        .unwrap();
    let answer = client
        .get(format!("http://{}/healthz", server.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.version(), reqwest::Version::HTTP_2);
    assert_eq!(answer.status(), 200);
}

#[tokio::test]
async fn a_request_head_over_64_kib_gets_431() {
    let mock = Mock::start().await;
    let server = server(&mock, json!({})).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let big = format!(
        "GET /healthz HTTP/1.1\r\nhost: test\r\nx-padding: {}\r\n\r\n",
        "a".repeat(70 * 1024)
    );
    // The server may stop reading (and close) before it has taken every byte.
    let _ = stream.write_all(big.as_bytes()).await;
    let outcome = read_outcome(&mut stream, BOUND).await;
    assert!(
        outcome.status() == Some(431) || matches!(outcome, Outcome::Closed(_)),
        "{outcome:?}"
    );
}

/// Uploads stalled short of their end hold their declared bytes of
/// `limits.max_body_bytes_in_flight`: past it, a request is answered 503
/// `overloaded` before its body is read, a small one still fits, and the bytes
/// come back when the stalled senders go.
#[tokio::test]
async fn body_bytes_in_flight_are_capped() {
    let mock = Mock::start().await;
    let limits = json!({"max_event_bytes": "4KB", "max_request_bytes": "9KB", "max_body_bytes_in_flight": "20KB",
                        "body_timeout": "10s"});
    let server = server(&mock, limits).await;
    // Two uploads declare 9,000 bytes each and stall after a few.
    let mut stalled = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        stream.write_all(track_head(9000).as_bytes()).await.unwrap();
        stream.write_all(b"{\"type\":").await.unwrap();
        stalled.push(stream);
    }
    // A third large one finds 2,000 bytes left: refused at once, unread.
    let deadline = Instant::now() + BOUND;
    let refused = loop {
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        stream.write_all(track_head(9000).as_bytes()).await.unwrap();
        let outcome = read_outcome(&mut stream, Duration::from_secs(2)).await;
        if outcome.status() == Some(503) || Instant::now() > deadline {
            break outcome;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let Outcome::Answer { status, head, json } = refused else {
        panic!("no answer: {refused:?}");
    };
    assert_eq!(status, 503, "{head}");
    assert!(head.to_ascii_lowercase().contains("retry-after: 1"), "{head}");
    assert_eq!(json["code"], "overloaded");
    assert!(
        json["message"]
            .as_str()
            .unwrap_or_default()
            .contains("limits.max_body_bytes_in_flight"),
        "{json}"
    );
    // A small request fits in what is left.
    let small = server.client.post("/v1/track", KEY, &track("u", "E", "m-small")).await;
    assert_eq!(small.status, 200, "{small:?}");
    // The stalled senders go: their bytes are free again.
    drop(stalled);
    let deadline = Instant::now() + BOUND;
    loop {
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        let body = serde_json::to_vec(&track("u", "E", "m-big")).unwrap();
        let padded = [body.clone(), vec![b' '; 8000 - body.len()]].concat();
        stream.write_all(track_head(padded.len()).as_bytes()).await.unwrap();
        stream.write_all(&padded).await.unwrap();
        let outcome = read_outcome(&mut stream, Duration::from_secs(2)).await;
        if outcome.status() == Some(200) {
            break;
        }
        assert!(Instant::now() < deadline, "bytes not freed: {outcome:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A request head for `POST /v1/track` with a chunked body.
fn chunked_head() -> String {
    format!(
        "POST /v1/track HTTP/1.1\r\nhost: test\r\nauthorization: {}\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n",
        basic(&format!("{KEY}:"))
    )
}

/// A body that cannot be read is 400 `invalid_body`, not 413: only a body over
/// the limit is "too large". Nothing of it reaches Mixpanel.
#[tokio::test]
async fn a_body_that_cannot_be_read_is_400_invalid_body() {
    let mock = Mock::start().await;
    let server = server(&mock, json!({})).await;
    let cases: [(&str, Vec<u8>, bool); 3] = [
        ("a chunk size that is not hex", b"zz\r\n{}\r\n0\r\n\r\n".to_vec(), false),
        (
            "a chunk cut short by the client",
            b"40\r\n{\"type\":\"track\"".to_vec(),
            true,
        ),
        ("a chunk without its CRLF", b"2\r\n{}XX0\r\n\r\n".to_vec(), false),
    ];
    for (what, body, close_write) in cases {
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        stream.write_all(chunked_head().as_bytes()).await.unwrap();
        stream.write_all(&body).await.unwrap();
        if close_write {
            stream.shutdown().await.unwrap();
        }
        let json = json_error(&read_outcome(&mut stream, BOUND).await, what, 400, "invalid_body");
        assert!(
            json["message"]
                .as_str()
                .unwrap_or_default()
                .contains("could not be read"),
            "{what}: {json}"
        );
    }
    // A body over the limit still says so.
    let big = vec![b' '; 600 * 1024];
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream.write_all(chunked_head().as_bytes()).await.unwrap();
    let _ = stream.write_all(format!("{:x}\r\n", big.len()).as_bytes()).await;
    let _ = stream.write_all(&big).await;
    json_error(
        &read_outcome(&mut stream, BOUND).await,
        "over the limit",
        413,
        "too_large",
    );
    assert!(mock.requests().is_empty(), "{:?}", mock.requests());
}

/// Paths that do not decode (percent-encoding that is not UTF-8) are refused
/// as JSON like every other error, on every route that takes a parameter.
#[tokio::test]
async fn paths_that_do_not_decode_are_400_invalid_path_as_json() {
    let mock = Mock::start().await;
    let server = server(&mock, json!({})).await;
    for path in [
        "/v1/%FF",
        "/v1/destinations/%C3%28/events",
        "/v1/destinations/%FF/preview",
    ] {
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        let head = format!(
            "POST {path} HTTP/1.1\r\nhost: test\r\nauthorization: {}\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{{}}",
            basic(&format!("{KEY}:"))
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        json_error(&read_outcome(&mut stream, BOUND).await, path, 400, "invalid_path");
    }
}

/// The JSON body of an error answer with this status and code (`what` names
/// the case in failure messages).
fn json_error(outcome: &Outcome, what: &str, status: u16, code: &str) -> Value {
    let Outcome::Answer {
        status: got,
        head,
        json,
    } = outcome
    else {
        panic!("{what}: no answer: {outcome:?}");
    };
    assert_eq!(*got, status, "{what}: {head}\n{json}");
    assert!(head.to_ascii_lowercase().contains("application/json"), "{what}: {head}");
    assert_eq!(json["code"], code, "{what}: {json}");
    json.clone()
}
