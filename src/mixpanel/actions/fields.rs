//! The field schemas of the six actions and their default mappings (the mappings
//! the presets use), as the reference defines them.

use std::sync::LazyLock;

use serde_json::Value;

use crate::mapping::schema::{Field, FieldType as T};

const UTM: &[Field] = &[
    Field::new("utm_source", "UTM Source", T::String),
    Field::new("utm_medium", "UTM Medium", T::String),
    Field::new("utm_campaign", "UTM Campaign", T::String),
    Field::new("utm_term", "UTM Term", T::String),
    Field::new("utm_content", "UTM Content", T::String),
];

const USER_AGENT_DATA: &[Field] = &[
    Field::new("mobile", "Mobile", T::Boolean),
    Field::new("platform", "Platform", T::String),
    Field::new("architecture", "Architecture", T::String),
    Field::new("bitness", "Bitness", T::String),
    Field::new("model", "Model", T::String),
    Field::new("platformVersion", "PlatformVersion", T::String),
    Field::new("uaFullVersion", "uaFullVersion", T::String),
    Field::new("wow64", "wow64", T::Boolean),
];

const PRODUCT: &[Field] = &[
    Field::new("product_id", "Product Id", T::String),
    Field::new("sku", "SKU", T::String),
    Field::new("category", "Category", T::String),
    Field::new("name", "Name", T::String),
    Field::new("brand", "Brand", T::String),
    Field::new("variant", "Variant", T::String),
    Field::new("price", "Price", T::Number),
    Field::new("quantity", "Quantity", T::Integer),
    Field::new("coupon", "Coupon", T::String),
    Field::new("position", "position", T::Number),
    Field::new("url", "url", T::String),
    Field::new("image_url", "Image url", T::String),
];

macro_rules! event_fields {
    ([$($before:expr),*], [$($after:expr),*]) => {
        &[
            $($before,)*
            Field::new("event", "Event Name", T::String).required(),
            Field::new("distinct_id", "Distinct ID", T::String),
            Field::new("anonymous_id", "Anonymous ID", T::String),
            Field::new("user_id", "User ID", T::String),
            Field::new("group_id", "Group ID", T::String),
            Field::new("insert_id", "Insert ID", T::String),
            Field::new("time", "Timestamp", T::Datetime),
            Field::new("app_name", "App Name", T::String),
            Field::new("app_namespace", "App Namespace", T::String),
            Field::new("app_build", "App Build", T::String),
            Field::new("app_version", "App Version", T::String),
            Field::new("os_name", "OS Name", T::String),
            Field::new("os_version", "OS Version", T::String),
            Field::new("device_id", "Device ID", T::String),
            Field::new("device_type", "Device Type", T::String),
            Field::new("device_name", "Device Name", T::String),
            Field::new("device_manufacturer", "Device Manufacturer", T::String),
            Field::new("device_model", "Device Model", T::String),
            Field::new("bluetooth", "Bluetooth Enabled", T::Boolean),
            Field::new("carrier", "Carrier", T::String),
            Field::new("cellular", "Cellular Enabled", T::Boolean),
            Field::new("wifi", "Wifi", T::Boolean),
            Field::new("country", "Country", T::String),
            Field::new("region", "Region", T::String),
            Field::new("language", "Language", T::String),
            Field::new("library_name", "Library Name", T::String),
            Field::new("library_version", "Library Version", T::String),
            Field::new("ip", "IP Address", T::String),
            Field::new("idfa", "Identifier For Advertiser (IDFA)", T::String),
            Field::new("url", "URL", T::String),
            Field::new("screen_width", "Screen width", T::Number),
            Field::new("screen_height", "Screen height", T::Number),
            Field::new("screen_density", "Screen density", T::Number),
            Field::new("referrer", "Referrer", T::String),
            Field::new("userAgent", "User Agent", T::String),
            Field::new("advertising_id", "Advertising ID", T::String),
            Field::new("ad_tracking_enabled", "Ad Tracking Enabled", T::String),
            Field::new("timezone", "Timezone", T::String),
            Field::new("app_platform", "App Platform", T::String),
            Field::new("name", "Name", T::String),
            Field::new("event_properties", "Event Properties", T::Object),
            Field::new("context", "Event context", T::Object),
            Field::new("utm_properties", "UTM Properties", T::Object).with_properties(UTM),
            Field::new("userAgentData", "User Agent Data", T::Object).with_properties(USER_AGENT_DATA),
            Field::new("enable_batching", "Batch Data to Mixpanel", T::Boolean),
            Field::new("batch_size", "Batch Size", T::Number),
            $($after,)*
        ]
    };
}

pub const TRACK_EVENT: &[Field] = event_fields!([], []);

/// The reference lists the flag first and the products after the event fields;
/// the order decides the order of joined validation messages.
pub const TRACK_PURCHASE: &[Field] = event_fields!(
    [Field::new(
        "generatePurchaseEventPerProduct",
        "Generate Purchase Event Per Product",
        T::Boolean
    )],
    [Field::new("products", "Products", T::Object)
        .multiple()
        .with_open_properties(PRODUCT)]
);

pub const IDENTIFY_USER: &[Field] = &[
    Field::new("ip", "IP Address", T::String),
    Field::new("user_id", "User ID", T::String).allow_null(),
    Field::new("anonymous_id", "Anonymous ID", T::String).allow_null(),
    Field::new("traits", "User Properties", T::Object),
];

pub const GROUP_IDENTIFY_USER: &[Field] = &[
    Field::new("group_key", "Group Key", T::String),
    Field::new("group_id", "Group ID", T::String).required(),
    Field::new("traits", "Group Properties", T::Object),
];

pub const ALIAS: &[Field] = &[
    Field::new("alias", "Alias", T::String),
    Field::new("distinct_id", "Distinct ID", T::String),
];

pub const INCREMENT_PROPERTIES: &[Field] = &[
    Field::new("ip", "IP Address", T::String),
    Field::new("user_id", "User ID", T::String).allow_null(),
    Field::new("anonymous_id", "Anonymous ID", T::String).allow_null(),
    Field::new("increment", "Increment Numerical Properties", T::Object).required(),
];

const EVENT_DEFAULTS: &str = r#"{
  "event": {"@path": "$.event"},
  "distinct_id": {"@if": {"exists": {"@path": "$.userId"}, "then": {"@path": "$.userId"}, "else": {"@path": "$.anonymousId"}}},
  "anonymous_id": {"@path": "$.anonymousId"},
  "user_id": {"@path": "$.userId"},
  "group_id": {"@path": "$.context.groupId"},
  "insert_id": {"@path": "$.messageId"},
  "time": {"@path": "$.timestamp"},
  "app_name": {"@path": "$.context.app.name"},
  "app_namespace": {"@path": "$.context.app.namespace"},
  "app_build": {"@path": "$.context.app.build"},
  "app_version": {"@path": "$.context.app.version"},
  "os_name": {"@path": "$.context.os.name"},
  "os_version": {"@path": "$.context.os.version"},
  "device_id": {"@path": "$.context.device.id"},
  "device_type": {"@path": "$.context.device.type"},
  "device_name": {"@path": "$.context.device.name"},
  "device_manufacturer": {"@path": "$.context.device.manufacturer"},
  "device_model": {"@path": "$.context.device.model"},
  "bluetooth": {"@path": "$.context.network.bluetooth"},
  "carrier": {"@path": "$.context.network.carrier"},
  "cellular": {"@path": "$.context.network.cellular"},
  "wifi": {"@path": "$.context.network.wifi"},
  "country": {"@path": "$.context.location.country"},
  "region": {"@path": "$.context.location.region"},
  "language": {"@path": "$.context.locale"},
  "library_name": {"@path": "$.context.library.name"},
  "library_version": {"@path": "$.context.library.version"},
  "ip": {"@path": "$.context.ip"},
  "idfa": {"@if": {"exists": {"@path": "$.context.device.advertisingId"}, "then": {"@path": "$.context.device.advertisingId"}, "else": {"@path": "$.context.device.idfa"}}},
  "url": {"@path": "$.context.page.url"},
  "screen_width": {"@path": "$.context.screen.width"},
  "screen_height": {"@path": "$.context.screen.height"},
  "screen_density": {"@path": "$.context.screen.density"},
  "referrer": {"@path": "$.context.page.referrer"},
  "userAgent": {"@path": "$.context.userAgent"},
  "advertising_id": {"@path": "$.context.device.advertisingId"},
  "ad_tracking_enabled": {"@path": "$.context.device.adTrackingEnabled"},
  "timezone": {"@path": "$.context.timezone"},
  "app_platform": {"@path": "$.context.app.platform"},
  "name": {"@if": {"exists": {"@path": "$.event"}, "then": {"@path": "$.event"}, "else": {"@path": "$.name"}}},
  "event_properties": {"@path": "$.properties"},
  "context": {"@path": "$.context"},
  "utm_properties": {
    "utm_source": {"@path": "$.context.campaign.source"},
    "utm_medium": {"@path": "$.context.campaign.medium"},
    "utm_campaign": {"@path": "$.context.campaign.name"},
    "utm_term": {"@path": "$.context.campaign.term"},
    "utm_content": {"@path": "$.context.campaign.content"}
  },
  "enable_batching": true,
  "batch_size": 1000,
  "userAgentData": {
    "mobile": {"@path": "$.context.userAgentData.mobile"},
    "platform": {"@path": "$.context.userAgentData.platform"},
    "architecture": {"@path": "$.context.userAgentData.architecture"},
    "bitness": {"@path": "$.context.userAgentData.bitness"},
    "model": {"@path": "$.context.userAgentData.model"},
    "platformVersion": {"@path": "$.context.userAgentData.platformVersion"},
    "uaFullVersion": {"@path": "$.context.userAgentData.uaFullVersion"},
    "wow64": {"@path": "$.context.userAgentData.wow64"}
  }
}"#;

const PURCHASE_EXTRA_DEFAULTS: &str = r#"{
  "generatePurchaseEventPerProduct": true,
  "products": {"@arrayPath": ["$.properties.products", {
    "product_id": {"@path": "product_id"}, "sku": {"@path": "sku"}, "category": {"@path": "category"},
    "name": {"@path": "name"}, "brand": {"@path": "brand"}, "variant": {"@path": "variant"},
    "price": {"@path": "price"}, "quantity": {"@path": "quantity"}, "coupon": {"@path": "coupon"},
    "position": {"@path": "position"}, "url": {"@path": "url"}, "image_url": {"@path": "image_url"}
  }]}
}"#;

const IDENTIFY_DEFAULTS: &str = r#"{
  "ip": {"@path": "$.context.ip"},
  "user_id": {"@path": "$.userId"},
  "anonymous_id": {"@path": "$.anonymousId"},
  "traits": {"@path": "$.traits"}
}"#;

const GROUP_DEFAULTS: &str = r#"{
  "group_id": {"@path": "$.groupId"},
  "traits": {"@path": "$.traits"}
}"#;

const ALIAS_DEFAULTS: &str = r#"{
  "alias": {"@if": {"exists": {"@path": "$.userId"}, "then": {"@path": "$.userId"}, "else": {"@path": "$.anonymousId"}}},
  "distinct_id": {"@path": "$.previousId"}
}"#;

const INCREMENT_DEFAULTS: &str = r#"{
  "ip": {"@path": "$.context.ip"},
  "user_id": {"@path": "$.userId"},
  "anonymous_id": {"@path": "$.anonymousId"},
  "increment": {"@path": "$.properties.increment"}
}"#;

fn parse(text: &str) -> Value {
    // The texts above are constants of this file, checked by a unit test.
    serde_json::from_str(text).unwrap_or(Value::Null)
}

fn merged(base: &str, extra: &str) -> Value {
    let mut out = parse(base);
    if let (Value::Object(out), Value::Object(extra)) = (&mut out, parse(extra)) {
        out.extend(extra);
    }
    out
}

pub static TRACK_EVENT_DEFAULTS: LazyLock<Value> = LazyLock::new(|| parse(EVENT_DEFAULTS));
pub static TRACK_PURCHASE_DEFAULTS: LazyLock<Value> = LazyLock::new(|| merged(EVENT_DEFAULTS, PURCHASE_EXTRA_DEFAULTS));
pub static IDENTIFY_USER_DEFAULTS: LazyLock<Value> = LazyLock::new(|| parse(IDENTIFY_DEFAULTS));
pub static GROUP_IDENTIFY_USER_DEFAULTS: LazyLock<Value> = LazyLock::new(|| parse(GROUP_DEFAULTS));
pub static ALIAS_DEFAULTS_MAPPING: LazyLock<Value> = LazyLock::new(|| parse(ALIAS_DEFAULTS));
pub static INCREMENT_PROPERTIES_DEFAULTS: LazyLock<Value> = LazyLock::new(|| parse(INCREMENT_DEFAULTS));

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_mappings_parse_and_name_only_fields() {
        let cases: [(&Value, &[Field]); 6] = [
            (&TRACK_EVENT_DEFAULTS, TRACK_EVENT),
            (&TRACK_PURCHASE_DEFAULTS, TRACK_PURCHASE),
            (&IDENTIFY_USER_DEFAULTS, IDENTIFY_USER),
            (&GROUP_IDENTIFY_USER_DEFAULTS, GROUP_IDENTIFY_USER),
            (&ALIAS_DEFAULTS_MAPPING, ALIAS),
            (&INCREMENT_PROPERTIES_DEFAULTS, INCREMENT_PROPERTIES),
        ];
        for (mapping, fields) in cases {
            let map = mapping.as_object().expect("default mapping is an object");
            assert!(!map.is_empty());
            for key in map.keys() {
                assert!(fields.iter().any(|f| f.key == key), "{key} is not a field");
            }
            crate::mapping::kit::validate(mapping).expect("default mapping is valid");
        }
    }
}
