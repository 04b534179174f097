//! mixpanel-actions: Segment-spec events in, Mixpanel requests out, exactly as
//! Segment's "Mixpanel (Actions)" destination builds them.
//!
//! The modules follow an event's path; see `ARCHITECTURE.md` for the map.
//!
//! - [`segment`]: the Segment event model and its checks.
//! - [`subscription`]: FQL triggers that decide which actions run.
//! - [`mapping`]: mapping-kit directives and the action field schemas.
//! - [`mixpanel`]: the six actions, settings, and Mixpanel's wire format.
//! - [`destination`]: one project's subscriptions and the pipeline over them.
//! - [`preview`]: what would be sent, for users and the conformance harness.
//! - [`config`]: the configuration file, validated.
//! - [`ingest`]: the HTTP API (Segment's tracking API and ours).
//! - [`delivery`]: batching, retries and outcomes of requests to Mixpanel.
//! - [`server`]: binding, serving, graceful shutdown.
//! - [`history`]: per-minute delivery counts in memory, for the console.
//!
//! The core (`segment`, `subscription`, `mapping`, `mixpanel::actions`,
//! `destination`, `preview`) is pure: no I/O, no runtime, no panic on user input.

pub mod config;
pub mod delivery;
pub mod destination;
pub mod history;
pub mod ingest;
pub mod mapping;
pub mod mixpanel;
pub mod preview;
pub mod segment;
pub mod server;
pub mod subscription;
pub mod telemetry;
