//! Peers: the framework's sharding against SQLAlchemy 2.x's `ShardedSession` and against
//! routing written by hand in plain SeaORM, on the same 4 PostgreSQL shard databases, in
//! one run.
//!
//! ```text
//! benches/peers/run.sh
//! ```
//!
//! which sets up the Python side (a virtualenv with `benches/peers/requirements.txt`) and
//! runs `PEERS_PYTHON=<its python> cargo bench -p tenancy-tests --bench peers`. The server
//! is `TENANCY_PG_URL` (default `postgres://postgres@127.0.0.1:5432/test`); its user must
//! be allowed to create databases. `PEERS_REPS` sets the repetitions (default 7).
//!
//! Each repetition runs the three sides one after another, in an order rotated every
//! repetition; each side empties the tables, then runs four timed phases (single-row
//! inserts, point reads, tenant scans, scatter-gather top-N) over exactly one connection
//! per shard. The first table gives the median of each phase over the repetitions, the
//! second the client's CPU time per operation. Then the two Rust sides alternate batches
//! of each phase for 21 rounds (framework / hand-written, robust to a machine whose load
//! drifts), point reads run again with SeaORM's default `test_before_acquire(true)`, and
//! raw SQLx point reads show what a pool acquire and release costs.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::panic,
    missing_docs
)]

use futures_util::FutureExt;
use futures_util::future::join_all;
use sea_orm::{
    ColumnTrait, ConnectOptions, ConnectionTrait, Database, DatabaseConnection, EntityTrait,
    QueryFilter, QueryOrder, QuerySelect, Set,
};
use std::hint::black_box;
use std::ops::Range;
use std::panic::AssertUnwindSafe;
use std::process::Command;
use std::time::{Duration, Instant};
use tenancy_sea::{HashRouter, ShardId, ShardRouter, Tenancy, Topology};

mod orders {
    use sea_orm::entity::prelude::*;
    use tenancy_sea::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, TenantScoped)]
    #[sea_orm(table_name = "orders")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: i64,
        #[tenant_id]
        pub tenant_id: i64,
        pub customer_id: i64,
        pub total_cents: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

const SHARDS: usize = 4;
const PHASES: [&str; 4] = [
    "inserts",
    "point reads",
    "tenant scans",
    "top-N over all shards",
];
const SIDES: [&str; 3] = [
    "hand-written SeaORM",
    "framework",
    "SQLAlchemy ShardedSession",
];
const PYTHON_HELP: &str = "the SQLAlchemy side needs python3 with SQLAlchemy 2.x and \
    psycopg2: run benches/peers/run.sh, which makes a virtualenv and installs \
    benches/peers/requirements.txt, or install them yourself (python3 -m venv DIR && \
    DIR/bin/pip install -r benches/peers/requirements.txt) and set PEERS_PYTHON=DIR/bin/python";

/// The rows and the access order; the same formulas as `benches/peers/sqlalchemy_sharded.py`.
#[derive(Clone, Copy, Debug)]
struct Workload {
    rows: i64,
    tenants: i64,
    reads: i64,
    scans: i64,
    tops: i64,
    limit: u64,
}

impl Workload {
    fn tenant_of(&self, id: i64) -> i64 {
        (id - 1) % self.tenants + 1
    }

    fn customer_of(&self, id: i64) -> i64 {
        id * 31 % 997 + 1
    }

    fn total_of(&self, id: i64) -> i64 {
        (id * 104_729 + self.tenant_of(id) * 7_919) % 1_000_000
    }

    /// The id of the `k`-th point read: every row once, in a scattered order.
    fn read_id(&self, k: i64) -> i64 {
        k * 7_919 % self.rows + 1
    }

    /// The tenant of the `k`-th scan: every tenant in turn, in a scattered order.
    fn scan_tenant(&self, k: i64) -> i64 {
        k * 37 % self.tenants + 1
    }

    fn row(&self, id: i64) -> orders::ActiveModel {
        orders::ActiveModel {
            id: Set(id),
            tenant_id: Set(self.tenant_of(id)),
            customer_id: Set(self.customer_of(id)),
            total_cents: Set(self.total_of(id)),
        }
    }
}

/// What a side read, so that every side can be checked to have done the same work.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Checks {
    reads: i64,
    scan_rows: i64,
    scan_sum: i64,
    top: i64,
}

impl Checks {
    fn top_of(rows: &[orders::Model]) -> i64 {
        rows.iter()
            .zip(1..)
            .map(|(row, position)| position * row.id)
            .sum()
    }
}

/// One side's run: the seconds of each phase, and the client's CPU seconds in it.
#[derive(Clone, Debug, Default)]
struct Run {
    phases: [f64; 4],
    cpu: [f64; 4],
    checks: Checks,
}

/// Wall and CPU time from a start.
struct Clock {
    wall: Instant,
    cpu: u64,
}

impl Clock {
    fn start() -> Clock {
        Clock {
            wall: Instant::now(),
            cpu: cpu_ns(),
        }
    }

    /// Records the time since the start as `run`'s phase `p`.
    fn stop(self, run: &mut Run, p: usize) {
        run.phases[p] = secs(self.wall);
        run.cpu[p] = (cpu_ns() - self.cpu) as f64 / 1e9;
    }
}

fn secs(start: Instant) -> f64 {
    start.elapsed().as_secs_f64()
}

/// The options of every Rust-side connection: one connection per shard, and no ping
/// before each statement unless `test_before_acquire` (SeaORM's default is `true`).
async fn connect(url: &str, test_before_acquire: bool) -> DatabaseConnection {
    let mut options = ConnectOptions::new(url.to_owned());
    options
        .max_connections(1)
        .min_connections(1)
        .test_before_acquire(test_before_acquire);
    Database::connect(options)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to the shard {url}: {e}"))
}

/// Empties the tables of every shard (untimed).
async fn reset(shards: &[DatabaseConnection]) {
    for conn in shards {
        conn.execute_unprepared("TRUNCATE orders").await.unwrap();
    }
}

/// Fresh statistics and no autovacuum during the reads, so every side gets the same plans
/// (untimed).
async fn settle(shards: &[DatabaseConnection]) {
    for conn in shards {
        conn.execute_unprepared("VACUUM ANALYZE orders")
            .await
            .unwrap();
    }
}

/// What each Rust side does, one batch at a time: the same work, routed by hand or by
/// the framework.
trait RustSide {
    fn shards(&self) -> &[DatabaseConnection];

    /// Inserts the rows `ids`, one statement each.
    async fn insert(&self, w: &Workload, ids: Range<i64>);

    /// Point reads `ks`; the sum of the totals read.
    async fn read(&self, w: &Workload, ks: Range<i64>) -> i64;

    /// Tenant scans `ks`; the rows read and the sum of their totals.
    async fn scan(&self, w: &Workload, ks: Range<i64>) -> (i64, i64);

    /// One top-N over all shards.
    async fn top(&self, w: &Workload) -> Vec<orders::Model>;
}

/// The four phases, each timed, on emptied tables.
async fn run_side(side: &impl RustSide, w: &Workload) -> Run {
    let mut run = Run::default();
    reset(side.shards()).await;
    let clock = Clock::start();
    side.insert(w, 1..w.rows + 1).await;
    clock.stop(&mut run, 0);
    settle(side.shards()).await;

    let clock = Clock::start();
    run.checks.reads = side.read(w, 0..w.reads).await;
    clock.stop(&mut run, 1);

    let clock = Clock::start();
    (run.checks.scan_rows, run.checks.scan_sum) = side.scan(w, 0..w.scans).await;
    clock.stop(&mut run, 2);

    let mut top = Vec::new();
    let clock = Clock::start();
    for _ in 0..w.tops {
        top = side.top(w).await;
    }
    clock.stop(&mut run, 3);
    run.checks.top = Checks::top_of(&top);
    run
}

/// Routing written by hand: the tenant's shard from the same placement the framework's
/// router gives, then plain SeaORM on that shard's connection.
struct ByHand {
    shards: Vec<DatabaseConnection>,
    /// The shard index of each tenant (index 0 unused).
    placement: Vec<usize>,
}

impl ByHand {
    fn conn(&self, tenant: i64) -> &DatabaseConnection {
        &self.shards[self.placement[usize::try_from(tenant).unwrap()]]
    }

    /// Each shard's top `limit`, merged. `concurrent` asks every shard at once (as the
    /// framework does); otherwise one shard after another (as `ShardedSession` does).
    async fn top_n(&self, w: &Workload, concurrent: bool) -> Vec<orders::Model> {
        let mut rows = Vec::new();
        if concurrent {
            let parts = join_all(self.shards.iter().map(|conn| shard_top(conn, w.limit))).await;
            for part in parts {
                rows.extend(part);
            }
        } else {
            for conn in &self.shards {
                rows.extend(shard_top(conn, w.limit).await);
            }
        }
        rows.sort_by(|a, b| b.total_cents.cmp(&a.total_cents).then(a.id.cmp(&b.id)));
        rows.truncate(usize::try_from(w.limit).unwrap());
        rows
    }
}

impl RustSide for ByHand {
    fn shards(&self) -> &[DatabaseConnection] {
        &self.shards
    }

    async fn insert(&self, w: &Workload, ids: Range<i64>) {
        for id in ids {
            let row = orders::Entity::insert(w.row(id))
                .exec_with_returning(self.conn(w.tenant_of(id)))
                .await
                .unwrap();
            black_box(row);
        }
    }

    async fn read(&self, w: &Workload, ks: Range<i64>) -> i64 {
        let mut sum = 0;
        for k in ks {
            let id = w.read_id(k);
            let tenant = w.tenant_of(id);
            let row = orders::Entity::find_by_id(black_box(id))
                .filter(orders::Column::TenantId.eq(tenant))
                .one(self.conn(tenant))
                .await
                .unwrap()
                .expect("row");
            sum += row.total_cents;
        }
        sum
    }

    async fn scan(&self, w: &Workload, ks: Range<i64>) -> (i64, i64) {
        let (mut count, mut sum) = (0, 0);
        for k in ks {
            let tenant = w.scan_tenant(k);
            let rows = orders::Entity::find()
                .filter(orders::Column::TenantId.eq(black_box(tenant)))
                .all(self.conn(tenant))
                .await
                .unwrap();
            count += i64::try_from(rows.len()).unwrap();
            sum += rows.iter().map(|r| r.total_cents).sum::<i64>();
        }
        (count, sum)
    }

    async fn top(&self, w: &Workload) -> Vec<orders::Model> {
        self.top_n(w, true).await
    }
}

/// One shard's top `limit` rows.
async fn shard_top(conn: &DatabaseConnection, limit: u64) -> Vec<orders::Model> {
    orders::Entity::find()
        .order_by_desc(orders::Column::TotalCents)
        .order_by_asc(orders::Column::Id)
        .limit(limit)
        .all(conn)
        .await
        .unwrap()
}

/// The framework: a tenant handle per operation, routed by the topology's hash router.
struct Framework {
    tenancy: Tenancy<i64>,
    shards: Vec<DatabaseConnection>,
}

impl Framework {
    fn new(shards: Vec<DatabaseConnection>, ids: &[ShardId]) -> Self {
        let topology = Topology::new(
            HashRouter::new(ids.to_vec()),
            ids.iter().cloned().zip(shards.iter().cloned()),
        )
        .unwrap();
        let tenancy = Tenancy::builder(shards[0].clone())
            .sharded(topology)
            .build()
            .unwrap();
        Framework { tenancy, shards }
    }
}

impl RustSide for Framework {
    fn shards(&self) -> &[DatabaseConnection] {
        &self.shards
    }

    async fn insert(&self, w: &Workload, ids: Range<i64>) {
        for id in ids {
            let db = self.tenancy.tenant(w.tenant_of(id)).await.unwrap();
            // The handle stamps the tenant column.
            let row = db
                .insert(orders::ActiveModel {
                    id: Set(id),
                    customer_id: Set(w.customer_of(id)),
                    total_cents: Set(w.total_of(id)),
                    ..Default::default()
                })
                .await
                .unwrap();
            black_box(row);
        }
    }

    async fn read(&self, w: &Workload, ks: Range<i64>) -> i64 {
        let mut sum = 0;
        for k in ks {
            let id = w.read_id(k);
            let db = self.tenancy.tenant(w.tenant_of(id)).await.unwrap();
            let row = db
                .find_by_id::<orders::Entity>(black_box(id))
                .one()
                .await
                .unwrap()
                .expect("row");
            sum += row.total_cents;
        }
        sum
    }

    async fn scan(&self, w: &Workload, ks: Range<i64>) -> (i64, i64) {
        let (mut count, mut sum) = (0, 0);
        for k in ks {
            let db = self.tenancy.tenant(w.scan_tenant(k)).await.unwrap();
            let rows = db.find::<orders::Entity>().all().await.unwrap();
            count += i64::try_from(rows.len()).unwrap();
            sum += rows.iter().map(|r| r.total_cents).sum::<i64>();
        }
        (count, sum)
    }

    async fn top(&self, w: &Workload) -> Vec<orders::Model> {
        self.tenancy
            .unscoped_across_shards()
            .unwrap()
            .find::<orders::Entity>()
            .order_by_desc(orders::Column::TotalCents)
            .order_by_asc(orders::Column::Id)
            .limit(w.limit)
            .all()
            .await
            .unwrap()
    }
}

/// The CPU time this process's threads have used, in nanoseconds (Linux; 0 elsewhere).
/// The Rust sides run on one thread, plus SQLx's and the timers' helper threads, so a
/// batch's CPU time is the client's own work, whatever else the machine is doing.
fn cpu_ns() -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok())
        .filter_map(|stat| stat.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// Times one batch of `phase` on `side` (reads, scans and top-N on the rows in place;
/// inserts of the new ids `ks`).
async fn batch(side: &impl RustSide, w: &Workload, phase: usize, ks: Range<i64>) -> f64 {
    let start = Instant::now();
    match phase {
        0 => side.insert(w, ks).await,
        1 => {
            black_box(side.read(w, ks).await);
        }
        2 => {
            black_box(side.scan(w, ks).await);
        }
        _ => {
            for _ in ks {
                black_box(side.top(w).await);
            }
        }
    }
    secs(start)
}

/// Framework against hand-written, in interleaved batches.
#[derive(Default)]
struct Paired {
    /// Each round's framework / hand-written wall time, per phase.
    ratios: [Vec<f64>; 4],
    /// The client CPU time per operation (µs), per phase: hand-written, framework.
    cpu_us: [[f64; 2]; 4],
}

/// Framework / hand-written in interleaved batches (the order swapped every round), for
/// each phase: robust to a machine whose load drifts during the run. Reads run on the
/// rows in place; inserts add new ids (each side its own: the same number of rows,
/// tenants and shards).
async fn paired(hand: &ByHand, framework: &Framework, w: &Workload, rounds: usize) -> Paired {
    let sizes = [w.rows / 20, w.reads / 20, w.scans / 20, w.tops / 20].map(|n| n.max(1));
    let mut out = Paired::default();
    let mut next_id = w.rows + 1;
    for phase in [1, 2, 3, 0] {
        let n = sizes[phase];
        let mut cpu = [0u64; 2];
        for round in 0..rounds {
            let mut t = [0.0; 2];
            for k in 0..2 {
                let side = (k + round) % 2;
                let ks = if phase == 0 {
                    next_id += n;
                    next_id - n..next_id
                } else {
                    let k0 = i64::try_from(round).unwrap() * n;
                    k0..k0 + n
                };
                let cpu_start = cpu_ns();
                t[side] = match side {
                    0 => batch(hand, w, phase, ks).await,
                    _ => batch(framework, w, phase, ks).await,
                };
                cpu[side] += cpu_ns() - cpu_start;
            }
            out.ratios[phase].push(t[1] / t[0]);
        }
        let ops = (n * i64::try_from(rounds).unwrap()) as f64;
        out.cpu_us[phase] = cpu.map(|ns| ns as f64 / 1e3 / ops);
    }
    out
}

/// The SQLAlchemy side, run by the Python script on the same shards.
struct SqlAlchemy {
    python: String,
    urls: Vec<String>,
    placement: Vec<usize>,
}

impl SqlAlchemy {
    fn script() -> String {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../benches/peers/sqlalchemy_sharded.py"
        )
        .to_owned()
    }

    /// Fails loudly, with how to install it, unless the Python side can run.
    fn check(python: &str) -> String {
        let probe = "import sqlalchemy, psycopg2\n\
            assert sqlalchemy.__version__.startswith('2.'), sqlalchemy.__version__\n\
            print(sqlalchemy.__version__)";
        match Command::new(python).args(["-c", probe]).output() {
            Ok(out) if out.status.success() => {
                String::from_utf8_lossy(&out.stdout).trim().to_owned()
            }
            Ok(out) => panic!(
                "{python} cannot import SQLAlchemy 2.x and psycopg2 ({}): {PYTHON_HELP}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            Err(e) => panic!("cannot run {python} ({e}): {PYTHON_HELP}"),
        }
    }

    fn run(&self, w: &Workload) -> Run {
        let placement: Vec<String> = self.placement[1..].iter().map(usize::to_string).collect();
        let out = Command::new(&self.python)
            .arg(Self::script())
            .args(["--shards", &self.urls.join(",")])
            .args(["--placement", &placement.join(",")])
            .args(["--rows", &w.rows.to_string()])
            .args(["--tenants", &w.tenants.to_string()])
            .args(["--reads", &w.reads.to_string()])
            .args(["--scans", &w.scans.to_string()])
            .args(["--tops", &w.tops.to_string()])
            .args(["--limit", &w.limit.to_string()])
            .output()
            .unwrap_or_else(|e| panic!("cannot run {} ({e}): {PYTHON_HELP}", self.python));
        assert!(
            out.status.success(),
            "the SQLAlchemy side failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let json = String::from_utf8(out.stdout).unwrap();
        let field = |name: &str| -> f64 { json_number(&json, name) };
        let int = |name: &str| -> i64 { field(name) as i64 };
        Run {
            phases: [
                field("inserts"),
                field("point_reads"),
                field("tenant_scans"),
                field("top_n"),
            ],
            cpu: [
                field("cpu_inserts"),
                field("cpu_point_reads"),
                field("cpu_tenant_scans"),
                field("cpu_top_n"),
            ],
            checks: Checks {
                reads: int("check_reads"),
                scan_rows: int("check_scan_rows"),
                scan_sum: int("check_scan_sum"),
                top: int("check_top"),
            },
        }
    }
}

/// The number under `"name":` in the script's one line of flat JSON.
fn json_number(json: &str, name: &str) -> f64 {
    let key = format!("\"{name}\":");
    let at = json
        .find(&key)
        .unwrap_or_else(|| panic!("no {name} in the script's output: {json}"))
        + key.len();
    let value: String = json[at..]
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | 'e' | 'E'))
        .collect();
    value
        .parse()
        .unwrap_or_else(|e| panic!("{name} is not a number ({e}): {json}"))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn min_max(v: &[f64]) -> (f64, f64) {
    v.iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| {
            (lo.min(x), hi.max(x))
        })
}

/// The shard databases: created on the server, dropped at the end, also on failure.
struct Server {
    admin: DatabaseConnection,
    names: Vec<String>,
    urls: Vec<String>,
}

impl Server {
    async fn create(url: &str) -> Server {
        let mut options = ConnectOptions::new(url.to_owned());
        options
            .connect_timeout(Duration::from_secs(5))
            .acquire_timeout(Duration::from_secs(5));
        let admin = Database::connect(options).await.unwrap_or_else(|e| {
            panic!(
                "PostgreSQL is not reachable at {url} ({e}). Start it \
                 (pg_ctlcluster --skip-systemctl-redirect <version> main start), install it \
                 (apt-get install postgresql), or set TENANCY_PG_URL to a server whose user \
                 may create databases"
            )
        });
        let mut server = Server {
            admin,
            names: Vec::new(),
            urls: Vec::new(),
        };
        for i in 0..SHARDS {
            let name = format!("peers_{}_s{i}", std::process::id());
            server
                .admin
                .execute_unprepared(&format!("CREATE DATABASE {name}"))
                .await
                .unwrap_or_else(|e| panic!("cannot create database {name} ({e})"));
            server.names.push(name.clone());
            // Commits do not wait for the WAL flush (these databases only), so the insert
            // phase measures the clients rather than the disk's fsync, the same on every side.
            server
                .admin
                .execute_unprepared(&format!(
                    "ALTER DATABASE {name} SET synchronous_commit = off"
                ))
                .await
                .unwrap();
            let mut shard_url = url::Url::parse(url).expect("database URL");
            shard_url.set_path(&name);
            // Plain TCP on every side (psycopg2 would otherwise negotiate TLS, SQLx here
            // is built without it).
            if !shard_url.query_pairs().any(|(k, _)| k == "sslmode") {
                shard_url
                    .query_pairs_mut()
                    .append_pair("sslmode", "disable");
            }
            let shard = Database::connect(shard_url.as_str()).await.unwrap();
            shard
                .execute_unprepared(
                    "CREATE TABLE orders (id BIGINT PRIMARY KEY, tenant_id BIGINT NOT NULL, \
                     customer_id BIGINT NOT NULL, total_cents BIGINT NOT NULL); \
                     CREATE INDEX orders_tenant_id ON orders (tenant_id)",
                )
                .await
                .unwrap();
            shard.close().await.unwrap();
            server.urls.push(shard_url.to_string());
        }
        server
    }

    async fn drop_all(&self) {
        for name in &self.names {
            if let Err(e) = self
                .admin
                .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .await
            {
                eprintln!("could not drop database {name}: {e}");
            }
        }
    }
}

async fn shard_connections(urls: &[String], test_before_acquire: bool) -> Vec<DatabaseConnection> {
    let mut shards = Vec::new();
    for url in urls {
        shards.push(connect(url, test_before_acquire).await);
    }
    shards
}

/// Raw SQLx point reads, to show what a pool round trip costs: through the pool (a
/// connection acquired and released around each statement, as SeaORM does), and on one
/// connection per shard held for the whole loop.
async fn raw_point_reads(hand: &ByHand, w: &Workload) -> (f64, f64) {
    use sea_orm::sqlx;
    const SQL: &str = "SELECT id, tenant_id, customer_id, total_cents FROM orders \
        WHERE id = $1 AND tenant_id = $2 LIMIT 1";
    let pools: Vec<&sqlx::PgPool> = hand
        .shards
        .iter()
        .map(DatabaseConnection::get_postgres_connection_pool)
        .collect();
    let shard_of = |tenant: i64| hand.placement[usize::try_from(tenant).unwrap()];
    let start = Instant::now();
    for k in 0..w.reads {
        let id = w.read_id(k);
        let tenant = w.tenant_of(id);
        let row = sqlx::query(SQL)
            .bind(id)
            .bind(tenant)
            .fetch_one(pools[shard_of(tenant)])
            .await
            .unwrap();
        black_box(row);
    }
    let pooled = secs(start);
    let mut held = Vec::new();
    for pool in &pools {
        held.push(pool.acquire().await.unwrap());
    }
    let start = Instant::now();
    for k in 0..w.reads {
        let id = w.read_id(k);
        let tenant = w.tenant_of(id);
        let row = sqlx::query(SQL)
            .bind(id)
            .bind(tenant)
            .fetch_one(&mut *held[shard_of(tenant)])
            .await
            .unwrap();
        black_box(row);
    }
    (pooled, secs(start))
}

fn main() {
    let measuring = std::env::args().any(|a| a == "--bench");
    let w = if measuring {
        Workload {
            rows: 20_000,
            tenants: 200,
            reads: 20_000,
            scans: 2_000,
            tops: 500,
            limit: 20,
        }
    } else {
        Workload {
            rows: 400,
            tenants: 20,
            reads: 400,
            scans: 40,
            tops: 10,
            limit: 20,
        }
    };
    let reps: usize = match std::env::var("PEERS_REPS") {
        Ok(n) => n.parse().expect("PEERS_REPS is a number"),
        Err(_) if measuring => 7,
        Err(_) => 1,
    };
    let python = std::env::var("PEERS_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let sqlalchemy_version = SqlAlchemy::check(&python);
    let url = std::env::var("TENANCY_PG_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/test".to_owned());

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let server = Server::create(&url).await;
        let outcome = AssertUnwindSafe(bench(&server, &python, &sqlalchemy_version, w, reps))
            .catch_unwind()
            .await;
        server.drop_all().await;
        if let Err(panic) = outcome {
            std::panic::resume_unwind(panic);
        }
    });
}

async fn bench(server: &Server, python: &str, sqlalchemy_version: &str, w: Workload, reps: usize) {
    let ids: Vec<ShardId> = (0..SHARDS).map(|i| ShardId::new(format!("s{i}"))).collect();
    let router = HashRouter::new(ids.clone());
    let placement: Vec<usize> = (0..=w.tenants)
        .map(|tenant| {
            let shard = router.route(&tenant).unwrap();
            ids.iter().position(|id| *id == shard).unwrap()
        })
        .collect();
    let hand = ByHand {
        shards: shard_connections(&server.urls, false).await,
        placement: placement.clone(),
    };
    let framework = Framework::new(shard_connections(&server.urls, false).await, &ids);
    let sqlalchemy = SqlAlchemy {
        python: python.to_owned(),
        urls: server.urls.clone(),
        placement,
    };

    let mut runs: [Vec<Run>; 3] = Default::default();
    for rep in 0..reps {
        for k in 0..3 {
            let side = (rep + k) % 3;
            let run = match side {
                0 => run_side(&hand, &w).await,
                1 => run_side(&framework, &w).await,
                _ => sqlalchemy.run(&w),
            };
            eprintln!(
                "rep {}/{reps} {:<26} {}",
                rep + 1,
                SIDES[side],
                run.phases.map(|s| format!("{s:8.3} s")).join(" ")
            );
            runs[side].push(run);
        }
    }
    let expected = &runs[0][0].checks;
    assert_eq!(
        expected.scan_rows,
        w.scans * (w.rows / w.tenants),
        "every scan reads one tenant's rows"
    );
    for (side, side_runs) in runs.iter().enumerate() {
        for run in side_runs {
            assert_eq!(&run.checks, expected, "{} read other rows", SIDES[side]);
        }
    }

    // The same rows are in place (every side inserts the same): reads in interleaved
    // batches, then inserts of new rows.
    let rounds = if reps > 1 { 21 } else { 3 };
    let interleaved = paired(&hand, &framework, &w, rounds).await;
    // Inserts have added rows: drop them, so what follows reads the table every side read.
    for conn in &hand.shards {
        conn.execute_unprepared(&format!("DELETE FROM orders WHERE id > {}", w.rows))
            .await
            .unwrap();
    }
    settle(&hand.shards).await;

    // SeaORM's default, `test_before_acquire(true)`: point reads on pools that ping each
    // connection as it is acquired, next to the same reads without, on both Rust sides, in
    // interleaved tenths.
    let pinging_hand = ByHand {
        shards: shard_connections(&server.urls, true).await,
        placement: hand.placement.clone(),
    };
    let pinging_framework = Framework::new(shard_connections(&server.urls, true).await, &ids);
    let mut tba = [0.0; 4];
    let tenth = (w.reads / 10).max(1);
    for part in 0..10 {
        let ks = part * tenth..(part + 1) * tenth;
        tba[0] += batch(&hand, &w, 1, ks.clone()).await;
        tba[1] += batch(&pinging_hand, &w, 1, ks.clone()).await;
        tba[2] += batch(&framework, &w, 1, ks.clone()).await;
        tba[3] += batch(&pinging_framework, &w, 1, ks).await;
    }
    let (raw_pooled, raw_held) = raw_point_reads(&hand, &w).await;
    let start = Instant::now();
    for _ in 0..w.tops {
        black_box(hand.top_n(&w, false).await);
    }
    let sequential_top = secs(start);

    let med: Vec<[f64; 4]> = runs
        .iter()
        .map(|side_runs| {
            std::array::from_fn(|p| median(side_runs.iter().map(|r| r.phases[p]).collect()))
        })
        .collect();
    let med_cpu: Vec<[f64; 4]> = runs
        .iter()
        .map(|side_runs| {
            std::array::from_fn(|p| median(side_runs.iter().map(|r| r.cpu[p]).collect()))
        })
        .collect();
    let ops = [w.rows, w.reads, w.scans, w.tops].map(|n| n as f64);
    println!();
    println!(
        "{SHARDS} shards, one connection each; {} rows of {} tenants; median of {reps} \
         repetitions; SQLAlchemy {sqlalchemy_version}",
        w.rows, w.tenants
    );
    println!();
    println!(
        "| phase | hand-written SeaORM | framework | SQLAlchemy ShardedSession | framework / \
         hand-written | SQLAlchemy / framework | SQLAlchemy / hand-written |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for p in 0..4 {
        let per_op = |side: usize| {
            let us = med[side][p] * 1e6 / ops[p];
            format!("{:.2} s ({us:.0} µs)", med[side][p])
        };
        let fw_hand: Vec<f64> = (0..reps)
            .map(|r| runs[1][r].phases[p] / runs[0][r].phases[p])
            .collect();
        let (lo, hi) = min_max(&fw_hand);
        println!(
            "| {} × {} | {} | {} | {} | {:.3} ({lo:.3}–{hi:.3}) | {:.1}x | {:.1}x |",
            ops[p],
            PHASES[p],
            per_op(0),
            per_op(1),
            per_op(2),
            median(fw_hand),
            med[2][p] / med[1][p],
            med[2][p] / med[0][p],
        );
    }
    println!();
    println!(
        "| client CPU per operation, median | hand-written SeaORM | framework | SQLAlchemy \
         ShardedSession |"
    );
    println!("|---|---:|---:|---:|");
    for p in 0..4 {
        let us = |side: usize| med_cpu[side][p] * 1e6 / ops[p];
        println!(
            "| {} | {:.1} µs | {:.1} µs | {:.1} µs |",
            PHASES[p],
            us(0),
            us(1),
            us(2)
        );
    }
    println!();
    println!(
        "| {rounds} interleaved rounds | framework / hand-written, median | 10th–90th pct | \
         client CPU per op, hand-written | client CPU per op, framework |"
    );
    println!("|---|---:|---:|---:|---:|");
    for (p, phase) in PHASES.iter().enumerate() {
        let mut v = interleaved.ratios[p].clone();
        v.sort_by(f64::total_cmp);
        let n = v.len() - 1;
        let [cpu_hand, cpu_framework] = interleaved.cpu_us[p];
        println!(
            "| {phase} | {:.3} | {:.3}–{:.3} | {cpu_hand:.1} µs | {cpu_framework:.1} µs |",
            median(v.clone()),
            v[n / 10],
            v[n * 9 / 10]
        );
    }
    println!();
    println!(
        "top-N, hand-written, one shard after another: {sequential_top:.2} s ({:.0} µs)",
        sequential_top * 1e6 / ops[3]
    );
    println!(
        "point reads, test_before_acquire(false) -> (true): hand-written {:.2} s -> {:.2} s \
         ({:+.0} µs a read), framework {:.2} s -> {:.2} s ({:+.0} µs a read)",
        tba[0],
        tba[1],
        (tba[1] - tba[0]) * 1e6 / ops[1],
        tba[2],
        tba[3],
        (tba[3] - tba[2]) * 1e6 / ops[1],
    );
    println!(
        "point reads, raw SQLx: through the pool {raw_pooled:.2} s ({:.0} µs), on held \
         connections {raw_held:.2} s ({:.0} µs)",
        raw_pooled * 1e6 / ops[1],
        raw_held * 1e6 / ops[1],
    );
    for conn in hand
        .shards
        .into_iter()
        .chain(framework.shards)
        .chain(pinging_hand.shards)
        .chain(pinging_framework.shards)
    {
        conn.close().await.unwrap();
    }
}
