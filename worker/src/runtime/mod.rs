//! The workers-rs binding (wasm32 only): the Worker's fetch entry point, the Durable Object
//! classes, and the adapters from the pure modules to the runtime (SQL, clock, ids, calls).

mod call;
mod container_do;
mod effects;
mod entry;
mod identity_do;
mod platform;
mod rig_do;
mod sql;
mod town_do;

/// Binding names in wrangler.toml.
pub const RIG_BINDING: &str = "RIG";
pub const TOWN_BINDING: &str = "TOWN";
pub const IDENTITY_BINDING: &str = "AGENT_IDENTITY";
pub const CONTAINER_BINDING: &str = "TOWN_CONTAINER";
