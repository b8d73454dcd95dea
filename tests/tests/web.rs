//! The web example's router, served on a random port and driven over HTTP: tenants cannot
//! reach each other's rows by id, unknown tenants are 404, malformed and look-alike ids
//! are 400, many tenants at once see 0 foreign rows, work a request spawns keeps its
//! tenant, and error bodies carry nothing internal.
//!
//! Run on row level (SQLite, PostgreSQL, MariaDB, and two SQLite or PostgreSQL shards),
//! schema per tenant (PostgreSQL) and a database per tenant (all three backends).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

#[path = "../../examples/web/app.rs"]
mod app;
mod web_support;

use app::migration::Migrator;
use axum::http::{Method, StatusCode};
use futures_util::future::join_all;
use serde_json::{Value, json};
use tenancy_sea::catalog::TenantDatabases;
use tenancy_sea::sea_orm_migration::MigratorTrait;
use tenancy_tests::{Flavor, Provisioned, TestDb, TestTenancy};
use web_support::{Client, Server};

/// The web example's router over `db`'s tenancy, with `tenants` provisioned (their schema
/// or database made and migrated; the shared tables made once otherwise).
async fn serve(db: &TestDb, tenants: &[i64]) -> (Server, Client, TestTenancy<i64>) {
    let tenancy = db.tenancy::<i64>();
    match db.flavor {
        Flavor::Schema => {
            for &tenant in tenants {
                tenancy
                    .create_tenant_schema::<Migrator>(tenant)
                    .await
                    .unwrap();
            }
        }
        Flavor::Database => {
            for &tenant in tenants {
                tenancy
                    .create_tenant_database::<Migrator>(tenant)
                    .await
                    .unwrap();
            }
        }
        _ => {
            for conn in std::iter::once(db).chain(&db.shards).map(|db| &db.conn) {
                Migrator::up(conn, None).await.unwrap();
            }
        }
    }
    let server = Server::start(app::router(tenancy.clone().into_inner())).await;
    let client = Client::of(&server);
    (server, client, tenancy)
}

/// Whether tenants exist only once provisioned (so an unknown one is a 404).
fn tenants_are_provisioned(db: &TestDb) -> bool {
    matches!(db.flavor, Flavor::Schema | Flavor::Database)
}

fn ids(rows: &Value) -> Vec<i64> {
    rows.as_array()
        .unwrap()
        .iter()
        .map(|row| row["id"].as_i64().unwrap())
        .collect()
}

/// The rows of a listing that belong to another tenant than `tenant`.
fn foreign_rows(rows: &Value, tenant: i64) -> usize {
    rows.as_array()
        .unwrap_or_else(|| panic!("a list: {rows}"))
        .iter()
        .filter(|row| row["tenant_id"].as_i64() != Some(tenant))
        .count()
}

async fn create_customer(client: &Client, tenant: i64, name: &str) -> Value {
    let reply = client
        .as_tenant(
            &tenant.to_string(),
            Method::POST,
            "/customers",
            Some(json!({ "name": name })),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    reply.json()
}

async fn cross_tenant_requests_are_refused(db: &TestDb) {
    let (_server, client, _tenancy) = serve(db, &[1, 2]).await;
    // Tenant 2 gets more rows, so one of its ids is no id of tenant 1 even where each
    // tenant counts its ids from 1 (a schema or database of its own).
    for name in ["Grace", "Hopper"] {
        create_customer(&client, 2, name).await;
    }
    let target = create_customer(&client, 2, "Lovelace").await["id"]
        .as_i64()
        .unwrap();
    let ada = create_customer(&client, 1, "Ada").await["id"]
        .as_i64()
        .unwrap();
    assert_ne!(ada, target);

    let path = format!("/customers/{target}");
    let read = client.as_tenant("1", Method::GET, &path, None).await;
    assert_eq!(
        (read.status, read.body.as_str()),
        (StatusCode::NOT_FOUND, "not found\n")
    );
    let renamed = client
        .as_tenant("1", Method::PUT, &path, Some(json!({ "name": "pwned" })))
        .await;
    assert_eq!(renamed.status, StatusCode::NOT_FOUND, "{}", renamed.body);
    let deleted = client.as_tenant("1", Method::DELETE, &path, None).await;
    assert_eq!(deleted.status, StatusCode::NOT_FOUND, "{}", deleted.body);
    let order = client
        .as_tenant(
            "1",
            Method::POST,
            &format!("{path}/orders"),
            Some(json!({ "total_cents": 1 })),
        )
        .await;
    assert_eq!(order.status, StatusCode::NOT_FOUND, "{}", order.body);

    // Tenant 2's row is as it was, and no order was placed anywhere.
    let row = client.as_tenant("2", Method::GET, &path, None).await;
    assert_eq!(row.status, StatusCode::OK);
    assert_eq!(row.json()["name"], "Lovelace");
    for tenant in ["1", "2"] {
        let orders = client.as_tenant(tenant, Method::GET, "/orders", None).await;
        assert_eq!(orders.json(), json!([]), "tenant {tenant}'s orders");
    }
    let listed = client
        .as_tenant("1", Method::GET, "/customers", None)
        .await
        .json();
    assert_eq!((ids(&listed), foreign_rows(&listed, 1)), (vec![ada], 0));
    let listed = client
        .as_tenant("2", Method::GET, "/customers", None)
        .await
        .json();
    assert_eq!((ids(&listed).len(), foreign_rows(&listed, 2)), (3, 0));

    // Its own rows, a tenant can change.
    let own = format!("/customers/{ada}");
    let renamed = client
        .as_tenant("1", Method::PUT, &own, Some(json!({ "name": "Ada L." })))
        .await;
    assert_eq!(
        (renamed.status, renamed.json()["name"].clone()),
        (StatusCode::OK, json!("Ada L."))
    );
    let deleted = client.as_tenant("1", Method::DELETE, &own, None).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert_eq!(
        client.as_tenant("1", Method::GET, &own, None).await.status,
        StatusCode::NOT_FOUND
    );
}

async fn unknown_tenants_are_404(db: &TestDb) {
    let (_server, client, tenancy) = serve(db, &[1]).await;
    create_customer(&client, 1, "Ada").await;
    let listed = client
        .as_tenant("999", Method::GET, "/customers", None)
        .await;
    let created = client
        .as_tenant(
            "999",
            Method::POST,
            "/customers",
            Some(json!({ "name": "Eve" })),
        )
        .await;
    if tenants_are_provisioned(db) {
        assert_eq!(
            (listed.status, listed.body.as_str()),
            (StatusCode::NOT_FOUND, "unknown tenant\n")
        );
        assert_eq!(created.status, StatusCode::NOT_FOUND, "{}", created.body);
        let everyone = tenancy.everyone::<app::customer::Entity>().await;
        assert_eq!(
            everyone.len(),
            1,
            "nothing was written for the unknown tenant"
        );
    } else {
        // Under shared tables any valid id is a tenant, with no rows until it writes.
        assert_eq!((listed.status, listed.json()), (StatusCode::OK, json!([])));
        assert_eq!(created.status, StatusCode::CREATED);
    }
}

async fn malformed_and_look_alike_ids_are_400(db: &TestDb) {
    let (_server, client, tenancy) = serve(db, &[1, 2]).await;
    create_customer(&client, 1, "Ada").await;
    let malformed: [&[u8]; 17] = [
        b"",
        b"abc",
        b"1.0",
        b"01",
        b"+1",
        b"-0",
        b"0x1",
        b"1e0",
        b"1 1",
        b"1,2",
        b"%31",
        b"1;2",
        b"99999999999999999999",
        "\u{FF11}".as_bytes(),  // a full-width digit one
        "1\u{200B}".as_bytes(), // a zero-width space after it
        b"1\xff",
        b"' OR 1=1 --",
    ];
    for id in malformed {
        for (method, body) in [
            (Method::GET, None),
            (Method::POST, Some(json!({ "name": "Mallory" }))),
        ] {
            let reply = client
                .send(method.clone(), "/customers", &[("x-tenant-id", id)], body)
                .await;
            assert_eq!(
                (reply.status, reply.body.as_str()),
                (StatusCode::BAD_REQUEST, "invalid tenant id\n"),
                "{method} with tenant {:?}",
                String::from_utf8_lossy(id)
            );
        }
    }
    // No tenant, or two (a proxy and the application could each read another one).
    for headers in [
        vec![],
        vec![
            ("x-tenant-id", b"1".as_slice()),
            ("x-tenant-id", b"2".as_slice()),
        ],
        vec![
            ("x-tenant-id", b"1".as_slice()),
            ("X-Tenant-Id", b"1".as_slice()),
        ],
    ] {
        let reply = client.send(Method::GET, "/customers", &headers, None).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{headers:?}");
    }
    let everyone = tenancy.everyone::<app::customer::Entity>().await;
    assert_eq!(everyone.len(), 1, "no refused request wrote a row");
}

async fn many_tenants_at_once_see_no_foreign_row(db: &TestDb) {
    const TENANTS: i64 = 12;
    let tenants: Vec<i64> = (1..=TENANTS).collect();
    let (_server, client, _tenancy) = serve(db, &tenants).await;
    let mut customers = Vec::new();
    for &tenant in &tenants {
        for n in 0..3 {
            let customer = create_customer(&client, tenant, &format!("c{tenant}.{n}")).await;
            let path = format!("/customers/{}/orders", customer["id"]);
            let order = client
                .as_tenant(
                    &tenant.to_string(),
                    Method::POST,
                    &path,
                    Some(json!({ "total_cents": tenant })),
                )
                .await;
            assert_eq!(order.status, StatusCode::CREATED, "{}", order.body);
            customers.push((tenant, customer["id"].as_i64().unwrap()));
        }
    }
    // 20 requests per tenant, all in flight together: lists, another tenant's row by id,
    // and the summary a background task counts.
    let requests = tenants.iter().flat_map(|&tenant| {
        let client = client.clone();
        let customers = customers.clone();
        (0..20).map(move |n| {
            let client = client.clone();
            let (owner, other) = customers[(tenant as usize * 7 + n) % customers.len()];
            async move {
                let id = tenant.to_string();
                let foreign = match n % 4 {
                    0 => foreign_rows(
                        &client
                            .as_tenant(&id, Method::GET, "/customers", None)
                            .await
                            .json(),
                        tenant,
                    ),
                    1 => foreign_rows(
                        &client
                            .as_tenant(&id, Method::GET, "/orders", None)
                            .await
                            .json(),
                        tenant,
                    ),
                    2 => {
                        let reply = client.as_tenant(&id, Method::GET, "/summary", None).await;
                        let summary: app::Summary = serde_json::from_str(&reply.body).unwrap();
                        assert_eq!(
                            summary,
                            app::Summary {
                                tenant,
                                customers: 3,
                                orders: 3
                            },
                            "the job a request spawned ran for its tenant"
                        );
                        0
                    }
                    _ => {
                        let reply = client
                            .as_tenant(&id, Method::GET, &format!("/customers/{other}"), None)
                            .await;
                        match reply.status {
                            // Each tenant numbers its own rows under a schema or a database
                            // of its own: the same id may name its own row.
                            StatusCode::OK => usize::from(reply.json()["tenant_id"] != tenant),
                            StatusCode::NOT_FOUND => {
                                assert_ne!(owner, tenant, "its own row is found");
                                0
                            }
                            status => panic!("{status}: {}", reply.body),
                        }
                    }
                };
                (tenant, foreign)
            }
        })
    });
    let results = join_all(requests).await;
    assert_eq!(results.len(), TENANTS as usize * 20);
    let foreign: usize = results.iter().map(|(_, foreign)| foreign).sum();
    assert_eq!(foreign, 0, "rows of another tenant in a response");
}

/// Under a database per tenant: one tenant's database is unreachable (its URL carries a
/// password), another's tables are gone. The responses say 503 and 500, and nothing of the
/// URL, the password or the SQL.
async fn error_bodies_carry_nothing_internal(db: &TestDb) {
    let (_server, client, _tenancy) = serve(db, &[78]).await;
    let secret = "postgres://app:hunter2@127.0.0.1:1/secret_db";
    TenantDatabases::new(db.conn.clone())
        .register(&77_i64, secret)
        .await
        .unwrap();
    let unreachable = client
        .as_tenant("77", Method::GET, "/customers", None)
        .await;
    assert_eq!(
        (unreachable.status, unreachable.body.as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "service unavailable\n")
    );
    let tenancy = db.tenancy::<i64>();
    tenancy
        .raw_in_storage(&78, "DROP TABLE quickstart_orders")
        .await
        .unwrap();
    let broken = client.as_tenant("78", Method::GET, "/orders", None).await;
    assert_eq!(
        (broken.status, broken.body.as_str()),
        (StatusCode::INTERNAL_SERVER_ERROR, "internal error\n")
    );
    for body in [&unreachable.body, &broken.body] {
        for secret in [
            "hunter2",
            "postgres://",
            "secret_db",
            "SELECT",
            "quickstart",
            "table",
        ] {
            assert!(!body.contains(secret), "{body:?} shows {secret:?}");
        }
    }
}

macro_rules! web_tests {
    ($($module:ident: $backend:ident, $flavor:ident;)*) => {$(
        mod $module {
            use tenancy_tests::{Backend, Flavor, run};
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn cross_tenant_requests_are_refused() {
                run(Backend::$backend, Flavor::$flavor, super::cross_tenant_requests_are_refused).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn unknown_tenants_are_404() {
                run(Backend::$backend, Flavor::$flavor, super::unknown_tenants_are_404).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn malformed_and_look_alike_ids_are_400() {
                run(Backend::$backend, Flavor::$flavor, super::malformed_and_look_alike_ids_are_400).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn many_tenants_at_once_see_no_foreign_row() {
                run(Backend::$backend, Flavor::$flavor, super::many_tenants_at_once_see_no_foreign_row).await
            }
        }
    )*};
}

web_tests! {
    sqlite: Sqlite, RowLevel;
    postgres: Postgres, RowLevel;
    mysql: MySql, RowLevel;
    postgres_schema: Postgres, Schema;
    sqlite_database: Sqlite, Database;
    postgres_database: Postgres, Database;
    mysql_database: MySql, Database;
    sqlite_sharded: Sqlite, ShardedRowLevel;
    postgres_sharded: Postgres, ShardedRowLevel;
}

mod leaks {
    use tenancy_tests::{Backend, Flavor, run};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite_database_error_bodies_carry_nothing_internal() {
        run(
            Backend::Sqlite,
            Flavor::Database,
            super::error_bodies_carry_nothing_internal,
        )
        .await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_database_error_bodies_carry_nothing_internal() {
        run(
            Backend::Postgres,
            Flavor::Database,
            super::error_bodies_carry_nothing_internal,
        )
        .await
    }
}
