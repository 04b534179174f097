//! A record's data as the actions build it: any JSON, or a Mixpanel event kept
//! as its name and an ordered property list. Events are most of the traffic and
//! carry about sixty properties: building them as [`Props`] (keys and values
//! borrowed from the event where they are its own, constant keys appended
//! without a lookup) and writing that straight to JSON costs no copy of the
//! event's strings and no second tree, where a `serde_json::Map` copies every
//! key and value and hashes each key with SipHash.

use std::borrow::Cow;
use std::sync::Arc;

use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;
use serde_json::{Map, Value};

/// An event's properties in insertion order, each key once. Keys and values
/// are borrowed from the event (or the mapping) when they are copied from it
/// unchanged.
///
/// [`Props::insert`] has `serde_json::Map`'s semantics (a present key's value
/// is replaced in place) and searches the list; builders append keys they know
/// to be new with [`Props::push_new`], and look many keys up through an index
/// of their own (see trackPurchase), so no event costs a search per property.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Props<'a> {
    entries: Vec<(Cow<'a, str>, Cow<'a, Value>)>,
}

/// An empty [`Props`] with room for `capacity` properties.
pub fn props_with_capacity<'a>(capacity: usize) -> Props<'a> {
    Props {
        entries: Vec::with_capacity(capacity),
    }
}

impl<'a> Props<'a> {
    /// Appends a property whose key is not in the list (the caller knows it:
    /// checked in debug builds, while the list is short enough to search).
    pub fn push_new(&mut self, key: Cow<'a, str>, value: Cow<'a, Value>) {
        debug_assert!(
            self.entries.len() > 256 || self.position(&key).is_none(),
            "{key} is already a property"
        );
        self.entries.push((key, value));
    }

    /// Sets `key`: in place when present, else appended.
    pub fn insert(&mut self, key: Cow<'a, str>, value: Cow<'a, Value>) {
        match self.position(&key) {
            Some(i) => self.set(i, value),
            None => self.entries.push((key, value)),
        }
    }

    /// Replaces the value of the property at `index` (nothing if there is none).
    pub fn set(&mut self, index: usize, value: Cow<'a, Value>) {
        if let Some(entry) = self.entries.get_mut(index) {
            entry.1 = value;
        }
    }

    /// Where `key` is in the list.
    pub fn position(&self, key: &str) -> Option<usize> {
        self.entries.iter().position(|(k, _)| k == key)
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.position(key).and_then(|i| self.entries.get(i)).map(|(_, v)| &**v)
    }

    /// The value at `index`, to change it.
    pub fn value_mut(&mut self, index: usize) -> Option<&mut Cow<'a, Value>> {
        self.entries.get_mut(index).map(|(_, v)| v)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&Cow<'a, str>, &Cow<'a, Value>)> + '_ {
        self.entries.iter().map(|(k, v)| (k, v))
    }

    pub fn values(&self) -> impl Iterator<Item = &Value> + '_ {
        self.entries.iter().map(|(_, v)| &**v)
    }
}

impl<'a> IntoIterator for Props<'a> {
    type Item = (Cow<'a, str>, Cow<'a, Value>);
    type IntoIter = std::vec::IntoIter<(Cow<'a, str>, Cow<'a, Value>)>;

    fn into_iter(self) -> Self::IntoIter {
        self.entries.into_iter()
    }
}

/// What a record sends: serialized as the JSON object it stands for.
#[derive(Clone, Debug)]
pub enum RecordData<'a> {
    Json(Value),
    /// `{"event": name, "properties": {...}}`.
    Event {
        name: Cow<'a, Value>,
        properties: Props<'a>,
    },
}

impl From<Value> for RecordData<'_> {
    fn from(value: Value) -> Self {
        RecordData::Json(value)
    }
}

impl PartialEq for RecordData<'_> {
    /// Equal when they serialize alike (property order included).
    fn eq(&self, other: &RecordData<'_>) -> bool {
        match (self, other) {
            (RecordData::Json(a), RecordData::Json(b)) => a == b,
            (
                RecordData::Event { name, properties },
                RecordData::Event {
                    name: other_name,
                    properties: other_properties,
                },
            ) => name == other_name && properties.iter().eq(other_properties.iter()),
            (a, b) => a.to_value() == b.to_value(),
        }
    }
}

impl<'a> RecordData<'a> {
    /// The record as a JSON value (for people to read, and tests).
    pub fn to_value(&self) -> Value {
        match self {
            RecordData::Json(v) => v.clone(),
            RecordData::Event { .. } => self.clone().into_value(),
        }
    }

    /// [`RecordData::to_value`], consuming the record.
    pub fn into_value(self) -> Value {
        match self {
            RecordData::Json(v) => v,
            RecordData::Event { name, properties } => {
                let properties: Map<String, Value> = properties
                    .into_iter()
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
                    .collect();
                let mut event = Map::with_capacity(2);
                event.insert("event".into(), name.into_owned());
                event.insert("properties".into(), Value::Object(properties));
                Value::Object(event)
            }
        }
    }

    /// The record with nothing borrowed.
    pub fn into_owned(self) -> RecordData<'static> {
        match self {
            RecordData::Json(v) => RecordData::Json(v),
            RecordData::Event { name, properties } => RecordData::Event {
                name: Cow::Owned(name.into_owned()),
                properties: Props {
                    entries: properties
                        .into_iter()
                        .map(|(k, v)| (Cow::Owned(k.into_owned()), Cow::Owned(v.into_owned())))
                        .collect(),
                },
            },
        }
    }

    /// The record as a value, borrowed when it is one.
    pub fn as_value(&self) -> Cow<'_, Value> {
        match self {
            RecordData::Json(v) => Cow::Borrowed(v),
            RecordData::Event { .. } => Cow::Owned(self.to_value()),
        }
    }

    /// The event's properties: their number, and a lookup by key (`None`
    /// when the record has no `properties` object).
    pub fn properties(&self) -> Option<PropertiesView<'_>> {
        match self {
            RecordData::Json(v) => v.get("properties").and_then(Value::as_object).map(PropertiesView::Json),
            RecordData::Event { properties, .. } => Some(PropertiesView::Props(properties)),
        }
    }
}

/// Read access to an event's properties, whichever form they are in.
#[derive(Clone, Copy, Debug)]
pub enum PropertiesView<'a> {
    Json(&'a Map<String, Value>),
    Props(&'a Props<'a>),
}

impl<'a> PropertiesView<'a> {
    pub fn len(&self) -> usize {
        match self {
            PropertiesView::Json(m) => m.len(),
            PropertiesView::Props(p) => p.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn get(&self, key: &str) -> Option<&'a Value> {
        match self {
            PropertiesView::Json(m) => m.get(key),
            PropertiesView::Props(p) => p.get(key),
        }
    }

    /// The values, in order.
    pub fn values(&self) -> Box<dyn Iterator<Item = &'a Value> + 'a> {
        match *self {
            PropertiesView::Json(m) => Box::new(m.values()),
            PropertiesView::Props(p) => Box::new(p.values()),
        }
    }
}

impl Serialize for RecordData<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            RecordData::Json(v) => v.serialize(serializer),
            RecordData::Event { name, properties } => {
                let mut map = serializer.serialize_map(Some(2))?;
                map.serialize_entry("event", name)?;
                map.serialize_entry("properties", &PropsJson(properties))?;
                map.end()
            }
        }
    }
}

/// The largest encoding buffer a thread keeps between records.
const KEPT_BUFFER_BYTES: usize = 64 * 1024;

thread_local! {
    static BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The record's compact JSON, as sent. Encoded in a buffer the thread keeps
/// (up to [`KEPT_BUFFER_BYTES`]), so a record costs one allocation of its exact
/// size instead of a growing one and a copy.
pub fn encode(data: &RecordData<'_>) -> Arc<str> {
    BUFFER.with(|cell| {
        let Ok(mut buf) = cell.try_borrow_mut() else {
            return Arc::from(serde_json::to_string(data).unwrap_or_default());
        };
        buf.clear();
        let written = match data {
            RecordData::Event { name, properties } => write_event(&mut buf, name, properties),
            RecordData::Json(_) => serde_json::to_writer(&mut *buf, data),
        };
        let text = match written {
            // Only UTF-8 is written (text copied from `str`s, and serde_json's).
            Ok(()) => std::str::from_utf8(&buf)
                .map(Arc::from)
                .unwrap_or_else(|_| Arc::from("")),
            Err(_) => Arc::from(""),
        };
        if buf.capacity() > KEPT_BUFFER_BYTES {
            *buf = Vec::new();
        }
        text
    })
}

/// `{"event":name,"properties":{...}}` as serde_json writes it (compact),
/// writing each string that needs no escape as it is: the event's keys and
/// most of its values are such text, and checking a string costs less than
/// escaping it.
fn write_event(buf: &mut Vec<u8>, name: &Value, properties: &Props<'_>) -> serde_json::Result<()> {
    buf.extend_from_slice(b"{\"event\":");
    write_value(buf, name)?;
    buf.extend_from_slice(b",\"properties\":{");
    for (i, (key, value)) in properties.iter().enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        write_str(buf, key)?;
        buf.push(b':');
        write_value(buf, value)?;
    }
    buf.extend_from_slice(b"}}");
    Ok(())
}

fn write_value(buf: &mut Vec<u8>, value: &Value) -> serde_json::Result<()> {
    match value {
        Value::String(s) => write_str(buf, s),
        other => serde_json::to_writer(&mut *buf, other),
    }
}

/// A JSON string: as it is when no byte needs escaping (serde_json escapes
/// only `"`, `\` and control characters), else by serde_json.
fn write_str(buf: &mut Vec<u8>, s: &str) -> serde_json::Result<()> {
    if needs_escape(s.as_bytes()) {
        return serde_json::to_writer(&mut *buf, s);
    }
    buf.reserve(s.len() + 2);
    buf.push(b'"');
    buf.extend_from_slice(s.as_bytes());
    buf.push(b'"');
    Ok(())
}

/// Whether a byte of `bytes` is `"`, `\` or below 0x20, checked eight bytes
/// at a time (exact for any byte values).
fn needs_escape(bytes: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    // A byte of `w` is zero / below `n` (n <= 0x80): the high bit of that byte
    // in the result is set for the first such byte, so the whole word is
    // non-zero exactly when one exists.
    let zero = |w: u64| w.wrapping_sub(ONES) & !w & HIGH;
    let below = |w: u64, n: u8| w.wrapping_sub(ONES * u64::from(n)) & !w & HIGH;
    let flagged =
        |w: u64| below(w, 0x20) | zero(w ^ (ONES * u64::from(b'"'))) | zero(w ^ (ONES * u64::from(b'\\'))) != 0;
    let word_at = |at: usize| {
        let mut word = [0u8; 8];
        if let Some(chunk) = bytes.get(at..at + 8) {
            word.copy_from_slice(chunk);
        }
        u64::from_ne_bytes(word)
    };
    if bytes.len() < 8 {
        return bytes.iter().any(|&b| b < 0x20 || b == b'"' || b == b'\\');
    }
    // Whole words, then the last eight bytes (overlapping the words before).
    (0..bytes.len() / 8).any(|i| flagged(word_at(i * 8))) || flagged(word_at(bytes.len() - 8))
}

struct PropsJson<'p, 'a>(&'p Props<'a>);

impl Serialize for PropsJson<'_, '_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().map(|(k, v)| (k.as_ref(), v.as_ref())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn events_serialize_as_the_json_they_stand_for() {
        let mut properties = props_with_capacity(4);
        let nested = json!({"n": [1.5, null]});
        properties.insert("time".into(), Cow::Owned(json!(1)));
        properties.insert(Cow::Owned("b\"x".to_owned()), Cow::Borrowed(&nested));
        properties.insert("time".into(), Cow::Owned(json!(2)));
        let event = RecordData::Event {
            name: Cow::Owned(json!("Signed Up")),
            properties,
        };
        let text = serde_json::to_string(&event).unwrap();
        assert_eq!(
            text,
            r#"{"event":"Signed Up","properties":{"time":2,"b\"x":{"n":[1.5,null]}}}"#
        );
        assert_eq!(serde_json::to_string(&event.to_value()).unwrap(), text);
        assert_eq!(&*encode(&event), text);
        assert_eq!(event.properties().map(|p| p.len()), Some(2));
        assert_eq!(event, RecordData::Json(event.to_value()));
    }

    #[test]
    fn encoding_keeps_no_leftovers_between_records_large_or_small() {
        let big = RecordData::Json(json!({"event": "x".repeat(KEPT_BUFFER_BYTES + 10)}));
        let small = RecordData::Json(json!({"event": "y"}));
        for data in [&small, &big, &small, &big] {
            assert_eq!(&*encode(data), serde_json::to_string(data).unwrap());
        }
        BUFFER.with(|cell| assert!(cell.borrow().capacity() <= KEPT_BUFFER_BYTES));
    }

    proptest::proptest! {
        /// The word-at-a-time check finds what a byte-at-a-time check finds.
        #[test]
        fn escape_check_is_exact(bytes in proptest::collection::vec(
            proptest::prop_oneof![8 => 0x23u8..=0x5B, 8 => 0x5Du8..=0xFF, 1 => proptest::prelude::any::<u8>()],
            0..40,
        )) {
            let expected = bytes.iter().any(|&b| b < 0x20 || b == b'"' || b == b'\\');
            proptest::prop_assert_eq!(needs_escape(&bytes), expected);
        }

        /// Events are written exactly as serde_json writes them, whatever
        /// their keys and strings hold.
        #[test]
        fn events_are_written_as_serde_json_writes_them(
            name in proptest::prelude::any::<String>(),
            members in proptest::collection::vec((proptest::prelude::any::<String>(), "[a-z\"\\\\\u{0}-\u{1f}\u{7f}-\u{ff}é/ ]{0,40}", proptest::prelude::any::<i32>()), 0..8),
        ) {
            let nested = json!({"k\n": ["\u{1}", 1.5, null, {"q\"": true}]});
            let mut properties = props_with_capacity(members.len());
            for (key, text, n) in &members {
                properties.insert(Cow::Borrowed(key.as_str()), Cow::Owned(Value::String(text.clone())));
                properties.insert(Cow::Owned(format!("{key}#")), Cow::Owned(json!(n)));
            }
            properties.insert("nested".into(), Cow::Borrowed(&nested));
            let event = RecordData::Event { name: Cow::Owned(Value::String(name)), properties };
            proptest::prop_assert_eq!(&*encode(&event), serde_json::to_string(&event).unwrap());
            proptest::prop_assert_eq!(&*encode(&event), serde_json::to_string(&event.to_value()).unwrap());
        }
    }
}
