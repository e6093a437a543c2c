//! Support for the end-to-end tests: processes under test, a scripted model, a recording
//! stand-in for the Worker API and local origin repositories.

pub mod model_server;
pub mod wrangler;
