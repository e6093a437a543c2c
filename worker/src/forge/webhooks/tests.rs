use hmac::{Hmac, Mac};
use serde_json::json;

use super::*;
use crate::forge::tests::{run, token_forge, town_with_rig};
use crate::forge::PutForge;
use crate::native_world::World;

const SECRET: &str = "whsec_value_123";

fn sign(secret: &str, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("key");
    mac.update(body.as_bytes());
    let bytes = mac.finalize().into_bytes();
    format!("sha256={}", bytes.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

fn delivery(event: &str, id: &str, repository: &str, secret: &str) -> Webhook {
    let body = json!({"action": "submitted", "repository": {"full_name": repository}}).to_string();
    Webhook {
        forge: HookForge::GitHub,
        event: event.into(),
        delivery: id.into(),
        proof: sign(secret, &body),
        body,
    }
}

fn gitlab_delivery(event: &str, id: &str, project: &str, token: &str) -> Webhook {
    let body = json!({"object_kind": "merge_request", "project": {"path_with_namespace": project}})
        .to_string();
    Webhook {
        forge: HookForge::GitLab,
        event: event.into(),
        delivery: id.into(),
        proof: token.into(),
        body,
    }
}

/// A running review entry of the rig whose pull request was read just now.
fn running_pull_request(world: &World, rig_id: &str) {
    world.with_rig(rig_id, |r| {
        r.db.exec(
            "INSERT INTO review_queue (id, agent_id, bead_id, branch, status, created_at, pr_number, polled_ms)
             VALUES ('e1', 'a1', 'b1', 'polecat/a/b1', 'running', 'now', 7, 1)",
            vec![],
        )
        .expect("entry");
    });
}

fn polled(world: &World, rig_id: &str) -> Option<i64> {
    world.with_rig(rig_id, |r| r.polled_ms("e1")).expect("polled")
}

#[test]
fn a_signed_delivery_has_the_repositorys_rigs_read_their_pull_request_at_once() {
    let world = World::new(&[]);
    let (db, memory, rig_id) = town_with_rig(&world);
    let town = TownObject { db: &db, fx: &world, memory: &memory };
    run(&town, PutForge { rig_id: None, forge: token_forge() }).expect("forge");
    running_pull_request(&world, &rig_id);

    let answer = run(&town, delivery("pull_request_review", "d1", "o/r", SECRET)).expect("taken");
    assert_eq!(answer["rigs"], json!([rig_id]));
    assert_eq!(polled(&world, &rig_id), None, "due at the next pass");

    // The same delivery again changes nothing; another repository's is not this rig's.
    world.with_rig(&rig_id, |r| r.mark_polled("e1", 5)).expect("polled");
    let again = run(&town, delivery("pull_request_review", "d1", "o/r", SECRET)).expect("taken");
    assert_eq!(again["duplicate"], "d1");
    let other = run(&town, delivery("check_run", "d2", "o/other", SECRET)).expect("taken");
    assert_eq!(other["rigs"], json!([]));
    let unrelated = run(&town, delivery("push", "d3", "o/r", SECRET)).expect("taken");
    assert!(unrelated["ignored"].is_string(), "{unrelated}");
    assert_eq!(polled(&world, &rig_id), Some(5));
}

#[test]
fn a_bad_signature_is_refused_and_changes_nothing() {
    let world = World::new(&[]);
    let (db, memory, rig_id) = town_with_rig(&world);
    let town = TownObject { db: &db, fx: &world, memory: &memory };
    running_pull_request(&world, &rig_id);
    let unsigned = run(&town, delivery("pull_request", "d1", "o/r", SECRET));
    assert_eq!(unsigned.map_err(|e| e.status()).map(|_| ()), Err(401), "no secret configured");
    run(&town, PutForge { rig_id: None, forge: token_forge() }).expect("forge");
    for forged in [
        delivery("pull_request", "d1", "o/r", "not-the-secret"),
        Webhook { proof: "sha256=zz".into(), ..delivery("pull_request", "d1", "o/r", SECRET) },
        Webhook { proof: String::new(), ..delivery("pull_request", "d1", "o/r", SECRET) },
        Webhook {
            body: "{\"tampered\":1}".into(),
            ..delivery("pull_request", "d1", "o/r", SECRET)
        },
    ] {
        let refused = run(&town, forged);
        assert_eq!(refused.map_err(|e| e.status()).map(|_| ()), Err(401));
    }
    assert_eq!(polled(&world, &rig_id), Some(1), "nothing changed");
    // Refused deliveries are not remembered: the real one still counts.
    let real = run(&town, delivery("pull_request", "d1", "o/r", SECRET)).expect("taken");
    assert_eq!(real["rigs"], json!([rig_id]));
}

#[test]
fn the_route_takes_githubs_headers_and_the_raw_body() {
    use crate::api::plan_with_headers;
    use crate::auth::Caller;
    use crate::routes::Method;
    let body = "{\"repository\":{\"full_name\":\"o/r\"}}";
    let plan = plan_with_headers(
        Method::Post,
        "/api/webhooks/github/t1",
        Caller::Public,
        body,
        &[
            ("x-github-event", "status"),
            ("x-github-delivery", "d9"),
            ("x-hub-signature-256", "sha256=00"),
        ],
    );
    let Ok(Plan::Town { town_id, op, status: 200 }) = plan else { panic!("{plan:?}") };
    assert_eq!(town_id, "t1");
    let expected = Webhook {
        forge: HookForge::GitHub,
        event: "status".into(),
        delivery: "d9".into(),
        proof: "sha256=00".into(),
        body: body.into(),
    };
    assert_eq!(op, crate::town::op::TownCall::of(&expected).expect("op"));
    assert!(matches!(
        crate::routes::find(Method::Post, "/api/webhooks/github/t1").map(|m| m.access()),
        Ok(crate::routes::Access::Public)
    ));
}

#[test]
fn a_gitlab_delivery_with_the_secret_as_its_token_nudges_the_projects_rigs() {
    let world = World::new(&[]);
    let (db, memory, rig_id) = town_with_rig(&world);
    let town = TownObject { db: &db, fx: &world, memory: &memory };
    run(&town, PutForge { rig_id: None, forge: token_forge() }).expect("forge");
    running_pull_request(&world, &rig_id);
    world.with_rig(&rig_id, |r| r.mark_polled("e1", 5)).expect("polled");

    for wrong in ["", "whsec_value_12", "whsec_value_1234", "sha256=whsec_value_123"] {
        let refused = run(&town, gitlab_delivery("Merge Request Hook", "g1", "o/r", wrong));
        assert_eq!(refused.map_err(|e| e.status()).map(|_| ()), Err(401), "{wrong:?}");
    }
    assert_eq!(polled(&world, &rig_id), Some(5), "nothing changed");
    let other = run(&town, gitlab_delivery("Pipeline Hook", "g0", "o/other", SECRET)).expect("ok");
    assert_eq!(other["rigs"], json!([]));
    let push = run(&town, gitlab_delivery("Push Hook", "g2", "o/r", SECRET)).expect("ok");
    assert!(push["ignored"].is_string(), "{push}");
    let taken = run(&town, gitlab_delivery("Pipeline Hook", "g1", "o/r", SECRET)).expect("ok");
    assert_eq!(taken["rigs"], json!([rig_id]));
    assert_eq!(polled(&world, &rig_id), None, "due at the next pass");
    let again = run(&town, gitlab_delivery("Pipeline Hook", "g1", "o/r", SECRET)).expect("ok");
    assert_eq!(again["duplicate"], "g1");
}

#[test]
fn the_gitlab_route_takes_its_token_and_idempotency_key() {
    use crate::api::plan_with_headers;
    use crate::auth::Caller;
    use crate::routes::Method;
    let body = "{}";
    let headers = [
        ("x-gitlab-event", "Merge Request Hook"),
        ("x-gitlab-token", "tok"),
        ("x-gitlab-event-uuid", "u1"),
        ("idempotency-key", "k1"),
    ];
    let plan =
        plan_with_headers(Method::Post, "/api/webhooks/gitlab/t1", Caller::Public, body, &headers);
    let Ok(Plan::Town { op, .. }) = plan else { panic!("{plan:?}") };
    let expected = Webhook {
        forge: HookForge::GitLab,
        event: "Merge Request Hook".into(),
        delivery: "k1".into(),
        proof: "tok".into(),
        body: body.into(),
    };
    assert_eq!(op, crate::town::op::TownCall::of(&expected).expect("op"));
    // Without the key (GitLab before 17.4), the event's UUID.
    let plan = plan_with_headers(
        Method::Post,
        "/api/webhooks/gitlab/t1",
        Caller::Public,
        body,
        &headers[..3],
    );
    let Ok(Plan::Town { op, .. }) = plan else { panic!("{plan:?}") };
    let expected = Webhook { delivery: "u1".into(), ..expected };
    assert_eq!(op, crate::town::op::TownCall::of(&expected).expect("op"));
}
