//! The TownDO's handler run natively: the town and its rigs, and the mayor's ops and deliveries,
//! against real RigDO logic in the native world (`crate::native_world`).

use serde_json::{json, Value};

use super::object::{Memory, TownObject};
use crate::error::ApiResult;
use crate::mayor::ops::{MAX_TRIES, RETRY_MS};
use crate::mayor::routes::MayorCall;
use crate::mayor::MayorOp;
use crate::native_db::NativeDb;
use crate::native_world::{block_on, ContainerCall, World};
use crate::routes::Method;
use crate::rpc::IdentityOp;
use crate::town::op::{TownCall, TownOp};
use crate::town::{CreateRig, CreateTown, ListRigs, ListTowns};

const MODEL_VARS: &[(&str, &str)] =
    &[("GASTOWN_MODEL", "test/model"), ("GASTOWN_JWT_SECRET", "a-secret-of-the-tests")];

struct Fixture {
    world: World,
    db: NativeDb,
    memory: Memory,
}

impl Fixture {
    fn new(vars: &[(&str, &str)]) -> Self {
        Self {
            world: World::new(vars),
            db: NativeDb::with(super::MIGRATIONS),
            memory: Memory::default(),
        }
    }

    fn op<O: TownOp>(&self, op: O, key: Option<&str>) -> ApiResult<Value> {
        let town = TownObject { db: &self.db, fx: &self.world, memory: &self.memory };
        block_on(town.handle(&TownCall::of(&op).expect("a town op"), key))
    }

    fn mayor(&self, op: MayorOp, key: Option<&str>) -> ApiResult<Value> {
        self.op(MayorCall(op), key)
    }

    fn alarm(&self) {
        self.world.alarm.set(None);
        block_on(TownObject { db: &self.db, fx: &self.world, memory: &self.memory }.alarm());
    }

    /// Town `t1` with one rig; its id.
    fn town_with_rig(vars: &[(&str, &str)]) -> (Self, String) {
        let f = Self::new(vars);
        let town = serde_json::from_value(json!({"name": "t"})).expect("a town");
        f.op(CreateTown { town_id: "t1".into(), town }, None).expect("create the town");
        let rig =
            serde_json::from_value(json!({"name": "r", "git_url": "https://example.com/o/r.git"}))
                .expect("a rig");
        let rig = f.op(CreateRig { rig }, None).expect("create the rig");
        let id = rig["id"].as_str().expect("the rig's id").to_string();
        (f, id)
    }

    fn beads(&self, rig_id: &str) -> usize {
        let filter = serde_json::from_value(json!({"limit": 500, "offset": 0})).expect("filter");
        self.world.with_rig(rig_id, |r| r.list_beads(&filter).expect("beads").len())
    }

    fn calls(&self) -> Vec<ContainerCall> {
        self.world.container_calls.borrow().clone()
    }
}

fn sling(rig_id: &str, title: &str) -> MayorOp {
    let sling = serde_json::from_value(json!({"title": title})).expect("a sling");
    MayorOp::Sling { rig_id: rig_id.into(), sling }
}

#[test]
fn a_rig_is_listed_once_its_rigdo_is_configured_and_the_town_is_indexed() {
    let (f, rig) = Fixture::town_with_rig(&[]);
    let config = f.world.with_rig(&rig, |r| r.config()).expect("the RigDO is configured");
    assert_eq!(config.town_id, "t1");
    let rigs = f.op(ListRigs, None).expect("rigs");
    assert_eq!(rigs.as_array().map(Vec::len), Some(1), "{rigs}");
    let towns = block_on(crate::effects::Effects::town(
        &f.world,
        "x",
        &TownCall::of(&ListTowns).expect("op"),
    ))
    .expect("the index");
    assert_eq!(towns[0]["id"], "t1", "{towns}");
}

#[test]
fn the_mayors_sling_lands_once_per_key_and_records_the_new_polecat() {
    let (f, rig) = Fixture::town_with_rig(&[]);
    let first = f.mayor(sling(&rig, "add a.txt"), Some("agent/mayor:key-0001")).expect("sling");
    assert_eq!(first["bead"]["title"], "add a.txt", "{first}");
    assert_eq!(f.beads(&rig), 1);
    let upserts = f.world.identity_ops.borrow().clone();
    assert!(matches!(upserts.as_slice(), [(_, IdentityOp::Upsert { .. })]), "{upserts:?}");
    // The same call again (its answer was lost): the kept answer, nothing new.
    let again = f.mayor(sling(&rig, "add a.txt"), Some("agent/mayor:key-0001")).expect("replay");
    assert_eq!(again, first);
    assert_eq!(f.beads(&rig), 1);
    assert_eq!(f.world.identity_ops.borrow().len(), 1);
    // A rig of another town is refused before anything is counted or created.
    let foreign = f.mayor(sling("r-elsewhere", "x"), None).map_err(|e| e.status());
    assert_eq!(foreign, Err(403));
}

#[test]
fn a_sling_over_the_turn_limit_is_refused_and_creates_nothing() {
    let (f, rig) = Fixture::town_with_rig(&[("MAYOR_MAX_SLINGS_PER_TURN", "1")]);
    f.mayor(sling(&rig, "one"), None).expect("the first sling of the turn");
    let second = f.mayor(sling(&rig, "two"), None);
    assert_eq!(second.as_ref().map_err(|e| e.status()).err(), Some(429), "{second:?}");
    assert_eq!(f.beads(&rig), 1);
}

#[test]
fn a_message_starts_a_mayor_that_is_not_running_then_goes_to_the_running_one() {
    let (f, _) = Fixture::town_with_rig(MODEL_VARS);
    f.world.container_answers(|c| match c.path.as_str() {
        "/agents/start" => (201, json!({"status": "starting"})),
        _ => (404, json!({"error": "Agent not found"})),
    });
    let sent = f.mayor(MayorOp::Send { text: "plan the release".into() }, None).expect("send");
    assert_eq!(sent["sessionStatus"], "starting", "{sent}");
    let calls = f.calls();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!((calls[0].method, calls[0].path.as_str()), (Method::Get, "/agents/mayor/status"));
    let start = calls[1].body.clone().unwrap_or_default();
    assert_eq!(calls[1].path, "/agents/start");
    assert!(start.to_string().contains("plan the release"), "{start}");

    // Running now: the next message is a message to it, with only what is new.
    f.world.container_answers(|c| match c.path.as_str() {
        "/agents/mayor/status" => (200, json!({"status": "running"})),
        _ => (200, json!({})),
    });
    let sent = f.mayor(MayorOp::Send { text: "and the notes".into() }, None).expect("send");
    assert_eq!(sent["sessionStatus"], "active", "{sent}");
    let message = f.calls().into_iter().find(|c| c.path == "/agents/mayor/message");
    let prompt = message.and_then(|c| c.body).unwrap_or_default().to_string();
    assert!(prompt.contains("and the notes") && !prompt.contains("plan the release"), "{prompt}");
}

#[test]
fn an_unreachable_container_keeps_messages_pending_until_the_alarm_gives_up() {
    let (f, _) = Fixture::town_with_rig(MODEL_VARS);
    f.world.container_answers(|_| (500, json!({"error": "boom"})));
    let sent = f.mayor(MayorOp::Send { text: "hello".into() }, None).expect("kept");
    assert_eq!(sent["sessionStatus"], "queued", "{sent}");
    assert!(sent["detail"].as_str().is_some_and(|d| d.contains("500")), "{sent}");
    assert_eq!(f.world.alarms.borrow().as_slice(), &[RETRY_MS]);
    for _ in 0..MAX_TRIES {
        f.alarm();
    }
    let errors = f.world.errors.borrow().clone();
    assert!(errors.iter().any(|e| e.contains("giving up")), "{errors:?}");
    // The message is still there for the next delivery.
    f.world.container_answers(|c| match c.path.as_str() {
        "/agents/start" => (201, json!({})),
        _ => (404, json!({})),
    });
    f.alarm();
    let start = f.calls().into_iter().rev().find(|c| c.path == "/agents/start");
    assert!(start.is_some_and(|c| c.body.unwrap_or_default().to_string().contains("hello")));
}

#[test]
fn without_a_model_nothing_is_sent() {
    let (f, _) = Fixture::town_with_rig(&[]);
    let sent = f.mayor(MayorOp::Send { text: "hello".into() }, None).expect("kept");
    assert_eq!(sent["sessionStatus"], "queued");
    assert!(f.calls().is_empty());
}

#[test]
fn a_shards_heartbeat_is_kept_and_names_the_rigs_it_may_update() {
    use crate::shards::{ListShards, PlaceRig, ShardReport};
    let report = |shard: u32| ShardReport {
        shard,
        capacity: Some(2),
        running: 1,
        memory_bytes: Some(1 << 30),
        pool_ready: Some(1),
        boot_id: Some("boot-1".into()),
    };
    let nobody = Fixture::new(&[]);
    let answer = nobody.op(report(0), None).expect("answered");
    assert_eq!(answer, json!({"town_rigs": [], "here": []}));
    assert_eq!(nobody.op(ListShards, None).map_err(|e| e.status()), Err(404), "nothing kept");
    let (f, rig) = Fixture::town_with_rig(&[]);
    assert_eq!(f.op(ListShards, None).expect("listed"), json!([]), "no shard yet");

    let answer = f.op(report(0), None).expect("answered");
    assert_eq!(answer, json!({"town_rigs": [rig], "here": [rig]}), "never placed: shard 0's");
    let answer = f.op(report(1), None).expect("answered");
    assert_eq!(answer["here"], json!([]), "not shard 1's to report");
    let place = PlaceRig { rig_id: rig.clone(), movable: true, demand: 1, unreachable: None };
    assert_eq!(f.op(place, None).expect("placed"), json!({"shard": 0}));
    let listed = f.op(ListShards, None).expect("listed");
    assert_eq!(listed[0]["rigs"], json!([rig]));
    assert_eq!(
        (listed[0]["memory_bytes"].clone(), listed[1]["shard"].clone()),
        (json!(1 << 30), json!(1))
    );
}
