//! An online move of one tenant between two PostgreSQL shard databases, against the floor
//! of copying the same rows with PostgreSQL's own `COPY ... TO STDOUT` piped into
//! `COPY ... FROM STDIN` (two `psql` processes), in one run: the tenant's rows over three
//! tables (customers 20%, orders 60%, tags 20%), at 10,000 and 100,000 rows. The floor and
//! the move alternate, 3 rounds each (medians); each move goes the other way from the last.
//! A move also removes the rows from the shard it left, which the `COPY` floor does not:
//! the floor of that part, plain `DELETE`s of the same rows, is measured beside it.
//!
//! Also the write-unavailability window: from the fence going up to the switch, the time
//! in which the tenant's writes are refused everywhere (a process that routes by the new
//! placement writes again from the switch on).
//!
//! And a directory of 1,000,000 tenants in the catalog: the time and the bytes another
//! process reads to catch up with one change (a refresh that applies the logged change),
//! against loading the whole directory again, in the same run.
//!
//! ```text
//! TENANCY_PG_URL=postgres://postgres@127.0.0.1:5432/test cargo bench -p tenancy-tests --bench moves
//! ```
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::panic,
    clippy::cast_precision_loss,
    missing_docs
)]

use sea_orm::{ConnectionTrait, DatabaseConnection};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tenancy_sea::catalog::{Directory, Shards};
use tenancy_sea::{DirectoryRouter, MoveProgress, ShardId, Tenancy};
use tenancy_tests::entities::{customer, order, tag};
use tenancy_tests::migration::DatabaseMigratorV1;
use tenancy_tests::{Backend, Flavor, TestDb};

const TENANT: i64 = 7;
const ROUNDS: usize = 3;
const TABLES: [&str; 3] = ["customers", "orders", "tags"];

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

async fn run(conn: &DatabaseConnection, sql: &str) {
    conn.execute_unprepared(sql).await.unwrap();
}

/// The tenant's rows, written straight into `conn`: `rows` over the three tables.
async fn load(conn: &DatabaseConnection, rows: i64) {
    let (customers, orders, tags) = (rows / 5, rows * 3 / 5, rows / 5);
    run(
        conn,
        &format!(
            "INSERT INTO customers (id, tenant_id, name) SELECT g, {TENANT}, 'customer ' || g \
             FROM generate_series(1, {customers}) g"
        ),
    )
    .await;
    run(
        conn,
        &format!(
            "INSERT INTO orders (id, tenant_id, customer_id, total_cents) \
             SELECT g, {TENANT}, 1 + g % {customers}, g * 7 % 100000 \
             FROM generate_series(1, {orders}) g"
        ),
    )
    .await;
    run(
        conn,
        &format!(
            "INSERT INTO tags (id, tenant_id, label) SELECT g, {TENANT}, 'tag ' || g \
             FROM generate_series(1, {tags}) g"
        ),
    )
    .await;
    run(conn, "ANALYZE customers, orders, tags").await;
}

/// The floor: each table's rows of the tenant from `from` to `to` by `COPY`, through a
/// pipe between two `psql` processes; then the floor of a clean-up: the copies deleted
/// again by plain `DELETE`s, children first, in one transaction (timed apart).
async fn floor(from_url: &str, to_url: &str, to: &DatabaseConnection) -> (Duration, Duration) {
    let started = Instant::now();
    for table in TABLES {
        let script = format!(
            "psql -X -q -v ON_ERROR_STOP=1 '{from_url}' -c \"\\copy (SELECT * FROM {table} \
             WHERE tenant_id = {TENANT}) TO STDOUT\" | psql -X -q -v ON_ERROR_STOP=1 \
             '{to_url}' -c \"\\copy {table} FROM STDIN\""
        );
        let status = std::process::Command::new("sh")
            .args(["-c", &script])
            .status()
            .unwrap();
        assert!(status.success(), "{script}");
    }
    let took = started.elapsed();
    let started = Instant::now();
    let deletes: Vec<String> = TABLES
        .iter()
        .rev()
        .map(|table| format!("DELETE FROM {table} WHERE tenant_id = {TENANT}"))
        .collect();
    run(to, &format!("BEGIN; {}; COMMIT", deletes.join("; "))).await;
    (took, started.elapsed())
}

/// One move of the tenant to `to`: its time, its time to the switch, and the time from the
/// fence to the switch.
async fn move_once(tenancy: &Tenancy<i64>, to: &str) -> (Duration, Duration, Duration) {
    let marks: Arc<Mutex<Vec<(&'static str, Instant)>>> = Arc::default();
    let seen = marks.clone();
    let started = Instant::now();
    tenancy
        .move_tenant(TENANT, to)
        .entity::<customer::Entity>()
        .entity::<order::Entity>()
        .entity::<tag::Entity>()
        .on_progress(move |progress| {
            let stage = match progress {
                MoveProgress::Fenced => "fenced",
                MoveProgress::Switched => "switched",
                MoveProgress::Copying { table, .. } => table,
                MoveProgress::Copied => "copied",
                MoveProgress::Verified => "verified",
                MoveProgress::Removing { table, .. } => table,
                MoveProgress::Done => "done",
                _ => return,
            };
            seen.lock().unwrap().push((stage, Instant::now()));
        })
        .run()
        .await
        .unwrap();
    let took = started.elapsed();
    let marks = marks.lock().unwrap();
    let at = |stage| marks.iter().find(|(s, _)| *s == stage).unwrap().1;
    if std::env::var_os("TENANCY_BENCH_STAGES").is_some() {
        let line: Vec<String> = marks
            .iter()
            .map(|(s, t)| format!("{s} {:.0}", t.duration_since(started).as_secs_f64() * 1e3))
            .collect();
        eprintln!("stages (ms from start): {}", line.join(", "));
    }
    (
        took,
        at("switched").duration_since(started),
        at("switched").duration_since(at("fenced")),
    )
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let Some(catalog) = TestDb::for_flavor(Backend::Postgres, Flavor::Database).await else {
        panic!("TENANCY_PG_URL is needed");
    };
    let router = Arc::new(DirectoryRouter::new(Vec::<ShardId>::new()));
    let directory = Directory::new(catalog.conn.clone(), router.clone());
    directory.install().await.unwrap();
    let topology = Shards::new(catalog.conn.clone())
        .topology(router, 2)
        .await
        .unwrap();
    let tenancy = Tenancy::builder(catalog.conn.clone())
        .sharded(topology)
        .directory(directory.clone())
        .database_template(catalog.template.clone().unwrap())
        .build()
        .unwrap();
    for name in ["s0", "s1"] {
        tenancy
            .create_shard::<DatabaseMigratorV1>(name)
            .await
            .unwrap();
    }
    let shard = |name: &str| {
        tenancy
            .topology()
            .unwrap()
            .unscoped_connection(&ShardId::new(name))
            .unwrap()
    };
    // The referencing column indexed, as PostgreSQL advises for a foreign key whose parent
    // rows are deleted: without it each deleted customer scans all of `orders` for rows that
    // still point at it, and the clean-up's delete grows with the square of the tenant.
    for name in ["s0", "s1"] {
        run(
            &shard(name),
            "CREATE INDEX orders_customer_id ON orders (customer_id)",
        )
        .await;
    }
    let records = Shards::new(catalog.conn.clone()).list().await.unwrap();
    let url_of = |name: &str| {
        records
            .iter()
            .find(|r| r.name.as_str() == name)
            .unwrap()
            .url
            .clone()
    };
    let (s0_url, s1_url) = (url_of("s0"), url_of("s1"));
    println!(
        "| rows | floor: COPY piped (s) | floor: DELETE (s) | move to the switch (s) | whole move (s) | to the switch / COPY | whole / (COPY + DELETE) | whole / COPY | writes refused, fence to switch (ms) |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut home = "s0";
    for rows in [10_000, 100_000] {
        directory.assign(&TENANT, home).await.unwrap();
        load(&shard(home), rows).await;
        let (mut floors, mut deletes, mut moves, mut switches, mut windows) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            let away = if home == "s0" { "s1" } else { "s0" };
            let (from_url, to_url) = if home == "s0" {
                (&s0_url, &s1_url)
            } else {
                (&s1_url, &s0_url)
            };
            let (copy, delete) = floor(from_url, to_url, &shard(away)).await;
            floors.push(copy.as_secs_f64());
            deletes.push(delete.as_secs_f64());
            let (took, switched, window) = move_once(&tenancy, away).await;
            moves.push(took.as_secs_f64());
            switches.push(switched.as_secs_f64());
            windows.push(window.as_secs_f64() * 1e3);
            home = away;
        }
        let (f, d, m, s) = (
            median(floors),
            median(deletes),
            median(moves),
            median(switches),
        );
        println!(
            "| {rows} | {f:.3} | {d:.3} | {s:.3} | {m:.3} | {:.2} | {:.2} | {:.2} | {:.0} |",
            s / f,
            m / (f + d),
            m / f,
            median(windows)
        );
        for table in TABLES.iter().rev() {
            run(
                &shard(home),
                &format!("DELETE FROM {table} WHERE tenant_id = {TENANT}"),
            )
            .await;
        }
    }
    directory_refresh(&catalog, &directory).await;
    drop(tenancy);
    catalog.drop_db().await;
}

/// A directory of a million tenants: catching up with one change against a full reload.
async fn directory_refresh(catalog: &TestDb, directory: &Directory<i64>) {
    const ENTRIES: i64 = 1_000_000;
    let conn = &catalog.conn;
    run(
        conn,
        &format!(
            "INSERT INTO tenancy_directory (directory, key, shard) \
             SELECT 'tenants', g::text, CASE WHEN g % 2 = 0 THEN 's0' ELSE 's1' END \
             FROM generate_series(1000000, 1000000 + {ENTRIES} - 1) g"
        ),
    )
    .await;
    run(conn, "ANALYZE tenancy_directory").await;
    // The entries went in past the API: a change through it makes the version move.
    directory.assign(&5, "s0").await.unwrap();
    let names = Shards::new(conn.clone()).names().await.unwrap();
    let other = directory.for_router(Arc::new(DirectoryRouter::new(names)));
    let (mut loads, mut refreshes) = (Vec::new(), Vec::new());
    for round in 0..5 {
        let started = Instant::now();
        let loaded = other.load().await.unwrap();
        loads.push(started.elapsed().as_secs_f64());
        assert!(loaded.loaded as i64 > ENTRIES);
        directory.assign(&(1_000_000 + round), "s1").await.unwrap();
        let started = Instant::now();
        let refreshed = other.refresh_counted().await.unwrap();
        refreshes.push(started.elapsed().as_secs_f64());
        assert_eq!(
            refreshed,
            tenancy_sea::catalog::Refreshed::Applied { keys: 1 }
        );
    }
    let bytes = |sql: &str| {
        let sql = sql.to_owned();
        async move {
            let row = conn
                .query_one_raw(sea_orm::Statement::from_string(
                    sea_orm::DbBackend::Postgres,
                    sql,
                ))
                .await
                .unwrap()
                .unwrap();
            row.try_get::<i64>("", "n").unwrap()
        }
    };
    // What each reads from the catalog: the rows' sizes as PostgreSQL stores them.
    let whole = bytes(
        "SELECT sum(pg_column_size(t.*))::bigint AS n FROM tenancy_directory t \
         WHERE directory = 'tenants'",
    )
    .await;
    let one = bytes(
        "SELECT ((SELECT max(pg_column_size(c.*)) FROM tenancy_directory_changes c) \
         + (SELECT max(pg_column_size(t.*)) FROM tenancy_directory t) \
         + (SELECT max(pg_column_size(v.*)) FROM tenancy_directory_versions v))::bigint AS n",
    )
    .await;
    let (load, refresh) = (median(loads), median(refreshes));
    println!();
    println!(
        "| directory of {ENTRIES} tenants, one change | time (ms, median of 5) | bytes read from the catalog |"
    );
    println!("|---|---:|---:|");
    println!("| full reload (`load`) | {:.1} | {whole} |", load * 1e3);
    println!(
        "| incremental refresh (`refresh`) | {:.2} | {one} |",
        refresh * 1e3
    );
    println!(
        "| reload / refresh | {:.0}x | {:.0}x |",
        load / refresh,
        whole as f64 / one as f64
    );
}
