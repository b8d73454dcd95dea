//! Scatter-gather over 8 PostgreSQL shard databases: the framework's concurrent fan-out
//! against a sequential fan-out and against one shard, interleaved in the same run.
//!
//! ```text
//! cargo bench -p tenancy-tests --bench scatter
//! ```
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::panic,
    missing_docs
)]

use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, EntityTrait, QueryOrder, QuerySelect, Set,
};
use std::hint::black_box;
use std::time::{Duration, Instant};
use tenancy_sea::{HashRouter, ShardId, Tenancy, Topology};
use tenancy_tests::entities::{customer, order};
use tenancy_tests::{Backend, TestDb};

const SHARDS: usize = 8;
const ROUNDS: usize = 32;
/// The orders of the four sides, taken in turn (a Williams square): each side runs in each
/// position once per four rounds and right after each other side once, so no side always
/// inherits the server state another leaves behind.
const ORDERS: [[usize; 4]; 4] = [[0, 1, 3, 2], [1, 2, 0, 3], [2, 3, 1, 0], [3, 0, 2, 1]];
const BATCH: usize = 20;

fn main() {
    let measuring = std::env::args().any(|a| a == "--bench");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut dbs = Vec::new();
        for _ in 0..SHARDS {
            dbs.push(
                TestDb::with_schema(Backend::Postgres)
                    .await
                    .expect("TENANCY_PG_URL or the local server"),
            );
        }
        // Every side reads through pools with the options the framework gives the pools it
        // opens itself (no test query before each statement), 8 connections each.
        let mut conns = Vec::new();
        for db in &dbs {
            let mut options = ConnectOptions::new(db.url.clone().unwrap());
            options
                .max_connections(8)
                .test_before_acquire(false)
                .sqlx_logging(false);
            conns.push(Database::connect(options).await.unwrap());
        }
        let ids: Vec<ShardId> = (0..SHARDS).map(|i| ShardId::new(format!("shard_{i}"))).collect();
        let topology = Topology::new(
            HashRouter::new(ids.clone()),
            ids.into_iter().zip(conns.iter().cloned()),
        )
        .unwrap();
        let tenancy: Tenancy<i64> = Tenancy::builder(dbs[0].conn.clone())
            .sharded(topology)
            .build()
            .unwrap();
        // The same topology, fanning out through the runtime's tasks.
        let ids: Vec<ShardId> = (0..SHARDS).map(|i| ShardId::new(format!("shard_{i}"))).collect();
        let spawning: Tenancy<i64> = Tenancy::builder(dbs[0].conn.clone())
            .sharded(
                Topology::new(
                    HashRouter::new(ids.clone()),
                    ids.into_iter().zip(conns.iter().cloned()),
                )
                .unwrap()
                .with_spawner(|future| {
                    tokio::spawn(future);
                }),
            )
            .build()
            .unwrap();
        let across_spawned = spawning.unscoped_across_shards().unwrap();
        let rows_per_tenant = if measuring { 500 } else { 5 };
        for tenant in 1..=64i64 {
            let db = tenancy.tenant(tenant).await.unwrap();
            let c = db
                .insert(customer::ActiveModel {
                    name: Set("c".into()),
                    ..Default::default()
                })
                .await
                .unwrap();
            db.insert_many((0..rows_per_tenant).map(|i| order::ActiveModel {
                customer_id: Set(c.id),
                total_cents: Set((tenant * 7_919 + i * 104_729) % 1_000_000),
                ..Default::default()
            }))
            .await
            .unwrap();
        }
        for db in &dbs {
            db.conn.execute_unprepared("ANALYZE").await.unwrap();
        }
        let across = tenancy.unscoped_across_shards().unwrap();
        // ORDER BY total_cents DESC, id LIMIT 20 on every shard.
        let concurrent = || async {
            let rows = across
                .find::<order::Entity>()
                .order_by_desc(order::Column::TotalCents)
                .order_by_asc(order::Column::Id)
                .limit(20)
                .all()
                .await
                .unwrap();
            black_box(rows);
        };
        let spawned = || async {
            let rows = across_spawned
                .find::<order::Entity>()
                .order_by_desc(order::Column::TotalCents)
                .order_by_asc(order::Column::Id)
                .limit(20)
                .all()
                .await
                .unwrap();
            black_box(rows);
        };
        let sequential = || async {
            let mut rows = Vec::new();
            for conn in &conns {
                rows.extend(
                    order::Entity::find()
                        .order_by_desc(order::Column::TotalCents)
                        .order_by_asc(order::Column::Id)
                        .limit(20)
                        .all(conn)
                        .await
                        .unwrap(),
                );
            }
            rows.sort_by(|a, b| b.total_cents.cmp(&a.total_cents).then(a.id.cmp(&b.id)));
            rows.truncate(20);
            black_box(rows);
        };
        let one_shard = || async {
            let rows = order::Entity::find()
                .order_by_desc(order::Column::TotalCents)
                .order_by_asc(order::Column::Id)
                .limit(20)
                .all(&conns[0])
                .await
                .unwrap();
            black_box(rows);
        };
        // The same query twice: with the server sorting each shard's rows (no index: every
        // shard's work is server CPU, which 8 shards share with the client on 2 cores),
        // then with an index on the order column (every shard's work is mostly latency).
        for indexed in [false, true] {
        if indexed {
            for db in &dbs {
                db.conn
                    .execute_unprepared("CREATE INDEX orders_total_cents ON orders (total_cents)")
                    .await
                    .unwrap();
                db.conn.execute_unprepared("ANALYZE").await.unwrap();
            }
        }
        if measuring {
            println!(
                "\n{}",
                if indexed {
                    "with an index on total_cents:"
                } else {
                    "without an index on total_cents:"
                }
            );
            let mut times: [Vec<f64>; 4] = Default::default();
            let mut ratios = Vec::new();
            let mut spawned_ratios = Vec::new();
            for round in 0..ROUNDS {
                let mut t = [Duration::ZERO; 4];
                for i in ORDERS[round % ORDERS.len()] {
                    let start = Instant::now();
                    for _ in 0..BATCH {
                        match i {
                            0 => concurrent().await,
                            1 => sequential().await,
                            2 => one_shard().await,
                            _ => spawned().await,
                        }
                    }
                    t[i] = start.elapsed();
                }
                for i in 0..4 {
                    times[i].push(t[i].as_secs_f64() * 1e6 / BATCH as f64);
                }
                ratios.push(t[0].as_secs_f64() / t[1].as_secs_f64());
                spawned_ratios.push(t[3].as_secs_f64() / t[1].as_secs_f64());
            }
            for v in times
                .iter_mut()
                .chain([&mut ratios, &mut spawned_ratios])
            {
                v.sort_by(f64::total_cmp);
            }
            let med = |v: &[f64]| v[v.len() / 2];
            println!("| fan-out over {SHARDS} PostgreSQL shards | median µs per query |");
            println!("|---|---:|");
            println!("| concurrent (the framework) | {:.0} |", med(&times[0]));
            println!("| sequential (one shard after another) | {:.0} |", med(&times[1]));
            println!("| one shard alone | {:.0} |", med(&times[2]));
            println!("| concurrent, each shard a runtime task (`with_spawner`) | {:.0} |", med(&times[3]));
            println!(
                "| concurrent / sequential, median of {ROUNDS} rounds | {:.2} (10th–90th pct {:.2}–{:.2}) |",
                med(&ratios),
                ratios[ROUNDS / 10],
                ratios[ROUNDS * 9 / 10]
            );
            println!(
                "| spawned / sequential, median of {ROUNDS} rounds | {:.2} (10th–90th pct {:.2}–{:.2}) |",
                med(&spawned_ratios),
                spawned_ratios[ROUNDS / 10],
                spawned_ratios[ROUNDS * 9 / 10]
            );
        } else {
            concurrent().await;
            spawned().await;
            sequential().await;
            one_shard().await;
        }
        }
        for db in dbs {
            db.drop_db().await;
        }
    });
}
