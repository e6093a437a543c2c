//! `POST /agents/:id/message`: a follow-up prompt into the agent's existing session.

use std::sync::Arc;

use shared_types::{ProcessStatus, SendMessageRequest};

use super::Supervisor;
use crate::error::{Error, Result};
use crate::kilo::config::AGENT_NAME;

impl Supervisor {
    /// Sends `prompt` as a new turn of the agent's session (the history is kept). Only a
    /// running agent takes messages: a starting one gets its first prompt from the start, and a
    /// stopped one has no session.
    pub async fn message(
        self: &Arc<Self>,
        agent_id: &str,
        request: SendMessageRequest,
    ) -> Result<()> {
        request.validate().map_err(Error::invalid)?;
        let agent = self.agent(agent_id)?;
        let (status, spec) = {
            let s = agent.lock();
            (s.status, s.spec.clone())
        };
        let live = self.registry.live_session(&agent);
        let (Some(live), ProcessStatus::Running) = (live, status) else {
            return Err(Error::Conflict(format!(
                "agent {agent_id} is {} and cannot take messages",
                status.as_str()
            )));
        };
        live.server
            .client
            .prompt_async(
                &live.session,
                &live.workdir,
                AGENT_NAME,
                &request.prompt,
                Some(&spec.system_prompt),
            )
            .await
            .map_err(|e| Error::Agent(e.to_string()))?;
        agent.touch();
        Ok(())
    }
}
