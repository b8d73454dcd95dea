//! [`TenancyBuilder`]: the isolation, the placement and the connections of a [`Tenancy`],
//! checked once, when it is built.

use super::{Databases, Inner, Tenancy};
use crate::catalog::{Directory, UniqueIds};
use crate::entity::SqlTenantId;
use crate::error::{Error, Result};
use crate::isolation::{Isolation, check_combination, validate_setting};
use crate::placement::{DatabaseTemplate, Placement, PoolCache, TenantRegistry};
use crate::shard::{PoolOptions, Topology};
use sea_orm::DatabaseConnection;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;
use tenancy_core::{DirectoryRouter, Identifier, KeyType};
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
    directory: Option<Directory<T>>,
    max_open_pools: usize,
    pool_idle_timeout: Duration,
    tenant_pool: PoolOptions,
    version_table: Option<String>,
    metrics_tenant_label: bool,
    unique_ids: Option<UniqueIds>,
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

impl<T: SqlTenantId> Tenancy<T> {
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
            directory: None,
            max_open_pools: 50,
            pool_idle_timeout: Duration::from_secs(300),
            tenant_pool: PoolOptions::default(),
            version_table: Some("seaql_migrations".to_owned()),
            metrics_tenant_label: false,
            unique_ids: None,
            id_type: PhantomData,
        }
    }
}

impl<T: SqlTenantId> TenancyBuilder<T> {
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
    /// [`TenantDatabases`](crate::catalog::TenantDatabases) to keep it in a catalog database). Pools
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

    /// A Citus cluster ([`Placement::Citus`]): the connection given to
    /// [`Tenancy::builder`] is the coordinator's, opened with the fan-out guard
    /// ([`citus::guard`](crate::citus::guard)); the tables are distributed by
    /// [`citus::distribute`](crate::citus::distribute). Works with every isolation.
    ///
    /// ```
    /// # use tenancy_sea::prelude::*;
    /// # use tenancy_sea::Placement;
    /// # fn demo(coordinator: sea_orm::DatabaseConnection) -> tenancy_sea::Result<()> {
    /// let tenancy: Tenancy<i64> = Tenancy::builder(coordinator)
    ///     .row_level_security("tenancy.tenant_id")
    ///     .citus()
    ///     .build()?;
    /// assert_eq!(tenancy.placement(), Placement::Citus);
    /// # Ok(()) }
    /// ```
    pub fn citus(mut self) -> Self {
        self.placement = Placement::Citus;
        self
    }

    /// The catalog directory that places tenants on the shards, when the topology routes
    /// by a [`DirectoryRouter`]: the one given here, once, is what
    /// [`move_tenant`](Tenancy::move_tenant), [`refresh_catalog`](Tenancy::refresh_catalog),
    /// [`watch_catalog`](Tenancy::watch_catalog) and
    /// [`remove_leftovers`](Tenancy::remove_leftovers) work through. It must keep the
    /// router the topology routes by (the topology made over `directory.router()`), or
    /// [`build`](Self::build) refuses it: a move would switch a router no handle reads.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use tenancy_sea::catalog::Directory;
    /// # use tenancy_sea::{DirectoryRouter, Tenancy, Topology};
    /// # async fn demo(
    /// #     catalog: sea_orm::DatabaseConnection,
    /// #     shards: Vec<(tenancy_sea::ShardId, sea_orm::DatabaseConnection)>,
    /// # ) -> tenancy_sea::Result<()> {
    /// let directory = Directory::<i64>::new(catalog.clone(), Arc::new(DirectoryRouter::new(["s0", "s1"])));
    /// directory.load().await?;
    /// let topology = Topology::new(directory.router().clone(), shards)?;
    /// let tenancy = Tenancy::builder(catalog)
    ///     .sharded(topology)
    ///     .directory(directory)
    ///     .build()?;
    /// # Ok(()) }
    /// ```
    pub fn directory(mut self, directory: Directory<T>) -> Self {
        self.directory = Some(directory);
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

    /// The most connections in one pool the framework opens for a tenant database
    /// (default 4): the `max_connections` of
    /// [`tenant_pool_options`](Self::tenant_pool_options).
    pub fn connections_per_tenant(mut self, max: u32) -> Self {
        self.tenant_pool = self.tenant_pool.with_max_connections(max);
        self
    }

    /// How the framework opens a tenant database's pool (default: [`PoolOptions`] of 4
    /// connections); also a new shard's when the topology has no pool options of its own
    /// ([`Topology::with_pool_options`], which
    /// [`Shards::topology`](crate::catalog::Shards::topology) sets).
    pub fn tenant_pool_options(mut self, options: impl Into<PoolOptions>) -> Self {
        self.tenant_pool = options.into();
        self
    }

    /// The connection [`Tenancy::unscoped`] returns, for admin work: typically a role that
    /// owns the tables or bypasses row-level security. By default, the main connection.
    pub fn admin_connection(mut self, admin: DatabaseConnection) -> Self {
        self.admin = Some(admin);
        self
    }

    /// Labels every statement's metrics with its tenant too (`tenant="42"`; off by
    /// default). Each tenant then makes series of its own, one per operation, shard and
    /// error kind: with many tenants that is more series than a metrics store is glad to
    /// keep, so turn it on where tenants are few, or drop or aggregate the label in the
    /// exporter or the store. See the metrics chapter of the guide.
    #[cfg(feature = "metrics")]
    pub fn metrics_tenant_label(mut self, on: bool) -> Self {
        self.metrics_tenant_label = on;
        self
    }

    /// The generator that fills the key of an entity marked `#[unique_id]` when a handle
    /// inserts a row whose key is not set: ids unique across shards and processes, so a
    /// tenant's rows keep their keys when it moves. Without one such an insert is
    /// [`UniqueIdError::NotConfigured`](crate::UniqueIdError::NotConfigured).
    ///
    /// ```no_run
    /// # use tenancy_sea::prelude::*;
    /// # async fn demo(catalog: sea_orm::DatabaseConnection) -> tenancy_sea::Result<()> {
    /// use tenancy_sea::catalog::UniqueIds;
    ///
    /// let ids = UniqueIds::new(catalog.clone());
    /// ids.install().await?;
    /// let tenancy: Tenancy<i64> = Tenancy::builder(catalog).unique_ids(ids).build()?;
    /// # Ok(()) }
    /// ```
    pub fn unique_ids(mut self, ids: UniqueIds) -> Self {
        self.unique_ids = Some(ids);
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
        if let Some(directory) = &self.directory {
            let kept = self.topology.as_ref().is_some_and(|topology| {
                topology
                    .router()
                    .as_any()
                    .and_then(|router| router.downcast_ref::<DirectoryRouter<T>>())
                    .is_some_and(|router| std::ptr::eq(router, &**directory.router()))
            });
            if self.placement != Placement::Sharded || !kept {
                return Err(Error::Config(
                    "the directory given to the builder must keep the router the sharded \
                     topology routes tenants by: make the topology over `directory.router()`"
                        .to_owned(),
                ));
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
                    self.tenant_pool.clone(),
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
        let meter = super::shared_meter(&self.isolation, self.placement);
        Ok(Tenancy {
            inner: Arc::new(Inner {
                conn: self.conn,
                admin,
                isolation: self.isolation,
                placement: self.placement,
                databases,
                topology: self.topology.map(Arc::new),
                directory: self.directory,
                template: self.template,
                tenant_pool: self.tenant_pool,
                version_table,
                shapes: Arc::default(),
                verified: std::sync::OnceLock::new(),
                tenant_label: self.metrics_tenant_label,
                meter,
                unique_ids: self
                    .unique_ids
                    .map(|ids| Arc::new(ids) as Arc<dyn crate::scope::IssueIds>),
            }),
        })
    }
}
