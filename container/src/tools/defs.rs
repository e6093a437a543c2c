//! The Gastown tools, defined once: the eight every rig agent has ([`TOOLS`]) and the mayor's
//! ([`MAYOR_TOOLS`]). From these definitions the control server writes the Kilo tool files
//! ([`super::js`]; a process gets its role's set only) and maps each call to the Worker route it
//! forwards to ([`super::forward`]).
//!
//! Kilo makes every declared argument required, so optional arguments say so in their
//! description and an empty string means "not given".

use serde::Serialize;
use shared_types::AgentRole;

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Arg {
    pub name: &'static str,
    pub description: &'static str,
    #[serde(skip)]
    pub optional: bool,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct ToolDef {
    pub name: &'static str,
    pub description: &'static str,
    pub args: &'static [Arg],
}

const fn req(name: &'static str, description: &'static str) -> Arg {
    Arg { name, description, optional: false }
}

const fn opt(name: &'static str, description: &'static str) -> Arg {
    Arg { name, description, optional: true }
}

pub const TOOLS: &[ToolDef] = &[
    ToolDef {
        name: "gt_prime",
        description: "Load your Gastown context: who you are, the bead (work item) on your hook, \
                      undelivered mail and the rig's open beads. Call it first when you start or resume.",
        args: &[],
    },
    ToolDef {
        name: "gt_bead_status",
        description: "Read one bead (work item) of your rig: its status, title, body and assignee.",
        args: &[req("bead_id", "The bead's id.")],
    },
    ToolDef {
        name: "gt_bead_close",
        description: "Close a bead that is finished and needs no review. For your hooked work use gt_done instead.",
        args: &[req("bead_id", "The bead's id.")],
    },
    ToolDef {
        name: "gt_done",
        description: "Finish the work on your hook: pushes your branch, submits it to the review queue, unhooks \
                      the bead and makes you idle. Commit your work on the branch BEFORE calling this.",
        args: &[
            req("branch", "Your working branch (the one named in your instructions)."),
            opt("pr_url", "URL of a pull request, if you opened one; empty string if none."),
            opt("summary", "One or two sentences on what you did; empty string to omit."),
        ],
    },
    ToolDef {
        name: "gt_mail_send",
        description: "Send mail to another agent of your rig.",
        args: &[
            req("to_agent_id", "The recipient agent's id."),
            req("subject", "Subject line."),
            req("body", "Message text."),
        ],
    },
    ToolDef {
        name: "gt_mail_check",
        description: "Read your undelivered mail (marks it delivered).",
        args: &[],
    },
    ToolDef {
        name: "gt_escalate",
        description: "Ask for help when you are stuck or blocked: creates an escalation for a human or the mayor.",
        args: &[
            req("title", "What is wrong, in one line."),
            opt("body", "Details: what you tried, what you need; empty string to omit."),
            opt("priority", "low, medium, high or critical; empty string for medium."),
            opt("metadata", "A JSON object with extra data; empty string to omit."),
        ],
    },
    ToolDef {
        name: "gt_checkpoint",
        description: "Save a checkpoint of your progress (free text or JSON) and push your branch's commits, so a restarted session can resume.",
        args: &[req("data", "What to remember: progress, next steps, state.")],
    },
];

/// The mayor's tools: it plans and slings work across the town's rigs, answers escalations and
/// talks to polecats. Its replies to people are its plain text, not a tool. No rig agent has
/// these (its process has no such files, and the Worker checks the role in the token).
pub const MAYOR_TOOLS: &[ToolDef] = &[
    ToolDef {
        name: "gt_list_rigs",
        description: "List the town's rigs (repositories): id, name, git URL, default branch.",
        args: &[],
    },
    ToolDef {
        name: "gt_town_status",
        description: "The town at a glance: per rig, its beads by status, its unfinished beads and its agents.",
        args: &[],
    },
    ToolDef {
        name: "gt_sling",
        description: "Create one bead (a unit of work) on a rig and give it to a polecat, which starts on it.",
        args: &[
            req("rig_id", "The rig's id (from gt_list_rigs)."),
            req("title", "What to do, in one line."),
            opt("body", "The task in detail: what to change and how to know it is done; empty string to omit."),
            opt("priority", "low, medium, high or critical; empty string for medium."),
        ],
    },
    ToolDef {
        name: "gt_convoy_create",
        description: "Create several beads on one rig as a convoy (slung together, tracked together); you are told when it lands.",
        args: &[
            req("rig_id", "The rig's id (from gt_list_rigs)."),
            req("title", "What the convoy delivers, in one line."),
            req("beads", "A JSON array of beads, each {\"title\": \"...\", \"body\": \"...\", \"priority\": \"medium\"} (body and priority optional)."),
        ],
    },
    ToolDef {
        name: "gt_mail_send",
        description: "Send mail to an agent of one of the town's rigs.",
        args: &[
            req("rig_id", "The rig of the recipient."),
            req("to_agent_id", "The recipient agent's id."),
            req("subject", "Subject line."),
            req("body", "Message text."),
        ],
    },
    ToolDef {
        name: "gt_mail_check",
        description: "Read what the town sent you that you have not read yet: escalations and convoys that landed (marks them read).",
        args: &[],
    },
    ToolDef {
        name: "gt_escalation_resolve",
        description: "Answer an escalation: closes it and mails your answer to the agent that raised it.",
        args: &[
            req("rig_id", "The rig the escalation is in."),
            req("escalation_id", "The escalation's id."),
            req("answer", "Your answer or decision, for the agent."),
        ],
    },
];

/// The tools an agent of `role` has.
pub fn for_role(role: AgentRole) -> &'static [ToolDef] {
    match role {
        AgentRole::Mayor => MAYOR_TOOLS,
        AgentRole::Polecat | AgentRole::Refinery | AgentRole::Witness => TOOLS,
    }
}

/// Tool `name` of `role`'s set; `None` for a tool the role does not have.
pub fn find(role: AgentRole, name: &str) -> Option<&'static ToolDef> {
    for_role(role).iter().find(|t| t.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_eight_reference_tools_are_defined_once() {
        let names: Vec<_> = TOOLS.iter().map(|t| t.name).collect();
        assert_eq!(
            names,
            [
                "gt_prime",
                "gt_bead_status",
                "gt_bead_close",
                "gt_done",
                "gt_mail_send",
                "gt_mail_check",
                "gt_escalate",
                "gt_checkpoint"
            ]
        );
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), names.len());
    }

    #[test]
    fn the_mayor_has_its_own_set_and_no_rig_agent_has_it() {
        let names: Vec<_> = MAYOR_TOOLS.iter().map(|t| t.name).collect();
        assert_eq!(
            names,
            [
                "gt_list_rigs",
                "gt_town_status",
                "gt_sling",
                "gt_convoy_create",
                "gt_mail_send",
                "gt_mail_check",
                "gt_escalation_resolve"
            ]
        );
        for role in [AgentRole::Polecat, AgentRole::Refinery, AgentRole::Witness] {
            assert!(
                find(role, "gt_sling").is_none() && find(role, "gt_escalation_resolve").is_none(),
                "{role:?}"
            );
        }
        assert!(find(AgentRole::Mayor, "gt_done").is_none(), "the mayor finishes no bead");
        assert_eq!(
            find(AgentRole::Mayor, "gt_mail_send").map(|t| t.args.len()),
            Some(4),
            "its mail names the rig"
        );
    }

    #[test]
    fn optional_arguments_say_so() {
        for t in TOOLS.iter().chain(MAYOR_TOOLS) {
            for a in t.args.iter().filter(|a| a.optional) {
                assert!(a.description.contains("empty string"), "{}.{}", t.name, a.name);
            }
        }
    }
}
