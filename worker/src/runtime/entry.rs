//! The Worker's fetch handler: route, authenticate, plan, call the object, reply.

use serde_json::{json, Value};
use worker::{event, Context, Env, Headers, Request, RequestInit, Response};

use super::call::{call, call_once, container_call, container_stub, json_response};
use super::{platform, IDENTITY_BINDING, RIG_BINDING, TOWN_BINDING};
use crate::api::{self, Incoming, Plan};
use crate::auth::{self, Caller, Credentials, Secrets};
use crate::container;
use crate::container::object::ActivityReport;
use crate::error::{success, ApiError, ApiResult};
use crate::requests::MAX_BODY_BYTES;
use crate::rig::agents::ContainerHeartbeat;
use crate::rig::op::RigCall;
use crate::routes::{self, Method};
use crate::shards::{self, ListShards, ReportAnswer, ShardChoice, ShardOfRig, ShardRef, ShardView};
use crate::town::op::TownCall;

/// Env names (documented in wrangler.toml).
const INTERNAL_API_SECRET: &str = "INTERNAL_API_SECRET";
const JWT_SECRET: &str = "GASTOWN_JWT_SECRET";
const CONTAINER_TOKEN: &str = "CONTAINER_TOKEN";
const ALLOW_LOCAL_REPOS: &str = "ALLOW_LOCAL_REPOS";

enum Outcome {
    Json(u16, Value),
    /// Sent without the envelope.
    Bare(u16, Value),
    Raw(Response),
}

#[event(fetch)]
async fn fetch(mut req: Request, env: Env, ctx: Context) -> worker::Result<Response> {
    match handle(&mut req, &env, &ctx).await {
        Ok(Outcome::Json(status, data)) => json_response(status, &success(data)),
        Ok(Outcome::Bare(status, body)) => json_response(status, &body),
        Ok(Outcome::Raw(resp)) => Ok(resp),
        Err(e) => {
            if let ApiError::Internal(detail) = &e {
                worker::console_error!("{} {}: {detail}", req.method(), req.path());
            }
            json_response(e.status(), &e.envelope())
        }
    }
}

fn header(req: &Request, name: &str) -> Option<String> {
    req.headers().get(name).ok().flatten()
}

async fn read_body(req: &mut Request) -> ApiResult<Vec<u8>> {
    let too_big =
        || ApiError::bad_request(format!("request body must be at most {MAX_BODY_BYTES} bytes"));
    if let Some(len) = header(req, "content-length").and_then(|l| l.parse::<usize>().ok()) {
        if len > MAX_BODY_BYTES {
            return Err(too_big());
        }
    }
    let bytes = req.bytes().await.map_err(|_| ApiError::bad_request("unreadable request body"))?;
    if bytes.len() > MAX_BODY_BYTES {
        return Err(too_big());
    }
    Ok(bytes)
}

async fn handle(req: &mut Request, env: &Env, ctx: &Context) -> ApiResult<Outcome> {
    let method = Method::parse(req.method().as_ref());
    let path = req.path();
    let matched = routes::find(method, &path);
    // Under the authenticated prefixes, credentials are checked before an unknown route (404)
    // or a malformed id (400), as the reference's middleware does.
    let access = match &matched {
        Ok(m) => m.access(),
        Err(e) => routes::prefix_access(&path).ok_or_else(|| e.clone())?,
    };
    let (internal_key, authorization, container_token) = (
        header(req, "x-internal-api-key"),
        header(req, "authorization"),
        header(req, "x-container-token"),
    );
    let (key_secret, jwt_secret, token_secret) = (
        platform::var(env, INTERNAL_API_SECRET),
        platform::var(env, JWT_SECRET),
        platform::var(env, CONTAINER_TOKEN),
    );
    let caller = auth::authorize(
        &access,
        &Credentials {
            internal_key: internal_key.as_deref(),
            authorization: authorization.as_deref(),
            container_token: container_token.as_deref(),
        },
        &Secrets {
            internal_key: key_secret.as_deref(),
            jwt_secret: jwt_secret.as_deref(),
            container_token: token_secret.as_deref(),
        },
        (platform::now_millis() / 1000) as u64,
    )?;
    let matched = matched?;
    if let Caller::Agent(claims) = &caller {
        // An agent's call is real activity: it renews its town container's sleepAfter. Off the
        // request's path; a failure only costs the renewal.
        let (env, town, rig) =
            (env.clone(), claims.town_id.clone(), ShardOfRig { rig_id: claims.rig_id.clone() });
        ctx.wait_until(async move {
            let renewed = async {
                let at = match TownCall::of(&rig) {
                    Ok(op) if !rig.rig_id.is_empty() => {
                        shards::shard_answer(&town, call(&env, TOWN_BINDING, &town, &op).await?)?
                    }
                    _ => ShardRef::first(&town),
                };
                let activity = Some(&json!({}));
                container_call(&env, &at, worker::Method::Post, container::ACTIVITY_PATH, activity)
                    .await
            };
            if let Err(e) = renewed.await {
                worker::console_error!("could not renew the town container's sleepAfter: {e}");
            }
        });
    }
    let key_header = header(req, "idempotency-key");
    let body = if matches!(method, Method::Get | Method::Delete) {
        Vec::new()
    } else {
        read_body(req).await?
    };
    let query = req.url().map_err(ApiError::internal)?.query().unwrap_or("").to_string();
    let header = |name: &str| req.headers().get(name).ok().flatten();
    let incoming = Incoming {
        params: matched.params,
        caller,
        query: &query,
        body: &body,
        allow_local_repos: platform::var(env, ALLOW_LOCAL_REPOS).is_some_and(|v| v == "true"),
        new_id: &platform::new_id,
        header: &header,
    };
    let plan = (matched.endpoint.plan)(&incoming)?;
    match plan {
        Plan::Page => dashboard_page().map(Outcome::Raw).map_err(ApiError::internal),
        Plan::Stream { at, agent_id, ticket } => {
            let at = choose_shard(env, at).await;
            open_stream(req, env, &at, &agent_id, &ticket).await.map(Outcome::Raw)
        }
        Plan::Container { at, path, body } => {
            let at = choose_shard(env, at).await;
            forward_to_container(req, env, &at, &path, body).await.map(Outcome::Raw)
        }
        // Only calls that change something on an object honour a key.
        plan @ (Plan::Rig { .. } | Plan::Town { .. }) => {
            let key = api::idempotency_key(&incoming.caller, method, key_header.as_deref())?;
            execute(plan, env, key.as_deref()).await
        }
        plan => execute(plan, env, None).await,
    }
}

/// Carries out a plan. `key`: the call's scoped idempotency key; rig ops honour it (a replay
/// skips the follow-ups, which the first run made).
async fn execute(plan: Plan, env: &Env, key: Option<&str>) -> ApiResult<Outcome> {
    match plan {
        Plan::Health => Ok(Outcome::Bare(200, json!({ "status": "ok" }))),
        Plan::Rig { rig_id, op, status, follow_up, reply } => {
            let (data, replayed) = call_once(env, RIG_BINDING, &rig_id, &op, key).await?;
            let follow_ups =
                if replayed { Vec::new() } else { api::follow_up(follow_up, &rig_id, &data) };
            for (identity, op) in follow_ups {
                if let Err(e) = call(env, IDENTITY_BINDING, &identity, &op).await {
                    worker::console_error!("identity update failed: {e}");
                }
            }
            Ok(Outcome::Json(status, reply.body(data)))
        }
        // Keys are honoured by the mayor's ops (its retried tool calls); other town ops ignore them.
        Plan::Town { town_id, op, status } => {
            Ok(Outcome::Json(status, call_once(env, TOWN_BINDING, &town_id, &op, key).await?.0))
        }
        Plan::Identity { identity, op } => {
            Ok(Outcome::Json(200, call(env, IDENTITY_BINDING, &identity, &op).await?))
        }
        Plan::Heartbeat { at, report: shard_report, rig_updates } => {
            let report = ActivityReport {
                heartbeat_running_agents: Some(shard_report.running),
                boot_id: shard_report.boot_id.clone(),
            };
            let report = serde_json::to_value(report).map_err(ApiError::internal)?;
            if let Err(e) = container_call(
                env,
                &at,
                worker::Method::Post,
                container::ACTIVITY_PATH,
                Some(&report),
            )
            .await
            {
                worker::console_error!("could not report the heartbeat to the town container: {e}");
            }
            let answer = call(env, TOWN_BINDING, &at.town, &TownCall::of(&shard_report)?).await?;
            let rigs: ReportAnswer = crate::json::decode(answer).map_err(ApiError::internal)?;
            // Only the calling town's rigs; checked for all before any is updated.
            if let Some((foreign, _)) =
                rig_updates.iter().find(|(rig, _)| !rigs.town_rigs.contains(rig))
            {
                return Err(ApiError::bad_request(format!(
                    "agents.rigId: {foreign} is not a rig of town {}",
                    at.town
                )));
            }
            let mut updated = 0;
            // A rig that moved to another shard is that shard's to report.
            for (rig_id, agents) in rig_updates.into_iter().filter(|(r, _)| rigs.here.contains(r)) {
                let data =
                    call(env, RIG_BINDING, &rig_id, &RigCall::of(&ContainerHeartbeat { agents })?)
                        .await?;
                updated += data["updated"].as_u64().unwrap_or(0);
            }
            Ok(Outcome::Json(200, json!({ "updated": updated })))
        }
        Plan::Page | Plan::Stream { .. } | Plan::Container { .. } => Err(ApiError::Internal(
            "pages, streams and forwards are served from the request".into(),
        )),
        Plan::TownContainer { town_id, path, body } => {
            let at = ShardRef::first(&town_id);
            let (status, reply) =
                container_call(env, &at, worker::Method::Post, path, Some(&body)).await?;
            match status {
                200 => Ok(Outcome::Json(200, reply["data"].clone())),
                _ => Err(ApiError::from_status(
                    status,
                    reply["error"]
                        .as_str()
                        .unwrap_or("the town's container object failed")
                        .to_string(),
                )),
            }
        }
    }
}

/// The shard of a person's container call: the one named, or the one whose control server
/// knows the agent (asked in turn, the first shard first; a town of one shard is not asked).
async fn choose_shard(env: &Env, choice: ShardChoice) -> ShardRef {
    let (town, agent) = match choice {
        ShardChoice::Named(at) => return at,
        ShardChoice::OfAgent { town, agent } => (town, agent),
    };
    let first = ShardRef::first(&town);
    let listed = match TownCall::of(&ListShards) {
        Ok(op) => call(env, TOWN_BINDING, &town, &op).await,
        Err(e) => Err(e),
    };
    let shards: Vec<u32> = listed
        .and_then(|v| crate::json::decode::<Vec<ShardView>>(v).map_err(ApiError::internal))
        .map(|views| views.into_iter().map(|v| v.shard).filter(|s| *s > 0).collect())
        .unwrap_or_default();
    if shards.is_empty() {
        return first;
    }
    let path = format!("/agents/{agent}/status");
    for at in
        std::iter::once(first.clone()).chain(shards.into_iter().map(|s| ShardRef::new(&town, s)))
    {
        if let Ok((200, _)) = container_call(env, &at, worker::Method::Get, &path, None).await {
            return at;
        }
    }
    first
}

/// Forwards a container route to the town's TownContainer object, method and body unchanged.
/// Credentials are not forwarded: the object adds the container's own secret.
async fn forward_to_container(
    req: &Request,
    env: &Env,
    at: &ShardRef,
    path: &str,
    body: Vec<u8>,
) -> ApiResult<Response> {
    let stub = container_stub(env, at)?;
    let headers = Headers::new();
    headers.set("content-type", "application/json").map_err(ApiError::internal)?;
    headers.set(container::TOWN_HEADER, &at.town).map_err(ApiError::internal)?;
    let mut init = RequestInit::new();
    init.with_method(req.method()).with_headers(headers);
    if !body.is_empty() {
        init.with_body(Some(js_sys::Uint8Array::from(body.as_slice()).into()));
    }
    let url = format!("https://container{path}");
    let forwarded = Request::new_with_init(&url, &init).map_err(ApiError::internal)?;
    stub.fetch_with_request(forwarded).await.map_err(ApiError::internal)
}

/// The live stream: the WebSocket upgrade goes, with its ticket, through the town's
/// TownContainer to the control server's `/agents/:id/ws`, which redeems the ticket (one-shot,
/// 60 s, bound to the agent) and streams; the socket is passed through, not relayed.
async fn open_stream(
    req: &Request,
    env: &Env,
    at: &ShardRef,
    agent: &str,
    ticket: &str,
) -> ApiResult<Response> {
    if !header(req, "upgrade").is_some_and(|u| u.eq_ignore_ascii_case("websocket")) {
        return Err(ApiError::bad_request(
            "this route is a WebSocket: open it with Upgrade: websocket",
        ));
    }
    let stub = container_stub(env, at)?;
    let headers = Headers::new();
    headers.set("upgrade", "websocket").map_err(ApiError::internal)?;
    let mut init = RequestInit::new();
    init.with_method(worker::Method::Get).with_headers(headers);
    let url = format!("https://container/agents/{agent}/ws?ticket={ticket}");
    stub.fetch_with_request(Request::new_with_init(&url, &init).map_err(ApiError::internal)?)
        .await
        .map_err(ApiError::internal)
}

/// The dashboard: one static page, compiled in; it holds no secret (the key is typed in it).
fn dashboard_page() -> worker::Result<Response> {
    let resp = Response::from_html(crate::dashboard::HTML)?;
    let headers = resp.headers();
    headers.set("content-security-policy", crate::dashboard::CSP)?;
    headers.set("cache-control", "no-store")?;
    headers.set("referrer-policy", "no-referrer")?;
    headers.set("x-frame-options", "DENY")?;
    Ok(resp)
}
