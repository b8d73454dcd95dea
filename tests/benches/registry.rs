//! How database per tenant grows with the number of registered tenants: with 100, 1,000
//! and 10,000 tenants in a catalog (`TenantDatabases`), on the local PostgreSQL, the
//! registry lookup alone, a cold tenant's first query (its pool not open yet: lookup, a
//! new pool and connection, the query) and a warm tenant's query (its pool open), then a
//! sweep over every tenant through a capped pool cache with its peak open pools, server
//! connections and process memory. Printed: medians (and 90th percentiles) per size, and
//! one row per size of the sweep.
//!
//! ```text
//! cargo bench -p tenancy-tests --bench registry                 # 100, 1,000, 10,000 tenants
//! cargo bench -p tenancy-tests --bench registry -- --quick      # 20, 100, 1,000 tenants
//! cargo test -p tenancy-tests --bench registry -- --quick       # CI: checks bounds, not times
//! ```
//!
//! `REGISTRY_SIZES` (comma-separated tenant counts), `REGISTRY_ROUNDS` and
//! `REGISTRY_POOL_CAP` override the sizes, the rounds (15, quick 5) and the pool cap (50,
//! quick 20, to leave the shared test server's connections to others).
//!
//! Each size has a catalog database of its own, so the sizes coexist and every round
//! visits each of them, in an order that rotates from round to round. Every tenant is
//! registered through the public `TenantDatabases::register` (what `create_tenant_database`
//! does last), at the URL of one of 4 real databases made for the run: the registry maps a
//! tenant to a URL and nothing more, and the pool cache is keyed by tenant, so each tenant
//! still gets a pool and a connection of its own; only the server is spared 10,000
//! `CREATE DATABASE`s. The catalog is reached through one pool without a test query before
//! each checkout, as the library opens its own; the lookup is then one prepared `SELECT`
//! by primary key, whose plan is printed per size.
//!
//! Without `--bench` (a debug build, as CI runs it) the `--quick` sizes run and the bench
//! asserts what does not depend on timing: the catalog table has its unique key on the
//! tenant id and the lookup's plan uses it from 1,000 tenants on (a smaller table may be
//! read whole, a page or two), every lookup finds its tenant, each cold request opens one
//! pool and a warm one none, the open pools reach the cap (or the tenant count) and never
//! pass it, the tenant databases' server connections stay within twice the cap (an
//! evicted pool's connection closes as its last handle goes), and the process memory
//! after sweeping the largest size is within 32 MiB of that after the smallest.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::panic,
    clippy::cast_precision_loss,
    missing_docs
)]

use futures_util::StreamExt;
use sea_orm::{
    ConnectionTrait, Database, DatabaseConnection, DbBackend, EntityTrait, QuerySelect, QueryTrait,
    Statement,
};
use std::time::Instant;
use tenancy_sea::Tenancy;
use tenancy_sea::catalog::{TenantDatabases, tenant_entry};
use tenancy_tests::entities::note_i32;
use tenancy_tests::{Backend, TestDb};

const FULL_SIZES: [i32; 3] = [100, 1_000, 10_000];
const QUICK_SIZES: [i32; 3] = [20, 100, 1_000];
/// The real databases every tenant is registered at.
const REAL_DATABASES: usize = 4;
/// Per size and round: cold tenants, warm requests, registry lookups.
const COLD: usize = 20;
const WARM: usize = 100;
const LOOKUPS: usize = 100;
/// Tenants the warm requests go to (their pools open).
const WARM_TENANTS: usize = 10;

fn env_or<V: std::str::FromStr>(name: &str, default: V) -> V {
    std::env::var(name).map_or(default, |v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{name}: not a number: {v}"))
    })
}

/// A value of `/proc/self/status` (`VmRSS`, `VmHWM`), in MiB.
fn status_mib(field: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// The `n`th of a scrambled order of the tenants `1..=size`, from `seed`: distinct for
/// `n < size` as long as the stride is coprime to the size (checked).
fn scrambled(size: i32, seed: usize, n: usize) -> i32 {
    const STRIDE: u64 = 7_919;
    let size = u64::try_from(size).unwrap();
    assert_ne!(size % STRIDE, 0, "sizes must not be multiples of {STRIDE}");
    i32::try_from(1 + ((seed as u64 + n as u64) * STRIDE) % size).unwrap()
}

fn percentile(xs: &mut [f64], p: usize) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[(xs.len() - 1) * p / 100]
}

/// A catalog of `size` registered tenants, and its registry's connection.
struct Catalog {
    size: i32,
    db: TestDb,
    conn: DatabaseConnection,
    plan: String,
}

impl Catalog {
    async fn new(size: i32, targets: &[TestDb]) -> Catalog {
        let db = TestDb::create(Backend::Postgres)
            .await
            .expect("TENANCY_PG_URL or the local server");
        let mut options = tenancy_tests::pool(db.url.clone().unwrap());
        options
            .max_connections(4)
            .test_before_acquire(false)
            .sqlx_logging(false);
        let conn = Database::connect(options).await.unwrap();
        let registry = TenantDatabases::new(conn.clone());
        registry.install().await.unwrap();
        let mut tenants = futures_util::stream::iter(1..=size)
            .map(|id| {
                let registry = &registry;
                let url = targets[usize::try_from(id).unwrap() % targets.len()]
                    .url
                    .clone()
                    .unwrap();
                async move { registry.register(&id, &url).await }
            })
            .buffer_unordered(4);
        while let Some(registered) = tenants.next().await {
            registered.unwrap();
        }
        drop(tenants);
        conn.execute_unprepared("VACUUM ANALYZE tenancy_tenants")
            .await
            .unwrap();
        // The lookup's statement as the registry sends it, explained with its parameters.
        let lookup = tenant_entry::Entity::find_by_id(size.to_string())
            .limit(1)
            .build(DbBackend::Postgres);
        let plan = conn
            .query_all_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                format!("EXPLAIN {}", lookup.sql),
                lookup.values.unwrap().0,
            ))
            .await
            .unwrap()
            .into_iter()
            .map(|row| row.try_get_by_index::<String>(0).unwrap())
            .collect::<Vec<_>>()
            .join(" / ");
        Catalog {
            size,
            db,
            conn,
            plan,
        }
    }

    /// The node of the lookup's plan that reads the table (`Index Scan using ...`).
    fn scan(&self) -> &str {
        self.plan
            .split(" / ")
            .find(|node| node.contains("Scan"))
            .unwrap_or(&self.plan)
            .trim_start_matches([' ', '-', '>'])
            .split("  (")
            .next()
            .unwrap_or_default()
    }

    /// A tenancy over this catalog with no pool open.
    async fn tenancy(&self, cap: usize) -> Tenancy<i32> {
        let tenancy: Tenancy<i32> = Tenancy::builder(self.conn.clone())
            .database_per_tenant(TenantDatabases::new(self.conn.clone()))
            .max_open_pools(cap)
            .connections_per_tenant(1)
            .build()
            .unwrap();
        tenancy.verify().await.unwrap();
        tenancy
    }
}

/// One request of `tenant`: its handle, then one query. Its time, in ms.
async fn request(tenancy: &Tenancy<i32>, tenant: i32) -> f64 {
    let start = Instant::now();
    let db = tenancy.tenant(tenant).await.unwrap();
    let rows = db.find::<note_i32::Entity>().count().await.unwrap();
    let elapsed = start.elapsed().as_secs_f64() * 1000.0;
    assert_eq!(rows, 0);
    elapsed
}

#[derive(Default)]
struct Samples {
    lookup_us: Vec<f64>,
    cold_ms: Vec<f64>,
    warm_us: Vec<f64>,
}

/// One round at one size: cold tenants, warm requests, lookups.
async fn round(catalog: &Catalog, cap: usize, seed: usize, samples: &mut Samples) {
    let tenancy = catalog.tenancy(cap).await;
    let cold = COLD.min(usize::try_from(catalog.size).unwrap()).min(cap);
    let tenants: Vec<i32> = (0..cold)
        .map(|n| scrambled(catalog.size, seed, n))
        .collect();
    for (n, &tenant) in tenants.iter().enumerate() {
        samples.cold_ms.push(request(&tenancy, tenant).await);
        assert_eq!(tenancy.open_pools(), n + 1, "tenant {tenant} was not cold");
    }
    let warm = &tenants[..WARM_TENANTS.min(tenants.len())];
    for n in 0..WARM {
        let tenant = warm[n % warm.len()];
        samples
            .warm_us
            .push(request(&tenancy, tenant).await * 1000.0);
    }
    assert_eq!(tenancy.open_pools(), cold, "a warm request opened a pool");
    drop(tenancy);
    let registry = TenantDatabases::new(catalog.conn.clone());
    let size = usize::try_from(catalog.size).unwrap();
    for n in 0..LOOKUPS {
        let tenant = scrambled(catalog.size, seed + 1_000, n % size);
        let start = Instant::now();
        let url = registry.url(&tenant).await.unwrap();
        samples.lookup_us.push(start.elapsed().as_secs_f64() * 1e6);
        assert!(url.is_some(), "tenant {tenant} not found");
    }
}

/// What a sweep over every tenant of a catalog saw.
struct Sweep {
    requests: usize,
    peak_pools: usize,
    /// Pools the cache dropped to stay under its cap.
    evicted: usize,
    peak_connections: i64,
    rss_before: f64,
    rss_after: f64,
    rss_peak: f64,
    hwm: f64,
    ms_per_request: f64,
}

/// Every tenant of `catalog` once, in a scrambled order, through one tenancy.
async fn sweep(catalog: &Catalog, cap: usize, admin: &DatabaseConnection, targets: &str) -> Sweep {
    let count_connections = Statement::from_string(
        DbBackend::Postgres,
        format!("SELECT count(*) FROM pg_stat_activity WHERE datname IN ({targets})"),
    );
    let connections = || async {
        admin
            .query_one_raw(count_connections.clone())
            .await
            .unwrap()
            .unwrap()
            .try_get_by_index::<i64>(0)
            .unwrap()
    };
    // The tenant pools of the rounds before close as their tenancy goes: wait for them,
    // so that every connection counted is this sweep's.
    let mut baseline = connections().await;
    for _ in 0..200 {
        if baseline == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        baseline = connections().await;
    }
    let tenancy = catalog.tenancy(cap).await;
    let rss_before = status_mib("VmRSS");
    let (mut peak_pools, mut peak_connections, mut rss_peak) = (0, 0, rss_before);
    let requests = usize::try_from(catalog.size).unwrap();
    let start = Instant::now();
    for n in 0..requests {
        request(&tenancy, scrambled(catalog.size, 7, n)).await;
        peak_pools = Ord::max(peak_pools, tenancy.open_pools());
        if n % 25 == 24 {
            peak_connections = Ord::max(peak_connections, connections().await - baseline);
            rss_peak = f64::max(rss_peak, status_mib("VmRSS"));
        }
    }
    let ms_per_request = start.elapsed().as_secs_f64() * 1000.0 / requests as f64;
    peak_connections = Ord::max(peak_connections, connections().await - baseline);
    let rss_after = status_mib("VmRSS");
    let evicted = requests - tenancy.open_pools();
    drop(tenancy);
    Sweep {
        requests,
        peak_pools,
        evicted,
        peak_connections,
        rss_before,
        rss_after,
        rss_peak: f64::max(rss_peak, rss_after),
        hwm: status_mib("VmHWM"),
        ms_per_request,
    }
}

fn main() {
    let measuring = std::env::args().any(|a| a == "--bench");
    let full = measuring && !std::env::args().any(|a| a == "--quick");
    let sizes: Vec<i32> = match std::env::var("REGISTRY_SIZES") {
        Ok(list) => list
            .split(',')
            .map(|s| {
                s.trim()
                    .replace('_', "")
                    .parse()
                    .expect("REGISTRY_SIZES: 100,1000")
            })
            .collect(),
        Err(_) if full => FULL_SIZES.to_vec(),
        Err(_) => QUICK_SIZES.to_vec(),
    };
    let rounds: usize = env_or("REGISTRY_ROUNDS", if full { 15 } else { 5 });
    let cap: usize = env_or("REGISTRY_POOL_CAP", if full { 50 } else { 20 });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // The real databases, each with the table the requests read.
        let mut targets = Vec::new();
        for _ in 0..REAL_DATABASES {
            let db = TestDb::create(Backend::Postgres)
                .await
                .expect("TENANCY_PG_URL or the local server");
            let schema = sea_orm::Schema::new(DbBackend::Postgres);
            db.conn
                .execute(&schema.create_table_from_entity(note_i32::Entity))
                .await
                .unwrap();
            // Its own pool closed: the tenant pools' connections are then the only ones.
            let _ = db.conn.clone().close().await;
            targets.push(db);
        }
        let target_names = targets
            .iter()
            .map(|db| {
                let url = url::Url::parse(db.url.as_deref().unwrap()).unwrap();
                format!("'{}'", url.path().trim_start_matches('/'))
            })
            .collect::<Vec<_>>()
            .join(", ");
        let mut catalogs = Vec::new();
        let registering = Instant::now();
        for &size in &sizes {
            catalogs.push(Catalog::new(size, &targets).await);
        }
        let registering = registering.elapsed();
        // The catalog table's primary key, which the lookup goes through.
        let key: String = catalogs[0]
            .conn
            .query_one_raw(Statement::from_string(
                DbBackend::Postgres,
                "SELECT indexdef FROM pg_indexes WHERE tablename = 'tenancy_tenants' \
                 AND indexdef LIKE 'CREATE UNIQUE INDEX%(tenant_id)'",
            ))
            .await
            .unwrap()
            .expect("a unique index on tenancy_tenants (tenant_id)")
            .try_get_by_index(0)
            .unwrap();

        // Interleaved rounds: every size each round, the order rotating.
        let mut samples: Vec<Samples> = sizes.iter().map(|_| Samples::default()).collect();
        for r in 0..rounds {
            for k in 0..catalogs.len() {
                let i = (r + k) % catalogs.len();
                round(&catalogs[i], cap, r * COLD, &mut samples[i]).await;
            }
        }

        // The sweeps, smallest size first, so the peak of memory shows what each adds.
        let mut sweeps = Vec::new();
        for catalog in &catalogs {
            sweeps.push(sweep(catalog, cap, &catalogs[0].db.conn, &target_names).await);
        }

        println!(
            "Catalog key: `{key}`. {} tenants registered in {:.1} s. Pool cap {cap}, 1 connection per tenant pool, {rounds} interleaved rounds.",
            sizes.iter().map(|&s| i64::from(s)).sum::<i64>(),
            registering.as_secs_f64()
        );
        println!();
        println!(
            "| registered tenants | lookup plan | registry lookup, median (p90) | cold tenant's first query, median (p90) | warm tenant's query, median (p90) |"
        );
        println!("|---:|---|---:|---:|---:|");
        let mut lookups = Vec::new();
        for (catalog, s) in catalogs.iter().zip(&mut samples) {
            let lookup = percentile(&mut s.lookup_us, 50);
            lookups.push(lookup);
            println!(
                "| {} | `{}` | {:.0} µs ({:.0}) | {:.2} ms ({:.2}) | {:.0} µs ({:.0}) |",
                catalog.size,
                catalog.scan(),
                lookup,
                percentile(&mut s.lookup_us, 90),
                percentile(&mut s.cold_ms, 50),
                percentile(&mut s.cold_ms, 90),
                percentile(&mut s.warm_us, 50),
                percentile(&mut s.warm_us, 90),
            );
        }
        println!();
        println!(
            "Registry lookup, largest size / smallest: {:.2}.",
            lookups.last().unwrap() / lookups.first().unwrap()
        );
        println!();
        println!(
            "| registered tenants | pool cap | requests (each tenant once) | pools evicted | peak open pools | peak server connections | VmRSS before → after | peak VmRSS | VmHWM so far | ms a request |"
        );
        println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        for (catalog, s) in catalogs.iter().zip(&sweeps) {
            println!(
                "| {} | {cap} | {} | {} | {} | {} | {:.1} → {:.1} MiB | {:.1} MiB | {:.1} MiB | {:.2} |",
                catalog.size,
                s.requests,
                s.evicted,
                s.peak_pools,
                s.peak_connections,
                s.rss_before,
                s.rss_after,
                s.rss_peak,
                s.hwm,
                s.ms_per_request,
            );
        }

        // What holds whatever the timing.
        for catalog in &catalogs {
            assert!(
                catalog.plan.contains("tenancy_tenants_pkey") || catalog.size < 1_000,
                "the lookup at {} tenants does not use the key: {}",
                catalog.size,
                catalog.plan
            );
        }
        for (catalog, s) in catalogs.iter().zip(&sweeps) {
            let size = usize::try_from(catalog.size).unwrap();
            assert_eq!(s.peak_pools, size.min(cap), "open pools at {size} tenants");
            assert!(
                s.peak_connections <= 2 * i64::try_from(cap).unwrap(),
                "{} server connections at {size} tenants, cap {cap}",
                s.peak_connections
            );
        }
        let growth = sweeps.last().unwrap().rss_after - sweeps.first().unwrap().rss_after;
        assert!(
            growth < 32.0,
            "memory grew {growth:.1} MiB from the smallest size to the largest"
        );

        for catalog in catalogs {
            let _ = catalog.conn.close().await;
            catalog.db.drop_db().await;
        }
        for db in targets {
            db.drop_db().await;
        }
    });
}
