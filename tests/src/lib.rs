//! Support for the end-to-end tests: processes under test, a scripted model, a recording
//! stand-in for the Worker API and local origin repositories.

pub mod control_server;
pub mod model_server;
pub mod origin;
pub mod procs;
pub mod project;
pub mod town;
pub mod wait;
pub mod worker_stub;
pub mod wrangler;
