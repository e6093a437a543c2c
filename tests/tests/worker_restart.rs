//! Durable Object state survives a `wrangler dev` restart on the same `--persist-to` folder.

use gastown_e2e::wrangler::{agent_token, Auth, WranglerDev};
use reqwest::Method;
use serde_json::{json, Value};

#[tokio::test]
async fn state_survives_a_restart() {
    let dev = WranglerDev::start().await;
    let (town, rig) = dev.town_and_rig("persist", "https://github.com/o/app.git").await;
    let sling = dev.post(&format!("/api/rigs/{rig}/sling"), json!({"title": "survive"})).await;
    let agent = sling.data()["agent"]["id"].as_str().expect("agent").to_string();
    let bead = sling.data()["bead"]["id"].as_str().expect("bead").to_string();
    let mail =
        json!({"from_agent_id": agent, "to_agent_id": agent, "subject": "note", "body": "to self"});
    assert_eq!(dev.post(&format!("/api/rigs/{rig}/mail"), mail).await.status, 201);
    let before_beads = dev.get(&format!("/api/rigs/{rig}/beads")).await.data().clone();
    let before_agent = dev.get(&format!("/api/rigs/{rig}/agents/{agent}")).await.data().clone();

    let dir = dev.state_dir();
    dev.stop();
    let dev = WranglerDev::start_in(dir).await;

    assert_eq!(dev.get(&format!("/api/rigs/{rig}/beads")).await.data(), &before_beads);
    assert_eq!(dev.get(&format!("/api/rigs/{rig}/agents/{agent}")).await.data(), &before_agent);
    assert_eq!(dev.get(&format!("/api/towns/{town}/rigs")).await.data()[0]["id"], json!(rig));
    assert_eq!(dev.get(&format!("/api/rigs/{rig}/config")).await.data()["town_id"], json!(town));
    // The hook and the undelivered mail are still there, and the agent can finish its work.
    let me = Auth::Bearer(agent_token(&agent, &rig));
    let prime = dev
        .call(Method::GET, &format!("/api/rigs/{rig}/agents/{agent}/prime"), &me, Value::Null)
        .await;
    assert_eq!(prime.data()["hooked_bead"]["id"], json!(bead));
    assert_eq!(prime.data()["undelivered_mail"].as_array().expect("mail").len(), 1);
    let done = dev
        .call(
            Method::POST,
            &format!("/api/rigs/{rig}/agents/{agent}/done"),
            &me,
            json!({"branch": "polecat/toast/x"}),
        )
        .await;
    assert_eq!((done.status, done.data()), (200, &json!({"done": true})));
    let queue = dev.get(&format!("/api/rigs/{rig}/review-queue")).await;
    assert_eq!(queue.data()[0]["bead_id"], json!(bead), "{queue:?}");
}
