//! Parsing event JSON into `serde_json::Value`, with fewer allocations than
//! `serde_json`'s own `Value` visitor.
//!
//! The result is the same `Value` (same members in the same order, a repeated
//! key keeps its first place and its last value, the same numbers, the same
//! errors from the same parser), built differently: the members of an object
//! are gathered on one scratch stack shared by the whole parse and moved into a
//! map of exactly their number, instead of growing each map (and rehashing its
//! index) as members arrive. Events are mostly objects, so this is most of the
//! parse's allocation work.
//!
//! With `serde_json`'s `raw_value` feature (on in this build), its parse reads
//! an object whose first key is the crate's private raw-value token as the JSON
//! text of that key's value; this parse does the same, so that the value is the
//! same for every input.

use serde::de::{DeserializeSeed, Deserializer, Error as _, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// `serde_json`'s private raw-value key (`serde_json::raw::TOKEN`).
const RAW_VALUE_TOKEN: &str = "$serde_json::private::RawValue";

/// Members gathered before the first object is built; the stack grows past
/// it only for events with more members open at once.
const STACK_START: usize = 64;

/// Parses JSON text into a [`Value`] (as `serde_json::from_slice::<Value>`).
pub fn from_slice(bytes: &[u8]) -> Result<Value, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = parse(&mut de)?;
    de.end()?;
    Ok(value)
}

/// Parses JSON text into a [`Value`] (as `serde_json::from_str::<Value>`).
pub fn from_str(text: &str) -> Result<Value, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_str(text);
    let value = parse(&mut de)?;
    de.end()?;
    Ok(value)
}

fn parse<'de, D: Deserializer<'de>>(de: D) -> Result<Value, D::Error> {
    let mut stack = Vec::with_capacity(STACK_START);
    Seed { stack: &mut stack }.deserialize(de)
}

/// One value, with the parse's member stack.
struct Seed<'s> {
    stack: &'s mut Vec<(String, Value)>,
}

impl<'de> DeserializeSeed<'de> for Seed<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Value, D::Error> {
        de.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Seed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any valid JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, de: D) -> Result<Value, D::Error> {
        self.deserialize(de)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(Seed {
            stack: &mut *self.stack,
        })? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let start = self.stack.len();
        let mut first = true;
        while let Some(key) = map.next_key::<String>()? {
            if first && key == RAW_VALUE_TOKEN {
                // As serde_json: the value is JSON text, parsed by serde_json.
                let text = map.next_value_seed(RawText)?;
                return serde_json::from_str::<Value>(&text).map_err(A::Error::custom);
            }
            first = false;
            let value = map.next_value_seed(Seed {
                stack: &mut *self.stack,
            })?;
            self.stack.push((key, value));
        }
        let mut out = Map::with_capacity(self.stack.len().saturating_sub(start));
        // `insert` keeps a repeated key's first place and takes its last
        // value, as `serde_json` does.
        for (key, value) in self.stack.drain(start..) {
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }
}

/// The raw-value token's value: a string, as `serde_json` reads it.
struct RawText;

impl<'de> DeserializeSeed<'de> for RawText {
    type Value = String;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<String, D::Error> {
        de.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for RawText {
    type Value = String;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("raw value")
    }

    fn visit_str<E>(self, v: &str) -> Result<String, E> {
        Ok(v.to_owned())
    }

    fn visit_string<E>(self, v: String) -> Result<String, E> {
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Same value and same text as `serde_json`'s parse, or both errors with
    /// the same message.
    fn same_as_serde_json(text: &str) -> Result<(), String> {
        let ours = from_str(text);
        let theirs = serde_json::from_str::<Value>(text);
        let slice = from_slice(text.as_bytes());
        let show = |r: &Result<Value, serde_json::Error>| match r {
            Ok(v) => Ok(serde_json::to_string(v).unwrap_or_default()),
            Err(e) => Err(e.to_string()),
        };
        if show(&ours) != show(&theirs) || show(&slice) != show(&theirs) {
            return Err(format!(
                "ours {:?} / {:?}, serde_json {:?}",
                show(&ours),
                show(&slice),
                show(&theirs)
            ));
        }
        Ok(())
    }

    #[test]
    fn parses_like_serde_json() {
        for text in [
            r#"{"a":1,"b":[1,2,{"c":null}],"d":{"e":"f\u00e9\n"},"g":-0,"h":-0.0,"i":1e400}"#,
            r#"{"a":1,"b":2,"a":3}"#,
            r#"{"k":{"x":1,"x":{"y":[]}},"k":{"z":2}}"#,
            r#"[1.5, 18446744073709551615, -9223372036854775808, 1e-7, 0.1]"#,
            r#""text""#,
            "  {}  ",
            "[]",
            "{",
            r#"{"a":1,}"#,
            r#"{"a":1} x"#,
            "[1,2",
            "\"\\ud800\"",
            "",
            "nul",
            // serde_json's raw-value token: only as the first key.
            r#"{"$serde_json::private::RawValue":"[1,{\"a\":2}]"}"#,
            r#"{"x":{"$serde_json::private::RawValue":"\"text\""}}"#,
            r#"{"$serde_json::private::RawValue":1}"#,
            r#"{"$serde_json::private::RawValue":"[1"}"#,
            r#"{"$serde_json::private::RawValue":"1","b":2}"#,
            r#"{"a":1,"$serde_json::private::RawValue":"[1]"}"#,
        ] {
            same_as_serde_json(text).unwrap();
        }
    }

    #[test]
    fn the_nesting_limit_is_serde_jsons() {
        for depth in [127, 128, 129, 200] {
            let text = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
            same_as_serde_json(&text).unwrap();
            let text = format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth));
            same_as_serde_json(&text).unwrap();
        }
    }

    fn arb_json_text() -> impl Strategy<Value = String> {
        let leaf = prop_oneof![
            Just("null".to_owned()),
            Just("true".to_owned()),
            any::<i64>().prop_map(|n| n.to_string()),
            any::<f64>().prop_map(|f| format!("{f:e}")),
            "[a-c\u{e9}\"\\\\]{0,4}".prop_map(|s| serde_json::to_string(&s).unwrap_or_default()),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(|items| format!("[{}]", items.join(","))),
                // Few key names, so objects repeat keys.
                prop::collection::vec(("[ab]{1,2}", inner), 0..6).prop_map(|members| {
                    let members: Vec<String> = members.into_iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
                    format!("{{{}}}", members.join(","))
                }),
            ]
        })
    }

    proptest! {
        #[test]
        fn random_json_parses_like_serde_json(text in arb_json_text(), cut in 0usize..64) {
            prop_assert!(same_as_serde_json(&text).is_ok(), "{:?}", same_as_serde_json(&text));
            // Cut short: the same error.
            let end = text.len().saturating_sub(cut);
            if let Some(prefix) = text.get(..end) {
                prop_assert!(same_as_serde_json(prefix).is_ok(), "{:?}", same_as_serde_json(prefix));
            }
        }
    }
}
