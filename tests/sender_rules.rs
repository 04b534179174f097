//! Cases of our own, written from the rules (SPEC.md and the README), for what
//! real senders send: insert ids Mixpanel refuses, traits under
//! `context.traits`, and three reference behaviours (an empty project token,
//! reserved profile keys, null product fields). They run through `preview`,
//! the same code as delivery.

use mixpanel_actions::preview::run_line;
use serde_json::{json, Value};

const NOW_MS: i64 = 1_700_000_000_000;

fn run(settings: Value, event: Value) -> Value {
    let case = json!({"id": "c", "settings": settings, "event": event, "now_ms": NOW_MS});
    run_line(&case.to_string())
}

/// The body of the request sent by the subscription named `name`.
fn body<'a>(result: &'a Value, name: &str) -> &'a Value {
    result["requests"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["subscription"] == name))
        .map(|r| &r["body"])
        .unwrap_or_else(|| panic!("no request of {name} in {result}"))
}

fn valid_for_mixpanel(id: &str) -> bool {
    (1..=36).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

fn track(message_id: Value) -> Value {
    json!({"type": "track", "event": "Viewed", "userId": "u1", "messageId": message_id,
           "timestamp": "2024-05-01T12:00:00.000Z"})
}

fn insert_id(result: &Value) -> Value {
    body(result, "Track Calls")[0]["properties"]["$insert_id"].clone()
}

#[test]
fn insert_ids_mixpanel_refuses_are_repaired_deterministically_when_asked() {
    let node = "node-next-1714564800000-3f0c2a5e-8d4b-4c71-9a2e-6b1d0e7f9c3a";
    let on = json!({"projectToken": "tok", "repairInsertIds": true});
    let off = json!({"projectToken": "tok"});

    // Reference shape without the setting: sent as the reference sends it.
    assert_eq!(insert_id(&run(off.clone(), track(json!(node)))), json!(node));

    // Repaired: a UUID v5 of the original, the same on every run.
    let first = insert_id(&run(on.clone(), track(json!(node))));
    let again = insert_id(&run(on.clone(), track(json!(node))));
    let text = first.as_str().expect("a string");
    assert!(valid_for_mixpanel(text), "{text}");
    assert_eq!(first, again, "deterministic across retries and replays");
    let expected = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, node.as_bytes())
        .hyphenated()
        .to_string();
    assert_eq!(text, expected);

    // Valid ids are sent unchanged; other characters are repaired.
    let uuid = "3f0c2a5e-8d4b-4c71-9a2e-6b1d0e7f9c3a";
    assert_eq!(insert_id(&run(on.clone(), track(json!(uuid)))), json!(uuid));
    let dotted = insert_id(&run(on.clone(), track(json!("msg.1"))));
    assert_ne!(dotted, json!("msg.1"));
    assert!(valid_for_mixpanel(dotted.as_str().unwrap_or("")));
    // Two different invalid ids stay different.
    let other = insert_id(&run(on.clone(), track(json!(format!("{node}x")))));
    assert_ne!(other, first);
}

#[test]
fn purchase_product_ids_are_checked_after_their_prefix() {
    // A uuid is valid; with the product's index prefix it is 37 characters.
    let uuid = "3f0c2a5e-8d4b-4c71-9a2e-6b1d0e7f9c3a";
    let order = json!({"type": "track", "event": "Order Completed", "userId": "u1", "messageId": uuid,
                       "timestamp": "2024-05-01T12:00:00.000Z",
                       "properties": {"order_id": "o1", "products": [{"product_id": "p1"}, {"product_id": "p2"}]}});
    let off = run(json!({"projectToken": "tok"}), order.clone());
    let ids = |r: &Value| -> Vec<String> {
        body(r, "Order Completed Calls")
            .as_array()
            .map(|events| {
                events
                    .iter()
                    .map(|e| e["properties"]["$insert_id"].as_str().unwrap_or("").to_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    assert_eq!(ids(&off), vec![uuid.to_owned(), format!("0{uuid}"), format!("1{uuid}")]);
    let on = ids(&run(json!({"projectToken": "tok", "repairInsertIds": true}), order));
    assert_eq!(on[0], uuid, "the order's own id is valid");
    let v5 = |s: &str| {
        uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, s.as_bytes())
            .hyphenated()
            .to_string()
    };
    assert_eq!(
        on[1..],
        [v5(&format!("0{uuid}")), v5(&format!("1{uuid}"))],
        "a UUID v5 of the prefixed id"
    );
}

#[test]
fn an_empty_insert_id_in_a_batch_is_repaired_like_any_other() {
    let case = |settings: Value| {
        let mut event = track(json!(""));
        event["userId"] = json!("u2");
        json!({"id": "b", "settings": settings, "batch": true, "events": [event], "now_ms": NOW_MS})
    };
    // Batch mode keeps `""` (the reference sends `"$insert_id": ""`).
    let off = run_line(&case(json!({"projectToken": "tok"})).to_string());
    assert_eq!(insert_id(&off), json!(""), "{off}");
    let on = run_line(&case(json!({"projectToken": "tok", "repairInsertIds": true})).to_string());
    let expected = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, b"")
        .hyphenated()
        .to_string();
    assert_eq!(insert_id(&on), json!(expected), "{on}");
}

#[test]
fn identify_traits_come_from_context_traits_when_asked() {
    let rudder = json!({"type": "identify", "userId": "u1", "messageId": "m1",
                        "context": {"traits": {"email": "u1@example.com", "plan": "pro"}}});
    let off = run(json!({"projectToken": "tok"}), rudder.clone());
    let engage = off["requests"]
        .as_array()
        .map(|r| {
            r.iter()
                .any(|r| r["url"].as_str().is_some_and(|u| u.contains("/engage")))
        })
        .unwrap_or(false);
    assert!(!engage, "reference shape: no traits, no profile update: {off}");
    let on = run(json!({"projectToken": "tok", "traitsFromContext": true}), rudder);
    let set = &body(&on, "Identify Calls")["data"]["$set"];
    assert_eq!(set["$email"], "u1@example.com", "{on}");
    assert_eq!(set["plan"], "pro");

    // Empty top-level traits are no traits.
    let empty = json!({"type": "identify", "userId": "u1", "traits": {},
                       "context": {"traits": {"plan": "context"}}});
    let on = run(json!({"projectToken": "tok", "traitsFromContext": true}), empty);
    assert_eq!(body(&on, "Identify Calls")["data"]["$set"]["plan"], "context", "{on}");

    // Top-level traits win over context.traits.
    let both = json!({"type": "identify", "userId": "u1", "traits": {"plan": "top"},
                      "context": {"traits": {"plan": "context"}}});
    let on = run(json!({"projectToken": "tok", "traitsFromContext": true}), both);
    assert_eq!(body(&on, "Identify Calls")["data"]["$set"]["plan"], "top");

    // Group events too.
    let group = json!({"type": "group", "userId": "u1", "groupId": "g1",
                       "context": {"traits": {"name": "Acme", "employees": 10}}});
    let on = run(json!({"projectToken": "tok", "traitsFromContext": true}), group);
    let set = &body(&on, "Group Calls")["data"]["$set"];
    assert_eq!(set["$name"], "Acme", "{on}");
    assert_eq!(set["employees"], 10);
}

#[test]
fn an_empty_project_token_is_a_token() {
    let result = run(json!({"projectToken": ""}), track(json!("m1")));
    assert!(result.get("settings_error").is_none(), "{result}");
    let request = result["requests"][0].clone();
    // apiSecret ?? projectToken: the empty token gives `Basic base64(":")`.
    assert_eq!(request["headers"]["authorization"], "Basic Og==", "{request}");
    let missing = run(json!({"apiRegion": "US 🇺🇸"}), track(json!("m1")));
    assert_eq!(
        missing["settings_error"]["message"],
        "The root value is missing the required field 'projectToken'."
    );
}

#[test]
fn reserved_profile_keys_are_assigned_after_the_rest() {
    let identify = |traits: Value| json!({"type": "identify", "userId": "u1", "traits": traits});
    let set = |traits: Value| {
        body(&run(json!({"projectToken": "tok"}), identify(traits)), "Identify Calls")["data"]["$set"].clone()
    };

    // The sender's own `$email` keeps its place and takes `traits.email`.
    let s = set(json!({"$email": "mine", "plan": "pro", "email": "real@example.com"}));
    let keys: Vec<&str> = s
        .as_object()
        .map(|m| m.keys().map(String::as_str).collect())
        .unwrap_or_default();
    assert_eq!(keys, vec!["$email", "plan"], "{s}");
    assert_eq!(s["$email"], "real@example.com");

    // Without `traits.email`, the sender's `$email` is gone; likewise the others.
    let s = set(
        json!({"$email": "mine", "$name": "n", "$phone": "p", "$username": "x", "$created": "c",
                       "$first_name": "f", "$last_name": "l", "plan": "pro"}),
    );
    assert_eq!(s, json!({"plan": "pro"}));

    // groupIdentifyUser: `$name` and `$created` the same way.
    let group = |traits: Value| json!({"type": "group", "userId": "u1", "groupId": "g1", "traits": traits});
    let gset = |traits: Value| {
        body(&run(json!({"projectToken": "tok"}), group(traits)), "Group Calls")["data"]["$set"].clone()
    };
    assert_eq!(gset(json!({"$name": "mine", "size": 3})), json!({"size": 3}));
    assert_eq!(gset(json!({"$name": "mine", "name": "Acme"})), json!({"$name": "Acme"}));
}

#[test]
fn null_product_fields_are_coerced_by_type() {
    let order = json!({"type": "track", "event": "Order Completed", "userId": "u1", "messageId": "m1",
                       "timestamp": "2024-05-01T12:00:00.000Z",
                       "properties": {"products": [null, {"product_id": null, "price": null, "quantity": null, "name": "x", "extra": null}]}});
    let result = run(json!({"projectToken": "tok"}), order);
    let events = body(&result, "Order Completed Calls")
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(events.len(), 3, "{result}");
    let fields = [
        ("product_id", json!("")),
        ("sku", json!("")),
        ("category", json!("")),
        ("name", json!("")),
        ("brand", json!("")),
        ("variant", json!("")),
        ("price", json!(0)),
        ("quantity", json!(0)),
        ("coupon", json!("")),
        ("position", json!(0)),
        ("url", json!("")),
        ("image_url", json!("")),
    ];
    // A null product: all twelve fields, each coerced from null.
    for (key, value) in &fields {
        assert_eq!(&events[1]["properties"][key], value, "{key} of the null product");
    }
    // Null fields of a product: coerced; missing ones stay missing; keys the
    // default mapping does not list are not mapped.
    let p = &events[2]["properties"];
    assert_eq!(
        (&p["product_id"], &p["price"], &p["quantity"]),
        (&json!(""), &json!(0), &json!(0))
    );
    assert_eq!(p["name"], "x");
    assert!(p.get("sku").is_none() && p.get("brand").is_none(), "{p}");
    assert!(p.get("extra").is_none(), "{p}");
}
