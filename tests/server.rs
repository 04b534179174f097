//! Black-box tests of the server: Segment events in over HTTP, and exactly what a
//! mock Mixpanel (a real HTTP server on loopback) received.

#[cfg(test)]
mod common;

use std::collections::HashSet;
use std::io::Read as _;
use std::time::{Duration, Instant};

use common::{basic, destination, gzip, now_ms, track, Mock, Reply, Send, Server};
use serde_json::{json, Value};

const KEY: &str = "wk-test";

/// One mock and one server with one destination `d` (write key [`KEY`]) that
/// sends to it; `extra` is merged into the destination.
async fn setup(extra: Value) -> (Mock, Server) {
    let mock = Mock::start().await;
    let mut dest = destination("d", KEY, &mock);
    for (k, v) in common::obj(&extra) {
        dest[k] = v;
    }
    let server = Server::start(json!({ "destinations": [dest] })).await;
    (mock, server)
}

fn assert_success(answer: &common::Answer) {
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.json["success"], true, "{answer:?}");
    assert!(answer.json.get("rejected").is_none(), "{answer:?}");
}

// ---------------------------------------------------------------------------
// Presets and actions
// ---------------------------------------------------------------------------

#[tokio::test]
async fn track_preset_sends_one_import_event() {
    let (mock, server) = setup(json!({"source_name": "web", "api_secret": "sec"})).await;
    let event = json!({
        "userId": "u1",
        "anonymousId": "a1",
        "event": "Signed Up",
        "messageId": "m-track-1",
        "timestamp": "2024-03-01T12:00:00.000Z",
        "properties": {"plan": "pro", "n": 3},
        "context": {"ip": "1.2.3.4", "library": {"name": "analytics.js", "version": "1.0"}},
    });
    let answer = server.client.post("/v1/track", KEY, &event).await;
    assert_success(&answer);

    let requests = mock.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    let r = &requests[0];
    assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", "/import"));
    assert_eq!(r.param("strict").as_deref(), Some("1"));
    assert_eq!(r.header("content-type"), Some("application/json"));
    let records = r.records();
    assert_eq!(records.len(), 1);
    let e = &records[0];
    assert_eq!(e["event"], "Signed Up");
    let p = &e["properties"];
    assert_eq!(p["time"], json!(1_709_294_400_000_i64));
    assert_eq!(p["distinct_id"], "u1");
    assert_eq!(p["$user_id"], "u1");
    assert_eq!(p["$anon_id"], "a1");
    assert_eq!(p["$device_id"], "a1");
    assert_eq!(p["$insert_id"], "m-track-1");
    assert_eq!(p["ip"], "1.2.3.4");
    assert_eq!(p["mp_lib"], "Segment Actions: analytics.js");
    assert_eq!(p["$lib_version"], "1.0");
    assert_eq!(p["$source"], "segment");
    assert_eq!(p["segment_source_name"], "web");
    assert_eq!(p["plan"], "pro");
    assert_eq!(p["n"], 3);
}

#[tokio::test]
async fn order_completed_sends_the_order_and_one_event_per_product() {
    let (mock, server) = setup(json!({})).await;
    let event = json!({
        "userId": "u1",
        "event": "Order Completed",
        "messageId": "m-oc",
        "timestamp": "2024-03-01T12:00:00.000Z",
        "properties": {
            "order_id": "o1", "total": 30, "revenue": 25, "currency": "EUR",
            "products": [
                {"product_id": "p1", "sku": "s1", "price": 10, "quantity": 1},
                {"product_id": "p2", "price": 20, "quantity": 2},
            ],
        },
    });
    assert_success(&server.client.post("/v1/track", KEY, &event).await);

    let imports = mock.requests_to("/import");
    assert_eq!(mock.requests().len(), 1, "{:?}", mock.requests());
    let records = imports[0].records();
    let names: Vec<&str> = records.iter().map(|r| r["event"].as_str().unwrap_or("")).collect();
    assert_eq!(names, ["Order Completed", "Product Purchased", "Product Purchased"]);
    assert_eq!(imports[0].insert_ids(), ["m-oc", "0m-oc", "1m-oc"]);

    let order = &records[0]["properties"];
    assert_eq!(order["total"], 30);
    assert_eq!(order["revenue"], 25);
    assert_eq!(order["order_id"], "o1");
    assert_eq!(order["products"].as_array().map(Vec::len), Some(2));
    let t = 1_709_294_400_000_i64;
    assert_eq!(order["time"], json!(t));

    for (i, (id, price)) in [("p1", 10), ("p2", 20)].iter().enumerate() {
        let p = &records[i + 1]["properties"];
        assert_eq!(p["product_id"], *id);
        assert_eq!(p["price"], *price);
        assert_eq!(p["distinct_id"], "u1");
        assert_eq!(p["order_id"], "o1", "product events keep non-order keys");
        assert_eq!(p["time"], json!(t - 1 - i as i64));
        for order_only in ["total", "revenue", "currency", "products"] {
            assert!(p.get(order_only).is_none(), "{order_only} leaked into {p}");
        }
    }
}

#[tokio::test]
async fn page_and_screen_presets_send_viewed_events() {
    let (mock, server) = setup(json!({})).await;
    let page = json!({"userId": "u1", "name": "Home", "messageId": "m-page", "properties": {"path": "/"}});
    let screen = json!({"anonymousId": "a1", "name": "Settings", "messageId": "m-screen"});
    assert_success(&server.client.post("/v1/page", KEY, &page).await);
    // analytics.js's short route for screen.
    assert_success(&server.client.post("/v1/s", KEY, &screen).await);

    let imports = mock.requests_to("/import");
    assert_eq!(imports.len(), 2, "{:?}", mock.requests());
    assert_eq!(mock.requests().len(), 2);
    let page_event = &imports[0].records()[0];
    assert_eq!(page_event["event"], "Viewed Home");
    assert_eq!(page_event["properties"]["$insert_id"], "m-page");
    assert_eq!(page_event["properties"]["path"], "/");
    let screen_event = &imports[1].records()[0];
    assert_eq!(screen_event["event"], "Viewed Settings");
    assert_eq!(screen_event["properties"]["distinct_id"], "a1");
    assert_eq!(screen_event["properties"]["$insert_id"], "m-screen");
}

#[tokio::test]
async fn identify_sends_identify_then_engage_after_the_identify_is_answered() {
    let (mock, server) = setup(json!({})).await;
    // A slow answer to /track: if /engage were not waiting for it, it would arrive
    // before the answer.
    let slow = Duration::from_millis(300);
    mock.script("/track", [Reply::Slow(slow)]);
    let event = json!({
        "userId": "u1",
        "anonymousId": "a1",
        "traits": {"email": "u1@example.com", "plan": "pro", "firstName": "Ada", "lastName": "L"},
        "context": {"ip": "1.2.3.4"},
    });
    assert_success(&server.client.post("/v1/identify", KEY, &event).await);

    let requests = mock.requests();
    let paths: Vec<&str> = requests.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(paths, ["/track", "/engage"]);
    let (identify, engage) = (&requests[0], &requests[1]);
    assert!(
        engage.at.duration_since(identify.at) >= slow,
        "/engage was sent {:?} after /track, before /track was answered",
        engage.at.duration_since(identify.at)
    );
    for r in &requests {
        assert_eq!(r.param("verbose").as_deref(), Some("1"), "{}", r.path);
        assert_eq!(r.header("authorization"), None, "form endpoints carry no auth");
        assert_eq!(
            r.header("content-type"),
            Some("application/x-www-form-urlencoded;charset=UTF-8")
        );
        assert_eq!(r.header("content-encoding"), None, "form bodies are not gzip'd");
    }
    assert_eq!(
        identify.data,
        Some(json!({"event": "$identify", "properties": {"$identified_id": "u1", "$anon_id": "a1", "token": "tok-d"}}))
    );
    assert_eq!(
        engage.data,
        Some(json!({
            "$token": "tok-d",
            "$distinct_id": "u1",
            "$ip": "1.2.3.4",
            "$set": {"plan": "pro", "$email": "u1@example.com", "$first_name": "Ada", "$last_name": "L", "$name": "Ada L"},
        }))
    );
}

#[tokio::test]
async fn group_preset_sends_a_groups_update() {
    let (mock, server) = setup(json!({})).await;
    let event = json!({"userId": "u1", "groupId": "g1", "traits": {"name": "Acme", "industry": "tech"}});
    assert_success(&server.client.post("/v1/group", KEY, &event).await);
    let requests = mock.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(requests[0].path, "/groups");
    assert_eq!(requests[0].header("authorization"), None);
    assert_eq!(
        requests[0].data,
        Some(json!({
            "$token": "tok-d",
            "$group_key": "$group_id",
            "$group_id": "g1",
            "$set": {"industry": "tech", "$name": "Acme"},
        }))
    );
}

#[tokio::test]
async fn alias_and_increment_properties_via_custom_subscriptions() {
    let subscriptions = json!([
        {
            "name": "Alias Calls",
            "subscribe": "type = \"alias\"",
            "partnerAction": "alias",
            "mapping": {
                "alias": {"@path": "$.userId"},
                "distinct_id": {"@path": "$.previousId"},
            },
        },
        {
            "name": "Level Ups",
            "subscribe": "type = \"track\" and event = \"Level Up\"",
            "partnerAction": "incrementProperties",
            "mapping": {
                "user_id": {"@path": "$.userId"},
                "anonymous_id": {"@path": "$.anonymousId"},
                "ip": {"@path": "$.context.ip"},
                "increment": {"@path": "$.properties.increment"},
            },
        },
    ]);
    let (mock, server) = setup(json!({ "subscriptions": subscriptions })).await;

    let alias = json!({"userId": "new-id", "previousId": "old-id"});
    assert_success(&server.client.post("/v1/alias", KEY, &alias).await);
    let level_up = json!({
        "userId": "u1",
        "event": "Level Up",
        "properties": {"increment": {"level": 1, "xp": "25"}},
    });
    assert_success(&server.client.post("/v1/track", KEY, &level_up).await);
    // No subscription matches this one: the presets are replaced.
    assert_success(
        &server
            .client
            .post("/v1/track", KEY, &track("u1", "Other", "m-other"))
            .await,
    );

    let requests = mock.requests();
    let paths: Vec<&str> = requests.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(paths, ["/track", "/engage"], "{requests:?}");
    assert_eq!(
        requests[0].data,
        Some(
            json!({"event": "$create_alias", "properties": {"distinct_id": "old-id", "alias": "new-id", "token": "tok-d"}})
        )
    );
    let engage = requests[1].data.clone().unwrap_or_default();
    assert_eq!(engage["$token"], "tok-d");
    assert_eq!(engage["$distinct_id"], "u1");
    assert_eq!(engage["$add"]["level"], 1);
    assert_eq!(engage["$add"]["xp"].as_f64(), Some(25.0), "{engage}");
}

// ---------------------------------------------------------------------------
// Regions, auth, gzip
// ---------------------------------------------------------------------------

#[tokio::test]
async fn region_with_base_url_sends_to_the_base_url() {
    let mock = Mock::start().await;
    let mut eu = destination("eu", "k-eu", &mock);
    eu["api_region"] = json!("EU");
    let mut india = destination("in", "k-in", &mock);
    india["api_region"] = json!("IN 🇮🇳");
    let server = Server::start(json!({ "destinations": [eu, india] })).await;

    assert_success(&server.client.post("/v1/track", "k-eu", &track("u", "E", "m-eu")).await);
    assert_success(&server.client.post("/v1/track", "k-in", &track("u", "E", "m-in")).await);
    let imports = mock.requests_to("/import");
    assert_eq!(imports.len(), 2);
    assert_eq!(imports[0].insert_ids(), ["m-eu"]);
    assert_eq!(imports[1].insert_ids(), ["m-in"]);
}

#[tokio::test]
async fn preview_shows_the_region_host_and_sends_nothing() {
    // These destinations have no base URL: a delivery would go to Mixpanel itself,
    // so only the preview endpoint is used.
    let dest = |id: &str, region: Option<&str>| {
        let mut d = json!({"id": id, "write_keys": ["k-preview"], "project_token": "tok", "api_secret": "hush"});
        if let Some(r) = region {
            d["api_region"] = json!(r);
        }
        d
    };
    // And one with a base URL, to see that a preview sends nothing.
    let mock = Mock::start().await;
    let mut mocked = dest("mocked", Some("EU"));
    mocked["api_base_url"] = json!(mock.url());
    let server = Server::start(json!({
        "destinations": [dest("us", None), dest("eu", Some("EU")), dest("in", Some("IN")), mocked],
    }))
    .await;
    let event =
        json!({"event": {"type": "identify", "userId": "u1", "anonymousId": "a1", "traits": {"email": "e@x.io"}}});
    let track_event = json!({"event": {"type": "track", "userId": "u1", "event": "E"}});
    let mock_url = mock.url();
    for (id, host) in [
        ("us", "https://api.mixpanel.com"),
        ("eu", "https://api-eu.mixpanel.com"),
        ("in", "https://api-in.mixpanel.com"),
        ("mocked", mock_url.as_str()),
    ] {
        let path = format!("/v1/destinations/{id}/preview");
        let answer = server.client.post(&path, "k-preview", &event).await;
        assert_eq!(answer.status, 200, "{answer:?}");
        let urls: Vec<&str> = answer.json["requests"]
            .as_array()
            .map(|rs| rs.iter().filter_map(|r| r["url"].as_str()).collect())
            .unwrap_or_default();
        assert_eq!(urls, [format!("{host}/track"), format!("{host}/engage")], "{id}");

        let answer = server.client.post(&path, "k-preview", &track_event).await;
        let request = &answer.json["requests"][0];
        assert_eq!(request["url"], format!("{host}/import?strict=1"), "{id}");
        assert_eq!(request["body"][0]["event"], "E");
        assert_eq!(request["headers"]["authorization"], "Basic [redacted]", "{id}");
        let credential = basic("hush:");
        assert!(
            !answer.text.contains("hush") && !answer.text.contains(&credential["Basic ".len()..]),
            "preview shows a credential: {}",
            answer.text
        );
    }
    assert!(mock.requests().is_empty(), "a preview sent {:?}", mock.requests());
}

#[tokio::test]
async fn import_auth_headers_follow_the_configuration() {
    let mock = Mock::start().await;
    let mut with_secret = destination("secret", "k1", &mock);
    with_secret["api_secret"] = json!("s3cret");
    let token_only = destination("token", "k2", &mock);
    let mut forced_token = destination("forced", "k3", &mock);
    forced_token["api_secret"] = json!("s3cret");
    forced_token["import_auth"] = json!("project_token");
    let mut service = destination("sa", "k4", &mock);
    service["import_auth"] = json!("service_account");
    service["service_account_username"] = json!("sa.user");
    service["service_account_secret"] = json!("pw");
    service["project_id"] = json!("123");
    service["strict_mode"] = json!(false);
    let server = Server::start(json!({
        "destinations": [with_secret, token_only, forced_token, service],
    }))
    .await;

    let cases = [
        ("k1", basic("s3cret:"), None, "1"),
        ("k2", basic("tok-token:"), None, "1"),
        ("k3", basic("tok-forced:"), None, "1"),
        ("k4", basic("sa.user:pw"), Some("123"), "0"),
    ];
    for (key, auth, project_id, strict) in cases {
        mock.clear();
        let answer = server.client.post("/v1/track", key, &track("u", "E", "m")).await;
        assert_success(&answer);
        let imports = mock.requests_to("/import");
        assert_eq!(imports.len(), 1, "{key}");
        assert_eq!(imports[0].header("authorization"), Some(auth.as_str()), "{key}");
        assert_eq!(imports[0].param("project_id").as_deref(), project_id, "{key}");
        assert_eq!(imports[0].param("strict").as_deref(), Some(strict), "{key}");
    }
}

#[tokio::test]
async fn import_bodies_are_gzipped_unless_disabled() {
    let mock = Mock::start().await;
    let zipped = destination("zipped", "k-gz", &mock);
    let mut plain = destination("plain", "k-plain", &mock);
    plain["gzip"] = json!(false);
    let server = Server::start(json!({ "destinations": [zipped, plain] })).await;

    assert_success(&server.client.post("/v1/track", "k-gz", &track("u", "E", "m-gz")).await);
    let r = &mock.requests_to("/import")[0];
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    assert_eq!(&r.raw_body[..2], &[0x1f, 0x8b], "not a gzip stream");
    let mut inflated = Vec::new();
    flate2::read::GzDecoder::new(&r.raw_body[..])
        .read_to_end(&mut inflated)
        .expect("the body inflates");
    let events: Value = serde_json::from_slice(&inflated).expect("inflated body is JSON");
    assert_eq!(events[0]["properties"]["$insert_id"], "m-gz");

    mock.clear();
    assert_success(
        &server
            .client
            .post("/v1/track", "k-plain", &track("u", "E", "m-plain"))
            .await,
    );
    let r = &mock.requests_to("/import")[0];
    assert_eq!(r.header("content-encoding"), None);
    let events: Value = serde_json::from_slice(&r.raw_body).expect("plain body is JSON");
    assert_eq!(events[0]["properties"]["$insert_id"], "m-plain");
}

// ---------------------------------------------------------------------------
// Batching
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_batch_of_25_tracks_is_sent_as_10_10_5() {
    let (mock, server) = setup(json!({"batch_size": 10})).await;
    let batch: Vec<Value> = (0..25).map(|i| track("u", "E", &format!("m-{i:02}"))).collect();
    assert_success(&server.client.post("/v1/batch", KEY, &json!({ "batch": batch })).await);

    let imports = mock.requests_to("/import");
    assert_eq!(mock.requests().len(), 3);
    let mut chunks: Vec<Vec<String>> = imports.iter().map(|r| r.insert_ids()).collect();
    chunks.sort();
    let expected: Vec<Vec<String>> = [0..10, 10..20, 20..25]
        .into_iter()
        .map(|range| range.map(|i| format!("m-{i:02}")).collect())
        .collect();
    assert_eq!(chunks, expected);
}

#[tokio::test]
async fn identify_and_group_updates_are_batched_into_arrays() {
    let (mock, server) = setup(json!({})).await;
    let mut batch: Vec<Value> = (0..3)
        .map(|i| json!({"type": "identify", "userId": format!("u{i}"), "anonymousId": format!("a{i}"), "traits": {"i": i}}))
        .collect();
    batch.extend(
        (0..2).map(|i| json!({"type": "group", "userId": "u", "groupId": format!("g{i}"), "traits": {"i": i}})),
    );
    assert_success(&server.client.post("/v1/batch", KEY, &json!({ "batch": batch })).await);

    let requests = mock.requests();
    assert_eq!(requests.len(), 3, "{requests:?}");
    let track = &mock.requests_to("/track")[0];
    let engage = &mock.requests_to("/engage")[0];
    let groups = &mock.requests_to("/groups")[0];
    let identified: Vec<&str> = track
        .data
        .as_ref()
        .and_then(Value::as_array)
        .expect("/track data is an array")
        .iter()
        .filter_map(|r| r["properties"]["$identified_id"].as_str())
        .collect();
    assert_eq!(identified, ["u0", "u1", "u2"]);
    let profiles: Vec<&str> = engage
        .data
        .as_ref()
        .and_then(Value::as_array)
        .expect("/engage data is an array")
        .iter()
        .filter_map(|r| r["$distinct_id"].as_str())
        .collect();
    assert_eq!(profiles, ["u0", "u1", "u2"]);
    let group_ids: Vec<&str> = groups
        .data
        .as_ref()
        .and_then(Value::as_array)
        .expect("/groups data is an array")
        .iter()
        .filter_map(|r| r["$group_id"].as_str())
        .collect();
    assert_eq!(group_ids, ["g0", "g1"]);
    // Every $identify was answered before the profile updates were sent.
    assert!(engage.at >= track.at);
    assert_eq!(requests.last().map(|r| r.path.as_str()), Some("/engage"));
}

#[tokio::test]
async fn groups_updates_are_sent_200_per_request() {
    let (mock, server) = setup(json!({})).await;
    let batch: Vec<Value> = (0..450)
        .map(|i| json!({"type": "group", "userId": "u", "groupId": format!("g{i}"), "traits": {"i": i}}))
        .collect();
    assert_success(&server.client.post("/v1/batch", KEY, &json!({ "batch": batch })).await);
    let groups = mock.requests_to("/groups");
    assert_eq!(mock.requests().len(), groups.len());
    let mut sizes: Vec<usize> = groups.iter().map(|r| r.records().len()).collect();
    sizes.sort_unstable();
    assert_eq!(sizes, [50, 200, 200]);
    let ids: HashSet<String> = groups
        .iter()
        .flat_map(common::Recorded::records)
        .filter_map(|r| r["$group_id"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(ids.len(), 450);
}

#[tokio::test]
async fn import_requests_respect_max_batch_bytes() {
    let (mock, server) = setup(json!({"max_batch_bytes": "1KB", "gzip": false})).await;
    let batch: Vec<Value> = (0..6).map(|i| track("u", "E", &format!("m-{i}"))).collect();
    assert_success(&server.client.post("/v1/batch", KEY, &json!({ "batch": batch })).await);
    let imports = mock.requests_to("/import");
    assert!(imports.len() >= 2, "6 events of ~180 bytes in one 1 KB request?");
    for r in &imports {
        assert!(r.body.len() <= 1000, "a {} byte /import body", r.body.len());
    }
    let mut ids: Vec<String> = imports.iter().flat_map(common::Recorded::insert_ids).collect();
    ids.sort();
    assert_eq!(ids, (0..6).map(|i| format!("m-{i}")).collect::<Vec<_>>());
}

#[tokio::test]
async fn profile_updates_of_one_request_keep_event_order() {
    // A login identify (with anonymousId: $identify, then $set) followed by a
    // server-side identify (userId only: $set). The later $set must be applied
    // last, or the profile keeps the stale value.
    let (mock, server) = setup(json!({})).await;
    let batch = json!({"batch": [
        {"type": "identify", "userId": "u1", "anonymousId": "a1", "traits": {"plan": "free"}},
        {"type": "identify", "userId": "u1", "traits": {"plan": "pro"}},
    ]});
    assert_success(&server.client.post("/v1/batch", KEY, &batch).await);
    let plans: Vec<Value> = mock
        .requests_to("/engage")
        .iter()
        .flat_map(common::Recorded::records)
        .map(|r| r["$set"]["plan"].clone())
        .collect();
    assert_eq!(
        plans,
        [json!("free"), json!("pro")],
        "profile updates reached Mixpanel out of event order"
    );
}

#[tokio::test]
async fn concurrent_requests_are_all_delivered() {
    let (mock, server) = setup(json!({})).await;
    let sends = (0..20).map(|i| {
        let client = server.client.clone();
        async move {
            client
                .post("/v1/track", KEY, &track("u", "E", &format!("c-{i:02}")))
                .await
        }
    });
    for answer in futures_util::future::join_all(sends).await {
        assert_success(&answer);
    }
    let mut ids: Vec<String> = mock
        .requests_to("/import")
        .iter()
        .flat_map(common::Recorded::insert_ids)
        .collect();
    ids.sort();
    assert_eq!(ids, (0..20).map(|i| format!("c-{i:02}")).collect::<Vec<_>>());
}

// ---------------------------------------------------------------------------
// Retries and Mixpanel's answers
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_500_is_retried_and_the_event_delivered_once_with_a_stable_insert_id() {
    let (mock, server) = setup(json!({})).await;
    mock.script("/import", [Reply::Status(500, "boom".into())]);
    // No messageId: the generated one must be reused on the retry.
    let event = json!({"userId": "u1", "event": "E"});
    assert_success(&server.client.post("/v1/track", KEY, &event).await);

    let imports = mock.requests_to("/import");
    let statuses: Vec<u16> = imports.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [500, 200]);
    let first = imports[0].insert_ids();
    assert_eq!(first, imports[1].insert_ids(), "the retry changed $insert_id");
    assert!(first[0].starts_with("api-") && first[0].len() <= 36, "{first:?}");
    assert_eq!(mock.accepted_records("/import").len(), 1);
}

#[tokio::test]
async fn a_429_retry_after_is_honoured() {
    let (mock, server) = setup(json!({})).await;
    mock.script("/import", [Reply::RetryAfter(429, "1".into())]);
    assert_success(&server.client.post("/v1/track", KEY, &track("u", "E", "m-429")).await);
    let imports = mock.requests_to("/import");
    assert_eq!(imports.iter().map(|r| r.status).collect::<Vec<_>>(), [429, 200]);
    let gap = imports[1].at.duration_since(imports[0].at);
    assert!(
        gap >= Duration::from_secs(1),
        "retried after {gap:?}, Retry-After was 1s"
    );
}

#[tokio::test]
async fn a_slow_answer_times_out_and_is_retried() {
    let (mock, server) = setup(json!({})).await;
    // request_timeout is 1s; the first answer would come after 3s.
    mock.script("/import", [Reply::Slow(Duration::from_secs(3))]);
    let started = Instant::now();
    assert_success(&server.client.post("/v1/track", KEY, &track("u", "E", "m-slow")).await);
    let took = started.elapsed();
    let imports = mock.requests_to("/import");
    assert_eq!(imports.len(), 2, "{imports:?}");
    assert_eq!(imports[0].insert_ids(), imports[1].insert_ids());
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(3),
        "answered after {took:?}"
    );
}

#[tokio::test]
async fn persistent_500s_answer_503_with_retry_after() {
    let mock = Mock::start().await;
    let server = Server::start(json!({
        "delivery": {"retry_budget": "300ms"},
        "destinations": [destination("d", KEY, &mock)],
    }))
    .await;
    mock.always("/import", Reply::Status(500, "down".into()));

    let answer = server.client.post("/v1/track", KEY, &track("u", "E", "m-down")).await;
    assert_eq!(answer.status, 503, "{answer:?}");
    assert_eq!(answer.json["success"], false);
    assert_eq!(answer.json["code"], "delivery_failed");
    let retry_after: u64 = answer
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("a numeric Retry-After");
    assert!(retry_after >= 1);
    let attempts = mock.requests_to("/import").len();
    assert!(attempts >= 2, "only {attempts} attempt(s) within the retry budget");

    // The synchronous endpoint says the same, per event.
    let answer = server
        .client
        .post("/v1/destinations/d/events", KEY, &track("u", "E", "m-down-2"))
        .await;
    assert_eq!(answer.status, 503, "{answer:?}");
    assert!(answer.header("retry-after").is_some());
    assert_eq!(answer.json["results"][0]["status"], 503);
    assert_eq!(
        answer.json["results"][0]["subscriptions"][0]["errortype"],
        "RETRYABLE_ERROR"
    );
}

#[tokio::test]
async fn mixpanels_retry_after_is_passed_on_to_the_sender() {
    let mock = Mock::start().await;
    let server = Server::start(json!({
        "delivery": {"retry_budget": "500ms"},
        "destinations": [destination("d", KEY, &mock)],
    }))
    .await;
    mock.always("/import", Reply::RetryAfter(503, "7".into()));
    let answer = server.client.post("/v1/track", KEY, &track("u", "E", "m-ra")).await;
    assert_eq!(answer.status, 503, "{answer:?}");
    assert_eq!(answer.header("retry-after"), Some("7"));
    // Waiting 7s does not fit the budget: one attempt only.
    assert_eq!(mock.requests_to("/import").len(), 1);
}

#[tokio::test]
async fn unreachable_mixpanel_answers_503() {
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let server = Server::start(json!({
        "delivery": {"retry_budget": "300ms"},
        "destinations": [{"id": "d", "write_keys": [KEY], "project_token": "tok", "api_base_url": format!("http://127.0.0.1:{port}")}],
    }))
    .await;
    let started = Instant::now();
    let answer = server.client.post("/v1/track", KEY, &track("u", "E", "m")).await;
    assert_eq!(answer.status, 503, "{answer:?}");
    assert!(answer.header("retry-after").is_some());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn identify_profile_update_waits_for_a_successful_identify() {
    // The $identify keeps failing: the request is answered 503 and the sender
    // will send the whole event again. Its $set must not go ahead of the
    // $identify it follows (the reference stops at the failed $identify).
    let mock = Mock::start().await;
    let server = Server::start(json!({
        "delivery": {"retry_budget": "200ms"},
        "destinations": [destination("d", KEY, &mock)],
    }))
    .await;
    mock.always("/track", Reply::Status(500, "down".into()));
    let event = json!({"userId": "u1", "anonymousId": "a1", "traits": {"plan": "pro"}});
    let answer = server.client.post("/v1/identify", KEY, &event).await;
    assert_eq!(answer.status, 503, "{answer:?}");
    assert!(!mock.requests_to("/track").is_empty());
    assert!(
        mock.requests_to("/engage").is_empty(),
        "the profile update was sent although its $identify was never accepted"
    );
}

#[tokio::test]
async fn records_mixpanel_would_refuse_are_rejected_before_sending() {
    let (mock, server) = setup(json!({})).await;
    let mut future = track("u", "Future", "m-future");
    future["timestamp"] = json!("2999-01-01T00:00:00.000Z");
    let batch = json!({"batch": [track("anonymous", "E", "m-anon"), future, track("u", "Fine", "m-fine")]});
    let answer = server.client.post("/v1/batch", KEY, &batch).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let rejected = answer.json["rejected"].as_array().cloned().unwrap_or_default();
    let events: Vec<&Value> = rejected.iter().map(|r| &r["event"]).collect();
    assert_eq!(events, [&json!(0), &json!(1)], "{answer:?}");
    assert!(rejected[0]["message"].as_str().unwrap_or("").contains("placeholder"));
    assert!(rejected[1]["message"].as_str().unwrap_or("").contains("future"));
    let imports = mock.requests_to("/import");
    assert_eq!(imports.len(), 1);
    assert_eq!(imports[0].insert_ids(), ["m-fine"]);
}

#[tokio::test]
async fn strict_partial_failure_lists_the_rejected_event() {
    let (mock, server) = setup(json!({})).await;
    mock.script("/import", [Reply::FailRecords(vec![1])]);
    let batch: Vec<Value> = (0..3).map(|i| track("u", "E", &format!("m-{i}"))).collect();
    let answer = server.client.post("/v1/batch", KEY, &json!({ "batch": batch })).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.json["success"], true);
    let rejected = answer.json["rejected"].as_array().cloned().unwrap_or_default();
    assert_eq!(rejected.len(), 1, "{answer:?}");
    assert_eq!(rejected[0]["event"], 1);
    assert_eq!(rejected[0]["destination"], "d");
    assert_eq!(rejected[0]["status"], 400);
    assert_eq!(rejected[0]["subscription"], "Track Calls");
    assert_eq!(rejected[0]["message"], "mock rejected record 1");
    // A permanent rejection is not retried.
    let imports = mock.requests_to("/import");
    assert_eq!(imports.len(), 1);
    assert_eq!(imports[0].param("strict").as_deref(), Some("1"));
}

#[tokio::test]
async fn a_form_endpoint_status_0_is_a_rejection() {
    let (mock, server) = setup(json!({})).await;
    mock.script("/engage", [Reply::FailRecords(vec![0])]);
    let event = json!({"userId": "u1", "traits": {"plan": "pro"}});
    let answer = server.client.post("/v1/identify", KEY, &event).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let rejected = &answer.json["rejected"];
    assert_eq!(rejected.as_array().map(Vec::len), Some(1), "{answer:?}");
    assert_eq!(rejected[0]["subscription"], "Identify Calls");
    assert_eq!(rejected[0]["message"], "mock refused the update");
    assert_eq!(mock.requests_to("/engage").len(), 1, "not retried");
}

#[tokio::test]
async fn a_413_splits_the_batch_until_every_record_arrives() {
    let (mock, server) = setup(json!({})).await;
    mock.max_records(4);
    let batch: Vec<Value> = (0..10).map(|i| track("u", "E", &format!("m-{i}"))).collect();
    assert_success(&server.client.post("/v1/batch", KEY, &json!({ "batch": batch })).await);

    let imports = mock.requests_to("/import");
    assert!(imports.iter().any(|r| r.status == 413), "no 413 was answered");
    for r in imports.iter().filter(|r| r.status == 200) {
        assert!(r.records().len() <= 4, "{} records accepted at once", r.records().len());
    }
    let mut delivered: Vec<String> = imports
        .iter()
        .filter(|r| r.status == 200)
        .flat_map(common::Recorded::insert_ids)
        .collect();
    delivered.sort();
    let expected: Vec<String> = (0..10).map(|i| format!("m-{i}")).collect();
    assert_eq!(delivered, expected, "each record exactly once");
}

#[tokio::test]
async fn a_record_too_large_on_its_own_is_rejected_not_retried_forever() {
    let (mock, server) = setup(json!({})).await;
    mock.max_records(0);
    let answer = server.client.post("/v1/track", KEY, &track("u", "E", "m-big")).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.json["rejected"][0]["status"], 413, "{answer:?}");
    assert_eq!(mock.requests_to("/import").len(), 1);
}

// ---------------------------------------------------------------------------
// The synchronous endpoint, dry-run, write keys
// ---------------------------------------------------------------------------

#[tokio::test]
async fn destination_events_answer_per_event_results() {
    let (mock, server) = setup(json!({})).await;
    let mut bad = track("u", "E1", "m-1");
    bad["timestamp"] = json!("not a date");
    let events = json!([track("u", "E0", "m-0"), bad, track("u", "E2", "m-2")]);
    let answer = server.client.post("/v1/destinations/d/events", KEY, &events).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let results = answer.json["results"].as_array().cloned().unwrap_or_default();
    assert_eq!(results.len(), 3, "{answer:?}");

    let statuses: Vec<&Value> = results.iter().map(|r| &r["status"]).collect();
    assert_eq!(statuses, [&json!(200), &json!(400), &json!(200)]);
    assert_eq!(results[0]["ok"], true);
    assert_eq!(results[0]["sent"][0]["event"], "E0");
    assert_eq!(results[0]["sent"][0]["properties"]["$insert_id"], "m-0");
    assert_eq!(results[0]["subscriptions"][0]["subscription"], "Track Calls");
    assert_eq!(results[1]["ok"], false);
    assert_eq!(results[1]["sent"], json!([]));
    assert_eq!(
        results[1]["errormessage"],
        "Timestamp must be a valid date-like string but it was not."
    );
    assert_eq!(results[1]["subscriptions"][0]["errortype"], "PAYLOAD_VALIDATION_FAILED");
    assert_eq!(results[2]["sent"][0]["event"], "E2");

    let mut delivered = mock.accepted_records("/import");
    delivered.sort_by_key(|r| r["event"].to_string());
    let names: Vec<&Value> = delivered.iter().map(|r| &r["event"]).collect();
    assert_eq!(names, [&json!("E0"), &json!("E2")]);
}

#[tokio::test]
async fn destination_events_need_a_routed_key_or_the_admin_token() {
    let mock = Mock::start().await;
    let server = Server::start(json!({
        "admin_token": "an-admin-token-0123456789",
        "destinations": [destination("d", KEY, &mock), destination("other", "k-other", &mock)],
    }))
    .await;
    let event = track("u", "E", "m-1");
    let answer = server.client.post("/v1/destinations/d/events", "k-other", &event).await;
    assert_eq!(answer.status, 401, "{answer:?}");
    assert!(mock.requests().is_empty());

    let answer = server
        .client
        .send(Send {
            path: "/v1/destinations/d/events".into(),
            authorization: Some("Bearer an-admin-token-0123456789".into()),
            body: serde_json::to_vec(&event).expect("json"),
            ..Send::default()
        })
        .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(
        mock.requests_to("/import")[0].header("authorization"),
        Some(basic("tok-d:").as_str())
    );
}

#[tokio::test]
async fn dry_run_sends_nothing_and_answers_200() {
    let mock = Mock::start().await;
    // No project token, but a base URL: anything sent would reach the mock.
    let dest = json!({"id": "dry", "write_keys": [KEY], "api_base_url": mock.url()});
    let server = Server::start(json!({ "destinations": [dest] })).await;
    let identify = json!({"userId": "u1", "anonymousId": "a1", "traits": {"plan": "pro"}});
    assert_success(&server.client.post("/v1/identify", KEY, &identify).await);
    assert_success(&server.client.post("/v1/track", KEY, &track("u", "E", "m")).await);
    let answer = server
        .client
        .post("/v1/destinations/dry/events", KEY, &track("u", "E", "m2"))
        .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.json["results"][0]["subscriptions"][0]["body"], "dry run");
    assert!(mock.requests().is_empty(), "{:?}", mock.requests());
}

#[tokio::test]
async fn one_write_key_feeds_two_destinations() {
    let (mock_a, mock_b) = (Mock::start().await, Mock::start().await);
    let server = Server::start(json!({
        "destinations": [destination("a", "shared", &mock_a), destination("b", "shared", &mock_b)],
    }))
    .await;
    assert_success(
        &server
            .client
            .post("/v1/track", "shared", &track("u", "E", "m-shared"))
            .await,
    );
    for (mock, auth) in [(&mock_a, basic("tok-a:")), (&mock_b, basic("tok-b:"))] {
        let imports = mock.requests_to("/import");
        assert_eq!(imports.len(), 1);
        assert_eq!(imports[0].insert_ids(), ["m-shared"]);
        assert_eq!(imports[0].header("authorization"), Some(auth.as_str()));
    }
}

#[tokio::test]
async fn write_keys_route_and_unknown_keys_are_refused() {
    let mock = Mock::start().await;
    let server = Server::start(json!({
        "destinations": [destination("d", KEY, &mock)],
    }))
    .await;
    let answer = server
        .client
        .post("/v1/track", "not-a-key", &track("u", "E", "m"))
        .await;
    assert_eq!(answer.status, 401, "{answer:?}");
    assert_eq!(answer.json["success"], false);
    assert!(mock.requests().is_empty());

    // The key in the body, as some SDKs send it; text/plain as analytics.js does.
    let mut event = track("u", "E", "m-body-key");
    event["writeKey"] = json!(KEY);
    let answer = server
        .client
        .send(Send {
            content_type: Some("text/plain".into()),
            ..Send::raw("/v1/track", None, serde_json::to_vec(&event).expect("json"))
        })
        .await;
    assert_success(&answer);
    let imports = mock.requests_to("/import");
    assert_eq!(imports.len(), 1);
    let record = &imports[0].records()[0];
    assert_eq!(record["properties"]["$insert_id"], "m-body-key");
    assert!(
        record.to_string().find(KEY).is_none(),
        "the write key was forwarded: {record}"
    );
}

#[tokio::test]
async fn a_gzipped_request_body_is_accepted() {
    let (mock, server) = setup(json!({})).await;
    let body = serde_json::to_vec(&json!({"batch": [track("u", "E", "m-gz-in")]})).expect("json");
    let answer = server
        .client
        .send(Send {
            content_encoding: Some("gzip".into()),
            ..Send::raw("/v1/batch", Some(KEY), gzip(&body))
        })
        .await;
    assert_success(&answer);
    assert_eq!(mock.requests_to("/import")[0].insert_ids(), ["m-gz-in"]);
}

// ---------------------------------------------------------------------------
// Enrichment
// ---------------------------------------------------------------------------

#[tokio::test]
async fn insert_id_is_the_message_id_or_a_generated_one() {
    let (mock, server) = setup(json!({})).await;
    let batch = json!({"batch": [
        track("u", "E", "msg-given"),
        {"type": "track", "userId": "u", "event": "E"},
        {"type": "track", "userId": "u", "event": "E", "messageId": ""},
    ]});
    assert_success(&server.client.post("/v1/batch", KEY, &batch).await);
    let ids = mock.requests_to("/import")[0].insert_ids();
    assert_eq!(ids.len(), 3);
    assert_eq!(ids[0], "msg-given");
    for id in &ids[1..] {
        assert!(id.starts_with("api-") && id.len() <= 36, "{id}");
    }
    assert_ne!(ids[1], ids[2], "generated ids must be unique");
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), 3);
}

#[tokio::test]
async fn timestamps_are_corrected_for_clock_skew_with_sent_at() {
    let (mock, server) = setup(json!({})).await;
    // The device clock is years behind; the event happened 5 minutes before it
    // was sent.
    let skewed = json!({
        "userId": "u", "event": "Skewed", "messageId": "m-skew",
        "timestamp": "2001-01-01T00:00:00.000Z", "sentAt": "2001-01-01T00:05:00.000Z",
    });
    let unskewed = json!({
        "userId": "u", "event": "Plain", "messageId": "m-plain",
        "timestamp": "2001-01-01T00:00:00.000Z",
    });
    // sentAt at the batch level applies to the events.
    let batch = json!({
        "sentAt": "2001-01-01T00:01:00.000Z",
        "batch": [{"type": "track", "userId": "u", "event": "Batched", "messageId": "m-batch",
                   "timestamp": "2001-01-01T00:00:00.000Z"}],
    });
    let before = now_ms();
    assert_success(&server.client.post("/v1/track", KEY, &skewed).await);
    assert_success(&server.client.post("/v1/track", KEY, &unskewed).await);
    assert_success(&server.client.post("/v1/batch", KEY, &batch).await);
    let after = now_ms();

    let records = mock.accepted_records("/import");
    let time_of = |name: &str| {
        records
            .iter()
            .find(|r| r["event"] == name)
            .and_then(|r| r["properties"]["time"].as_i64())
            .unwrap_or_else(|| panic!("no {name} record with a time: {records:?}"))
    };
    let skewed_time = time_of("Skewed");
    let (lo, hi) = (before - 300_000 - 5, after - 300_000 + 5);
    assert!(
        (lo..=hi).contains(&skewed_time),
        "time {skewed_time} not in [{lo}, {hi}] (now - 5 min)"
    );
    assert_eq!(time_of("Plain"), 978_307_200_000, "no sentAt: no correction");
    let batched = time_of("Batched");
    let (lo, hi) = (before - 60_000 - 5, after - 60_000 + 5);
    assert!(
        (lo..=hi).contains(&batched),
        "batch sentAt: {batched} not in [{lo}, {hi}]"
    );
}

// ---------------------------------------------------------------------------
// Health, admin, shutdown
// ---------------------------------------------------------------------------

#[tokio::test]
async fn admin_config_hides_secrets() {
    let mock = Mock::start().await;
    let mut dest = destination("d", "wk-secret-key", &mock);
    dest["api_secret"] = json!("api-secret-value");
    dest["api_region"] = json!("EU");
    let server = Server::start(json!({
        "admin_token": "an-admin-token-0123456789",
        "destinations": [dest],
    }))
    .await;
    let unauthorised = server.client.get("/admin/config").await;
    assert_eq!(unauthorised.status, 401);
    let answer = server
        .client
        .send(Send {
            method: Some(axum::http::Method::GET),
            path: "/admin/config".into(),
            authorization: Some("Bearer an-admin-token-0123456789".into()),
            ..Send::default()
        })
        .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.json["destinations"][0]["base_url"], mock.url());
    assert_eq!(answer.json["destinations"][0]["dry_run"], false);
    for secret in ["tok-d", "api-secret-value", "wk-secret-key", "an-admin-token"] {
        assert!(!answer.text.contains(secret), "{secret} in {}", answer.text);
    }
}

#[tokio::test]
async fn ready_until_shutdown_then_serve_returns() {
    let (_mock, server) = setup(json!({})).await;
    let ready = server.client.get("/readyz").await;
    assert_eq!(ready.status, 200);
    assert_eq!(ready.json["status"], "ready");
    let addr = server.addr;
    server.shutdown().await.expect("serve returned Ok");
    let refused = tokio::time::timeout(common::WAIT, tokio::net::TcpStream::connect(addr)).await;
    assert!(
        matches!(refused, Ok(Err(_))),
        "still accepting connections after shutdown"
    );
}

#[tokio::test]
async fn shutdown_lets_in_flight_requests_finish() {
    let (mock, server) = setup(json!({})).await;
    mock.script("/import", [Reply::Slow(Duration::from_millis(400))]);
    let client = server.client.clone();
    let pending = tokio::spawn(async move { client.post("/v1/track", KEY, &track("u", "E", "m-inflight")).await });
    // The request is in flight: Mixpanel has it and has not answered.
    mock.wait_for(1).await;
    let (answer, stopped) = tokio::join!(pending, server.shutdown());
    stopped.expect("serve returned Ok");
    let answer = answer.expect("request task");
    assert_success(&answer);
    assert_eq!(mock.requests_to("/import").len(), 1, "no retry was needed");
}

#[tokio::test]
async fn hand_written_toml_configuration_works() {
    let mock = Mock::start().await;
    let text = format!(
        r#"
listen = "127.0.0.1:0"

[limits]
max_event_bytes = "32KiB"

[delivery]
mode = "direct"
request_timeout = "1s"
retry_budget = "1s"
backoff_initial = "10ms"
backoff_max = "50ms"

[[destinations]]
id = "toml"
write_keys = ["k-toml"]
project_token = "tok-toml"
api_base_url = "{}/"
batch_size = 2
subscriptions = [
  {{ name = "Only Buys", subscribe = 'type = "track" and event = "Buy"', partnerAction = "trackEvent", mapping = {{ event = {{ "@path" = "$.event" }}, distinct_id = {{ "@path" = "$.userId" }}, insert_id = {{ "@path" = "$.messageId" }} }} }},
]
"#,
        mock.url()
    );
    let server = Server::start_toml(&text).await;
    let batch = json!({"batch": [track("u", "Buy", "b1"), track("u", "Browse", "x"), track("u", "Buy", "b2"), track("u", "Buy", "b3")]});
    assert_success(&server.client.post("/v1/batch", "k-toml", &batch).await);
    let mut chunks: Vec<Vec<String>> = mock.requests_to("/import").iter().map(|r| r.insert_ids()).collect();
    chunks.sort();
    assert_eq!(chunks, [vec!["b1".to_owned(), "b2".to_owned()], vec!["b3".to_owned()]]);
    // The trailing slash of the base URL is not doubled.
    assert!(mock.requests().iter().all(|r| r.path == "/import"));
}

/// The `preview` command masks credentials as the preview endpoint does (the
/// Authorization header, `$token`, `properties.token`); `--show-secrets` shows
/// them as they would be sent.
#[test]
fn the_preview_command_masks_credentials_unless_asked() {
    let settings = json!({"projectToken": "tok-shown-only-on-request", "apiSecret": "secret-shown-only-on-request"});
    let cases: Vec<String> = [
        json!({"type": "track", "event": "E", "userId": "u1", "messageId": "m1"}),
        json!({"type": "identify", "userId": "u1", "anonymousId": "a1", "traits": {"email": "e@x"}, "messageId": "m2"}),
        json!({"type": "group", "userId": "u1", "groupId": "g1", "traits": {"name": "G"}, "messageId": "m3"}),
    ]
    .iter()
    .enumerate()
    .map(|(i, event)| json!({"id": i, "settings": settings, "event": event}).to_string())
    .collect();
    let run = |args: &[&str]| -> String {
        let output = common::preview_command::run_preview(args, &cases);
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let secret_auth = {
        use base64::Engine as _;
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("secret-shown-only-on-request:")
        )
    };
    let masked = run(&[]);
    let results: Vec<Value> = masked.lines().map(|l| serde_json::from_str(l).expect("JSON")).collect();
    assert_eq!(results.len(), 3, "{masked}");
    let requests: Vec<&Value> = results
        .iter()
        .flat_map(|r| r["requests"].as_array().expect("requests").iter())
        .collect();
    assert!(requests.len() >= 4, "{masked}");
    for secret in [
        "tok-shown-only-on-request",
        "secret-shown-only-on-request",
        &secret_auth,
    ] {
        assert!(!masked.contains(secret), "{secret} in {masked}");
    }
    assert!(masked.contains("[redacted]"), "{masked}");
    let shown = run(&["--show-secrets"]);
    assert!(shown.contains("tok-shown-only-on-request"), "{shown}");
    assert!(shown.contains(&secret_auth), "{shown}");
}
