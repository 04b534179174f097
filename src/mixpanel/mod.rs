//! Everything Mixpanel-specific: the destination's settings, the six actions that
//! turn validated payloads into Mixpanel records ([`actions`], pure), and the wire
//! format of Mixpanel's ingestion API ([`api`]: hosts, endpoints, auth, bodies).

pub mod actions;
pub mod api;
pub mod client;
pub mod credentials;
pub mod limits;
pub mod settings;

pub use settings::{ImportAuth, Region, Settings, SettingsError};
