//! The mayor: one long-lived coordinator agent per town that people talk to. It turns requests
//! into beads and convoys on the town's rigs, hears of escalations and landed convoys, answers
//! escalations, and reports back.
//!
//! The mayor lives in its town's TownDO (state, transcript, threads, turn limits) and runs as
//! agent [`MAYOR_AGENT_ID`] in the town's container, without a checkout, with its own tool set.
//! - `routes.rs`: its routes, their bodies and queries, validated before any object is called, and
//!   what each route asks of the TownDO ([`MayorOp`]).
//! - `store.rs`: the TownDO's mayor tables: the transcript (people's messages, the mayor's
//!   replies, the town's notices), open threads, the current turn's counters.
//! - `status.rs`: the town at a glance, for `gt_town_status`.
//! - `prompt.rs`: what the mayor is sent: a delivery of pending messages to a running mayor, or
//!   a start (resume) with its thread, and its start request and token.
//! - `ops.rs`: the TownDO's mayor ops over [`crate::effects::Effects`]: it delivers pending
//!   messages (a message to the running mayor, or a start with the thread), retries from its
//!   alarm, and makes the mayor's tool calls on the rigs' RigDOs.

pub mod ops;
pub mod prompt;
pub mod routes;
pub mod status;
pub mod store;

pub use routes::{MayorOp, Notice};
pub use shared_types::MAYOR_AGENT_ID;
pub use status::{town_status, AgentSummary, BeadSummary};

/// The mayor's limits per turn (one delivery of messages is one turn), from Worker vars.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TurnLimits {
    /// `MAYOR_MAX_BEADS_PER_TURN`: beads the mayor may create in one turn.
    pub beads: i64,
    /// `MAYOR_MAX_SLINGS_PER_TURN`: beads it may sling to polecats in one turn.
    pub slings: i64,
}

impl TurnLimits {
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Self {
        let num = |k: &str, default: i64| crate::settings::positive(&lookup, k, default);
        Self {
            beads: num("MAYOR_MAX_BEADS_PER_TURN", 12),
            slings: num("MAYOR_MAX_SLINGS_PER_TURN", 12),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_default_and_ignore_nonsense() {
        assert_eq!(TurnLimits::from_lookup(|_| None), TurnLimits { beads: 12, slings: 12 });
        let l = TurnLimits::from_lookup(|k| match k {
            "MAYOR_MAX_BEADS_PER_TURN" => Some("3".into()),
            _ => Some("-1".into()),
        });
        assert_eq!(l, TurnLimits { beads: 3, slings: 12 });
    }
}
