#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;
use serde_json::{json, Value};

use super::{FqlError, Trigger};

fn trigger(source: &str) -> Trigger {
    match Trigger::parse(source) {
        Ok(trigger) => trigger,
        Err(error) => panic!("{source:?} should parse: {error}"),
    }
}

fn matches(source: &str, event: &Value) -> bool {
    trigger(source).matches(event)
}

fn error(source: &str) -> FqlError {
    match Trigger::parse(source) {
        Ok(trigger) => panic!("{source:?} should not parse, got {trigger:?}"),
        Err(error) => error,
    }
}

fn track(properties: Value) -> Value {
    json!({"type": "track", "event": "Order Completed", "userId": "u1", "properties": properties})
}

fn prop(value: Value) -> Value {
    track(json!({ "x": value }))
}

/// Asserts `source` against `x` set to each value (`None` = missing).
fn check_x(source: &str, cases: &[(Option<Value>, bool)]) {
    let parsed = trigger(source);
    for (value, expected) in cases {
        let event = match value {
            Some(v) => prop(v.clone()),
            None => track(json!({})),
        };
        assert_eq!(parsed.matches(&event), *expected, "{source:?} with x = {value:?}");
    }
}

// ---------------------------------------------------------------- type, event

#[test]
fn type_equals() {
    assert!(matches(r#"type = "track""#, &json!({"type": "track"})));
    assert!(!matches(r#"type = "track""#, &json!({"type": "identify"})));
    assert!(!matches(r#"type = "track""#, &json!({})));
    assert!(!matches(r#"type = "track""#, &json!({"type": "TRACK"})));
    assert!(matches(r#"type != "track""#, &json!({"type": "page"})));
    assert!(matches(r#"type != "track""#, &json!({})));
    assert!(!matches(r#"type != "track""#, &json!({"type": "track"})));
}

#[test]
fn event_equals_is_strict_string_equality() {
    assert!(matches(r#"event = "Order Completed""#, &track(json!({}))));
    assert!(!matches(r#"event = "order completed""#, &track(json!({}))));
    assert!(matches("event = 123", &json!({"event": "123"})));
    assert!(!matches("event = 123", &json!({"event": 123})));
    assert!(matches("event = 1.50", &json!({"event": "1.5"})));
    assert!(matches("event = -0", &json!({"event": "0"})));
    assert!(matches("event = 1000000000000000000000", &json!({"event": "1e+21"})));
    assert!(matches(r#"event = """#, &json!({"event": ""})));
    assert!(!matches(r#"event = """#, &json!({})));
    assert!(!matches(r#"event = "true""#, &json!({"event": true})));
    assert!(matches("event = true", &json!({"event": "true"})));
    assert!(!matches("event = null", &json!({"event": null})));
    assert!(matches("event = null", &json!({"event": "null"})));
}

#[test]
fn not_equals_is_true_for_missing_and_non_strings() {
    assert!(matches(r#"event != "A""#, &json!({})));
    assert!(matches(r#"event != "A""#, &json!({"event": null})));
    assert!(matches("event != 1", &json!({"event": 1})));
    assert!(!matches("event != 1", &json!({"event": "1"})));
    assert!(matches("event != null", &json!({"event": null})));
    assert!(!matches("event != null", &json!({"event": "null"})));
}

#[test]
fn event_and_type_ignore_the_rest_of_the_path() {
    assert!(matches(r#"event.x = "A""#, &json!({"event": "A"})));
    assert!(matches(r#"type.anything = "track""#, &json!({"type": "track"})));
}

// ---------------------------------------------------------------- name, userId

#[test]
fn name_and_user_id_null_checks() {
    assert!(matches("name = null", &json!({})));
    assert!(matches("name = null", &json!({"name": null})));
    assert!(!matches("name = null", &json!({"name": ""})));
    assert!(matches("name != null", &json!({"name": ""})));
    assert!(!matches("name != null", &json!({})));
    assert!(matches(r#"name = "Home""#, &json!({"name": "Home"})));
    assert!(matches("userId != null", &json!({"userId": 0})));
    assert!(!matches("userId != null", &json!({"userId": null})));
    assert!(matches("userId = null", &json!({})));
    assert!(matches(r#"userId = "u1""#, &json!({"userId": "u1"})));
    assert!(!matches("userId = 5", &json!({"userId": 5})));
    assert!(matches("userId = 5", &json!({"userId": "5"})));
}

#[test]
fn user_id_booleans() {
    assert!(matches("userId = true", &json!({"userId": true})));
    assert!(!matches("userId = true", &json!({"userId": "true"})));
    assert!(matches("userId = false", &json!({"userId": false})));
    assert!(!matches("userId = false", &json!({})));
    // `!= true` is a string comparison.
    assert!(matches("userId != true", &json!({"userId": true})));
    assert!(!matches("userId != true", &json!({"userId": "true"})));
}

// ---------------------------------------------------------------- properties

#[test]
fn property_string_equality() {
    check_x(
        r#"properties.x = "10""#,
        &[
            (Some(json!("10")), true),
            (Some(json!(10)), false),
            (Some(json!("10 ")), false),
            (None, false),
            (Some(Value::Null), false),
        ],
    );
    check_x(
        r#"properties.x != "10""#,
        &[
            (Some(json!("10")), false),
            (Some(json!(10)), true),
            (None, true),
            (Some(Value::Null), true),
        ],
    );
    check_x(r#"properties.x = """#, &[(Some(json!("")), true), (None, false)]);
}

#[test]
fn property_number_equality_requires_a_number() {
    check_x(
        "properties.x = 10",
        &[
            (Some(json!(10)), true),
            (Some(json!(10.0)), true),
            (Some(json!("10")), false),
            (None, false),
            (Some(json!(11)), false),
        ],
    );
    check_x(
        "properties.x != 10",
        &[
            (Some(json!(10)), false),
            (Some(json!(11)), true),
            (Some(json!("10")), false),
            (Some(json!("11")), false),
            (None, false),
            (Some(Value::Null), false),
        ],
    );
    check_x("properties.x = -5", &[(Some(json!(-5)), true)]);
    check_x("properties.x = 1.5", &[(Some(json!(1.5)), true)]);
    check_x(
        "properties.x = 0",
        &[(Some(json!(0)), true), (Some(json!(false)), false)],
    );
    check_x("properties.x = +10", &[(Some(json!(10)), true)]);
    // A lone sign is NaN: never equal, always different.
    check_x("properties.x = -", &[(Some(json!(0)), false)]);
    check_x("properties.x != -", &[(Some(json!(0)), true), (None, false)]);
}

#[test]
fn property_booleans() {
    check_x(
        "properties.x = true",
        &[
            (Some(json!(true)), true),
            (Some(json!("true")), false),
            (Some(json!(1)), false),
            (None, false),
        ],
    );
    check_x(
        "properties.x = false",
        &[
            (Some(json!(false)), true),
            (Some(json!("false")), false),
            (Some(json!(0)), false),
            (None, false),
            (Some(Value::Null), false),
        ],
    );
    // Only `=` tests booleans; `!= true` compares with the text "true".
    check_x(
        "properties.x != true",
        &[(Some(json!(true)), true), (Some(json!("true")), false), (None, true)],
    );
    check_x(
        r#"properties.x = "true""#,
        &[(Some(json!(true)), false), (Some(json!("true")), true)],
    );
}

#[test]
fn property_null_checks() {
    check_x(
        "properties.x = null",
        &[
            (None, true),
            (Some(Value::Null), true),
            (Some(json!("")), false),
            (Some(json!(0)), false),
            (Some(json!(false)), false),
        ],
    );
    check_x(
        "properties.x != null",
        &[
            (None, false),
            (Some(Value::Null), false),
            (Some(json!("")), true),
            (Some(json!([])), true),
            (Some(json!({})), true),
        ],
    );
    assert!(matches("properties.x = null", &json!({"type": "track"})));
    assert!(matches("properties.x = null", &json!({"properties": null})));
}

#[test]
fn comparisons_require_a_number() {
    let cases = [
        ("properties.x < 10", [true, false, false, false, false]),
        ("properties.x <= 10", [true, true, false, false, false]),
        ("properties.x > 10", [false, false, true, false, false]),
        ("properties.x >= 10", [false, true, true, false, false]),
    ];
    let values = [json!(5), json!(10), json!(11), json!("5"), json!(null)];
    for (source, expected) in cases {
        let parsed = trigger(source);
        for (value, want) in values.iter().zip(expected) {
            assert_eq!(parsed.matches(&prop(value.clone())), want, "{source} with {value}");
        }
        assert!(!parsed.matches(&track(json!({}))), "{source} with x missing");
    }
    check_x(
        "properties.x > -1.5",
        &[(Some(json!(-1)), true), (Some(json!(-2)), false)],
    );
    check_x("properties.x >= 10", &[(Some(json!(true)), false)]);
}

#[test]
fn comparison_values_go_through_javascript_number() {
    check_x(
        r#"properties.x < "0x10""#,
        &[(Some(json!(15)), true), (Some(json!(16)), false)],
    );
    check_x(
        r#"properties.x <= """#,
        &[(Some(json!(0)), true), (Some(json!(1)), false)],
    );
    check_x(
        "properties.x > true",
        &[(Some(json!(2)), true), (Some(json!(1)), false)],
    );
    check_x(r#"properties.x < "abc""#, &[(Some(json!(1)), false)]);
    check_x(r#"properties.x < 'ten'"#, &[(Some(json!(1)), false)]);
}

#[test]
fn traits_and_context() {
    let event = json!({
        "type": "identify",
        "traits": {"email": "a@example.com", "logins": 17},
        "properties": {"email": "p@example.com"},
        "context": {"library": {"name": "analytics.js"}, "page": {"url": "https://x/checkout"}}
    });
    assert!(matches(r#"traits.email = "a@example.com""#, &event));
    assert!(!matches(r#"properties.email = "a@example.com""#, &event));
    assert!(matches("traits.logins >= 10", &event));
    assert!(matches("traits.logins = 17", &event));
    assert!(matches(r#"context.library.name = "analytics.js""#, &event));
    assert!(matches(r#"contains(context.page.url, "checkout")"#, &event));
    assert!(matches("traits.missing = null", &event));
    assert!(matches("context.missing.deep = null", &event));
}

// ---------------------------------------------------------------- paths

#[test]
fn dotted_and_bracketed_paths() {
    let event = track(json!({
        "nested": {"level": {"deep": "x"}},
        "products": [{"sku": "s1"}, {"sku": "s2"}],
        "user.email": "dot@example.com",
    }));
    assert!(matches(r#"properties.nested.level.deep = "x""#, &event));
    // `.1` lexes as a number, not as a path segment.
    assert!(!matches(r#"properties.products.1.sku = "s2""#, &event));
    assert!(matches(r#"properties.products\[1\].sku = "s2""#, &event));
    // Keys with dots cannot be reached: the path is split on the dot.
    assert!(!matches(r#"properties.user\.email = "dot@example.com""#, &event));
    assert!(matches("properties.products.length = 2", &event));
    assert!(matches(r#"properties.nested.level.deep.length = 1"#, &event));
}

#[test]
fn path_lookup_stops_at_falsy_values() {
    check_x("properties.x.y = 0", &[(Some(json!(0)), true), (Some(json!(1)), false)]);
    check_x(r#"properties.x.y = """#, &[(Some(json!("")), true)]);
    check_x("properties.x.y = false", &[(Some(json!(false)), true)]);
    check_x(
        "properties.x.y = null",
        &[(Some(Value::Null), true), (Some(json!(true)), true)],
    );
}

#[test]
fn string_indexes_and_inherited_members() {
    // A number after a dot is a number token, so indexes need escaped brackets.
    check_x(r#"properties.x\[0\] = "N""#, &[(Some(json!("Nike")), true)]);
    check_x(r#"properties.x\[01\] = "i""#, &[(Some(json!("Nike")), false)]);
    check_x(r#"properties.x.0 = "N""#, &[(Some(json!("Nike")), false)]);
    check_x(
        "properties.x.length > 3",
        &[(Some(json!("Nike")), true), (Some(json!("Ni")), false)],
    );
    // Every object has `constructor`, so it "exists" even when absent.
    assert!(matches("properties.constructor != null", &track(json!({}))));
    assert!(!matches("properties.constructor != null", &json!({"type": "track"})));
    check_x(
        "properties.x.map != null",
        &[(Some(json!([])), true), (Some(json!({})), false)],
    );
    check_x(
        "properties.x.toFixed != null",
        &[
            (Some(json!(1)), true),
            (Some(json!("1")), false),
            (Some(json!(0)), true),
        ],
    );
}

#[test]
fn bare_prefix_reads_itself() {
    assert!(matches(r#"properties = "p""#, &track(json!({"properties": "p"}))));
    assert!(matches("traits != null", &json!({"traits": {"traits": 1}})));
}

// ---------------------------------------------------------------- functions

#[test]
fn contains_requires_a_string() {
    let source = r#"contains(properties.x, "b")"#;
    check_x(
        source,
        &[
            (Some(json!("abc")), true),
            (Some(json!("xyz")), false),
            (Some(json!(["b"])), false),
            (None, false),
            (Some(Value::Null), false),
        ],
    );
    check_x(
        r#"contains(properties.x, "")"#,
        &[(Some(json!("")), true), (Some(json!(1)), false)],
    );
    check_x("contains(properties.x, 12)", &[(Some(json!("a12")), true)]);
    assert!(matches(r#"contains(event, "Order")"#, &track(json!({}))));
    assert!(matches(r#"contains(name, "om")"#, &json!({"name": "Home"})));
    assert!(matches(r#"contains(userId, "u")"#, &json!({"userId": "u1"})));
    assert!(matches(
        r#"contains(traits.email, "@x")"#,
        &json!({"traits": {"email": "a@x"}})
    ));
}

#[test]
fn negated_contains_also_requires_a_string() {
    check_x(
        r#"!contains(properties.x, "b")"#,
        &[
            (Some(json!("abc")), false),
            (Some(json!("xyz")), true),
            (None, false),
            (Some(json!(5)), false),
        ],
    );
    assert!(!matches(r#"!contains(event, "Test")"#, &json!({"type": "track"})));
}

#[test]
fn match_starts_with_and_ends_with() {
    check_x(
        r#"match(properties.x, "abc*")"#,
        &[
            (Some(json!("abcdef")), true),
            (Some(json!("xabc")), false),
            (None, false),
            (Some(json!(1)), false),
        ],
    );
    check_x(
        r#"match(properties.x, "*ed")"#,
        &[(Some(json!("Completed")), true), (Some(json!("edit")), false)],
    );
    // Anything but a trailing `*`: ends with the pattern minus its first char.
    check_x(
        r#"match(properties.x, "A")"#,
        &[
            (Some(json!("anything")), true),
            (Some(json!("")), true),
            (Some(json!(1)), false),
        ],
    );
    check_x(
        r#"match(properties.x, "abc")"#,
        &[(Some(json!("xbc")), true), (Some(json!("abx")), false)],
    );
    check_x(r#"match(properties.x, "*")"#, &[(Some(json!("")), true)]);
    check_x(
        r#"match(properties.x, "**")"#,
        &[(Some(json!("*a")), true), (Some(json!("a*")), false)],
    );
    check_x(
        r#"!match(properties.x, "abc*")"#,
        &[
            (Some(json!("abcdef")), false),
            (Some(json!("xyz")), true),
            (None, false),
        ],
    );
    check_x(
        r#"!match(properties.x, "*ed")"#,
        &[(Some(json!("Completed")), false), (Some(json!("Viewed!")), true)],
    );
}

#[test]
fn match_with_an_emoji_pattern_keeps_the_low_surrogate() {
    // "😀x" minus its first UTF-16 unit is the low surrogate of 😀 then "x".
    check_x(
        r#"match(properties.x, "😀x")"#,
        &[
            (Some(json!("a😀x")), true),
            (Some(json!("ax")), false),
            (Some(json!("x")), false),
        ],
    );
    check_x(
        r#"match(properties.x, "😀")"#,
        &[(Some(json!("ab😀")), true), (Some(json!("ab")), false)],
    );
}

#[test]
fn functions_on_fields_they_do_not_accept_form_no_condition() {
    let error = error(r#"contains(type, "track")"#);
    assert!(error.message.contains("no condition"), "{error}");
    let parsed = trigger(r#"contains(type, "t") or type = "page""#);
    assert!(parsed.matches(&json!({"type": "page"})));
    assert!(!parsed.warnings().is_empty());
}

// ---------------------------------------------------------------- quirks

#[test]
fn single_quoted_strings_keep_their_quotes() {
    let parsed = trigger("event = 'A'");
    assert!(!parsed.matches(&json!({"event": "A"})));
    assert!(parsed.matches(&json!({"event": "'A'"})));
    assert!(parsed.warnings().iter().any(|w| w.contains("single-quoted")));
    assert!(!matches("contains(event, 'A')", &json!({"event": "A"})));
    assert!(matches("contains(event, 'A')", &json!({"event": "x'A'x"})));
}

#[test]
fn last_keyword_decides_the_group_operator() {
    let parsed = trigger(r#"type = "track" and event = "A" or event = "B""#);
    // Means: type = "track" or event = "A" or event = "B".
    assert!(parsed.matches(&json!({"type": "track", "event": "C"})));
    assert!(parsed.matches(&json!({"type": "page", "event": "B"})));
    assert!(parsed.warnings().iter().any(|w| w.contains("mixed")));

    let parsed = trigger(r#"type = "track" or type = "identify" and userId != null"#);
    // Means: all three.
    assert!(!parsed.matches(&json!({"type": "track", "userId": "u"})));
    assert!(!parsed.matches(&json!({"type": "identify"})));

    let parsed = trigger(r#"type = "track" and (event = "A" or event = "B")"#);
    assert!(parsed.matches(&json!({"type": "track", "event": "B"})));
    assert!(!parsed.matches(&json!({"type": "page", "event": "B"})));
    assert!(parsed.warnings().is_empty(), "{:?}", parsed.warnings());
}

#[test]
fn two_groups_in_parentheses() {
    let parsed = trigger(r#"(event = "A" and properties.price >= 100) or (event = "B" and properties.total >= 500)"#);
    assert!(parsed.matches(&json!({"event": "A", "properties": {"price": 100}})));
    assert!(parsed.matches(&json!({"event": "B", "properties": {"total": 501}})));
    assert!(!parsed.matches(&json!({"event": "A", "properties": {"total": 501}})));
}

#[test]
fn double_equals_parses_and_never_matches() {
    let parsed = trigger(r#"type == "track""#);
    assert!(!parsed.matches(&json!({"type": "track"})));
    assert!(parsed.matches(&json!({"type": "="})));
    assert!(parsed.warnings().iter().any(|w| w.contains("`==`")));
}

#[test]
fn not_is_ignored() {
    let parsed = trigger(r#"not type = "track""#);
    assert!(parsed.matches(&json!({"type": "track"})));
    assert!(!parsed.matches(&json!({"type": "page"})));
    assert!(parsed.warnings().iter().any(|w| w.contains("`not`")));
}

#[test]
fn missing_value_compares_with_eos() {
    let parsed = trigger("type = ");
    assert!(!parsed.matches(&json!({"type": "track"})));
    assert!(parsed.matches(&json!({"type": "eos"})));
    assert!(parsed.warnings().iter().any(|w| w.contains("no value")));
}

#[test]
fn unknown_fields_are_skipped() {
    let parsed = trigger(r#"foo = "x" and type = "track""#);
    assert!(parsed.matches(&json!({"type": "track"})));
    assert!(!parsed.warnings().is_empty());
    assert!(matches(
        r#"constructor = 1 and type = "track""#,
        &json!({"type": "track"})
    ));
}

#[test]
fn bang_before_anything_but_a_function_is_ignored() {
    assert!(matches(r#"!(type = "track")"#, &json!({"type": "track"})));
}

#[test]
fn infix_function_names_work_as_operators() {
    assert!(matches(r#"event contains "Ord""#, &json!({"event": "Order"})));
    assert!(matches("properties.x exists 1", &prop(json!(0))));
}

#[test]
fn tokenizer_oddities() {
    // `<=5` is `<`, `=`, `5`: compares with the text "=", never true.
    check_x("properties.x <=5", &[(Some(json!(1)), false)]);
    check_x("properties.x <= 5", &[(Some(json!(1)), true)]);
    // A string glued to `and` re-opens a string... that ends at the next quote.
    assert!(Trigger::parse(r#"type="track"and"#).is_err());
    // A failed keyword look-ahead at the very end drops what it read.
    assert!(!matches("event = an", &json!({"event": "an"})));
    assert!(matches("event = an", &json!({"event": "a"})));
    // Escaped characters are part of an identifier.
    assert!(matches(r#"ty\pe = "track""#, &json!({"type": "track"})));
    // Newlines and tabs are whitespace.
    assert!(matches(
        "type = \"track\"\nand\tevent = \"A\"",
        &json!({"type": "track", "event": "A"})
    ));
}

#[test]
fn function_call_inside_parentheses_closes_the_group() {
    let parsed = trigger(r#"type = "track" and (contains(event, "Order") or event = "Refund")"#);
    // The group is only `contains(...)`: `or event = "Refund"` joins the outer
    // group, whose last keyword is now `or`.
    assert!(parsed.matches(&json!({"type": "track", "event": "X"})));
    assert!(parsed.matches(&json!({"type": "page", "event": "Refund"})));
    assert!(!parsed.matches(&json!({"type": "page", "event": "X"})));
    assert!(parsed.warnings().iter().any(|w| w.contains("function call")));
}

#[test]
fn empty_parentheses_never_match_when_reached() {
    let parsed = trigger(r#"type = "track" or ()"#);
    assert!(parsed.matches(&json!({"type": "track"})));
    assert!(!parsed.matches(&json!({"type": "page"})));
    assert!(!matches(r#"() or type = "track""#, &json!({"type": "track"})));
}

#[test]
fn non_object_events() {
    let parsed = trigger(r#"type != "track""#);
    assert!(!parsed.matches(&Value::Null));
    assert!(parsed.matches(&json!("a string")));
    assert!(parsed.matches(&json!([1, 2])));
    assert!(!trigger("properties.\\. = 1").matches(&track(json!({}))));
}

// ---------------------------------------------------------------- presets

#[test]
fn presets() {
    let track_calls = trigger(r#"type = "track" and event != "Order Completed""#);
    let order_completed = trigger(r#"type = "track" and event = "Order Completed""#);
    let order = json!({"type": "track", "event": "Order Completed"});
    let other = json!({"type": "track", "event": "Viewed"});
    assert!(!track_calls.matches(&order));
    assert!(track_calls.matches(&other));
    assert!(order_completed.matches(&order));
    assert!(!order_completed.matches(&other));
    for kind in ["page", "screen", "identify", "group"] {
        let parsed = trigger(&format!(r#"type = "{kind}""#));
        assert!(parsed.matches(&json!({ "type": kind })));
        assert!(!parsed.matches(&other));
        assert!(parsed.warnings().is_empty());
    }
}

// ---------------------------------------------------------------- errors

#[test]
fn parse_errors_carry_message_and_position() {
    let cases: &[(&str, &str, usize)] = &[
        ("type", "Value token is missing", 4),
        ("properties.x", "Value token is missing", 12),
        ("contains", "contains() is missing a 1st argument", 8),
        ("contains(event", "contains() is missing a 2nd argument", 14),
        ("match(event", "match() is missing a 2nd argument", 11),
        (r#"(type = "track""#, "missing closing parenthesis", 0),
        (r#"((type = "track"))"#, "nested parentheses are not supported", 1),
        (
            r#"(a = 1 or (type = "track") or b)"#,
            "nested parentheses are not supported",
            10,
        ),
        (r#"type = "track"#, "unterminated string", 7),
        (r#""a"b"#, "unterminated string", 2),
        ("type = *", "invalid character '*'", 7),
        ("\r", "invalid character '\\r'", 0),
        ("type = \"é\" and event = *", "invalid character '*'", 23),
        ("event = 😀", "invalid character '😀'", 8),
        (
            r#"properties.x!="y""#,
            "`!=` must be followed by a space, ',', ']', ')' or the end",
            12,
        ),
        (r#"! contains(event, "x")"#, "expected '=' after '!', got ' '", 0),
        ("1.2.3", "multiple decimal points in one number", 3),
        ("properties.x = 1.", "unexpected terminator after decimal point", 16),
        ("type\\", "expected a character after the escape character '\\'", 4),
    ];
    for (source, message, position) in cases {
        let error = error(source);
        assert_eq!(
            (error.message.as_str(), error.position),
            (*message, *position),
            "{source:?}"
        );
    }
}

#[test]
fn identifier_termination_error() {
    let error = error(r#"properties.products[0].sku = "x""#);
    assert!(error.message.starts_with("expected a space"), "{error}");
    assert!(error.message.ends_with("got '['"), "{error}");
    assert_eq!(error.position, 19);
}

#[test]
fn triggers_without_conditions_are_errors() {
    for source in [
        "",
        "   ",
        "foo",
        "TYPE = \"track\"",
        "receivedAt != null",
        "a and b or c",
        "()",
        "not",
        "and",
    ] {
        let error = error(source);
        assert!(error.message.contains("no condition"), "{source:?}: {error}");
        assert_eq!(error.position, 0);
    }
}

#[test]
fn length_limits() {
    assert_eq!(error(&"x".repeat(100_001)).message, "identifier is too long");
    assert_eq!(
        error(&format!("\"{}\"", "x".repeat(100_000))).message,
        "string is too long"
    );
    assert_eq!(error(&"1".repeat(100_001)).message, "number is too long");
    assert!(Trigger::parse(&format!("event = \"{}\"", "x".repeat(99_999))).is_ok());
}

#[test]
fn error_display() {
    let error = error("type");
    assert_eq!(error.to_string(), "Value token is missing (at position 4)");
}

// ---------------------------------------------------------------- API

#[test]
fn source_and_traits() {
    fn assert_traits<T: std::fmt::Debug + Clone + Send + Sync>() {}
    assert_traits::<Trigger>();
    assert_traits::<FqlError>();
    let source = r#"type = "track""#;
    let parsed = trigger(source);
    assert_eq!(parsed.source(), source);
    assert_eq!(parsed.clone().source(), source);
    assert!(parsed.warnings().is_empty());
}

// ---------------------------------------------------------------- fixtures

/// Cases run through the reference implementation (`@segment/destination-subscriptions`
/// 3.37.0): each trigger either fails to parse or matches the events of
/// `reference_events.json` as its `matches` string says (`1` = match).
#[test]
fn reference_cases() {
    let events: Vec<Value> = serde_json::from_str(include_str!("testdata/reference_events.json")).unwrap();
    let mut failures = Vec::new();
    let mut count = 0;
    for line in include_str!("testdata/reference_cases.jsonl").lines() {
        let case: Value = serde_json::from_str(line).unwrap();
        let source = case["fql"].as_str().unwrap();
        count += 1;
        let got = match Trigger::parse(source) {
            Err(_) => None,
            Ok(parsed) => Some(
                events
                    .iter()
                    .map(|e| if parsed.matches(e) { '1' } else { '.' })
                    .collect::<String>(),
            ),
        };
        let want = case["matches"].as_str().map(str::to_string);
        if got != want {
            failures.push(format!("{source:?}: want {want:?}, got {got:?}"));
        }
    }
    assert!(count > 500);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The public conformance cases, reduced to their triggers and events.
#[test]
fn conformance_public_cases() {
    let mut failures = Vec::new();
    for line in include_str!("testdata/conformance_public.jsonl").lines() {
        let case: Value = serde_json::from_str(line).unwrap();
        let events = case["events"].as_array().unwrap();
        let mut matched = Vec::new();
        let mut errors = Vec::new();
        for subscription in case["subscriptions"].as_array().unwrap() {
            let name = subscription["name"].as_str().unwrap();
            match Trigger::parse(subscription["subscribe"].as_str().unwrap()) {
                Err(_) => errors.push(json!(name)),
                Ok(parsed) => {
                    if events.iter().any(|e| parsed.matches(e)) {
                        matched.push(json!(name));
                    }
                }
            }
        }
        if Value::from(matched.clone()) != case["matched"] || Value::from(errors.clone()) != case["subscription_errors"]
        {
            failures.push(format!(
                "{}: matched {matched:?} errors {errors:?}, want {} / {}",
                case["id"], case["matched"], case["subscription_errors"]
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// ---------------------------------------------------------------- properties (proptest)

const FQL_TOKENS: &[&str] = &[
    "type",
    "event",
    "name",
    "userId",
    "properties.x",
    "properties.a.b",
    "traits.email",
    "context.page.url",
    "properties",
    "foo",
    "not",
    "constructor",
    "contains",
    "match",
    "=",
    "!=",
    "==",
    "<",
    "<=",
    ">",
    ">=",
    "!",
    "(",
    ")",
    ",",
    ".",
    "[",
    "]",
    "and",
    "or",
    "null",
    "true",
    "false",
    "\"track\"",
    "'A'",
    "\"\"",
    "\"*\"",
    "\"ab*\"",
    "\"*ed\"",
    "\"😀\"",
    "123",
    "-1.5",
    "-",
    "1.",
    "\\",
    "\\.",
    "\"",
    "'",
    "é",
    "😀",
    "\r",
    "\t",
    "\n",
    "an",
    "nul",
    "o",
];

fn fqlish() -> impl Strategy<Value = String> {
    (
        prop::collection::vec(prop::sample::select(FQL_TOKENS), 0..14),
        prop::bool::ANY,
    )
        .prop_map(|(tokens, spaced)| tokens.join(if spaced { " " } else { "" }))
}

fn json_value() -> impl Strategy<Value = Value> {
    let key = prop::sample::select(vec![
        "type",
        "event",
        "name",
        "userId",
        "properties",
        "traits",
        "context",
        "x",
        "a",
        "b",
        "email",
        "page",
        "url",
        "0",
        "length",
        "constructor",
    ]);
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,6}".prop_map(Value::String),
        prop::sample::select(vec!["track", "A", "", "abc", "😀x", "10"]).prop_map(|s| Value::String(s.to_string())),
    ];
    leaf.prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((key.clone(), inner), 0..6)
                .prop_map(|entries| { Value::Object(entries.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),) }),
        ]
    })
}

proptest! {
    #[test]
    fn parse_never_panics_on_any_string(source in any::<String>()) {
        let _ = Trigger::parse(&source);
    }

    #[test]
    fn parse_never_panics_on_fqlish_strings(source in fqlish()) {
        if let Err(error) = Trigger::parse(&source) {
            prop_assert!(error.position <= source.chars().count());
        }
    }

    #[test]
    fn matches_never_panics(source in fqlish(), event in json_value()) {
        if let Ok(parsed) = Trigger::parse(&source) {
            let first = parsed.matches(&event);
            prop_assert_eq!(first, parsed.matches(&event));
        }
    }

    #[test]
    fn matches_never_panics_on_valid_triggers(
        field in prop::sample::select(vec![
            "type", "event", "name", "userId", "properties.x", "properties.x.0", "properties.x.length",
            "traits.a.b", "context.page.url", "properties.constructor", "properties.0",
        ]),
        op in prop::sample::select(vec!["=", "!=", "<", "<=", ">", ">="]),
        value in prop::sample::select(vec!["\"track\"", "'A'", "10", "-1.5", "true", "false", "null", "\"\""]),
        event in json_value(),
    ) {
        let parsed = trigger(&format!("{field} {op} {value}"));
        let _ = parsed.matches(&event);
        let wrapped = json!({"type": "track", "properties": event.clone(), "traits": event.clone(), "context": event});
        let _ = parsed.matches(&wrapped);
    }
}

#[test]
fn warnings_stay_bounded_on_long_inputs() {
    let words: Vec<String> = (0..20_000).map(|i| format!("w{i}")).collect();
    let source = format!("{} type = \"track\" {}", words.join(" "), "= ".repeat(20_000));
    let started = std::time::Instant::now();
    let parsed = trigger(&source);
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    assert!(parsed.matches(&json!({"type": "track"})));
    let warnings = parsed.warnings();
    assert!(warnings.len() <= 16);
    assert!(warnings.iter().all(|w| w.len() < 500), "{warnings:?}");
}
