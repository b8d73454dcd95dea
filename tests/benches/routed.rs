//! A routed point read (tenant handle on its shard, 4 PostgreSQL shards) against the same
//! read on one database holding every row, in interleaved rounds.
//!
//! ```text
//! cargo bench -p tenancy-tests --bench routed
//! ```
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::panic,
    missing_docs
)]

use sea_orm::{
    ColumnTrait, ConnectOptions, Database, DatabaseConnection, EntityTrait, QueryFilter, Set,
};
use std::hint::black_box;
use std::time::{Duration, Instant};
use tenancy_sea::{HashRouter, ShardId, ShardRouter, Tenancy, Topology};
use tenancy_tests::entities::{customer, order};
use tenancy_tests::{Backend, TestDb};

const ROUNDS: usize = 61;
const BATCH: usize = 200;
const TENANTS: i64 = 16;

async fn fill(tenancy: &Tenancy<i64>, rows: i64) -> Vec<(i64, i64)> {
    let mut keys = Vec::new();
    for tenant in 1..=TENANTS {
        let db = tenancy.tenant(tenant).await.unwrap();
        let c = db
            .insert(customer::ActiveModel {
                name: Set("c".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        for i in 0..rows {
            let o = db
                .insert(order::ActiveModel {
                    customer_id: Set(c.id),
                    total_cents: Set(i),
                    ..Default::default()
                })
                .await
                .unwrap();
            if i % 25 == 0 {
                keys.push((tenant, o.id));
            }
        }
    }
    keys
}

/// Each read as a request would make it: the tenant's handle (routing it, when sharded),
/// then the lookup by primary key.
async fn batch(tenancy: &Tenancy<i64>, keys: &[(i64, i64)]) -> Duration {
    let start = Instant::now();
    for k in 0..BATCH {
        let (tenant, id) = keys[k % keys.len()];
        let db = tenancy.tenant(black_box(tenant)).await.unwrap();
        let row = db
            .find_by_id::<order::Entity>(black_box(id))
            .one()
            .await
            .unwrap();
        black_box(row.expect("row"));
    }
    start.elapsed()
}

/// The same reads routed by hand: the router, then plain SeaORM with the tenant filter on
/// the shard's connection (no framework).
async fn by_hand(
    router: &HashRouter,
    shards: &[(ShardId, DatabaseConnection)],
    keys: &[(i64, i64)],
) -> Duration {
    let start = Instant::now();
    for k in 0..BATCH {
        let (tenant, id) = keys[k % keys.len()];
        let shard = router.route(&black_box(tenant)).unwrap();
        let conn = &shards.iter().find(|(s, _)| *s == shard).unwrap().1;
        let row = order::Entity::find_by_id(black_box(id))
            .filter(order::Column::Tenant.eq(tenant))
            .one(conn)
            .await
            .unwrap();
        black_box(row.expect("row"));
    }
    start.elapsed()
}

fn main() {
    let measuring = std::env::args().any(|a| a == "--bench");
    let rows = if measuring { 200 } else { 2 };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let single = TestDb::with_schema(Backend::Postgres)
            .await
            .expect("TENANCY_PG_URL or the local server");
        let mut shards = Vec::new();
        for _ in 0..4 {
            shards.push(TestDb::with_schema(Backend::Postgres).await.unwrap());
        }
        let ids: Vec<ShardId> = (0..4).map(|i| ShardId::new(format!("shard_{i}"))).collect();
        let router = HashRouter::new(ids.clone());
        // Every side reads through pools with the options the framework gives the pools it
        // opens itself (no test query before each statement).
        let pool = |db: &TestDb| {
            let mut options = ConnectOptions::new(db.url.clone().unwrap());
            options
                .max_connections(4)
                .test_before_acquire(false)
                .sqlx_logging(false);
            Database::connect(options)
        };
        let mut pools = Vec::new();
        for db in &shards {
            pools.push(pool(db).await.unwrap());
        }
        let single_pool = pool(&single).await.unwrap();
        let connections: Vec<(ShardId, DatabaseConnection)> = ids.into_iter().zip(pools)
            .collect();
        let sharded: Tenancy<i64> = Tenancy::builder(shards[0].conn.clone())
            .sharded(Topology::new(router.clone(), connections.clone()).unwrap())
            .build()
            .unwrap();
        let one: Tenancy<i64> = Tenancy::builder(single_pool).build().unwrap();
        let sharded_keys = fill(&sharded, rows).await;
        let single_keys = fill(&one, rows).await;
        if !measuring {
            batch(&sharded, &sharded_keys).await;
            by_hand(&router, &connections, &sharded_keys).await;
            batch(&one, &single_keys).await;
        } else {
            let mut us: [Vec<f64>; 3] = Default::default();
            let (mut to_single, mut to_hand) = (Vec::new(), Vec::new());
            for round in 0..ROUNDS {
                let mut t = [Duration::ZERO; 3];
                for k in 0..3 {
                    let i = (k + round) % 3;
                    t[i] = match i {
                        0 => batch(&sharded, &sharded_keys).await,
                        1 => by_hand(&router, &connections, &sharded_keys).await,
                        _ => batch(&one, &single_keys).await,
                    };
                }
                for i in 0..3 {
                    us[i].push(t[i].as_secs_f64() * 1e6 / BATCH as f64);
                }
                to_hand.push(t[0].as_secs_f64() / t[1].as_secs_f64());
                to_single.push(t[0].as_secs_f64() / t[2].as_secs_f64());
            }
            for v in us.iter_mut().chain([&mut to_hand, &mut to_single]) {
                v.sort_by(f64::total_cmp);
            }
            let pct = |v: &[f64], p: usize| v[(v.len() - 1) * p / 100];
            println!("| point read | median µs |");
            println!("|---|---:|");
            println!("| routed by the framework (tenant handle, 4 shards) | {:.1} |", pct(&us[0], 50));
            println!("| routed by hand (router + plain SeaORM, same shards) | {:.1} |", pct(&us[1], 50));
            println!("| one database holding every row (tenant handle) | {:.1} |", pct(&us[2], 50));
            println!(
                "| framework / by hand, median of {ROUNDS} rounds | {:.3} (10th–90th pct {:.3}–{:.3}) |",
                pct(&to_hand, 50),
                pct(&to_hand, 10),
                pct(&to_hand, 90)
            );
            println!(
                "| framework / one database, median of {ROUNDS} rounds | {:.3} (10th–90th pct {:.3}–{:.3}) |",
                pct(&to_single, 50),
                pct(&to_single, 10),
                pct(&to_single, 90)
            );
        }
        for db in shards {
            db.drop_db().await;
        }
        single.drop_db().await;
    });
}
