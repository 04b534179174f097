//! Configuration: the TOML loader and its validation (`config::load_str`),
//! subscriptions (FQL + mappings) included.
//!
//! Input: the TOML text.
//!
//! Checks: no panic; loading is deterministic (the same text gives the same
//! problems in the same order); messages name the key and the problem, never
//! the value (any key may hold a secret): a string of 8 or more characters
//! that appears nowhere else in the text (not as a key, not in another value)
//! must not appear in any problem. Destination `id`s and subscription `name`s
//! are exempt: problems name them to say where they are. A string that does
//! appear is checked again with that one value replaced by a marker: only if
//! the marker is echoed too is it a finding (a value such as
//! "service_account" is also part of a field name the message lists).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mixpanel_actions::config::load_str;

fn env() -> Vec<(String, String)> {
    vec![
        ("TOKEN_VAR".to_owned(), "env-token-0123456789".to_owned()),
        ("KEYS_VAR".to_owned(), "k1, k2".to_owned()),
    ]
}

/// Strings of the document: (must not be echoed, text), and its keys.
fn strings(table: &toml::Table, out: &mut Vec<(bool, String)>, keys: &mut Vec<String>) {
    for (key, value) in table {
        keys.push(key.clone());
        let checked = key != "id" && key != "name";
        walk(value, checked, out, keys);
    }
}

/// Replaces the `target`-th string (in the order of [`strings`]) with `marker`.
fn replace_nth(table: &mut toml::Table, target: usize, marker: &str, seen: &mut usize) {
    for (_, value) in table.iter_mut() {
        replace_in(value, target, marker, seen);
    }
}

fn replace_in(value: &mut toml::Value, target: usize, marker: &str, seen: &mut usize) {
    match value {
        toml::Value::String(s) => {
            if *seen == target {
                *s = marker.to_owned();
            }
            *seen += 1;
        }
        toml::Value::Array(items) => items.iter_mut().for_each(|v| replace_in(v, target, marker, seen)),
        toml::Value::Table(t) => replace_nth(t, target, marker, seen),
        _ => {}
    }
}

/// Whether the problems of `table` with its `index`-th string replaced by a
/// marker show the marker.
fn marker_echoed(table: &toml::Table, index: usize) -> bool {
    const MARKER: &str = "qz-marker-of-a-value-zq";
    let mut changed = table.clone();
    replace_nth(&mut changed, index, MARKER, &mut 0);
    let Ok(text) = toml::to_string(&changed) else {
        return false;
    };
    match load_str(&text, env()) {
        Ok(_) => false,
        Err(e) => e.problems.iter().any(|p| p.contains(MARKER)),
    }
}

fn walk(value: &toml::Value, checked: bool, out: &mut Vec<(bool, String)>, keys: &mut Vec<String>) {
    match value {
        toml::Value::String(s) => out.push((checked, s.clone())),
        toml::Value::Array(items) => items.iter().for_each(|v| walk(v, checked, out, keys)),
        toml::Value::Table(t) => strings(t, out, keys),
        _ => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let first = load_str(text, env());
    let second = load_str(text, env());
    let (first, second) = match (first, second) {
        (Ok(_), Ok(_)) => return,
        (Err(a), Err(b)) => (a.problems, b.problems),
        (a, b) => panic!(
            "loading twice gave different outcomes: {:?} / {:?}",
            a.is_ok(),
            b.is_ok()
        ),
    };
    assert_eq!(first, second, "problems differ between two loads of the same text");
    assert!(!first.is_empty(), "an error without problems");

    let Ok(table) = toml::from_str::<toml::Table>(text) else {
        return;
    };
    let mut found = Vec::new();
    let mut keys = Vec::new();
    strings(&table, &mut found, &mut keys);
    let message = first.join("\n");
    for (i, (checked, s)) in found.iter().enumerate() {
        if !checked || s.chars().count() < 8 {
            continue;
        }
        let elsewhere = keys.iter().any(|k| k.contains(s.as_str()))
            || found
                .iter()
                .enumerate()
                .any(|(j, (_, o))| j != i && o.contains(s.as_str()));
        if !elsewhere && !"env-token-0123456789".contains(s.as_str()) && message.contains(s.as_str()) {
            assert!(!marker_echoed(&table, i), "a value is echoed in: {message}");
        }
    }
});
