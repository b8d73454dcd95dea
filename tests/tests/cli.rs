//! The operator CLI, driven as an operator does: the example's binary run with arguments,
//! its exit code, standard output (text and `--json`) and standard error checked, and the
//! fleet's files read behind it. SQLite here: a database per tenant, and SQLite shards.
//! (PostgreSQL, schema per tenant on shards: `cli_postgres.rs`.)

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failure is a panic

mod cli_support;

use cli_support::{Fleet, sqlite, sqlite_count};

#[test]
fn help_for_every_command_needs_no_database() {
    let fleet = Fleet::sqlite(false);
    let commands: &[&[&str]] = &[
        &[],
        &["tenants"],
        &["tenants", "list"],
        &["tenants", "create"],
        &["tenants", "drop"],
        &["tenants", "migrate"],
        &["shards"],
        &["shards", "list"],
        &["shards", "create"],
        &["shards", "drain"],
        &["shards", "drop"],
        &["shards", "move"],
        &["shards", "rebalance"],
        &["catalog"],
        &["catalog", "show"],
        &["catalog", "refresh"],
    ];
    for command in commands {
        let mut args = command.to_vec();
        args.push("--help");
        let run = fleet.run(&args);
        run.code(0);
        assert!(run.stdout.contains("Usage: cli"), "{run:?}");
        assert!(run.stdout.contains("--json"), "{run:?}");
    }
    let run = fleet.run(&["--help"]);
    assert!(run.stdout.contains("Exit codes: 0 success"), "{run:?}");
    let run = fleet.run(&["tenants", "migrate", "--help"]);
    assert!(run.stdout.contains("--parallel <N>"), "{run:?}");
    let run = fleet.run(&["shards", "rebalance", "--help"]);
    assert!(run.stdout.contains("--apply"), "{run:?}");
    // Help never opened the catalog.
    assert!(!fleet.file("catalog.db").exists());
}

#[test]
fn usage_errors_exit_2_with_a_message() {
    let fleet = Fleet::sqlite(false);
    for args in [
        &[][..],
        &["tenants"],
        &["tenants", "frobnicate"],
        &["tenants", "create"],
        &["tenants", "migrate", "--parallel", "0"],
        &["tenants", "migrate", "--parallel", "many"],
        &["shards", "move", "1"],
        &["shards", "create", "bad name"],
        &["shards", "drain", "s0;drop"],
    ] {
        let run = fleet.run(args);
        run.code(2);
        assert!(!run.stderr.is_empty(), "{run:?}");
    }
    // Under --json, a usage error is a document too.
    let (run, value) = fleet.json(&["tenants", "create", "x"]);
    run.code(2);
    assert_eq!(value["ok"], false);
    assert_eq!(value["exit_code"], 2);
    assert_eq!(value["error"]["kind"], "usage");
    assert!(!fleet.file("catalog.db").exists());
}

#[tokio::test]
async fn tenants_create_list_drop_with_json() {
    let fleet = Fleet::sqlite(false);
    assert!(fleet.tenants().is_empty());
    for id in ["1", "2", "10"] {
        let (run, value) = fleet.json(&["tenants", "create", id]);
        run.code(0);
        assert_eq!(
            value,
            serde_json::json!({"ok": true, "exit_code": 0, "tenant": id, "shard": null})
        );
    }
    let mut tenants = fleet.tenants();
    tenants.sort();
    assert_eq!(tenants, ["1", "10", "2"]);
    assert!(fleet.file("tenant_2.db").exists());

    let run = fleet.run(&["tenants", "drop", "2"]);
    run.code(0);
    assert_eq!(run.stdout.trim(), "tenant 2 dropped");
    assert!(!fleet.file("tenant_2.db").exists());
    assert!(!fleet.tenants().contains(&"2".to_owned()));

    // Dropping it again, or one never made: an error, nothing else touched.
    let (run, value) = fleet.json(&["tenants", "drop", "2"]);
    run.code(1);
    assert_eq!(value["error"]["kind"], "unknown_tenant");
    assert!(run.stderr.contains("tenant 2 is not registered"), "{run:?}");
    assert_eq!(fleet.tenants().len(), 2);

    let (run, value) = fleet.json(&["catalog", "show"]);
    run.code(0);
    assert_eq!(value["tenant_databases"], 2);
    assert_eq!(value["placement"], "a database per tenant");
}

#[tokio::test]
async fn creating_a_tenant_twice_is_a_clear_error_that_changes_nothing() {
    let fleet = Fleet::sqlite(false);
    fleet.run(&["tenants", "create", "7"]).code(0);
    let file = fleet.file("tenant_7.db");
    sqlite(
        &file,
        "INSERT INTO orders (id, tenant_id, item, total_cents) VALUES (1, 7, 'tea', 450)",
    )
    .await;

    let run = fleet.run(&["tenants", "create", "7"]);
    run.code(1);
    assert_eq!(run.stderr.trim(), "error: tenant 7 exists already");
    assert!(run.stdout.is_empty(), "{run:?}");
    let (run, value) = fleet.json(&["tenants", "create", "7"]);
    run.code(1);
    assert_eq!(value["error"]["kind"], "tenant_exists");

    assert_eq!(sqlite_count(&file, "SELECT COUNT(*) FROM orders").await, 1);
    assert_eq!(fleet.tenants(), ["7"]);
}

#[tokio::test]
async fn invalid_and_look_alike_tenant_ids_are_refused_and_change_nothing() {
    let fleet = Fleet::sqlite(false);
    fleet.run(&["tenants", "create", "1"]).code(0);
    let files = || {
        let mut names: Vec<String> = std::fs::read_dir(&fleet.dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    let before = files();
    // `01`, `+1` and ` 1` would parse as tenant 1: refused, not read as it.
    for id in [
        "abc",
        "01",
        "+1",
        " 1",
        "1 ",
        "1;DROP TABLE orders",
        "",
        "1.0",
        "99999999999999999999",
    ] {
        for command in ["create", "drop"] {
            let run = fleet.run(&["tenants", command, id]);
            run.code(2);
            assert!(run.stderr.contains("invalid tenant id"), "{run:?}");
        }
        let run = fleet.run(&["shards", "move", id, "--to", "s0"]);
        run.code(2);
    }
    assert_eq!(files(), before);
    assert_eq!(fleet.tenants(), ["1"]);
    assert_eq!(
        sqlite_count(
            &fleet.file("tenant_1.db"),
            "SELECT COUNT(*) FROM seaql_migrations"
        )
        .await,
        1
    );
}

/// Tenants 1 and 3 lost their tables (so they migrate again); tenant 2 lost only its
/// migration record, so its migration's `CREATE TABLE orders` fails.
async fn break_migrations(fleet: &Fleet, failing: &[&str], fine: &[&str]) {
    for id in fine {
        sqlite(
            &fleet.file(&format!("tenant_{id}.db")),
            "DROP TABLE orders; DROP TABLE seaql_migrations",
        )
        .await;
    }
    for id in failing {
        sqlite(
            &fleet.file(&format!("tenant_{id}.db")),
            "DROP TABLE seaql_migrations",
        )
        .await;
    }
}

#[tokio::test]
async fn a_fleet_migration_with_one_failing_tenant_is_a_partial_failure() {
    let fleet = Fleet::sqlite(false);
    for id in ["1", "2", "3"] {
        fleet.run(&["tenants", "create", id]).code(0);
    }
    break_migrations(&fleet, &["2"], &["1", "3"]).await;

    let run = fleet.run(&["tenants", "migrate", "--parallel", "2"]);
    run.code(3);
    assert!(
        run.stdout.contains("migrated 2 tenant(s), 1 failed"),
        "{run:?}"
    );
    assert!(run.stdout.contains("tenant 2 failed:"), "{run:?}");
    // Not a terminal: a plain progress line per tenant on standard error.
    assert_eq!(
        run.stderr
            .lines()
            .filter(|l| l.starts_with("migrate "))
            .count(),
        3,
        "{run:?}"
    );
    assert!(run.stderr.contains("tenant 2 FAILED"), "{run:?}");
    for id in ["1", "3"] {
        let file = fleet.file(&format!("tenant_{id}.db"));
        assert_eq!(
            sqlite_count(&file, "SELECT COUNT(*) FROM seaql_migrations").await,
            1
        );
        assert_eq!(sqlite_count(&file, "SELECT COUNT(*) FROM orders").await, 0);
    }

    // The same under --json, parsed: the failing tenant named, the others done.
    break_migrations(&fleet, &[], &["1", "3"]).await;
    let (run, value) = fleet.json(&["tenants", "migrate"]);
    run.code(3);
    assert_eq!(value["ok"], false);
    assert_eq!(value["exit_code"], 3);
    assert_eq!(value["migrated"], serde_json::json!(["1", "3"]));
    let failed = value["failed"].as_array().unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["tenant"], "2");
    assert!(
        failed[0]["error"].as_str().unwrap().contains("orders"),
        "{value}"
    );
    assert!(!failed[0]["error"].as_str().unwrap().contains('\n'));

    // Fixed by hand, a re-run resumes: every tenant done.
    sqlite(&fleet.file("tenant_2.db"), "DROP TABLE orders").await;
    let (run, value) = fleet.json(&["tenants", "migrate"]);
    run.code(0);
    assert_eq!(value["failed"], serde_json::json!([]));
    assert_eq!(value["migrated"], serde_json::json!(["1", "2", "3"]));
}

#[tokio::test]
async fn a_fleet_migration_where_every_tenant_fails_is_a_failure() {
    let fleet = Fleet::sqlite(false);
    fleet.run(&["tenants", "create", "5"]).code(0);
    break_migrations(&fleet, &["5"], &[]).await;
    let run = fleet.run(&["tenants", "migrate"]);
    run.code(1);
    assert!(run.stdout.contains("tenant 5 failed"), "{run:?}");
}

#[test]
fn shard_commands_on_a_fleet_without_shards_are_configuration_errors() {
    let fleet = Fleet::sqlite(false);
    for args in [
        &["shards", "list"][..],
        &["shards", "create", "s0"],
        &["shards", "drain", "s0"],
        &["shards", "rebalance"],
        &["catalog", "refresh"],
    ] {
        let run = fleet.run(args);
        run.code(2);
        assert!(run.stderr.contains("need a sharded tenancy"), "{run:?}");
    }
}

#[test]
fn concurrent_creates_of_one_tenant_make_it_once() {
    let fleet = Fleet::sqlite(false);
    fleet.run(&["tenants", "list"]).code(0); // the catalog made once
    let children: Vec<_> = (0..4)
        .map(|_| {
            fleet
                .std_command()
                .args(["tenants", "create", "42"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outputs: Vec<_> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    let codes: Vec<i32> = outputs
        .iter()
        .map(|o| o.status.code().unwrap_or(-1))
        .collect();
    assert_eq!(codes.iter().filter(|c| **c == 0).count(), 1, "{codes:?}");
    // The others: a failure (not a usage error), saying why.
    for output in outputs.iter().filter(|o| !o.status.success()) {
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains("exists already"), "{stderr}");
    }
    assert_eq!(fleet.tenants(), ["42"]);
}
