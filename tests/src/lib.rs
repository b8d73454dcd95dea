//! The harness of the cross-crate suite: one body of tests, run over every backend.
//!
//! Each test gets a database of its own (a SQLite file, or a fresh PostgreSQL or MariaDB
//! database named `tenancy_t_<uuid>`) with the schema of [`entities`], and drops it at the
//! end, even when the test fails. PostgreSQL and MariaDB run when `TENANCY_PG_URL` and
//! `TENANCY_MYSQL_URL` are set; without them a test says on stderr that it skipped, and
//! under `CI=true` it fails instead.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod entities;

use entities::*;
use futures_util::FutureExt;
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, Statement,
};
use std::io::Write;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::Once;
use std::time::Duration;
use tenancy_sea::Tenancy;

/// A backend the suite runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// A SQLite file in the temp directory.
    Sqlite,
    /// A database on the server named by `TENANCY_PG_URL`.
    Postgres,
    /// A database on the server named by `TENANCY_MYSQL_URL`.
    MySql,
}

impl Backend {
    fn url_var(self) -> Option<&'static str> {
        match self {
            Backend::Sqlite => None,
            Backend::Postgres => Some("TENANCY_PG_URL"),
            Backend::MySql => Some("TENANCY_MYSQL_URL"),
        }
    }

    /// The server URL, or `None` when this backend is to be skipped (never under CI).
    fn server_url(self) -> Option<String> {
        let var = self.url_var()?;
        match std::env::var(var) {
            Ok(url) if !url.is_empty() => Some(url),
            _ if std::env::var("CI").is_ok_and(|v| v == "true") => {
                panic!("{var} must be set under CI=true: nothing may be skipped in CI")
            }
            _ => {
                static WARN_PG: Once = Once::new();
                static WARN_MYSQL: Once = Once::new();
                let once = if self == Backend::Postgres {
                    &WARN_PG
                } else {
                    &WARN_MYSQL
                };
                once.call_once(|| {
                    // Written past the test harness's capture, so it is seen.
                    let _ = writeln!(
                        std::io::stderr(),
                        "SKIPPED: {self:?} tests, because {var} is not set"
                    );
                });
                None
            }
        }
    }
}

/// One test's own database.
pub struct TestDb {
    /// The backend.
    pub backend: Backend,
    /// A connection (pool) to the test's database.
    pub conn: DatabaseConnection,
    cleanup: Cleanup,
}

enum Cleanup {
    File(PathBuf),
    Server {
        admin: DatabaseConnection,
        name: String,
    },
}

impl TestDb {
    /// Creates an empty database; `None` when the backend is skipped.
    pub async fn create(backend: Backend) -> Option<TestDb> {
        if backend != Backend::Sqlite {
            return Some(Self::create_on_server(backend, &backend.server_url()?).await);
        }
        let name = format!("tenancy_t_{}", uuid::Uuid::new_v4().simple());
        let path = std::env::temp_dir().join(format!("{name}.db"));
        let url = format!("sqlite://{}?mode=rwc", path.display());
        let conn = Database::connect(url).await.expect("open SQLite file");
        Some(TestDb {
            backend,
            conn,
            cleanup: Cleanup::File(path),
        })
    }

    /// Creates an empty database on the PostgreSQL or MariaDB server at `url`.
    pub async fn create_on_server(backend: Backend, url: &str) -> TestDb {
        let name = format!("tenancy_t_{}", uuid::Uuid::new_v4().simple());
        let mut options = ConnectOptions::new(url.to_owned());
        options
            .connect_timeout(Duration::from_secs(5))
            .acquire_timeout(Duration::from_secs(5));
        let admin = Database::connect(options)
            .await
            .unwrap_or_else(|e| panic!("cannot reach {backend:?} at {url}: {e}"));
        admin
            .execute_unprepared(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create test database");
        let mut db_url = url::Url::parse(url).expect("database URL");
        db_url.set_path(&name);
        let conn = Database::connect(db_url.as_str())
            .await
            .expect("connect to test database");
        TestDb {
            backend,
            conn,
            cleanup: Cleanup::Server { admin, name },
        }
    }

    /// Creates a fresh database with the suite's schema.
    pub async fn with_schema(backend: Backend) -> Option<TestDb> {
        let db = Self::create(backend).await?;
        create_schema(&db.conn).await;
        Some(db)
    }

    /// A `Tenancy` over this database with tenant ids of type `T`.
    pub fn tenancy<T: tenancy_sea::TenantKey>(&self) -> Tenancy<T> {
        Tenancy::builder(self.conn.clone()).build().unwrap()
    }

    /// Drops the database.
    pub async fn drop_db(self) {
        let TestDb { conn, cleanup, .. } = self;
        let _ = conn.close().await;
        match cleanup {
            Cleanup::File(path) => {
                for suffix in ["", "-wal", "-shm"] {
                    let mut p = path.clone().into_os_string();
                    p.push(suffix);
                    let _ = std::fs::remove_file(p);
                }
            }
            Cleanup::Server { admin, name } => {
                let sql = match admin.get_database_backend() {
                    DbBackend::Postgres => format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
                    _ => format!("DROP DATABASE IF EXISTS {name}"),
                };
                admin
                    .execute_unprepared(&sql)
                    .await
                    .expect("drop test database");
                let _ = admin.close().await;
            }
        }
    }
}

/// Creates every table of [`entities`], with foreign keys and unique constraints.
pub async fn create_schema(conn: &DatabaseConnection) {
    conn.get_schema_builder()
        .register(plan::Entity)
        .register(customer::Entity)
        .register(order::Entity)
        .register(tag::Entity)
        .register(order_tag::Entity)
        .register(account::Entity)
        .register(note_i32::Entity)
        .register(note_string::Entity)
        .register(note_uuid::Entity)
        .apply(conn)
        .await
        .expect("create schema");
}

/// Runs `test` on a fresh database of `backend` with the suite's schema, then drops the
/// database, also when the test panics.
pub async fn run<F>(backend: Backend, test: F)
where
    F: AsyncFnOnce(&TestDb),
{
    let Some(db) = TestDb::with_schema(backend).await else {
        return;
    };
    let outcome = AssertUnwindSafe(test(&db)).catch_unwind().await;
    db.drop_db().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic)
    }
}

/// Runs a raw statement on `conn`, for tests that plant data past the framework.
pub async fn raw(conn: &DatabaseConnection, sql: &str) {
    conn.execute_raw(Statement::from_string(conn.get_database_backend(), sql))
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// Declares each listed `async fn name(db: &TestDb)` as one test per backend:
/// `sqlite::name`, `postgres::name`, `mysql::name`.
#[macro_export]
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                ::tenancy_tests::run(::tenancy_tests::Backend::Sqlite, super::$name).await
            })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                ::tenancy_tests::run(::tenancy_tests::Backend::Postgres, super::$name).await
            })*
        }
        mod mysql {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                ::tenancy_tests::run(::tenancy_tests::Backend::MySql, super::$name).await
            })*
        }
    };
}

/// The book's chapters with Rust code, compiled and run as doctests so they cannot rot.
/// (The quickstart chapter includes `examples/quickstart.rs`, which is built and run as
/// the example itself.)
#[cfg(doctest)]
pub mod book {
    #[doc = include_str!("../../docs/src/introduction.md")]
    pub mod introduction {}
    #[doc = include_str!("../../docs/src/row-level.md")]
    pub mod row_level {}
}
