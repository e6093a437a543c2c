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
        let (status, attachment, workdir, spec) = {
            let s = agent.lock();
            (s.status, s.attachment.clone(), s.workdir.clone(), s.spec.clone())
        };
        let (Some(attachment), Some(workdir), ProcessStatus::Running) =
            (attachment, workdir, status)
        else {
            return Err(Error::Conflict(format!(
                "agent {agent_id} is {} and cannot take messages",
                status.as_str()
            )));
        };
        let server = self
            .server_by_id(attachment.server_id)
            .ok_or_else(|| Error::Conflict(format!("agent {agent_id} has no Kilo process")))?;
        server
            .client
            .prompt_async(
                &attachment.session_id,
                &workdir,
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
