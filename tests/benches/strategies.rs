//! Primary-key lookups on PostgreSQL under each strategy, in units of work (transactions)
//! of 1 and of 10 lookups, and one lookup on the pool handle with no transaction of the
//! caller's: latency as a ratio to row level, measured in interleaved rounds, and
//! statements per unit of work, counted from sqlx's own statement log. Hand-written
//! SeaORM transactions on the row-level pool are the floor of a unit. Row-level security
//! and schema per tenant are also compared with the floor of their own isolation:
//! hand-written SeaORM on connections that carry tenant 1's setting or `search_path` from
//! connect, so that a unit needs no set-up at all. The ratio to it is what the set-up
//! costs, apart from what the isolation itself costs the server (the policy, the schema).
//!
//! For one-lookup units it also splits each case's time into the client's CPU (this
//! process, one thread) and the server's (every `postgres` process), from the scheduler's
//! accounting; and it sends each set-up's `BEGIN` text through sqlx alone, with the same
//! lookup, to show what the text itself costs the client and the server, apart from
//! anything the library or SeaORM does.
//!
//! ```text
//! cargo bench -p tenancy-tests --bench strategies
//! ```
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::panic,
    missing_docs
)]

use sea_orm::{
    ColumnTrait, ConnectOptions, ConnectionTrait, Database, DatabaseConnection,
    DatabaseTransaction, EntityTrait, QueryFilter, Set, TransactionTrait,
};
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tenancy_sea::{DatabaseTemplate, Tenancy, TenantDb, catalog::TenantDatabases};
use tenancy_tests::entities::{customer, order};
use tenancy_tests::migration::{DatabaseMigrator, Migrator};
use tenancy_tests::{Backend, Flavor, RLS_SETTING, TestDb};
use tracing::subscriber::Interest;
use tracing_subscriber::layer::SubscriberExt;

const ROUNDS: usize = 61;
const UNITS_PER_BATCH: usize = 150;
const ORDERS: i64 = 1_000;

/// Counts sqlx's statement log events while `counting` is on; while it is off, every
/// event is disabled, so timing runs pay for no logging at all.
#[derive(Clone, Default)]
struct Statements {
    seen: Arc<AtomicUsize>,
    counting: Arc<AtomicBool>,
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Statements {
    fn register_callsite(&self, _: &'static tracing::Metadata<'static>) -> Interest {
        Interest::sometimes()
    }

    fn enabled(
        &self,
        _: &tracing::Metadata<'_>,
        _: tracing_subscriber::layer::Context<'_, S>,
    ) -> bool {
        self.counting.load(Ordering::Relaxed)
    }

    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        if event.metadata().target() == "sqlx::query" {
            self.seen.fetch_add(1, Ordering::Relaxed);
        }
    }
}

struct Case {
    name: &'static str,
    on: On,
    ids: Vec<i64>,
    /// The case this one is also compared with: the floor of its isolation.
    floor: Option<usize>,
}

/// What a case's units run on.
enum On {
    /// A tenant handle.
    Handle(TenantDb<i64>),
    /// Hand-written SeaORM on the row-level pool, tenant 1's filter written by hand: the
    /// floor of a unit of work.
    SeaOrm(DatabaseConnection),
    /// Hand-written SeaORM on connections scoped to tenant 1 for their whole life (the
    /// row-level security setting, or the `search_path`, given at connect): the floor of
    /// an isolation whose unit needs a set-up, as if each tenant had connections of its
    /// own. `true` when the tenant's filter is written too (RLS; a schema's tables need
    /// none).
    Scoped(DatabaseConnection, bool),
}

/// One unit of `lookups` primary-key lookups in a transaction; `lookups == 0` is one lookup
/// on the pool handle itself, outside any transaction of the caller's (under RLS and
/// schema per tenant the handle makes the unit; under row level and on a tenant database
/// it runs the statement alone).
async fn unit(case: &Case, lookups: usize) {
    match &case.on {
        On::Handle(db) if lookups == 0 => {
            let row = db
                .find_by_id::<order::Entity>(black_box(case.ids[0]))
                .one()
                .await
                .unwrap();
            black_box(row.expect("row"));
        }
        On::Handle(db) => {
            let txn = db.begin().await.unwrap();
            for id in case.ids.iter().take(lookups) {
                let row = txn
                    .find_by_id::<order::Entity>(black_box(*id))
                    .one()
                    .await
                    .unwrap();
                black_box(row.expect("row"));
            }
            txn.commit().await.unwrap();
        }
        On::SeaOrm(pool) | On::Scoped(pool, true) => {
            let txn: DatabaseTransaction = pool.begin().await.unwrap();
            for id in case.ids.iter().take(lookups.max(1)) {
                let row = order::Entity::find_by_id(black_box(*id))
                    .filter(order::Column::Tenant.eq(1i64))
                    .one(&txn)
                    .await
                    .unwrap();
                black_box(row.expect("row"));
            }
            txn.commit().await.unwrap();
        }
        On::Scoped(pool, false) => {
            let txn: DatabaseTransaction = pool.begin().await.unwrap();
            for id in case.ids.iter().take(lookups.max(1)) {
                let row = order::Entity::find_by_id(black_box(*id))
                    .one(&txn)
                    .await
                    .unwrap();
                black_box(row.expect("row"));
            }
            txn.commit().await.unwrap();
        }
    }
}

async fn fill(db: &TenantDb<i64>) -> Vec<i64> {
    let c = db
        .insert(customer::ActiveModel {
            name: Set("bench".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    for chunk in (0..ORDERS).collect::<Vec<_>>().chunks(250) {
        db.insert_many(chunk.iter().map(|i| order::ActiveModel {
            customer_id: Set(c.id),
            total_cents: Set(*i),
            ..Default::default()
        }))
        .await
        .unwrap();
    }
    let rows = db.find::<order::Entity>().all().await.unwrap();
    rows.iter().step_by(97).map(|o| o.id).take(10).collect()
}

/// Nanoseconds on a CPU so far: this thread's (the bench runs on a current-thread runtime,
/// so it is all of the client: the library, SeaORM, sqlx) and all `postgres` processes'
/// together (the server: every backend, and what little the background processes do).
/// From the scheduler's own accounting (`schedstat`), read outside the timed batches.
fn cpu_ns() -> (u64, u64) {
    let on_cpu = |path: &str| {
        std::fs::read_to_string(path)
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let client = on_cpu("/proc/thread-self/schedstat");
    let mut server = 0;
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let dir = entry.path();
        let is_postgres = std::fs::read_to_string(dir.join("comm"))
            .is_ok_and(|comm| comm.trim_end() == "postgres");
        if is_postgres {
            server += on_cpu(&dir.join("schedstat").to_string_lossy());
        }
    }
    (client, server)
}

/// Where a case's time went over all its batches: wall time, and the CPU of the client
/// and of the server.
#[derive(Clone, Copy, Default)]
struct Spent {
    wall: Duration,
    client_ns: u64,
    server_ns: u64,
}

impl Spent {
    /// Runs `batch`, adds what it spent; returns its wall time.
    async fn time(&mut self, batch: impl Future<Output = ()>) -> Duration {
        let (client, server) = cpu_ns();
        let start = Instant::now();
        batch.await;
        let wall = start.elapsed();
        let (client_after, server_after) = cpu_ns();
        self.wall += wall;
        self.client_ns += client_after.saturating_sub(client);
        self.server_ns += server_after.saturating_sub(server);
        wall
    }

    /// Per unit, in µs: wall time, client CPU, server CPU.
    fn per_unit(&self) -> (f64, f64, f64) {
        let units = (ROUNDS * UNITS_PER_BATCH) as f64;
        (
            self.wall.as_secs_f64() * 1e6 / units,
            self.client_ns as f64 / 1e3 / units,
            self.server_ns as f64 / 1e3 / units,
        )
    }
}

/// The `BEGIN` texts of the set-ups, sent by sqlx itself (no SeaORM, no library) in units
/// of `BEGIN ...`, one prepared lookup of a schema-qualified table, `COMMIT`, each on a
/// pool of its own: what each set-up costs the client and the server, apart from
/// anything the library does. `marker` is tenant 1's shape marker.
async fn anatomy(url: &str, marker: &str, id: i64) {
    use sea_orm::sqlx::{AssertSqlSafe, Executor, raw_sql};
    let texts = [
        "BEGIN".to_owned(),
        "BEGIN; SET LOCAL \"tenancy\".\"tenant_id\" = E'1'".to_owned(),
        "BEGIN; SET LOCAL search_path = \"tenant_1\", public".to_owned(),
        format!(
            "BEGIN; SET LOCAL search_path = \"tenant_1\", public; \
             LOCK TABLE \"tenant_1\".\"{marker}\" IN ACCESS SHARE MODE"
        ),
        "BEGIN; SET LOCAL search_path = \"tenant_1\", public; SELECT E'tenant_1'::regnamespace"
            .to_owned(),
    ];
    let mut pools = Vec::new();
    for _ in &texts {
        pools.push(pool(url, None).await.get_postgres_connection_pool().clone());
    }
    let unit = |k: usize| {
        let (pool, text) = (&pools[k], &texts[k]);
        async move {
            let mut conn = pool.acquire().await.unwrap();
            conn.execute(raw_sql(AssertSqlSafe(text.clone())))
                .await
                .unwrap();
            let row =
                sea_orm::sqlx::query("SELECT id, total_cents FROM tenant_1.orders WHERE id = $1")
                    .bind(black_box(id))
                    .fetch_optional(&mut *conn)
                    .await
                    .unwrap();
            black_box(row.expect("row"));
            conn.execute(raw_sql(AssertSqlSafe("COMMIT")))
                .await
                .unwrap();
        }
    };
    let mut spent = vec![Spent::default(); texts.len()];
    let mut ratios: Vec<Vec<f64>> = vec![Vec::new(); texts.len()];
    for round in 0..ROUNDS {
        let mut walls = vec![Duration::ZERO; texts.len()];
        for j in 0..texts.len() {
            let k = (j + round) % texts.len();
            walls[k] = spent[k]
                .time(async {
                    for _ in 0..UNITS_PER_BATCH {
                        unit(k).await;
                    }
                })
                .await;
        }
        for k in 0..texts.len() {
            ratios[k].push(walls[k].as_secs_f64() / walls[0].as_secs_f64());
        }
    }
    println!();
    println!(
        "| `BEGIN` text (sqlx alone) | wall µs per unit | ratio to `BEGIN` (median) | client CPU µs | server CPU µs |"
    );
    println!("|---|---:|---:|---:|---:|");
    for (k, text) in texts.iter().enumerate() {
        ratios[k].sort_by(f64::total_cmp);
        let (wall, client, server) = spent[k].per_unit();
        println!(
            "| `{text}` | {wall:.1} | {:.3} | {client:.1} | {server:.1} |",
            ratios[k][ROUNDS / 2],
        );
    }
}

async fn pool(url: &str, user: Option<&str>) -> DatabaseConnection {
    scoped_pool(url, user, None).await
}

/// A pool of 4 connections, as `user`, each started with `setting` (`name=value`, a
/// PostgreSQL startup option) when given.
async fn scoped_pool(url: &str, user: Option<&str>, setting: Option<&str>) -> DatabaseConnection {
    let mut url = url::Url::parse(url).unwrap();
    if let Some(user) = user {
        url.set_username(user).unwrap();
    }
    if let Some(setting) = setting {
        url.query_pairs_mut()
            .append_pair("options", &format!("-c {setting}"));
    }
    let mut options = ConnectOptions::new(url.to_string());
    options.max_connections(4).sqlx_logging(true);
    Database::connect(options).await.unwrap()
}

fn main() {
    let measuring = std::env::args().any(|a| a == "--bench");
    let statements = Statements::default();
    let subscriber = tracing_subscriber::registry().with(statements.clone());
    tracing::subscriber::set_global_default(subscriber).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // Row level and RLS share one database (RLS through a role that owns nothing).
        let mut shared = TestDb::for_flavor(Backend::Postgres, Flavor::RowLevel)
            .await
            .expect("TENANCY_PG_URL or the local server");
        let url = shared.url.clone().unwrap();
        let row_level_pool = pool(&url, None).await;
        let row_level: Tenancy<i64> = Tenancy::builder(row_level_pool.clone()).build().unwrap();
        let ids = fill(&row_level.tenant(1).await.unwrap()).await;
        fill(&row_level.tenant(2).await.unwrap()).await;
        shared.enable_rls().await;
        let role = shared.create_app_role().await;
        let rls: Tenancy<i64> = Tenancy::builder(pool(&url, Some(&role)).await)
            .row_level_security(RLS_SETTING)
            .build()
            .unwrap();

        // Schema per tenant, in its own database.
        let schemas = TestDb::create(Backend::Postgres).await.unwrap();
        schemas
            .conn
            .get_schema_builder()
            .register(tenancy_tests::entities::plan::Entity)
            .apply(&schemas.conn)
            .await
            .unwrap();
        let schema_pool = pool(schemas.url.as_deref().unwrap(), None).await;
        let by_schema: Tenancy<i64> = Tenancy::builder(schema_pool.clone())
            .schema_per_tenant("tenant_")
            .build()
            .unwrap();
        // The same schemas, for an application whose tenant schemas never differ: no shape
        // to read or check. A pool of its own, as every case has: on the shaped case's
        // connections, its units would wait behind and share statements with that case's.
        let unshaped_pool = pool(schemas.url.as_deref().unwrap(), None).await;
        let by_schema_unshaped: Tenancy<i64> = Tenancy::builder(unshaped_pool)
            .schema_per_tenant("tenant_")
            .schema_version_table(None)
            .build()
            .unwrap();
        for tenant in [1, 2] {
            by_schema.create_tenant_schema::<Migrator>(tenant).await.unwrap();
        }
        let schema_ids = fill(&by_schema.tenant(1).await.unwrap()).await;
        fill(&by_schema.tenant(2).await.unwrap()).await;

        // Database per tenant, with a catalog.
        let catalog = TestDb::create(Backend::Postgres).await.unwrap();
        let registry = TenantDatabases::new(catalog.conn.clone());
        registry.install().await.unwrap();
        let prefix = format!("tdb_{}_", &uuid::Uuid::new_v4().simple().to_string()[..10]);
        let by_database: Tenancy<i64> = Tenancy::builder(catalog.conn.clone())
            .database_per_tenant(registry)
            .database_template(DatabaseTemplate::Server {
                server_url: catalog.url.clone().unwrap(),
                prefix,
            })
            .build()
            .unwrap();
        for tenant in [1, 2] {
            by_database
                .create_tenant_database::<DatabaseMigrator>(tenant)
                .await
                .unwrap();
        }
        let database_ids = fill(&by_database.tenant(1).await.unwrap()).await;
        fill(&by_database.tenant(2).await.unwrap()).await;
        shared.conn.execute_unprepared("ANALYZE").await.unwrap();

        // The floors of the isolations with a set-up: tenant 1's connections.
        let rls_floor = scoped_pool(&url, Some(&role), Some(&format!("{RLS_SETTING}=1"))).await;
        let schema_floor = scoped_pool(
            schemas.url.as_deref().unwrap(),
            None,
            Some("search_path=tenant_1,public"),
        )
        .await;
        let handle = |db: TenantDb<i64>| On::Handle(db);
        let cases = [
            Case { name: "row level", on: handle(row_level.tenant(1).await.unwrap()), ids: ids.clone(), floor: None },
            Case { name: "row level + RLS", on: handle(rls.tenant(1).await.unwrap()), ids: ids.clone(), floor: Some(6) },
            Case {
                name: "schema per tenant",
                on: handle(by_schema.tenant(1).await.unwrap()),
                ids: schema_ids.clone(),
                floor: Some(7),
            },
            Case {
                name: "schema per tenant, no shape",
                on: handle(by_schema_unshaped.tenant(1).await.unwrap()),
                ids: schema_ids.clone(),
                floor: Some(7),
            },
            Case {
                name: "database per tenant (warm pool)",
                on: handle(by_database.tenant(1).await.unwrap()),
                ids: database_ids,
                floor: None,
            },
            Case { name: "hand-written SeaORM (row level)", on: On::SeaOrm(row_level_pool), ids: ids.clone(), floor: None },
            Case {
                name: "hand-written SeaORM, RLS setting per connection (floor of RLS)",
                on: On::Scoped(rls_floor, true),
                ids,
                floor: None,
            },
            Case {
                name: "hand-written SeaORM, schema per connection (floor of a schema)",
                on: On::Scoped(schema_floor, false),
                ids: schema_ids.clone(),
                floor: None,
            },
        ];

        if measuring {
            println!("| strategy | lookups per unit | statements per unit | median µs per unit | ratio to row level (median of {ROUNDS} rounds) | 10th–90th pct | ratio to its floor | 10th–90th pct |");
            println!("|---|---:|---:|---:|---:|---:|---:|---:|");
        }
        let mut one_lookup: Vec<(&str, Spent)> = Vec::new();
        // 0: one lookup on the pool handle, no transaction of the caller's.
        for lookups in [1, 10, 0] {
            // Statements per unit, counted once per case.
            let mut per_unit = Vec::new();
            statements.counting.store(true, Ordering::Relaxed);
            for case in &cases {
                unit(case, lookups).await;
                let before = statements.seen.load(Ordering::Relaxed);
                unit(case, lookups).await;
                per_unit.push(statements.seen.load(Ordering::Relaxed) - before);
            }
            statements.counting.store(false, Ordering::Relaxed);
            if !measuring {
                continue;
            }
            let mut times: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
            let mut ratios: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
            let mut to_floor: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
            // Client and server CPU over all rounds, per case.
            let mut spent = vec![Spent::default(); cases.len()];
            for round in 0..ROUNDS {
                let mut round_times = vec![Duration::ZERO; cases.len()];
                // Rotate the order each round, so no case always goes first.
                for k in 0..cases.len() {
                    let i = (k + round) % cases.len();
                    // Not reported: hand-written SeaORM has no pool-handle unit to compare.
                    if lookups == 0 && !matches!(cases[i].on, On::Handle(_)) {
                        continue;
                    }
                    round_times[i] = spent[i]
                        .time(async {
                            for _ in 0..UNITS_PER_BATCH {
                                unit(&cases[i], lookups).await;
                            }
                        })
                        .await;
                }
                for i in 0..cases.len() {
                    times[i].push(round_times[i].as_secs_f64() * 1e6 / UNITS_PER_BATCH as f64);
                    ratios[i].push(round_times[i].as_secs_f64() / round_times[0].as_secs_f64());
                    if let Some(floor) = cases[i].floor.filter(|_| lookups > 0) {
                        to_floor[i].push(
                            round_times[i].as_secs_f64() / round_times[floor].as_secs_f64(),
                        );
                    }
                }
            }
            for (i, case) in cases.iter().enumerate() {
                if lookups == 0 && !matches!(case.on, On::Handle(_)) {
                    continue;
                }
                times[i].sort_by(f64::total_cmp);
                ratios[i].sort_by(f64::total_cmp);
                to_floor[i].sort_by(f64::total_cmp);
                let pct = |v: &[f64], p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
                let lookups = match lookups {
                    0 => "1, no transaction".to_owned(),
                    n => n.to_string(),
                };
                let floor = match to_floor[i].is_empty() {
                    true => "| |".to_owned(),
                    false => format!(
                        "| {:.3} | {:.3}–{:.3} |",
                        pct(&to_floor[i], 0.5),
                        pct(&to_floor[i], 0.1),
                        pct(&to_floor[i], 0.9)
                    ),
                };
                println!(
                    "| {} | {lookups} | {} | {:.0} | {:.3} | {:.3}–{:.3} {floor}",
                    case.name,
                    per_unit[i],
                    pct(&times[i], 0.5),
                    pct(&ratios[i], 0.5),
                    pct(&ratios[i], 0.1),
                    pct(&ratios[i], 0.9),
                );
            }
            if lookups == 1 {
                one_lookup = cases.iter().map(|c| c.name).zip(spent).collect();
            }
        }
        // Where a one-lookup unit's time goes: CPU of the client and of the server per
        // unit, and the rest of the wall time (waiting: the socket, the scheduler).
        if measuring {
            println!();
            println!("| strategy (1 lookup a unit) | wall µs per unit | client CPU µs | server CPU µs | neither µs |");
            println!("|---|---:|---:|---:|---:|");
            for (name, spent) in &one_lookup {
                let (wall, client, server) = spent.per_unit();
                println!(
                    "| {name} | {wall:.1} | {client:.1} | {server:.1} | {:.1} |",
                    wall - client - server
                );
            }
        }
        drop(cases);
        if measuring {
            let marker: String = schemas
                .conn
                .query_one_raw(sea_orm::Statement::from_string(
                    sea_orm::DbBackend::Postgres,
                    "SELECT relname::text AS name FROM pg_class WHERE relnamespace = \
                     'tenant_1'::regnamespace AND relname LIKE 'tenancy\\_shape\\_%'",
                ))
                .await
                .unwrap()
                .expect("tenant 1's marker")
                .try_get("", "name")
                .unwrap();
            anatomy(schemas.url.as_deref().unwrap(), &marker, schema_ids[0]).await;
        }
        for tenant in [1, 2] {
            by_database.drop_tenant_database(tenant).await.unwrap();
        }
        catalog.drop_db().await;
        schemas.drop_db().await;
        shared.drop_db().await;
    });
}
