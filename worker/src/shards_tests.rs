use super::*;
use crate::native_db::NativeDb;

/// A shard with `rigs` rigs that want one agent each.
fn load(shard: u32, rigs: u32, capacity: Option<u32>, running: u32) -> ShardLoad {
    ShardLoad { shard, rigs, demand: rigs, capacity, running, unreachable: false }
}

#[test]
fn object_names_keep_shard_zero_under_the_town_id() {
    assert_eq!(ShardRef::first("t1").object_name(), "t1");
    assert_eq!(ShardRef::new("t1", 3).object_name(), "t1:3");
    for shard in [ShardRef::first("t1"), ShardRef::new("t1", 3)] {
        assert_eq!(ShardRef::from_object_name(&shard.object_name()), Some(shard));
    }
    assert_eq!(ShardRef::from_object_name("t1:0"), None, "shard 0 has one name");
    assert_eq!(ShardRef::from_object_name("t1:x"), None);
}

#[test]
fn container_url_is_one_url_or_one_per_shard() {
    assert_eq!(container_url(Some("http://a:1"), 0).as_deref(), Some("http://a:1"));
    assert_eq!(container_url(Some("http://a:1"), 1), None);
    let list = Some("http://a:1, http://a:2 ,");
    assert_eq!(container_url(list, 1).as_deref(), Some("http://a:2"));
    assert_eq!(container_url(list, 2), None);
    assert_eq!(container_url(None, 0), None);
}

#[test]
fn a_town_of_one_shard_stays_on_shard_zero() {
    assert_eq!(place(None, true, 1, &[], 1), 0);
    let full = [load(0, 5, Some(2), 2)];
    assert_eq!(place(None, true, 1, &full, 1), 0, "full, but no other shard is allowed");
    assert_eq!(place(Some(0), true, 1, &full, 1), 0);
}

#[test]
fn a_new_rig_goes_where_there_is_room_and_a_new_shard_only_when_none_has_any() {
    assert_eq!(place(None, true, 1, &[], 2), 0, "the first rig: shard 0");
    assert_eq!(place(None, true, 1, &[load(0, 1, Some(2), 0)], 2), 0, "room for one more rig");
    let full = [load(0, 2, Some(2), 2)];
    assert_eq!(place(None, true, 1, &full, 2), 1, "shard 0 full: a second shard starts");
    assert_eq!(place(None, true, 1, &full, 1), 0, "max_shards 1: queue on shard 0");
    let both = [load(0, 2, Some(2), 1), load(1, 1, Some(2), 0)];
    assert_eq!(place(None, true, 1, &both, 2), 1, "the shard with the most room");
    let both_full = [load(0, 2, Some(2), 2), load(1, 3, Some(2), 3)];
    assert_eq!(place(None, true, 1, &both_full, 2), 0, "all full: queue where least is over");
    assert_eq!(
        place(None, true, 1, &[load(0, 1, None, 0)], 2),
        0,
        "a shard that never reported is assumed to have room"
    );
}

#[test]
fn a_rig_goes_where_all_it_wants_fits_or_to_a_new_shard() {
    let zero = [load(0, 1, Some(4), 1)];
    assert_eq!(place(None, true, 3, &zero, 2), 0, "three more fit beside one");
    assert_eq!(place(None, true, 4, &zero, 2), 1, "four do not: a new shard");
    assert_eq!(place(None, true, 4, &zero, 1), 0, "unless none may start: queue");
    let mut busy = load(0, 2, Some(4), 0);
    busy.demand = 4;
    assert_eq!(
        place(None, true, 1, &[busy], 2),
        1,
        "what its rigs want counts, not only what runs"
    );
}

#[test]
fn a_placed_rig_moves_only_when_idle_and_its_shard_is_gone() {
    let mut gone = load(1, 1, Some(2), 1);
    gone.unreachable = true;
    let loads = [load(0, 1, Some(4), 1), gone];
    assert_eq!(place(Some(1), false, 1, &loads, 2), 1, "a rig with a running agent stays");
    assert_eq!(place(Some(1), true, 1, &loads, 2), 0, "an idle rig leaves an unreachable shard");
    let full = [load(0, 3, Some(2), 2), load(1, 0, Some(2), 0)];
    assert_eq!(place(Some(0), true, 1, &full, 2), 0, "a full shard only queues: no churn");
    assert_eq!(place(Some(3), true, 1, &full, 2), 1, "a shard past a lowered max_shards is left");
}

#[test]
fn the_map_places_reports_and_lists_shards() {
    let db = NativeDb::with(&[MIGRATION]);
    let shards = Shards { db: &db, now_ms: 1_000_000, now: "2026-12-08T00:00:00.000Z".into() };
    assert_eq!(shards.place_rig("r1", true, 1, 2).expect("place"), (0, None));
    shards
        .report(&ShardReport {
            shard: 0,
            capacity: Some(1),
            running: 1,
            memory_bytes: Some(700 << 20),
            pool_ready: Some(1),
            boot_id: None,
        })
        .expect("report");
    assert_eq!(shards.place_rig("r2", true, 1, 2).expect("place"), (1, None), "shard 0 is full");
    assert_eq!(shards.place_rig("r1", false, 1, 2).expect("again"), (0, None), "stays");
    assert_eq!(shards.rigs_on(1).expect("rigs"), ["r2"]);
    shards.place_rig("r1", false, 3, 2).expect("what it wants now");
    assert_eq!(shards.loads().expect("loads")[0].demand, 3, "kept with the placement");

    shards.unreachable(1).expect("unreachable");
    let view = shards.view().expect("view");
    assert_eq!((view[0].memory_bytes, view[0].pool_ready), (Some(700 << 20), Some(1)));
    assert_eq!(
        view.iter().map(|v| (v.shard, v.unreachable)).collect::<Vec<_>>(),
        [(0, false), (1, true)]
    );
    assert_eq!(shards.place_rig("r2", true, 1, 2).expect("move"), (0, Some(1)), "moved off");
    let later = Shards { db: &db, now_ms: 1_000_000 + UNREACHABLE_MS, now: "later".into() };
    assert!(later.loads().expect("loads").iter().all(|l| !l.unreachable), "the mark wears off");
    shards
        .report(&ShardReport {
            shard: 1,
            capacity: Some(2),
            running: 0,
            memory_bytes: None,
            pool_ready: None,
            boot_id: None,
        })
        .expect("report");
    assert!(shards.loads().expect("loads").iter().all(|l| !l.unreachable), "a report clears it");
}

#[test]
fn max_shards_is_the_town_containers_max_instances() {
    let toml = include_str!("../../wrangler.toml");
    let declared = toml
        .lines()
        .find_map(|l| l.trim().strip_prefix("max_instances = "))
        .and_then(|n| n.trim().parse::<u32>().ok());
    assert_eq!(declared, Some(MAX_SHARDS));
}
