//! Extractors whose rejections are this crate's JSON errors (axum's own answer in plain text).

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use crate::error::Error;

/// A JSON body; malformed JSON, a wrong content type, a missing field or an oversized body is a
/// 4xx with a message.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = Error;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Self(v)),
            Err(JsonRejection::BytesRejection(r))
                if r.status() == StatusCode::PAYLOAD_TOO_LARGE =>
            {
                Err(Error::TooLarge(format!(
                    "request body is larger than {} bytes",
                    super::MAX_BODY
                )))
            }
            Err(r) => Err(Error::bad_request(r.body_text())),
        }
    }
}

/// Like [`JsonBody`], but an empty body reads as `T::default()` (stop takes an optional body).
pub struct OptionalJsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Default> FromRequest<S> for OptionalJsonBody<T> {
    type Rejection = Error;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = axum::body::Bytes::from_request(req, state).await.map_err(|r| {
            if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
                Error::TooLarge(format!("request body is larger than {} bytes", super::MAX_BODY))
            } else {
                Error::bad_request(r.body_text())
            }
        })?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self(T::default()));
        }
        serde_json::from_slice(&bytes)
            .map(Self)
            .map_err(|e| Error::bad_request(format!("invalid JSON body: {e}")))
    }
}

/// Query parameters; bad values are a 400 with a message.
pub struct QueryParams<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for QueryParams<T> {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Self(q.0))
            .map_err(|r: QueryRejection| Error::bad_request(r.body_text()))
    }
}

/// The `:agent_id` path segment, validated as an id.
pub struct AgentId(pub String);

impl<S: Send + Sync> FromRequestParts<S> for AgentId {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(id) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|r| Error::bad_request(r.body_text()))?;
        shared_types::validate::id(&id).map_err(|m| Error::bad_request(format!("agentId {m}")))?;
        Ok(Self(id))
    }
}
