//! The Kilo configuration file of one `kilo serve` process (passed as `KILO_CONFIG`, written
//! outside every worktree so an agent never commits it).

use serde_json::{json, Value};

/// Name of the agent definition every Gastown session runs as.
pub const AGENT_NAME: &str = "gastown";
/// Environment variable that carries the model provider's API key into the Kilo process; the
/// config refers to it by `{env:..}` so the key is never written to disk.
pub const MODEL_KEY_VAR: &str = "GASTOWN_MODEL_API_KEY";

/// The prompt of the agent definition every process runs with. It replaces Kilo's long default
/// prompt but names nobody: a process may be started before its agent is known (the warm
/// pool) or serve several agents (shared mode), so each agent's own system prompt comes with
/// every message it is sent (`system`).
pub const NEUTRAL_AGENT_PROMPT: &str =
    "You are an autonomous coding agent of Gastown, working unattended in a git \
checkout. Your identity, your role and your instructions are in the system message that follows; \
follow them. Nobody answers questions: decide, act, and use your tools.";

/// Tools an unattended agent must not have: they wait for a human, or schedule work outside
/// the turn the supervisor can see.
const DENIED_TOOLS: &[&str] = &[
    "question",
    "plan_exit",
    "suggest",
    "schedule_wakeup",
    "cancel_wakeup",
    "background_process",
    "board_post",
    "board_read",
];

pub struct KiloConfigInput<'a> {
    /// `provider/model` from the start request.
    pub model: &'a str,
    /// An OpenAI-compatible endpoint: the model is served by a custom provider there.
    /// Without it, Kilo's built-in providers are used as configured by its own environment.
    pub model_base_url: Option<&'a str>,
    pub has_model_key: bool,
    /// The agent definition's prompt (the agent's system prompt).
    pub agent_prompt: &'a str,
    /// The control server's stand-in model for a pooled process's warm-up turn
    /// (`<control url>/warmup/v1`), offered as provider [`WARMUP_PROVIDER`].
    pub warmup_base_url: Option<&'a str>,
}

/// The provider and model of the warm-up turn (`http/warmup.rs`).
pub const WARMUP_PROVIDER: &str = "gastown-warmup";
pub const WARMUP_MODEL: &str = "warm";

/// Splits `provider/model`; a bare model name gets the provider `gastown`.
pub fn split_model(model: &str) -> (&str, &str) {
    match model.split_once('/') {
        Some((p, m)) if !p.is_empty() && !m.is_empty() => (p, m),
        _ => ("gastown", model),
    }
}

pub fn kilo_config(input: &KiloConfigInput<'_>) -> Value {
    let (provider, model) = split_model(input.model);
    let full_model = format!("{provider}/{model}");
    let mut permission = serde_json::Map::new();
    permission.insert("*".into(), "allow".into());
    for tool in DENIED_TOOLS {
        permission.insert((*tool).into(), "deny".into());
    }
    let mut config = json!({
        "autoupdate": false,
        "share": "disabled",
        // Kilo's snapshots are a second git store of the whole tree, refreshed at every step,
        // for its undo: an unattended agent never undoes (it commits with git), and they cost
        // 0.6-1.3 s on each first prompt in a directory plus the disk of a copy of the tree.
        // Nothing the server reads (events, tool calls) comes from them.
        "snapshot": false,
        "model": full_model,
        // An unset or unknown small model kills the prompt loop.
        "small_model": full_model,
        "permission": permission,
        "agent": { AGENT_NAME: { "mode": "primary", "prompt": neutralize_substitutions(input.agent_prompt) } },
    });
    if let Some(base_url) = input.model_base_url {
        let api_key =
            if input.has_model_key { format!("{{env:{MODEL_KEY_VAR}}}") } else { "none".into() };
        config["enabled_providers"] = json!([provider]);
        config["provider"] = json!({
            provider: {
                "npm": "@ai-sdk/openai-compatible",
                "name": provider,
                "options": { "baseURL": base_url, "apiKey": api_key },
                "models": { model: { "name": model, "tool_call": true, "limit": { "context": 128000, "output": 8192 } } }
            }
        });
    }
    if let Some(base_url) = input.warmup_base_url {
        if let Some(enabled) = config["enabled_providers"].as_array_mut() {
            enabled.push(WARMUP_PROVIDER.into());
        }
        if !config["provider"].is_object() {
            config["provider"] = json!({});
        }
        config["provider"][WARMUP_PROVIDER] = json!({
            "npm": "@ai-sdk/openai-compatible",
            "name": WARMUP_PROVIDER,
            "options": { "baseURL": base_url, "apiKey": "none" },
            "models": { WARMUP_MODEL: { "name": WARMUP_MODEL, "tool_call": true, "limit": { "context": 128000, "output": 1024 } } }
        });
    }
    config
}

/// Whether a process with this config needs Kilo's bundled model catalog: only when it uses
/// Kilo's built-in providers. With `enabled_providers` (set with `model_base_url`) every
/// provider it may use is defined in the config with its models.
pub fn needs_catalog(config: &Value) -> bool {
    !config["enabled_providers"].is_array()
}

/// Kilo expands `{env:NAME}` and `{file:PATH}` inside config values. A prompt is text from a
/// request, so break those forms up: it must not pull the container's secrets or files into
/// the model's context.
pub fn neutralize_substitutions(text: &str) -> String {
    text.replace("{env:", "{ env:").replace("{file:", "{ file:")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn custom_provider_with_key_by_reference() {
        let c = kilo_config(&KiloConfigInput {
            model: "scripted/m-1",
            model_base_url: Some("http://127.0.0.1:9/v1"),
            has_model_key: true,
            agent_prompt: "You are toast.",
            warmup_base_url: Some("http://127.0.0.1:8/warmup/v1"),
        });
        assert_eq!(c["model"], "scripted/m-1");
        assert_eq!(c["snapshot"], false, "no snapshot store for an unattended agent");
        assert_eq!(c["small_model"], "scripted/m-1");
        assert_eq!(c["enabled_providers"], json!(["scripted", WARMUP_PROVIDER]));
        assert_eq!(c["provider"]["scripted"]["options"]["apiKey"], "{env:GASTOWN_MODEL_API_KEY}");
        assert_eq!(c["provider"]["scripted"]["models"]["m-1"]["tool_call"], true);
        assert_eq!(c["agent"]["gastown"]["prompt"], "You are toast.");
        assert_eq!(c["permission"]["question"], "deny");
        assert_eq!(c["permission"]["*"], "allow");
        assert_eq!(c["autoupdate"], false);
        assert_eq!(
            c["provider"][WARMUP_PROVIDER]["options"]["baseURL"],
            "http://127.0.0.1:8/warmup/v1"
        );
        assert_eq!(c["small_model"], "scripted/m-1", "the warm-up model is never a default");
        assert!(!needs_catalog(&c), "every provider it may use is in its config");
    }

    #[test]
    fn models_with_slashes_and_bare_names() {
        assert_eq!(split_model("openrouter/anthropic/claude"), ("openrouter", "anthropic/claude"));
        assert_eq!(split_model("gpt"), ("gastown", "gpt"));
        let c = kilo_config(&KiloConfigInput {
            model: "kilo/x",
            model_base_url: None,
            has_model_key: false,
            agent_prompt: "",
            warmup_base_url: None,
        });
        assert!(c.get("provider").is_none());
        assert!(needs_catalog(&c), "Kilo's built-in providers need its catalog");
    }

    #[test]
    fn prompts_cannot_expand_env_or_files() {
        let p = neutralize_substitutions("leak {env:GASTOWN_MODEL_API_KEY} and {file:/etc/passwd}");
        assert!(!p.contains("{env:") && !p.contains("{file:"));
    }
}
