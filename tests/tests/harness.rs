//! The suite's own promise: a test that fails leaves nothing behind on the servers or on
//! disk, so failed runs never pile up.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failure is a panic

use sea_orm::{ConnectionTrait, Database, DbBackend, Statement};
use std::sync::mpsc;
use tenancy_sea::DatabaseTemplate;
use tenancy_tests::{Backend, Flavor, Provisioned, TestDb};

/// What a deliberately failing test made, reported before it panics.
struct Made {
    url: Option<String>,
    file: Option<std::path::PathBuf>,
    dir: Option<std::path::PathBuf>,
    prefix: String,
    roles: Vec<String>,
}

/// Runs a test on its own thread and runtime that makes a database with tenant databases
/// (and, on PostgreSQL, a role), then panics without calling `drop_db`.
fn fail_after_making(backend: Backend) -> Option<Made> {
    let (tx, rx) = mpsc::channel();
    let failed = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let Some(mut db) = TestDb::for_flavor(backend, Flavor::Database).await else {
                tx.send(None).unwrap();
                return;
            };
            let tenancy = db.tenancy::<i64>();
            tenancy.provisioned(1).await.unwrap();
            tenancy.provisioned(2).await.unwrap();
            let roles = if backend == Backend::Postgres {
                vec![db.create_app_role().await]
            } else {
                Vec::new()
            };
            let (dir, prefix) = match db.template.clone().unwrap() {
                DatabaseTemplate::SqliteDir { dir, prefix } => (Some(dir), prefix),
                DatabaseTemplate::Server { prefix, .. } => (None, prefix),
            };
            tx.send(Some(Made {
                url: db.url.clone(),
                file: db.sqlite_path().map(std::path::Path::to_path_buf),
                dir,
                prefix,
                roles,
            }))
            .unwrap();
            panic!("a deliberately failing test");
        })
    })
    .join();
    let made = rx.recv().unwrap();
    if made.is_some() {
        assert!(failed.is_err(), "the test was meant to fail");
    }
    made
}

async fn count(server: &str, sql: String) -> i64 {
    let conn = Database::connect(tenancy_tests::pool(server))
        .await
        .unwrap();
    let row = conn
        .query_one_raw(Statement::from_string(conn.get_database_backend(), sql))
        .await
        .unwrap()
        .unwrap();
    let n = row.try_get::<i64>("", "n").unwrap();
    conn.close().await.unwrap();
    n
}

async fn failing_tests_leave_nothing_behind(backend: Backend) {
    let Some(made) = fail_after_making(backend) else {
        return;
    };
    if let Some(file) = &made.file {
        assert!(!file.exists(), "{} left behind", file.display());
    }
    if let Some(dir) = &made.dir {
        assert!(!dir.exists(), "{} left behind", dir.display());
    }
    let Some(url) = made.url else {
        return;
    };
    let parsed = url::Url::parse(&url).unwrap();
    let name = parsed.path().trim_start_matches('/').to_owned();
    let server = backend.server_url().unwrap();
    let (databases, roles) = match DbBackend::from(backend) {
        DbBackend::Postgres => (
            format!(
                "SELECT count(*) AS n FROM pg_database WHERE datname = '{name}' \
                 OR datname LIKE '{}%'",
                made.prefix
            ),
            Some(format!(
                "SELECT count(*) AS n FROM pg_roles WHERE rolname IN ('{}')",
                made.roles.join("', '")
            )),
        ),
        _ => (
            format!(
                "SELECT count(*) AS n FROM information_schema.schemata \
                 WHERE schema_name = '{name}' OR schema_name LIKE '{}%'",
                made.prefix
            ),
            None,
        ),
    };
    assert_eq!(count(&server, databases).await, 0, "databases left behind");
    if let Some(roles) = roles {
        assert_eq!(count(&server, roles).await, 0, "roles left behind");
    }
}

tenancy_tests::on_every_backend!(failing_tests_leave_nothing_behind);
