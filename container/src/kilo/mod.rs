//! Driving the Kilo CLI in server mode: its configuration ([`config`]), its HTTP API
//! ([`client`]), its process ([`server`]) and its event stream ([`events`]).

pub mod client;
pub mod config;
pub mod events;
pub mod server;
