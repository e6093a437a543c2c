//! A whole town on this machine, as `scripts/dev` runs it: the built Worker under `wrangler dev`
//! with `CONTAINER_URL` pointing at the real control server run natively, which in turn reports
//! to that Worker. Both sides share the container token.
//!
//! Each side must know the other's address when it starts. The harness binds the control
//! server's socket first and holds it, starts `wrangler dev` on port 0 (it reports the port it
//! got), then starts the control server on the held socket (socket activation): no port is ever
//! picked, released and hoped for.

use crate::control_server::{ControlServer, Options};
use crate::model_server::{ModelServer, MODEL_ID};
use crate::proxy::CuttableProxy;
use crate::wrangler::{WranglerDev, CONTAINER_TOKEN};
use serde_json::json;

pub struct LocalTown {
    /// The town's first shard's control server.
    pub control: ControlServer,
    /// The other shards' control servers, in order (shard 1 first), when started with
    /// [`LocalTown::start_sharded`].
    pub shards: Vec<ControlServer>,
    pub worker: WranglerDev,
    /// Between the control server and the Worker, when started with [`LocalTown::start_via_proxy`].
    pub proxy: Option<CuttableProxy>,
}

impl LocalTown {
    /// Starts both sides; agents talk to `model`. `control_env` and `worker_env` add settings
    /// (e.g. `STOP_GRACE_MS`, `SCHEDULER_TICK_MS`).
    pub async fn start(
        model: &ModelServer,
        control_env: &[(&str, &str)],
        worker_env: &[(&str, &str)],
    ) -> Self {
        Self::launch(model, control_env, worker_env, false, 1).await
    }

    /// [`LocalTown::start`] with `n` control servers, one per shard, each with its own
    /// workspace and uids; `CONTAINER_URL` lists them in shard order, as `scripts/dev --shards`.
    pub async fn start_sharded(
        model: &ModelServer,
        n: usize,
        control_env: &[(&str, &str)],
        worker_env: &[(&str, &str)],
    ) -> Self {
        Self::launch(model, control_env, worker_env, false, n).await
    }

    /// Shard `n`'s control server.
    pub fn shard(&self, n: usize) -> &ControlServer {
        match n {
            0 => &self.control,
            n => &self.shards[n - 1],
        }
    }

    /// [`LocalTown::start`], with the control server's calls to the Worker (tools, heartbeats)
    /// going through a [`CuttableProxy`] the test can cut.
    pub async fn start_via_proxy(
        model: &ModelServer,
        control_env: &[(&str, &str)],
        worker_env: &[(&str, &str)],
    ) -> Self {
        Self::launch(model, control_env, worker_env, true, 1).await
    }

    async fn launch(
        model: &ModelServer,
        control_env: &[(&str, &str)],
        worker_env: &[(&str, &str)],
        via_proxy: bool,
        shards: usize,
    ) -> Self {
        let sockets: Vec<std::net::TcpListener> = (0..shards.max(1))
            .map(|_| {
                std::net::TcpListener::bind("127.0.0.1:0").expect("bind a control server's socket")
            })
            .collect();
        let urls: Vec<String> = sockets
            .iter()
            .map(|s| format!("http://127.0.0.1:{}", s.local_addr().expect("socket address").port()))
            .collect();
        let container_url = urls.join(",");
        let model_ref = format!("scripted/{MODEL_ID}");
        let mut env: Vec<(&str, &str)> =
            vec![("CONTAINER_URL", &container_url), ("GASTOWN_MODEL", &model_ref)];
        env.extend_from_slice(worker_env);
        let worker = WranglerDev::start_with_env(&env).await;
        let proxy = match via_proxy {
            true => {
                let addr = worker
                    .base_url
                    .trim_start_matches("http://")
                    .parse()
                    .expect("the Worker's address");
                Some(CuttableProxy::start(addr).await)
            }
            false => None,
        };
        let api_url = proxy.as_ref().map_or(worker.base_url.clone(), |p| p.url.clone());

        // The town runs the product's defaults, the warm pool of one included (filled at once).
        let mut servers: Vec<ControlServer> = sockets
            .into_iter()
            .enumerate()
            .map(|(shard, socket)| {
                let mut options = Options::default()
                    .listener(socket)
                    .env("GASTOWN_API_URL", api_url.clone())
                    .env("GASTOWN_MODEL_BASE_URL", model.base_url())
                    .env("GASTOWN_SHARD", shard.to_string())
                    .env("WARM_POOL_SIZE", "1")
                    .env("WARM_POOL_MODEL", model_ref.clone());
                for (k, v) in control_env {
                    options = options.env(k, *v);
                }
                let control = ControlServer::start(options);
                assert_eq!(
                    control.token.as_deref(),
                    Some(CONTAINER_TOKEN),
                    "Worker and control server share the container token"
                );
                assert_eq!(control.base, urls[shard]);
                control
            })
            .collect();
        let control = servers.remove(0);
        Self { control, shards: servers, worker, proxy }
    }

    /// Creates a town and one rig on `git_url`; returns `(town id, rig id)`.
    pub async fn town_and_rig(&self, town_name: &str, git_url: &str) -> (String, String) {
        let town = self.worker.post("/api/towns", json!({ "name": town_name })).await;
        let town = town.data()["id"].as_str().expect("town id").to_string();
        let rig = self.rig(&town, "app", git_url).await;
        (town, rig)
    }

    /// Adds a rig to `town`; returns its id.
    pub async fn rig(&self, town: &str, name: &str, git_url: &str) -> String {
        let rig = self
            .worker
            .post(&format!("/api/towns/{town}/rigs"), json!({ "name": name, "git_url": git_url }))
            .await;
        rig.data()["id"].as_str().expect("rig id").to_string()
    }
}
