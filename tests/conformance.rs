//! Conformance: every case of `tests/fixtures/conformance.jsonl` (input -> what the
//! reference sent) runs through the same code as the `preview` command, and the
//! result is compared with the reference's by the rules of the fixture's format:
//! settings errors, subscription errors, matched subscriptions, requests (method,
//! URL, auth, content type, JSON body; clock and random values by shape), and
//! per-event errors. A failing case prints its id and a readable JSON diff.

use std::collections::BTreeMap;

use serde_json::Value;

const FIXTURE: &str = include_str!("fixtures/conformance.jsonl");

/// Paths where two JSON values differ, with both sides.
fn json_diff(path: &str, expected: &Value, actual: &Value, out: &mut Vec<String>) {
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => {
            for (k, ev) in e {
                let p = format!("{path}/{k}");
                match a.get(k) {
                    Some(av) => json_diff(&p, ev, av, out),
                    None => out.push(format!("  {p}: missing (expected {ev})")),
                }
            }
            for (k, av) in a {
                if !e.contains_key(k) {
                    out.push(format!("  {path}/{k}: unexpected {av}"));
                }
            }
        }
        (Value::Array(e), Value::Array(a)) => {
            if e.len() != a.len() {
                out.push(format!("  {path}: {} items expected, {} found", e.len(), a.len()));
            }
            for (i, (ev, av)) in e.iter().zip(a).enumerate() {
                json_diff(&format!("{path}/{i}"), ev, av, out);
            }
        }
        (Value::Number(e), Value::Number(a)) if e.as_f64() == a.as_f64() => {}
        _ if expected == actual => {}
        _ => out.push(format!("  {path}: expected {expected}, found {actual}")),
    }
}

fn media_type(v: Option<&Value>) -> String {
    v.and_then(Value::as_str)
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

fn url_without_verbose(url: &str) -> String {
    let Some((base, query)) = url.split_once('?') else {
        return url.to_owned();
    };
    let params: Vec<&str> = query
        .split('&')
        .filter(|p| *p != "verbose=1" && !p.is_empty())
        .collect();
    if params.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", params.join("&"))
    }
}

fn valid_insert_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 36 && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

/// Compares one expected request with ours; nondeterministic values by shape.
fn compare_request(now_ms: i64, expected: &Value, actual: &Value, out: &mut Vec<String>, label: &str) {
    let mut actual = actual.clone();
    let mut expected_body = expected.clone();
    for nd in expected
        .get("nondeterministic")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let pointer = nd.get("pointer").and_then(Value::as_str).unwrap_or("");
        let ours = actual.pointer(pointer).cloned();
        match nd.get("kind").and_then(Value::as_str) {
            Some("now") => {
                let offset = nd.get("offset_ms").and_then(Value::as_i64).unwrap_or(0);
                let want = now_ms + offset;
                if ours.as_ref().and_then(Value::as_i64) != Some(want) {
                    out.push(format!(
                        "  {label}{pointer}: expected now{offset:+} = {want}, found {ours:?}"
                    ));
                }
            }
            Some("random") => {
                let prefix = nd.get("prefix").and_then(Value::as_str).unwrap_or("");
                let ok = ours
                    .as_ref()
                    .and_then(Value::as_str)
                    .is_some_and(|s| valid_insert_id(s) && s.starts_with(prefix) && s.len() > prefix.len());
                if !ok {
                    out.push(format!(
                        "  {label}{pointer}: expected a random insert id after {prefix:?}, found {ours:?}"
                    ));
                }
            }
            other => out.push(format!("  {label}: unknown nondeterministic kind {other:?}")),
        }
        if let Some(slot) = actual.pointer_mut(pointer) {
            *slot = Value::Null;
        }
        if let Some(slot) = expected_body.pointer_mut(pointer) {
            *slot = Value::Null;
        }
    }
    let get = |v: &Value, k: &str| v.get(k).cloned().unwrap_or(Value::Null);
    if get(expected, "method") != get(&actual, "method") {
        out.push(format!(
            "  {label}/method: expected {}, found {}",
            get(expected, "method"),
            get(&actual, "method")
        ));
    }
    let eu = url_without_verbose(expected.get("url").and_then(Value::as_str).unwrap_or(""));
    let au = url_without_verbose(actual.get("url").and_then(Value::as_str).unwrap_or(""));
    if eu != au {
        out.push(format!("  {label}/url: expected {eu}, found {au}"));
    }
    let eh = expected.get("headers");
    let ah = actual.get("headers");
    let eauth = eh.and_then(|h| h.get("authorization"));
    let aauth = ah.and_then(|h| h.get("authorization"));
    if eauth != aauth {
        out.push(format!(
            "  {label}/headers/authorization: expected {eauth:?}, found {aauth:?}"
        ));
    }
    let ect = media_type(eh.and_then(|h| h.get("content-type")));
    let act = media_type(ah.and_then(|h| h.get("content-type")));
    if ect != act {
        out.push(format!("  {label}/headers/content-type: expected {ect}, found {act}"));
    }
    json_diff(
        &format!("{label}/body"),
        &get(&expected_body, "body"),
        &get(&actual, "body"),
        out,
    );
}

fn by_subscription(requests: Option<&Value>) -> BTreeMap<String, Vec<Value>> {
    let mut map: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for r in requests.and_then(Value::as_array).into_iter().flatten() {
        let name = r.get("subscription").and_then(Value::as_str).unwrap_or("").to_owned();
        map.entry(name).or_default().push(r.clone());
    }
    map
}

fn error_triples(v: Option<&Value>) -> Vec<(String, i64, i64)> {
    let mut t: Vec<(String, i64, i64)> = v
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|e| {
            (
                e.get("subscription").and_then(Value::as_str).unwrap_or("").to_owned(),
                e.get("event").and_then(Value::as_i64).unwrap_or(-1),
                e.get("status").and_then(Value::as_i64).unwrap_or(-1),
            )
        })
        .collect();
    t.sort();
    t
}

fn names(v: Option<&Value>, key: &str) -> Vec<String> {
    let mut n: Vec<String> = v
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|e| match e {
            Value::String(s) => Some(s.clone()),
            _ => e.get(key).and_then(Value::as_str).map(str::to_owned),
        })
        .collect();
    n.sort();
    n
}

/// The differences between the reference's `expect` and our result.
fn check_case(line: &Value, result: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let expect = &line["expect"];
    let now_ms = line["case"]
        .get("now_ms")
        .and_then(Value::as_i64)
        .unwrap_or(1_700_000_000_000);
    let (es, rs) = (expect.get("settings_error"), result.get("settings_error"));
    if es.is_some() != rs.is_some() {
        out.push(format!("  settings_error: expected {es:?}, found {rs:?}"));
    }
    if es.is_some() {
        return out;
    }
    let (e, r) = (
        names(expect.get("subscription_errors"), "subscription"),
        names(result.get("subscription_errors"), "subscription"),
    );
    if e != r {
        out.push(format!(
            "  subscription_errors: expected {e:?}, found {r:?} ({})",
            result["subscription_errors"]
        ));
    }
    if expect.get("matched") != result.get("matched") {
        out.push(format!(
            "  matched: expected {}, found {}",
            expect["matched"], result["matched"]
        ));
    }
    let prefix_only = expect
        .get("delivery_dependent")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let crashed: Vec<String> = expect
        .get("crashed")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|n| n.as_str().map(str::to_owned))
        .collect();
    let expected_requests = by_subscription(expect.get("requests"));
    let actual_requests = by_subscription(result.get("requests"));
    for (sub, exp) in &expected_requests {
        let act = actual_requests.get(sub).cloned().unwrap_or_default();
        let count_ok = if prefix_only {
            act.len() >= exp.len()
        } else {
            act.len() == exp.len()
        };
        if !count_ok {
            out.push(format!(
                "  requests[{sub}]: {} expected, {} found",
                exp.len(),
                act.len()
            ));
        }
        for (i, (e, a)) in exp.iter().zip(&act).enumerate() {
            compare_request(now_ms, e, a, &mut out, &format!("requests[{sub}][{i}]"));
        }
    }
    for (sub, act) in &actual_requests {
        if !expected_requests.contains_key(sub) && !crashed.contains(sub) {
            out.push(format!(
                "  requests[{sub}]: {} unexpected requests, first: {}",
                act.len(),
                act[0]
            ));
        }
    }
    let (e, r) = (error_triples(expect.get("errors")), error_triples(result.get("errors")));
    if e != r {
        out.push(format!("  errors: expected {e:?}, found {r:?} ({})", result["errors"]));
    }
    out
}

#[test]
fn conformance_cases_match_the_reference() {
    let mut failures = Vec::new();
    let mut total = 0;
    for raw in FIXTURE.lines().filter(|l| !l.trim().is_empty()) {
        total += 1;
        let line: Value = serde_json::from_str(raw).expect("fixture line is JSON");
        let result = mixpanel_actions::preview::run_line(raw);
        let diff = check_case(&line, &result);
        if !diff.is_empty() {
            failures.push(format!("case {}:\n{}", line["case"]["id"], diff.join("\n")));
        }
    }
    assert!(total >= 250, "fixture has {total} cases");
    assert!(
        failures.is_empty(),
        "{} of {total} conformance cases differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn error_messages_match_the_reference_wording() {
    let mut differ = Vec::new();
    for raw in FIXTURE.lines().filter(|l| !l.trim().is_empty()) {
        let line: Value = serde_json::from_str(raw).expect("fixture line is JSON");
        let result = mixpanel_actions::preview::run_line(raw);
        let expected = line["expect"]["errors"].as_array().cloned().unwrap_or_default();
        let ours = result["errors"].as_array().cloned().unwrap_or_default();
        for e in &expected {
            let same = ours.iter().any(|o| {
                o["subscription"] == e["subscription"] && o["event"] == e["event"] && o["message"] == e["message"]
            });
            if !same {
                differ.push(format!(
                    "case {}: expected message {}",
                    line["case"]["id"], e["message"]
                ));
            }
        }
        if let (Some(e), Some(o)) = (line["expect"].get("settings_error"), result.get("settings_error")) {
            if e["message"] != o["message"] {
                differ.push(format!(
                    "case {}: settings message {} vs {}",
                    line["case"]["id"], e["message"], o["message"]
                ));
            }
        }
    }
    assert!(
        differ.is_empty(),
        "{} messages differ:\n{}",
        differ.len(),
        differ.join("\n")
    );
}
