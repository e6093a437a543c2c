//! TownContainer: placeholder for issue 4. The class must exist for wrangler's `[[containers]]`
//! entry and the v2 migration; until the container lifecycle is implemented it answers every
//! request with a clear 503 in the API's envelope.

use worker::{durable_object, DurableObject, Env, Request, Response, State};

use super::call::json_response;
use crate::error::ApiError;

#[durable_object(fetch)]
pub struct TownContainer {
    _state: State,
}

impl DurableObject for TownContainer {
    fn new(state: State, _env: Env) -> Self {
        Self { _state: state }
    }

    async fn fetch(&self, _req: Request) -> worker::Result<Response> {
        let e = ApiError::Unavailable("container not available yet: the TownContainer is not implemented (issue 4)".into());
        json_response(e.status(), &e.envelope())
    }
}
