//! Citus against the library's own sharding (two PostgreSQL databases, hash-routed) and
//! one PostgreSQL, the same rows on each: a tenant point read, a tenant scan and a
//! cross-tenant top-N, through the library on every side, in interleaved rounds (the
//! three sides in a rotating order), as ratios to one PostgreSQL per round.
//!
//! Needs `TENANCY_CITUS_URL` (a coordinator, e.g. from `scripts/citus-cluster`) and
//! `TENANCY_PG_URL`:
//!
//! ```text
//! TENANCY_CITUS_URL=postgres://postgres@127.0.0.1:5433/citus \
//! TENANCY_PG_URL=postgres://postgres@127.0.0.1:5432/test \
//! cargo bench -p tenancy-tests --bench citus
//! ```
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::panic,
    clippy::cast_precision_loss,
    missing_docs
)]

use sea_orm::{ConnectionTrait, DatabaseConnection, EntityTrait, QueryOrder, QuerySelect, Set};
use std::hint::black_box;
use std::time::{Duration, Instant};
use tenancy_sea::{HashRouter, ShardId, Tenancy, Topology, citus};
use tenancy_tests::{Backend, TestDb};

/// Tenant orders keyed by `(tenant_id, id)`, as Citus needs (the same table everywhere).
mod order {
    use sea_orm::entity::prelude::*;
    use tenancy_sea::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, TenantScoped)]
    #[sea_orm(table_name = "bench_orders")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        #[tenant_id]
        pub tenant_id: i64,
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: i64,
        pub total_cents: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

const TENANTS: i64 = 64;
const ROWS: i64 = 100;
const ROUNDS: usize = 31;
const POINTS: usize = 100;
const SCANS: usize = 20;
const TOPS: usize = 10;
const ORDERS: [[usize; 3]; 6] = [
    [0, 1, 2],
    [0, 2, 1],
    [1, 0, 2],
    [1, 2, 0],
    [2, 0, 1],
    [2, 1, 0],
];
const SIDES: [&str; 3] = [
    "one PostgreSQL",
    "own sharding (2 PostgreSQL)",
    "Citus (2 workers)",
];

async fn make_table(conn: &DatabaseConnection) {
    conn.get_schema_builder()
        .register(order::Entity)
        .apply(conn)
        .await
        .unwrap();
}

async fn fill(tenancy: &Tenancy<i64>) {
    for tenant in 1..=TENANTS {
        let rows = (1..=ROWS).map(|id| order::ActiveModel {
            id: Set(id),
            total_cents: Set((id * 7_919 + tenant * 104_729) % 100_000),
            ..Default::default()
        });
        tenancy
            .tenant(tenant)
            .await
            .unwrap()
            .insert_many(rows)
            .await
            .unwrap();
    }
}

/// One side: its tenancy, and how it runs the cross-tenant top-N.
struct Side {
    tenancy: Tenancy<i64>,
}

impl Side {
    async fn point(&self, n: usize) {
        let tenant = (n as i64 % TENANTS) + 1;
        let id = (n as i64 * 37 % ROWS) + 1;
        let db = self.tenancy.tenant(tenant).await.unwrap();
        black_box(
            db.find_by_id::<order::Entity>(id)
                .one()
                .await
                .unwrap()
                .unwrap(),
        );
    }

    async fn scan(&self, n: usize) {
        let tenant = (n as i64 % TENANTS) + 1;
        let db = self.tenancy.tenant(tenant).await.unwrap();
        let rows = db.find::<order::Entity>().all().await.unwrap();
        assert_eq!(rows.len() as i64, ROWS);
    }

    async fn top(&self) {
        let rows = match self.tenancy.placement() {
            tenancy_sea::Placement::Sharded => self
                .tenancy
                .unscoped_across_shards()
                .unwrap()
                .find::<order::Entity>()
                .order_by_desc(order::Column::TotalCents)
                .order_by_asc(order::Column::TenantId)
                .order_by_asc(order::Column::Id)
                .limit(20)
                .all()
                .await
                .unwrap(),
            _ => order::Entity::find()
                .order_by_desc(order::Column::TotalCents)
                .order_by_asc(order::Column::TenantId)
                .order_by_asc(order::Column::Id)
                .limit(20)
                .all(self.tenancy.unscoped())
                .await
                .unwrap(),
        };
        assert_eq!(rows.len(), 20);
    }
}

async fn timed<F: std::future::Future<Output = ()>>(
    count: usize,
    mut f: impl FnMut(usize) -> F,
) -> Duration {
    let start = Instant::now();
    for n in 0..count {
        f(n).await;
    }
    start.elapsed() / count as u32
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

#[tokio::main]
async fn main() {
    let (Ok(citus_url), Some(_)) = (
        std::env::var("TENANCY_CITUS_URL"),
        std::env::var_os("TENANCY_PG_URL"),
    ) else {
        println!("SKIPPED: the Citus benchmark needs TENANCY_CITUS_URL and TENANCY_PG_URL");
        return;
    };
    // One PostgreSQL, and two for the library's sharding.
    let one = TestDb::create(Backend::Postgres).await.unwrap();
    let shard_dbs = [
        TestDb::create(Backend::Postgres).await.unwrap(),
        TestDb::create(Backend::Postgres).await.unwrap(),
    ];
    // Citus: a schema of the bench's own on the coordinator.
    let schema = format!("bench_citus_{}", std::process::id());
    let owner = tenancy_tests::citus_connection(&citus_url, None, Some(&schema), false).await;
    owner
        .execute_unprepared(&format!("CREATE SCHEMA {schema}"))
        .await
        .unwrap();

    let outcome = async {
        make_table(&one.conn).await;
        for db in &shard_dbs {
            make_table(&db.conn).await;
        }
        make_table(&owner).await;
        citus::distribute(&owner).await.unwrap();

        let one_conn =
            tenancy_tests::citus_connection(one.url.as_deref().unwrap(), None, None, false).await;
        let single = Tenancy::builder(one_conn).build().unwrap();
        let ids = [ShardId::new("s0"), ShardId::new("s1")];
        let mut shard_conns = Vec::new();
        for db in &shard_dbs {
            shard_conns.push(
                tenancy_tests::citus_connection(db.url.as_deref().unwrap(), None, None, false)
                    .await,
            );
        }
        let topology = Topology::new(
            HashRouter::new(ids.clone()),
            ids.into_iter().zip(shard_conns),
        )
        .unwrap();
        let sharded = Tenancy::builder(shard_dbs[0].conn.clone())
            .sharded(topology)
            .build()
            .unwrap();
        let tenants = tenancy_tests::citus_connection(&citus_url, None, Some(&schema), true).await;
        let on_citus = Tenancy::builder(tenants)
            .admin_connection(owner.clone())
            .citus()
            .build()
            .unwrap();
        on_citus.verify().await.unwrap();
        for tenancy in [&single, &sharded, &on_citus] {
            fill(tenancy).await;
        }
        let sides = [
            Side { tenancy: single },
            Side { tenancy: sharded },
            Side { tenancy: on_citus },
        ];
        // Warm every pool and plan.
        for side in &sides {
            timed(POINTS, |n| side.point(n)).await;
            timed(SCANS, |n| side.scan(n)).await;
            timed(TOPS, |_| side.top()).await;
        }
        let mut micros = [
            [Vec::new(), Vec::new(), Vec::new()],
            [Vec::new(), Vec::new(), Vec::new()],
            [Vec::new(), Vec::new(), Vec::new()],
        ];
        let mut ratios = [
            [Vec::new(), Vec::new()],
            [Vec::new(), Vec::new()],
            [Vec::new(), Vec::new()],
        ];
        for round in 0..ROUNDS {
            let mut this = [[0.0f64; 3]; 3];
            for &side in &ORDERS[round % ORDERS.len()] {
                let s = &sides[side];
                this[0][side] = timed(POINTS, |n| s.point(n + round)).await.as_secs_f64() * 1e6;
                this[1][side] = timed(SCANS, |n| s.scan(n + round)).await.as_secs_f64() * 1e6;
                this[2][side] = timed(TOPS, |_| s.top()).await.as_secs_f64() * 1e6;
            }
            for op in 0..3 {
                for side in 0..3 {
                    micros[op][side].push(this[op][side]);
                }
                ratios[op][0].push(this[op][1] / this[op][0]);
                ratios[op][1].push(this[op][2] / this[op][0]);
            }
        }
        println!("{ROUNDS} interleaved rounds; {TENANTS} tenants x {ROWS} rows on every side");
        println!(
            "| operation | {} µs | {} µs | {} µs | own sharding / one | Citus / one |",
            SIDES[0], SIDES[1], SIDES[2]
        );
        println!("|---|---:|---:|---:|---:|---:|");
        for (op, name) in [
            "tenant point read",
            "tenant scan (100 rows)",
            "cross-tenant top-20",
        ]
        .into_iter()
        .enumerate()
        {
            let [a, b, c] = &mut micros[op];
            let (a, b, c) = (median(a), median(b), median(c));
            let [r1, r2] = &mut ratios[op];
            println!(
                "| {name} | {a:.1} | {b:.1} | {c:.1} | {:.2} | {:.2} |",
                median(r1),
                median(r2)
            );
        }
    };
    let outcome =
        futures_util::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(outcome)).await;
    owner
        .execute_unprepared(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .unwrap();
    one.drop_db().await;
    for db in shard_dbs {
        db.drop_db().await;
    }
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}
