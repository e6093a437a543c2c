//! A town on a private forge, everything real but the LLM and the forge (`wrangler dev` with the
//! built Worker, the native control server, the real Kilo CLI, real git): the forge stand-in
//! serves its repositories with git's own `git http-backend` and refuses git without a token,
//! and mints GitHub App installation tokens for an app key the test makes.
//!
//! The town's forge is a GitHub App. The Worker keeps its key and mints the token; the control
//! server asks for the token for each git process that talks to the origin (the rig's clone and
//! fetches, the push `gt_done` makes for the agent, the refinery's fetch and push) and hands it
//! to that process alone. The agent only commits. One town, two rigs at once:
//! - `private` (merged by the refinery): an agent's shell and a merge gate each search everything
//!   they can read (the workspace, their HOME and temporary folders, every `/proc/*/environ` and
//!   `/proc/*/cmdline`, every git config) for the token and the app's key: neither is anywhere,
//!   nor in any answer of the API or any log line of the run;
//! - `reviewed` (`merge_strategy: "pr"`, one approval required): a pull request is opened, its
//!   failed check sends the bead back, a review asking for changes sends it back again, the
//!   approval gets it merged by the Worker over REST, a second bead's pull request closed by a
//!   person returns that bead and escalates, and a third one merged by a person closes its bead;
//! - `on-gitlab` (its own forge: a GitLab token; `merge_strategy: "pr"`, squashed): a merge
//!   request whose failed job sends the bead back, then a diff thread on the new head, then an
//!   approval (GitLab's webhook with its token) gets it squashed by the Worker;
//! - `clashing` (`pr`, no review required): two beads write the same file; the second pull
//!   request conflicts, goes back, and is merged once its polecat merged `main` in.

use std::time::Duration;

use gastown_e2e::forge_stub::{App, ForgeStub};
use gastown_e2e::model_server::{commit_then_done, marker, ModelServer, Step};
use gastown_e2e::origin::Origin;
use gastown_e2e::town::LocalTown;
use gastown_e2e::wait::until as wait_for;
use gastown_e2e::wrangler::{Auth, WranglerDev};
use reqwest::Method;
use serde_json::{json, Value};

const WORK: Duration = Duration::from_secs(300);
const WEBHOOK_SECRET: &str = "whsec-of-the-test";
const GITLAB_TOKEN: &str = "glpat-of-the-test";
const GITLAB_HOOK_TOKEN: &str = "gitlab-hook-token-of-the-test";

/// A shell script that searches what its uid can read for each of `secrets` (never written
/// whole in the script, so the script's own command line holds none), and checks that it could
/// read something: its own process's files, and `canary` in the rigs' clones. Prints
/// `credential-scan: clean` and exits 0 only when nothing was found and both checks hold.
fn credential_scan(secrets: &[&str], canary: &str) -> String {
    let split: Vec<String> = secrets
        .iter()
        .map(|s| {
            let (a, b) = s.split_at(s.len() / 2);
            format!("'{a}''{b}'")
        })
        .collect();
    let secrets = split.join(" ");
    format!(
        "found=0; read=0; d=$PWD; n=0; \
         while [ \"$d\" != / ] && [ ! -d \"$d/rigs\" ] && [ $n -lt 12 ]; do d=$(dirname \"$d\"); n=$((n+1)); done; \
         for f in /proc/[0-9]*/environ /proc/[0-9]*/cmdline; do \
           v=$(tr '\\0' '\\n' 2>/dev/null < \"$f\") || continue; read=$((read+1)); \
           for t in {secrets}; do case \"$v\" in *\"$t\"*) echo \"FOUND in $f\"; found=1;; esac; done; \
         done; \
         cfg=$(git config --list --show-origin 2>/dev/null; for r in \"$d\"/rigs/*/repo; do git -C \"$r\" config --list --show-origin 2>/dev/null; done; \
               git config --system --list 2>/dev/null; git config --global --list 2>/dev/null); \
         for t in {secrets}; do \
           case \"$cfg\" in *\"$t\"*) echo 'FOUND in a git config'; found=1;; esac; \
           for f in $(grep -rlsF -e \"$t\" \"$d\" \"$HOME\" \"${{TMPDIR:-/tmp}}\" /tmp /var/tmp 2>/dev/null); do echo \"FOUND in $f\"; found=1; done; \
         done; \
         canary=$(grep -rlsF -e '{canary}' \"$d/rigs\" 2>/dev/null | wc -l); \
         echo \"scanned: read=$read canary=$canary\"; \
         [ $found = 0 ] && [ $read -gt 0 ] && [ $canary -gt 0 ] && echo 'credential-scan: clean'"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_town_works_on_a_private_forge_with_an_app_token_no_agent_or_gate_can_read() {
    if !gastown_e2e::skip::needs_root(
        "a_town_works_on_a_private_forge_with_an_app_token_no_agent_or_gate_can_read",
        "agents and gates must run under uids of their own for the search to mean anything",
    ) {
        return;
    }
    use rsa::pkcs1::{EncodeRsaPrivateKey, LineEnding};
    let key = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048).expect("the app's key");
    let pem = key.to_pkcs1_pem(LineEnding::LF).expect("pem").to_string();
    let app = App { app_id: 515, installation_id: 99, public_key: key.to_public_key() };
    let forge = ForgeStub::start_with_git(Some(app)).await;
    // Installation tokens live 20 s past the Worker's five-minute refresh margin, so the run
    // outlives several: each is refreshed before it expires, and an expired one is refused.
    forge.set_token_lifetime(5 * 60 + 20);

    let model = ModelServer::start(Vec::<(String, Vec<Step>)>::new()).await.expect("model");
    let local = LocalTown::start(
        &model,
        &[("STOP_GRACE_MS", "3000")],
        // Pull requests are read when their entry starts and when a webhook says they changed;
        // the fallback poll is too slow to matter here.
        &[("SCHEDULER_TICK_MS", "1000"), ("PR_POLL_MS", "3600000")],
    )
    .await;
    let dev = &local.worker;
    let town = dev.post("/api/towns", json!({ "name": "forged" })).await.data()["id"]
        .as_str()
        .expect("town")
        .to_string();
    let forge_path = format!("/api/towns/{town}/forge");
    let put = dev
        .call(
            Method::PUT,
            &forge_path,
            &Auth::Internal,
            json!({"kind": "github_app", "api_url": forge.url(), "app_id": 515, "installation_id": 99, "private_key": pem, "webhook_secret": WEBHOOK_SECRET}),
        )
        .await;
    assert_eq!(put.status, 200, "{put:?}");
    let token = forge.exchanges().first().and_then(|e| e.token.clone()).expect("a minted token");
    let hooks = format!("{}/api/webhooks/github/{town}", dev.base_url);
    forge.deliver_webhooks_to(&hooks, WEBHOOK_SECRET);
    let key_line = pem.lines().nth(1).expect("a line of the key").to_string();
    let secrets = [token.as_str(), key_line.as_str()];
    let (private, reviewed, on_gitlab, clashing) = tokio::join!(
        private_scenario(&local, &model, &forge, &town, &secrets),
        pull_request_scenario(&local, &model, &forge, &town),
        merge_request_scenario(&local, &model, &forge, &town),
        conflict_scenario(&local, &model, &forge, &town),
    );
    // The run outlived its first tokens: each was refreshed in time (a push or read with an
    // expired one would have been refused, and the scenarios' checks of git would say so).
    let exchanges = forge.exchanges();
    assert!(exchanges.len() >= 3 && exchanges.iter().all(|e| e.verdict.is_ok()), "{exchanges:?}");
    let minted: Vec<String> = exchanges.iter().filter_map(|e| e.token.clone()).collect();
    let runs: Vec<(String, String, String)> =
        std::iter::once(private).chain(reviewed).chain([on_gitlab]).chain(clashing).collect();

    // Neither secret is in any answer of the run, nor in a log line.
    let mut answers = Vec::<Value>::new();
    for path in [
        format!("/api/towns/{town}/forge"),
        format!("/api/towns/{town}/container/state"),
        format!("/api/towns/{town}/escalations"),
    ] {
        answers.push(dev.get(&path).await.body);
    }
    for (rig, bead, agent) in &runs {
        for path in [
            format!("/api/rigs/{rig}/config"),
            format!("/api/rigs/{rig}/beads/{bead}"),
            format!("/api/rigs/{rig}/review-queue"),
            format!("/api/rigs/{rig}/agents/{agent}"),
            format!("/api/towns/{town}/agents/{agent}/events"),
        ] {
            answers.push(dev.get(&path).await.body);
        }
        answers.push(local.control.get(&format!("/agents/{agent}/events")).await.1);
    }
    let logs = format!("{}\n{}", local.control.logs().join("\n"), dev.output());
    let everything = secrets.into_iter().chain([GITLAB_TOKEN, GITLAB_HOOK_TOKEN]);
    for secret in everything.chain(minted.iter().map(String::as_str)) {
        for answer in &answers {
            assert!(!answer.to_string().contains(secret), "a secret in an answer: {answer}");
        }
        assert!(!logs.contains(secret), "a secret in a log line");
    }
}

/// The rig on a private origin, merged by the refinery; its `(rig, bead, agent)`.
async fn private_scenario(
    local: &LocalTown,
    model: &ModelServer,
    forge: &ForgeStub,
    town: &str,
    secrets: &[&str],
) -> (String, String, String) {
    let dev = &local.worker;
    let seed = Origin::new();
    let (git_url, repo) = forge.add_repo("private", &seed.path);

    let canary = "git/private.git";
    let gate = credential_scan(secrets, canary);
    let settings = json!({ "merge_gates": [gate], "gate_timeout_secs": 120 });
    let rig = add_rig(dev, town, "private", &git_url, settings).await;
    let mut script = vec![Step::bash(credential_scan(secrets, canary))];
    script.extend(commit_then_done("private.txt", "kept-private"));
    model.set_script("private", script);
    let (bead, agent) = sling(dev, &rig, "Write private.txt", "private").await;

    // The bead is merged through the private origin: cloned, pushed for the agent, fetched,
    // merged with the gate passing, and pushed by the refinery.
    let settled = dev.settled_bead(&rig, &bead, WORK).await;
    if settled["status"] != "closed" {
        let reviews = dev.get(&format!("/api/rigs/{rig}/review-queue")).await.body;
        let events = dev.get(&format!("/api/towns/{town}/agents/{agent}/events")).await.body;
        let logs: Vec<String> = local
            .control
            .logs()
            .into_iter()
            .filter(|l| {
                l.contains("WARN")
                    || l.contains("ERROR")
                    || l.contains("merge")
                    || l.contains("git")
            })
            .collect();
        panic!(
            "bead {settled}\nreviews {reviews}\nevents {events}\nlogs {}\ngit {:?}",
            logs.join("\n"),
            forge.git_requests()
        );
    }
    let main = std::process::Command::new("git")
        .arg("-C")
        .arg(&repo)
        .args(["show", "main:private.txt"])
        .output()
        .expect("git show");
    assert_eq!(String::from_utf8_lossy(&main.stdout).trim(), "kept-private");

    // The agent's own search found nothing, and could read what it should.
    let results: Vec<String> =
        model.requests_for("private").iter().flat_map(|r| r.tool_results()).collect();
    let scan = results.iter().find(|t| t.contains("scanned:")).expect("the agent's search ran");
    assert!(scan.contains("credential-scan: clean") && !scan.contains("FOUND"), "{scan}");
    assert!(
        results.iter().any(|t| t.contains("pushed polecat/")),
        "gt_done pushed for the agent: {results:?}"
    );

    // Git never got in without the token, and used the minted one for reads and pushes.
    let requests: Vec<_> =
        forge.git_requests().into_iter().filter(|r| r.repo == "private").collect();
    assert!(
        requests.iter().all(|r| match &r.credential {
            Some((_, ok)) => *ok && r.status == 200,
            None => r.status == 401,
        }),
        "no expired or wrong token was sent: {requests:?}"
    );
    assert!(requests.iter().any(|r| r.credential.is_none() && r.status == 401), "{requests:?}");
    assert!(
        requests
            .iter()
            .all(|r| r.credential.as_ref().is_none_or(|(user, _)| user == "x-access-token")),
        "{requests:?}"
    );
    let pushes = requests
        .iter()
        .filter(|r| r.service == "git-receive-pack" && r.status == 200 && r.credential.is_some())
        .count();
    assert!(pushes >= 2, "the agent's branch and the merge were pushed: {requests:?}");

    (rig, bead, agent)
}

/// Creates rig `name` of `town` on `git_url` with `settings` laid over the name and URL; its id.
async fn add_rig(
    dev: &WranglerDev,
    town: &str,
    name: &str,
    git_url: &str,
    settings: Value,
) -> String {
    let mut body = json!({ "name": name, "git_url": git_url });
    if let (Some(b), Value::Object(extra)) = (body.as_object_mut(), settings) {
        b.extend(extra);
    }
    let created = dev.post(&format!("/api/towns/{town}/rigs"), body).await;
    assert_eq!(created.status, 201, "{created:?}");
    created.data()["id"].as_str().expect("rig").to_string()
}

/// Slings a bead titled `title` whose runs follow `script`'s model script; `(bead, agent)`.
async fn sling(dev: &WranglerDev, rig: &str, title: &str, script: &str) -> (String, String) {
    let body = json!({ "title": title, "body": format!("{title}. {}", marker(script)) });
    let slung = dev.post(&format!("/api/rigs/{rig}/sling"), body).await;
    assert_eq!(slung.status, 201, "{slung:?}");
    let id = |k: &str| slung.data()[k]["id"].as_str().expect("id").to_string();
    (id("bead"), id("agent"))
}

/// The three rounds of a reviewed bead: a draft of feature.txt, then the tests a failed check
/// asks for, then the change a reviewer asks for (its gt_done summary `asked`).
fn review_rounds(asked: &str) -> Vec<Vec<Step>> {
    vec![
        commit_then_done("feature.txt", "draft"),
        fix_then_done("tests.txt", "covered", "added the tests"),
        fix_then_done("feature.txt", "final", asked),
    ]
}

/// A rework run: writes `content` to `file`, commits, and calls `gt_done` with `summary`.
fn fix_then_done(file: &str, content: &str, summary: &str) -> Vec<Step> {
    vec![
        Step::bash(format!(
            "echo {content} > {file} && git add {file} && git commit -qm 'fix {file}' && echo fixed"
        )),
        Step::tool("gt_done", json!({ "branch": "{{branch}}", "summary": summary })),
        Step::text("fixed"),
    ]
}

/// Waits until `rig`'s review queue has `n` entries and the last one is `status`; that entry.
/// Past the deadline it fails with the queue, the rig's beads and agents, and their events.
async fn nth_entry(dev: &WranglerDev, rig: &str, n: usize, status: &str) -> Value {
    let deadline = std::time::Instant::now() + WORK;
    loop {
        let q = dev.get(&format!("/api/rigs/{rig}/review-queue?limit=100")).await;
        let entries = q.data().as_array().cloned().unwrap_or_default();
        if let Some(e) = entries.get(n - 1).filter(|e| entries.len() == n && e["status"] == status)
        {
            return e.clone();
        }
        if std::time::Instant::now() >= deadline {
            let beads = dev.get(&format!("/api/rigs/{rig}/beads?limit=50")).await.body;
            let agents = dev.get(&format!("/api/rigs/{rig}/agents")).await.body;
            let events = dev.get(&format!("/api/rigs/{rig}/events?limit=100")).await.body;
            panic!(
                "timed out waiting for review entry {n} to be {status}\nqueue {entries:?}\nbeads {beads}\nagents {agents}\nevents {events}"
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The rig that reviews through pull requests; its `(rig, bead, agent)` of each bead.
async fn pull_request_scenario(
    local: &LocalTown,
    model: &ModelServer,
    forge: &ForgeStub,
    town: &str,
) -> Vec<(String, String, String)> {
    let dev = &local.worker;
    let seed = Origin::new();
    let (git_url, repo) = forge.add_repo("reviewed", &seed.path);
    forge.require_check("ci", "tests.txt");
    let settings = json!({ "merge_strategy": "pr", "require_review": 1 });
    let rig = add_rig(dev, town, "reviewed", &git_url, settings).await;
    model.set_runs("reviewed", review_rounds("renamed as asked"));
    let (bead, agent) = sling(dev, &rig, "Add the feature", "reviewed").await;

    // The failed check sends the bead back; the fix goes to the same pull request.
    let failed = nth_entry(dev, &rig, 1, "rework").await;
    assert_eq!(failed["result"]["state"], "checks_failed", "{failed}");
    assert_eq!(failed["pr_number"], 1, "{failed}");
    let pr_url = failed["pr_url"].as_str().expect("the pull request's link").to_string();
    assert!(pr_url.ends_with("/git/reviewed/pull/1"), "{pr_url}");
    let pull = forge.pulls().into_iter().find(|p| p.repo == "reviewed").expect("a pull request");
    assert_eq!((pull.base.as_str(), pull.title.as_str()), ("main", "Add the feature"));
    assert!(pull.body.contains(&bead), "{}", pull.body);

    // Green now, it waits for its review; a reviewer asks for changes.
    // (An entry is running from the moment the refinery takes it; its pull request is recorded
    // once the forge answered, so wait for both.)
    nth_entry(dev, &rig, 2, "running").await;
    let waiting = wait_for("entry 2 to follow the same pull request", WORK, async || {
        let q = dev.get(&format!("/api/rigs/{rig}/review-queue?limit=100")).await;
        let second = q.data().as_array().and_then(|e| e.get(1).cloned())?;
        (!second["pr_number"].is_null()).then_some(second)
    })
    .await;
    assert_eq!(waiting["pr_number"], 1, "{waiting}");
    wait_for("the check to be read on the new head", WORK, async || {
        let calls = forge.rest_calls();
        let reads =
            calls.iter().filter(|c| c.repo == "reviewed" && c.path.ends_with("/check-runs"));
        reads.count().ge(&2).then_some(())
    })
    .await;
    forge.review("reviewed", 1, "ann", "CHANGES_REQUESTED", "Please make feature.txt final").await;
    let asked = nth_entry(dev, &rig, 2, "rework").await;
    assert_eq!(asked["result"]["state"], "changes_requested", "{asked}");

    // The reworked branch is approved, and the Worker merges it.
    nth_entry(dev, &rig, 3, "running").await;
    forge.review("reviewed", 1, "ann", "APPROVED", "Thanks").await;
    let settled = dev.settled_bead(&rig, &bead, WORK).await;
    assert_eq!(settled["status"], "closed", "{settled}");
    assert_eq!(settled["metadata"]["pr_number"], 1, "{settled}");
    let git = |args: &[&str]| {
        let out = std::process::Command::new("git")
            .arg("-C")
            .arg(&repo)
            .args(args)
            .output()
            .expect("git");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(git(&["show", "main:feature.txt"]), "final");
    assert_eq!(git(&["show", "main:tests.txt"]), "covered");
    let pulls: Vec<_> = forge.pulls().into_iter().filter(|p| p.repo == "reviewed").collect();
    assert_eq!(pulls.len(), 1, "one pull request for all three rounds");
    assert!(pulls[0].merge_commit.is_some() && !pulls[0].open);
    let merges: Vec<_> = forge
        .rest_calls()
        .into_iter()
        .filter(|c| c.repo == "reviewed" && c.method == "PUT")
        .collect();
    assert_eq!(merges.len(), 1, "{merges:?}");
    assert_eq!(merges[0].body["merge_method"], "merge");
    let prompts: Vec<String> =
        model.requests_for("reviewed").iter().flat_map(|r| r.user_texts()).collect();
    assert!(
        prompts.iter().any(|t| t.contains("Checks failed") && t.contains("tests.txt is missing")),
        "{prompts:?}"
    );
    assert!(prompts.iter().any(|t| t.contains("Please make feature.txt final")), "{prompts:?}");

    // A forged webhook is refused; one about another repository moves nothing.
    let hooks = format!("{}/api/webhooks/github/{town}", dev.base_url);
    let payload = json!({"action": "closed", "repository": {"full_name": "git/reviewed"}});
    let (status, _) = forge.deliver(&hooks, "not-the-secret", "pull_request", &payload).await;
    assert_eq!(status, 401);
    let elsewhere = json!({"action": "closed", "repository": {"full_name": "git/elsewhere"}});
    let (status, answer) = forge.deliver(&hooks, WEBHOOK_SECRET, "pull_request", &elsewhere).await;
    assert_eq!((status, &answer["data"]["rigs"]), (200, &json!([])), "{answer}");

    // A person closes the next bead's pull request: the bead is open again and escalates.
    let (second, second_agent, pull) =
        open_pull_request(local, model, forge, &rig, "closed", 4).await;
    forge.close("reviewed", pull).await;
    nth_entry(dev, &rig, 4, "failed").await;
    let returned = dev.bead(&rig, &second).await;
    assert_eq!(
        (returned["status"].clone(), returned["assignee_agent_id"].clone()),
        (json!("open"), Value::Null)
    );
    let escalations = dev.get(&format!("/api/rigs/{rig}/beads?type=escalation")).await;
    assert!(
        escalations.data().as_array().is_some_and(|e| e.iter().any(|x| x["title"]
            .as_str()
            .is_some_and(|t| t.starts_with("Pull request closed without merging")))),
        "{escalations:?}"
    );
    // A person merges the third bead's pull request on the forge: the bead closes.
    let (third, third_agent, pull) =
        open_pull_request(local, model, forge, &rig, "by-hand", 5).await;
    forge.merge_by_hand("reviewed", pull).await;
    nth_entry(dev, &rig, 5, "merged").await;
    assert_eq!(dev.bead(&rig, &third).await["status"], "closed");
    assert_eq!(git(&["show", "main:by-hand.txt"]), "by-hand");
    let merges: Vec<_> = forge
        .rest_calls()
        .into_iter()
        .filter(|c| c.repo == "reviewed" && c.method == "PUT")
        .collect();
    assert_eq!(merges.len(), 1, "the Worker merged only the first: {merges:?}");

    // Reads of an unchanged pull request were conditional, and answered 304.
    let unchanged = forge.rest_calls().into_iter().filter(|c| c.status == 304).count();
    assert!(unchanged > 0, "no conditional read was answered 304");

    // Every request the Worker made, and every answer the stand-in gave, is GitHub's shape.
    let report = gastown_e2e::forge_openapi::check(&forge.rest_calls());
    assert!(report.is_ok(), "{}", report.unwrap_or_else(|e| e));
    vec![(rig.clone(), bead, agent), (rig.clone(), second, second_agent), (rig, third, third_agent)]
}

/// Two beads of a rig that merges pull requests without reviews write the same file: the
/// second pull request conflicts once the first is merged, goes back to its polecat with how to
/// resolve it, and is merged after the polecat merged the default branch in. Each
/// `(rig, bead, agent)`.
async fn conflict_scenario(
    local: &LocalTown,
    model: &ModelServer,
    forge: &ForgeStub,
    town: &str,
) -> Vec<(String, String, String)> {
    let dev = &local.worker;
    let seed = Origin::new();
    let (git_url, repo) = forge.add_repo("clashing", &seed.path);
    let rig = add_rig(dev, town, "clashing", &git_url, json!({ "merge_strategy": "pr" })).await;
    let write = |content: &str| {
        vec![
            Step::bash(format!(
                "echo {content} > shared.txt && echo covered > tests.txt && git add -A && \
                 git commit -qm 'write shared.txt' && echo committed"
            )),
            Step::tool("gt_done", json!({ "branch": "{{branch}}", "summary": "wrote it" })),
            Step::text("done"),
        ]
    };
    let resolve = vec![
        Step::bash(
            "git fetch -q origin && (git merge -q origin/main >/dev/null 2>&1 || true); \
             echo one-and-two > shared.txt && git add shared.txt && \
             git commit -qm 'merge main, resolve shared.txt' && echo resolved",
        ),
        Step::tool("gt_done", json!({ "branch": "{{branch}}", "summary": "resolved" })),
        Step::text("resolved"),
    ];
    model.set_runs("clash1", vec![write("one"), resolve.clone()]);
    model.set_runs("clash2", vec![write("two"), resolve]);
    let mut runs = Vec::new();
    for i in 1..=2 {
        let (bead, agent) =
            sling(dev, &rig, &format!("Write shared.txt ({i})"), &format!("clash{i}")).await;
        runs.push((rig.clone(), bead, agent));
    }
    for (_, bead, _) in &runs {
        let settled = dev.settled_bead(&rig, bead, WORK).await;
        assert_eq!(settled["status"], "closed", "{settled}");
    }
    let entries = dev.get(&format!("/api/rigs/{rig}/review-queue?limit=100")).await;
    let entries = entries.data().as_array().cloned().unwrap_or_default();
    let sent_back: Vec<_> = entries.iter().filter(|e| e["status"] == "rework").collect();
    assert_eq!(sent_back.len(), 1, "{entries:?}");
    assert_eq!(sent_back[0]["result"]["state"], "conflict", "{entries:?}");
    let prompts: Vec<String> = ["clash1", "clash2"]
        .iter()
        .flat_map(|s| model.requests_for(s))
        .flat_map(|r| r.user_texts())
        .collect();
    assert!(
        prompts
            .iter()
            .any(|t| t.contains("conflicts with 'main'") && t.contains("git merge origin/main")),
        "{prompts:?}"
    );
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(&repo)
        .args(["show", "main:shared.txt"])
        .output()
        .expect("git");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "one-and-two");
    let pulls: Vec<_> = forge.pulls().into_iter().filter(|p| p.repo == "clashing").collect();
    assert!(pulls.len() == 2 && pulls.iter().all(|p| p.merge_commit.is_some()), "{pulls:?}");
    runs
}

/// The rig on a GitLab project (a rig's own forge: a GitLab token) that reviews through merge
/// requests, squashed; its `(rig, bead, agent)`.
async fn merge_request_scenario(
    local: &LocalTown,
    model: &ModelServer,
    forge: &ForgeStub,
    town: &str,
) -> (String, String, String) {
    let dev = &local.worker;
    let seed = Origin::new();
    let (git_url, repo) = forge.add_repo("on-gitlab", &seed.path);
    let settings = json!({ "merge_strategy": "pr", "require_review": 1, "merge_method": "squash" });
    let rig = add_rig(dev, town, "on-gitlab", &git_url, settings).await;
    forge.allow_git_token(GITLAB_TOKEN);
    let put = dev
        .call(
            Method::PUT,
            &format!("/api/towns/{town}/rigs/{rig}/forge"),
            &Auth::Internal,
            json!({"kind": "gitlab", "api_url": format!("{}/api/v4", forge.url()),
                   "token": GITLAB_TOKEN, "webhook_secret": GITLAB_HOOK_TOKEN}),
        )
        .await;
    assert_eq!(put.status, 200, "{put:?}");
    let hooks = format!("{}/api/webhooks/gitlab/{town}", dev.base_url);
    forge.deliver_gitlab_webhooks_to(&hooks, GITLAB_HOOK_TOKEN);
    model.set_runs("on-gitlab", review_rounds("as the thread asked"));
    let (bead, agent) = sling(dev, &rig, "Add the feature on GitLab", "on-gitlab").await;

    // The failed job sends the bead back; the fix goes to the same merge request.
    let failed = nth_entry(dev, &rig, 1, "rework").await;
    assert_eq!(failed["result"]["state"], "checks_failed", "{failed}");
    let url = failed["pr_url"].as_str().expect("the merge request's link").to_string();
    assert!(url.ends_with("/git/on-gitlab/-/merge_requests/1"), "{url}");

    // Green now, it waits for its approval; a reviewer opens a thread on the new head.
    nth_entry(dev, &rig, 2, "running").await;
    wait_for("the statuses to be read on the new head", WORK, async || {
        let calls = forge.gitlab_calls();
        calls.iter().filter(|c| c.path.ends_with("/statuses")).count().ge(&2).then_some(())
    })
    .await;
    forge.open_thread("on-gitlab", 1, "ann", "Please make feature.txt final").await;
    let asked = nth_entry(dev, &rig, 2, "rework").await;
    assert_eq!(asked["result"]["state"], "changes_requested", "{asked}");

    // The reworked branch is approved (the thread stays on the older head) and squashed.
    nth_entry(dev, &rig, 3, "running").await;
    forge.approve_merge_request("on-gitlab", 1, "ann").await;
    let settled = dev.settled_bead(&rig, &bead, WORK).await;
    assert_eq!(settled["status"], "closed", "{settled}");
    let git = |args: &[&str]| {
        let out = std::process::Command::new("git").arg("-C").arg(&repo).args(args).output();
        String::from_utf8_lossy(&out.expect("git").stdout).trim().to_string()
    };
    assert_eq!(git(&["show", "main:feature.txt"]), "final");
    assert_eq!(git(&["rev-list", "--count", "--merges", "main"]), "0", "squashed, not merged");
    let calls = forge.gitlab_calls();
    let merges: Vec<_> = calls.iter().filter(|c| c.method == "PUT").collect();
    assert_eq!(merges.len(), 1, "{merges:?}");
    assert_eq!(merges[0].body["squash"], true);
    assert!(calls.iter().all(|c| c.status != 401), "the token was taken: {calls:?}");
    let prompts: Vec<String> =
        model.requests_for("on-gitlab").iter().flat_map(|r| r.user_texts()).collect();
    assert!(prompts.iter().any(|t| t.contains("Please make feature.txt final")), "{prompts:?}");

    // Git used the GitLab token as GitLab takes it; a webhook without the token is refused.
    let requests: Vec<_> =
        forge.git_requests().into_iter().filter(|r| r.repo == "on-gitlab").collect();
    assert!(
        requests.iter().any(|r| r.service == "git-receive-pack" && r.status == 200)
            && requests
                .iter()
                .all(|r| r.credential.as_ref().is_none_or(|(u, ok)| u == "oauth2" && *ok)),
        "{requests:?}"
    );
    let payload = json!({"object_kind": "merge_request", "project": {"path_with_namespace": "git/on-gitlab"}});
    let (status, _) =
        forge.deliver_gitlab(&hooks, "not-the-token", "Merge Request Hook", &payload).await;
    assert_eq!(status, 401);
    (rig, bead, agent)
}

/// Slings a bead whose agent writes `<name>.txt` and calls gt_done, and waits until its review
/// entry (the `entry`th of the rig) is running with its pull request open; `(bead, agent, pull
/// request number)`.
async fn open_pull_request(
    local: &LocalTown,
    model: &ModelServer,
    forge: &ForgeStub,
    rig: &str,
    name: &str,
    entry: usize,
) -> (String, String, u64) {
    let dev = &local.worker;
    model.set_script(name, commit_then_done(&format!("{name}.txt"), name));
    let (bead, agent) = sling(dev, rig, &format!("Write {name}.txt"), name).await;
    nth_entry(dev, rig, entry, "running").await;
    let opened = || {
        forge
            .pulls()
            .iter()
            .find(|p| p.repo == "reviewed" && p.body.contains(&bead))
            .map(|p| p.number)
    };
    let number = wait_for("its pull request", WORK, async || opened()).await;
    (bead, agent, number)
}

/// The stand-in answers every pull request route the Worker calls in GitHub's shapes, and the
/// check that says so finds a shape that is not GitHub's.
#[tokio::test]
async fn the_forge_stand_in_answers_as_githubs_description_says() {
    let forge = ForgeStub::start_with_git(None).await;
    forge.allow_git_token("ghp_test");
    let seed = Origin::new();
    let (_, repo) = forge.add_repo("app", &seed.path);
    forge.require_check("ci", "README.md");
    let git = |args: &[&str]| {
        let out = std::process::Command::new("git").arg("-C").arg(&repo).args(args).output();
        assert!(out.is_ok_and(|o| o.status.success()), "git {args:?}");
    };
    git(&["branch", "feature", "main"]);
    let http = gastown_e2e::http_client(Duration::from_secs(30));
    let api = format!("{}/repos/git/app", forge.url());
    let call = |method: reqwest::Method, path: &str, body: Option<Value>| {
        let mut req = http.request(method, format!("{api}{path}")).bearer_auth("ghp_test");
        if let Some(b) = body {
            req = req.json(&b);
        }
        async move { req.send().await.expect("the stand-in answers").status().as_u16() }
    };
    let opened = json!({"title": "t", "head": "feature", "base": "main", "body": "b"});
    assert_eq!(call(Method::POST, "/pulls", Some(opened.clone())).await, 201);
    assert_eq!(call(Method::POST, "/pulls", Some(opened)).await, 422, "one open per head");
    assert_eq!(call(Method::GET, "/pulls?state=open&head=git:feature", None).await, 200);
    assert_eq!(call(Method::GET, "/pulls/1", None).await, 200);
    forge.review("app", 1, "ann", "APPROVED", "fine").await;
    for path in [
        "/pulls/1/reviews",
        "/pulls/1/comments",
        "/commits/main/check-runs",
        "/commits/main/status",
    ] {
        assert_eq!(call(Method::GET, path, None).await, 200, "{path}");
    }
    let stale = json!({"sha": "0000000000000000000000000000000000000000", "merge_method": "merge"});
    assert_eq!(call(Method::PUT, "/pulls/1/merge", Some(stale)).await, 409);
    assert_eq!(
        call(Method::PUT, "/pulls/1/merge", Some(json!({"merge_method": "squash"}))).await,
        200
    );
    let calls = forge.rest_calls();
    let report = gastown_e2e::forge_openapi::check(&calls);
    assert!(
        report
            .as_ref()
            .is_ok_and(|r| r.contains(&format!("checked {} calls, 0 problems", calls.len()))),
        "{report:?}"
    );

    // A stand-in that answered a pull request without its fields would be caught.
    let mut wrong =
        calls.iter().find(|c| c.path == "/pulls/1" && c.method == "GET").cloned().expect("a read");
    wrong.response = json!({"number": 1});
    let caught = gastown_e2e::forge_openapi::check(&[wrong]);
    assert!(caught.as_ref().is_err_and(|r| r.contains("the answer")), "{caught:?}");
}
