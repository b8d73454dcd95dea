//! [`Tenancy`]: built once, hands out tenant handles.

use crate::database::{DatabaseTemplate, PoolCache, TenantRegistry};
use crate::entity::TenantKey;
use crate::error::{Error, Result};
use crate::handle::TenantDb;
use crate::session::{RawSql, Session};
use crate::shard::{AcrossShards, Topology};
use sea_orm::{DatabaseConnection, DbBackend};
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;
use tenancy_core::{Identifier, KeyType};

/// How tenants are kept apart. Chosen in the [`TenancyBuilder`]; the entities and the
/// calls on the handles are the same under every strategy.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Strategy {
    /// Shared tables with a tenant column, filtered and stamped by the framework.
    RowLevel,
    /// As [`RowLevel`](Strategy::RowLevel), and enforced by PostgreSQL row-level security
    /// on the named setting, set per transaction with `set_config(name, $1, true)`.
    RowLevelSecurity {
        /// The setting the policies read, e.g. `tenancy.tenant_id`.
        setting: String,
    },
    /// One PostgreSQL schema per tenant, named `prefix` + the tenant id; each transaction
    /// sets `search_path` to it (then `public`, for global tables) with `set_config`.
    SchemaPerTenant {
        /// The schema name prefix, e.g. `tenant_`.
        prefix: String,
    },
    /// One database per tenant, found through a [`TenantRegistry`] and reached through a
    /// bounded cache of pools opened on first use.
    DatabasePerTenant,
    /// Shared tables on several shards: a [`Topology`]'s router places each tenant on one
    /// shard (the tenant id is the shard key), filtered and stamped as under row level.
    Sharded,
}

impl Strategy {
    /// Whether raw SQL through a tenant handle is confined to the tenant under this
    /// strategy on `backend`, or why not (see [`TenantDb::query_all_raw`]).
    pub(crate) fn raw_sql(&self, backend: DbBackend) -> RawSql {
        RawSql::Refused(match (self, backend) {
            (Strategy::DatabasePerTenant, DbBackend::Postgres) => return RawSql::Confined,
            (Strategy::RowLevel, _) => "under row level a raw statement has no tenant filter",
            (Strategy::RowLevelSecurity { .. }, _) => {
                "under row-level security a raw statement can change the setting the \
                 policies read (`set_config`) and read another tenant's rows"
            }
            (Strategy::SchemaPerTenant { .. }, _) => {
                "under schema per tenant a raw statement can name another tenant's schema \
                 or change `search_path`"
            }
            (Strategy::DatabasePerTenant, DbBackend::MySql) => {
                "under a MySQL/MariaDB database per tenant a raw statement can name another \
                 tenant's database or switch to it with `USE`"
            }
            (Strategy::DatabasePerTenant, _) => {
                "under a SQLite database per tenant a raw statement can `ATTACH` another \
                 tenant's file"
            }
            (Strategy::Sharded, _) => "on a shard a raw statement has no tenant filter",
        })
    }
}

/// The entry point: holds the connection and configuration, and hands out a
/// [`TenantDb`] per tenant.
///
/// `T` is the tenant id type shared by the tenant-scoped entities (`i64`, `String`,
/// `uuid::Uuid`, ...). Cloning is cheap: the connection pool is shared.
///
/// ```
/// # use tenancy_sea::prelude::*;
/// # async fn demo(conn: sea_orm::DatabaseConnection) -> tenancy_sea::Result<()> {
/// let tenancy: Tenancy<i64> = Tenancy::builder(conn).build()?;
/// let acme = tenancy.tenant(42).await?;
/// assert_eq!(*acme.tenant_id(), 42);
///
/// // Ids that arrive as text (a header, a subdomain) are parsed and validated.
/// assert!(tenancy.tenant_from_str("not-a-number").await.is_err());
/// # Ok(()) }
/// ```
pub struct Tenancy<T> {
    inner: Arc<Inner<T>>,
}

impl<T> Clone for Tenancy<T> {
    fn clone(&self) -> Self {
        Tenancy {
            inner: self.inner.clone(),
        }
    }
}

impl<T> std::fmt::Debug for Tenancy<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tenancy")
            .field("strategy", &self.inner.strategy)
            .finish_non_exhaustive()
    }
}

struct Inner<T> {
    conn: DatabaseConnection,
    admin: DatabaseConnection,
    strategy: Strategy,
    databases: Option<Databases<T>>,
    topology: Option<Arc<Topology>>,
    template: Option<DatabaseTemplate>,
    connections_per_pool: u32,
    /// The migrations table of each tenant schema, whose latest migration is the schema's
    /// shape (see [`TenancyBuilder::schema_version_table`]).
    version_table: Option<Identifier>,
    /// Set once [`Tenancy::verify`] has passed: the checks run before the first handle.
    verified: std::sync::OnceLock<()>,
}

/// What database per tenant needs.
pub(crate) struct Databases<T> {
    pub(crate) registry: Box<dyn TenantRegistry<T>>,
    pub(crate) template: Option<DatabaseTemplate>,
    pub(crate) pools: PoolCache<T>,
}

/// Configures a [`Tenancy`]: the strategy (row level by default) and the connections.
#[must_use = "call `.build()` to get the `Tenancy`"]
pub struct TenancyBuilder<T> {
    conn: DatabaseConnection,
    admin: Option<DatabaseConnection>,
    strategy: Strategy,
    registry: Option<Box<dyn TenantRegistry<T>>>,
    template: Option<DatabaseTemplate>,
    topology: Option<Topology>,
    max_open_pools: usize,
    pool_idle_timeout: Duration,
    connections_per_tenant: u32,
    version_table: Option<String>,
    id_type: PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for TenancyBuilder<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenancyBuilder")
            .field("strategy", &self.strategy)
            .finish_non_exhaustive()
    }
}

impl<T: TenantKey> TenancyBuilder<T> {
    /// Row level (the default): shared tables with a tenant column.
    pub fn row_level(mut self) -> Self {
        self.strategy = Strategy::RowLevel;
        self
    }

    /// Row level enforced by PostgreSQL row-level security on `setting` (e.g.
    /// `tenancy.tenant_id`). Create the policies with [`crate::rls`]; connect as a role
    /// that neither owns the tables nor is a superuser, or the policies do not apply.
    pub fn row_level_security(mut self, setting: impl Into<String>) -> Self {
        self.strategy = Strategy::RowLevelSecurity {
            setting: setting.into(),
        };
        self
    }

    /// One PostgreSQL schema per tenant, named `prefix` followed by the tenant id
    /// (`tenant_42`). Provision schemas with [`Tenancy::create_tenant_schema`].
    pub fn schema_per_tenant(mut self, prefix: impl Into<String>) -> Self {
        self.strategy = Strategy::SchemaPerTenant {
            prefix: prefix.into(),
        };
        self
    }

    /// The migrations table in each tenant schema (schema per tenant), `seaql_migrations`
    /// by default: each unit reads its latest migration, in the statement that sets
    /// `search_path`, so that tenants whose schemas differ (halfway through
    /// [`migrate_all`](crate::Tenancy::migrate_all)) never share a prepared statement,
    /// which PostgreSQL refuses with "cached plan must not change result type". `None`
    /// when tenant schemas are always alike (and changed only while no tenant is served).
    pub fn schema_version_table(mut self, table: Option<&str>) -> Self {
        self.version_table = table.map(str::to_owned);
        self
    }

    /// One database per tenant: `registry` maps each tenant to its database URL (use
    /// [`CatalogRegistry`](crate::CatalogRegistry) to keep it in a catalog database). Pools
    /// are opened on first use and cached, at most [`max_open_pools`](Self::max_open_pools).
    /// The connection given to [`Tenancy::builder`] is the catalog/admin connection.
    pub fn database_per_tenant(mut self, registry: impl TenantRegistry<T>) -> Self {
        self.strategy = Strategy::DatabasePerTenant;
        self.registry = Some(Box::new(registry));
        self
    }

    /// Shards: each tenant's rows live on the shard `topology`'s router places it on. The
    /// connection given to [`Tenancy::builder`] is the admin (catalog) connection.
    pub fn sharded(mut self, topology: Topology) -> Self {
        self.strategy = Strategy::Sharded;
        self.topology = Some(topology);
        self
    }

    /// How [`Tenancy::create_tenant_database`] names and creates a new tenant database.
    pub fn database_template(mut self, template: DatabaseTemplate) -> Self {
        self.template = Some(template);
        self
    }

    /// The most tenant pools open at once (default 50); the least recently used is
    /// dropped to make room.
    pub fn max_open_pools(mut self, max: usize) -> Self {
        self.max_open_pools = max;
        self
    }

    /// How long an unused tenant pool (and an idle connection in it) is kept (default
    /// 5 minutes).
    pub fn pool_idle_timeout(mut self, timeout: Duration) -> Self {
        self.pool_idle_timeout = timeout;
        self
    }

    /// The most connections in one pool the framework opens: a tenant database's, or a
    /// shard's made by [`Tenancy::create_shard`] (default 4).
    pub fn connections_per_tenant(mut self, max: u32) -> Self {
        self.connections_per_tenant = max;
        self
    }

    /// The connection [`Tenancy::unscoped`] returns, for admin work: typically a role that
    /// owns the tables or bypasses row-level security. By default, the main connection.
    pub fn admin_connection(mut self, admin: DatabaseConnection) -> Self {
        self.admin = Some(admin);
        self
    }

    /// Checks the configuration and builds the [`Tenancy`].
    pub fn build(self) -> Result<Tenancy<T>> {
        let backend = self.conn.get_database_backend();
        match &self.strategy {
            Strategy::RowLevel => {}
            Strategy::RowLevelSecurity { setting } => {
                require_postgres(backend, "row-level security")?;
                validate_setting(setting)?;
            }
            Strategy::SchemaPerTenant { prefix } => {
                require_postgres(backend, "schema per tenant")?;
                Identifier::for_tenant(prefix, &"x".to_owned())?;
            }
            Strategy::DatabasePerTenant => {}
            Strategy::Sharded => {
                if let Some(topology) = &self.topology {
                    let tenants = KeyType::of::<T>();
                    if !topology.router().places(&tenants) {
                        return Err(Error::Config(format!(
                            "the topology's router places keys of type {}, but the tenant \
                             ids are {}",
                            topology.router().key_type_name(),
                            tenants.name()
                        )));
                    }
                }
            }
        }
        if let Some(
            DatabaseTemplate::Server { prefix, .. } | DatabaseTemplate::SqliteDir { prefix, .. },
        ) = &self.template
        {
            Identifier::for_tenant(prefix, &"x".to_owned())?;
        }
        let databases = match self.registry {
            Some(registry) => Some(Databases {
                registry,
                template: self.template.clone(),
                pools: PoolCache::new(
                    self.max_open_pools,
                    self.pool_idle_timeout,
                    self.connections_per_tenant,
                ),
            }),
            None => None,
        };
        let admin = self.admin.unwrap_or_else(|| self.conn.clone());
        let version_table = self
            .version_table
            .as_deref()
            .map(Identifier::new)
            .transpose()?;
        Ok(Tenancy {
            inner: Arc::new(Inner {
                conn: self.conn,
                admin,
                strategy: self.strategy,
                databases,
                topology: self.topology.map(Arc::new),
                template: self.template,
                connections_per_pool: self.connections_per_tenant,
                version_table,
                verified: std::sync::OnceLock::new(),
            }),
        })
    }
}

fn require_postgres(backend: DbBackend, what: &str) -> Result<()> {
    if backend == DbBackend::Postgres {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "{what} needs PostgreSQL; this connection is {backend:?}"
        )))
    }
}

/// A custom PostgreSQL setting is `prefix.name`, each part a plain identifier.
pub(crate) fn validate_setting(setting: &str) -> Result<()> {
    let mut parts = setting.split('.');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(prefix), Some(name), None) => {
            Identifier::new(prefix)?;
            Identifier::new(name)?;
            Ok(())
        }
        _ => Err(Error::Config(format!(
            "row-level security setting {setting:?} must look like `prefix.name`"
        ))),
    }
}

impl<T: TenantKey> Tenancy<T> {
    /// Starts configuring a `Tenancy` over `conn`, a SeaORM connection (pool).
    pub fn builder(conn: DatabaseConnection) -> TenancyBuilder<T> {
        TenancyBuilder {
            conn,
            admin: None,
            strategy: Strategy::RowLevel,
            registry: None,
            template: None,
            topology: None,
            max_open_pools: 50,
            pool_idle_timeout: Duration::from_secs(300),
            connections_per_tenant: 4,
            version_table: Some("seaql_migrations".to_owned()),
            id_type: PhantomData,
        }
    }

    /// The strategy in force.
    pub fn strategy(&self) -> &Strategy {
        &self.inner.strategy
    }

    /// The handle of one tenant. The id is validated first
    /// ([`TenantId::validate`](crate::TenantId::validate)); an invalid one is
    /// [`Error::InvalidTenantId`](crate::Error::InvalidTenantId) (or
    /// [`Error::InvalidIdentifier`](crate::Error::InvalidIdentifier) when it cannot name a
    /// schema) and no handle is made.
    pub async fn tenant(&self, id: impl Into<T>) -> Result<TenantDb<T>> {
        let tenant = id.into();
        tenant.validate()?;
        if self.inner.verified.get().is_none() {
            self.verify().await?;
        }
        let strategy = &self.inner.strategy;
        let backend = self.inner.conn.get_database_backend();
        let session = match strategy {
            Strategy::DatabasePerTenant => {
                let conn = self.tenant_pool(&tenant).await?;
                let raw_sql = strategy.raw_sql(conn.get_database_backend());
                return Ok(TenantDb::new(conn, tenant, None, raw_sql));
            }
            Strategy::Sharded => {
                let topology = self.topology()?;
                let (shard, conn) = topology.shard_of(&tenant)?;
                let raw_sql = strategy.raw_sql(conn.get_database_backend());
                return Ok(
                    TenantDb::new(conn, tenant, None, raw_sql).on_shard(shard, topology.clone())
                );
            }
            Strategy::RowLevel => None,
            Strategy::RowLevelSecurity { setting } => Some(Session::set_config(
                backend,
                &[(setting.as_str(), tenant.to_string())],
            )),
            Strategy::SchemaPerTenant { prefix } => {
                let schema = Identifier::for_tenant(prefix, &tenant)?;
                Some(Session::schema(
                    &schema,
                    tenant.to_string(),
                    self.inner.version_table.as_ref(),
                ))
            }
        };
        Ok(TenantDb::new(
            self.inner.conn.clone(),
            tenant,
            session,
            strategy.raw_sql(backend),
        ))
    }

    /// The main connection (the application's), for the crate's own checks.
    pub(crate) fn connection(&self) -> &DatabaseConnection {
        &self.inner.conn
    }

    /// Records that [`Tenancy::verify`] passed.
    pub(crate) fn mark_verified(&self) {
        let _ = self.inner.verified.set(());
    }

    /// The open pool of `tenant`'s database, opening it on first use.
    async fn tenant_pool(&self, tenant: &T) -> Result<DatabaseConnection> {
        let databases = self.databases()?;
        if let Some(conn) = databases.pools.get(tenant) {
            return Ok(conn);
        }
        let url = databases
            .registry
            .url(tenant)
            .await?
            .ok_or_else(|| Error::UnknownTenant {
                tenant: tenant.to_string(),
            })?;
        databases.pools.open(tenant, &url).await
    }

    pub(crate) fn databases(&self) -> Result<&Databases<T>> {
        self.inner.databases.as_ref().ok_or_else(|| {
            Error::Config(format!(
                "tenant databases need the database-per-tenant strategy, not {:?}",
                self.inner.strategy
            ))
        })
    }

    /// How new databases are named and created (tenant databases, shards).
    pub(crate) fn template(&self) -> Option<&DatabaseTemplate> {
        self.inner.template.as_ref()
    }

    /// The most connections in a pool the framework opens (a tenant's, a shard's).
    pub(crate) fn shard_connections(&self) -> u32 {
        self.inner.connections_per_pool
    }

    /// The shard topology (sharded strategy).
    pub fn topology(&self) -> Result<&Arc<Topology>> {
        self.inner
            .topology
            .as_ref()
            .ok_or_else(|| Error::Config("no shard topology configured".to_owned()))
    }

    /// Reads across every shard with no tenant filter (admin work, reports): the
    /// explicit, greppable form of a fan-out. See [`AcrossShards`].
    pub fn unscoped_across_shards(&self) -> Result<AcrossShards> {
        tracing::debug!(target: "tenancy::unscoped", "scatter-gather handed out");
        Ok(AcrossShards::new(self.topology()?))
    }

    /// How many tenant pools are open (database per tenant).
    pub fn open_pools(&self) -> usize {
        self.inner.databases.as_ref().map_or(0, |d| d.pools.len())
    }

    /// Parses a tenant id from text, validates it and returns its handle.
    pub async fn tenant_from_str(&self, input: &str) -> Result<TenantDb<T>> {
        self.tenant(T::parse_tenant_id(input)?).await
    }

    /// The admin connection, with no tenant scoping at all: the named escape hatch for
    /// admin work (migrations, support tools, moving rows between tenants).
    ///
    /// Every use is greppable: `grep -rn 'unscoped()'` lists every place that can see
    /// all tenants' data.
    pub fn unscoped(&self) -> &DatabaseConnection {
        tracing::debug!(target: "tenancy::unscoped", "unscoped connection handed out");
        &self.inner.admin
    }
}
