//! A routed point read (tenant handle on its shard, 4 PostgreSQL shards) against the same
//! read on one database holding every row, in interleaved rounds over fresh pools.
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

const TRIALS: usize = 5;
const ROUNDS: usize = 42;
/// Every order of the three sides, taken in turn: each side runs first, second and last
/// equally often, and right after each other side equally often, so one side's warming or
/// cooling of the server processes it shares with another does not favour either.
const ORDERS: [[usize; 3]; 6] = [
    [0, 1, 2],
    [0, 2, 1],
    [1, 0, 2],
    [1, 2, 0],
    [2, 0, 1],
    [2, 1, 0],
];
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

/// What getting the handle costs on its own, no statement sent: nanoseconds per call.
async fn handles(tenancy: &Tenancy<i64>, keys: &[(i64, i64)]) -> f64 {
    const CALLS: usize = 200_000;
    let start = Instant::now();
    for k in 0..CALLS {
        let (tenant, _) = keys[k % keys.len()];
        black_box(tenancy.tenant(black_box(tenant)).await.unwrap());
    }
    start.elapsed().as_secs_f64() * 1e9 / CALLS as f64
}

/// One trial's pools: the sharded tenancy over 4 fresh pools, its connections for the
/// hand-routed side, and the single-database tenancy over a fresh pool.
struct Sides {
    sharded: Tenancy<i64>,
    connections: Vec<(ShardId, DatabaseConnection)>,
    one: Tenancy<i64>,
}

impl Sides {
    async fn open(shards: &[TestDb], single: &TestDb, router: &HashRouter) -> Sides {
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
        let mut connections = Vec::new();
        for (db, id) in shards.iter().zip(router.shards()) {
            connections.push((id, pool(db).await.unwrap()));
        }
        let sharded = Tenancy::builder(shards[0].conn.clone())
            .sharded(Topology::new(router.clone(), connections.clone()).unwrap())
            .build()
            .unwrap();
        let one = Tenancy::builder(pool(single).await.unwrap())
            .build()
            .unwrap();
        Sides {
            sharded,
            connections,
            one,
        }
    }

    async fn close(self) {
        for (_, conn) in self.connections {
            conn.close().await.unwrap();
        }
    }
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
        let router = HashRouter::new(ids);
        let sides = Sides::open(&shards, &single, &router).await;
        let sharded_keys = fill(&sides.sharded, rows).await;
        let single_keys = fill(&sides.one, rows).await;
        if !measuring {
            batch(&sides.sharded, &sharded_keys).await;
            by_hand(&router, &sides.connections, &sharded_keys).await;
            batch(&sides.one, &single_keys).await;
            sides.close().await;
        } else {
            sides.close().await;
            let mut us: [Vec<f64>; 3] = Default::default();
            let (mut to_single, mut to_hand) = (Vec::new(), Vec::new());
            let mut trial_medians = Vec::new();
            let mut handle_ns = [0.0; 2];
            for trial in 0..TRIALS {
                // Fresh pools each trial: which server processes serve which side, and how
                // warm they are, varies from one set of connections to the next.
                let sides = Sides::open(&shards, &single, &router).await;
                let mut trial_ratios = Vec::new();
                for round in 0..ROUNDS {
                    let mut t = [Duration::ZERO; 3];
                    for i in ORDERS[round % ORDERS.len()] {
                        t[i] = match i {
                            0 => batch(&sides.sharded, &sharded_keys).await,
                            1 => by_hand(&router, &sides.connections, &sharded_keys).await,
                            _ => batch(&sides.one, &single_keys).await,
                        };
                    }
                    for i in 0..3 {
                        us[i].push(t[i].as_secs_f64() * 1e6 / BATCH as f64);
                    }
                    to_hand.push(t[0].as_secs_f64() / t[1].as_secs_f64());
                    let ratio = t[0].as_secs_f64() / t[2].as_secs_f64();
                    to_single.push(ratio);
                    trial_ratios.push(ratio);
                }
                trial_ratios.sort_by(f64::total_cmp);
                trial_medians.push(trial_ratios[ROUNDS / 2]);
                if trial == 0 {
                    handle_ns = [
                        handles(&sides.sharded, &sharded_keys).await,
                        handles(&sides.one, &single_keys).await,
                    ];
                }
                sides.close().await;
            }
            for v in us.iter_mut().chain([&mut to_hand, &mut to_single]) {
                v.sort_by(f64::total_cmp);
            }
            let pct = |v: &[f64], p: usize| v[(v.len() - 1) * p / 100];
            let rounds = TRIALS * ROUNDS;
            println!("| point read | median µs |");
            println!("|---|---:|");
            let rows = [
                "routed by the framework (tenant handle, 4 shards)",
                "routed by hand (router + plain SeaORM, same shards)",
                "one database holding every row (tenant handle)",
            ];
            for (row, times) in rows.iter().zip(&us) {
                println!("| {row} | {:.1} |", pct(times, 50));
            }
            println!(
                "| getting the tenant handle alone, ns: 4 shards / one database | {:.0} / {:.0} |",
                handle_ns[0], handle_ns[1]
            );
            for (name, ratios) in [("by hand", &to_hand), ("one database", &to_single)] {
                println!(
                    "| framework / {name}, median of {rounds} rounds | {:.3} (10th–90th pct {:.3}–{:.3}) |",
                    pct(ratios, 50),
                    pct(ratios, 10),
                    pct(ratios, 90)
                );
            }
            let medians: Vec<String> = trial_medians.iter().map(|m| format!("{m:.3}")).collect();
            println!(
                "| framework / one database, each trial's median ({TRIALS} trials of {ROUNDS} rounds, fresh pools) | {} |",
                medians.join(", ")
            );
        }
        for db in shards {
            db.drop_db().await;
        }
        single.drop_db().await;
    });
}
