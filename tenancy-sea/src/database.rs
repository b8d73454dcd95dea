//! Database per tenant: where each tenant's database is ([`TenantRegistry`], kept in a
//! catalog database by [`CatalogRegistry`]), how a new one is named and created
//! ([`DatabaseTemplate`]), and the bounded cache of open pools.

use crate::entity::TenantKey;
use crate::error::{Error, Result};
use futures_util::future::BoxFuture;
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, DbErr, EntityTrait,
    QueryOrder, Schema, Set, Statement,
};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tenancy_core::Identifier;

/// Where each tenant's database is: tenant id → connection URL.
///
/// [`CatalogRegistry`] keeps the map in a catalog database; implement this trait to keep
/// it elsewhere (a config service, a file). Implementations must be consistent: a tenant
/// is listed exactly when [`url`](TenantRegistry::url) finds it.
pub trait TenantRegistry<T>: Send + Sync + 'static {
    /// The URL of `tenant`'s database, or `None` when the tenant is unknown.
    fn url<'a>(&'a self, tenant: &'a T) -> BoxFuture<'a, Result<Option<String>>>;
    /// Records `tenant` at `url`. Registering a known tenant is an error.
    fn register<'a>(&'a self, tenant: &'a T, url: &'a str) -> BoxFuture<'a, Result<()>>;
    /// Forgets `tenant`.
    fn unregister<'a>(&'a self, tenant: &'a T) -> BoxFuture<'a, Result<()>>;
    /// Every registered tenant.
    fn tenants(&self) -> BoxFuture<'_, Result<Vec<T>>>;
}

/// The framework's own catalog entity: one row per tenant database.
pub mod catalog {
    use sea_orm::entity::prelude::*;

    /// A registered tenant: its id (as text) and its database URL.
    #[derive(Clone, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "tenancy_tenants")]
    pub struct Model {
        /// The tenant id, in its text form.
        #[sea_orm(primary_key, auto_increment = false)]
        pub tenant_id: String,
        /// The URL of the tenant's database.
        pub url: String,
    }

    /// No relations.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}

    /// The URL's password is hidden.
    impl std::fmt::Debug for Model {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("Model")
                .field("tenant_id", &self.tenant_id)
                .field("url", &crate::redact::url(&self.url))
                .finish()
        }
    }
}

/// A [`TenantRegistry`] in a catalog database (any backend), in the framework's own table
/// `tenancy_tenants (tenant_id, url)` ([`catalog::Entity`]). The tenant id is stored as its
/// text form.
#[derive(Clone, Debug)]
pub struct CatalogRegistry {
    conn: DatabaseConnection,
}

impl CatalogRegistry {
    /// The name of the catalog table.
    pub const TABLE: &'static str = "tenancy_tenants";

    /// A registry over `conn`; call [`install`](Self::install) once to create its table.
    pub fn new(conn: DatabaseConnection) -> Self {
        CatalogRegistry { conn }
    }

    /// Creates the catalog table if it does not exist.
    pub async fn install(&self) -> Result<()> {
        create_table_if_missing(&self.conn, catalog::Entity).await
    }

    /// The database URL of `tenant`, if registered: [`TenantRegistry::url`], callable as
    /// `registry.url(&tenant)` (the id's type picks the registry).
    pub async fn url<T: TenantKey>(&self, tenant: &T) -> Result<Option<String>> {
        TenantRegistry::<T>::url(self, tenant).await
    }

    /// Registers `tenant` at `url` ([`TenantRegistry::register`]).
    pub async fn register<T: TenantKey>(&self, tenant: &T, url: &str) -> Result<()> {
        TenantRegistry::<T>::register(self, tenant, url).await
    }

    /// Forgets `tenant` ([`TenantRegistry::unregister`]).
    pub async fn unregister<T: TenantKey>(&self, tenant: &T) -> Result<()> {
        TenantRegistry::<T>::unregister(self, tenant).await
    }

    /// Every registered tenant, as ids of type `T` ([`TenantRegistry::tenants`]):
    /// `registry.tenants::<i64>()`.
    pub async fn tenants<T: TenantKey>(&self) -> Result<Vec<T>> {
        TenantRegistry::<T>::tenants(self).await
    }
}

/// Creates `entity`'s table on `conn` unless it exists: how every framework table of a
/// catalog database is installed.
///
/// On MySQL/MariaDB its text columns compare byte for byte (a binary collation, without
/// padding where the server has one): under the server's default collation `'ACME'`,
/// `'acme'` and `'ácmé'` would be one key, and a catalog would give one tenant another's
/// database or shard. A table made before with another collation is converted.
pub(crate) async fn create_table_if_missing<E: EntityTrait>(
    conn: &DatabaseConnection,
    entity: E,
) -> Result<()> {
    let backend = conn.get_database_backend();
    let table = entity.table_name();
    let mut create = Schema::new(backend).create_table_from_entity(entity);
    create.if_not_exists();
    if backend != DbBackend::MySql {
        conn.execute(&create).await?;
        return Ok(());
    }
    let collation = exact_collation(conn).await?;
    create.character_set("utf8mb4").collate(collation.as_str());
    conn.execute(&create).await?;
    let inexact = conn
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::MySql,
            "SELECT COUNT(*) AS n FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = \
             DATABASE() AND TABLE_NAME = ? AND COLLATION_NAME IS NOT NULL AND \
             COLLATION_NAME <> ?",
            [table.into(), collation.as_str().into()],
        ))
        .await?;
    let inexact: i64 = match inexact {
        Some(row) => row.try_get("", "n")?,
        None => 0,
    };
    if inexact > 0 {
        // The names are the framework's own table and a collation the server listed.
        conn.execute_unprepared(&format!(
            "ALTER TABLE `{table}` CONVERT TO CHARACTER SET utf8mb4 COLLATE {collation}"
        ))
        .await?;
        tracing::info!(
            table,
            collation,
            "catalog table converted to an exact collation"
        );
    }
    Ok(())
}

/// The binary utf8mb4 collation of this MySQL/MariaDB server that does not pad: MariaDB's
/// `utf8mb4_nopad_bin`, MySQL 8's `utf8mb4_0900_bin`, else `utf8mb4_bin` (which ignores
/// trailing spaces, which no valid key has).
async fn exact_collation(conn: &DatabaseConnection) -> Result<String> {
    let rows = conn
        .query_all_raw(Statement::from_string(
            DbBackend::MySql,
            "SELECT COLLATION_NAME AS name FROM information_schema.COLLATIONS WHERE \
             COLLATION_NAME IN ('utf8mb4_nopad_bin', 'utf8mb4_0900_bin')",
        ))
        .await?;
    let mut names = Vec::with_capacity(rows.len());
    for row in rows {
        names.push(row.try_get::<String>("", "name")?);
    }
    Ok(["utf8mb4_nopad_bin", "utf8mb4_0900_bin"]
        .into_iter()
        .find(|name| names.iter().any(|n| n == name))
        .unwrap_or("utf8mb4_bin")
        .to_owned())
}

impl<T: TenantKey> TenantRegistry<T> for CatalogRegistry {
    fn url<'a>(&'a self, tenant: &'a T) -> BoxFuture<'a, Result<Option<String>>> {
        Box::pin(async move {
            let row = catalog::Entity::find_by_id(tenant.to_string())
                .one(&self.conn)
                .await?;
            Ok(row.map(|row| row.url))
        })
    }

    fn register<'a>(&'a self, tenant: &'a T, url: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            catalog::Entity::insert(catalog::ActiveModel {
                tenant_id: Set(tenant.to_string()),
                url: Set(url.to_owned()),
            })
            .exec_without_returning(&self.conn)
            .await?;
            Ok(())
        })
    }

    fn unregister<'a>(&'a self, tenant: &'a T) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            catalog::Entity::delete_by_id(tenant.to_string())
                .exec(&self.conn)
                .await?;
            Ok(())
        })
    }

    fn tenants(&self) -> BoxFuture<'_, Result<Vec<T>>> {
        Box::pin(async move {
            catalog::Entity::find()
                .order_by_asc(catalog::Column::TenantId)
                .all(&self.conn)
                .await?
                .iter()
                .map(|row| Ok(T::parse_tenant_id(&row.tenant_id)?))
                .collect()
        })
    }
}

/// How a new tenant database is named and where it is created: `prefix` followed by the
/// tenant id, validated as an identifier (so a hostile id never reaches DDL). Its `Debug`
/// output hides the server URL's password.
#[derive(Clone)]
pub enum DatabaseTemplate {
    /// A database on the PostgreSQL or MySQL/MariaDB server at `server_url` (any database
    /// on it; the URL's user must be allowed to create databases). On MariaDB this is also
    /// the equivalent of schema per tenant.
    Server {
        /// A URL of the server.
        server_url: String,
        /// The database name prefix.
        prefix: String,
    },
    /// A SQLite file `prefix<id>.db` in `dir`.
    SqliteDir {
        /// The directory of the files.
        dir: PathBuf,
        /// The file name prefix.
        prefix: String,
    },
}

impl std::fmt::Debug for DatabaseTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DatabaseTemplate::Server { server_url, prefix } => f
                .debug_struct("Server")
                .field("server_url", &crate::redact::url(server_url))
                .field("prefix", prefix)
                .finish(),
            DatabaseTemplate::SqliteDir { dir, prefix } => f
                .debug_struct("SqliteDir")
                .field("dir", dir)
                .field("prefix", prefix)
                .finish(),
        }
    }
}

/// The options of every pool the framework opens (tenant databases, shards): at most
/// `max_connections`, none kept open when idle, and no test query before each checkout
/// (`test_before_acquire(false)`): SeaORM's default pings the server before every
/// statement, a round trip that costs a point read about 40%. A connection the server
/// closed fails the statement that uses it, with the driver's error, and leaves the pool.
pub(crate) fn pool_options(url: &str, max_connections: u32) -> ConnectOptions {
    let mut options = ConnectOptions::new(url.to_owned());
    options
        .max_connections(max_connections.max(1))
        .min_connections(0)
        .test_before_acquire(false);
    options
}

/// Opens a pool: SeaORM's `Database::connect`, with the URL's password hidden in the
/// error (the driver's message can carry the whole URL). Every connection the library
/// opens goes through here.
pub(crate) async fn connect(
    options: impl Into<ConnectOptions>,
) -> std::result::Result<DatabaseConnection, DbErr> {
    let options: ConnectOptions = options.into();
    let url = options.get_url().to_owned();
    Database::connect(options)
        .await
        .map_err(|error| crate::redact::connect_error(&url, error))
}

/// A tenant database about to be made.
pub(crate) struct PlannedDatabase {
    pub(crate) name: Identifier,
    pub(crate) url: String,
}

impl DatabaseTemplate {
    pub(crate) fn plan<T: TenantKey>(&self, tenant: &T) -> Result<PlannedDatabase> {
        match self {
            DatabaseTemplate::Server { server_url, prefix } => {
                let name = Identifier::for_tenant(prefix, tenant)?;
                let url = with_path(server_url, name.as_str())?;
                Ok(PlannedDatabase { name, url })
            }
            DatabaseTemplate::SqliteDir { dir, prefix } => {
                let name = Identifier::for_tenant(prefix, tenant)?;
                let path = dir.join(format!("{}.db", name.as_str()));
                Ok(PlannedDatabase {
                    name,
                    url: format!("sqlite://{}?mode=rwc", path.display()),
                })
            }
        }
    }

    /// Creates the database (a server `CREATE DATABASE`, or an empty SQLite file).
    /// Fails when it exists already, so that a concurrent creation of the same tenant
    /// never goes on to use (or, on failure, drop) a database it did not make.
    pub(crate) async fn create(&self, db: &PlannedDatabase) -> Result<()> {
        match self {
            DatabaseTemplate::Server { server_url, .. } => {
                let server = connect(server_url.as_str()).await?;
                let sql = format!("CREATE DATABASE {}", quoted_for(&server, &db.name));
                let result = server.execute_unprepared(&sql).await;
                let _ = server.close().await;
                result?;
            }
            DatabaseTemplate::SqliteDir { dir, .. } => {
                let path = dir.join(format!("{}.db", db.name.as_str()));
                std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&path)
                    .map_err(|err| {
                        Error::Config(format!("cannot create {}: {err}", path.display()))
                    })?;
            }
        }
        Ok(())
    }

    /// Drops the database (or deletes the SQLite file).
    pub(crate) async fn drop_database(&self, db: &PlannedDatabase) -> Result<()> {
        match self {
            DatabaseTemplate::Server { server_url, .. } => {
                let server = connect(server_url.as_str()).await?;
                let name = quoted_for(&server, &db.name);
                let sql = if server.get_database_backend() == DbBackend::Postgres {
                    format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")
                } else {
                    format!("DROP DATABASE IF EXISTS {name}")
                };
                let result = server.execute_unprepared(&sql).await;
                let _ = server.close().await;
                result?;
            }
            DatabaseTemplate::SqliteDir { dir, .. } => {
                for suffix in ["", "-wal", "-shm"] {
                    let path = dir.join(format!("{}.db{suffix}", db.name.as_str()));
                    match std::fs::remove_file(&path) {
                        Ok(()) => {}
                        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                        Err(err) => {
                            return Err(Error::Config(format!(
                                "cannot delete {}: {err}",
                                path.display()
                            )));
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

fn quoted_for(conn: &DatabaseConnection, name: &Identifier) -> String {
    match conn.get_database_backend() {
        DbBackend::MySql => name.backquoted(),
        _ => name.quoted(),
    }
}

/// `url` with its path (the database) replaced by `/name`, query string kept.
fn with_path(url: &str, name: &str) -> Result<String> {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority_start = base
        .find("://")
        .map(|i| i + 3)
        .ok_or_else(|| Error::Config(format!("not a database URL: {}", crate::redact::url(url))))?;
    let path_start = base[authority_start..]
        .find('/')
        .map_or(base.len(), |i| authority_start + i);
    let mut out = format!("{}/{name}", &base[..path_start]);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    Ok(out)
}

/// Open pools, one per tenant, at most `max_open`, least recently used evicted first, and
/// any unused for `idle_timeout` dropped.
///
/// An evicted pool is dropped, not closed: handles still holding it finish their work,
/// and its connections close when the last handle goes.
pub(crate) struct PoolCache<T> {
    max_open: usize,
    idle_timeout: Duration,
    connections_per_pool: u32,
    pools: Mutex<HashMap<T, (DatabaseConnection, Instant)>>,
}

impl<T: TenantKey> PoolCache<T> {
    pub(crate) fn new(max_open: usize, idle_timeout: Duration, connections_per_pool: u32) -> Self {
        PoolCache {
            max_open: Ord::max(max_open, 1),
            idle_timeout,
            connections_per_pool: Ord::max(connections_per_pool, 1),
            pools: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<T, (DatabaseConnection, Instant)>> {
        // A panic while holding the lock leaves a consistent map (every update is one
        // insert or remove), so a poisoned lock is still usable.
        self.pools
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The open pool of `tenant`, refreshed as most recently used.
    pub(crate) fn get(&self, tenant: &T) -> Option<DatabaseConnection> {
        let mut pools = self.lock();
        let entry = pools.get_mut(tenant)?;
        entry.1 = Instant::now();
        Some(entry.0.clone())
    }

    /// Opens a pool for `tenant` at `url` and caches it, evicting as needed.
    pub(crate) async fn open(&self, tenant: &T, url: &str) -> Result<DatabaseConnection> {
        let mut options = pool_options(url, self.connections_per_pool);
        options.idle_timeout(self.idle_timeout);
        let conn = connect(options).await?;
        let mut pools = self.lock();
        if let Some(existing) = pools.get_mut(tenant) {
            // Another task opened it meanwhile: use that one, drop ours.
            existing.1 = Instant::now();
            return Ok(existing.0.clone());
        }
        let now = Instant::now();
        pools.retain(|_, (_, used)| now.duration_since(*used) < self.idle_timeout);
        while pools.len() >= self.max_open {
            let Some(oldest) = pools
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(id, _)| id.clone())
            else {
                break;
            };
            pools.remove(&oldest);
        }
        pools.insert(tenant.clone(), (conn.clone(), now));
        Ok(conn)
    }

    /// Forgets `tenant`'s pool.
    pub(crate) fn evict(&self, tenant: &T) {
        self.lock().remove(tenant);
    }

    /// How many pools are open.
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_get_the_tenant_database() {
        assert_eq!(
            with_path("postgres://u@h:5432/test?sslmode=disable", "t_1").unwrap(),
            "postgres://u@h:5432/t_1?sslmode=disable"
        );
        assert_eq!(
            with_path("mysql://root@h", "t_1").unwrap(),
            "mysql://root@h/t_1"
        );
        assert!(with_path("nonsense", "t_1").is_err());
    }
}
