use proptest::prelude::*;
use serde_json::{json, Value};

use super::{get_path, resolve, resolve_value, validate};

fn run(mapping: Value, data: Value) -> Value {
    resolve(&mapping, &data).unwrap()
}

/// Resolves `{"f": value}` and returns the field (`None` when it was dropped).
fn field(value: Value, data: Value) -> Option<Value> {
    let out = run(json!({ "f": value }), data);
    out.get("f").cloned()
}

fn error(mapping: Value, data: Value) -> String {
    resolve(&mapping, &data).unwrap_err().message
}

fn invalid(mapping: Value) -> String {
    validate(&mapping).unwrap_err().message
}

fn event() -> Value {
    json!({
        "type": "track",
        "event": "Product Viewed",
        "userId": "u1",
        "anonymousId": "a1",
        "context": {"app": {"name": "Shop"}, "page": {"path": "/x", "search": ""}},
        "properties": {
            "plan": "basic", "flag": false, "zero": 0, "empty": "", "nothing": null,
            "user.email": "dot@example.com", "key with space": "sp",
            "tags": ["a", "b"], "count": 1, "price": 5.5,
            "products": [{"sku": "s1", "price": 1}, {"sku": "s2"}],
            "nested": {"a": {"b": 2}, "n": null}
        }
    })
}

// ---------------------------------------------------------------- plain values

#[test]
fn literals_pass_through_and_undefined_is_removed() {
    assert_eq!(run(json!({}), json!({"cool": false})), json!({}));
    assert_eq!(
        run(json!({"cool": true, "n": null, "s": ""}), json!({})),
        json!({"cool": true, "n": null, "s": ""})
    );
    assert_eq!(
        run(json!({"x": {"y": {"@path": "$.missing"}, "z": 1}, "foo": 1}), json!({})),
        json!({"x": {"z": 1}, "foo": 1})
    );
    assert_eq!(
        run(json!({"x": {"y": {"z": {"@path": "$.nope"}}}}), json!({})),
        json!({"x": {"y": {}}})
    );
    assert_eq!(
        run(
            json!({"list": [{"@path": "$.missing"}, 1, {"@path": "$.a"}]}),
            json!({"a": "A"})
        ),
        json!({"list": [null, 1, "A"]})
    );
}

#[test]
fn resolve_value_reports_undefined() {
    assert_eq!(resolve_value(&json!({"@path": "$.nope"}), &event()).unwrap(), None);
    assert_eq!(
        resolve_value(&json!({"@path": "$.userId"}), &event()).unwrap(),
        Some(json!("u1"))
    );
    assert_eq!(resolve_value(&json!("raw"), &event()).unwrap(), Some(json!("raw")));
}

#[test]
fn data_must_be_an_object() {
    assert_eq!(error(json!({"a": 1}), json!([])), "data must be an object, got array");
}

// ---------------------------------------------------------------------- @path

#[test]
fn path_lookups() {
    let e = event();
    assert_eq!(
        field(json!({"@path": "$.context.app.name"}), e.clone()),
        Some(json!("Shop"))
    );
    assert_eq!(
        field(json!({"@path": "context.app.name"}), e.clone()),
        Some(json!("Shop"))
    );
    // The dot splits even inside brackets.
    assert_eq!(field(json!({"@path": "$.properties['user.email']"}), e.clone()), None);
    assert_eq!(
        field(json!({"@path": "$.properties['plan']"}), e.clone()),
        Some(json!("basic"))
    );
    assert_eq!(
        field(json!({"@path": "$.properties[\"key with space\"]"}), e.clone()),
        Some(json!("sp"))
    );
    assert_eq!(
        field(json!({"@path": "$.properties.key with space"}), e.clone()),
        Some(json!("sp"))
    );
    assert_eq!(
        field(json!({"@path": "$.properties.products[1].sku"}), e.clone()),
        Some(json!("s2"))
    );
    assert_eq!(
        field(json!({"@path": "$.properties.products.0.sku"}), e.clone()),
        Some(json!("s1"))
    );
    assert_eq!(
        field(json!({"@path": "$.properties.tags.length"}), e.clone()),
        Some(json!(2))
    );
    assert_eq!(
        field(json!({"@path": "$.properties.plan.length"}), e.clone()),
        Some(json!(5))
    );
    assert_eq!(
        field(json!({"@path": "$.properties.plan.0"}), e.clone()),
        Some(json!("b"))
    );
    assert_eq!(
        field(json!({"@path": "$.properties.nothing"}), e.clone()),
        Some(json!(null))
    );
    assert_eq!(field(json!({"@path": "$.properties.missing"}), e.clone()), None);
    assert_eq!(field(json!({"@path": "$.properties.plan.x.y"}), e.clone()), None);
    // `["a.b"]` still splits on the dot.
    assert_eq!(field(json!({"@path": "$.properties[\"user.email\"]"}), e.clone()), None);
    // JavaScript `prev && prev[key]`: falsy values end the walk.
    assert_eq!(
        field(json!({"@path": "$.properties.zero.x"}), e.clone()),
        Some(json!(0))
    );
    assert_eq!(
        field(json!({"@path": "$.properties.empty.x"}), e.clone()),
        Some(json!(""))
    );
    assert_eq!(
        field(json!({"@path": "$.properties.nothing.x"}), e.clone()),
        Some(json!(null))
    );
    assert_eq!(
        field(json!({"@path": "$.properties.flag.x"}), e.clone()),
        Some(json!(false))
    );
    // Nested directive giving the path.
    assert_eq!(
        run(
            json!({"@path": {"@path": "$.foo"}}),
            json!({"foo": "bar", "bar": "baz"})
        ),
        json!("baz")
    );
    // Prototype members are not own properties.
    assert_eq!(field(json!({"@path": "$.properties.constructor"}), e), None);
}

#[test]
fn path_root() {
    let data = json!({"foo": "bar"});
    assert_eq!(run(json!({"@path": ""}), data.clone()), data);
    assert_eq!(run(json!({"@path": "$."}), data.clone()), data);
    assert_eq!(field(json!({"@path": "$.."}), data.clone()), Some(data));
}

#[test]
fn path_errors() {
    assert_eq!(
        error(json!({"neat": {"@path": {"@path": "$.obj"}}}), json!({"obj": {}})),
        "/neat @path: expected string, got object"
    );
    assert_eq!(
        error(json!({"neat": {"@path": {"@path": "$.nope"}}}), json!({})),
        "/neat @path: expected string, got undefined"
    );
    assert!(invalid(json!({"neat": {"@path": {}}}))
        .contains("should be a string or a mapping directive but it is an object"));
}

#[test]
fn get_path_public() {
    let e = event();
    assert_eq!(get_path(&e, "$.context.app.name"), Some(&json!("Shop")));
    assert_eq!(get_path(&e, "properties['k k']"), None);
    assert_eq!(get_path(&e, "properties['key with space']"), Some(&json!("sp")));
    assert_eq!(get_path(&e, "$."), Some(&e));
    assert_eq!(get_path(&e, "$.nope.deeper"), None);
    assert_eq!(get_path(&e, "$.properties.tags.length"), None);
}

// ------------------------------------------------------------------ @template

#[test]
fn template_rendering() {
    let e = event();
    let t = |s: &str| field(json!({"@template": s}), e.clone()).unwrap();
    assert_eq!(t("{{event}} ({{properties.plan}})"), json!("Product Viewed (basic)"));
    assert_eq!(t("{{ properties.plan }}|{{{ properties.plan }}}"), json!("basic|basic"));
    assert_eq!(
        t("{{properties.tags}}|{{missing.path}}|{{properties.nothing}}"),
        json!("a,b||")
    );
    assert_eq!(t("{{properties.nested}}"), json!("[object Object]"));
    assert_eq!(
        t("{{properties.price}}/{{properties.count}}/{{properties.flag}}"),
        json!("5.5/1/false")
    );
    assert_eq!(t("{{properties.products}}"), json!("[object Object],[object Object]"));
    assert_eq!(t("{{$.event}}"), json!(""));
    assert_eq!(t("{{}} {{ }} {x}"), json!("{{}} [object Object] {x}"));
    assert_eq!(t("no placeholders"), json!("no placeholders"));
    // `{{{` + `{event` + `}}}`: the key `{event` is missing, one `}` is left.
    assert_eq!(t("{{{{event}}}}"), json!("}"));
    assert_eq!(
        field(json!({"@template": "<b>{{a}}</b>"}), json!({"a": "<i>&</i>"})),
        Some(json!("<b><i>&</i></b>"))
    );
    assert_eq!(
        field(json!({"@template": "{{a}}"}), json!({"a": [1, null, [2, 3], {"k": 1}]})),
        Some(json!("1,,2,3,[object Object]"))
    );
    assert_eq!(
        field(json!({"@template": "{{n}}"}), json!({"n": 1e21})),
        Some(json!("1e+21"))
    );
    // Text inserted by `{{{ }}}` is scanned by the `{{ }}` pass.
    assert_eq!(
        field(json!({"@template": "{{{a}}}"}), json!({"a": "{{b}}", "b": "B"})),
        Some(json!("B"))
    );
    assert!(invalid(json!({"@template": false}))
        .contains("/@template should be a string or a mapping directive but it is a boolean."));
}

#[test]
fn template_long_brace_runs_are_linear() {
    let text = "{".repeat(200_000);
    let out = field(json!({"@template": text.clone()}), json!({})).unwrap();
    assert_eq!(out, json!(text));
}

// ------------------------------------------------------------------------ @if

#[test]
fn if_exists_and_blank() {
    let payload = json!({"a": 1, "b": true, "c": false, "d": null, "e": "", "z": 0});
    let cond = |kind: &str, path: &str| {
        field(
            json!({"@if": {kind: {"@path": path}, "then": 1, "else": 2}}),
            payload.clone(),
        )
        .unwrap()
    };
    assert_eq!(cond("exists", "$.a"), json!(1));
    assert_eq!(cond("exists", "$.d"), json!(2));
    assert_eq!(cond("exists", "$.x"), json!(2));
    assert_eq!(cond("exists", "$.e"), json!(1));
    assert_eq!(cond("exists", "$.c"), json!(1));
    assert_eq!(cond("blank", "$.a"), json!(1));
    assert_eq!(cond("blank", "$.d"), json!(2));
    assert_eq!(cond("blank", "$.x"), json!(2));
    assert_eq!(cond("blank", "$.e"), json!(2));
    assert_eq!(cond("blank", "$.z"), json!(1));
    assert_eq!(cond("blank", "$.c"), json!(1));
}

#[test]
fn if_branches() {
    let data = json!({"a": "cool"});
    assert_eq!(
        field(json!({"@if": {"exists": {"@path": "$.a"}, "else": 2}}), data.clone()),
        None
    );
    assert_eq!(
        field(json!({"@if": {"exists": {"@path": "$.x"}, "then": 1}}), data.clone()),
        None
    );
    for falsy in [json!(""), json!(0), json!(false), json!(null)] {
        assert_eq!(
            field(
                json!({"@if": {"exists": {"@path": "$.x"}, "then": 1, "else": falsy}}),
                data.clone()
            ),
            None
        );
    }
    assert_eq!(
        field(
            json!({"@if": {"exists": {"@path": "$.x"}, "else": {"@path": "$.a"}}}),
            data.clone()
        ),
        Some(json!("cool"))
    );
    // A literal condition: only undefined/null are "not existing".
    assert_eq!(
        field(json!({"@if": {"exists": true, "then": "y"}}), data.clone()),
        Some(json!("y"))
    );
    // `then: null` is defined and is used.
    assert_eq!(
        field(json!({"@if": {"exists": 1, "then": null}}), data.clone()),
        Some(json!(null))
    );
    assert_eq!(
        error(json!({"f": {"@if": {"exists": false, "then": 1}}}), data.clone()),
        "/f @if requires an \"exists\" key or a \"blank\" key"
    );
    assert_eq!(
        invalid(json!({"f": {"@if": {"then": 1}}})),
        "/f/@if should have field \"exists\" or \"blank\" but it doesn't."
    );
    assert_eq!(
        invalid(json!({"@if": {"exists": true, "then": {"@oops": {}}}})),
        "/@if/then has an invalid directive: @oops."
    );
}

// ---------------------------------------------------------------------- @case

#[test]
fn case_directive() {
    let p = json!({"a": 1, "b": "MAKE ME LOWER", "c": "make me upper", "d": null, "e": "", "f": false,
                   "h": {"k": ["hi", true, null]}, "s": "straße ΣΑΣ"});
    let case = |op: &str, path: &str| field(json!({"@case": {"operator": op, "value": {"@path": path}}}), p.clone());
    assert_eq!(case("lower", "$.b"), Some(json!("make me lower")));
    assert_eq!(case("upper", "$.c"), Some(json!("MAKE ME UPPER")));
    assert_eq!(case("lower", "$.e"), Some(json!("")));
    assert_eq!(case("upper", "$.s"), Some(json!("STRASSE ΣΑΣ")));
    assert_eq!(case("lower", "$.s"), Some(json!("straße σας")));
    assert_eq!(case("lower", "$.a"), Some(json!(1)));
    assert_eq!(case("lower", "$.d"), Some(json!(null)));
    assert_eq!(case("lower", "$.f"), Some(json!(false)));
    assert_eq!(case("lower", "$.h"), Some(json!({"k": ["hi", true, null]})));
    assert_eq!(case("lower", "$.missing"), None);
    assert_eq!(
        field(json!({"@case": {"operator": "lower", "value": ""}}), p.clone()),
        None
    );
    assert_eq!(
        field(
            json!({"@case": {"operator": "lower", "value": {"@literal": "ABC"}}}),
            p.clone()
        ),
        Some(json!("abc"))
    );
    assert_eq!(
        error(
            json!({"f": {"@case": {"wrongKey": "lower", "value": {"@path": "$.b"}}}}),
            p.clone()
        ),
        "/f @case requires a \"operator\" key"
    );
    assert_eq!(
        error(
            json!({"f": {"@case": {"operator": "snake", "value": {"@path": "$.b"}}}}),
            p.clone()
        ),
        "/f operator key should have a value of \"lower\" or \"upper\""
    );
    // A bad operator only matters for strings.
    assert_eq!(
        field(
            json!({"@case": {"operator": "snake", "value": {"@path": "$.a"}}}),
            p.clone()
        ),
        Some(json!(1))
    );
    assert_eq!(
        invalid(json!({"@case": "not an object"})),
        "/@case should be an object but it is a string."
    );
    assert_eq!(
        invalid(json!({"f": {"@case": {"operator": "lower", "value": 3}}})),
        "/f/@case/value should be a string or a mapping directive but it is a number."
    );
}

// ------------------------------------------------------------------- @replace

fn replace(opts: Value, a: Value) -> Option<Value> {
    let mut opts = opts;
    opts["value"] = json!({"@path": "$.a"});
    field(json!({ "@replace": opts }), json!({ "a": a }))
}

#[test]
fn replace_directive() {
    assert_eq!(
        replace(json!({"pattern": "_", "replacement": "rrrrr"}), json!("")),
        Some(json!(""))
    );
    assert_eq!(
        replace(json!({"pattern": "_", "replacement": "rrrrr"}), json!(null)),
        Some(json!(""))
    );
    assert_eq!(replace(json!({"pattern": "_"}), Value::Null), Some(json!("")));
    assert_eq!(
        field(
            json!({"@replace": {"pattern": "_", "value": {"@path": "$.nope"}}}),
            json!({})
        ),
        Some(json!(""))
    );
    assert_eq!(replace(json!({"pattern": "_"}), json!({"o": 1})), Some(json!("")));
    assert_eq!(
        replace(
            json!({"pattern": "WW", "replacement": "oo", "ignorecase": false}),
            json!("cWWl-story-ww")
        ),
        Some(json!("cool-story-ww"))
    );
    assert_eq!(
        replace(
            json!({"pattern": "AaB", "replacement": "nice", "ignorecase": true}),
            json!("aab-----AaB---aab")
        ),
        Some(json!("nice-----nice---nice"))
    );
    assert_eq!(
        replace(json!({"pattern": "_", "replacement": ""}), json!("nomore_underscore")),
        Some(json!("nomoreunderscore"))
    );
    assert_eq!(
        replace(
            json!({"pattern": "+", "replacement": "_"}),
            json!("many+different+things")
        ),
        Some(json!("many_different_things"))
    );
    assert_eq!(
        replace(
            json!({"pattern": "+", "replacement": "_", "global": false}),
            json!("many+different+things")
        ),
        Some(json!("many_different+things"))
    );
    assert_eq!(
        replace(json!({"pattern": "many+"}), json!("many+different+things")),
        Some(json!("different+things"))
    );
    assert_eq!(
        replace(json!({"pattern": "true", "replacement": "granted"}), json!(true)),
        Some(json!("granted"))
    );
    assert_eq!(
        replace(json!({"pattern": "1", "replacement": "one"}), json!(1)),
        Some(json!("one"))
    );
    assert_eq!(
        replace(json!({"pattern": "5", "replacement": "x"}), json!(0.5)),
        Some(json!("0.x"))
    );
    assert_eq!(
        replace(
            json!({"pattern": "-", "replacement": " ", "pattern2": "great", "replacement2": "awesome"}),
            json!("something-great!")
        ),
        Some(json!("something awesome!"))
    );
    assert_eq!(
        replace(
            json!({"pattern": "true", "replacement": "granted", "pattern2": "false", "replacement2": "denied"}),
            json!(false)
        ),
        Some(json!("denied"))
    );
    assert_eq!(
        replace(json!({"pattern": "x", "pattern2": "b"}), json!("abc")),
        Some(json!("ac"))
    );
    assert_eq!(
        replace(json!({"pattern": ".", "replacement": "$&$&"}), json!("a.b")),
        Some(json!("a..b"))
    );
    assert_eq!(
        field(json!({"@replace": {"pattern": "a", "value": ""}}), json!({})),
        None
    );
    assert_eq!(
        field(json!({"@replace": {"pattern": "a", "value": "banana"}}), json!({})),
        Some(json!("bnn"))
    );
}

#[test]
fn replace_validation() {
    assert_eq!(
        invalid(json!({"@replace": {"pattern": "waaaaayyytoooooloooong", "value": {"@path": "$.a"}}})),
        "/@replace/pattern should be a string of length 10 or less."
    );
    assert_eq!(
        invalid(json!({"@replace": {"pattern": "bla"}})),
        "/@replace should have field \"value\" but it doesn't."
    );
    assert_eq!(
        invalid(json!({"@replace": {"value": {"@path": "$.a"}}})),
        "/@replace should have field \"pattern\" but it doesn't."
    );
    assert_eq!(
        invalid(json!({"@replace": {"pattern": "a", "global": "yes", "value": "x"}})),
        "/@replace/global should be a boolean but it is a string."
    );
    assert_eq!(
        invalid(json!({"@replace": {"pattern": "a", "ignorecase": 1, "value": "x"}})),
        "/@replace/ignorecase should be a boolean but it is a number."
    );
    assert_eq!(
        invalid(json!({"@replace": {"pattern": "", "value": "x"}})),
        "/@replace/pattern should be a string of length 1 or greater."
    );
    assert_eq!(
        invalid(json!({"@replace": {"pattern": "a", "replacement": "01234567890", "value": "x"}})),
        "/@replace/replacement should be a string of length 10 or less."
    );
    assert!(validate(&json!({"@replace": {"pattern": "0123456789", "value": "x"}})).is_ok());
    assert!(validate(&json!({"@replace": {"pattern": "éééééééééé", "value": "x"}})).is_ok());
}

// ----------------------------------------------------------------- @arrayPath

#[test]
fn array_path_directive() {
    let data = json!({"products": [{"productId": "123", "price": 0.5}, {"productId": "456", "price": 0.99}]});
    assert_eq!(
        field(json!({"@arrayPath": ["$.products"]}), data.clone()),
        Some(data["products"].clone())
    );
    let shape = json!({"product_id": {"@path": "$.productId"}, "monies": {"@path": "price"}});
    assert_eq!(
        field(json!({"@arrayPath": ["$.products", shape.clone()]}), data.clone()),
        Some(json!([{"product_id": "123", "monies": 0.5}, {"product_id": "456", "monies": 0.99}]))
    );
    let via_directive =
        json!({"@if": {"exists": {"@path": "$.products"}, "then": {"@path": "$.products"}, "else": []}});
    assert_eq!(
        field(json!({"@arrayPath": [via_directive, shape.clone()]}), data.clone()),
        Some(json!([{"product_id": "123", "monies": 0.5}, {"product_id": "456", "monies": 0.99}]))
    );
    assert_eq!(
        field(
            json!({"@arrayPath": ["$.products", shape.clone()]}),
            json!({"products": {"notAnArray": true}})
        ),
        Some(json!([{}]))
    );
    assert_eq!(
        field(
            json!({"@arrayPath": ["$.properties", shape.clone()]}),
            json!({"properties": {"productId": "1", "price": 2}})
        ),
        Some(json!([{"product_id": "1", "monies": 2}]))
    );
    assert_eq!(
        field(json!({"@arrayPath": ["$.missing", shape.clone()]}), data.clone()),
        None
    );
    assert_eq!(
        field(json!({"@arrayPath": ["$.s", shape.clone()]}), json!({"s": "text"})),
        Some(json!("text"))
    );
    assert_eq!(
        field(json!({"@arrayPath": ["$.products", {}]}), data.clone()),
        Some(data["products"].clone())
    );
    // Items that are not objects: paths against them follow `prev && prev[key]`.
    assert_eq!(
        field(
            json!({"@arrayPath": ["$.l", {"v": {"@path": "x"}, "all": {"@path": "$."}}]}),
            json!({"l": ["a", null, 0]})
        ),
        Some(json!([{"all": "a"}, {"v": null, "all": null}, {"v": 0, "all": 0}]))
    );
    // A directive shape: undefined items become null.
    assert_eq!(
        field(
            json!({"@arrayPath": ["$.products", {"@path": "$.productId"}]}),
            json!({"products": [{"productId": 1}, {}]})
        ),
        Some(json!([1, null]))
    );
    // A built root (from @literal) with undefined members.
    assert_eq!(
        field(
            json!({"@arrayPath": [{"@literal": [{"a": {"@path": "$.x"}}, {"a": {"@path": "$.nope"}}]}, {"b": {"@path": "a"}}]}),
            json!({"x": 5})
        ),
        Some(json!([{"b": 5}, {}]))
    );
    assert_eq!(
        invalid(json!({"@arrayPath": "nope"})),
        "/@arrayPath should be an array but it is a string."
    );
    assert_eq!(
        invalid(json!({"@arrayPath": []})),
        "/@arrayPath should be a string or a mapping directive but it is an undefined."
    );
}

// ---------------------------------------------------------- @literal, @json

#[test]
fn literal_directive() {
    assert_eq!(
        run(json!({"simple": {"@literal": false}}), json!({})),
        json!({"simple": false})
    );
    assert_eq!(
        run(
            json!({"nested": {"@literal": {"a": {"@path": "$.a"}, "b": {"@path": "$.b"}}}}),
            json!({"a": "v"})
        ),
        json!({"nested": {"a": "v"}})
    );
    assert_eq!(
        field(json!({"@literal": {"@path": "$.event"}}), event()),
        Some(json!("Product Viewed"))
    );
    assert_eq!(field(json!({"@literal": null}), json!({})), Some(json!(null)));
}

#[test]
fn json_directive() {
    let enc = |v: Value| {
        field(
            json!({"@json": {"mode": "encode", "value": {"@path": "$.foo"}}}),
            json!({ "foo": v }),
        )
    };
    let dec = |v: Value| {
        field(
            json!({"@json": {"mode": "decode", "value": {"@path": "$.foo"}}}),
            json!({ "foo": v }),
        )
    };
    assert_eq!(enc(json!("bar")), Some(json!("\"bar\"")));
    assert_eq!(enc(json!({"bar": "baz"})), Some(json!("{\"bar\":\"baz\"}")));
    assert_eq!(enc(json!(["bar", "baz"])), Some(json!("[\"bar\",\"baz\"]")));
    assert_eq!(enc(json!(null)), Some(json!("null")));
    assert_eq!(
        enc(json!({"b": 1.0, "2": [1e21, "é\n\u{1}"], "1": true})),
        Some(json!("{\"1\":true,\"2\":[1e+21,\"é\\n\\u0001\"],\"b\":1}"))
    );
    assert_eq!(
        field(
            json!({"@json": {"mode": "encode", "value": {"@path": "$.bad"}}}),
            json!({})
        ),
        None
    );
    assert_eq!(
        field(
            json!({"@json": {"mode": "encode", "value": {"@literal": {"a": {"@path": "$.x"}, "b": [{"@path": "$.x"}]}}}}),
            json!({})
        ),
        Some(json!("{\"b\":[null]}"))
    );
    assert_eq!(dec(json!("\"bar\"")), Some(json!("bar")));
    assert_eq!(dec(json!("{\"bar\":\"baz\"}")), Some(json!({"bar": "baz"})));
    assert_eq!(dec(json!("[\"bar\",\"baz\"]")), Some(json!(["bar", "baz"])));
    assert_eq!(dec(json!(" 1.0 ")), Some(json!(1)));
    assert_eq!(dec(json!("nope")), Some(json!("nope")));
    assert_eq!(dec(json!("")), Some(json!("")));
    assert_eq!(dec(json!(5)), Some(json!(5)));
    assert_eq!(dec(json!(null)), Some(json!(null)));
    assert_eq!(
        field(
            json!({"@json": {"mode": "decode", "value": {"@path": "$.nope"}}}),
            json!({})
        ),
        None
    );
    assert_eq!(
        field(json!({"@json": {"mode": "ENCODE", "value": "x"}}), json!({})),
        None
    );
    assert_eq!(
        invalid(json!({"neat": {"@json": {"mode": "oops", "value": {"@path": "$.foo"}}}})),
        "/neat/@json/mode should be one of encode, decode but it is \"oops\"."
    );
    assert_eq!(
        error(json!({"neat": {"@json": {"mode": "encode", "value": ""}}}), json!({})),
        "/neat @json requires a \"value\" key"
    );
}

// ------------------------------------------------------------------- @flatten

#[test]
fn flatten_directive() {
    let fl = |opts: Value, data: Value| field(json!({ "@flatten": opts }), data);
    assert_eq!(
        fl(
            json!({"value": {"@path": "$.foo"}, "separator": "."}),
            json!({"foo": {"bar": "baz", "aces": {"a": 1, "b": 2}}})
        ),
        Some(json!({"bar": "baz", "aces.a": 1, "aces.b": 2}))
    );
    assert_eq!(
        fl(
            json!({"value": {"@path": "$.foo"}, "separator": "."}),
            json!({"foo": [{"fazz": "bar", "fizz": "baz"}]})
        ),
        Some(json!({"0.fazz": "bar", "0.fizz": "baz"}))
    );
    assert_eq!(
        fl(
            json!({"value": {"@path": "$.foo"}, "separator": ".", "omitArrays": true}),
            json!({"foo": {"bar": "baz", "aces": [1, 2]}})
        ),
        Some(json!({"bar": "baz", "aces": [1, 2]}))
    );
    assert_eq!(
        fl(
            json!({"value": {"@path": "$.foo"}, "separator": "__"}),
            json!({"foo": {"a": {"b": {"c": null}}, "e": {}, "l": []}})
        ),
        Some(json!({"a__b__c": null}))
    );
    assert_eq!(
        fl(
            json!({"value": {"@path": "$.foo"}, "separator": "."}),
            json!({"foo": "x"})
        ),
        Some(json!({"": "x"}))
    );
    assert_eq!(
        fl(
            json!({"value": {"@path": "$.foo"}, "separator": ".", "omitArrays": true}),
            json!({"foo": [1]})
        ),
        Some(json!({"": [1]}))
    );
    assert_eq!(
        fl(json!({"value": {"@path": "$.nope"}, "separator": "."}), json!({})),
        Some(json!({}))
    );
    assert_eq!(fl(json!({"separator": "."}), json!({})), Some(json!({})));
    assert_eq!(
        error(json!({"f": {"@flatten": {"value": 1, "separator": ""}}}), json!({})),
        "/f @flatten requires a \"separator\" key"
    );
    assert_eq!(
        error(
            json!({"f": {"@flatten": {"value": 1, "separator": {"@path": "$.n"}}}}),
            json!({"n": 1})
        ),
        "/f @flatten requires a string separator"
    );
}

// --------------------------------------------------------------------- @merge

#[test]
fn merge_directive() {
    for direction in ["left", "right"] {
        assert_eq!(
            run(json!({"@merge": {"direction": direction, "objects": []}}), json!({})),
            json!({})
        );
        assert_eq!(
            run(
                json!({"@merge": {"direction": direction, "objects": [{"cool": true}]}}),
                json!({})
            ),
            json!({"cool": true})
        );
        assert!(validate(&json!({"@merge": {"direction": direction, "objects": {"oops": true}}})).is_err());
        assert!(validate(&json!({"@merge": {"direction": direction, "objects": [{}, 1]}})).is_err());
    }
    assert!(validate(&json!({"@merge": {"direction": "up", "objects": [{"oh": "yeah"}, {}]}})).is_err());
    let foo = json!({"foo": {"bar": "baz", "hey": "you"}});
    assert_eq!(
        run(
            json!({"@merge": {"direction": "right", "objects": [{"cool": true}, {"cool": "you bet"}]}}),
            json!({})
        ),
        json!({"cool": "you bet"})
    );
    assert_eq!(
        run(
            json!({"@merge": {"direction": "right", "objects": [{"cool": true, "hey": "there"}, {"@path": "foo"}]}}),
            foo.clone()
        ),
        json!({"cool": true, "hey": "you", "bar": "baz"})
    );
    assert_eq!(
        run(
            json!({"@merge": {"direction": "left", "objects": [{"cool": true, "hey": "there"}, {"@path": "foo"}]}}),
            foo.clone()
        ),
        json!({"cool": true, "bar": "baz", "hey": "there"})
    );
    // Key order follows the reversed list for `left`.
    let left = run(
        json!({"@merge": {"direction": "left", "objects": [{"a": 1}, {"b": 2}]}}),
        json!({}),
    );
    assert_eq!(left.as_object().unwrap().keys().collect::<Vec<_>>(), vec!["b", "a"]);
    // Object.assign copies undefined, which then removes the key.
    assert_eq!(
        run(
            json!({"@merge": {"direction": "right", "objects": [{"a": 1}, {"a": {"@path": "$.nope"}}]}}),
            json!({})
        ),
        json!({})
    );
    // Missing objects contribute nothing; strings spread into indexed characters.
    assert_eq!(
        run(
            json!({"@merge": {"direction": "right", "objects": [{"@path": "$.nope"}, {"@path": "$.s"}]}}),
            json!({"s": "ab"})
        ),
        json!({"0": "a", "1": "b"})
    );
}

// ----------------------------------------------------------------- @transform

#[test]
fn transform_directive() {
    assert_eq!(
        run(
            json!({"@transform": {"apply": {"foo": {"@path": "$.a"}}, "mapping": {"cool": {"@path": "$.foo"}}}}),
            json!({"a": 1, "b": 2})
        ),
        json!({"cool": 1})
    );
    let data = json!({"properties": {"test": "value", "nested": {"a": "special", "b": 2}}, "other": "x"});
    assert_eq!(
        run(
            json!({"@transform": {
                "apply": {"properties": {"@flatten": {"value": {"@path": "$.properties"}, "separator": "_"}}},
                "mapping": {"properties": {"@path": "$.properties"}, "topLevel": {"@path": "$.properties.nested_a"}}
            }}),
            data.clone()
        ),
        json!({"properties": {"test": "value", "nested_a": "special", "nested_b": 2}, "topLevel": "special"})
    );
    // The root directive form.
    assert_eq!(
        run(
            json!({
                "__segment_internal_directive": {"@transform": {"apply": {"properties": {"@flatten": {"value": {"@path": "$.properties"}, "separator": "_"}}}}},
                "properties": {"@path": "$.properties"},
                "topLevel": {"@path": "$.properties.nested_a"}
            }),
            data
        ),
        json!({"properties": {"test": "value", "nested_a": "special", "nested_b": 2}, "topLevel": "special"})
    );
    assert!(resolve(&json!({"@transform": {"@path": {}}}), &json!({"foo": "bar"})).is_err());
    assert_eq!(
        error(json!({"f": {"@transform": {"apply": 1, "mapping": {}}}}), json!({})),
        "/f/@transform/apply should be an object but it is a number."
    );
}

// ----------------------------------------------------------- @excludeWhenNull

#[test]
fn exclude_when_null_directive() {
    let data = json!({"foo": {"bar": null, "aces": {"a": 1, "b": null, "l": [null, {"x": null}]}}});
    assert_eq!(
        run(json!({"x": {"@excludeWhenNull": {"@path": "$.foo.bar"}}}), data.clone()),
        json!({})
    );
    assert_eq!(
        run(
            json!({"x": {"@excludeWhenNull": {"@path": "$.foo.bar"}}, "y": {"@path": "$.foo.aces.a"}}),
            data.clone()
        ),
        json!({"y": 1})
    );
    // Objects lose their null members, recursively through objects, not arrays.
    assert_eq!(
        run(json!({"neat": {"@excludeWhenNull": {"@path": "$.foo"}}}), data.clone()),
        json!({"neat": {"aces": {"a": 1, "l": [null, {"x": null}]}}})
    );
    assert_eq!(
        run(
            json!({"massive": {
                "pathNull": {"@excludeWhenNull": {"@path": "$.foo.bar"}},
                "templateEmpty": {"@excludeWhenNull": {"@template": "{{foo.bar}}"}},
                "literalNull": {"@excludeWhenNull": {"@literal": null}},
                "ifNull": {"@excludeWhenNull": {"@if": {"exists": {"@path": "$.foo.foobar"}, "then": 1, "else": null}}},
                "caseNull": {"@excludeWhenNull": {"@case": {"operator": "upper", "value": {"@path": "$.foo.bar"}}}},
                "replaceNull": {"@excludeWhenNull": {"@replace": {"pattern": "-", "replacement": "nice", "value": {"@path": "$.foo.bar"}}}},
                "jsonNull": {"@excludeWhenNull": {"@json": {"mode": "decode", "value": {"@path": "$.foo.bar"}}}},
                "jsonNullEncode": {"@excludeWhenNull": {"@json": {"mode": "encode", "value": {"@path": "$.foo.bar"}}}},
                "transformNull": {"@excludeWhenNull": {"@transform": {
                    "apply": {"properties": {"@path": "$.foo.bar"}},
                    "mapping": {"properties": {"@excludeWhenNull": {"@path": "$.properties"}}}}}},
                "transformValue": {"@excludeWhenNull": {"@transform": {
                    "apply": {"properties": {"@path": "$.foo.bar"}},
                    "mapping": {"properties": {"@path": "$.properties"}}}}}
            }}),
            data
        ),
        json!({"massive": {"templateEmpty": "", "replaceNull": "", "jsonNullEncode": "null", "transformNull": {}, "transformValue": {}}})
    );
}

// ---------------------------------------------------------------------- @liquid

#[test]
fn liquid_directive() {
    let liq = |t: &str, data: Value| field(json!({ "@liquid": t }), data);
    assert_eq!(liq("test", json!({})), Some(json!("test")));
    assert_eq!(liq("", json!({})), Some(json!("")));
    assert_eq!(
        liq(
            "Hello, {{ properties.world }} !",
            json!({"properties": {"world": "Earth"}})
        ),
        Some(json!("Hello, Earth !"))
    );
    assert_eq!(
        liq(
            "{% if properties.world == \"Earth\" %}Hello {{ properties.world }} {% else %} Hello World {% endif %}",
            json!({"properties": {"world": "Earth"}})
        ),
        Some(json!("Hello Earth "))
    );
    assert_eq!(
        liq(
            "HELLO {{ properties.world | upcase }}",
            json!({"properties": {"world": "earth"}})
        ),
        Some(json!("HELLO EARTH"))
    );
    assert_eq!(
        liq("[{{ missing }}|{{ a.missing.deeper }}]", json!({"a": {}})),
        Some(json!("[|]"))
    );
    assert_eq!(
        liq("{% if missing %}y{% else %}n{% endif %}", json!({})),
        Some(json!("n"))
    );
    assert_eq!(
        liq(
            "{% if a.b and c %}y{% else %}n{% endif %}",
            json!({"a": {"b": 0}, "c": ""})
        ),
        Some(json!("y"))
    );
    assert_eq!(
        liq("{{ n }} {{ f }} {{ l }}", json!({"n": 5.0, "f": 0.5, "l": [1, "a"]})),
        Some(json!("5 0.5 1a"))
    );
    assert_eq!(liq("{{ missing | default: \"d\" }}", json!({})), Some(json!("d")));
    assert_eq!(
        liq("{% assign x = a | append: \"!\" %}{{ x }}", json!({"a": "hi"})),
        Some(json!("hi!"))
    );
    assert_eq!(
        liq("{{ l[1] }}{{ l[5] }}{{ l.first }}", json!({"l": ["a", "b"]})),
        Some(json!("ba"))
    );
    assert_eq!(
        liq("{% raw %}{{ x | sort }}{% endraw %}", json!({})),
        Some(json!("{{ x | sort }}"))
    );

    for tag in ["case", "include", "layout", "render", "tablerow", "for"] {
        let message = error(
            json!({"f": {"@liquid": format!("{{% {tag} %}} , {{{{ properties.test }}}}")}}),
            json!({}),
        );
        assert_eq!(message, format!("/f tag \"{tag}\" is disabled"));
    }
    for filter in [
        "array_to_sentence_string",
        "concat",
        "map",
        "reverse",
        "sort",
        "uniq",
        "type",
    ] {
        let message = error(
            json!({"f": {"@liquid": format!("{{{{ properties.test | {filter} }}}}")}}),
            json!({}),
        );
        assert_eq!(message, format!("/f filter \"{filter}\" is disabled"));
    }
    assert!(error(json!({"f": {"@liquid": "{{ a | date: \"%Y\" }}"}}), json!({})).contains("is not supported"));
    assert!(error(json!({"f": {"@liquid": "{% cycle 'a' %}"}}), json!({})).contains("is not supported"));
    assert!(error(json!({"f": {"@liquid": "{{ 99999999999999999999999 }}"}}), json!({})).contains("not supported"));
    let long = format!("{{{{ properties.test }}}}{}", "a".repeat(1001));
    assert_eq!(
        error(json!({"f": {"@liquid": long}}), json!({})),
        "/f liquid template values are limited to 1000 characters"
    );
    for bad in [json!(123), json!({}), json!([]), json!(true)] {
        assert!(invalid(json!({"field": {"@liquid": bad}})).contains("should be a string but it is"));
    }
    assert!(error(json!({"f": {"@liquid": "{% if %}"}}), json!({})).starts_with("/f liquid:"));
}

// ------------------------------------------------------------------ validation

#[test]
fn validation_messages() {
    assert!(validate(&json!({"foo": "bar"})).is_ok());
    assert!(validate(&json!(["cool"])).is_ok());
    assert!(validate(&json!(123)).is_ok());
    assert!(validate(&json!({"@path": "$.foo.bar"})).is_ok());
    assert!(validate(&json!({"a": 1, "b": {"@path": "$.foo.bar"}})).is_ok());
    assert!(validate(&json!({"@literal": false})).is_ok());
    assert!(validate(&json!({"@path": "$.a", "_metadata": {"label": "x"}})).is_ok());
    assert_eq!(invalid(json!({"@oops": {}})), "/ has an invalid directive: @oops.");
    assert_eq!(
        invalid(json!({"@path": "$.foo", "@bar": "baz"})),
        "/ should only have one @-prefixed key but it has 2 keys."
    );
    assert_eq!(
        invalid(json!({"@path": "$.foo", "bar": "baz"})),
        "/ should only have one @-prefixed key but it has 2 keys."
    );
    assert_eq!(
        invalid(json!({"obj": {"@path": "foo.bar", "oops": true}, "hash": {"@template": {}}})),
        "/obj should only have one @-prefixed key but it has 2 keys. /hash/@template should be a string or a mapping directive but it is an object."
    );
    assert_eq!(
        invalid(json!({"a": {"@merge": {"direction": "right", "objects": [{}, 123]}}})),
        "/a/@merge/objects/1 should be an object or a mapping directive but it is a number."
    );
    assert_eq!(
        invalid(json!({"a": {"@merge": {"direction": "up", "objects": []}}})),
        "/a/@merge/direction should be one of left, right but it is \"up\"."
    );
    assert_eq!(
        invalid(json!({"a": {"@flatten": {"value": 1}}})),
        "/a/@flatten should have field \"separator\" but it doesn't."
    );
    assert_eq!(
        invalid(json!({"a": {"@transform": {"apply": {}}}})),
        "/a/@transform should have field \"mapping\" but it doesn't."
    );
    // Directives inside arrays are not validated (the reference does not look into arrays),
    // but unknown ones still fail when resolved.
    assert!(validate(&json!({"a": [{"@oops": 1}]})).is_ok());
    assert_eq!(
        error(json!({"a": [{"@oops": 1}]}), json!({})),
        "/a/0 @oops is not a valid directive, got undefined"
    );
}

#[test]
fn conformance_examples() {
    let e = json!({
        "event": "Logged In",
        "properties": {"plan": "free", "alt_name": null, "coupon": null, "$custom": null, "count": 1,
                        "json_blob": "{\"a\":1}", "products": [{"sku": "s1", "price": 1}, {"sku": "s2"}]},
        "context": {"page": {"path": "/academy/", "search": ""}}
    });
    assert_eq!(
        field(json!({"@merge": {"direction": "right", "objects": [{"@path": "$.properties"}, {"@path": "$.context.page"}]}}), e.clone())
            .unwrap()["path"],
        json!("/academy/")
    );
    assert_eq!(
        field(json!({"@excludeWhenNull": {"@path": "$.properties"}}), e.clone()).unwrap(),
        json!({"plan": "free", "count": 1, "json_blob": "{\"a\":1}", "products": [{"sku": "s1", "price": 1}, {"sku": "s2"}]})
    );
    assert_eq!(
        field(
            json!({"@if": {"blank": {"@path": "$.properties.alt_name"}, "then": {"@path": "$.properties.alt_name"}, "else": {"@path": "$.event"}}}),
            e.clone()
        ),
        Some(json!("Logged In"))
    );
    assert_eq!(
        field(
            json!({"@flatten": {"separator": ".", "value": {"@path": "$.properties"}}}),
            e.clone()
        )
        .unwrap()["products.1.sku"],
        json!("s2")
    );
    assert_eq!(
        field(
            json!({"@json": {"mode": "encode", "value": {"@path": "$.properties.missing"}}}),
            e.clone()
        ),
        None
    );
    assert_eq!(
        field(
            json!({"@json": {"mode": "decode", "value": {"@path": "$.properties.json_blob"}}}),
            e
        ),
        Some(json!({"a": 1}))
    );
}

#[test]
fn deep_mappings_are_rejected_not_overflowed() {
    let mut literal = json!("leaf");
    let mut object = json!("leaf");
    for _ in 0..1000 {
        literal = json!({ "@literal": literal });
        object = json!({ "k": object });
    }
    assert!(validate(&literal).unwrap_err().message.contains("nested too deeply"));
    assert!(validate(&object).unwrap_err().message.contains("nested too deeply"));
    assert!(resolve(&literal, &json!({})).is_err());
    assert!(resolve_value(&object, &json!({})).is_err());
    // Just under the limit still resolves.
    let mut nested = json!({"@path": "$.a"});
    for i in 0..190 {
        nested = if i % 2 == 0 {
            json!({ "k": nested })
        } else {
            json!({ "@literal": nested })
        };
    }
    assert!(resolve(&nested, &json!({"a": 1})).is_ok());
}

// -------------------------------------------------------------------- proptest

/// Arbitrary JSON leaning to mapping shapes (directive names, option keys, paths).
pub(super) fn arb_json() -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        Just("@path".to_owned()),
        Just("@if".to_owned()),
        Just("@template".to_owned()),
        Just("@arrayPath".to_owned()),
        Just("@case".to_owned()),
        Just("@replace".to_owned()),
        Just("@literal".to_owned()),
        Just("@json".to_owned()),
        Just("@flatten".to_owned()),
        Just("@merge".to_owned()),
        Just("@transform".to_owned()),
        Just("@excludeWhenNull".to_owned()),
        Just("@liquid".to_owned()),
        Just("exists".to_owned()),
        Just("blank".to_owned()),
        Just("then".to_owned()),
        Just("else".to_owned()),
        Just("value".to_owned()),
        Just("mode".to_owned()),
        Just("pattern".to_owned()),
        Just("replacement".to_owned()),
        Just("pattern2".to_owned()),
        Just("separator".to_owned()),
        Just("objects".to_owned()),
        Just("direction".to_owned()),
        Just("apply".to_owned()),
        Just("mapping".to_owned()),
        Just("operator".to_owned()),
        Just("omitArrays".to_owned()),
        Just("_metadata".to_owned()),
        Just("__segment_internal_directive".to_owned()),
        "[a-z.$\\[\\]'0-9 ]{0,6}",
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        prop_oneof![
            Just("encode".to_owned()),
            Just("decode".to_owned()),
            Just("left".to_owned()),
            Just("right".to_owned()),
            Just("lower".to_owned()),
            Just("upper".to_owned()),
            Just("$.a".to_owned()),
            Just("$.".to_owned()),
            Just("a.b[0]".to_owned()),
            Just("{{a}} {{{b}}} {{".to_owned()),
            Just("{% if a %}{{ a | upcase }}{% endif %}".to_owned()),
            ".{0,12}",
        ]
        .prop_map(Value::String),
    ];
    leaf.prop_recursive(5, 64, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((key.clone(), inner), 0..4)
                .prop_map(|entries| Value::Object(entries.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn never_panics(mapping in arb_json(), data in arb_json()) {
        let _ = validate(&mapping);
        let _ = resolve(&mapping, &data);
        let _ = resolve_value(&mapping, &data);
        let _ = resolve(&json!({"f": mapping.clone()}), &json!({"a": data.clone(), "b": [data.clone()]}));
    }

    #[test]
    fn get_path_never_panics(path in ".{0,16}", data in arb_json()) {
        let _ = get_path(&data, &path);
    }
}

#[test]
fn liquid_objects_through_filters_render_like_javascript() {
    let data = json!({"a": {"x": 1, "y": 2, "z": 3}});
    let mapping = json!({"f": {"@liquid": "{{ a | upcase }}"}});
    for _ in 0..5 {
        let out = resolve(&mapping, &data).unwrap();
        assert_eq!(out["f"], json!("[OBJECT OBJECT]"));
    }
}

#[test]
fn string_results_are_bounded_while_they_grow() {
    // `$&$&` doubles the text at every level: 2^18 bytes unbounded (past the limit at level 17).
    let mut mapping = json!({"@path": "$.event"});
    for _ in 0..18 {
        mapping = json!({"@replace": {"pattern": "e", "replacement": "$&$&", "value": mapping}});
    }
    let compiled = super::CompiledMapping::compile(&json!({ "f": mapping.clone() })).unwrap();
    let data = json!({"event": "e"});
    let message = "@replace gives a string over the limit of 100000 bytes per value";
    assert!(error(json!({ "f": mapping }), data.clone()).contains(message));
    assert!(compiled.resolve(&data).unwrap_err().message.contains(message));
    // Many placeholders of a long value in one template (the bound is on
    // what rendering adds to the template's own text).
    let template = "{{v}}".repeat(50);
    let long = json!({"v": "y".repeat(4_000)});
    let message = "@template gives a string over the limit of 100000 bytes per value";
    for text in [template.clone(), format!("{{{{{{v}}}}}}{template}")] {
        let mapping = json!({"f": {"@template": text}});
        assert!(error(mapping.clone(), long.clone()).contains(message));
        let compiled = super::CompiledMapping::compile(&mapping).unwrap();
        assert!(compiled.resolve(&long).unwrap_err().message.contains(message));
    }
    let fits = json!({"f": {"@template": "{{v}}".repeat(25)}});
    assert_eq!(run(fits, long)["f"].as_str().map(str::len), Some(100_000));
}

/// Directives nested in each other's fields (each level's `value`, `then`,
/// `mapping`, ...) are validated, compiled and resolved in time linear in the
/// depth: validating each field once as any value and once by its own rule
/// used to double the work at every level.
#[test]
fn nested_directives_take_time_linear_in_their_depth() {
    let data = json!({"event": "e", "x": 1});
    let levels: [fn(Value) -> Value; 5] = [
        |m| json!({"@replace": {"pattern": "e", "replacement": "ee", "value": m}}),
        |m| json!({"@if": {"exists": {"@path": "$.x"}, "then": m, "else": "none"}}),
        |m| json!({"@json": {"value": m, "mode": "encode"}}),
        |m| json!({"@transform": {"apply": {"a": 1}, "mapping": m}}),
        |m| json!({"@flatten": {"separator": ".", "value": m}}),
    ];
    for (i, level) in levels.iter().enumerate() {
        let mut mapping = json!({"@path": "$.event"});
        // Unbounded doubling would be 2^60 steps; the bounded walk is instant.
        for _ in 0..60 {
            mapping = level(mapping);
        }
        let mapping = json!({ "f": mapping });
        let started = std::time::Instant::now();
        let interpreted = resolve(&mapping, &data);
        let compiled = super::CompiledMapping::compile(&mapping).and_then(|c| c.resolve(&data));
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "level {i}: {:?}",
            started.elapsed()
        );
        match (interpreted, compiled) {
            (Ok(a), Ok(b)) => assert_eq!(a, b, "level {i}"),
            (Err(a), Err(b)) => assert_eq!(a.message, b.message, "level {i}"),
            (a, b) => panic!("level {i}: the interpreter gave {a:?}, the compiled mapping {b:?}"),
        }
    }
    // The problems of a nested field are still found, once each.
    let mut mapping = json!({"@replace": {"pattern": "", "value": {"@path": "$.event"}}});
    for _ in 0..30 {
        mapping = json!({"@replace": {"pattern": "e", "value": mapping}});
    }
    let problems = super::validate::problems(&json!({ "f": mapping }));
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].ends_with("/@replace/pattern should be a string of length 1 or greater."),
        "{problems:?}"
    );
}
