//! The scripted model server answers per conversation, records requests and fails on demand.

use std::time::Duration;

use gastown_e2e::model_server::{marker, Kind, ModelServer, Step, NOTHING_TO_DO, SCRIPT_FINISHED};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(10);

fn body(script: Option<&str>, assistants: usize, stream: bool) -> Value {
    let prompt = match script {
        Some(s) => format!("{} do the work", marker(s)),
        None => "no marker here".to_owned(),
    };
    let mut messages = vec![
        json!({"role": "system", "content": "You are Kilo."}),
        json!({"role": "user", "content": [{"type": "text", "text": prompt}]}),
    ];
    for i in 0..assistants {
        messages.push(json!({"role": "assistant", "content": null, "tool_calls": [
            {"id": format!("c{i}"), "type": "function", "function": {"name": "bash", "arguments": "{}"}}]}));
        messages.push(json!({"role": "tool", "tool_call_id": format!("c{i}"), "content": "ok"}));
    }
    json!({"model": "m", "messages": messages, "stream": stream,
           "tools": [{"type": "function", "function": {"name": "bash", "parameters": {}}}]})
}

/// Concatenates the `choices[0].delta` objects of an SSE answer.
fn sse_deltas(text: &str) -> (Vec<Value>, Vec<String>) {
    let mut deltas = Vec::new();
    let mut finish = Vec::new();
    for line in text.lines() {
        let Some(data) = line.strip_prefix("data: ") else { continue };
        if data == "[DONE]" {
            continue;
        }
        let v: Value = serde_json::from_str(data).expect("chunk is JSON");
        if let Some(c) = v["choices"].get(0) {
            deltas.push(c["delta"].clone());
            if let Some(f) = c["finish_reason"].as_str() {
                finish.push(f.to_owned());
            }
        }
    }
    (deltas, finish)
}

#[tokio::test]
async fn scripts_are_played_per_conversation() {
    let server = ModelServer::start([
        ("alpha", vec![Step::tool("gt_done", json!({"branch": "b1"})), Step::text("alpha done")]),
        ("beta", vec![Step::bash("pwd"), Step::text("beta done")]),
    ])
    .await
    .expect("start");
    let http = reqwest::Client::new();
    let url = format!("{}/chat/completions", server.base_url());

    // Streamed tool call for alpha step 0.
    let text = http
        .post(&url)
        .json(&body(Some("alpha"), 0, true))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.trim_end().ends_with("data: [DONE]"));
    let (deltas, finish) = sse_deltas(&text);
    let call = &deltas[0]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "gt_done");
    let args: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args, json!({"branch": "b1"}));
    assert_eq!(finish, vec!["tool_calls"]);

    // beta step 0 is independent of alpha's progress.
    let text = http
        .post(&url)
        .json(&body(Some("beta"), 0, true))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let (deltas, _) = sse_deltas(&text);
    assert_eq!(deltas[0]["tool_calls"][0]["function"]["name"], "bash");

    // alpha step 1 (non-streamed): plain text.
    let v: Value = http
        .post(&url)
        .json(&body(Some("alpha"), 1, false))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "alpha done");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");

    // A retry of the same request gets the same step again (stateless).
    let v: Value = http
        .post(&url)
        .json(&body(Some("alpha"), 1, false))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "alpha done");

    // Exhausted script, unknown conversation.
    let v: Value = http
        .post(&url)
        .json(&body(Some("alpha"), 2, false))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], SCRIPT_FINISHED);
    let v: Value =
        http.post(&url).json(&body(None, 0, false)).send().await.unwrap().json().await.unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], NOTHING_TO_DO);

    // A title request (no tools) quoting the marker does not play a step.
    let title = json!({"model": "m", "stream": true, "messages": [
        {"role": "system", "content": "You are a title generator."},
        {"role": "user", "content": format!("1. {} do the work", marker("beta"))}]});
    let text = http.post(&url).json(&title).send().await.unwrap().text().await.unwrap();
    let (deltas, _) = sse_deltas(&text);
    assert!(deltas[0]["content"].is_string());

    let all = server.wait_for_requests(7, WAIT).await.expect("7 requests");
    assert_eq!(all.len(), 7);
    assert_eq!(all[6].kind, Kind::Auxiliary);
    assert_eq!(server.requests_for("alpha").len(), 4);
    assert_eq!(server.requests_for("beta").len(), 1);
    assert_eq!(all[1].kind, Kind::Scripted { script: "beta".into(), step: 0 });
    assert_eq!(all[2].tool_results(), vec!["ok".to_owned()]);
    assert_eq!(all[0].tool_names(), vec!["bash".to_owned()]);

    let models: Value = http
        .get(format!("{}/models", server.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(models["data"][0]["id"].is_string());
}

#[tokio::test]
async fn failures_bad_bodies_and_waiting() {
    let server = ModelServer::start([("broken", vec![Step::fail(500)])]).await.expect("start");
    server.set_script("slow", vec![Step::text("eventually").delayed(Duration::from_millis(50))]);
    let http = reqwest::Client::new();
    let url = format!("{}/chat/completions", server.base_url());

    let r = http.post(&url).json(&body(Some("broken"), 0, true)).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 500);
    let r = http
        .post(&url)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);

    // Waiting for a request that arrives later.
    let waiter = {
        let http = http.clone();
        let url = url.clone();
        tokio::spawn(async move {
            let v: Value = http
                .post(&url)
                .json(&body(Some("slow"), 0, false))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            v
        })
    };
    let slow = server.wait_for_script_requests("slow", 1, WAIT).await.expect("slow request seen");
    assert_eq!(slow.len(), 1);
    let v = waiter.await.unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "eventually");

    // A wait that cannot be satisfied ends with an error, not a hang.
    let err = server.wait_for_requests(100, Duration::from_millis(100)).await.unwrap_err();
    assert!(err.contains("saw 3"), "{err}");
}
