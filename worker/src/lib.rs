//! The Gastown Worker: the HTTP API of towns and rigs, and its Durable Objects (RigDO, TownDO,
//! AgentIdentityDO, TownContainer).
//!
//! Everything but [`runtime`] is plain Rust that builds natively, so `cargo test` covers the
//! logic (routing, auth, validation, JWT, SQL helpers, the objects' logic over [`db::Db`]).
//! [`runtime`] binds it to workers-rs and only exists in the wasm32 build.
//!
//! Request flow: `runtime::entry` -> [`routes::find`] (the endpoint, from its resource
//! module's `ROUTES`) -> [`auth::authorize`] -> the endpoint's plan ([`api::Plan`]) -> a
//! Durable Object call through [`rpc`] -> the object's logic ([`rig`], [`town`],
//! [`identity`]) on its SQLite storage -> the reply envelope ([`error`]).

pub mod agent_events;
pub mod api;
pub mod auth;
pub mod body;
pub mod container;
pub mod dashboard;
pub mod db;
pub mod effects;
pub mod error;
pub mod escalations;
pub mod forge;
pub mod idempotency;
pub mod identity;
pub mod json;
pub mod jwt;
pub mod mayor;
pub mod model;
#[cfg(test)]
pub mod native_db;
#[cfg(test)]
pub mod native_world;
pub mod prompts;
pub mod query;
pub mod refinery;
pub mod requests;
pub mod rig;
pub mod routes;
pub mod rpc;
pub mod scheduler;
pub mod settings;
pub mod shards;
pub mod spending;
pub mod time;
pub mod town;
pub mod usage;

#[cfg(target_arch = "wasm32")]
mod runtime;

pub use shared_types;
