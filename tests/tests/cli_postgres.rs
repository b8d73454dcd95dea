//! The operator CLI on PostgreSQL, where every command works: tenants are schemas placed
//! on shards that are databases of the server, the catalog in a database of its own. A
//! partly failing fleet migration, moves with their rows, shards added by URL with a
//! password that is never echoed, and refusals that change nothing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failure is a panic

mod cli_support;

use cli_support::Fleet;
use futures_util::FutureExt;
use sea_orm::{ConnectionTrait, Database, DatabaseConnection, Statement};
use std::panic::AssertUnwindSafe;
use tenancy_tests::{Backend, TestDb};

async fn exec(conn: &DatabaseConnection, sql: &str) {
    conn.execute_unprepared(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

async fn count(conn: &DatabaseConnection, sql: &str) -> i64 {
    let row = conn
        .query_one_raw(Statement::from_string(
            conn.get_database_backend(),
            sql.to_owned(),
        ))
        .await
        .unwrap()
        .unwrap();
    row.try_get_by_index(0).unwrap()
}

/// The URL of database `name` on the server of `url`, with `password` if given.
fn database_url(url: &str, name: &str, password: Option<&str>) -> String {
    let mut parsed = url::Url::parse(url).unwrap();
    parsed.set_path(name);
    if password.is_some() {
        parsed.set_password(password).unwrap();
    }
    parsed.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_tenant_schemas_on_shards() {
    let Some(mut catalog) = TestDb::create(Backend::Postgres).await else {
        return;
    };
    let Some(spare) = TestDb::create(Backend::Postgres).await else {
        return;
    };
    let catalog_url = catalog.url.clone().unwrap();
    let name = url::Url::parse(&catalog_url)
        .unwrap()
        .path()
        .trim_start_matches('/')
        .to_owned();
    let prefix = format!("{name}_s_");
    catalog.also_remove_databases(&prefix);
    let spare_name = url::Url::parse(spare.url.as_ref().unwrap())
        .unwrap()
        .path()
        .trim_start_matches('/')
        .to_owned();
    let fleet = Fleet::postgres(&catalog_url, &prefix);
    let outcome = AssertUnwindSafe(scenario(&fleet, &catalog_url, &prefix, &spare_name))
        .catch_unwind()
        .await;
    spare.drop_db().await;
    catalog.drop_db().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic)
    }
}

async fn scenario(fleet: &Fleet, catalog_url: &str, prefix: &str, spare: &str) {
    const PASSWORD: &str = "s3cret-Pw0rd";
    // s0 from the template; s1 the empty spare database, given by a URL with a password
    // (the server trusts the test's connections, so the password is ignored, but carried).
    fleet.run(&["shards", "create", "s0"]).code(0);
    let s1_url = database_url(catalog_url, spare, Some(PASSWORD));
    let run = fleet.run(&["shards", "create", "s1", &s1_url]);
    run.code(0);
    assert!(run.stdout.contains(":***@"), "{run:?}");
    // The catalog's own database is not empty: refused, with its URL and nothing changed.
    let (run, value) = fleet.json(&["shards", "create", "s2", catalog_url]);
    run.code(1);
    assert_eq!(value["error"]["kind"], "shard_not_empty");
    // An unreachable server: the error names no password.
    let bad = format!("postgres://postgres:{PASSWORD}@127.0.0.1:1/nothing");
    let run = fleet.run(&["shards", "create", "s3", &bad]);
    run.code(1);
    assert!(
        run.stderr.starts_with("error: shard s3 failed: "),
        "{run:?}"
    );
    assert!(
        !run.stdout.contains(PASSWORD) && !run.stderr.contains(PASSWORD),
        "{run:?}"
    );
    // From the environment: `env:VAR`, and a clear error when it is not set.
    let run = fleet.run(&["shards", "create", "s4", "env:TENANCY_CLI_TEST_UNSET_URL"]);
    run.code(2);
    assert!(run.stderr.contains("TENANCY_CLI_TEST_UNSET_URL"), "{run:?}");
    let (run, value) = fleet.json(&["shards", "list"]);
    run.code(0);
    let shards = value["shards"].as_array().unwrap();
    assert_eq!(shards.len(), 2, "{value}");
    assert_eq!(
        shards[1]["url"],
        database_url(catalog_url, spare, Some("***"))
    );
    for args in [
        &["shards", "list"][..],
        &["catalog", "show"],
        &["--json", "catalog", "show"],
    ] {
        let run = fleet.run(args);
        run.code(0);
        assert!(
            !run.stdout.contains(PASSWORD) && !run.stderr.contains(PASSWORD),
            "{run:?}"
        );
    }

    // Tenants: schemas placed on the emptier shard.
    for id in ["1", "2", "3", "4"] {
        let (run, value) = fleet.json(&["tenants", "create", id]);
        run.code(0);
        assert!(value["shard"].is_string(), "{value}");
    }
    fleet.run(&["tenants", "create", "2"]).code(1);
    // Concurrent creates of one tenant: one makes it, the others fail, and the placement
    // the winner lives by stays.
    let children: Vec<_> = (0..4)
        .map(|_| {
            fleet
                .std_command()
                .args(["tenants", "create", "9"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let codes: Vec<i32> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap().status.code().unwrap_or(-1))
        .collect();
    assert_eq!(codes.iter().filter(|c| **c == 0).count(), 1, "{codes:?}");
    assert!(codes.iter().all(|c| *c == 0 || *c == 1), "{codes:?}");
    let (_, value) = fleet.json(&["tenants", "list"]);
    let nine = value["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == "9")
        .cloned();
    assert!(
        nine.as_ref().is_some_and(|t| t["shard"].is_string()),
        "{value}"
    );
    fleet.run(&["tenants", "drop", "9"]).code(0);
    // `-1` would name the schema `tenant_-1`: refused, nothing made.
    let run = fleet.run(&["tenants", "create", "--", "-1"]);
    run.code(2);
    assert!(fleet.tenants().len() == 4);
    let (_, value) = fleet.json(&["tenants", "list"]);
    let shard_of = |id: &str| -> String {
        value["tenants"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["id"] == id)
            .unwrap()["shard"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let s0 = Database::connect(database_url(catalog_url, &format!("{prefix}s0"), None))
        .await
        .unwrap();
    let s1 = Database::connect(database_url(catalog_url, spare, None))
        .await
        .unwrap();
    let conn = |shard: &str| if shard == "s0" { &s0 } else { &s1 };

    // A fleet migration with one failing tenant: 2 lost its migration record only, so its
    // `CREATE TABLE orders` fails; 1, 3 and 4 lost their tables and migrate again.
    for id in ["1", "3", "4"] {
        exec(
            conn(&shard_of(id)),
            &format!("DROP TABLE tenant_{id}.orders; DROP TABLE tenant_{id}.seaql_migrations"),
        )
        .await;
    }
    exec(conn(&shard_of("2")), "DROP TABLE tenant_2.seaql_migrations").await;
    let (run, value) = fleet.json(&["tenants", "migrate", "--parallel", "3"]);
    run.code(3);
    assert_eq!(value["migrated"], serde_json::json!(["1", "3", "4"]));
    assert_eq!(value["failed"][0]["tenant"], "2");
    assert!(run.stderr.contains("tenant 2 FAILED"), "{run:?}");
    for id in ["1", "3", "4"] {
        assert_eq!(
            count(
                conn(&shard_of(id)),
                &format!("SELECT COUNT(*) FROM tenant_{id}.orders")
            )
            .await,
            0
        );
    }
    exec(conn(&shard_of("2")), "DROP TABLE tenant_2.orders").await;
    fleet.run(&["tenants", "migrate"]).code(0);

    // A move: the tenant's rows and schema go to the other shard, nobody else's.
    for id in 1..=4 {
        exec(
            conn(&shard_of(&id.to_string())),
            &format!("INSERT INTO tenant_{id}.orders (id, tenant_id, item, total_cents) VALUES ({a}, {id}, 'tea', 450), ({b}, {id}, 'cake', 1200)", a = id * 100, b = id * 100 + 1),
        )
        .await;
    }
    let from = shard_of("1");
    let to = if from == "s0" { "s1" } else { "s0" };
    let run = fleet.run(&["shards", "move", "1", "--to", to]);
    run.code(0);
    assert!(run.stdout.contains("2 row(s) copied"), "{run:?}");
    assert_eq!(
        count(conn(to), "SELECT COUNT(*) FROM tenant_1.orders").await,
        2
    );
    assert_eq!(
        count(
            conn(&from),
            "SELECT COUNT(*) FROM pg_namespace WHERE nspname = 'tenant_1'"
        )
        .await,
        0
    );
    for id in ["2", "3", "4"] {
        assert_eq!(
            count(
                conn(&shard_of(id)),
                &format!("SELECT COUNT(*) FROM tenant_{id}.orders")
            )
            .await,
            2
        );
    }
    let mut placed = fleet.tenants();
    placed.sort();
    assert_eq!(placed, ["1", "2", "3", "4"]);

    // Dropping a tenant drops its schema and its placement; again, an error.
    let shard4 = shard_of("4");
    fleet.run(&["tenants", "drop", "4"]).code(0);
    assert_eq!(
        count(
            conn(&shard4),
            "SELECT COUNT(*) FROM pg_namespace WHERE nspname = 'tenant_4'"
        )
        .await,
        0
    );
    assert!(!fleet.tenants().contains(&"4".to_owned()));
    let (run, value) = fleet.json(&["tenants", "drop", "4"]);
    run.code(1);
    assert_eq!(value["error"]["kind"], "unknown_tenant");

    // The shard added by URL is not the template's to drop: refused, no password shown.
    let run = fleet.run(&["shards", "drop", "s1"]);
    assert_ne!(run.code, 0);
    assert!(
        !run.stdout.contains(PASSWORD) && !run.stderr.contains(PASSWORD),
        "{run:?}"
    );
    let _ = s0.close().await;
    let _ = s1.close().await;
}
