//! What `gt_town_status` shows the mayor.

use serde::Deserialize;

use crate::model::{AgentRole, AgentStatus, BeadStatus, BeadType};

/// The fields of a bead (`model::Bead`, as the RigDO lists them) that the status shows. Only
/// these are decoded: a decoder of the whole record would be in the wasm for this alone.
#[derive(Debug, Deserialize)]
pub struct BeadSummary {
    pub id: String,
    #[serde(rename = "type")]
    pub bead_type: BeadType,
    pub status: BeadStatus,
    pub title: String,
    pub assignee_agent_id: Option<String>,
    pub convoy_id: Option<String>,
}

/// The fields of an agent (`model::Agent`) that the status shows, as [`BeadSummary`].
#[derive(Debug, Deserialize)]
pub struct AgentSummary {
    pub id: String,
    pub name: String,
    pub role: AgentRole,
    pub status: AgentStatus,
    pub current_hook_bead_id: Option<String>,
}

/// `gt_town_status`: per rig, its beads by status, its unfinished beads (newest first, at most
/// 20) and its agents.
pub fn town_status(
    rigs: &[(crate::model::RigRecord, Vec<BeadSummary>, Vec<AgentSummary>)],
) -> serde_json::Value {
    use serde_json::json;
    let rigs: Vec<_> = rigs
        .iter()
        .map(|(rig, beads, agents)| {
            let mut by_status = std::collections::BTreeMap::<&str, u32>::new();
            for b in beads {
                *by_status.entry(b.status.as_str()).or_default() += 1;
            }
            let unfinished: Vec<_> = beads
                .iter()
                .filter(|b| !matches!(b.status, BeadStatus::Closed | BeadStatus::Failed))
                .take(20)
                .map(|b| json!({ "id": b.id, "type": b.bead_type, "status": b.status, "title": b.title, "assignee_agent_id": b.assignee_agent_id, "convoy_id": b.convoy_id }))
                .collect();
            let agents: Vec<_> = agents
                .iter()
                .map(|a| json!({ "id": a.id, "name": a.name, "role": a.role, "status": a.status, "current_hook_bead_id": a.current_hook_bead_id }))
                .collect();
            json!({ "rig_id": rig.id, "name": rig.name, "beads_by_status": by_status, "unfinished_beads": unfinished, "agents": agents })
        })
        .collect();
    json!({ "rigs": rigs })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::RigRecord;
    use crate::model::{Agent, Bead};
    use serde_json::json;

    #[test]
    fn the_status_reads_the_summaries_of_full_records() {
        let bead = |id: &str, status: &str| -> Bead {
            serde_json::from_value(json!({"id": id, "type": "issue", "status": status, "title": "Fix it",
                "body": "details", "assignee_agent_id": "a1", "convoy_id": null, "molecule_id": null, "priority": "high",
                "labels": ["x"], "metadata": {"k": 1}, "created_at": "x", "updated_at": "x", "closed_at": null}))
            .expect("bead")
        };
        let agent: Agent = serde_json::from_value(json!({"id": "a1", "role": "polecat", "name": "toast", "identity": "polecat/toast@r1",
            "status": "working", "current_hook_bead_id": "b1", "last_activity_at": null, "checkpoint": {"sha": "c"}, "created_at": "x"}))
        .expect("agent");
        let beads = vec![bead("b1", "in_progress"), bead("b2", "closed")];
        // As the TownDO gets them: the RigDO's full records, decoded into the summaries.
        let beads: Vec<BeadSummary> =
            crate::json::decode(serde_json::to_value(&beads).expect("beads")).expect("summaries");
        let agents: Vec<AgentSummary> =
            crate::json::decode(serde_json::to_value([agent]).expect("agents")).expect("agents");
        let rig = RigRecord {
            id: "r1".into(),
            name: "main".into(),
            git_url: "https://example.com/r.git".into(),
            default_branch: "main".into(),
            created_at: "x".into(),
        };
        assert_eq!(
            town_status(&[(rig, beads, agents)]),
            json!({"rigs": [{
                "rig_id": "r1", "name": "main", "beads_by_status": {"closed": 1, "in_progress": 1},
                "unfinished_beads": [{"id": "b1", "type": "issue", "status": "in_progress", "title": "Fix it",
                    "assignee_agent_id": "a1", "convoy_id": null}],
                "agents": [{"id": "a1", "name": "toast", "role": "polecat", "status": "working",
                    "current_hook_bead_id": "b1"}],
            }]})
        );
    }
}
