//! The eight Gastown tools, defined once. From these definitions the control server writes the
//! Kilo tool files ([`super::js`]) and maps each call to the Worker route it forwards to
//! ([`super::forward`]).
//!
//! Kilo makes every declared argument required, so optional arguments say so in their
//! description and an empty string means "not given".

use serde::Serialize;

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
        description: "Finish the work on your hook: submits your pushed branch to the review queue, unhooks \
                      the bead and makes you idle. Commit and push the branch BEFORE calling this.",
        args: &[
            req("branch", "The branch you pushed (your working branch)."),
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
        description: "Save a checkpoint of your progress (free text or JSON) so a restarted session can resume.",
        args: &[req("data", "What to remember: progress, next steps, state.")],
    },
];

pub fn find(name: &str) -> Option<&'static ToolDef> {
    TOOLS.iter().find(|t| t.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_eight_reference_tools_are_defined_once() {
        let names: Vec<_> = TOOLS.iter().map(|t| t.name).collect();
        assert_eq!(
            names,
            ["gt_prime", "gt_bead_status", "gt_bead_close", "gt_done", "gt_mail_send", "gt_mail_check", "gt_escalate", "gt_checkpoint"]
        );
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), names.len());
    }

    #[test]
    fn optional_arguments_say_so() {
        for t in TOOLS {
            for a in t.args.iter().filter(|a| a.optional) {
                assert!(a.description.contains("empty string"), "{}.{}", t.name, a.name);
            }
        }
    }
}
