use serde_json::json;
use shared_types::{Tokens, UsageReport};

use super::*;
use crate::native_db::NativeDb;

/// The report as the API writes it: the tests read its wire shape.
fn report(db: &NativeDb, q: &UsageQuery) -> ApiResult<Value> {
    super::report(db, q).map(|r| serde_json::to_value(r).expect("json"))
}

fn db() -> NativeDb {
    NativeDb::with(&[MIGRATION, HOURLY])
}

fn call(id: &str, bead: &str, model: &str, input: u64, cost: Option<f64>) -> UsageReport {
    UsageReport {
        message_id: id.into(),
        model: model.into(),
        bead_id: Some(bead.into()),
        dispatch_id: Some(format!("{bead}-g1")),
        // Beads b1 and b2 are in convoy c1, the others in none.
        convoy_id: ["b1", "b2"].contains(&bead).then(|| "c1".to_string()),
        tokens: Tokens {
            input_tokens: input,
            output_tokens: 5,
            cache_read_tokens: 2,
            ..Tokens::default()
        },
        cost_usd: cost,
    }
}

fn query(raw: &str) -> UsageQuery {
    UsageQuery::parse(raw).expect("a good query")
}

#[test]
fn each_call_counts_once_and_sums_by_day_bead_agent_rig_and_model() {
    let db = db();
    let at = "2026-12-07T10:00:00.000Z";
    assert!(record(&db, "r1", "a1", at, &call("m1", "b1", "p/big", 100, Some(0.5))).expect("kept"));
    assert!(
        !record(&db, "r1", "a1", at, &call("m1", "b1", "p/big", 100, Some(0.5))).expect("kept"),
        "a resend"
    );
    record(&db, "r1", "a1", at, &call("m2", "b1", "p/big", 50, Some(0.25))).expect("kept");
    record(
        &db,
        "r2",
        "a2",
        "2026-12-08T01:00:00.000Z",
        &call("m3", "b2", "p/small", 10, Some(0.01)),
    )
    .expect("kept");

    let all = report(&db, &query("group_by=bead")).expect("report");
    assert_eq!(all["total"]["input_tokens"], 160);
    assert_eq!(all["total"]["output_tokens"], 15);
    assert_eq!(all["total"]["cache_read_tokens"], 6);
    assert_eq!(all["total"]["calls"], 3);
    assert_eq!(all["total"]["cost_usd"], json!(0.76));
    let beads: Vec<(Value, Value)> = all["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .map(|g| (g["key"].clone(), g["input_tokens"].clone()))
        .collect();
    assert_eq!(
        beads,
        vec![(json!("b1"), json!(150)), (json!("b2"), json!(10))],
        "the costliest first"
    );

    let by_day = report(&db, &query("group_by=day")).expect("report");
    let days: Vec<&Value> =
        by_day["groups"].as_array().expect("groups").iter().map(|g| &g["key"]).collect();
    assert_eq!(days, vec!["2026-12-07", "2026-12-08"]);
    let one_day =
        report(&db, &query("from=2026-12-08&to=2026-12-08&group_by=model")).expect("report");
    assert_eq!(one_day["total"]["input_tokens"], 10);
    assert_eq!(one_day["groups"][0]["key"], "p/small");
    for (by, key) in [("agent", "a1"), ("rig", "r1"), ("convoy", "c1"), ("run", "b1-g1")] {
        let r = report(&db, &query(&format!("group_by={by}"))).expect("report");
        assert_eq!(r["groups"][0]["key"], key, "{by}");
    }
}

#[test]
fn a_days_total_counts_every_kind_of_token_of_that_day_only() {
    let db = db();
    record(&db, "r1", "a1", "2026-12-07T10:00:00.000Z", &call("m1", "b1", "p/m", 100, Some(0.5)))
        .expect("kept");
    record(&db, "r1", "a1", "2026-12-08T10:00:00.000Z", &call("m2", "b1", "p/m", 1, None))
        .expect("kept");
    assert_eq!(day_total(&db, "2026-12-07", 0).expect("total"), (107, 0.5));
    assert_eq!(day_total(&db, "2026-12-08", 0).expect("total"), (8, 0.0));
    assert_eq!(day_total(&db, "2026-12-09", 0).expect("total"), (0, 0.0));
}

#[test]
fn a_towns_days_begin_at_its_offset_from_utc() {
    let db = db();
    for (id, at) in [
        ("m1", "2026-12-07T21:59:00.000Z"),
        ("m2", "2026-12-07T22:10:00.000Z"),
        ("m3", "2026-12-08T21:00:00.000Z"),
    ] {
        record(&db, "r1", "a1", at, &call(id, "b1", "p/m", 100, None)).expect("kept");
    }
    // At UTC+02:00 the second call is already on the 8th, the third on the 8th still.
    assert_eq!(day_total(&db, "2026-12-07", 120).expect("total").0, 107);
    assert_eq!(day_total(&db, "2026-12-08", 120).expect("total").0, 214);
    assert_eq!(day_total(&db, "2026-12-07", 0).expect("total").0, 214, "in UTC");
    let mut q = query("group_by=day&from=2026-12-07&to=2026-12-08");
    q.offset_minutes = 120;
    let by_day = report(&db, &q).expect("report");
    let days: Vec<(Value, Value)> = by_day["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .map(|g| (g["key"].clone(), g["calls"].clone()))
        .collect();
    assert_eq!(days, vec![(json!("2026-12-07"), json!(1)), (json!("2026-12-08"), json!(2))]);
    q.offset_minutes = -300;
    let west = report(&db, &q).expect("report");
    // At UTC-05:00 the first two are on the 7th, the third on the 8th.
    assert_eq!(
        west["groups"][0],
        json!({"key": "2026-12-07", "calls": 2, "input_tokens": 200,
        "output_tokens": 10, "reasoning_tokens": 0, "cache_read_tokens": 4,
        "cache_write_tokens": 0, "cost_usd": null, "cost_usd_known": 0.0})
    );
}

#[test]
fn the_groups_are_the_costliest_or_the_latest_days_up_to_the_limit() {
    let db = db();
    for (i, day) in ["2026-12-01", "2026-12-02", "2026-12-03"].iter().enumerate() {
        let at = format!("{day}T10:00:00.000Z");
        let bead = format!("b{i}");
        record(&db, "r1", "a1", &at, &call(&format!("m{i}"), &bead, "p/m", 10, Some(i as f64)))
            .expect("kept");
    }
    let beads = report(&db, &query("group_by=bead&limit=2")).expect("report");
    let keys = |r: &Value| -> Vec<Value> {
        r["groups"].as_array().expect("groups").iter().map(|g| g["key"].clone()).collect()
    };
    assert_eq!(keys(&beads), vec![json!("b2"), json!("b1")], "the two costliest");
    assert_eq!(beads["total"]["calls"], 3, "the total counts every group");
    let days = report(&db, &query("group_by=day&limit=2")).expect("report");
    assert_eq!(keys(&days), vec![json!("2026-12-02"), json!("2026-12-03")], "the latest, in order");
}

#[test]
fn rows_kept_per_day_before_count_from_that_days_first_hour() {
    let db = NativeDb::with(&[MIGRATION]);
    db.exec(
        "INSERT INTO usage_daily VALUES ('2026-12-01', 'r1', 'a1', 'b1', 'p/m', 1, 10, 5, 0, 0, 0, 0, 1)",
        vec![],
    )
    .expect("an old row");
    for step in HOURLY {
        db.exec(step, vec![]).expect("migrated");
    }
    assert_eq!(day_total(&db, "2026-12-01", 0).expect("total").0, 15);
    assert_eq!(day_total(&db, "2026-12-01", -60).expect("total").0, 0, "the day before, west");
}

#[test]
fn a_beads_tokens_are_summed_over_every_day_and_agent() {
    let db = db();
    record(&db, "r1", "a1", "2026-12-07T10:00:00.000Z", &call("m1", "b1", "p/m", 100, None))
        .expect("kept");
    record(&db, "r1", "a2", "2026-12-08T10:00:00.000Z", &call("m2", "b1", "p/n", 10, None))
        .expect("kept");
    record(&db, "r1", "a1", "2026-12-08T10:00:00.000Z", &call("m3", "b2", "p/m", 1, None))
        .expect("kept");
    assert_eq!(bead_tokens(&db, "b1").expect("b1"), 107 + 17);
    assert_eq!(bead_tokens(&db, "b2").expect("b2"), 8);
    assert_eq!(bead_tokens(&db, "nothing").expect("none"), 0);
}

#[test]
fn a_cost_not_reported_is_unknown_never_zero() {
    let db = db();
    let at = "2026-12-07T10:00:00.000Z";
    record(&db, "r1", "a1", at, &call("m1", "b1", "p/priced", 100, Some(0.5))).expect("kept");
    record(&db, "r1", "a1", at, &call("m2", "b2", "p/unpriced", 100, None)).expect("kept");
    let r = report(&db, &query("group_by=model")).expect("report");
    assert_eq!(
        (r["total"]["cost_usd"].clone(), r["total"]["cost_usd_known"].clone()),
        (Value::Null, json!(0.5))
    );
    let unpriced =
        r["groups"].as_array().expect("groups").iter().find(|g| g["key"] == "p/unpriced").cloned();
    assert_eq!(unpriced.expect("a group")["cost_usd"], Value::Null);
    assert_eq!(
        report(&db, &query("")).expect("report").get("groups"),
        None,
        "no groups unless asked"
    );
}

#[test]
fn bad_queries_are_refused_with_a_message() {
    for (raw, says) in [
        (
            "group_by=week",
            "group_by: unknown value, expected one of bead, agent, rig, model, day, convoy, run",
        ),
        ("from=yesterday", "from: must be a day, YYYY-MM-DD"),
        ("to=2026-13-01", "to: must be a day, YYYY-MM-DD"),
        ("from=2026-12-08&to=2026-12-07", "from: must not be after to"),
        ("limit=0", "limit: must be from 1 to 1000"),
        ("limit=lots", "limit: must be from 1 to 1000"),
    ] {
        let e = UsageQuery::parse(raw).expect_err(raw);
        assert_eq!((e.status(), e.public_message().to_string()), (400, says.to_string()), "{raw}");
    }
    assert_eq!(query("from=2026-12-07T10:00:00.000Z").from.as_deref(), Some("2026-12-07"));
}

#[test]
fn a_call_without_a_reported_cost_is_priced_from_the_towns_table() {
    let db = db();
    let table: PriceTable = serde_json::from_value(json!({"prices": {
        "p/priced": {"input": 3.0, "output": 15.0, "cache_read": 0.3}}}))
    .expect("a table");
    table.check().expect("valid");
    set_prices(&db, &table).expect("stored");
    assert_eq!(prices(&db).expect("read")["prices"]["p/priced"]["output"], 15.0);
    let at = "2026-12-07T10:00:00.000Z";
    // 1,000,000 input at $3, 5 output at $15/M, 2 cache reads at $0.3/M.
    record(&db, "r1", "a1", at, &call("m1", "b1", "p/priced", 1_000_000, None)).expect("kept");
    record(&db, "r1", "a1", at, &call("m2", "b1", "p/reported", 10, Some(0.5))).expect("kept");
    let total = &report(&db, &query("")).expect("report")["total"];
    assert_eq!(total["cost_usd"], json!(3.500076), "{total}");
    record(&db, "r1", "a1", at, &call("m3", "b1", "p/nowhere", 10, None)).expect("kept");
    assert_eq!(report(&db, &query("")).expect("report")["total"]["cost_usd"], Value::Null);
}

#[test]
fn bad_price_tables_are_refused() {
    for bad in [
        json!({"prices": {"m": {"input": -1.0, "output": 1.0}}}),
        json!({"prices": {"m": {"input": 1.0, "output": 1e9}}}),
        json!({"prices": {"": {"input": 1.0, "output": 1.0}}}),
    ] {
        let table: PriceTable = serde_json::from_value(bad.clone()).expect("parses");
        assert_eq!(table.check().map_err(|e| e.status()), Err(400), "{bad}");
    }
    for unparsable in [json!({"prices": {"m": {"input": "1"}}}), json!({"m": {"input": 1.0}})] {
        assert!(serde_json::from_value::<PriceTable>(unparsable).is_err());
    }
}

/// `bench/usage.sh`: recording one call, and the usage route's queries (the total, and each
/// grouping) with 1,000 and 10,000 runs recorded over 30 days, on the SQL the TownContainer
/// runs, in SQLite natively. Prints a markdown table; no timing is asserted.
#[test]
#[ignore]
fn bench_usage() {
    use std::time::Instant;
    let owned = db();
    let db = &owned;
    let time = |runs: u32, what: &dyn Fn(u32)| {
        let t = Instant::now();
        for i in 0..runs {
            what(i);
        }
        t.elapsed().as_secs_f64() * 1e6 / f64::from(runs)
    };
    println!("| runs recorded | record a call (µs) | total (µs) | by bead (µs) | by agent (µs) | by model (µs) | by day (µs) | rows kept |");
    println!("|---|---|---|---|---|---|---|---|");
    let mut made = 0u32;
    for target in [1_000u32, 10_000] {
        // A run: one bead's agent, 5 calls on its day.
        db.exec("BEGIN", vec![]).expect("begin");
        while made < target {
            let at = format!("2026-11-{:02}T10:00:00.000Z", made % 30 + 1);
            for c in 0..5 {
                let u = call(
                    &format!("m{made}-{c}"),
                    &format!("b{made}"),
                    ["p/a", "p/b", "p/c"][made as usize % 3],
                    1_000,
                    Some(0.01),
                );
                record(db, &format!("r{}", made % 3), &format!("a{}", made % 20), &at, &u)
                    .expect("kept");
            }
            made += 1;
        }
        db.exec("COMMIT", vec![]).expect("commit");
        let fresh = std::cell::Cell::new(0u32);
        let record_one = time(200, &|_| {
            fresh.set(fresh.get() + 1);
            let u = call(&format!("new{target}-{}", fresh.get()), "b-new", "p/a", 10, Some(0.01));
            record(db, "r0", "a0", "2026-11-30T10:00:00.000Z", &u).expect("kept");
        });
        let q = |raw: &str| {
            let q = query(raw);
            move |_| {
                report(db, &q).expect("report");
            }
        };
        let total = time(50, &q(""));
        let bead = time(20, &q("group_by=bead"));
        let agent = time(50, &q("group_by=agent"));
        let model = time(50, &q("group_by=model"));
        let day = time(50, &q("group_by=day"));
        #[derive(serde::Deserialize)]
        struct Count {
            n: i64,
        }
        let rows: Vec<Count> =
            db.query("SELECT COUNT(*) AS n FROM usage_hourly", vec![]).expect("count");
        println!(
            "| {target} | {record_one:.0} | {total:.0} | {bead:.0} | {agent:.0} | {model:.0} | {day:.0} | {} |",
            rows[0].n
        );
    }
}
