use serde_json::{json, Value};

use super::*;
use crate::mapping::schema::Payload;

fn payload(kind: ActionKind, v: Value) -> Payload<'static> {
    Payload::from_json(kind.fields(), v)
}

fn settings() -> Settings {
    let mut s = Settings::new("tok");
    s.source_name = Some("src".into());
    s
}

fn run(kind: ActionKind, v: Value) -> Result<Vec<Record<'static>>, ActionError> {
    let s = settings();
    perform(
        kind,
        payload(kind, v),
        &Context {
            settings: &s,
            now_ms: 1_000,
        },
    )
}

#[test]
fn identify_sends_identify_then_engage() {
    let r = run(
        ActionKind::IdentifyUser,
        json!({"user_id": "u", "anonymous_id": "a", "ip": "1.2.3.4",
               "traits": {"email": "e@x", "firstName": "Ada", "lastName": "L", "plan": "pro", "createdAt": "2020"}}),
    )
    .unwrap();
    assert_eq!(r.len(), 2);
    assert_eq!(r[0].endpoint, Endpoint::Track);
    assert_eq!(
        r[0].data.to_value(),
        json!({"event": "$identify", "properties": {"$identified_id": "u", "$anon_id": "a", "token": "tok", "segment_source_name": "src"}})
    );
    assert_eq!(r[1].endpoint, Endpoint::Engage);
    assert_eq!(
        r[1].data.to_value(),
        json!({"$token": "tok", "$distinct_id": "u", "$ip": "1.2.3.4", "$set": {
            "plan": "pro", "$created": "2020", "$email": "e@x", "$first_name": "Ada", "$last_name": "L", "$name": "Ada L"}})
    );
}

#[test]
fn identify_without_anonymous_id_or_traits_sends_nothing() {
    assert!(run(ActionKind::IdentifyUser, json!({"user_id": "u", "traits": {}}))
        .unwrap()
        .is_empty());
    let r = run(
        ActionKind::IdentifyUser,
        json!({"user_id": null, "anonymous_id": "", "traits": {"a": 1}}),
    )
    .unwrap();
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].data.to_value()["$distinct_id"], json!(""));
}

#[test]
fn group_uses_key_and_trait_value() {
    let r = run(
        ActionKind::GroupIdentifyUser,
        json!({"group_id": "g1", "group_key": "company", "traits": {"company": "Acme", "name": "N", "created_at": 5}}),
    )
    .unwrap();
    assert_eq!(
        r[0].data.to_value(),
        json!({"$token": "tok", "$group_key": "company", "$group_id": "Acme", "$set": {"company": "Acme", "$name": "N", "$created": 5}})
    );
    let r = run(ActionKind::GroupIdentifyUser, json!({"group_id": "g1", "traits": {}})).unwrap();
    assert_eq!(r[0].data.to_value()["$group_key"], json!("$group_id"));
    assert_eq!(r[0].data.to_value()["$group_id"], json!("g1"));
    let e = run(ActionKind::GroupIdentifyUser, json!({"group_id": "g1"})).unwrap_err();
    assert_eq!((e.status, e.message.as_str()), (400, "\"traits\" is a required field"));
}

#[test]
fn alias_record() {
    let r = run(ActionKind::Alias, json!({"alias": "new", "distinct_id": "old"})).unwrap();
    assert_eq!(
        r[0].data.to_value(),
        json!({"event": "$create_alias", "properties": {"distinct_id": "old", "alias": "new", "token": "tok", "segment_source_name": "src"}})
    );
}

#[test]
fn increment_coerces_like_javascript_number() {
    let r = run(
        ActionKind::IncrementProperties,
        json!({"user_id": "u", "increment": {"a": "5", "b": "", "c": " 7 ", "d": "1e3", "e": "0x10", "f": 2.5, "g": true, "h": null}}),
    )
    .unwrap();
    assert_eq!(
        r[0].data.to_value()["$add"],
        json!({"a": 5, "b": 0, "c": 7, "d": 1000, "e": 16, "f": 2.5})
    );
    let e = run(ActionKind::IncrementProperties, json!({"increment": {"x": "abc"}})).unwrap_err();
    assert_eq!(e.message, "The key \"x\" was not numeric");
    let many: serde_json::Map<String, Value> = (0..21).map(|i| (format!("k{i}"), json!(1))).collect();
    let e = run(ActionKind::IncrementProperties, json!({"increment": many})).unwrap_err();
    assert_eq!(e.message, "Exceeded maximum of 20 properties for increment call");
    assert!(run(ActionKind::IncrementProperties, json!({"increment": {}}))
        .unwrap()
        .is_empty());
}

#[test]
fn track_event_properties_order_and_overrides() {
    let r = run(
        ActionKind::TrackEvent,
        json!({"event": "E", "distinct_id": "u", "insert_id": "m1", "time": "2021-08-17T15:21:15.449Z", "ip": "1.1.1.1",
               "library_name": "lib", "event_properties": {"ip": "9.9.9.9", "time": 1, "distinct_id": "x", "k": "v"}}),
    )
    .unwrap();
    let p = &r[0].data.to_value()["properties"];
    assert_eq!(p["time"], json!(1_629_213_675_449_i64));
    assert_eq!(p["ip"], json!("9.9.9.9"));
    assert_eq!(p["distinct_id"], json!("u"));
    assert_eq!(p["mp_lib"], json!("Segment Actions: lib"));
    assert_eq!(p["$source"], json!("segment"));
    assert_eq!(p["k"], json!("v"));
    let keys: Vec<&str> = p.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(&keys[..4], &["time", "ip", "id", "distinct_id"]);
}

#[test]
fn track_event_defaults_time_and_insert_id() {
    let r = run(ActionKind::TrackEvent, json!({"event": "E"})).unwrap();
    let p = &r[0].data.to_value()["properties"];
    assert_eq!(p["time"], json!(1_000));
    assert_eq!(p["distinct_id"], json!(""));
    assert!(p.get("id").is_none());
    let id = p["$insert_id"].as_str().unwrap();
    assert!(!id.is_empty() && id.len() <= 36 && id.chars().all(|c| c.is_ascii_alphanumeric()));
}

#[test]
fn purchase_generates_product_events() {
    let r = run(
        ActionKind::TrackPurchase,
        json!({"event": "Order Completed", "insert_id": "m", "time": 10_000, "generatePurchaseEventPerProduct": true,
               "event_properties": {"revenue": 5, "coupon": "C", "plan": "p"},
               "products": [{"sku": "a"}, {"sku": "b", "coupon": "P"}]}),
    )
    .unwrap();
    assert_eq!(r.len(), 3);
    let p1 = &r[1].data.to_value()["properties"];
    assert_eq!(r[1].data.to_value()["event"], json!("Product Purchased"));
    assert_eq!(p1["$insert_id"], json!("0m"));
    assert_eq!(p1["time"], json!(9_999));
    assert_eq!(p1["sku"], json!("a"));
    assert_eq!(p1["plan"], json!("p"));
    assert!(p1.get("revenue").is_none() && p1.get("coupon").is_none());
    let p2 = &r[2].data.to_value()["properties"];
    assert_eq!(
        (p2["$insert_id"].clone(), p2["time"].clone(), p2["coupon"].clone()),
        (json!("1m"), json!(9_998), json!("P"))
    );
}

#[test]
fn purchase_random_ids_fit_mixpanel_limit_after_prefix() {
    let products: Vec<Value> = (0..12_000).map(|i| json!({"sku": i.to_string()})).collect();
    let r = run(
        ActionKind::TrackPurchase,
        json!({"event": "O", "generatePurchaseEventPerProduct": true, "products": products}),
    )
    .unwrap();
    for rec in &r {
        let data = rec.data.to_value();
        let id = data["properties"]["$insert_id"].as_str().unwrap();
        assert!(id.len() <= 36, "{id}");
    }
}

#[test]
fn purchase_without_flag_sends_only_the_order() {
    let r = run(
        ActionKind::TrackPurchase,
        json!({"event": "O", "products": [{"sku": "a"}]}),
    )
    .unwrap();
    assert_eq!(r.len(), 1);
}

#[test]
fn action_names_round_trip() {
    for k in ActionKind::ALL {
        assert_eq!(ActionKind::from_name(k.name()), Some(k));
    }
    assert_eq!(ActionKind::from_name("nope"), None);
}

/// Records built from a payload that borrows the event equal those built
/// from one that owns its values (coerced values are owned).
#[test]
fn borrowed_and_owned_payloads_send_the_same_records() {
    use crate::mapping::schema::{validate_entries, Mode};
    use std::borrow::Cow;
    let event = json!({
        "event": "Order Completed", "insert_id": "not valid!", "time": 10_000,
        "distinct_id": "u1", "anonymous_id": "a1", "userAgent": "Mozilla/5.0 (X11; Linux x86_64) Chrome/120.0.0.0 Safari/537.36",
        "library_name": "analytics.js", "utm_properties": {"utm_source": "news", "utm_term": null},
        "userAgentData": {"mobile": false, "platform": "Linux"},
        "context": {"integration": {"name": "Iterable"}},
        "generatePurchaseEventPerProduct": true,
        "event_properties": {"plan": "p", "$os": "mine", "time": 1, "revenue": 3},
        "products": [{"sku": "a", "$insert_id": "x y"}, {}, {"sku": "b", "price": 2.5}]
    });
    let mut s = settings();
    s.repair_insert_ids = true;
    let ctx = Context {
        settings: &s,
        now_ms: 1_000,
    };
    for kind in [ActionKind::TrackEvent, ActionKind::TrackPurchase] {
        let map = event.as_object().unwrap();
        let borrowed = validate_entries(
            kind.fields(),
            map.iter().map(|(k, v)| (k.as_str(), Cow::Borrowed(v))),
            Mode::Single,
        )
        .unwrap();
        let owned = crate::mapping::schema::validate(kind.fields(), event.clone(), Mode::Single).unwrap();
        let a = perform(kind, borrowed, &ctx).unwrap();
        let b = perform(kind, owned, &ctx).unwrap();
        assert_eq!(a.len(), b.len());
        assert_eq!(a.len(), if kind == ActionKind::TrackPurchase { 4 } else { 1 });
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(record::encode(&x.data), record::encode(&y.data));
            assert_eq!(x.data.to_value(), y.data.to_value());
            let owned = x.clone().into_owned();
            assert_eq!(record::encode(&owned.data), record::encode(&x.data));
        }
        let first = a[0].data.to_value();
        assert_eq!(first["properties"]["$source"], json!("Iterable"));
        assert_eq!(first["properties"]["$os"], json!("mine"));
        assert_eq!(first["properties"]["utm_source"], json!("news"));
        assert_eq!(first["properties"]["$platform"], json!("Linux"));
        assert_eq!(first["properties"]["mp_lib"], json!("Segment Actions: analytics.js"));
        assert!(properties::valid_insert_id(
            first["properties"]["$insert_id"].as_str().unwrap()
        ));
    }
}

/// The event's properties as `serde_json::Map` inserts would build them:
/// the user's properties over the computed ones, and each product's fields
/// over what it inherits (in place when present, else appended).
mod property_merging {
    use super::*;
    use proptest::prelude::*;

    const KEYS: [&str; 12] = [
        "$os",
        "time",
        "id",
        "revenue",
        "coupon",
        "sku",
        "price",
        "plan",
        "$insert_id",
        "utm_source",
        "x",
        "$browser",
    ];

    fn object(keys: Vec<(usize, i32)>) -> Map<String, Value> {
        keys.into_iter()
            .map(|(k, n)| (KEYS[k % KEYS.len()].to_owned(), json!(n)))
            .collect()
    }

    fn text_of(props: &Map<String, Value>) -> String {
        serde_json::to_string(props).unwrap()
    }

    proptest! {
        #[test]
        fn user_and_product_properties_merge_like_json_objects(
            user in proptest::collection::vec((0usize..12, any::<i32>()), 0..8),
            products in proptest::collection::vec(proptest::collection::vec((0usize..12, any::<i32>()), 0..6), 1..4),
        ) {
            let user = object(user);
            let products: Vec<Map<String, Value>> = products.into_iter().map(object).collect();
            let base_event = json!({"event": "O", "insert_id": "m", "time": 10_000, "distinct_id": "u",
                "os_name": "Linux", "utm_properties": {"utm_source": "news"}});
            let mut event = base_event.clone();
            event["event_properties"] = Value::Object(user.clone());
            event["generatePurchaseEventPerProduct"] = json!(true);
            event["products"] = json!(products);
            let sent = run(ActionKind::TrackPurchase, event).unwrap();
            let base = run(ActionKind::TrackPurchase, base_event).unwrap();
            let Value::Object(mut order) = base[0].data.to_value()["properties"].take() else { panic!() };
            for (k, v) in &user {
                if !["time", "id", "$anon_id", "distinct_id", "$group_id", "$insert_id", "$user_id"].contains(&k.as_str()) {
                    order.insert(k.clone(), v.clone());
                }
            }
            prop_assert_eq!(sent.len(), 1 + products.len());
            // The text sent, so a repeated key would show.
            let wire = |i: usize, name: &str, props: &Map<String, Value>| {
                prop_assert_eq!(
                    &*record::encode(&sent[i].data),
                    format!("{{\"event\":\"{name}\",\"properties\":{}}}", text_of(props))
                );
                Ok(())
            };
            wire(0, "O", &order)?;
            for (i, product) in products.iter().enumerate() {
                let mut expected: Map<String, Value> = order
                    .iter()
                    .filter(|(k, _)| !["affiliation", "subtotal", "total", "revenue", "shipping", "tax", "discount",
                        "coupon", "currency", "order_number", "products"].contains(&k.as_str()))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                expected.insert("$insert_id".into(), json!(format!("{i}m")));
                expected.insert("time".into(), json!(10_000 - 1 - i as i64));
                for (k, v) in product {
                    expected.insert(k.clone(), v.clone());
                }
                wire(i + 1, "Product Purchased", &expected)?;
            }
        }
    }
}
