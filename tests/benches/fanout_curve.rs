//! How scatter-gather grows with the shards: a top-N (`ORDER BY total_cents DESC, id LIMIT
//! 20`) and a grouped count (`GROUP BY tenant_id`, `count`) over every shard, through
//! [`AcrossShards`](tenancy_sea::AcrossShards), at 2, 4, 8, 16 and 32 PostgreSQL shard
//! databases of the same rows each (10,000 orders of 16 tenants per shard; the order
//! column indexed, as a top-N is). The floor, measured in the same rounds: each shard
//! answering its part of the query alone (the statement the framework sends it, through
//! the same pool), one shard after another; the slowest of them is what a fan-out could
//! at best take, their sum what a sequential fan-out would. Per round the framework runs
//! a batch of queries and each shard its part the same number of times, in alternating
//! order; the table gives medians over the rounds and the per-round ratio framework /
//! slowest shard. Every shard database lives on the one PostgreSQL server of the machine,
//! so the shards' work shares its cores: where each part costs server CPU (the grouped
//! count reads every row), the ratio is bounded below by about the shards' summed work
//! over the cores, not by the slowest shard.
//!
//! Each shard has a pool of its own of at most 2 connections (fewer when
//! `max_connections` less what is in use leaves less room): 32 shards × 2 stay under
//! PostgreSQL's default of 100.
//!
//! Then the merge's memory: the library asks each shard for `offset + limit` rows, so a
//! top-20 merges at most shards × 20 rows, however many rows the shards hold. Shown on 4
//! shards of 10,000 rows and of 1,000,000 rows each: the rows the merge received (counted
//! by the driver: `rows_returned` of sqlx's statement log, read by a tracing layer of this
//! bench, on pools that log) and the process's peak resident memory during the query
//! (`VmHWM` after resetting it through `/proc/self/clear_refs`, less `VmRSS` before), next
//! to a select without a limit over the 10,000-row shards, whose merge holds every row
//! (the instrument's check).
//!
//! ```text
//! cargo bench -p tenancy-tests --bench fanout_curve             # 2..32 shards, 1,000,000-row memory point
//! cargo bench -p tenancy-tests --bench fanout_curve -- --quick  # 2, 4, 8 shards of 1,000 rows; 10,000-row memory point
//! cargo test -p tenancy-tests --bench fanout_curve -- --quick   # debug build: checks, no timing
//! ```
//!
//! `FANOUT_SHARDS` (e.g. `2,4,8`), `FANOUT_ROWS` (rows per shard of the curve),
//! `FANOUT_MEMORY_ROWS` (rows per shard of the memory point), `FANOUT_ROUNDS` and
//! `FANOUT_BATCH` override the sizes. PostgreSQL runs against `TENANCY_PG_URL`; every shard
//! is a database of its own, dropped at the end.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::panic,
    clippy::cast_precision_loss,
    missing_docs
)]

use sea_orm::sea_query::{Asterisk, Expr, ExprTrait};
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, EntityTrait,
    QueryOrder, QuerySelect, Statement,
};
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;
use tenancy_sea::{AcrossShards, HashRouter, ShardId, Tenancy, Topology};
use tenancy_tests::entities::order;
use tenancy_tests::{Backend, TestDb};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;

/// The tenants of each shard (the groups of the grouped count).
const TENANTS: i64 = 16;
const LIMIT: u64 = 20;
/// The shards of the memory point.
const MEMORY_SHARDS: usize = 4;
/// Room between two shards' order ids, so that ids are unique over the shards.
const ID_STRIDE: i64 = 10_000_000_000;

/// The rows sqlx's statement log reports returned, over every pool that logs.
static ROWS_RETURNED: AtomicU64 = AtomicU64::new(0);

/// Adds up `rows_returned` of sqlx's statement events (target `sqlx::query`).
struct RowCounter;

impl<S: tracing::Subscriber> Layer<S> for RowCounter {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        struct Rows(u64);
        impl tracing::field::Visit for Rows {
            fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
                if field.name() == "rows_returned" {
                    self.0 = value;
                }
            }
            fn record_debug(&mut self, _: &tracing::field::Field, _: &dyn std::fmt::Debug) {}
        }
        let mut rows = Rows(0);
        event.record(&mut rows);
        ROWS_RETURNED.fetch_add(rows.0, Ordering::Relaxed);
    }
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn pct(sorted: &[f64], p: usize) -> f64 {
    sorted[(sorted.len() - 1) * p / 100]
}

/// A field of `/proc/self/status` in kB (`VmRSS`, `VmHWM`).
fn status_kb(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

async fn scalar(conn: &DatabaseConnection, sql: &str) -> i64 {
    conn.query_one_raw(Statement::from_string(DbBackend::Postgres, sql.to_owned()))
        .await
        .unwrap()
        .unwrap()
        .try_get_by_index::<i64>(0)
        .unwrap()
}

/// A pool of at most `max` connections to `url`, with the options the framework gives the
/// pools it opens itself; `logging` turns on sqlx's statement log (which counts rows).
async fn connect(url: &str, max: u32, logging: bool) -> DatabaseConnection {
    let mut options: ConnectOptions = tenancy_tests::pool(url);
    options
        .max_connections(max)
        .test_before_acquire(false)
        .sqlx_logging(logging);
    Database::connect(options).await.unwrap()
}

/// Orders `from..=to` of shard `shard`, spread over its tenants (one customer each).
async fn fill(conn: &DatabaseConnection, shard: usize, from: i64, to: i64) {
    let base = shard as i64 * TENANTS;
    let ids = shard as i64 * ID_STRIDE;
    if from == 1 {
        conn.execute_unprepared(&format!(
            "INSERT INTO customers (id, tenant_id, name) \
             SELECT {base} + t, {base} + t, 'c' FROM generate_series(1, {TENANTS}) t"
        ))
        .await
        .unwrap();
    }
    conn.execute_unprepared(&format!(
        "INSERT INTO orders (id, tenant_id, customer_id, total_cents) \
         SELECT {ids} + g, {base} + 1 + g % {TENANTS}, {base} + 1 + g % {TENANTS}, \
         ({ids} + g::bigint) * 7919 % 1000003 FROM generate_series({from}, {to}) g"
    ))
    .await
    .unwrap();
    if from == 1 {
        conn.execute_unprepared("CREATE INDEX orders_total_cents ON orders (total_cents)")
            .await
            .unwrap();
    }
    conn.execute_unprepared("VACUUM ANALYZE orders, customers")
        .await
        .unwrap();
}

fn fan_out_over(conns: &[DatabaseConnection]) -> (Tenancy<i64>, AcrossShards) {
    let ids: Vec<ShardId> = (0..conns.len())
        .map(|i| ShardId::new(format!("shard_{i}")))
        .collect();
    let topology = Topology::new(
        HashRouter::new(ids.clone()),
        ids.into_iter().zip(conns.iter().cloned()),
    )
    .unwrap();
    let tenancy: Tenancy<i64> = Tenancy::builder(conns[0].clone())
        .sharded(topology)
        .build()
        .unwrap();
    let across = tenancy.unscoped_across_shards().unwrap();
    (tenancy, across)
}

#[derive(Clone, Copy, PartialEq)]
enum Query {
    TopN,
    GroupedCount,
}

impl Query {
    fn name(self) -> &'static str {
        match self {
            Query::TopN => "top-20 (`ORDER BY total_cents DESC, id LIMIT 20`)",
            Query::GroupedCount => "grouped count (`GROUP BY tenant_id`)",
        }
    }

    /// The framework's fan-out; returns the rows (or groups) it gave.
    async fn framework(self, across: &AcrossShards) -> usize {
        match self {
            Query::TopN => across
                .find::<order::Entity>()
                .order_by_desc(order::Column::TotalCents)
                .order_by_asc(order::Column::Id)
                .limit(LIMIT)
                .all()
                .await
                .unwrap()
                .len(),
            Query::GroupedCount => across
                .find::<order::Entity>()
                .group_by(order::Column::Tenant)
                .count::<i64>()
                .await
                .unwrap()
                .len(),
        }
    }

    /// One shard's part: the statement the framework sends it.
    async fn part(self, conn: &DatabaseConnection) -> usize {
        match self {
            Query::TopN => top_part(conn).await.len(),
            Query::GroupedCount => grouped_part(conn).await.len(),
        }
    }
}

async fn top_part(conn: &DatabaseConnection) -> Vec<order::Model> {
    order::Entity::find()
        .order_by_desc(order::Column::TotalCents)
        .order_by_asc(order::Column::Id)
        .limit(LIMIT)
        .all(conn)
        .await
        .unwrap()
}

async fn grouped_part(conn: &DatabaseConnection) -> Vec<(i64, i64)> {
    order::Entity::find()
        .select_only()
        .column_as(Expr::col(order::Column::Tenant), "group_key")
        .column_as(Expr::col(Asterisk).count(), "value_0")
        .group_by(order::Column::Tenant)
        .into_tuple::<(i64, i64)>()
        .all(conn)
        .await
        .unwrap()
}

/// The framework's answers equal the shards' own parts merged by hand.
async fn check(across: &AcrossShards, conns: &[DatabaseConnection], rows: i64) {
    let mut expected = Vec::new();
    for conn in conns {
        expected.extend(top_part(conn).await);
    }
    expected.sort_by(|a, b| b.total_cents.cmp(&a.total_cents).then(a.id.cmp(&b.id)));
    expected.truncate(LIMIT as usize);
    let got = across
        .find::<order::Entity>()
        .order_by_desc(order::Column::TotalCents)
        .order_by_asc(order::Column::Id)
        .limit(LIMIT)
        .all()
        .await
        .unwrap();
    assert_eq!(got, expected);
    let groups = across
        .find::<order::Entity>()
        .group_by(order::Column::Tenant)
        .count::<i64>()
        .await
        .unwrap();
    assert_eq!(groups.len(), conns.len() * TENANTS as usize);
    let total: u64 = groups.iter().map(|(_, n)| n).sum();
    assert_eq!(total, conns.len() as u64 * rows as u64);
}

/// One shard count's medians: slowest shard alone, sum of the shards alone, framework
/// (µs per query), and the per-round ratios framework / slowest (sorted).
struct Curve {
    slowest: f64,
    typical: f64,
    sum: f64,
    framework: f64,
    ratios: Vec<f64>,
    over_sum: Vec<f64>,
}

async fn curve(
    query: Query,
    across: &AcrossShards,
    conns: &[DatabaseConnection],
    rounds: usize,
    batch: usize,
) -> Curve {
    let (mut slowest, mut typical, mut sums, mut framework, mut ratios, mut over_sum) = (
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
    );
    // Warm: every connection open and its statements prepared.
    query.framework(across).await;
    for conn in conns {
        query.part(conn).await;
    }
    for round in 0..rounds {
        let mut fw = 0.0;
        let mut parts = Vec::new();
        for side in 0..2 {
            if (side + round) % 2 == 0 {
                let started = Instant::now();
                for _ in 0..batch {
                    black_box(query.framework(across).await);
                }
                fw = started.elapsed().as_secs_f64() * 1e6 / batch as f64;
            } else {
                parts.clear();
                for conn in conns {
                    let started = Instant::now();
                    for _ in 0..batch {
                        black_box(query.part(conn).await);
                    }
                    parts.push(started.elapsed().as_secs_f64() * 1e6 / batch as f64);
                }
            }
        }
        let max = parts.iter().copied().fold(0.0, f64::max);
        let sum: f64 = parts.iter().sum();
        slowest.push(max);
        typical.push(median(parts.clone()));
        sums.push(sum);
        framework.push(fw);
        ratios.push(fw / max);
        over_sum.push(fw / sum);
    }
    ratios.sort_by(f64::total_cmp);
    over_sum.sort_by(f64::total_cmp);
    Curve {
        slowest: median(slowest),
        typical: median(typical),
        sum: median(sums),
        framework: median(framework),
        ratios,
        over_sum,
    }
}

/// What one query over the memory point's shards cost the merge: the rows the driver
/// returned to it, the rows the query gave, and the peak resident memory gained (KiB, the
/// largest of `runs`).
async fn merge_cost(across: &AcrossShards, query: &str, runs: usize) -> (u64, usize, u64) {
    let (mut received, mut gave, mut peak) = (0, 0, 0);
    for _ in 0..runs {
        std::fs::write("/proc/self/clear_refs", "5").unwrap();
        let before_rss = status_kb("VmRSS:");
        let before_rows = ROWS_RETURNED.load(Ordering::Relaxed);
        gave = match query {
            "top" => Query::TopN.framework(across).await,
            "grouped" => Query::GroupedCount.framework(across).await,
            _ => across.find::<order::Entity>().all().await.unwrap().len(),
        };
        received = ROWS_RETURNED.load(Ordering::Relaxed) - before_rows;
        peak = Ord::max(peak, status_kb("VmHWM:").saturating_sub(before_rss));
    }
    (received, gave, peak)
}

fn main() {
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(
        RowCounter.with_filter(tracing_subscriber::filter::filter_fn(|m| {
            m.target() == "sqlx::query"
        })),
    ))
    .unwrap();
    let measuring = std::env::args().any(|a| a == "--bench");
    let quick = !measuring || std::env::args().any(|a| a == "--quick");
    let env = |name: &str, default: usize| {
        std::env::var(name).map_or(default, |v| v.parse::<usize>().expect("a number"))
    };
    let counts: Vec<usize> = match std::env::var("FANOUT_SHARDS") {
        Ok(v) => v.split(',').map(|s| s.trim().parse().unwrap()).collect(),
        Err(_) if quick => vec![2, 4, 8],
        Err(_) => vec![2, 4, 8, 16, 32],
    };
    let rows = env("FANOUT_ROWS", if quick { 1_000 } else { 10_000 }) as i64;
    let memory_rows = env("FANOUT_MEMORY_ROWS", if quick { 10_000 } else { 1_000_000 }) as i64;
    let rounds = env(
        "FANOUT_ROUNDS",
        match (measuring, quick) {
            (false, _) => 1,
            (true, true) => 5,
            (true, false) => 15,
        },
    );
    let batch = env(
        "FANOUT_BATCH",
        match (measuring, quick) {
            (false, _) => 1,
            (true, true) => 5,
            (true, false) => 10,
        },
    );
    assert!(memory_rows > rows && rounds > 0 && batch > 0);
    let shards = (*counts.iter().max().unwrap()).max(MEMORY_SHARDS);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // Room on the server: 2 connections a shard, or 1 when that is all there is.
        let server = Backend::Postgres
            .server_url()
            .expect("TENANCY_PG_URL or the local server");
        let admin = connect(&server, 1, false).await;
        let max = scalar(&admin, "SELECT current_setting('max_connections')::bigint").await;
        let used = scalar(&admin, "SELECT count(*) FROM pg_stat_activity").await;
        admin.close().await.unwrap();
        // Kept free: the admin connections of the set-up and clean-up, and other users.
        let room = Ord::max(max - used - 20, 0) as usize;
        let per_shard = (room / (shards + MEMORY_SHARDS)).min(2);
        assert!(
            per_shard >= 1,
            "max_connections = {max} with {used} in use leaves no room for {shards} shards"
        );
        let mut dbs = Vec::new();
        let mut conns = Vec::new();
        for i in 0..shards {
            let db = TestDb::with_schema(Backend::Postgres)
                .await
                .expect("TENANCY_PG_URL or the local server");
            // The set-up's pool closed: the shard is read through a pool of the bench's.
            db.conn.clone().close().await.unwrap();
            let conn = connect(db.url.as_ref().unwrap(), per_shard as u32, false).await;
            fill(&conn, i, 1, rows).await;
            dbs.push(db);
            conns.push(conn);
        }
        if !measuring {
            println!("(debug build, no --bench: the times below are not measurements)");
        }
        let cores = std::thread::available_parallelism().map_or(1, usize::from) as f64;
        println!(
            "\n(machine floor: the larger of the slowest part and the parts' sum over the {cores} cores the shards' server and the client share)"
        );
        println!(
            "\nscatter-gather over N PostgreSQL shards of {rows} orders each, {per_shard} connections a shard; {rounds} rounds of {batch} queries a side (medians):"
        );
        for query in [Query::TopN, Query::GroupedCount] {
            println!("\n{}:\n", query.name());
            println!(
                "| shards | median shard alone (µs) | slowest shard alone (µs) | all shards one after another (µs) | framework (µs) | framework / slowest shard | 10th–90th pct | framework / one after another | framework / machine floor |"
            );
            println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
            for &k in &counts {
                let (tenancy, across) = fan_out_over(&conns[..k]);
                if query == Query::TopN {
                    check(&across, &conns[..k], rows).await;
                }
                let c = curve(query, &across, &conns[..k], rounds, batch).await;
                // On one machine the shards' parts share its cores: no fan-out can take
                // less than the slowest part, nor less than the parts' sum over the cores.
                let floor = c.slowest.max(c.sum / cores);
                println!(
                    "| {k} | {:.0} | {:.0} | {:.0} | {:.0} | {:.2} | {:.2}–{:.2} | {:.2} | {:.2} |",
                    c.typical,
                    c.slowest,
                    c.sum,
                    c.framework,
                    median(c.ratios.clone()),
                    pct(&c.ratios, 10),
                    pct(&c.ratios, 90),
                    median(c.over_sum.clone()),
                    c.framework / floor,
                );
                drop((across, tenancy));
            }
        }
        // The merge's memory: pools that log their statements (and so count rows).
        let mut logged = Vec::new();
        for db in &dbs[..MEMORY_SHARDS] {
            logged.push(connect(db.url.as_ref().unwrap(), 1, true).await);
        }
        let (tenancy, across) = fan_out_over(&logged);
        let runs = if measuring { 5 } else { 1 };
        let few_top = merge_cost(&across, "top", runs).await;
        let few_grouped = merge_cost(&across, "grouped", runs).await;
        let few_all = merge_cost(&across, "all", runs).await;
        for (i, conn) in conns[..MEMORY_SHARDS].iter().enumerate() {
            fill(conn, i, rows + 1, memory_rows).await;
        }
        check(&across, &logged, memory_rows).await;
        let many_top = merge_cost(&across, "top", runs).await;
        let many_grouped = merge_cost(&across, "grouped", runs).await;
        println!(
            "\nthe merge over {MEMORY_SHARDS} shards: rows received from the shards (the driver's count), rows returned, peak RSS gained during the query (largest of {runs}):\n"
        );
        println!(
            "| rows per shard | query | rows the merge received | rows returned | peak RSS gained (KiB) |"
        );
        println!("|---:|---|---:|---:|---:|");
        for (n, name, (received, gave, peak)) in [
            (rows, "top-20", few_top),
            (memory_rows, "top-20", many_top),
            (rows, "grouped count", few_grouped),
            (memory_rows, "grouped count", many_grouped),
            (rows, "no limit (every row)", few_all),
        ] {
            println!("| {n} | {name} | {received} | {gave} | {peak} |");
        }
        // What a merge of every row would come to at the memory point's size, by the
        // bytes a row cost in the select without a limit.
        let per_row = few_all.2 as f64 * 1024.0 / few_all.0 as f64;
        println!(
            "\n(a merge of every row, as without a limit, over {MEMORY_SHARDS} shards of {memory_rows} rows: about {:.0} MiB at the {per_row:.0} bytes a row of the no-limit select above)",
            per_row * (MEMORY_SHARDS as f64 * memory_rows as f64) / (1024.0 * 1024.0)
        );
        // The bound: a top-20 merges at most shards × 20 rows, a grouped count shards ×
        // groups, whatever the shards hold; without a limit, every row (the counter's
        // check).
        let bound = MEMORY_SHARDS as u64 * LIMIT;
        assert_eq!(few_top.0, bound);
        assert_eq!(many_top.0, bound);
        assert_eq!(few_grouped.0, MEMORY_SHARDS as u64 * TENANTS as u64);
        assert_eq!(many_grouped.0, few_grouped.0);
        assert_eq!(few_all.0, MEMORY_SHARDS as u64 * rows as u64);
        assert_eq!(few_all.1, MEMORY_SHARDS * rows as usize);
        drop((across, tenancy));
        for conn in logged.into_iter().chain(conns) {
            conn.close().await.unwrap();
        }
        for db in dbs {
            db.drop_db().await;
        }
    });
}
