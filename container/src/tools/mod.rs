//! The Gastown tools the agents call: their definitions ([`defs`]), the Kilo tool files made
//! from them ([`js`]) and the forwarding of a call to the Worker ([`forward`]).

pub mod defs;
pub mod forward;
pub mod js;
