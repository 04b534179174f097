//! trackEvent and trackPurchase: the Mixpanel event properties built from the
//! shared event fields, in the reference's order.

use std::borrow::Cow;
use std::collections::HashMap;
use std::collections::HashSet;
use std::sync::LazyLock;

use serde_json::Value;

use super::record::{props_with_capacity, Props, RecordData};
use super::{truthy, useragent, Context};
use crate::mapping::schema::Payload;
use crate::mapping::time::{to_epoch_ms_number, to_epoch_ms_str};
use crate::segment::member;

/// Event property keys that a user's `event_properties` may not override.
const PROTECTED_KEYS: [&str; 7] = [
    "time",
    "id",
    "$anon_id",
    "distinct_id",
    "$group_id",
    "$insert_id",
    "$user_id",
];

/// Order-level keys that product events do not inherit.
const ORDER_ONLY_KEYS: [&str; 11] = [
    "affiliation",
    "subtotal",
    "total",
    "revenue",
    "shipping",
    "tax",
    "discount",
    "coupon",
    "currency",
    "order_number",
    "products",
];

/// Longest valid Mixpanel `$insert_id`.
pub const MAX_INSERT_ID_LEN: usize = 36;

/// A fresh random insert id of `[0-9a-f]`, short enough that `prefix_len` more
/// characters still fit Mixpanel's 36-character limit.
pub fn random_insert_id(prefix_len: usize) -> String {
    let mut id = uuid::Uuid::new_v4().simple().to_string();
    let len = MAX_INSERT_ID_LEN.saturating_sub(prefix_len).clamp(8, id.len());
    id.truncate(len);
    id
}

/// Whether Mixpanel accepts `id` as a `$insert_id`: 1 to 36 characters of
/// `[A-Za-z0-9-]`.
pub fn valid_insert_id(id: &str) -> bool {
    (1..=MAX_INSERT_ID_LEN).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// With `repair_insert_ids`, the `$insert_id` actually sent: a valid one
/// unchanged; any other (also `""` and non-strings) a UUID v5 (OID namespace)
/// of its text, so a retry or a replay of the event gets the same id.
/// Mixpanel deduplicates on event, time, `distinct_id` and `$insert_id`
/// together, so equal ids of different events are harmless.
fn sent_insert_id<'a>(id: Cow<'a, Value>, ctx: &Context<'_>) -> Cow<'a, Value> {
    if !ctx.settings.repair_insert_ids {
        return id;
    }
    if let Value::String(s) = &*id {
        if valid_insert_id(s) {
            return id;
        }
    }
    let text = match &*id {
        Value::String(s) => s.clone(),
        other => crate::mixpanel::actions::js_string(other),
    };
    Cow::Owned(Value::String(
        uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, text.as_bytes())
            .hyphenated()
            .to_string(),
    ))
}

/// The event time in ms: the `time` field when it is set and parses, else now.
fn event_time(payload: &Payload, now_ms: i64) -> i64 {
    match payload.get("time") {
        Some(Value::Number(n)) => match n.as_f64() {
            Some(f) if f != 0.0 => to_epoch_ms_number(f).unwrap_or(now_ms),
            _ => now_ms,
        },
        Some(Value::String(s)) if !s.is_empty() => to_epoch_ms_str(s).unwrap_or(now_ms),
        _ => now_ms,
    }
}

fn text<'a>(s: &str) -> Cow<'a, Value> {
    Cow::Owned(Value::String(s.to_owned()))
}

/// Another handle on a payload value: the same borrow, or a copy of a value
/// the payload owns (one it coerced).
fn share<'a>(value: &Cow<'a, Value>) -> Cow<'a, Value> {
    match value {
        Cow::Borrowed(v) => Cow::Borrowed(*v),
        Cow::Owned(v) => Cow::Owned(v.clone()),
    }
}

/// The member `key` of a payload value that is an object.
fn member_of<'a>(value: Option<&Cow<'a, Value>>, key: &str) -> Option<Cow<'a, Value>> {
    match value? {
        Cow::Borrowed(v) => v.as_object().and_then(|m| member(m, key)).map(Cow::Borrowed),
        Cow::Owned(v) => v.as_object().and_then(|m| member(m, key)).cloned().map(Cow::Owned),
    }
}

/// Every key [`event_properties`] sets itself; each is set at most once.
const EVENT_KEYS: [&str; 55] = [
    "time",
    "ip",
    "id",
    "$anon_id",
    "distinct_id",
    "$app_build_number",
    "$app_version_string",
    "$app_namespace",
    "$app_name",
    "$browser",
    "$browser_version",
    "$bluetooth_enabled",
    "$cellular_enabled",
    "$carrier",
    "$current_url",
    "$device",
    "$device_id",
    "$device_type",
    "$device_name",
    "$group_id",
    "$identified_id",
    "$insert_id",
    "$ios_ifa",
    "$lib_version",
    "$locale",
    "$manufacturer",
    "$model",
    "$os",
    "$os_version",
    "$referrer",
    "$screen_height",
    "$screen_width",
    "$screen_density",
    "$source",
    "$user_id",
    "$wifi_enabled",
    "mp_country_code",
    "mp_lib",
    "segment_source_name",
    "utm_campaign",
    "utm_content",
    "utm_medium",
    "utm_source",
    "utm_term",
    "advertising_id",
    "ad_tracking_enabled",
    "timezone",
    "app_platform",
    "event_original_name",
    "$mobile",
    "$platform",
    "$bitness",
    "$platformVersion",
    "$uaFullVersion",
    "$wow64",
];

/// [`EVENT_KEYS`] as a set (a fixed seed: the keys are constants).
static EVENT_KEY_SET: LazyLock<HashSet<&'static str, foldhash::fast::FixedState>> =
    LazyLock::new(|| EVENT_KEYS.into_iter().collect());

/// Appends one of [`EVENT_KEYS`]: [`event_properties`] sets each once, before
/// the user's properties, so it is new.
fn push_static<'a>(props: &mut Props<'a>, key: &'static str, value: Cow<'a, Value>) {
    debug_assert!(EVENT_KEYS.contains(&key), "{key} is not listed in EVENT_KEYS");
    props.push_new(Cow::Borrowed(key), value);
}

/// Adds one of the user's `event_properties`. Their keys are those of one
/// JSON object (each once), so only one of [`EVENT_KEYS`] can be present
/// already: it is replaced in place, any other key appended.
fn push_user<'a>(props: &mut Props<'a>, key: Cow<'a, str>, value: Cow<'a, Value>) {
    if EVENT_KEY_SET.contains(key.as_ref()) {
        props.insert(key, value);
    } else {
        props.push_new(key, value);
    }
}

/// Inserts `key` only when the value is defined (JSON.stringify drops undefined).
fn put<'a>(props: &mut Props<'a>, key: &'static str, value: Option<&Cow<'a, Value>>) {
    if let Some(v) = value {
        push_static(props, key, share(v));
    }
}

/// The values of `$source`: constants, borrowed by every event.
static SOURCE_SEGMENT: LazyLock<Value> = LazyLock::new(|| Value::String("segment".into()));
static SOURCE_ITERABLE: LazyLock<Value> = LazyLock::new(|| Value::String("Iterable".into()));

/// Declares [`EventFields`]: the payload fields the event properties read,
/// found in one pass over the payload instead of one search per property.
macro_rules! event_fields {
    ($($name:ident: $key:literal,)*) => {
        #[derive(Default)]
        struct EventFields<'p, 'a> {
            $($name: Option<&'p Cow<'a, Value>>,)*
        }

        impl<'p, 'a> EventFields<'p, 'a> {
            fn of(payload: &'p Payload<'a>) -> EventFields<'p, 'a> {
                let mut fields = EventFields::default();
                for (key, value) in payload.iter() {
                    let slot = match key {
                        $($key => &mut fields.$name,)*
                        _ => continue,
                    };
                    *slot = Some(value);
                }
                fields
            }
        }
    };
}

event_fields! {
    ip: "ip",
    distinct_id: "distinct_id",
    anonymous_id: "anonymous_id",
    app_build: "app_build",
    app_version: "app_version",
    app_namespace: "app_namespace",
    app_name: "app_name",
    user_agent: "userAgent",
    bluetooth: "bluetooth",
    cellular: "cellular",
    carrier: "carrier",
    url: "url",
    device_name: "device_name",
    device_type: "device_type",
    group_id: "group_id",
    user_id: "user_id",
    idfa: "idfa",
    library_version: "library_version",
    language: "language",
    device_manufacturer: "device_manufacturer",
    device_model: "device_model",
    os_name: "os_name",
    os_version: "os_version",
    referrer: "referrer",
    screen_height: "screen_height",
    screen_width: "screen_width",
    screen_density: "screen_density",
    context: "context",
    wifi: "wifi",
    country: "country",
    library_name: "library_name",
    utm_properties: "utm_properties",
    advertising_id: "advertising_id",
    ad_tracking_enabled: "ad_tracking_enabled",
    timezone: "timezone",
    app_platform: "app_platform",
    name: "name",
    user_agent_data: "userAgentData",
}

/// The properties of the Mixpanel event (SPEC section 3), with `time` = `time_ms`
/// and `$insert_id` = `insert_id`.
fn event_properties<'a>(
    payload: &Payload<'a>,
    user_properties: Option<Cow<'a, Value>>,
    ctx: &Context<'_>,
    time_ms: i64,
    insert_id: Cow<'a, Value>,
) -> Props<'a> {
    let e = EventFields::of(payload);
    let mut p = props_with_capacity(64);
    push_static(&mut p, "time", Cow::Owned(Value::from(time_ms)));
    put(&mut p, "ip", e.ip);
    put(&mut p, "id", e.distinct_id);
    put(&mut p, "$anon_id", e.anonymous_id);
    push_static(
        &mut p,
        "distinct_id",
        e.distinct_id.map(share).unwrap_or_else(|| text("")),
    );
    put(&mut p, "$app_build_number", e.app_build);
    put(&mut p, "$app_version_string", e.app_version);
    put(&mut p, "$app_namespace", e.app_namespace);
    put(&mut p, "$app_name", e.app_name);
    if let Some(Value::String(ua)) = e.user_agent.map(|v| &**v).filter(|v| truthy(Some(v))) {
        let browser = useragent::browser(ua);
        push_static(&mut p, "$browser", text(browser));
        if let Some(version) = useragent::browser_version(ua, browser) {
            push_static(&mut p, "$browser_version", Cow::Owned(Value::String(version)));
        }
    }
    put(&mut p, "$bluetooth_enabled", e.bluetooth);
    put(&mut p, "$cellular_enabled", e.cellular);
    put(&mut p, "$carrier", e.carrier);
    put(&mut p, "$current_url", e.url);
    put(&mut p, "$device", e.device_name);
    put(&mut p, "$device_id", e.anonymous_id);
    put(&mut p, "$device_type", e.device_type);
    put(&mut p, "$device_name", e.device_name);
    put(&mut p, "$group_id", e.group_id);
    put(&mut p, "$identified_id", e.user_id);
    push_static(&mut p, "$insert_id", insert_id);
    put(&mut p, "$ios_ifa", e.idfa);
    put(&mut p, "$lib_version", e.library_version);
    put(&mut p, "$locale", e.language);
    put(&mut p, "$manufacturer", e.device_manufacturer);
    put(&mut p, "$model", e.device_model);
    put(&mut p, "$os", e.os_name);
    put(&mut p, "$os_version", e.os_version);
    put(&mut p, "$referrer", e.referrer);
    put(&mut p, "$screen_height", e.screen_height);
    put(&mut p, "$screen_width", e.screen_width);
    put(&mut p, "$screen_density", e.screen_density);
    let iterable = e
        .context
        .and_then(|c| c.get("integration"))
        .and_then(|i| i.get("name"))
        .and_then(Value::as_str)
        == Some("Iterable");
    let source: &'static Value = if iterable { &SOURCE_ITERABLE } else { &SOURCE_SEGMENT };
    push_static(&mut p, "$source", Cow::Borrowed(source));
    put(&mut p, "$user_id", e.user_id);
    put(&mut p, "$wifi_enabled", e.wifi);
    put(&mut p, "mp_country_code", e.country);
    match e.library_name.map(|v| &**v) {
        Some(Value::String(name)) if !name.is_empty() => {
            push_static(
                &mut p,
                "mp_lib",
                Cow::Owned(Value::String(format!("Segment Actions: {name}"))),
            );
        }
        Some(_) => put(&mut p, "mp_lib", e.library_name),
        None => {}
    }
    if let Some(name) = &ctx.settings.source_name {
        push_static(&mut p, "segment_source_name", text(name));
    }
    let utm = e.utm_properties.filter(|u| u.is_object());
    for key in ["utm_campaign", "utm_content", "utm_medium", "utm_source", "utm_term"] {
        put(&mut p, key, member_of(utm, key).as_ref());
    }
    put(&mut p, "advertising_id", e.advertising_id);
    put(&mut p, "ad_tracking_enabled", e.ad_tracking_enabled);
    put(&mut p, "timezone", e.timezone);
    put(&mut p, "app_platform", e.app_platform);
    put(&mut p, "event_original_name", e.name);
    let ua_data = e.user_agent_data.filter(|u| u.is_object());
    for (from, to) in [
        ("mobile", "$mobile"),
        ("platform", "$platform"),
        ("bitness", "$bitness"),
        ("platformVersion", "$platformVersion"),
        ("uaFullVersion", "$uaFullVersion"),
        ("wow64", "$wow64"),
    ] {
        put(&mut p, to, member_of(ua_data, from).as_ref());
    }
    match user_properties {
        Some(Cow::Owned(Value::Object(props))) => {
            for (key, value) in props {
                if !PROTECTED_KEYS.contains(&key.as_str()) {
                    push_user(&mut p, Cow::Owned(key), Cow::Owned(value));
                }
            }
        }
        Some(Cow::Borrowed(Value::Object(props))) => {
            for (key, value) in props {
                if !PROTECTED_KEYS.contains(&key.as_str()) {
                    push_user(&mut p, Cow::Borrowed(key.as_str()), Cow::Borrowed(value));
                }
            }
        }
        _ => {}
    }
    p
}

fn mixpanel_event<'a>(name: Cow<'a, Value>, properties: Props<'a>) -> RecordData<'a> {
    RecordData::Event { name, properties }
}

fn event_name<'a>(payload: &Payload<'a>) -> Cow<'a, Value> {
    payload.get_cow("event").map(share).unwrap_or(Cow::Owned(Value::Null))
}

/// trackEvent: one Mixpanel event.
pub(super) fn track_event<'a>(mut payload: Payload<'a>, ctx: &Context<'_>) -> RecordData<'a> {
    let time = event_time(&payload, ctx.now_ms);
    let insert_id = sent_insert_id(insert_id_or_random(&payload, 0), ctx);
    let user_properties = payload.remove("event_properties");
    mixpanel_event(
        event_name(&payload),
        event_properties(&payload, user_properties, ctx, time, insert_id),
    )
}

fn insert_id_or_random<'a>(payload: &Payload<'a>, prefix_len: usize) -> Cow<'a, Value> {
    match payload.get_cow("insert_id") {
        Some(v) if !v.is_null() => share(v),
        _ => Cow::Owned(Value::String(random_insert_id(prefix_len))),
    }
}

/// trackPurchase: the order event, then one "Product Purchased" per product when
/// `generatePurchaseEventPerProduct` is on.
pub(super) fn track_purchase<'a>(mut payload: Payload<'a>, ctx: &Context<'_>) -> Vec<RecordData<'a>> {
    let payload = &mut payload;
    let time = event_time(payload, ctx.now_ms);
    let user_properties = payload.remove("event_properties");
    let order_id = sent_insert_id(insert_id_or_random(payload, 0), ctx);
    let order_props = event_properties(payload, user_properties, ctx, time, order_id);
    let per_product = truthy(payload.get("generatePurchaseEventPerProduct"));
    let products = match payload.get_cow("products") {
        Some(Cow::Borrowed(Value::Array(items))) if per_product => Products::Borrowed(items.as_slice()),
        Some(Cow::Owned(Value::Array(items))) if per_product && !items.is_empty() => match payload.remove("products") {
            Some(Cow::Owned(Value::Array(items))) => Products::Owned(items),
            _ => Products::Borrowed(&[]),
        },
        _ => Products::Borrowed(&[]),
    };
    let count = products.len();
    let mut events = Vec::with_capacity(1 + count);
    if count > 0 {
        let digits = count.saturating_sub(1).to_string().len();
        let base_id = match &*insert_id_or_random(payload, digits) {
            Value::String(s) => s.clone(),
            other => crate::mixpanel::actions::js_string(other),
        };
        // Only what the products inherit is copied (not the order's own
        // `products`), and the last product takes the copy itself.
        let mut inherited = props_with_capacity(order_props.len() + 2);
        for (k, v) in order_props
            .iter()
            .filter(|(k, _)| !ORDER_ONLY_KEYS.contains(&k.as_ref()))
        {
            inherited.push_new(k.clone(), v.clone());
        }
        // Where each inherited key is: a product's fields (each key once)
        // replace those in place, and the others are appended.
        let mut at: HashMap<&str, usize, foldhash::fast::RandomState> = order_props
            .iter()
            .map(|(k, _)| k.as_ref())
            .filter(|k| !ORDER_ONLY_KEYS.contains(k))
            .enumerate()
            .map(|(i, k)| (k, i))
            .collect();
        // `$insert_id` and `time` are set per product (the order always has
        // them: this only keeps the products whole if it did not).
        let mut position_of = |key: &'static str| match at.get(key) {
            Some(&i) => i,
            None => {
                inherited.push_new(Cow::Borrowed(key), Cow::Owned(Value::Null));
                at.insert(key, inherited.len() - 1);
                inherited.len() - 1
            }
        };
        let (insert_id_at, time_at) = (position_of("$insert_id"), position_of("time"));
        let last = count.saturating_sub(1);
        let mut product_event = |i: usize, fields: ProductFields<'a>| {
            let mut props = if i == last {
                std::mem::take(&mut inherited)
            } else {
                inherited.clone()
            };
            props.set(insert_id_at, Cow::Owned(Value::String(format!("{i}{base_id}"))));
            let offset = i64::try_from(i).unwrap_or(i64::MAX).saturating_add(1);
            props.set(time_at, Cow::Owned(Value::from(time.saturating_sub(offset))));
            let mut field = |key: Cow<'a, str>, value: Cow<'a, Value>| match at.get(key.as_ref()) {
                Some(&i) => props.set(i, value),
                None => props.push_new(key, value),
            };
            match fields {
                ProductFields::Borrowed(fields) => {
                    for (k, v) in fields {
                        field(Cow::Borrowed(k.as_str()), Cow::Borrowed(v));
                    }
                }
                ProductFields::Owned(fields) => {
                    for (k, v) in fields {
                        field(Cow::Owned(k), Cow::Owned(v));
                    }
                }
                ProductFields::None => {}
            }
            // The repair looks at the id as sent: after the index prefix, or
            // the product's own `$insert_id` (its keys override).
            if ctx.settings.repair_insert_ids {
                if let Some(id) = props.value_mut(insert_id_at) {
                    *id = sent_insert_id(std::mem::replace(id, Cow::Owned(Value::Null)), ctx);
                }
            }
            mixpanel_event(text("Product Purchased"), props)
        };
        for (i, fields) in products.into_fields().into_iter().enumerate() {
            events.push(product_event(i, fields));
        }
    }
    events.insert(0, mixpanel_event(event_name(payload), order_props));
    events
}

/// The order's products: borrowed from the event, or the payload's coerced copy
/// (taken out of it, so product fields move instead of being copied).
enum Products<'a> {
    Borrowed(&'a [Value]),
    Owned(Vec<Value>),
}

impl<'a> Products<'a> {
    fn len(&self) -> usize {
        match self {
            Products::Borrowed(items) => items.len(),
            Products::Owned(items) => items.len(),
        }
    }

    /// Each product's fields, in order.
    fn into_fields(self) -> Vec<ProductFields<'a>> {
        match self {
            Products::Borrowed(items) => items
                .iter()
                .map(|product| match product {
                    Value::Object(fields) => ProductFields::Borrowed(fields),
                    _ => ProductFields::None,
                })
                .collect(),
            Products::Owned(items) => items
                .into_iter()
                .map(|product| match product {
                    Value::Object(fields) => ProductFields::Owned(fields),
                    _ => ProductFields::None,
                })
                .collect(),
        }
    }
}

/// One product's own fields (a product that is not an object has none).
enum ProductFields<'a> {
    Borrowed(&'a serde_json::Map<String, Value>),
    Owned(serde_json::Map<String, Value>),
    None,
}
