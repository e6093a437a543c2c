//! Property tests of everything that reads request input in the Worker before a Durable Object
//! is called: the route table, query strings, agent tokens and JSON bodies. Any input gets a
//! value or a 4xx error with a message, never a panic and never a 5xx.

use gastown_worker::error::ApiError;
use gastown_worker::requests::{parse_body, Shape, Validate};
use gastown_worker::rig::beads::NewBead;
use gastown_worker::rig::config::RigConfigInput;
use gastown_worker::rig::convoys::NewConvoy;
use gastown_worker::rig::sling::SlingRequest;
use gastown_worker::routes::{find, Method};
use gastown_worker::{jwt, query};
use proptest::prelude::*;

fn is_client_error(e: &ApiError) -> bool {
    (400..500).contains(&e.status()) && !e.public_message().is_empty()
}

fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "api",
            "rigs",
            "towns",
            "agents",
            "beads",
            "convoys",
            "container",
            "hook",
            "done",
            "r1",
            "..",
            "%2F",
            "",
            "a.b",
            "é"
        ])
        .prop_map(String::from),
        "[ -~]{0,12}",
    ]
}

fn path() -> impl Strategy<Value = String> {
    prop::collection::vec(segment(), 0..7).prop_map(|s| format!("/{}", s.join("/")))
}

fn query_string() -> impl Strategy<Value = String> {
    let key = prop::sample::select(vec![
        "status",
        "type",
        "limit",
        "offset",
        "role",
        "assignee_agent_id",
        "convoy_id",
        "x",
        "",
    ]);
    let value = prop_oneof![
        prop::sample::select(vec![
            "open",
            "closed",
            "-1",
            "99999999999999999999",
            "polecat",
            "%ZZ",
            "a&b",
            "5"
        ])
        .prop_map(String::from),
        ".{0,10}"
    ];
    prop::collection::vec((key, value), 0..5).prop_map(|kv| {
        kv.into_iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&")
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn every_path_routes_or_is_a_client_error(p in path(), m in prop::sample::select(vec!["GET", "POST", "PUT", "PATCH", "DELETE", "BREW"])) {
        if let Err(e) = find(Method::parse(m), &p) {
            prop_assert!(is_client_error(&e), "{m} {p}: {e:?}");
        }
    }

    #[test]
    fn every_query_is_a_filter_or_a_client_error(q in query_string()) {
        for r in [query::bead_filter(&q).map(|_| ()), query::agent_filter(&q).map(|_| ()), query::review_filter(&q).map(|_| ()), query::event_filter(&q, None).map(|_| ())] {
            if let Err(e) = r {
                prop_assert!(is_client_error(&e), "{q}: {e:?}");
            }
        }
    }

    #[test]
    fn random_tokens_are_refused_without_a_panic(parts in prop::collection::vec("[A-Za-z0-9_=+/-]{0,40}", 0..5), secret in ".{0,16}") {
        let token = parts.join(".");
        prop_assert!(jwt::verify(&token, secret.as_bytes(), 1_000).is_err(), "{token}");
    }

    #[test]
    fn every_body_parses_or_is_a_client_error(body in prop_oneof![".{0,200}".prop_map(String::from), json_ish()]) {
        fn check<T: serde::de::DeserializeOwned + Shape + Validate>(b: &str) -> Result<(), String> {
            match parse_body::<T>(b.as_bytes()) {
                Ok(_) => Ok(()),
                Err(e) if is_client_error(&e) => Ok(()),
                Err(e) => Err(format!("{e:?}")),
            }
        }
        for r in [check::<NewBead>(&body), check::<SlingRequest>(&body), check::<NewConvoy>(&body), check::<RigConfigInput>(&body)] {
            prop_assert!(r.is_ok(), "{body}: {r:?}");
        }
    }
}

/// JSON objects with the API's field names and values of every type.
fn json_ish() -> impl Strategy<Value = String> {
    let key = prop::sample::select(vec![
        "type",
        "title",
        "body",
        "priority",
        "labels",
        "metadata",
        "convoy_id",
        "beads",
        "town_id",
        "git_url",
        "merge_gates",
        "gate_timeout_secs",
        "merge_strategy",
        "max_rework_rounds",
    ]);
    let value = prop_oneof![
        Just(serde_json::json!(null)),
        any::<i64>().prop_map(|n| serde_json::json!(n)),
        ".{0,12}".prop_map(|s| serde_json::json!(s)),
        Just(serde_json::json!(["cargo test"])),
        Just(serde_json::json!([{"title": "t"}])),
        Just(serde_json::json!({"a": [1, {"b": null}]})),
        Just(serde_json::json!("issue")),
    ];
    prop::collection::btree_map(key, value, 0..6)
        .prop_map(|m| serde_json::to_string(&m).unwrap_or_default())
}
