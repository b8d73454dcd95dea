//! What the tenant layer adds to a request: the same handler behind `TenantLayer` (the
//! tenant resolved from `X-Tenant-Id`, validated, the handle made and set as current) and
//! behind a route that parses the header and makes the handle by hand, in interleaved
//! rounds so that drift hits both sides alike. The requests go through the axum router
//! in process (no socket, whose cost would drown the difference).
//!
//! ```text
//! cargo bench -p tenancy-tests --bench web
//! ```
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    missing_docs
)]

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Request, StatusCode};
use axum::routing::get;
use sea_orm::{ConnectionTrait, Database, Schema, Set};
use std::time::{Duration, Instant};
use tenancy_sea::web::{Header, TenantLayer};
use tenancy_sea::{Tenancy, TenantDb};
use tower_service::Service;

mod item {
    use sea_orm::entity::prelude::*;
    use tenancy_sea::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, TenantScoped)]
    #[sea_orm(table_name = "bench_items")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        #[tenant_id]
        pub tenant_id: i64,
        pub name: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

const ROUNDS: usize = 101;
const BATCH: usize = 200;
const TENANTS: i64 = 4;

/// The handler both sides share: a tenant's handle in, a short answer out; with `query`,
/// it also reads the tenant's 10 rows.
async fn handler(db: TenantDb<i64>, query: bool) -> String {
    if query {
        let rows = db.find::<item::Entity>().all().await.unwrap();
        format!("{}", rows.len())
    } else {
        format!("{}", db.tenant_id())
    }
}

/// The handle made by hand from the same header: parse, then `Tenancy::tenant`.
async fn by_hand(tenancy: &Tenancy<i64>, headers: &HeaderMap) -> Result<TenantDb<i64>, StatusCode> {
    let id = headers
        .get("x-tenant-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i64>().ok())
        .ok_or(StatusCode::BAD_REQUEST)?;
    tenancy
        .tenant(id)
        .await
        .map_err(|_| StatusCode::BAD_REQUEST)
}

fn routers(tenancy: &Tenancy<i64>) -> (Router, Router) {
    let layered = Router::new()
        .route("/plain", get(|db: TenantDb<i64>| handler(db, false)))
        .route("/query", get(|db: TenantDb<i64>| handler(db, true)))
        .layer(TenantLayer::new(tenancy.clone(), Header::default()));
    let manual = Router::new()
        .route(
            "/plain",
            get(|State(t): State<Tenancy<i64>>, h: HeaderMap| async move {
                Ok::<_, StatusCode>(handler(by_hand(&t, &h).await?, false).await)
            }),
        )
        .route(
            "/query",
            get(|State(t): State<Tenancy<i64>>, h: HeaderMap| async move {
                Ok::<_, StatusCode>(handler(by_hand(&t, &h).await?, true).await)
            }),
        )
        .with_state(tenancy.clone());
    (layered, manual)
}

async fn batch(router: &mut Router, path: &str) -> Duration {
    let start = Instant::now();
    for n in 0..BATCH {
        let request = Request::get(path)
            .header("x-tenant-id", (n as i64 % TENANTS + 1).to_string())
            .body(Body::empty())
            .unwrap();
        std::future::poll_fn(|cx| Service::<Request<Body>>::poll_ready(router, cx))
            .await
            .unwrap();
        let response = router.call(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    start.elapsed()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Median per-request time of each side and of the difference, over interleaved rounds.
async fn measure(label: &str, path: &str, layered: &mut Router, manual: &mut Router) {
    for _ in 0..3 {
        batch(layered, path).await;
        batch(manual, path).await;
    }
    let per_request = |d: Duration| d.as_secs_f64() * 1e6 / BATCH as f64;
    let (mut with_layer, mut without, mut extra) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let (a, b) = if round % 2 == 0 {
            let a = batch(layered, path).await;
            (a, batch(manual, path).await)
        } else {
            let b = batch(manual, path).await;
            (batch(layered, path).await, b)
        };
        with_layer.push(per_request(a));
        without.push(per_request(b));
        extra.push(per_request(a) - per_request(b));
    }
    for v in [&mut with_layer, &mut without, &mut extra] {
        v.sort_by(f64::total_cmp);
    }
    println!(
        "| {label} | {:.2} | {:.2} | {:+.2} | {:+.2} to {:+.2} |",
        percentile(&without, 0.5),
        percentile(&with_layer, 0.5),
        percentile(&extra, 0.5),
        percentile(&extra, 0.1),
        percentile(&extra, 0.9),
    );
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let conn = Database::connect("sqlite::memory:").await.unwrap();
        let schema = Schema::new(conn.get_database_backend());
        conn.execute(&schema.create_table_from_entity(item::Entity))
            .await
            .unwrap();
        let tenancy: Tenancy<i64> = Tenancy::builder(conn).build().unwrap();
        for tenant in 1..=TENANTS {
            let db = tenancy.tenant(tenant).await.unwrap();
            for n in 0..10 {
                db.insert(item::ActiveModel {
                    name: Set(format!("item {n}")),
                    ..Default::default()
                })
                .await
                .unwrap();
            }
        }
        let (mut layered, mut manual) = routers(&tenancy);
        println!("{ROUNDS} rounds of {BATCH} requests per side, interleaved; µs per request");
        println!();
        println!("| handler | handle by hand | through TenantLayer | layer adds (median) | 10th–90th pct |");
        println!("|---|---:|---:|---:|---:|");
        measure("no query", "/plain", &mut layered, &mut manual).await;
        measure("reads 10 rows (SQLite in memory)", "/query", &mut layered, &mut manual).await;
    });
}
