//! What a model call cost: the usage Kilo reports on each finished assistant message, as the
//! control server sends it to the Worker (an agent event of kind `usage`) and the Worker sums it.

use serde::{Deserialize, Serialize};

/// One finished assistant message's usage. `messageId` names it, so a report sent twice (a
/// resent event batch, a restart) counts once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageReport {
    pub message_id: String,
    /// `provider/model`.
    pub model: String,
    /// The bead the run worked, and the run (`dispatchId`), when the agent was started for one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bead_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dispatch_id: Option<String>,
    /// The bead's convoy, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub convoy_id: Option<String>,
    #[serde(flatten)]
    pub tokens: Tokens,
    /// What the provider charged, in USD; `None` when it did not say (never a guessed 0).
    pub cost_usd: Option<f64>,
}

/// Token counts of one message or of a sum.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Tokens {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub reasoning_tokens: u64,
    pub cache_read_tokens: u64,
    pub cache_write_tokens: u64,
}

impl Tokens {
    pub fn total(&self) -> u64 {
        self.input_tokens
            .saturating_add(self.output_tokens)
            .saturating_add(self.reasoning_tokens)
            .saturating_add(self.cache_read_tokens)
            .saturating_add(self.cache_write_tokens)
    }
}
