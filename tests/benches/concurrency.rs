//! Concurrency: tenant point reads (a tenant's handle, then its row by primary key; row
//! level, one PostgreSQL database) from 1, 8, 64 and 256 concurrent tasks, against the
//! same reads hand-written with SeaORM (the tenant filter added by hand) on the SAME pool
//! (one `DatabaseConnection`, 16 connections) in the same run, on a multi-thread tokio
//! runtime of 2 workers.
//!
//! Each level runs rounds of a fixed number of reads split across the tasks, both sides
//! in every round, alternating which goes first; it reports each side's throughput
//! (median over rounds) and the per-round ratio framework time / hand time (median and
//! 10th–90th percentile over rounds). Nothing in the library should serialise tasks, so
//! the ratio should stay near 1 at every level.
//!
//! ```text
//! cargo bench -p tenancy-tests --bench concurrency             # 20,000 reads a round, 21 rounds
//! cargo bench -p tenancy-tests --bench concurrency -- --quick  # 2,000 reads a round, 5 rounds
//! cargo test -p tenancy-tests --bench concurrency -- --quick   # debug build: checks, no timing
//! ```
//!
//! Without `--bench` (a debug build, as CI runs it) it takes the quick sizes, skips the
//! warm-up round, checks that every read found its tenant's row and that one pool of 16
//! served both sides, and judges no timing. The CPU columns (this process's threads and
//! the pool's server processes, from `/proc`) tell extra work per read apart from waiting:
//! a lock that serialised tasks would cut throughput without adding CPU.
//!
//! `CONCURRENCY_READS` and `CONCURRENCY_ROUNDS` override the reads a round and the rounds.
//! PostgreSQL runs against `TENANCY_PG_URL` (default: the local server's `test` database)
//! in a database of its own, dropped at the end.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::panic,
    missing_docs
)]

use sea_orm::{
    ColumnTrait, ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend,
    EntityTrait, QueryFilter, Statement,
};
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tenancy_sea::Tenancy;
use tenancy_tests::entities::order;
use tenancy_tests::{Backend, TestDb};
use tokio::task::JoinSet;

const LEVELS: [usize; 4] = [1, 8, 64, 256];
const MAX_CONNECTIONS: u32 = 16;
const TENANTS: i64 = 16;
const ORDERS_PER_TENANT: i64 = 64;
/// The ratio framework / hand the library should stay within at every level.
const GOAL: f64 = 1.05;
/// The `application_name` of the bench's pool, by which its server processes are found.
const APP: &str = "tenancy_bench_concurrency";

type Keys = Arc<Vec<(i64, i64)>>;

#[derive(Clone, Copy, PartialEq)]
enum Side {
    Hand,
    Framework,
}

/// Every tenant's orders, through the handle; the (tenant, order id) of each.
async fn fill(tenancy: &Tenancy<i64>) -> Vec<(i64, i64)> {
    let mut keys = Vec::new();
    for tenant in 1..=TENANTS {
        let orders = (0..ORDERS_PER_TENANT).map(|total| (None, total));
        tenancy_tests::customer_with_orders(tenancy, tenant, None, orders).await;
        let db = tenancy.tenant(tenant).await.unwrap();
        for o in db.find::<order::Entity>().all().await.unwrap() {
            keys.push((tenant, o.id));
        }
    }
    // Interleave the tenants, so neighbouring reads (and tasks) are of different tenants.
    keys.sort_by_key(|&(tenant, id)| (id % ORDERS_PER_TENANT, tenant));
    keys
}

/// One task's reads: `count` of them, from `start` on in the keys. Each read is checked
/// to have found the tenant's row; returns how many did.
async fn reads(
    side: Side,
    tenancy: Tenancy<i64>,
    conn: DatabaseConnection,
    keys: Keys,
    start: usize,
    count: usize,
) -> usize {
    let mut found = 0;
    for k in 0..count {
        let (tenant, id) = keys[(start + k) % keys.len()];
        let row = match side {
            // As a request would: the tenant's handle, then the lookup by primary key.
            Side::Framework => tenancy
                .tenant(black_box(tenant))
                .await
                .unwrap()
                .find_by_id::<order::Entity>(black_box(id))
                .one()
                .await
                .unwrap(),
            // The same statement by hand: the key and the tenant filter, on the same pool.
            Side::Hand => order::Entity::find_by_id(black_box(id))
                .filter(order::Column::Tenant.eq(tenant))
                .one(&conn)
                .await
                .unwrap(),
        };
        let row = black_box(row).expect("the tenant's row");
        assert_eq!((row.tenant_id, row.id), (tenant, id));
        found += 1;
    }
    found
}

/// The CPU time this process's threads have run, in nanoseconds (Linux: the scheduler's
/// count of each thread, `/proc/self/task/*/schedstat`); 0 where it cannot be read.
fn cpu_ns() -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok())
        .filter_map(|stat| stat.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// The CPU time the server processes `pids` have run, in nanoseconds (the local server's
/// backends, read like [`cpu_ns`]); 0 where they cannot be read.
fn server_cpu_ns(pids: &[i32]) -> u64 {
    pids.iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/schedstat")).ok())
        .filter_map(|stat| stat.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// The server processes of the bench's pool (by its `application_name`).
async fn server_pids(admin: &DatabaseConnection) -> Vec<i32> {
    let sql = format!(
        "SELECT pid FROM pg_stat_activity WHERE application_name = '{APP}' \
         AND datname = current_database()"
    );
    let rows = admin
        .query_all_raw(Statement::from_string(DbBackend::Postgres, sql))
        .await
        .unwrap();
    rows.iter()
        .map(|row| row.try_get::<i32>("", "pid").unwrap())
        .collect()
}

/// What one side's round took: its wall time, and the CPU time of this process and of
/// the pool's server processes meanwhile.
struct Took {
    wall: Duration,
    cpu: u64,
    server_cpu: u64,
}

/// `total` reads of one side split across `tasks` concurrent tasks: the wall time from
/// the first spawn to the last task's end, and the CPU time of this process and of the
/// server processes `pids` meanwhile.
async fn round(
    side: Side,
    tasks: usize,
    total: usize,
    tenancy: &Tenancy<i64>,
    conn: &DatabaseConnection,
    keys: &Keys,
    pids: &[i32],
) -> Took {
    let server_cpu = server_cpu_ns(pids);
    let cpu = cpu_ns();
    let start = Instant::now();
    let mut set = JoinSet::new();
    for task in 0..tasks {
        // The reads are split as evenly as they go; each task starts at its own place in
        // the keys, so the tasks read different rows.
        let count = total / tasks + usize::from(task < total % tasks);
        let from = task * keys.len() / tasks;
        set.spawn(reads(
            side,
            tenancy.clone(),
            conn.clone(),
            keys.clone(),
            from,
            count,
        ));
    }
    let mut found = 0;
    while let Some(done) = set.join_next().await {
        found += done.unwrap();
    }
    let wall = start.elapsed();
    let cpu = cpu_ns().saturating_sub(cpu);
    let server_cpu = server_cpu_ns(pids).saturating_sub(server_cpu);
    assert_eq!(found, total, "every read found its row");
    Took {
        wall,
        cpu,
        server_cpu,
    }
}

struct Level {
    tasks: usize,
    /// Reads a second of each side, one per round: hand, framework.
    throughput: [Vec<f64>; 2],
    /// Framework time / hand time, one per round.
    ratios: Vec<f64>,
    /// This process's CPU µs a read of each side, one per round: hand, framework.
    cpu: [Vec<f64>; 2],
    /// The pool's server processes' CPU µs a read of each side, one per round.
    server_cpu: [Vec<f64>; 2],
    /// The pool's open connections after the level.
    open: u32,
}

fn pct(sorted: &[f64], p: usize) -> f64 {
    sorted[(sorted.len() - 1) * p / 100]
}

fn main() {
    let measuring = std::env::args().any(|a| a == "--bench");
    let quick = !measuring || std::env::args().any(|a| a == "--quick");
    let env = |name: &str, default: usize| {
        std::env::var(name).map_or(default, |v| v.parse().expect("a number"))
    };
    let total = env("CONCURRENCY_READS", if quick { 2_000 } else { 20_000 });
    let rounds = env("CONCURRENCY_ROUNDS", if quick { 5 } else { 21 });
    assert!(total >= *LEVELS.iter().max().unwrap() && rounds > 0);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let db = TestDb::with_schema(Backend::Postgres)
            .await
            .expect("TENANCY_PG_URL or the local server");
        // One pool both sides read through, with the options the framework gives the
        // pools it opens itself (no test query before each statement, no reaper).
        let mut url = url::Url::parse(db.url.as_deref().unwrap()).unwrap();
        url.query_pairs_mut().append_pair("application_name", APP);
        let mut options = ConnectOptions::new(url.to_string());
        options
            .max_connections(MAX_CONNECTIONS)
            .test_before_acquire(false)
            .idle_timeout(None)
            .max_lifetime(None)
            .sqlx_logging(false);
        let conn = Database::connect(options).await.unwrap();
        let tenancy: Tenancy<i64> = Tenancy::builder(conn.clone()).build().unwrap();
        let keys: Keys = Arc::new(fill(&tenancy).await);
        assert_eq!(keys.len() as i64, TENANTS * ORDERS_PER_TENANT);
        conn.execute_unprepared("ANALYZE").await.unwrap();

        let mut levels = Vec::new();
        for tasks in LEVELS {
            // Warm both sides at this level (the pool opens the connections it needs); a
            // run that only checks skips it.
            for side in [Side::Hand, Side::Framework].into_iter().filter(|_| measuring) {
                round(side, tasks, total, &tenancy, &conn, &keys, &[]).await;
            }
            let mut level = Level {
                tasks,
                throughput: [Vec::new(), Vec::new()],
                ratios: Vec::new(),
                cpu: [Vec::new(), Vec::new()],
                server_cpu: [Vec::new(), Vec::new()],
                open: 0,
            };
            for r in 0..rounds {
                let order = if r % 2 == 0 {
                    [Side::Hand, Side::Framework]
                } else {
                    [Side::Framework, Side::Hand]
                };
                let pids = server_pids(&db.conn).await;
                assert!(pids.len() <= MAX_CONNECTIONS as usize, "one pool's server processes");
                let mut t = [Duration::ZERO; 2];
                for side in order {
                    let took = round(side, tasks, total, &tenancy, &conn, &keys, &pids).await;
                    let i = side as usize;
                    t[i] = took.wall;
                    level.cpu[i].push(took.cpu as f64 / 1e3 / total as f64);
                    level.server_cpu[i].push(took.server_cpu as f64 / 1e3 / total as f64);
                }
                for (i, time) in t.iter().enumerate() {
                    level.throughput[i].push(total as f64 / time.as_secs_f64());
                }
                level.ratios.push(t[1].as_secs_f64() / t[0].as_secs_f64());
            }
            level.open = conn.get_postgres_connection_pool().size();
            assert!(level.open <= MAX_CONNECTIONS, "one pool of {MAX_CONNECTIONS}");
            for v in level
                .throughput
                .iter_mut()
                .chain(level.cpu.iter_mut())
                .chain(level.server_cpu.iter_mut())
                .chain([&mut level.ratios])
            {
                v.sort_by(f64::total_cmp);
            }
            levels.push(level);
        }
        conn.close().await.unwrap();
        db.drop_db().await;

        let build = if measuring {
            ""
        } else {
            " (debug build, no --bench: timings mean nothing)"
        };
        println!(
            "Point reads, row level, one PostgreSQL database; {total} reads a round, {rounds} rounds a level, one pool of {MAX_CONNECTIONS} connections, 2 runtime workers{build}"
        );
        println!();
        println!(
            "| tasks | hand-written SeaORM (reads/s, median) | tenant handle (reads/s, median) | framework / hand (median of {rounds} rounds) | 10th–90th pct | CPU µs a read, client: hand / handle | CPU µs a read, server: hand / handle | pool connections open |"
        );
        println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
        for l in &levels {
            println!(
                "| {} | {:.0} | {:.0} | {:.3} | {:.3}–{:.3} | {:.1} / {:.1} | {:.1} / {:.1} | {} |",
                l.tasks,
                pct(&l.throughput[0], 50),
                pct(&l.throughput[1], 50),
                pct(&l.ratios, 50),
                pct(&l.ratios, 10),
                pct(&l.ratios, 90),
                pct(&l.cpu[0], 50),
                pct(&l.cpu[1], 50),
                pct(&l.server_cpu[0], 50),
                pct(&l.server_cpu[1], 50),
                l.open
            );
        }
        println!();
        println!(
            "CPU µs a read: the scheduler's run time (`/proc/.../schedstat`) of this process's threads, and of the pool's server processes, during one side's round, over its reads (median of rounds; 0 where `/proc` cannot be read)."
        );
        let over: Vec<String> = levels
            .iter()
            .filter(|l| pct(&l.ratios, 50) > GOAL)
            .map(|l| l.tasks.to_string())
            .collect();
        println!();
        if !measuring {
            println!("Goal (median ratio ≤ {GOAL} at every level): not judged{build}.");
        } else if over.is_empty() {
            println!("Goal (median ratio ≤ {GOAL} at every level): met.");
        } else {
            println!(
                "Goal (median ratio ≤ {GOAL} at every level): not met at {} tasks.",
                over.join(", ")
            );
        }
    });
}
