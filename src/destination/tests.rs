use serde_json::{json, Value};

use super::*;

fn dest() -> Destination {
    Destination::with_presets(Settings::new("tok"))
}

fn track(name: &str, id: &str) -> Value {
    json!({"type": "track", "event": name, "userId": "u", "messageId": id, "timestamp": "2021-01-01T00:00:00Z"})
}

#[test]
fn single_mode_one_import_per_event() {
    let d = dest();
    let events = [track("A", "1")];
    let out = d.process(&events, Mode::Single, 0);
    assert_eq!(out.subscriptions.len(), 1);
    let reqs = out.into_requests(&d, Mode::Single, false);
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].request.url, "https://api.mixpanel.com/import?strict=1");
    assert_eq!(reqs[0].request.body.len(), 1);
}

#[test]
fn batch_mode_chunks_by_batch_size() {
    let mut d = dest();
    let mut mapping = d.subscriptions[0].mapping.source().clone();
    mapping["batch_size"] = json!(2);
    d.subscriptions[0].mapping = crate::mapping::kit::CompiledMapping::compile(&mapping).unwrap();
    let events: Vec<Value> = (0..5).map(|i| track("A", &i.to_string())).collect();
    let out = d.process(&events, Mode::Batch, 0);
    let reqs = out.into_requests(&d, Mode::Batch, false);
    let sizes: Vec<usize> = reqs.iter().map(|r| r.request.body.len()).collect();
    assert_eq!(sizes, vec![2, 2, 1]);
    assert_eq!(reqs[2].events, vec![4]);
}

#[test]
fn validation_failure_is_per_event_in_batch() {
    let d = dest();
    let mut bad = track("B", "2");
    bad["timestamp"] = json!("not a date");
    let events = [track("A", "1"), bad];
    let out = d.process(&events, Mode::Batch, 0);
    let sub = &out.subscriptions[0];
    assert!(matches!(sub.events[0].1, EventResult::Records(_)));
    assert_eq!(
        sub.events[1].1,
        EventResult::Failed {
            status: 400,
            message: "Timestamp must be a valid date-like string but it was not.".into()
        }
    );
    assert_eq!(out.into_requests(&d, Mode::Batch, false).len(), 1);
}

#[test]
fn disabled_subscriptions_do_not_run() {
    let mut d = dest();
    for s in &mut d.subscriptions {
        s.enabled = false;
    }
    assert!(d.process(&[track("A", "1")], Mode::Single, 0).subscriptions.is_empty());
}

#[test]
fn strict_loading_names_the_subscription_and_problem() {
    let configs = vec![
        SubscriptionConfig {
            name: "bad trigger".into(),
            subscribe: "(type = \"track\"".into(),
            partner_action: "trackEvent".into(),
            mapping: json!({}),
            enabled: None,
            id: None,
        },
        SubscriptionConfig {
            name: "bad action".into(),
            subscribe: "type = \"track\"".into(),
            partner_action: "nope".into(),
            mapping: json!({}),
            enabled: None,
            id: None,
        },
        SubscriptionConfig {
            name: "bad mapping".into(),
            subscribe: "type = \"track\"".into(),
            partner_action: "trackEvent".into(),
            mapping: json!({"event": {"@nope": 1}}),
            enabled: None,
            id: None,
        },
    ];
    let errors = load_subscriptions(&configs).unwrap_err();
    assert_eq!(errors.len(), 3);
    assert_eq!(errors[0].subscription, "bad trigger");
    assert!(errors[0].message.contains("invalid trigger"), "{}", errors[0].message);
    assert!(errors[1]
        .message
        .starts_with("unknown partnerAction (expected one of: trackEvent"));
    // Found by fuzzing the config loader: the value was quoted (any value may be a secret).
    assert!(!errors[1].message.contains("nope"), "{}", errors[1].message);
    assert!(errors[2].message.contains("invalid mapping"));
    let (ok, errs) = load_subscriptions_lenient(&configs);
    assert!(ok.is_empty());
    assert_eq!(errs.len(), 3);
}

#[test]
fn at_most_fifty_subscriptions() {
    let one = SubscriptionConfig {
        name: "s".into(),
        subscribe: "type = \"track\"".into(),
        partner_action: "trackEvent".into(),
        mapping: json!({}),
        enabled: None,
        id: None,
    };
    let configs = vec![one; MAX_SUBSCRIPTIONS + 1];
    let errors = load_subscriptions(&configs).unwrap_err();
    assert!(errors[0].message.contains("at most 50"));
}

#[test]
fn templates_that_can_never_render_are_refused_at_load() {
    let sub = |name: &str, template: String| SubscriptionConfig {
        name: name.into(),
        subscribe: "type = \"track\"".into(),
        partner_action: "trackEvent".into(),
        mapping: json!({"event": {"@liquid": template}, "event_properties": {"@path": "$.properties"}}),
        enabled: None,
        id: None,
    };
    let configs = vec![
        sub("loop", "{% for x in properties.items %}{{ x }}{% endfor %}".into()),
        sub("long", format!("{{{{ event }}}}{}", "x".repeat(1000))),
        sub("fine", "{{ event | upcase }}".into()),
    ];
    let errors = load_subscriptions(&configs).unwrap_err();
    let text: Vec<String> = errors
        .iter()
        .map(|e| format!("{}: {}", e.subscription, e.message))
        .collect();
    assert_eq!(errors.len(), 2, "{text:?}");
    assert!(
        text[0].starts_with("loop: mapping.event: ") && text[0].contains("\"for\""),
        "{text:?}"
    );
    assert!(
        text[1].starts_with("long: mapping.event: ") && text[1].contains("1000 characters"),
        "{text:?}"
    );
    // The event tester (reference-shaped cases) keeps the reference's per-event
    // errors: it loads them.
    let (loaded, lenient_errors) = load_subscriptions_lenient(&configs);
    assert_eq!((loaded.len(), lenient_errors.len()), (3, 0));
}

/// With `traits_from_context`, a batch that needs its traits patched runs on
/// copies of the events: the records (borrowing from the copies) are made
/// owned, and equal those of the events run as they are.
#[test]
fn patched_events_give_the_same_track_records() {
    let mut settings = Settings::new("tok");
    settings.traits_from_context = true;
    let d = Destination::with_presets(settings);
    let mut t = track("A", "1");
    t["properties"] = json!({"plan": "pro", "nested": {"a": [1, 2]}});
    t["context"] = json!({"ip": "1.2.3.4", "userAgent": "curl/8"});
    let identify = json!({"type": "identify", "userId": "u", "messageId": "2",
        "context": {"traits": {"email": "a@example.com"}}});
    let patched = [t.clone(), identify];
    let alone = [t];
    let requests = |events: &[Value]| {
        d.process(events, Mode::Single, 0)
            .into_requests(&d, Mode::Single, false)
            .into_iter()
            .map(|r| (r.request.endpoint, r.request.body.encode()))
            .collect::<Vec<_>>()
    };
    let (with, without) = (requests(&patched), requests(&alone));
    assert_eq!(with.first(), without.first());
    assert!(with.len() > without.len(), "the identify sends records of its own");
    assert!(with.iter().any(|(endpoint, _)| *endpoint == Endpoint::Engage));
}

/// The fields found once per subscription for its mapping's keys give what
/// searching the fields for each key gives: keys out of the fields' order, a
/// key that is no field, and a replaced mapping (whose positions are stale).
#[test]
fn field_positions_agree_with_searching_the_fields() {
    let configs = vec![SubscriptionConfig {
        name: "custom".into(),
        subscribe: "type = \"track\"".into(),
        partner_action: "trackEvent".into(),
        mapping: json!({
            "time": {"@path": "$.timestamp"},
            "not_a_field": {"@path": "$.event"},
            "event_properties": {"@path": "$.properties"},
            "distinct_id": {"@path": "$.userId"},
            "event": {"@path": "$.event"},
            "insert_id": {"@path": "$.messageId"}
        }),
        enabled: None,
        id: None,
    }];
    let subscriptions = load_subscriptions(&configs).unwrap();
    let fresh = Destination {
        settings: Settings::new("tok"),
        subscriptions,
    };
    let mut stale = fresh.clone();
    stale.subscriptions[0].mapping = crate::mapping::kit::CompiledMapping::compile(&configs[0].mapping).unwrap();
    let mut event = track("A", "m1");
    event["properties"] = json!({"plan": "pro"});
    let events = [event];
    let a = fresh.process(&events, Mode::Single, 0);
    let b = stale.process(&events, Mode::Single, 0);
    assert_eq!(a, b);
    let EventResult::Records(records) = &a.subscriptions[0].events[0].1 else {
        panic!("{a:?}")
    };
    let sent = records[0].data.to_value();
    assert_eq!(sent["event"], json!("A"));
    assert_eq!(sent["properties"]["plan"], json!("pro"));
    assert_eq!(sent["properties"]["$insert_id"], json!("m1"));
    assert_eq!(sent["properties"]["time"], json!(1_609_459_200_000_i64));
}
