//! The bounds of Liquid rendering: every path by which output grows fails
//! with an error naming the limit before it allocates past it, at the exact
//! limit, quickly.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::bounded::MAX_VALUE_BYTES;
use super::evaluate;
use crate::mapping::kit::value::Data;

fn render(template: &str, data: &Value) -> Result<String, String> {
    evaluate(&json!(template), Data::Json(data))
}

/// Renders `template` and expects a limit error mentioning `what`; a bomb
/// must fail fast, not after building gigabytes.
fn refused(template: &str, data: &Value, what: &str) -> String {
    let started = Instant::now();
    let message = match render(template, data) {
        Ok(out) => panic!("rendered {} bytes instead of failing: {template}", out.len()),
        Err(e) => e,
    };
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        message.contains(what) && message.contains(&format!("over the limit of {MAX_VALUE_BYTES} bytes per value")),
        "{message}"
    );
    assert!(message.starts_with("liquid: "), "{message}");
    message
}

fn repeat(part: &str, n: usize) -> String {
    part.repeat(n)
}

#[test]
fn doubling_with_append_or_prepend_is_refused() {
    let t = format!(
        "{{% assign a = \"xx\" %}}{}{{{{ a }}}}",
        repeat("{%assign a=a|append:a%}", 40)
    );
    assert!(t.len() <= 1000, "{}", t.len());
    assert!(t.len() <= 1000, "{}", t.len());
    let message = refused(&t, &json!({}), "the result of filter \"append\" would be");
    // 2 bytes doubled 16 times is 131,072: the first step past the limit.
    assert!(message.contains("would be 131072 bytes"), "{message}");
    let t = format!("{{% assign a = \"xx\" %}}{}", repeat("{%assign a=a|prepend:a%}", 40));
    refused(&t, &json!({}), "filter \"prepend\"");
}

#[test]
fn multiplying_with_replace_is_refused() {
    let t = format!(
        "{{% assign a = \"xxxxxxxxxx\" %}}{}{{{{ a }}}}",
        repeat("{% assign a = a | replace: \"x\", \"xxxxxxxxxx\" %}", 10)
    );
    refused(&t, &json!({}), "filter \"replace\"");
    // An empty search matches at every character boundary: n + (n + 1) * r.
    let t = format!(
        "{{% assign a = \"0123456789\" %}}{}",
        repeat("{% assign a = a | replace: \"\", a %}", 10)
    );
    refused(&t, &json!({}), "filter \"replace\"");
    let t = format!(
        "{{% assign a = \"xx\" %}}{}",
        repeat("{%assign a=a|replace_first:\"x\",a%}", 25)
    );
    refused(&t, &json!({}), "filter \"replace_first\"");
}

#[test]
fn capture_and_output_are_refused_past_the_limit() {
    let t = format!(
        "{{% assign a = \"xxxxxxxxxx\" %}}{}{{{{ a }}}}",
        repeat("{% capture a %}{{ a }}{{ a }}{{ a }}{{ a }}{% endcapture %}", 15)
    );
    refused(&t, &json!({}), "capture \"a\" would be");
    // Nested captures: the inner one's limit is reported.
    let t = format!(
        "{{% assign a = \"xxxxxxxxxx\" %}}{{% capture b %}}{}{{% endcapture %}}",
        repeat("{% capture a %}{{ a }}{{ a }}{{ a }}{{ a }}{% endcapture %}", 15)
    );
    refused(&t, &json!({}), "capture \"a\"");
    // Every value under the limit, the output over it.
    let big = "y".repeat(60_000);
    refused(
        "{{ s }}{{ s }}",
        &json!({"s": big}),
        "the rendered value would be 120000 bytes",
    );
}

#[test]
fn join_of_a_long_array_with_a_long_separator_is_refused() {
    let items: Vec<Value> = (0..2000).map(|i| json!(i)).collect();
    let data = json!({"l": items, "sep": "-".repeat(100)});
    refused("{{ l | join: sep }}", &data, "filter \"join\"");
    // Within the limit it renders as before.
    assert_eq!(
        render("{{ l | join: \", \" }}", &json!({"l": [1, "a", 2.5]})),
        Ok("1, a, 2.5".into())
    );
}

#[test]
fn case_changes_that_grow_text_are_counted_exactly() {
    // "ŉ" (2 bytes) upper-cases to "ʼN" (3 bytes).
    let fits = "ŉ".repeat(MAX_VALUE_BYTES / 3);
    let out = render("{{ s | upcase }}", &json!({ "s": fits })).unwrap();
    assert_eq!(out.len(), MAX_VALUE_BYTES / 3 * 3);
    let over = "ŉ".repeat(MAX_VALUE_BYTES / 3 + 1);
    refused(
        "{{ s | upcase }}",
        &json!({ "s": over }),
        "filter \"upcase\" would be 100002 bytes",
    );
    // "İ" (2 bytes) lower-cases to "i̇" (3 bytes).
    let over = "İ".repeat(MAX_VALUE_BYTES / 3 + 1);
    refused("{{ s | downcase }}", &json!({ "s": over }), "filter \"downcase\"");
}

#[test]
fn the_limit_is_exact() {
    let half = "z".repeat(MAX_VALUE_BYTES / 2);
    let data = json!({ "h": half, "one": "z" });
    let out = render("{{ h | append: h }}", &data).unwrap();
    assert_eq!(out.len(), MAX_VALUE_BYTES);
    refused("{{ h | append: h | append: one }}", &data, "would be 100001 bytes");
    refused(
        "{{ h | append: h }}{{ one }}",
        &data,
        "the rendered value would be 100001 bytes",
    );
    // replace with an empty search: n + (n + 1) * r bytes.
    let n = 9_999;
    let data = json!({ "s": "a".repeat(n), "r": "bcdefghij" });
    let out = render("{{ s | replace: \"\", r }}", &data).unwrap();
    assert_eq!(out.len(), n + (n + 1) * 9);
    assert_eq!(out.len(), MAX_VALUE_BYTES - 1);
    let data = json!({ "s": "a".repeat(n + 1), "r": "bcdefghij" });
    refused("{{ s | replace: \"\", r }}", &data, "would be 100009 bytes");
}

#[test]
fn filters_that_do_not_grow_are_unchanged() {
    let data = json!({"s": "  Hello World  ", "l": ["a", "b"]});
    assert_eq!(
        render(
            "[{{ s | strip }}|{{ s | lstrip }}|{{ s | rstrip }}|{{ s | remove: \"l\" }}|{{ s | remove_first: \"l\" }}|{{ l | first }}{{ l | last }}|{{ x | default: \"d\" }}]",
            &data
        ),
        Ok("[Hello World|Hello World  |  Hello World|  Heo Word  |  Helo World  |ab|d]".into())
    );
    assert_eq!(
        render(
            "{% capture c %}<{{ s | strip | downcase }}>{% endcapture %}{{ c }}{{ c }}",
            &data
        ),
        Ok("<hello world><hello world>".into())
    );
}

#[test]
fn the_parser_knows_only_the_supported_subset() {
    // Even without the scan before parsing, nothing else can run.
    let parser = super::parser().unwrap();
    for outside in [
        "{% assign a = a | concat: a %}",
        "{{ a | split: \",\" }}",
        "{{ a | times: 2 }}",
        "{% for x in a %}{{ x }}{% endfor %}",
        "{% cycle \"a\", \"b\" %}",
        "{% include \"x\" %}",
        "{% tablerow x in a %}{% endtablerow %}",
    ] {
        assert!(parser.parse(outside).is_err(), "{outside}");
    }
    for inside in [
        "{% assign a = b | append: c | prepend: d | replace: e, f | replace_first: g, h %}",
        "{% capture c %}{% if a %}{% elsif b %}{% else %}{% endif %}{% unless a %}{% endunless %}{% endcapture %}",
        "{% raw %}{{ x }}{% endraw %}{% comment %}x{% endcomment %}",
        "{{ a | upcase | downcase | strip | lstrip | rstrip | remove: b | remove_first: b | default: c }}",
        "{{ l | first }}{{ l | last }}{{ l | join: \",\" }}",
    ] {
        assert!(parser.parse(inside).is_ok(), "{inside}");
    }
}

/// Shapes that reached assertions inside the crate's parser (found by
/// fuzzing): each is an invalid template, from rendering and from `check`.
#[test]
fn templates_that_crashed_the_parser_are_invalid() {
    for (template, says) in [
        ("{% comment %}{% raw %}", "{% comment %} is not closed"),
        ("{% raw %}{{ x }}", "{% raw %} is not closed"),
        ("{{'日本'}}{%else'}}", "tag \"{%\" is not closed"),
        ("{{ a ", "output \"{{\" is not closed"),
        ("é{{ 'x' }}{% if '}}", "tag \"{%\" is not closed"),
    ] {
        let rendered = render(template, &json!({"a": 1})).unwrap_err();
        assert!(
            rendered.starts_with("liquid: ") && rendered.contains(says),
            "{template}: {rendered}"
        );
        let checked = super::check(template).unwrap_err();
        assert_eq!(checked, rendered, "{template}");
    }
}
