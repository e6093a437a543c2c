//! When the town's container is probed, put to sleep, or given up on: the TownContainer's
//! lifecycle decisions, pure so they are unit-tested. The Durable Object keeps one
//! [`Lifecycle`] in its storage and carries out the [`AlarmAction`]s.
//!
//! The rules:
//! - real activity renews `sleepAfter`: a forwarded call other than a status poll, a heartbeat
//!   that reports a running agent, an agent's call to the Worker API;
//! - a container whose control server reports a running agent is never put to sleep, however
//!   long ago the last activity was (a long turn makes no calls for minutes);
//! - while the container is in use, the alarm probes `GET /health` every `probe_every_ms`;
//!   the container is destroyed only after `max_failed_probes` failures in a row, never on one
//!   failed fetch (a failed forward only brings the next probe forward).

use serde::{Deserialize, Serialize};

/// `CONTAINER_SLEEP_AFTER_MS` default: 30 minutes.
pub const DEFAULT_SLEEP_AFTER_MS: i64 = 30 * 60 * 1000;
/// `CONTAINER_PROBE_INTERVAL_MS` default: how often a container in use is probed.
pub const DEFAULT_PROBE_EVERY_MS: i64 = 30_000;
/// `CONTAINER_MAX_FAILED_PROBES` default: consecutive failed probes before the container is
/// destroyed (the scheduler's witness then re-dispatches what it lost).
pub const DEFAULT_MAX_FAILED_PROBES: u32 = 3;
/// After a failure the next probe comes sooner than the regular period, but not in a busy loop.
const RETRY_PROBE_MS: i64 = 2_000;

/// The lifecycle settings, from Worker vars (all optional; non-positive values are ignored).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    pub sleep_after_ms: i64,
    pub probe_every_ms: i64,
    pub max_failed_probes: u32,
}

impl Settings {
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Self {
        let num = |k: &str, default: i64| crate::settings::positive(&lookup, k, default);
        Self {
            sleep_after_ms: num("CONTAINER_SLEEP_AFTER_MS", DEFAULT_SLEEP_AFTER_MS),
            probe_every_ms: num("CONTAINER_PROBE_INTERVAL_MS", DEFAULT_PROBE_EVERY_MS),
            max_failed_probes: num("CONTAINER_MAX_FAILED_PROBES", DEFAULT_MAX_FAILED_PROBES as i64)
                .min(1_000) as u32,
        }
    }
}

/// What the TownContainer knows of its container; also the body of `GET …/container/state`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Lifecycle {
    /// `none` (never started), `starting`, `running`, `sleeping`, `stopped`, `failed` or
    /// `unresponsive`.
    pub status: String,
    pub detail: Option<String>,
    pub status_since_ms: Option<i64>,
    /// The last real activity (see the module's rules).
    pub last_activity_ms: Option<i64>,
    /// Agents running at the last heartbeat or probe, and when that was seen.
    pub running_agents: u32,
    pub running_seen_ms: Option<i64>,
    /// Failed probes in a row (a successful probe or forward resets it).
    pub failed_probes: u32,
    /// The control server's boot id, from its last heartbeat or probe, and when this Worker
    /// first saw it (a new one: the container restarted).
    #[serde(default)]
    pub boot_id: Option<String>,
    #[serde(default)]
    pub boot_seen_ms: Option<i64>,
}

/// What the alarm does after its probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlarmAction {
    /// Look again at this time (ms since the epoch).
    RearmAt(i64),
    /// Idle for `sleepAfter` and no agent running: stop it (SIGTERM: it drains) and arm nothing.
    Sleep,
    /// Too many failed probes in a row: destroy it and arm nothing; the next request starts a
    /// fresh one.
    Destroy,
    /// Nothing is running to look after: arm nothing.
    Idle,
}

/// The alarm's probe of `GET /health`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// It answered, with this many active agents, and its boot id (if it names one).
    Healthy {
        running_agents: u32,
        boot_id: Option<String>,
    },
    Failed(String),
    /// The runtime reports no running container (it exited or was never started): there is
    /// nothing to probe.
    NotRunning,
}

impl Probe {
    /// A `/health` answer: its agents at work (a mayor waiting between messages is not; a
    /// server that does not say counts its active agents) and its boot.
    pub fn healthy(h: &shared_types::control::HealthResponse) -> Self {
        let running = h.at_work.unwrap_or(h.agents);
        Self::Healthy {
            running_agents: u32::try_from(running).unwrap_or(u32::MAX),
            boot_id: h.boot_id.clone(),
        }
    }
}

impl Lifecycle {
    fn set_status(&mut self, status: &str, detail: Option<String>, now_ms: i64) {
        if self.status != status || self.detail != detail {
            self.status = status.to_string();
            self.detail = detail;
            self.status_since_ms = Some(now_ms);
        }
    }

    /// Real activity at `now_ms`; `running` is the running-agent count when the activity
    /// reports one (a heartbeat).
    pub fn activity(&mut self, now_ms: i64, running: Option<u32>) {
        if let Some(n) = running {
            self.running_agents = n;
            self.running_seen_ms = Some(now_ms);
        }
        self.last_activity_ms = Some(now_ms);
    }

    /// The control server named its boot (a heartbeat, a probe): a new one is recorded with the
    /// time it was first seen.
    pub fn saw_boot(&mut self, boot_id: Option<&str>, now_ms: i64) {
        if let Some(boot) = boot_id.filter(|b| self.boot_id.as_deref() != Some(*b)) {
            self.boot_id = Some(boot.to_string());
            self.boot_seen_ms = Some(now_ms);
        }
    }

    /// A heartbeat arrived: the running count is recorded, but only a heartbeat with a running
    /// agent is activity (an idle town's container heartbeats forever).
    pub fn heartbeat(&mut self, now_ms: i64, running: u32, boot_id: Option<&str>) {
        self.saw_boot(boot_id, now_ms);
        if running > 0 {
            self.activity(now_ms, Some(running));
        } else {
            self.running_agents = 0;
            self.running_seen_ms = Some(now_ms);
        }
        self.answered(now_ms);
    }

    /// The container was started at `now_ms`.
    pub fn started(&mut self, now_ms: i64) {
        self.failed_probes = 0;
        self.set_status("starting", None, now_ms);
    }

    /// The control server answered a forwarded call or a probe.
    pub fn answered(&mut self, now_ms: i64) {
        self.failed_probes = 0;
        if self.status != "running" {
            self.set_status("running", None, now_ms);
        }
    }

    /// The runtime reported the container's exit.
    pub fn exited(&mut self, now_ms: i64, error: Option<String>) {
        self.running_agents = 0;
        match error {
            None => self.set_status("stopped", None, now_ms),
            Some(e) => self.set_status("failed", Some(e), now_ms),
        }
    }

    /// When the alarm must look next after a forward failed (after its own retries): soon, so
    /// that a dead server is found by probes rather than by the next unlucky caller.
    pub fn forward_failed_probe_at(&self, now_ms: i64, s: &Settings) -> i64 {
        now_ms + RETRY_PROBE_MS.min(s.probe_every_ms)
    }

    /// The alarm's decision for `probe`, updating the state. `url_mode`: the control server is
    /// run by hand (`CONTAINER_URL`); it is never stopped, only marked.
    pub fn on_alarm(
        &mut self,
        now_ms: i64,
        probe: Probe,
        s: &Settings,
        url_mode: bool,
    ) -> AlarmAction {
        match probe {
            Probe::NotRunning => {
                self.running_agents = 0;
                AlarmAction::Idle
            }
            Probe::Failed(e) => {
                self.failed_probes += 1;
                if self.failed_probes >= s.max_failed_probes {
                    let detail =
                        format!("{} failed health probes in a row; last: {e}", self.failed_probes);
                    self.failed_probes = 0;
                    self.running_agents = 0;
                    self.set_status("unresponsive", Some(detail), now_ms);
                    AlarmAction::Destroy
                } else {
                    AlarmAction::RearmAt(now_ms + RETRY_PROBE_MS.min(s.probe_every_ms))
                }
            }
            Probe::Healthy { running_agents, boot_id } => {
                self.saw_boot(boot_id.as_deref(), now_ms);
                self.answered(now_ms);
                self.running_agents = running_agents;
                self.running_seen_ms = Some(now_ms);
                let next_probe = now_ms + s.probe_every_ms;
                if running_agents > 0 {
                    // Working agents keep it awake: their turn may make no call for minutes.
                    self.last_activity_ms = Some(now_ms);
                    return AlarmAction::RearmAt(next_probe);
                }
                let sleep_at =
                    self.last_activity_ms.unwrap_or(now_ms - s.sleep_after_ms) + s.sleep_after_ms;
                if now_ms >= sleep_at {
                    let detail = url_mode.then(|| {
                        "idle; a control server at CONTAINER_URL is not stopped by the Worker"
                            .to_string()
                    });
                    self.set_status("sleeping", detail, now_ms);
                    AlarmAction::Sleep
                } else {
                    AlarmAction::RearmAt(sleep_at.min(next_probe))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Settings =
        Settings { sleep_after_ms: 10_000, probe_every_ms: 1_000, max_failed_probes: 3 };

    fn healthy(n: u32) -> Probe {
        Probe::Healthy { running_agents: n, boot_id: None }
    }

    #[test]
    fn settings_defaults_and_overrides() {
        let s = Settings::from_lookup(|_| None);
        assert_eq!(
            (s.sleep_after_ms, s.probe_every_ms, s.max_failed_probes),
            (1_800_000, 30_000, 3)
        );
        let s = Settings::from_lookup(|k| match k {
            "CONTAINER_SLEEP_AFTER_MS" => Some("1000".into()),
            "CONTAINER_MAX_FAILED_PROBES" => Some("-1".into()),
            _ => Some("nonsense".into()),
        });
        assert_eq!((s.sleep_after_ms, s.probe_every_ms, s.max_failed_probes), (1_000, 30_000, 3));
    }

    #[test]
    fn an_idle_container_sleeps_after_sleep_after_and_not_before() {
        let mut l = Lifecycle::default();
        l.activity(0, None);
        assert_eq!(
            l.on_alarm(5_000, healthy(0), &S, false),
            AlarmAction::RearmAt(6_000),
            "probes keep their period"
        );
        assert_eq!(
            l.on_alarm(9_500, healthy(0), &S, false),
            AlarmAction::RearmAt(10_000),
            "and look again at sleepAfter"
        );
        assert_eq!(l.on_alarm(10_000, healthy(0), &S, false), AlarmAction::Sleep);
        assert_eq!((l.status.as_str(), l.detail.as_deref()), ("sleeping", None));
        let mut l = Lifecycle::default();
        assert_eq!(
            l.on_alarm(1, healthy(0), &S, true),
            AlarmAction::Sleep,
            "no activity ever: nothing keeps it"
        );
        assert!(l.detail.is_some_and(|d| d.contains("CONTAINER_URL")));
    }

    #[test]
    fn a_running_agent_keeps_it_awake_however_long_the_silence() {
        let mut l = Lifecycle::default();
        l.activity(0, None);
        for t in [60_000, 600_000, 6_000_000] {
            assert_eq!(l.on_alarm(t, healthy(2), &S, false), AlarmAction::RearmAt(t + 1_000));
        }
        assert_eq!((l.running_agents, l.last_activity_ms), (2, Some(6_000_000)));
        // Once the agents are done, sleepAfter counts from the last time one was seen running.
        assert_eq!(l.on_alarm(6_001_000, healthy(0), &S, false), AlarmAction::RearmAt(6_002_000));
        assert_eq!(l.on_alarm(6_010_000, healthy(0), &S, false), AlarmAction::Sleep);
    }

    #[test]
    fn only_heartbeats_with_running_agents_are_activity() {
        let mut l = Lifecycle::default();
        l.heartbeat(1_000, 0, Some("b1"));
        assert_eq!(
            (l.last_activity_ms, l.running_seen_ms, l.status.as_str()),
            (None, Some(1_000), "running")
        );
        l.heartbeat(2_000, 3, Some("b1"));
        assert_eq!((l.last_activity_ms, l.running_agents), (Some(2_000), 3));
        assert_eq!(
            (l.boot_id.as_deref(), l.boot_seen_ms),
            (Some("b1"), Some(1_000)),
            "a boot is dated by its first sight"
        );
    }

    #[test]
    fn a_new_boot_is_recorded_with_when_it_was_first_seen() {
        let mut l = Lifecycle::default();
        l.on_alarm(
            1_000,
            Probe::Healthy { running_agents: 0, boot_id: Some("b1".into()) },
            &S,
            false,
        );
        l.heartbeat(2_000, 0, None);
        assert_eq!(
            (l.boot_id.as_deref(), l.boot_seen_ms),
            (Some("b1"), Some(1_000)),
            "a beat naming no boot changes nothing"
        );
        l.heartbeat(3_000, 0, Some("b2"));
        assert_eq!((l.boot_id.as_deref(), l.boot_seen_ms), (Some("b2"), Some(3_000)));
    }

    #[test]
    fn destroyed_only_after_consecutive_failed_probes() {
        let mut l = Lifecycle::default();
        l.activity(0, None);
        assert_eq!(
            l.on_alarm(1_000, Probe::Failed("reset".into()), &S, false),
            AlarmAction::RearmAt(2_000)
        );
        assert_eq!(
            l.on_alarm(2_000, Probe::Failed("reset".into()), &S, false),
            AlarmAction::RearmAt(3_000)
        );
        // One success in between starts the count again.
        assert_eq!(l.on_alarm(3_000, healthy(1), &S, false), AlarmAction::RearmAt(4_000));
        assert_eq!(l.failed_probes, 0);
        for t in [4_000, 5_000] {
            assert!(matches!(
                l.on_alarm(t, Probe::Failed("timeout".into()), &S, false),
                AlarmAction::RearmAt(_)
            ));
        }
        assert_eq!(
            l.on_alarm(6_000, Probe::Failed("timeout".into()), &S, false),
            AlarmAction::Destroy
        );
        assert_eq!(l.status, "unresponsive");
        assert!(l
            .detail
            .as_deref()
            .is_some_and(|d| d.starts_with("3 failed health probes") && d.contains("timeout")));
        assert_eq!(l.failed_probes, 0, "a fresh container starts with a clean count");
        // A failed forward brings the next probe forward, never past the regular period.
        assert_eq!(l.forward_failed_probe_at(10_000, &S), 11_000);
        assert_eq!(
            l.forward_failed_probe_at(10_000, &Settings { probe_every_ms: 30_000, ..S }),
            12_000
        );
    }

    #[test]
    fn an_exited_container_is_not_looked_after() {
        let mut l = Lifecycle::default();
        l.started(0);
        l.exited(5, Some("exit code 137".into()));
        assert_eq!((l.status.as_str(), l.detail.as_deref()), ("failed", Some("exit code 137")));
        assert_eq!(l.on_alarm(10, Probe::NotRunning, &S, false), AlarmAction::Idle);
        l.started(20);
        assert_eq!((l.status.as_str(), l.status_since_ms), ("starting", Some(20)));
        l.answered(30);
        assert_eq!(l.status, "running");
    }
}
