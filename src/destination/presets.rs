//! The six default subscriptions of a destination that configures none.

use std::sync::LazyLock;

use serde_json::{json, Value};

use super::Subscription;
use crate::mapping::kit::CompiledMapping;
use crate::mixpanel::actions::ActionKind;
use crate::subscription::Trigger;

/// `(name, trigger, action)` of the presets, in the reference's order.
const PRESETS: [(&str, &str, ActionKind); 6] = [
    (
        "Track Calls",
        r#"type = "track" and event != "Order Completed""#,
        ActionKind::TrackEvent,
    ),
    (
        "Order Completed Calls",
        r#"type = "track" and event = "Order Completed""#,
        ActionKind::TrackPurchase,
    ),
    ("Page Calls", r#"type = "page""#, ActionKind::TrackEvent),
    ("Screen Calls", r#"type = "screen""#, ActionKind::TrackEvent),
    ("Identify Calls", r#"type = "identify""#, ActionKind::IdentifyUser),
    ("Group Calls", r#"type = "group""#, ActionKind::GroupIdentifyUser),
];

fn preset_mapping(name: &str, action: ActionKind) -> Value {
    let mut mapping = action.default_mapping().clone();
    if matches!(name, "Page Calls" | "Screen Calls") {
        if let Value::Object(map) = &mut mapping {
            map.insert("event".into(), json!({"@template": "Viewed {{name}}"}));
        }
    }
    mapping
}

/// The preset subscriptions, compiled once: every destination on the presets
/// shares their compiled mappings.
pub fn presets() -> Vec<Subscription> {
    static COMPILED: LazyLock<Vec<Subscription>> = LazyLock::new(compile_presets);
    COMPILED.clone()
}

fn compile_presets() -> Vec<Subscription> {
    PRESETS
        .iter()
        .filter_map(|(name, subscribe, action)| {
            // The preset triggers are constants; a unit test proves they parse.
            let trigger = Trigger::parse(subscribe).ok()?;
            let mapping = CompiledMapping::compile(&preset_mapping(name, *action)).ok()?;
            Some(Subscription::new((*name).to_owned(), trigger, *action, mapping, true))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_six_presets_parse() {
        let p = presets();
        assert_eq!(p.len(), 6);
        assert_eq!(p[2].mapping.source()["event"], json!({"@template": "Viewed {{name}}"}));
        assert_eq!(p[0].mapping.source()["event"], json!({"@path": "$.event"}));
    }

    #[test]
    fn presets_route_by_type() {
        let p = presets();
        let track = json!({"type": "track", "event": "Order Completed"});
        let matched: Vec<&str> = p
            .iter()
            .filter(|s| s.trigger.matches(&track))
            .map(|s| s.name.as_str())
            .collect();
        assert_eq!(matched, vec!["Order Completed Calls"]);
        let alias = json!({"type": "alias", "previousId": "a"});
        assert!(p.iter().all(|s| !s.trigger.matches(&alias)));
    }
}
