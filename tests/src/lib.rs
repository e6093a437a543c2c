//! Support for the end-to-end tests: processes under test, a scripted model, a recording
//! stand-in for the Worker API and local origin repositories.

pub mod control_server;
pub mod forge_git;
pub mod forge_gitlab;
pub mod forge_openapi;
pub mod forge_pulls;
pub mod forge_stub;
pub mod model_server;
pub mod origin;
pub mod podman;
pub mod procs;
pub mod project;
pub mod proxy;
pub mod skip;
pub mod town;
pub mod wait;
pub mod worker_stub;
pub mod wrangler;

/// An HTTP client for talking to the processes under test. `workerd` (behind `wrangler dev`)
/// closes a keep-alive connection after about 5 s idle and Bun (`kilo serve`) after 10 s; a
/// pooled connection picked up at that moment fails with a connection error. Connections idle
/// for more than 2 s are therefore never reused.
pub fn http_client(timeout: std::time::Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(timeout)
        .pool_idle_timeout(std::time::Duration::from_secs(2))
        .no_proxy()
        .build()
        .expect("http client")
}

/// Sets `dir`'s mode (a test's temporary folder is made with the umask's, 0755 under 022).
pub fn set_mode(dir: &std::path::Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).expect("chmod");
}
