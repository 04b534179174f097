//! [`CompiledMapping`] against the generic interpreter: the conformance fixture's
//! mappings and the default mappings over every fixture event, corner cases, depth
//! limits, and property tests on generated mappings and events.

use std::collections::BTreeSet;

use proptest::prelude::*;
use serde_json::{json, Value};

use super::super::tests::arb_json;
use super::super::{resolve, validate, MappingError};
use super::CompiledMapping;
use crate::mixpanel::actions::ActionKind;

const FIXTURE: &str = include_str!("../../../../tests/fixtures/conformance.jsonl");

/// The compiled and the generic resolution of `mapping` against `data`: both `Ok`
/// with the same JSON text (member order included), or both `Err` with the same
/// message. A mapping that does not compile fails `validate` with the same
/// message, and the generic resolution fails too (with that message when the data
/// is an object, which is checked first).
fn check(mapping: &Value, data: &Value) -> Result<(), String> {
    check_compiled(mapping, &CompiledMapping::compile(mapping), data)
}

/// [`check`] with the mapping compiled already.
fn check_compiled(
    mapping: &Value,
    compiled: &Result<CompiledMapping, MappingError>,
    data: &Value,
) -> Result<(), String> {
    let generic = resolve(mapping, data);
    let compiled = match compiled {
        Ok(compiled) => compiled,
        Err(e) => {
            if validate(mapping).err().as_ref() != Some(e) {
                return Err(format!("compile error {e:?} differs from validate"));
            }
            return match generic {
                Err(g) if !data.is_object() || g == *e => Ok(()),
                other => Err(format!("compile failed with {e:?}, resolve gave {other:?}")),
            };
        }
    };
    if compiled.source() != mapping {
        return Err("source differs".to_owned());
    }
    let fast = compiled.resolve(data);
    let text = |r: &Result<Value, _>| {
        r.as_ref()
            .map(|v| serde_json::to_string(v).unwrap_or_default())
            .map_err(Clone::clone)
    };
    if text(&fast) != text(&generic) {
        return Err(format!("compiled {fast:?} != generic {generic:?}"));
    }
    // The borrowing form: the same members in the same order, or the same
    // non-object result, or the same error.
    let members = compiled.resolve_members(data).map(|r| match r {
        Ok(members) => Value::Object(
            members
                .into_iter()
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        ),
        Err(other) => other,
    });
    if text(&members) != text(&generic) {
        return Err(format!("members {members:?} != generic {generic:?}"));
    }
    Ok(())
}

/// Every mapping of the fixture's subscriptions and every event of its cases.
fn fixture() -> (Vec<Value>, Vec<Value>) {
    let mut mappings = BTreeSet::new();
    let mut events = BTreeSet::new();
    for line in FIXTURE.lines().filter(|l| !l.trim().is_empty()) {
        let line: Value = serde_json::from_str(line).unwrap();
        let case = &line["case"];
        for sub in case["subscriptions"].as_array().into_iter().flatten() {
            if let Some(mapping) = sub.get("mapping") {
                mappings.insert(mapping.to_string());
            }
        }
        if let Some(event) = case.get("event") {
            events.insert(event.to_string());
        }
        for event in case["events"].as_array().into_iter().flatten() {
            events.insert(event.to_string());
        }
    }
    let parse =
        |set: BTreeSet<String>| -> Vec<Value> { set.iter().map(|s| serde_json::from_str(s).unwrap()).collect() };
    (parse(mappings), parse(events))
}

#[test]
fn compiled_matches_generic_on_fixture_and_default_mappings() {
    let (mut mappings, events) = fixture();
    assert!(mappings.len() > 50, "fixture mappings: {}", mappings.len());
    assert!(events.len() > 50, "fixture events: {}", events.len());
    mappings.extend(ActionKind::ALL.iter().map(|kind| kind.default_mapping().clone()));
    let mut failures = Vec::new();
    for mapping in &mappings {
        let compiled = CompiledMapping::compile(mapping);
        for event in &events {
            if let Err(problem) = check_compiled(mapping, &compiled, event) {
                failures.push(format!("mapping {mapping}\nevent {event}\n{problem}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} disagreements, first:\n{}",
        failures.len(),
        failures[0]
    );
}

#[test]
fn compiled_mappings_are_shareable() {
    fn shareable<T: Send + Sync + Clone + std::fmt::Debug>() {}
    shareable::<CompiledMapping>();
}

#[test]
fn default_mappings_compile_without_generic_nodes() {
    for kind in ActionKind::ALL {
        let compiled = CompiledMapping::compile(kind.default_mapping()).unwrap();
        assert_eq!(compiled.source(), kind.default_mapping());
        assert_eq!(compiled.generic_nodes(), 0, "{}", kind.name());
    }
}

#[test]
fn fixture_mappings_mostly_compile() {
    let (mappings, _) = fixture();
    let mut generic = 0;
    for mapping in &mappings {
        if let Ok(compiled) = CompiledMapping::compile(mapping) {
            generic += compiled.generic_nodes();
        }
    }
    assert!(generic < mappings.len(), "{generic} generic nodes");
}

fn sample_event() -> Value {
    json!({
        "type": "track",
        "event": "Product Viewed",
        "userId": "u1",
        "context": {"app": {"name": "Shop"}, "page": {"search": ""}},
        "properties": {
            "plan": "basic", "zero": 0, "empty": "", "nothing": null, "flag": false,
            "key with space": "sp", "tags": ["a", "b"], "0": "zero-key",
            "products": [{"sku": "s1", "price": 1}, {"sku": "s2"}, 3, null],
            "one": {"sku": "only"}
        }
    })
}

/// The path plan's limits: an object with many more members than the
/// mapping names is searched per path, and a path longer than the plan takes
/// keeps its own walk (no trie that deep); both agree with the interpreter.
#[test]
fn path_plan_limits_match_generic() {
    let mut big = serde_json::Map::new();
    for i in 0..100 {
        big.insert(format!("k{i}"), json!(i));
    }
    let data = json!({ "a": Value::Object(big.clone()), "b": { "k1": 0, "k2": "" } });
    let paths: serde_json::Map<String, Value> = (0..6)
        .flat_map(|i| {
            [
                (format!("a{i}"), json!({ "@path": format!("$.a.k{}", i * 50) })),
                (format!("b{i}"), json!({ "@path": format!("$.b.k{i}.x") })),
            ]
        })
        .collect();
    let mapping = Value::Object(paths);
    check(&mapping, &data).unwrap();
    let compiled = CompiledMapping::compile(&mapping).unwrap();
    let resolved = compiled.resolve(&data).unwrap();
    assert_eq!(resolved["a0"], json!(0));
    assert_eq!(resolved["a1"], json!(50));
    assert_eq!(resolved["b1"], json!(0), "a falsy value on the way is the result");
    assert_eq!(resolved["b2"], json!(""));
    assert!(resolved.get("a2").is_none() && resolved.get("b0").is_none());

    let long = vec!["a"; 20_000].join(".");
    let mut nested = json!(1);
    for _ in 0..100 {
        nested = json!({ "a": nested });
    }
    let mapping = json!({ "long": { "@path": long }, "short": { "@path": "a.a" } });
    check(&mapping, &nested).unwrap();
}

#[test]
fn compiled_corner_cases_match_generic() {
    let cases = [
        json!({"a": {"@path": "$.properties.tags.length"}, "b": {"@path": "$.properties.plan.0"}}),
        json!({"a": {"@path": "properties.$.plan"}, "b": {"@path": "$."}, "c": {"@path": ""}, "d": {"@path": "$.."}}),
        json!({"a": {"@path": "$.properties['key with space']"}, "b": {"@path": "$.properties[\"0\"]"}}),
        json!({"a": {"@path": "$.properties.zero.x"}, "b": {"@path": "$.properties.constructor"}}),
        json!({"a": {"@if": {"exists": {"@path": "$.nope"}, "then": 1, "else": ""}}}),
        json!({"a": {"@if": {"exists": 0, "blank": {"@path": "$.x"}, "then": 1, "else": 2}}}),
        json!({"a": {"@if": {"blank": {"@path": "$.context.page.search"}, "then": 1, "else": 2}}}),
        json!({"a": {"@if": {"blank": "", "then": 1}}}),
        json!({"a": {"@template": "{{properties.plan}}-{{ properties.tags }}-{{nope}}-{{properties.nothing}}"}}),
        json!({"a": {"@template": "{{{properties.plan}}} {{ {{properties.plan}} }} {{"}}),
        json!({"a": {"@arrayPath": ["$.properties.products", {"s": {"@path": "$.sku"}}]}}),
        json!({"a": {"@arrayPath": ["$.properties.one", {"s": {"@path": "$.sku"}}]}}),
        json!({"a": {"@arrayPath": ["$.properties.plan", {"s": {"@path": "$.sku"}}]}}),
        json!({"a": {"@arrayPath": ["$.properties.products", {}]}, "b": {"@arrayPath": ["$.properties.products"]}}),
        json!({"a": {"@arrayPath": [{"@path": "$.properties.products"}, {"s": {"@path": "$.sku"}}]}}),
        json!({"a": {"@literal": {"x": {"@path": "$.userId"}}}, "b": {"@literal": "raw"}}),
        json!({"a": {"@case": {"operator": "upper", "value": {"@path": "$.userId"}}}}),
        json!({"a": {"@path": "$.userId", "_metadata": {"x": 1}}}),
        json!({"x": [{"@path": 5}]}),
        json!({"x": [{"@nope": 1}, {"@path": "$.userId", "@if": 1}]}),
        json!({"x": [{"@if": {}}]}),
        json!({"x": [{"@template": {"@path": "$.userId"}}]}),
        json!({"a": {"b": [1, {"c": null}], "d": "e"}, "f": [{"@path": "$.nope"}, 2]}),
        json!({"__segment_internal_directive": {"@transform": {"apply": {"u": {"@path": "$.userId"}}, "mapping": "x"}}, "f": {"@path": "$.u"}}),
        json!({"@path": "$.properties"}),
        json!("scalar root"),
        json!([{"@path": "$.userId"}]),
    ];
    let event = sample_event();
    for mapping in &cases {
        for data in [&event, &json!({}), &json!([]), &json!("s")] {
            if let Err(problem) = check(mapping, data) {
                panic!("mapping {mapping} data {data}: {problem}");
            }
        }
    }
}

#[test]
fn compiled_depth_limits_match_generic() {
    // Arrays are not validated, so the interpreter's own depth limit applies.
    let mut deep_array = json!({"@path": "$.a"});
    let mut deep_template = json!({"@template": "{{a}}"});
    for _ in 0..199 {
        deep_array = json!([deep_array]);
        deep_template = json!([deep_template]);
    }
    let mut nested = json!({"@path": "$.a"});
    for i in 0..190 {
        nested = if i % 2 == 0 {
            json!({ "k": nested })
        } else {
            json!({ "@literal": nested })
        };
    }
    let data = json!({"a": 1});
    for mapping in [&deep_array, &deep_template, &nested] {
        for extra in 0..4 {
            let mut wrapped = mapping.clone();
            for _ in 0..extra {
                wrapped = json!([wrapped]);
            }
            let wrapped = json!({ "f": wrapped });
            check(&wrapped, &data).unwrap();
        }
    }
    let mut too_deep = json!("leaf");
    for _ in 0..1000 {
        too_deep = json!([too_deep]);
    }
    let too_deep = json!({ "f": too_deep });
    assert!(resolve(&too_deep, &data)
        .unwrap_err()
        .message
        .contains("nested too deeply"));
    check(&too_deep, &data).unwrap();
}

/// Paths mixing separators, brackets, quotes, `$.`, numeric keys and `length`.
fn arb_path() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("$."),
        Just("."),
        Just("["),
        Just("]"),
        Just("'"),
        Just("\""),
        Just("0"),
        Just("1"),
        Just("01"),
        Just("length"),
        Just("a"),
        Just("b"),
        Just("k k"),
        Just("$"),
        Just("constructor"),
    ];
    let random = prop::collection::vec(piece, 0..7).prop_map(|pieces| pieces.concat());
    // Well-formed paths to keys the events have, in every notation.
    let key = prop_oneof![Just("a"), Just("b"), Just("0"), Just("1"), Just("length"), Just("k k")];
    let step = (key, 0..4usize).prop_map(|(key, notation)| match notation {
        0 => format!(".{key}"),
        1 => format!("['{key}']"),
        2 => format!("[\"{key}\"]"),
        _ => format!("[{key}]"),
    });
    let prefix = prop_oneof![Just(""), Just("$"), Just("$.$"), Just("a.$")];
    let structured = (prefix, prop::collection::vec(step, 1..4)).prop_map(|(prefix, steps)| {
        let path = format!("{prefix}{}", steps.concat());
        match path.strip_prefix('.') {
            Some(rest) => rest.to_owned(),
            None => path,
        }
    });
    prop_oneof![random, structured]
}

fn arb_template() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        arb_path().prop_map(|p| format!("{{{{{p}}}}}")),
        arb_path().prop_map(|p| format!("{{{{{{{p}}}}}}}")),
        Just("{{".to_owned()),
        Just("}}".to_owned()),
        Just("{".to_owned()),
        Just(" x ".to_owned()),
        Just("é".to_owned()),
    ];
    prop::collection::vec(piece, 0..5).prop_map(|pieces| pieces.concat())
}

/// Mappings built from the compiled shapes, with arbitrary JSON mixed in.
fn arb_mapping() -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        Just("a".to_owned()),
        Just("b".to_owned()),
        Just("0".to_owned()),
        Just("_metadata".to_owned()),
        Just("@path".to_owned()),
        "[a-z]{1,3}",
    ];
    let leaf = prop_oneof![
        4 => arb_path().prop_map(|p| json!({ "@path": p })),
        1 => arb_template().prop_map(|t| json!({ "@template": t })),
        1 => Just(Value::Null),
        1 => Just(json!("")),
        1 => Just(json!(0)),
        1 => any::<bool>().prop_map(Value::Bool),
        1 => "[a-z ]{0,4}".prop_map(Value::String),
        1 => arb_json(),
    ];
    leaf.prop_recursive(4, 48, 5, move |inner| {
        let opt = prop::option::of(inner.clone());
        prop_oneof![
            prop::collection::vec((key.clone(), inner.clone()), 0..5)
                .prop_map(|entries| Value::Object(entries.into_iter().collect())),
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            (prop::option::of(inner.clone()), opt.clone(), opt.clone(), opt.clone()).prop_map(
                |(exists, blank, then, otherwise)| {
                    let mut opts = serde_json::Map::new();
                    for (name, v) in [
                        ("exists", exists),
                        ("blank", blank),
                        ("then", then),
                        ("else", otherwise),
                    ] {
                        if let Some(v) = v {
                            opts.insert(name.to_owned(), v);
                        }
                    }
                    json!({ "@if": opts })
                }
            ),
            (arb_path(), opt.clone()).prop_map(|(path, shape)| match shape {
                Some(shape) => json!({ "@arrayPath": [path, shape] }),
                None => json!({ "@arrayPath": [path] }),
            }),
            inner.clone().prop_map(|v| json!({ "@literal": v })),
        ]
    })
}

/// Events whose keys the generated paths can reach (objects have most of the
/// keys the paths use).
fn arb_event() -> impl Strategy<Value = Value> {
    const KEYS: [&str; 9] = ["a", "b", "0", "1", "01", "length", "k k", "$", "constructor"];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        prop_oneof![Just(0), Just(1), any::<i64>()].prop_map(Value::from),
        Just(json!(-0.0)),
        Just(json!(1.5)),
        "[ab0é😀]{0,3}".prop_map(Value::String),
    ];
    let tree = leaf.prop_recursive(4, 64, 9, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec(prop::option::weighted(0.6, inner), KEYS.len()).prop_map(|members| {
                Value::Object(
                    KEYS.iter()
                        .zip(members)
                        .filter_map(|(key, member)| member.map(|m| ((*key).to_owned(), m)))
                        .collect(),
                )
            }),
        ]
    });
    prop_oneof![
        8 => tree.clone().prop_map(|v| match v {
            Value::Object(_) => v,
            other => json!({ "a": other.clone(), "0": [other], "b": {"a": "x"} }),
        }),
        1 => tree,
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn compiled_agrees_with_generic_on_hot_shapes(mapping in arb_mapping(), data in arb_event()) {
        let result = check(&mapping, &data);
        prop_assert!(result.is_ok(), "{:?}", result);
        let wrapped = json!({ "f": mapping.clone(), "g": [mapping] });
        let result = check(&wrapped, &data);
        prop_assert!(result.is_ok(), "{:?}", result);
    }

    /// Many paths in one mapping, as the presets have: the path plan's trie
    /// has nodes with many children (read by scanning the event's object),
    /// shared prefixes, paths through falsy values, arrays and strings, and
    /// equal paths sharing a slot.
    #[test]
    fn compiled_agrees_with_generic_on_many_paths(
        paths in prop::collection::vec((arb_path(), 0..3usize), 4..28),
        data in arb_event(),
    ) {
        let members: serde_json::Map<String, Value> = paths
            .iter()
            .enumerate()
            .map(|(i, (path, form))| {
                let value = match form {
                    0 => json!({ "@path": path }),
                    1 => json!({ "@if": { "exists": { "@path": path }, "then": { "@path": path }, "else": "none" } }),
                    _ => json!({ "nested": { "@path": path }, "list": [{ "@path": path }] }),
                };
                (format!("f{i}"), value)
            })
            .collect();
        let mapping = Value::Object(members);
        let result = check(&mapping, &data);
        prop_assert!(result.is_ok(), "{:?}", result);
    }

    #[test]
    fn compiled_agrees_with_generic_on_arbitrary_mappings(mapping in arb_json(), data in arb_json()) {
        let result = check(&mapping, &data);
        prop_assert!(result.is_ok(), "{:?}", result);
        let wrapped = json!({ "f": mapping.clone(), "g": [mapping] });
        let result = check(&wrapped, &json!({ "a": data.clone(), "b": [data] }));
        prop_assert!(result.is_ok(), "{:?}", result);
    }
}
