//! The transport of [`crate::rpc`]: calling an object through its stub, serving calls inside
//! an object, and writing JSON responses.

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use worker::{Env, Headers, Method, Request, RequestInit, Response};

use crate::error::{ApiError, ApiResult};
use crate::rpc::{decode_reply, reply_body, RPC_URL};
use crate::shards::ShardRef;

pub fn json_response(status: u16, body: &Value) -> worker::Result<Response> {
    Ok(Response::from_json(body)?.with_status(status))
}

/// The header that carries an idempotency key into an object, and the one that says its reply
/// is a replay (see `rig::idempotency`).
pub const KEY_HEADER: &str = "x-idempotency-key";
pub const REPLAY_HEADER: &str = "x-idempotent-replay";

/// Calls `op` on the object named `name` of the namespace `binding`.
pub async fn call<O: Serialize>(env: &Env, binding: &str, name: &str, op: &O) -> ApiResult<Value> {
    Ok(call_once(env, binding, name, op, None).await?.0)
}

/// [`call`] with an idempotency key; `.1` is true when the object replayed a kept reply.
pub async fn call_once<O: Serialize>(
    env: &Env,
    binding: &str,
    name: &str,
    op: &O,
    key: Option<&str>,
) -> ApiResult<(Value, bool)> {
    let stub = env
        .durable_object(binding)
        .and_then(|ns| ns.get_by_name(name))
        .map_err(ApiError::internal)?;
    let body = serde_json::to_string(op).map_err(ApiError::internal)?;
    let headers = Headers::new();
    headers.set("content-type", "application/json").map_err(ApiError::internal)?;
    if let Some(k) = key {
        headers.set(KEY_HEADER, k).map_err(ApiError::internal)?;
    }
    let mut init = RequestInit::new();
    init.with_method(Method::Post).with_headers(headers).with_body(Some(body.into()));
    let req = Request::new_with_init(RPC_URL, &init).map_err(ApiError::internal)?;
    let mut resp = stub.fetch_with_request(req).await.map_err(ApiError::internal)?;
    let status = resp.status_code();
    let replayed = resp.headers().get(REPLAY_HEADER).ok().flatten().is_some();
    let bytes = resp.bytes().await.map_err(ApiError::internal)?;
    Ok((decode_reply(status, &bytes)?, replayed))
}

/// A town shard's TownContainer object.
pub fn container_stub(env: &Env, at: &ShardRef) -> ApiResult<worker::Stub> {
    env.durable_object(super::CONTAINER_BINDING)
        .and_then(|ns| ns.get_by_name(&at.object_name()))
        .map_err(ApiError::internal)
}

/// Calls a town shard's TownContainer (and so its control server): `(status, JSON body)`.
pub async fn container_call(
    env: &Env,
    at: &ShardRef,
    method: Method,
    path: &str,
    body: Option<&Value>,
) -> ApiResult<(u16, Value)> {
    let stub = container_stub(env, at)?;
    let headers = Headers::new();
    headers.set("content-type", "application/json").map_err(ApiError::internal)?;
    headers.set(crate::container::TOWN_HEADER, &at.town).map_err(ApiError::internal)?;
    let mut init = RequestInit::new();
    init.with_method(method).with_headers(headers);
    if let Some(b) = body {
        init.with_body(Some(b.to_string().into()));
    }
    let req = Request::new_with_init(&format!("https://container{path}"), &init)
        .map_err(ApiError::internal)?;
    let mut resp = stub.fetch_with_request(req).await.map_err(ApiError::internal)?;
    let status = resp.status_code();
    let bytes = resp.bytes().await.map_err(ApiError::internal)?;
    Ok((status, serde_json::from_slice(&bytes).unwrap_or(Value::Null)))
}

/// Inside an object: decodes the op, runs `handle`, and replies with the envelope.
pub async fn serve<O: DeserializeOwned>(
    mut req: Request,
    handle: impl AsyncFnOnce(O) -> ApiResult<Value>,
) -> worker::Result<Response> {
    let result = match req.bytes().await {
        Ok(bytes) => match crate::json::from_bytes::<O>(&bytes) {
            Ok(op) => handle(op).await,
            Err(e) => Err(ApiError::Internal(format!("undecodable call: {e}"))),
        },
        Err(e) => Err(ApiError::internal(e)),
    };
    if let Err(ApiError::Internal(detail)) = &result {
        worker::console_error!("durable object call failed: {detail}");
    }
    let (status, body) = reply_body(&result);
    json_response(status, &body)
}
