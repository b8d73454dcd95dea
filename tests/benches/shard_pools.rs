//! The shard pools the library opens itself (`Shards::topology`, what an application gets
//! by default) against pools tuned by hand (one connection per shard, no ping before use,
//! SQLx's statement logging off), the same framework code on both, interleaved in one
//! process on 4 PostgreSQL shard databases: tenant point reads, tenant scans, single-row
//! inserts and a top-20 across every shard (a fan-out), 21 rounds, the order of the two sides swapped every round. Printed: the median
//! of each round's ratio (default / tuned) per phase.
//!
//! ```text
//! TENANCY_PG_URL=postgres://postgres@127.0.0.1:5432/test cargo bench -p tenancy-tests --bench shard_pools
//! ```
//!
//! `SHARD_POOLS_CONNECTIONS` sets the default side's connections per shard (2 by default),
//! `SHARD_POOLS_ROUNDS` the rounds; with `SHARD_POOLS_TUNED_LOGGING` set the tuned side
//! keeps SQLx's statement logging on (to weigh the logging alone).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::panic,
    clippy::cast_precision_loss,
    missing_docs
)]

use sea_orm::{ConnectOptions, ConnectionTrait, DatabaseConnection, Set};
use std::sync::Arc;
use std::time::Instant;
use tenancy_sea::catalog::{Directory, Shards};
use tenancy_sea::{DirectoryRouter, ShardId, Tenancy, Topology};
use tenancy_tests::entities::{customer, order};
use tenancy_tests::migration::DatabaseMigratorV1;
use tenancy_tests::{Backend, Flavor, TestDb};

const SHARDS: usize = 4;
const TENANTS: i64 = 64;
const ORDERS: i64 = 50;
const BATCH: i64 = 400;

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The tenant of the `n`th operation of a batch, spread over every shard.
fn tenant_of(n: i64) -> i64 {
    1 + (n * 7919) % TENANTS
}

#[derive(Clone, Copy, Debug)]
enum Phase {
    PointRead,
    Scan,
    Insert,
    TopN,
}

/// One batch of `phase` through `tenancy`: its time per operation, in µs.
async fn batch(tenancy: &Tenancy<i64>, phase: Phase, round: i64, next_id: &mut i64) -> f64 {
    let started = Instant::now();
    if let Phase::TopN = phase {
        // A fan-out per operation: fewer of them, the time per operation still.
        let across = tenancy.unscoped_across_shards().unwrap();
        for _ in 0..BATCH / 8 {
            let rows = across
                .find::<order::Entity>()
                .order_by_desc(order::Column::TotalCents)
                .order_by_asc(order::Column::Id)
                .limit(20)
                .all()
                .await
                .unwrap();
            assert_eq!(rows.len(), 20);
        }
        return started.elapsed().as_secs_f64() * 1e6 / (BATCH / 8) as f64;
    }
    for n in 0..BATCH {
        let tenant = tenant_of(n + round);
        let db = tenancy.tenant(tenant).await.unwrap();
        match phase {
            Phase::PointRead => {
                let id = tenant * 1_000_000 + 1 + (n * 31) % ORDERS;
                let row = db.find_by_id::<order::Entity>(id).one().await.unwrap();
                assert!(row.is_some());
            }
            Phase::Scan => {
                let rows = db.find::<order::Entity>().all().await.unwrap();
                assert!(rows.len() >= ORDERS as usize);
            }
            Phase::TopN => unreachable!("a fan-out, above"),
            Phase::Insert => {
                *next_id += 1;
                db.insert(order::ActiveModel {
                    id: Set(*next_id),
                    customer_id: Set(tenant * 1_000_000),
                    total_cents: Set(n),
                    ..Default::default()
                })
                .await
                .unwrap();
            }
        }
    }
    started.elapsed().as_secs_f64() * 1e6 / BATCH as f64
}

/// A tenancy over `topology`, routed by `directory`.
fn over(catalog: &TestDb, directory: &Directory<i64>, topology: Topology) -> Tenancy<i64> {
    Tenancy::builder(catalog.conn.clone())
        .sharded(topology)
        .directory(directory.clone())
        .build()
        .unwrap()
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let connections = u32::try_from(env_or("SHARD_POOLS_CONNECTIONS", 2)).unwrap();
    let rounds = env_or("SHARD_POOLS_ROUNDS", 21);
    let Some(catalog) = TestDb::for_flavor(Backend::Postgres, Flavor::Database).await else {
        panic!("TENANCY_PG_URL is needed");
    };
    let router = Arc::new(DirectoryRouter::new(Vec::<ShardId>::new()));
    let directory = Directory::new(catalog.conn.clone(), router.clone());
    directory.install().await.unwrap();
    let maker = tenancy_tests::sharded_over(&catalog, &directory)
        .await
        .build()
        .unwrap();
    let names: Vec<String> = (0..SHARDS).map(|i| format!("s{i}")).collect();
    for name in &names {
        maker
            .create_shard::<DatabaseMigratorV1>(name.as_str())
            .await
            .unwrap();
    }
    directory.load().await.unwrap();
    for tenant in 1..=TENANTS {
        let shard = &names[usize::try_from(tenant).unwrap() % SHARDS];
        directory.assign(&tenant, shard.as_str()).await.unwrap();
        let db = maker.tenant(tenant).await.unwrap();
        db.insert(customer::ActiveModel {
            id: Set(tenant * 1_000_000),
            name: Set(format!("c{tenant}")),
            ..Default::default()
        })
        .await
        .unwrap();
        db.insert_many((1..=ORDERS).map(|n| order::ActiveModel {
            id: Set(tenant * 1_000_000 + n),
            customer_id: Set(tenant * 1_000_000),
            total_cents: Set(n),
            ..Default::default()
        }))
        .await
        .unwrap();
    }
    for name in &names {
        let conn = maker
            .topology()
            .unwrap()
            .unscoped_connection(&ShardId::new(name.as_str()))
            .unwrap();
        conn.execute_unprepared("VACUUM ANALYZE").await.unwrap();
    }
    let records = Shards::new(catalog.conn.clone()).list().await.unwrap();
    drop(maker);

    // The default: the pools `Shards::topology` opens.
    let default = over(
        &catalog,
        &directory,
        Shards::new(catalog.conn.clone())
            .topology(router.clone(), connections)
            .await
            .unwrap(),
    );
    // Tuned by hand: one connection per shard, no ping before use, no statement logging.
    let mut tuned_pools: Vec<(ShardId, DatabaseConnection)> = Vec::new();
    for record in &records {
        let mut options = ConnectOptions::new(record.url.clone());
        options
            .max_connections(1)
            .min_connections(1)
            .test_before_acquire(false)
            .sqlx_logging(std::env::var_os("SHARD_POOLS_TUNED_LOGGING").is_some());
        tuned_pools.push((
            record.name.clone(),
            sea_orm::Database::connect(options).await.unwrap(),
        ));
    }
    let tuned = over(
        &catalog,
        &directory,
        Topology::new(router.clone(), tuned_pools).unwrap(),
    );

    let mut next_id = 900_000_000_000;
    let phases = [Phase::PointRead, Phase::Scan, Phase::Insert, Phase::TopN];
    // Warm both sides' connections and statement caches.
    for tenancy in [&default, &tuned] {
        for phase in phases {
            batch(tenancy, phase, 0, &mut next_id).await;
        }
    }
    println!(
        "| phase | default pools, µs | tuned pools, µs | default / tuned, median of {rounds} rounds (10th–90th pct) |"
    );
    println!("|---|---:|---:|---:|");
    for phase in phases {
        let (mut ds, mut ts, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..rounds {
            let r = i64::try_from(round).unwrap();
            let (d, t) = if round % 2 == 0 {
                let d = batch(&default, phase, r, &mut next_id).await;
                (d, batch(&tuned, phase, r, &mut next_id).await)
            } else {
                let t = batch(&tuned, phase, r, &mut next_id).await;
                (batch(&default, phase, r, &mut next_id).await, t)
            };
            ds.push(d);
            ts.push(t);
            ratios.push(d / t);
        }
        let mut sorted = ratios.clone();
        sorted.sort_by(f64::total_cmp);
        let pct = |p: usize| sorted[(sorted.len() - 1) * p / 100];
        println!(
            "| {phase:?} (default: {connections} connections per shard) | {:.1} | {:.1} | {:.3} ({:.3}–{:.3}) |",
            median(ds),
            median(ts),
            median(ratios),
            pct(10),
            pct(90)
        );
    }
    drop((default, tuned));
    catalog.drop_db().await;
}
