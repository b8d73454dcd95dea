//! The operator CLI's shard commands on SQLite shards (row level, tenants placed by the
//! catalog directory): create, list, drain, rebalance (planned, then applied, one move
//! failing), move, drop; every result read back from the shards' files.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failure is a panic

mod cli_support;

use cli_support::{Fleet, sqlite, sqlite_count};
use serde_json::Value;
use std::collections::BTreeMap;

/// Each tenant's shard, as `tenants list --json` says.
fn placements(fleet: &Fleet) -> BTreeMap<String, String> {
    let (run, value) = fleet.json(&["tenants", "list"]);
    run.code(0);
    value["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["id"].as_str().unwrap().to_owned(),
                t["shard"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// Tenant `tenant`'s orders on shard `shard`.
async fn orders(fleet: &Fleet, shard: &str, tenant: i64) -> i64 {
    sqlite_count(
        &fleet.file(&format!("shard_{shard}.db")),
        &format!("SELECT COUNT(*) FROM orders WHERE tenant_id = {tenant}"),
    )
    .await
}

async fn place_orders(fleet: &Fleet, shard: &str, tenant: i64) {
    sqlite(
        &fleet.file(&format!("shard_{shard}.db")),
        &format!(
            "INSERT INTO orders (id, tenant_id, item, total_cents) VALUES ({a}, {tenant}, 'tea', 450), ({b}, {tenant}, 'cake', 1200)",
            a = tenant * 100,
            b = tenant * 100 + 1
        ),
    )
    .await;
}

#[tokio::test]
async fn shards_are_created_listed_drained_rebalanced_and_dropped() {
    let fleet = Fleet::sqlite(true);
    for shard in ["s0", "s1"] {
        let (run, value) = fleet.json(&["shards", "create", shard]);
        run.code(0);
        assert_eq!(value["shard"], shard);
        assert!(fleet.file(&format!("shard_{shard}.db")).exists());
    }
    let (run, value) = fleet.json(&["shards", "create", "s0"]);
    run.code(1);
    assert_eq!(value["error"]["kind"], "shard_exists");

    // Tenants placed on the emptier shard, one after the other.
    for id in ["1", "2", "3", "4"] {
        fleet.run(&["tenants", "create", id]).code(0);
    }
    let placed = placements(&fleet);
    assert_eq!(
        placed.values().filter(|s| *s == "s0").count(),
        2,
        "{placed:?}"
    );
    fleet.run(&["tenants", "create", "1"]).code(1);
    for (tenant, shard) in &placed {
        place_orders(&fleet, shard, tenant.parse().unwrap()).await;
    }
    // Under row level a tenant's rows share tables: `tenants drop` is not for them.
    fleet.run(&["tenants", "drop", "1"]).code(2);

    // The shards are the fleet to migrate here.
    let (run, value) = fleet.json(&["tenants", "migrate"]);
    run.code(0);
    assert_eq!(value["unit"], "shard");
    assert_eq!(value["migrated"], serde_json::json!(["s0", "s1"]));

    // Draining s0: new tenants go to s1 only.
    let (run, value) = fleet.json(&["shards", "drain", "s0"]);
    run.code(0);
    assert_eq!(value["tenants"], 2);
    fleet.run(&["tenants", "create", "5"]).code(0);
    assert_eq!(placements(&fleet)["5"], "s1");
    let (_, value) = fleet.json(&["shards", "list"]);
    let states: Vec<(&str, &str, u64)> = value["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap(),
                s["state"].as_str().unwrap(),
                s["tenants"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(states, [("s0", "draining", 2), ("s1", "active", 3)]);

    // A plan only: printed, nothing moved.
    let before = placements(&fleet);
    let (run, value) = fleet.json(&["shards", "rebalance"]);
    run.code(0);
    assert_eq!(value["applied"], false);
    let moves = value["moves"].as_array().unwrap();
    assert_eq!(moves.len(), 2);
    assert!(
        moves.iter().all(|m| m["from"] == "s0" && m["to"] == "s1"),
        "{value}"
    );
    assert_eq!(placements(&fleet), before);
    let run = fleet.run(&["shards", "rebalance"]);
    assert!(run.stdout.contains("run again with --apply"), "{run:?}");

    // Applied, with one move failing: a key the destination holds already.
    let on_s0: Vec<i64> = before
        .iter()
        .filter(|(_, s)| *s == "s0")
        .map(|(t, _)| t.parse().unwrap())
        .collect();
    let (blocked, free) = (on_s0[1], on_s0[0]);
    sqlite(
        &fleet.file("shard_s1.db"),
        &format!(
            "INSERT INTO orders (id, tenant_id, item, total_cents) VALUES ({}, 5, 'clash', 1)",
            blocked * 100
        ),
    )
    .await;
    let (run, value) = fleet.json(&["shards", "rebalance", "--apply"]);
    run.code(3);
    assert_eq!(value["moved"].as_array().unwrap().len(), 1, "{value}");
    assert_eq!(value["failed"][0]["tenant"], blocked.to_string(), "{value}");
    assert!(
        run.stderr
            .contains(&format!("tenant {blocked} s0 -> s1 FAILED")),
        "{run:?}"
    );
    let after = placements(&fleet);
    assert_eq!(after[&free.to_string()], "s1");
    assert_eq!(after[&blocked.to_string()], "s0");
    assert_eq!(orders(&fleet, "s1", free).await, 2);
    assert_eq!(orders(&fleet, "s0", free).await, 0);
    assert_eq!(orders(&fleet, "s0", blocked).await, 2);
    // Nobody else's rows moved or vanished.
    for (tenant, shard) in &before {
        let tenant: i64 = tenant.parse().unwrap();
        if tenant != free && tenant != 5 {
            assert_eq!(orders(&fleet, shard, tenant).await, 2, "tenant {tenant}");
        }
    }

    // A shard that holds rows is not dropped.
    let (run, value) = fleet.json(&["shards", "drop", "s0"]);
    run.code(1);
    assert_eq!(value["error"]["kind"], "shard_not_empty");
    assert!(fleet.file("shard_s0.db").exists());

    // The clash removed, the move finishes; then s0 is empty and goes.
    sqlite(
        &fleet.file("shard_s1.db"),
        &format!("DELETE FROM orders WHERE id = {}", blocked * 100),
    )
    .await;
    let run = fleet.run(&["shards", "move", &blocked.to_string(), "--to", "s1"]);
    run.code(0);
    assert!(
        run.stdout.contains(&format!(
            "tenant {blocked} moved from s0 to s1: 2 row(s) copied"
        )),
        "{run:?}"
    );
    fleet.run(&["shards", "drop", "s0"]).code(0);
    assert!(!fleet.file("shard_s0.db").exists());
    let (_, value) = fleet.json(&["shards", "list"]);
    assert_eq!(value["shards"].as_array().unwrap().len(), 1);
    let run = fleet.run(&["shards", "drop", "s0"]);
    run.code(1);
    assert!(run.stderr.contains("s0"), "{run:?}");
}

#[tokio::test]
async fn rebalance_evens_out_active_shards_by_tenant_count() {
    let fleet = Fleet::sqlite(true);
    fleet.run(&["shards", "create", "s0"]).code(0);
    for id in 1..=5 {
        fleet.run(&["tenants", "create", &id.to_string()]).code(0);
        place_orders(&fleet, "s0", id).await;
    }
    fleet.run(&["shards", "create", "s1"]).code(0);
    let (run, value) = fleet.json(&["shards", "rebalance", "--apply"]);
    run.code(0);
    assert_eq!(value["moved"].as_array().unwrap().len(), 2, "{value}");
    let placed = placements(&fleet);
    assert_eq!(
        placed.values().filter(|s| *s == "s1").count(),
        2,
        "{placed:?}"
    );
    for (tenant, shard) in &placed {
        assert_eq!(
            orders(&fleet, shard, tenant.parse().unwrap()).await,
            2,
            "tenant {tenant}"
        );
    }
    // Balanced now: nothing more to move.
    let (run, value) = fleet.json(&["shards", "rebalance", "--apply"]);
    run.code(0);
    assert_eq!(value["moves"], serde_json::json!([]));

    // A move to a shard that does not exist, or of a tenant not placed: refused.
    let run = fleet.run(&["shards", "move", "1", "--to", "s9"]);
    run.code(1);
    let (run, value) = fleet.json(&["shards", "move", "77", "--to", "s1"]);
    assert_ne!(run.code, 0);
    assert_eq!(value["ok"], false);
    let (run, value): (_, Value) = fleet.json(&["catalog", "refresh"]);
    run.code(0);
    assert_eq!(value["unavailable"], serde_json::json!([]));
    let (run, value) = fleet.json(&["catalog", "show"]);
    run.code(0);
    assert_eq!(value["directory"]["keys"], 5);
    assert_eq!(value["shards"].as_array().unwrap().len(), 2);
}

/// `--by rows` weighs shards by the moving entities' rows: one heavy tenant outweighs
/// three light ones, so the plan moves the heavy one alone (by tenant count it would move
/// two light ones); applied with `--parallel 2`, its rows land on the emptier shard and
/// nobody else's move. A weight the CLI does not know is a usage error.
#[tokio::test]
async fn rebalance_by_rows_moves_the_heavy_tenant() {
    let fleet = Fleet::sqlite(true);
    fleet.run(&["shards", "create", "s0"]).code(0);
    for id in 1..=4 {
        fleet.run(&["tenants", "create", &id.to_string()]).code(0);
        place_orders(&fleet, "s0", id).await;
    }
    let values: Vec<String> = (2..20)
        .map(|n| format!("({}, 1, 'bulk', {n})", 100 + n))
        .collect();
    sqlite(
        &fleet.file("shard_s0.db"),
        &format!(
            "INSERT INTO orders (id, tenant_id, item, total_cents) VALUES {}",
            values.join(", ")
        ),
    )
    .await;
    fleet.run(&["shards", "create", "s1"]).code(0);

    let (run, by_tenants) = fleet.json(&["shards", "rebalance"]);
    run.code(0);
    assert_eq!(
        by_tenants["moves"].as_array().unwrap().len(),
        2,
        "{by_tenants}"
    );
    let (run, by_rows) = fleet.json(&["shards", "rebalance", "--by", "rows"]);
    run.code(0);
    assert_eq!(by_rows["by"], "row", "{by_rows}");
    let moves = by_rows["moves"].as_array().unwrap();
    assert_eq!(moves.len(), 1, "{by_rows}");
    assert_eq!(moves[0]["tenant"], "1");
    assert_eq!(moves[0]["weight"], 20);
    let shards = by_rows["shards"].as_array().unwrap();
    assert_eq!(shards[0]["before"], 26, "{by_rows}");
    assert_eq!(shards[0]["after"], 6, "{by_rows}");
    let run = fleet.run(&["shards", "rebalance", "--by", "rows"]);
    assert!(
        run.stdout
            .contains("move tenant 1 from s0 to s1 (20 row(s))"),
        "{run:?}"
    );

    let (run, applied) = fleet.json(&[
        "shards",
        "rebalance",
        "--by",
        "rows",
        "--apply",
        "--parallel",
        "2",
    ]);
    run.code(0);
    assert_eq!(applied["moved"].as_array().unwrap().len(), 1, "{applied}");
    assert!(run.stderr.contains("tenant 1 s0 -> s1 done"), "{run:?}");
    assert_eq!(orders(&fleet, "s1", 1).await, 20);
    assert_eq!(orders(&fleet, "s0", 1).await, 0);
    for tenant in 2..=4 {
        assert_eq!(orders(&fleet, "s0", tenant).await, 2, "tenant {tenant}");
    }
    let (run, again) = fleet.json(&["shards", "rebalance", "--by", "rows"]);
    run.code(0);
    assert_eq!(again["moves"], serde_json::json!([]), "{again}");

    let run = fleet.run(&["shards", "rebalance", "--by", "weight"]);
    run.code(2);
}
