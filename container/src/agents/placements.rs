//! Where every agent's run is: its Kilo process, its session and its checkout, with the live
//! Kilo processes and the warm pool's ready ones, in one table behind one lock.
//!
//! One table because these facts change together: a start places a run on a process, then
//! gives it a folder and a session; a process's exit ends every run on it and frees their
//! sessions; a stop takes one run off. Written in separate structures they could be seen half
//! changed (a session still naming an agent whose process is gone), and every lookup of "the
//! process this agent is on" had to scan every process.
//!
//! A run's row stays after the run ends, without its process and session, so the agent's
//! status still shows the pid and folder it last had; the next run replaces it.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::kilo::server::KiloServer;

/// What the table needs of a process (a `kilo serve`; a plain struct in the unit tests).
pub trait Process {
    fn id(&self) -> u64;
    fn pid(&self) -> u32;
    /// The model it is configured for.
    fn model(&self) -> &str;
    /// Alive and not asked to stop.
    fn usable(&self) -> bool;
}

impl Process for KiloServer {
    fn id(&self) -> u64 {
        self.id
    }
    fn pid(&self) -> u32 {
        self.pid
    }
    fn model(&self) -> &str {
        &self.model
    }
    fn usable(&self) -> bool {
        self.exit.now().is_none() && !self.is_stopping()
    }
}

/// One agent's run, as placed.
pub struct Placement<S = KiloServer> {
    pub generation: u64,
    /// The process's pid (kept once the run has ended).
    pub pid: u32,
    /// The process the run is on; `None` once the run has left it.
    pub server: Option<Arc<S>>,
    /// Its Kilo session, once opened (`None` again once the run has ended).
    pub session: Option<String>,
    /// Its checkout, or the process's own folder for the mayor, once made.
    pub workdir: Option<PathBuf>,
}

/// Where an agent's turns go: a run on a live process, with its session and folder.
pub struct LiveSession<S = KiloServer> {
    pub server: Arc<S>,
    pub session: String,
    pub workdir: PathBuf,
}

// Not derived: a derive would ask `S: Clone`, and only the `Arc` is cloned.
impl<S> Clone for Placement<S> {
    fn clone(&self) -> Self {
        Self {
            generation: self.generation,
            pid: self.pid,
            server: self.server.clone(),
            session: self.session.clone(),
            workdir: self.workdir.clone(),
        }
    }
}

impl<S> Placement<S> {
    /// The session of a run still on its process, once both the session and folder exist.
    pub fn live(&self) -> Option<LiveSession<S>> {
        Some(LiveSession {
            server: self.server.clone()?,
            session: self.session.clone()?,
            workdir: self.workdir.clone()?,
        })
    }
}

struct Table<S> {
    /// Every live Kilo process, by id.
    servers: BTreeMap<u64, Arc<S>>,
    /// Each agent's current (or last) run, by agent id.
    runs: HashMap<String, Placement<S>>,
    /// Kilo session id -> agent id: how a tool call or an event names its agent.
    sessions: HashMap<String, String>,
    /// The warm pool's ready processes, by id, oldest first.
    pooled: Vec<u64>,
}

impl<S> Default for Table<S> {
    fn default() -> Self {
        Self {
            servers: BTreeMap::new(),
            runs: HashMap::new(),
            sessions: HashMap::new(),
            pooled: Vec::new(),
        }
    }
}

impl<S: Process> Table<S> {
    /// The run of `agent_id` if it is run `generation` and still on its process.
    fn placed(&mut self, agent_id: &str, generation: u64) -> Option<&mut Placement<S>> {
        self.runs.get_mut(agent_id).filter(|p| p.generation == generation && p.server.is_some())
    }

    /// Ends a run's placement: off its process, its session forgotten.
    fn leave(&mut self, agent_id: &str) {
        if let Some(p) = self.runs.get_mut(agent_id) {
            p.server = None;
            if let Some(session) = p.session.take() {
                self.sessions.remove(&session);
            }
        }
    }

    fn runs_on(&self, server_id: u64) -> usize {
        self.runs
            .values()
            .filter(|p| p.server.as_ref().is_some_and(|s| s.id() == server_id))
            .count()
    }
}

pub struct Placements<S = KiloServer>(Mutex<Table<S>>);

impl<S> std::fmt::Debug for Placements<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Placements").finish_non_exhaustive()
    }
}

impl<S> Default for Placements<S> {
    fn default() -> Self {
        Self(Mutex::new(Table::default()))
    }
}

impl<S: Process> Placements<S> {
    fn table(&self) -> MutexGuard<'_, Table<S>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A Kilo process that is up.
    pub fn add_server(&self, server: Arc<S>) {
        let id = server.id();
        self.table().servers.insert(id, server);
    }

    /// Every live Kilo process, by id.
    pub fn servers(&self) -> Vec<Arc<S>> {
        self.table().servers.values().cloned().collect()
    }

    /// A process has exited: it leaves the table and the pool, and every run on it ends its
    /// placement. Returns those runs, `(agent id, generation)`.
    pub fn remove_server(&self, server_id: u64) -> Vec<(String, u64)> {
        let mut t = self.table();
        t.servers.remove(&server_id);
        t.pooled.retain(|id| *id != server_id);
        let on_it: Vec<(String, u64)> = t
            .runs
            .iter()
            .filter(|(_, p)| p.server.as_ref().is_some_and(|s| s.id() == server_id))
            .map(|(agent, p)| (agent.clone(), p.generation))
            .collect();
        for (agent, _) in &on_it {
            t.leave(agent);
        }
        on_it
    }

    /// Puts run `generation` of `agent_id` on `server`, replacing the agent's earlier row.
    pub fn place(&self, agent_id: &str, generation: u64, server: Arc<S>) {
        let mut t = self.table();
        t.leave(agent_id);
        let row = Placement {
            generation,
            pid: server.pid(),
            server: Some(server),
            session: None,
            workdir: None,
        };
        t.runs.insert(agent_id.to_string(), row);
    }

    /// The run's folder. False (nothing changed) when the run is no longer placed.
    pub fn set_workdir(&self, agent_id: &str, generation: u64, workdir: PathBuf) -> bool {
        let mut t = self.table();
        let Some(p) = t.placed(agent_id, generation) else { return false };
        p.workdir = Some(workdir);
        true
    }

    /// The run's session. False (nothing changed) when the run is no longer placed.
    pub fn bind_session(&self, agent_id: &str, generation: u64, session: &str) -> bool {
        let mut t = self.table();
        let Some(p) = t.placed(agent_id, generation) else { return false };
        let old = p.session.replace(session.to_string());
        if let Some(old) = old {
            t.sessions.remove(&old);
        }
        t.sessions.insert(session.to_string(), agent_id.to_string());
        true
    }

    /// The agent's current or last run.
    pub fn run(&self, agent_id: &str) -> Option<Placement<S>> {
        self.table().runs.get(agent_id).cloned()
    }

    /// Run `generation` of the agent while it is on its process.
    pub fn placed(&self, agent_id: &str, generation: u64) -> Option<Placement<S>> {
        self.table().placed(agent_id, generation).cloned()
    }

    /// Takes run `generation` off its process. Returns the process and how many runs remain
    /// on it; `None` when the run was not placed.
    pub fn remove_run(&self, agent_id: &str, generation: u64) -> Option<(Arc<S>, usize)> {
        let mut t = self.table();
        let server = t.placed(agent_id, generation)?.server.clone()?;
        t.leave(agent_id);
        let left = t.runs_on(server.id());
        Some((server, left))
    }

    /// The agent whose session this is.
    pub fn agent_for_session(&self, session: &str) -> Option<String> {
        self.table().sessions.get(session).cloned()
    }

    /// Runs placed on the process.
    pub fn runs_on(&self, server_id: u64) -> usize {
        self.table().runs_on(server_id)
    }

    /// Each live process with the number of runs on it.
    pub fn loads(&self) -> Vec<(Arc<S>, usize)> {
        let t = self.table();
        t.servers.values().map(|s| (s.clone(), t.runs_on(s.id()))).collect()
    }

    /// A live process joins the warm pool's ready ones.
    pub fn add_pooled(&self, server_id: u64) {
        let mut t = self.table();
        if t.servers.contains_key(&server_id) && !t.pooled.contains(&server_id) {
            t.pooled.push(server_id);
        }
    }

    /// Takes the oldest ready pooled process configured for `model` that is not stopping.
    pub fn take_pooled(&self, model: &str) -> Option<Arc<S>> {
        let mut t = self.table();
        let Table { servers, pooled, .. } = &mut *t;
        pooled.retain(|id| servers.get(id).is_some_and(|s| s.usable()));
        let i = pooled.iter().position(|id| servers.get(id).is_some_and(|s| s.model() == model))?;
        let id = pooled.remove(i);
        servers.get(&id).cloned()
    }

    /// The ready pooled processes.
    pub fn pooled(&self) -> Vec<Arc<S>> {
        let t = self.table();
        t.pooled.iter().filter_map(|id| t.servers.get(id).cloned()).collect()
    }

    /// Empties the pool; returns the processes that were ready.
    pub fn clear_pooled(&self) -> Vec<Arc<S>> {
        let mut t = self.table();
        let ids = std::mem::take(&mut t.pooled);
        ids.iter().filter_map(|id| t.servers.get(id).cloned()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fake {
        id: u64,
        model: &'static str,
        usable: bool,
    }

    impl Process for Fake {
        fn id(&self) -> u64 {
            self.id
        }
        fn pid(&self) -> u32 {
            1000 + self.id as u32
        }
        fn model(&self) -> &str {
            self.model
        }
        fn usable(&self) -> bool {
            self.usable
        }
    }

    fn server(t: &Placements<Fake>, id: u64, model: &'static str) -> Arc<Fake> {
        let s = Arc::new(Fake { id, model, usable: true });
        t.add_server(s.clone());
        s
    }

    #[test]
    fn a_run_gets_its_folder_and_session_then_leaves_with_them() {
        let t = Placements::default();
        let s = server(&t, 1, "m");
        t.place("a", 1, s.clone());
        assert!(t.placed("a", 1).is_some_and(|p| p.live().is_none()), "no session yet");
        assert!(t.set_workdir("a", 1, "/w/a".into()));
        assert!(t.bind_session("a", 1, "ses-1"));
        let live = t.placed("a", 1).and_then(|p| p.live()).expect("live");
        assert_eq!((live.server.id, live.session.as_str()), (1, "ses-1"));
        assert_eq!(t.agent_for_session("ses-1").as_deref(), Some("a"));
        assert_eq!(t.runs_on(1), 1);

        let (left_from, remaining) = t.remove_run("a", 1).expect("was placed");
        assert_eq!((left_from.id, remaining), (1, 0));
        assert_eq!(t.agent_for_session("ses-1"), None, "its session went with it");
        assert!(t.placed("a", 1).is_none());
        let last = t.run("a").expect("the last run is kept");
        assert_eq!((last.pid, last.workdir.as_deref()), (1001, Some("/w/a".as_ref())));
        assert!(t.remove_run("a", 1).is_none(), "twice is nothing");
    }

    #[test]
    fn an_older_run_changes_nothing_of_a_newer_one() {
        let t = Placements::default();
        let s = server(&t, 1, "m");
        t.place("a", 1, s.clone());
        assert!(t.bind_session("a", 1, "old"));
        t.place("a", 2, s);
        assert_eq!(t.agent_for_session("old"), None, "a new run drops the old run's session");
        assert!(!t.bind_session("a", 1, "stale"), "run 1 is no longer placed");
        assert!(!t.set_workdir("a", 1, "/stale".into()));
        assert!(t.remove_run("a", 1).is_none());
        assert_eq!(t.placed("a", 2).map(|p| p.generation), Some(2));
    }

    #[test]
    fn an_exited_process_ends_every_run_on_it_and_leaves_the_pool() {
        let t = Placements::default();
        let shared = server(&t, 1, "m");
        let other = server(&t, 2, "m");
        server(&t, 3, "m");
        t.add_pooled(3);
        for (agent, session) in [("a", "s-a"), ("b", "s-b")] {
            t.place(agent, 1, shared.clone());
            t.bind_session(agent, 1, session);
        }
        t.place("c", 4, other);
        let mut ended = t.remove_server(1);
        ended.sort();
        assert_eq!(ended, vec![("a".to_string(), 1), ("b".to_string(), 1)]);
        assert_eq!((t.agent_for_session("s-a"), t.agent_for_session("s-b")), (None, None));
        assert!(t.placed("c", 4).is_some(), "another process's run is untouched");
        assert_eq!(t.servers().iter().map(|s| s.id).collect::<Vec<_>>(), vec![2, 3]);
        assert!(t.remove_server(3).is_empty());
        assert!(t.pooled().is_empty(), "a pooled process that exits leaves the pool");
    }

    #[test]
    fn the_pool_hands_out_usable_processes_of_the_model_oldest_first() {
        let t = Placements::default();
        server(&t, 1, "old-model");
        let dead = Arc::new(Fake { id: 2, model: "m", usable: false });
        t.add_server(dead);
        server(&t, 3, "m");
        server(&t, 4, "m");
        for id in [1, 2, 3, 4, 9] {
            t.add_pooled(id);
        }
        assert_eq!(t.pooled().len(), 4, "an unknown process is never pooled");
        assert_eq!(t.take_pooled("m").map(|s| s.id), Some(3), "the dead one is skipped");
        assert_eq!(t.pooled().iter().map(|s| s.id).collect::<Vec<_>>(), vec![1, 4]);
        assert_eq!(t.clear_pooled().len(), 2);
        assert!(t.take_pooled("m").is_none());
        assert_eq!(t.servers().len(), 4, "leaving the pool is not leaving the table");
    }
}
