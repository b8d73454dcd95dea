//! The harness of the cross-crate suite: one body of tests, run over every backend.
//!
//! Each test gets a database of its own (a SQLite file, or a fresh PostgreSQL or MariaDB
//! database named `tenancy_t_<uuid>`) with the schema of [`entities`], and drops it at the
//! end, even when the test fails. PostgreSQL and MariaDB run when `TENANCY_PG_URL` and
//! `TENANCY_MYSQL_URL` are set; without them a test says on stderr that it skipped, and
//! under `CI=true` it fails instead.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod checks;
pub mod entities;
pub mod migration;

use entities::*;
use futures_util::FutureExt;
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, DbErr, QueryResult,
    Statement, TransactionTrait,
};
use sea_orm::{EntityTrait, FromQueryResult};
use std::io::Write;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::Once;
use std::time::Duration;
use tenancy_sea::rls::{RlsTable, enable_row_level_security};
use tenancy_sea::{
    DatabaseTemplate, Isolation, Placement, SqlTenantId, Tenancy, TenantDb, TenantRegistry,
    catalog::TenantDatabases,
};

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

impl From<Backend> for DbBackend {
    fn from(backend: Backend) -> DbBackend {
        match backend {
            Backend::Sqlite => DbBackend::Sqlite,
            Backend::Postgres => DbBackend::Postgres,
            Backend::MySql => DbBackend::MySql,
        }
    }
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
    pub fn server_url(self) -> Option<String> {
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
    /// A connection (pool) to the test's database, as its owner.
    pub conn: DatabaseConnection,
    /// The strategy [`TestDb::tenancy`] builds.
    pub flavor: Flavor,
    /// The application role's connection, where the flavor needs one (row-level security).
    pub app: Option<DatabaseConnection>,
    /// The test database's URL (server backends).
    pub url: Option<String>,
    /// Where tenant databases go ([`Flavor::Database`]).
    pub template: Option<DatabaseTemplate>,
    /// The other shards of a sharded flavor (this database is the first, `shard_0`), each
    /// set up like it.
    pub shards: Vec<TestDb>,
    cleanup: Leftovers,
}

/// Which isolation and placement a test runs under.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    /// Shared tables, filtered by the framework.
    RowLevel,
    /// Shared tables, filtered by the framework and by PostgreSQL row-level security; the
    /// application connects as a role that owns nothing.
    Rls,
    /// A PostgreSQL schema per tenant, made on first use by [`Provisioned::provisioned`].
    Schema,
    /// A database per tenant (a SQLite file, or a database on the server), made on first
    /// use by [`Provisioned::provisioned`], registered in this test's catalog database.
    Database,
    /// Row level on two shards (two databases of the backend), hash-routed: tenants 1 and
    /// 2 share `shard_1`, tenants 3 to 7 live on `shard_0`.
    ShardedRowLevel,
    /// Row-level security on two PostgreSQL shards, each enforcing its policies.
    ShardedRls,
    /// A schema per tenant on two PostgreSQL shards, each tenant's schema on its shard.
    ShardedSchema,
}

impl Flavor {
    /// Whether all tenants' rows share tables (so a row can reference another tenant's).
    pub fn shares_tables(self) -> bool {
        matches!(
            self,
            Flavor::RowLevel | Flavor::Rls | Flavor::ShardedRowLevel | Flavor::ShardedRls
        )
    }

    /// The flavor of each database: the isolation, without the shards.
    pub fn per_database(self) -> Flavor {
        match self {
            Flavor::ShardedRowLevel => Flavor::RowLevel,
            Flavor::ShardedRls => Flavor::Rls,
            Flavor::ShardedSchema => Flavor::Schema,
            other => other,
        }
    }

    /// Whether tenants live on shards.
    pub fn is_sharded(self) -> bool {
        self.per_database() != self
    }
}

/// The shards of the sharded flavors.
pub const SHARDS: usize = 2;

/// The schema prefix of the schema-per-tenant tests.
pub const SCHEMA_PREFIX: &str = "tenant_";

/// The setting the row-level security tests use.
pub const RLS_SETTING: &str = "tenancy.tenant_id";

/// What a test made outside its process: removed by [`TestDb::drop_db`], or, when the test
/// panics before it gets there, by this guard's `Drop` (on a thread of its own, with a
/// runtime and connections of its own, since the test's may be gone), so that no run
/// leaves a database, role, file or directory behind.
#[derive(Default)]
pub struct Leftovers {
    /// The server's URL (no database), where `databases`, `prefixes` and `roles` live.
    server: Option<String>,
    databases: Vec<String>,
    /// Every database whose name starts with one of these (tenant databases).
    prefixes: Vec<String>,
    /// Behind a lock, so a test holding only `&TestDb` can add a role.
    roles: std::sync::Mutex<Vec<String>>,
    files: Vec<PathBuf>,
    dirs: Vec<PathBuf>,
}

impl Leftovers {
    fn on_server(server: &str, database: String) -> Self {
        let mut leftovers = Leftovers::default();
        leftovers.server = Some(server.to_owned());
        leftovers.databases.push(database);
        leftovers
    }

    /// Removes everything listed, and forgets it (so the guard's `Drop` finds nothing).
    async fn remove(&mut self) {
        for dir in std::mem::take(&mut self.dirs) {
            let _ = std::fs::remove_dir_all(dir);
        }
        for file in std::mem::take(&mut self.files) {
            for suffix in ["", "-wal", "-shm"] {
                let mut p = file.clone().into_os_string();
                p.push(suffix);
                let _ = std::fs::remove_file(p);
            }
        }
        let Some(server) = self.server.take() else {
            return;
        };
        let mut options = ConnectOptions::new(server);
        options
            .max_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_timeout(Duration::from_secs(5))
            .acquire_timeout(Duration::from_secs(5));
        let admin = Database::connect(options)
            .await
            .expect("connect to drop the test's databases");
        for prefix in std::mem::take(&mut self.prefixes) {
            drop_databases_named(&admin, &prefix).await;
        }
        for name in std::mem::take(&mut self.databases) {
            let sql = match admin.get_database_backend() {
                DbBackend::Postgres => format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
                _ => format!("DROP DATABASE IF EXISTS {name}"),
            };
            admin
                .execute_unprepared(&sql)
                .await
                .expect("drop test database");
        }
        let roles = std::mem::take(&mut *self.roles.lock().unwrap_or_else(|p| p.into_inner()));
        for role in roles {
            admin
                .execute_unprepared(&format!("DROP ROLE IF EXISTS {role}"))
                .await
                .expect("drop test role");
        }
        let _ = admin.close().await;
    }
}

impl Drop for Leftovers {
    fn drop(&mut self) {
        if self.server.is_none() && self.files.is_empty() && self.dirs.is_empty() {
            return;
        }
        let mut rest = std::mem::take(self);
        let cleaner = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime to clean up with");
            runtime.block_on(rest.remove());
        });
        if cleaner.join().is_err() {
            eprintln!("tenancy tests: cleaning up after a failed test failed too");
        }
    }
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
        let conn = Database::connect(pool(url))
            .await
            .expect("open SQLite file");
        Some(TestDb {
            backend,
            conn,
            flavor: Flavor::RowLevel,
            app: None,
            url: None,
            template: None,
            shards: Vec::new(),
            cleanup: {
                let mut leftovers = Leftovers::default();
                leftovers.files.push(path);
                leftovers
            },
        })
    }

    /// The file of a SQLite test database.
    pub fn sqlite_path(&self) -> Option<&std::path::Path> {
        self.cleanup.files.first().map(PathBuf::as_path)
    }

    /// Creates an empty database on the PostgreSQL or MariaDB server at `url`.
    pub async fn create_on_server(backend: Backend, url: &str) -> TestDb {
        let name = format!("tenancy_t_{}", uuid::Uuid::new_v4().simple());
        let mut options = ConnectOptions::new(url.to_owned());
        options
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_timeout(Duration::from_secs(5))
            .acquire_timeout(Duration::from_secs(5));
        let admin = Database::connect(options)
            .await
            .unwrap_or_else(|e| panic!("cannot reach {backend:?} at {url}: {e}"));
        admin
            .execute_unprepared(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create test database");
        let _ = admin.close().await;
        let cleanup = Leftovers::on_server(url, name.clone());
        let mut db_url = url::Url::parse(url).expect("database URL");
        db_url.set_path(&name);
        let conn = Database::connect(pool(db_url.as_str()))
            .await
            .expect("connect to test database");
        TestDb {
            backend,
            conn,
            flavor: Flavor::RowLevel,
            app: None,
            url: Some(db_url.to_string()),
            template: None,
            shards: Vec::new(),
            cleanup,
        }
    }

    /// Creates a fresh database with the suite's schema.
    pub async fn with_schema(backend: Backend) -> Option<TestDb> {
        let db = Self::create(backend).await?;
        create_schema(&db.conn).await;
        Some(db)
    }

    /// Creates a fresh database with the suite's schema, set up for `flavor`.
    pub async fn for_flavor(backend: Backend, flavor: Flavor) -> Option<TestDb> {
        if flavor.is_sharded() {
            let mut first = Box::pin(Self::for_flavor(backend, flavor.per_database())).await?;
            for _ in 1..SHARDS {
                let shard = Box::pin(Self::for_flavor(backend, flavor.per_database())).await?;
                first.shards.push(shard);
            }
            first.flavor = flavor;
            return Some(first);
        }
        match flavor {
            Flavor::RowLevel => Self::with_schema(backend).await,
            Flavor::Rls => {
                let mut db = Self::with_schema(backend).await?;
                db.enable_rls().await;
                Some(db)
            }
            Flavor::Schema => {
                assert_eq!(backend, Backend::Postgres, "schemas are PostgreSQL's");
                let mut db = Self::create(backend).await?;
                // Global tables live in `public`; tenant tables in the tenant schemas.
                db.conn
                    .get_schema_builder()
                    .register(plan::Entity)
                    .apply(&db.conn)
                    .await
                    .unwrap();
                db.flavor = Flavor::Schema;
                Some(db)
            }
            Flavor::Database => {
                let mut db = Self::create(backend).await?;
                TenantDatabases::new(db.conn.clone())
                    .install()
                    .await
                    .unwrap();
                let prefix = format!("tdb_{}_", &uuid::Uuid::new_v4().simple().to_string()[..10]);
                db.template = Some(match backend {
                    Backend::Sqlite => {
                        let dir = std::env::temp_dir().join(prefix.trim_end_matches('_'));
                        std::fs::create_dir_all(&dir).unwrap();
                        db.cleanup.dirs.push(dir.clone());
                        DatabaseTemplate::SqliteDir { dir, prefix }
                    }
                    _ => {
                        db.cleanup.prefixes.push(prefix.clone());
                        DatabaseTemplate::Server {
                            server_url: db.url.clone().unwrap(),
                            prefix,
                        }
                    }
                });
                db.flavor = Flavor::Database;
                Some(db)
            }
            Flavor::ShardedRowLevel | Flavor::ShardedRls | Flavor::ShardedSchema => {
                unreachable!("handled above")
            }
        }
    }

    /// Protects every tenant-scoped table with row-level security and connects an
    /// application role that owns nothing and is no superuser.
    pub async fn enable_rls(&mut self) {
        assert_eq!(
            self.backend,
            Backend::Postgres,
            "row-level security is PostgreSQL's"
        );
        let tables = [
            RlsTable::of::<customer::Entity>().unwrap(),
            RlsTable::of::<order::Entity>().unwrap(),
            RlsTable::of::<event::Entity>().unwrap(),
            RlsTable::of::<tag::Entity>().unwrap(),
            RlsTable::of::<order_tag::Entity>().unwrap(),
            RlsTable::of::<account::Entity>().unwrap(),
            RlsTable::of::<note_i32::Entity>().unwrap(),
            RlsTable::of::<note_string::Entity>().unwrap(),
            RlsTable::of::<note_uuid::Entity>().unwrap(),
        ];
        enable_row_level_security(&self.conn, RLS_SETTING, &tables)
            .await
            .unwrap();
        let role = self.create_app_role().await;
        self.app = Some(self.connect_as(&role, 10).await);
        self.flavor = Flavor::Rls;
    }

    /// Creates a login role with data rights on every table, no ownership, no superuser.
    pub async fn create_app_role(&mut self) -> String {
        let role = format!("tenancy_app_{}", uuid::Uuid::new_v4().simple());
        for sql in [
            format!("CREATE ROLE {role} LOGIN NOSUPERUSER NOBYPASSRLS"),
            format!("GRANT USAGE ON SCHEMA public TO {role}"),
            format!(
                "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}"
            ),
            format!("GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {role}"),
        ] {
            self.conn.execute_unprepared(&sql).await.unwrap();
        }
        self.cleanup.roles.lock().unwrap().push(role.clone());
        role
    }

    /// Creates a login role that may create databases and is no superuser (PostgreSQL),
    /// removed with the test: the role a database-per-tenant deployment connects its
    /// tenant databases as, so that raw SQL cannot reach past a tenant's database.
    pub async fn create_dba_role(&self) -> String {
        let role = format!("tenancy_dba_{}", uuid::Uuid::new_v4().simple());
        self.conn
            .execute_unprepared(&format!(
                "CREATE ROLE {role} LOGIN CREATEDB NOSUPERUSER NOBYPASSRLS"
            ))
            .await
            .unwrap();
        self.cleanup.roles.lock().unwrap().push(role.clone());
        role
    }

    /// This test's tenant-database template (a [`Flavor::Database`] test on a server),
    /// connecting as `role`.
    pub fn template_as(&self, role: &str) -> DatabaseTemplate {
        match self.template.clone().expect("a template") {
            DatabaseTemplate::Server { server_url, prefix } => {
                let mut url = url::Url::parse(&server_url).unwrap();
                url.set_username(role).unwrap();
                DatabaseTemplate::Server {
                    server_url: url.to_string(),
                    prefix,
                }
            }
            sqlite => sqlite,
        }
    }

    /// A pool of at most `max_connections` to this database as `role`.
    pub async fn connect_as(&self, role: &str, max_connections: u32) -> DatabaseConnection {
        let mut url = url::Url::parse(self.url.as_deref().expect("a server database")).unwrap();
        url.set_username(role).unwrap();
        let mut options = pool(url.to_string());
        options.max_connections(max_connections);
        Database::connect(options)
            .await
            .expect("connect as the application role")
    }

    /// A `Tenancy` over this database (and its shards) with tenant ids of type `T`, in
    /// this test's flavor.
    pub fn tenancy<T: tenancy_sea::SqlTenantId>(&self) -> TestTenancy<T> {
        let builder = match self.flavor.per_database() {
            Flavor::RowLevel => Tenancy::builder(self.conn.clone()),
            Flavor::Schema => Tenancy::builder(self.conn.clone()).schema_per_tenant(SCHEMA_PREFIX),
            Flavor::Database => Tenancy::builder(self.conn.clone())
                .database_per_tenant(TenantDatabases::new(self.conn.clone()))
                .database_template(self.template.clone().expect("a template"))
                .max_open_pools(8),
            _ => Tenancy::builder(self.app.clone().expect("application role"))
                .row_level_security(RLS_SETTING)
                .admin_connection(self.conn.clone()),
        };
        let databases: Vec<&TestDb> = std::iter::once(self).chain(&self.shards).collect();
        let builder = if self.flavor.is_sharded() {
            let ids: Vec<tenancy_sea::ShardId> = (0..databases.len())
                .map(|i| tenancy_sea::ShardId::new(format!("shard_{i}")))
                .collect();
            // The application's connection on each shard (its own role under RLS).
            let conns = databases
                .iter()
                .map(|db| db.app.clone().unwrap_or_else(|| db.conn.clone()));
            let topology = tenancy_sea::Topology::new(
                tenancy_sea::HashRouter::new(ids.clone()),
                ids.into_iter().zip(conns),
            )
            .expect("every shard has a connection");
            builder.sharded(topology)
        } else {
            builder
        };
        TestTenancy {
            tenancy: builder.build().unwrap(),
            owners: databases.iter().map(|db| db.conn.clone()).collect(),
        }
    }

    /// Also removes, at the end of the test (or when it fails), every database on this
    /// test's server whose name starts with `prefix`.
    pub fn also_remove_databases(&mut self, prefix: &str) {
        self.cleanup.prefixes.push(prefix.to_owned());
    }

    /// Also removes `dir` at the end of the test (or when it fails).
    pub fn also_remove_dir(&mut self, dir: PathBuf) {
        self.cleanup.dirs.push(dir);
    }

    /// Drops the database and everything else the test made. A test that panics before
    /// calling this has the same done when its `TestDb` is dropped.
    pub async fn drop_db(self) {
        let TestDb {
            conn,
            app,
            shards,
            mut cleanup,
            ..
        } = self;
        let _ = conn.close().await;
        if let Some(app) = app {
            let _ = app.close().await;
        }
        cleanup.remove().await;
        for shard in shards {
            Box::pin(shard.drop_db()).await;
        }
    }
}

/// Drops every database on `conn`'s server whose name starts with `prefix`.
async fn drop_databases_named(conn: &DatabaseConnection, prefix: &str) {
    let backend = conn.get_database_backend();
    let list = match backend {
        DbBackend::Postgres => {
            format!("SELECT datname AS name FROM pg_database WHERE datname LIKE '{prefix}%'")
        }
        _ => format!(
            "SELECT schema_name AS name FROM information_schema.schemata WHERE schema_name LIKE '{prefix}%'"
        ),
    };
    let rows = conn
        .query_all_raw(Statement::from_string(backend, list))
        .await
        .expect("list tenant databases");
    for row in rows {
        let name: String = row.try_get("", "name").unwrap();
        let sql = match backend {
            DbBackend::Postgres => format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"),
            _ => format!("DROP DATABASE IF EXISTS `{name}`"),
        };
        conn.execute_unprepared(&sql)
            .await
            .expect("drop tenant database");
    }
}

/// What the suite needs of a `Tenancy` whatever its strategy: tenants that exist when
/// first asked for, and a view of every tenant's rows for checking.
#[allow(async_fn_in_trait)]
pub trait Provisioned<T: SqlTenantId> {
    /// The handle of `id`, provisioning its schema or database first when the strategy
    /// needs one (errors of provisioning, such as an id that cannot name one, pass through).
    async fn provisioned(&self, id: impl Into<T>) -> tenancy_sea::Result<TenantDb<T>>;

    /// Every row of `E` in every tenant's storage, read past the framework's filter.
    async fn everyone<E: EntityTrait>(&self) -> Vec<E::Model>;

    /// Runs `sql` wherever global tables live: once in the shared database, or in each of
    /// `tenants`' own databases.
    async fn run_globally(&self, tenants: &[&TenantDb<T>], sql: &str);

    /// Runs `sql` directly in `tenant`'s storage, past the framework (its schema, its own
    /// database, or the shared database): how a test plants rows the handle would refuse.
    async fn raw_in_storage(&self, tenant: &T, sql: &str) -> Result<Vec<QueryResult>, DbErr>;
}

/// A test's `Tenancy`, with the owner connection of each of its databases (the shared
/// one, or each shard's), to check what is stored past the framework. Derefs to the
/// `Tenancy`.
#[derive(Clone, Debug)]
pub struct TestTenancy<T: SqlTenantId> {
    tenancy: Tenancy<T>,
    owners: Vec<DatabaseConnection>,
}

impl<T: SqlTenantId> std::ops::Deref for TestTenancy<T> {
    type Target = Tenancy<T>;

    fn deref(&self) -> &Tenancy<T> {
        &self.tenancy
    }
}

impl<T: SqlTenantId> TestTenancy<T> {
    /// The `Tenancy` itself.
    pub fn into_inner(self) -> Tenancy<T> {
        self.tenancy
    }

    /// The owner connection of `tenant`'s database (its shard's, when sharded).
    async fn owner_of(&self, tenant: &T) -> &DatabaseConnection {
        if self.placement() != Placement::Sharded {
            return &self.owners[0];
        }
        let handle = self.tenancy.tenant(tenant.clone()).await.unwrap();
        let shard = handle.shard().expect("a sharded handle").as_str();
        let index: usize = shard.trim_start_matches("shard_").parse().unwrap();
        &self.owners[index]
    }
}

impl<T: SqlTenantId> Provisioned<T> for TestTenancy<T> {
    async fn provisioned(&self, id: impl Into<T>) -> tenancy_sea::Result<TenantDb<T>> {
        let id = id.into();
        match (self.placement(), self.isolation()) {
            (Placement::DatabasePerTenant, _) => {
                match self
                    .create_tenant_database::<migration::DatabaseMigrator>(id.clone())
                    .await
                {
                    Ok(()) | Err(tenancy_sea::Error::TenantExists { .. }) => {}
                    Err(err) => return Err(err),
                }
            }
            (_, Isolation::SchemaPerTenant { .. })
                if !self.tenant_schemas().await?.contains(&id) =>
            {
                self.create_tenant_schema::<migration::Migrator>(id.clone())
                    .await?;
            }
            _ => {}
        }
        self.tenant(id).await
    }

    async fn everyone<E: EntityTrait>(&self) -> Vec<E::Model> {
        let separate = self.placement() == Placement::DatabasePerTenant
            || matches!(self.isolation(), Isolation::SchemaPerTenant { .. });
        if !separate {
            let mut rows = Vec::new();
            for owner in &self.owners {
                rows.extend(E::find().all(owner).await.unwrap());
            }
            return rows;
        }
        let tenants = self.fleet_tenants().await.unwrap();
        let table = E::default().table_name();
        let mut rows = Vec::new();
        for tenant in tenants {
            let raw = self
                .raw_in_storage(&tenant, &format!("SELECT * FROM {table}"))
                .await
                .unwrap();
            for row in raw {
                rows.push(E::Model::from_query_result(&row, "").unwrap());
            }
        }
        rows
    }

    async fn run_globally(&self, tenants: &[&TenantDb<T>], sql: &str) {
        if self.placement() == Placement::DatabasePerTenant {
            for db in tenants {
                self.raw_in_storage(db.tenant_id(), sql).await.unwrap();
            }
        } else {
            for owner in &self.owners {
                raw(owner, sql).await;
            }
        }
    }

    async fn raw_in_storage(&self, tenant: &T, sql: &str) -> Result<Vec<QueryResult>, DbErr> {
        if self.placement() == Placement::DatabasePerTenant {
            let registry = TenantDatabases::new(self.unscoped().clone());
            let url = TenantRegistry::<T>::url(&registry, tenant)
                .await
                .unwrap()
                .expect("a registered tenant");
            let conn = Database::connect(pool(url)).await?;
            let rows = conn
                .query_all_raw(Statement::from_string(conn.get_database_backend(), sql))
                .await;
            conn.close().await?;
            return rows;
        }
        let owner = self.owner_of(tenant).await;
        let backend = owner.get_database_backend();
        if let Isolation::SchemaPerTenant { .. } = self.isolation() {
            let schema = self.tenant_schema(tenant).unwrap();
            let txn = owner.begin().await?;
            txn.execute_unprepared(&format!("SET LOCAL search_path TO {}", schema.quoted()))
                .await?;
            let rows = txn
                .query_all_raw(Statement::from_string(backend, sql))
                .await?;
            txn.commit().await?;
            return Ok(rows);
        }
        owner
            .query_all_raw(Statement::from_string(backend, sql))
            .await
    }
}

/// Creates every table of [`entities`], with foreign keys and unique constraints.
pub async fn create_schema(conn: &DatabaseConnection) {
    conn.get_schema_builder()
        .register(plan::Entity)
        .register(customer::Entity)
        .register(order::Entity)
        .register(event::Entity)
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

/// Fresh databases with the suite's schema, one per backend given, to be a topology's
/// shards; `None` when a server backend is not configured (outside CI).
pub async fn shard_dbs(backends: &[Backend]) -> Option<Vec<TestDb>> {
    let mut dbs = Vec::new();
    for backend in backends {
        dbs.push(TestDb::with_schema(*backend).await?);
    }
    Some(dbs)
}

/// A tenancy sharded over `dbs` (named `shard_0`, `shard_1`, ...) by a hash router, with
/// the first as its admin connection; and the router, to check placements.
pub fn hash_sharded(dbs: &[TestDb]) -> (TestTenancy<i64>, tenancy_sea::HashRouter) {
    let ids: Vec<tenancy_sea::ShardId> = (0..dbs.len())
        .map(|i| tenancy_sea::ShardId::new(format!("shard_{i}")))
        .collect();
    let router = tenancy_sea::HashRouter::new(ids.clone());
    let topology = tenancy_sea::Topology::new(
        router.clone(),
        ids.into_iter().zip(dbs.iter().map(|db| db.conn.clone())),
    )
    .expect("every shard has a connection");
    let tenancy = Tenancy::builder(dbs[0].conn.clone())
        .sharded(topology)
        .build()
        .expect("a sharded tenancy");
    let owners = dbs.iter().map(|db| db.conn.clone()).collect();
    (TestTenancy { tenancy, owners }, router)
}

/// The suite's pool options for `url`: like the pools the library opens, no driver
/// reaper (no idle timeout, no maximum lifetime). sqlx 0.9.0's reaper walks the idle
/// connections by a count that can wrap below zero under a race, and then spins its
/// worker thread forever (its issue 3645); a loaded machine hit it in the suite.
pub fn pool(url: impl Into<String>) -> sea_orm::ConnectOptions {
    let mut options = sea_orm::ConnectOptions::new(url.into());
    options.idle_timeout(None).max_lifetime(None);
    options
}

/// A PostgreSQL connection to `url` (a Citus coordinator, or a plain server) as `user`
/// (trust auth on the local servers), whose tables resolve in `schema` only, and with
/// the Citus fan-out guard when `guarded`: the suite's and the benches' way to open the
/// tenant and owner connections of a Citus test.
pub async fn citus_connection(
    url: &str,
    user: Option<&str>,
    schema: Option<&str>,
    guarded: bool,
) -> DatabaseConnection {
    let mut url = url::Url::parse(url).expect("a database URL");
    if let Some(user) = user {
        url.set_username(user).expect("a URL that takes a user");
    }
    let mut options = pool(url.as_str());
    options.max_connections(4).sqlx_logging(false);
    let schema = schema.map(str::to_owned);
    options.map_sqlx_postgres_opts(move |pg| {
        let mut settings = Vec::new();
        if guarded {
            let (name, value) = tenancy_sea::citus::GUARD;
            settings.push((name.to_owned(), value.to_owned()));
        }
        if let Some(schema) = &schema {
            settings.push(("search_path".to_owned(), format!("\"{schema}\"")));
        }
        pg.options(settings)
    });
    sea_orm::Database::connect(options).await.expect("connect")
}

/// Runs `test` on a fresh, empty database of `backend` (its tables are the test's to
/// make), then drops the database, also when the test panics.
pub async fn on_empty<F>(backend: Backend, test: F)
where
    F: AsyncFnOnce(&TestDb),
{
    let Some(db) = TestDb::create(backend).await else {
        return;
    };
    let outcome = AssertUnwindSafe(test(&db)).catch_unwind().await;
    db.drop_db().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic)
    }
}

/// Runs `test` on a fresh database of `backend` with the suite's schema, set up for
/// `flavor`, then drops the
/// database, also when the test panics.
pub async fn run<F>(backend: Backend, flavor: Flavor, test: F)
where
    F: AsyncFnOnce(&TestDb),
{
    let Some(db) = TestDb::for_flavor(backend, flavor).await else {
        return;
    };
    let outcome = AssertUnwindSafe(test(&db)).catch_unwind().await;
    db.drop_db().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic)
    }
}

/// A customer of `tenant` (named `c{tenant}`) and one order of it per item of `orders`
/// (an id of its own, or `None` for the shard's sequence, and the total), written through
/// the tenant's handle.
pub async fn customer_with_orders(
    tenancy: &Tenancy<i64>,
    tenant: i64,
    customer_id: Option<i64>,
    orders: impl IntoIterator<Item = (Option<i64>, i64)>,
) {
    let id = |id: Option<i64>| id.map_or(sea_orm::ActiveValue::NotSet, sea_orm::ActiveValue::Set);
    let db = tenancy.tenant(tenant).await.unwrap();
    let c = db
        .insert(customer::ActiveModel {
            id: id(customer_id),
            name: sea_orm::ActiveValue::Set(format!("c{tenant}")),
            ..Default::default()
        })
        .await
        .unwrap();
    for (order_id, total) in orders {
        db.insert(order::ActiveModel {
            id: id(order_id),
            customer_id: sea_orm::ActiveValue::Set(c.id),
            total_cents: sea_orm::ActiveValue::Set(total),
            ..Default::default()
        })
        .await
        .unwrap();
    }
}

/// A customer named `name`, to insert through a handle.
pub fn customer_named(name: &str) -> customer::ActiveModel {
    customer::ActiveModel {
        name: sea_orm::ActiveValue::Set(name.to_owned()),
        ..Default::default()
    }
}

/// The names of the customers `db` reads, sorted.
pub async fn customer_names<C: tenancy_sea::HandleConnection>(
    db: &tenancy_sea::TenantDb<i64, C>,
) -> Vec<String> {
    let mut names: Vec<String> = db
        .find::<customer::Entity>()
        .all()
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.name)
        .collect();
    names.sort();
    names
}

/// Runs a raw statement on `conn`, for tests that plant data past the framework.
pub async fn raw(conn: &DatabaseConnection, sql: &str) {
    conn.execute_raw(Statement::from_string(conn.get_database_backend(), sql))
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// A tenancy over the shards registered in `catalog`'s catalog (four connections each:
/// a move holds up to two on a shard while the tests watch it through a third),
/// routed by `directory`, new databases made from the catalog's template: what a process
/// of a sharded application builds; finish it with `.build()`.
pub async fn sharded_over(
    catalog: &TestDb,
    directory: &tenancy_sea::catalog::Directory<i64>,
) -> tenancy_sea::TenancyBuilder<i64> {
    let topology = tenancy_sea::catalog::Shards::new(catalog.conn.clone())
        .topology(directory.router().clone(), 4)
        .await
        .unwrap();
    let builder = Tenancy::builder(catalog.conn.clone())
        .sharded(topology)
        .directory(directory.clone());
    match catalog.template.clone() {
        Some(template) => builder.database_template(template),
        None => builder,
    }
}

/// Runs each `async fn name(backend: Backend)` of the calling test file as a test on
/// SQLite, PostgreSQL and MariaDB: `sqlite::name`, `postgres::name`, `mysql::name`.
#[macro_export]
macro_rules! on_every_backend {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() { super::$test($crate::Backend::Sqlite).await })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() { super::$test($crate::Backend::Postgres).await })*
        }
        mod mysql {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() { super::$test($crate::Backend::MySql).await })*
        }
    };
}

/// Declares each listed `async fn name(db: &TestDb)` as one test per valid combination of
/// isolation, placement and backend (the matrix in DEVELOPERS.md): in one database, row
/// level on every backend (`sqlite::name`, `postgres::name`, `mysql::name`), row-level
/// security (`postgres_rls::name`) and schema per tenant (`postgres_schema::name`); a
/// database per tenant on every backend (`sqlite_database::name`, ...); on two shards, row
/// level on every backend (`sqlite_sharded::name`, ...), row-level security
/// (`postgres_sharded_rls::name`) and schema per tenant (`postgres_sharded_schema::name`).
#[macro_export]
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        $crate::backend_tests!(@module sqlite, Sqlite, RowLevel, $($name),*);
        $crate::backend_tests!(@module postgres, Postgres, RowLevel, $($name),*);
        $crate::backend_tests!(@module postgres_rls, Postgres, Rls, $($name),*);
        $crate::backend_tests!(@module mysql, MySql, RowLevel, $($name),*);
        $crate::backend_tests!(@module postgres_schema, Postgres, Schema, $($name),*);
        $crate::backend_tests!(@module sqlite_database, Sqlite, Database, $($name),*);
        $crate::backend_tests!(@module postgres_database, Postgres, Database, $($name),*);
        $crate::backend_tests!(@module mysql_database, MySql, Database, $($name),*);
        $crate::backend_tests!(@module sqlite_sharded, Sqlite, ShardedRowLevel, $($name),*);
        $crate::backend_tests!(@module postgres_sharded, Postgres, ShardedRowLevel, $($name),*);
        $crate::backend_tests!(@module mysql_sharded, MySql, ShardedRowLevel, $($name),*);
        $crate::backend_tests!(@module postgres_sharded_rls, Postgres, ShardedRls, $($name),*);
        $crate::backend_tests!(@module postgres_sharded_schema, Postgres, ShardedSchema, $($name),*);
    };
    (@module $module:ident, $backend:ident, $flavor:ident, $($name:ident),*) => {
        mod $module {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                $crate::run(
                    $crate::Backend::$backend,
                    $crate::Flavor::$flavor,
                    super::$name,
                )
                .await
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
    #[doc = include_str!("../../docs/src/row-level-security.md")]
    pub mod row_level_security {}
    #[doc = include_str!("../../docs/src/schema-per-tenant.md")]
    pub mod schema_per_tenant {}
    #[doc = include_str!("../../docs/src/database-per-tenant.md")]
    pub mod database_per_tenant {}
    #[doc = include_str!("../../docs/src/sharding.md")]
    pub mod sharding {}
    #[doc = include_str!("../../docs/src/citus.md")]
    pub mod citus {}
    #[doc = include_str!("../../docs/src/metrics.md")]
    pub mod metrics {}
    #[doc = include_str!("../../docs/src/cli.md")]
    pub mod cli {}
    #[doc = include_str!("../../docs/src/web.md")]
    pub mod web {}
    #[doc = include_str!("../../docs/src/background.md")]
    pub mod background {}
}
