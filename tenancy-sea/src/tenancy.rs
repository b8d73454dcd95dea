//! [`Tenancy`]: built once, hands out tenant handles.

use crate::entity::TenantKey;
use crate::error::{Error, Result};
use crate::handle::TenantDb;
use crate::isolation::{Isolation, check_combination, raw_sql, validate_setting};
use crate::placement::{DatabaseTemplate, Placement, PoolCache, TenantRegistry};
use crate::scope::Session;
use crate::shard::{AcrossShards, Topology};
use sea_orm::{DatabaseConnection, DbBackend};
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;
use tenancy_core::{Identifier, KeyType};

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
            .field("isolation", &self.inner.isolation)
            .field("placement", &self.inner.placement)
            .finish_non_exhaustive()
    }
}

struct Inner<T> {
    conn: DatabaseConnection,
    admin: DatabaseConnection,
    isolation: Isolation,
    placement: Placement,
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

/// Configures a [`Tenancy`]: its [`Isolation`] (row level by default), its [`Placement`]
/// (one shared database by default) and the connections. The two choices are independent:
/// shards that each enforce row-level security, or keep a schema per tenant, are one
/// builder call each.
///
/// ```
/// # use tenancy_sea::prelude::*;
/// # use tenancy_sea::{Isolation, Placement};
/// # async fn demo(conn: sea_orm::DatabaseConnection, topology: tenancy_sea::Topology)
/// # -> tenancy_sea::Result<()> {
/// let tenancy: Tenancy<i64> = Tenancy::builder(conn)
///     .row_level_security("tenancy.tenant_id")
///     .sharded(topology)
///     .build()?;
/// assert_eq!(tenancy.placement(), Placement::Sharded);
/// assert!(matches!(tenancy.isolation(), Isolation::RowLevelSecurity { .. }));
/// # Ok(()) }
/// ```
#[must_use = "call `.build()` to get the `Tenancy`"]
pub struct TenancyBuilder<T> {
    conn: DatabaseConnection,
    admin: Option<DatabaseConnection>,
    isolation: Isolation,
    placement: Placement,
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
            .field("isolation", &self.isolation)
            .field("placement", &self.placement)
            .finish_non_exhaustive()
    }
}

impl<T: TenantKey> TenancyBuilder<T> {
    /// Row level isolation (the default): tables with a tenant column, filtered and
    /// stamped by the framework.
    pub fn row_level(mut self) -> Self {
        self.isolation = Isolation::RowLevel;
        self
    }

    /// Row level isolation enforced by PostgreSQL row-level security on `setting` (e.g.
    /// `tenancy.tenant_id`), in the shared database or on every shard. Create the
    /// policies with [`crate::rls`]; connect as a role that neither owns the tables nor is
    /// a superuser, or the policies do not apply.
    pub fn row_level_security(mut self, setting: impl Into<String>) -> Self {
        self.isolation = Isolation::RowLevelSecurity {
            setting: setting.into(),
        };
        self
    }

    /// One PostgreSQL schema per tenant, named `prefix` followed by the tenant id
    /// (`tenant_42`), in the shared database or on the tenant's shard. Provision schemas
    /// with [`Tenancy::create_tenant_schema`].
    pub fn schema_per_tenant(mut self, prefix: impl Into<String>) -> Self {
        self.isolation = Isolation::SchemaPerTenant {
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
        self.placement = Placement::DatabasePerTenant;
        self.registry = Some(Box::new(registry));
        self
    }

    /// Shards: each tenant's rows live on the shard `topology`'s router places it on,
    /// kept apart there by the isolation chosen. The connection given to
    /// [`Tenancy::builder`] is the admin (catalog) connection.
    pub fn sharded(mut self, topology: Topology) -> Self {
        self.placement = Placement::Sharded;
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

    /// How long an unused tenant pool is kept (default 5 minutes): past it the pool is
    /// dropped, and its connections close with the last handle using it.
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
        match &self.isolation {
            Isolation::RowLevel => {}
            Isolation::RowLevelSecurity { setting } => validate_setting(setting)?,
            Isolation::SchemaPerTenant { prefix } => {
                Identifier::for_tenant(prefix, &"x".to_owned())?;
            }
        }
        // The databases the isolation is kept on: the shared one, or every shard (a
        // tenant database may only use row level isolation, whatever its backend).
        let backends = match &self.topology {
            Some(topology) if self.placement == Placement::Sharded => topology.backends(),
            _ => vec![self.conn.get_database_backend()],
        };
        for backend in backends {
            check_combination(&self.isolation, self.placement, backend)?;
        }
        if let Some(topology) = &self.topology {
            let tenants = KeyType::of::<T>();
            if !topology.router().places(&tenants) {
                return Err(Error::Config(format!(
                    "the topology's router places keys of type {}, but the tenant ids are {}",
                    topology.router().key_type_name(),
                    tenants.name()
                )));
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
                isolation: self.isolation,
                placement: self.placement,
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

impl<T: TenantKey> Tenancy<T> {
    /// Starts configuring a `Tenancy` over `conn`, a SeaORM connection (pool).
    pub fn builder(conn: DatabaseConnection) -> TenancyBuilder<T> {
        TenancyBuilder {
            conn,
            admin: None,
            isolation: Isolation::RowLevel,
            placement: Placement::Shared,
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

    /// How tenants are kept apart.
    pub fn isolation(&self) -> &Isolation {
        &self.inner.isolation
    }

    /// Where tenants' data lives.
    pub fn placement(&self) -> Placement {
        self.inner.placement
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
        // Placement decides the connection; isolation, what each unit runs first there.
        let (conn, shard) = match self.inner.placement {
            Placement::Shared => (self.inner.conn.clone(), None),
            Placement::DatabasePerTenant => (self.tenant_pool(&tenant).await?, None),
            Placement::Sharded => {
                let topology = self.topology()?;
                let (shard, conn) = topology.shard_of(&tenant)?;
                // A shard added after `build` is held to the same rule.
                check_combination(
                    &self.inner.isolation,
                    Placement::Sharded,
                    conn.get_database_backend(),
                )?;
                (conn, Some((shard, topology.clone())))
            }
        };
        let backend = conn.get_database_backend();
        let session = self.session_of(&tenant, backend)?;
        let raw = raw_sql(&self.inner.isolation, self.inner.placement, backend);
        let handle = TenantDb::new(conn, tenant, session, raw);
        Ok(match shard {
            Some((shard, topology)) => handle.on_shard(shard, topology),
            None => handle,
        })
    }

    /// What each unit of work of `tenant` runs first on a database of `backend` under
    /// this isolation: nothing (row level), the row-level security setting, or the
    /// tenant schema's `search_path`. The one place a tenant's set-up is made: handles,
    /// fleet migrations and moves all take it from here.
    pub(crate) fn session_of(&self, tenant: &T, backend: DbBackend) -> Result<Option<Session>> {
        Ok(match &self.inner.isolation {
            Isolation::RowLevel => None,
            Isolation::RowLevelSecurity { setting } => Some(Session::set_config(
                backend,
                &[(setting.as_str(), tenant.to_string())],
            )),
            Isolation::SchemaPerTenant { prefix } => {
                let schema = Identifier::for_tenant(prefix, tenant)?;
                Some(Session::schema(
                    &schema,
                    tenant.to_string(),
                    self.inner.version_table.as_ref(),
                ))
            }
        })
    }

    /// The migrations table of each tenant schema, if the shape is read from one.
    pub(crate) fn version_table(&self) -> Option<&Identifier> {
        self.inner.version_table.as_ref()
    }

    /// The main connection (the application's), for the crate's own checks.
    pub(crate) fn connection(&self) -> &DatabaseConnection {
        &self.inner.conn
    }

    /// Checks that the database provides what the isolation relies on, and refuses to go
    /// on when it does not. [`Tenancy::tenant`] runs it before the first handle (and again
    /// after a failure, until it passes); call it at start to fail early.
    ///
    /// * Row-level security: the application role is no superuser and does not bypass
    ///   row-level security, and every table of a `TenantScoped` entity in this program
    ///   that exists in the database has row-level security enabled and forced, with the
    ///   library's policy on the tenant column and the setting
    ///   ([`Error::RlsNotEnforced`], naming the tables). Raw SQL is refused under this
    ///   isolation all the same; the check makes the policies a real second line.
    /// * Schema per tenant: no table of a `TenantScoped` entity exists in `public`, where
    ///   a tenant whose schema lacks it would find it ([`Error::Config`], naming it).
    ///
    /// The entities are those the derives registered in this program, whatever crate
    /// defines them.
    ///
    /// On shards, every shard is checked.
    pub async fn verify(&self) -> Result<()> {
        let conns = match self.placement() {
            Placement::Sharded => self
                .topology()?
                .shards()
                .into_iter()
                .map(|(_, conn)| conn)
                .collect(),
            _ => vec![self.connection().clone()],
        };
        crate::isolation::verify::check(&conns, self.isolation()).await?;
        self.mark_verified();
        Ok(())
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
                "tenant databases need the database-per-tenant placement, not {}",
                self.inner.placement.name()
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

    /// The shard topology (sharded placement).
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
