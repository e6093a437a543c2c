//! What `gt_town_status` shows the mayor.

/// `gt_town_status`: per rig, its beads by status, its unfinished beads (newest first, at most
/// 20) and its agents.
pub fn town_status(
    rigs: &[(crate::town::RigRecord, Vec<crate::model::Bead>, Vec<crate::model::Agent>)],
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
                .filter(|b| !matches!(b.status, crate::model::BeadStatus::Closed | crate::model::BeadStatus::Failed))
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
