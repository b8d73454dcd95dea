//! [`Tenancy`]: built once, hands out tenant handles.

mod builder;

pub use builder::TenancyBuilder;

use crate::catalog::Directory;
use crate::entity::SqlTenantId;
use crate::error::{Error, Result};
use crate::handle::TenantDb;
use crate::isolation::{Isolation, check_combination, raw_sql};
use crate::placement::{DatabaseTemplate, Placement, PoolCache, TenantRegistry};
use crate::scope::{IssueIds, Meter, Session};
use crate::shard::{AcrossShards, PoolOptions, Topology};
use sea_orm::{DatabaseConnection, DbBackend};
use std::sync::Arc;
use tenancy_core::Identifier;

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
    /// The catalog directory the topology's router is kept by, when there is one.
    directory: Option<Directory<T>>,
    template: Option<DatabaseTemplate>,
    /// The options of the pools the framework opens for tenant databases.
    tenant_pool: PoolOptions,
    /// The migrations table of each tenant schema, whose latest migration is the schema's
    /// shape (see [`TenancyBuilder::schema_version_table`]).
    version_table: Option<Identifier>,
    /// The shapes of tenant schemas this process has read, which units guess.
    shapes: Arc<crate::scope::Shapes>,
    /// Set once [`Tenancy::verify`] has passed: the checks run before the first handle.
    verified: std::sync::OnceLock<()>,
    /// Whether statements are labelled by tenant in metrics (feature `metrics`).
    tenant_label: bool,
    /// The metric labels of statements with no tenant label, made once: every handle
    /// shares them (and the metric keys made for them), unless labelled by tenant.
    meter: Meter,
    /// What fills `#[unique_id]` keys on insert.
    unique_ids: Option<Arc<dyn IssueIds>>,
}

/// The `isolation` and `placement` label values of statements under these.
fn meter_names(isolation: &Isolation, placement: Placement) -> (&'static str, &'static str) {
    let isolation = match isolation {
        Isolation::RowLevel => "row_level",
        Isolation::RowLevelSecurity { .. } => "row_level_security",
        Isolation::SchemaPerTenant { .. } => "schema_per_tenant",
    };
    let placement = match placement {
        Placement::Shared => "shared",
        Placement::DatabasePerTenant => "database_per_tenant",
        Placement::Sharded => "sharded",
        Placement::Citus => "citus",
    };
    (isolation, placement)
}

/// The meter of statements with no tenant label under `isolation` and `placement`.
fn shared_meter(isolation: &Isolation, placement: Placement) -> Meter {
    let (isolation, placement) = meter_names(isolation, placement);
    Meter::new(isolation, placement, None)
}

/// What database per tenant needs.
pub(crate) struct Databases<T> {
    pub(crate) registry: Box<dyn TenantRegistry<T>>,
    pub(crate) template: Option<DatabaseTemplate>,
    pub(crate) pools: PoolCache<T>,
}

impl<T: SqlTenantId> Tenancy<T> {
    /// The catalog directory that places tenants on the shards
    /// ([`TenancyBuilder::directory`]), if there is one: moves and catalog refreshes work
    /// through it.
    pub fn directory(&self) -> Option<&Directory<T>> {
        self.inner.directory.as_ref()
    }

    /// The directory, for the operations that need one.
    pub(crate) fn require_directory(&self, operation: &str) -> Result<&Directory<T>> {
        self.inner.directory.as_ref().ok_or_else(|| {
            Error::Config(format!(
                "{operation} needs the catalog directory that places tenants: give it to the \
                 builder with `.directory(..)`"
            ))
        })
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
            // Boxed: the checks run until they pass once, and the future of every other
            // call should not carry theirs.
            Box::pin(self.verify()).await?;
        }
        // Placement decides the connection; isolation, what each unit runs first there.
        let (conn, shard) = match self.inner.placement {
            Placement::Shared | Placement::Citus => (self.inner.conn.clone(), None),
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
        let meter = self.meter(Some(&tenant));
        let handle = TenantDb::new(conn, tenant, session, raw, meter)
            .with_unique_ids(self.inner.unique_ids.clone());
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
            // On Citus a bound `set_config` stays on the coordinator: `SET LOCAL`, sent on
            // to the workers, with the validated id written by the audited literal.
            Isolation::RowLevelSecurity { setting } if self.inner.placement == Placement::Citus => {
                Some(Session::simple(
                    backend,
                    crate::citus::tenant_setting_sql(setting, &tenant.to_string())?,
                ))
            }
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
                    self.inner.placement == Placement::Citus,
                    // Guesses only where migrations keep markers: one rule for both.
                    self.marked_version_table().map(|_| &self.inner.shapes),
                ))
            }
        })
    }

    /// The metric labels of `tenant`'s statements (the tenant's own only where the
    /// application opted in), or of admin work (`None`).
    pub(crate) fn meter(&self, tenant: Option<&T>) -> Meter {
        match tenant.filter(|_| self.inner.tenant_label) {
            Some(tenant) => {
                let (isolation, placement) =
                    meter_names(&self.inner.isolation, self.inner.placement);
                Meter::new(isolation, placement, Some(tenant))
            }
            None => self.inner.meter.clone(),
        }
    }

    /// The migrations table of each tenant schema, if the shape is read from one.
    pub(crate) fn version_table(&self) -> Option<&Identifier> {
        self.inner.version_table.as_ref()
    }

    /// The migrations table of each tenant schema, when the library keeps each schema's
    /// shape marker in it (a shape is read, and not on Citus).
    pub(crate) fn marked_version_table(&self) -> Option<&Identifier> {
        self.version_table()
            .filter(|_| self.inner.placement != Placement::Citus)
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
        if self.placement() == Placement::Citus {
            let schemas = matches!(self.isolation(), Isolation::SchemaPerTenant { .. });
            crate::citus::check(self.connection(), schemas).await?;
        }
        self.mark_verified();
        Ok(())
    }

    /// Records that [`Tenancy::verify`] passed.
    pub(crate) fn mark_verified(&self) {
        let _ = self.inner.verified.set(());
    }

    /// The open pool of `tenant`'s database, opening it on first use.
    async fn tenant_pool(&self, tenant: &T) -> Result<DatabaseConnection> {
        if let Some(conn) = self.databases()?.pools.get(tenant) {
            return Ok(conn);
        }
        // Boxed: the future of a handle whose pool is open should not carry the opening's.
        Box::pin(self.open_tenant_pool(tenant)).await
    }

    /// Looks up `tenant`'s database and opens its pool.
    async fn open_tenant_pool(&self, tenant: &T) -> Result<DatabaseConnection> {
        let databases = self.databases()?;
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

    /// The options of the pool of a shard added now: the topology's
    /// ([`Topology::with_pool_options`], set by `Shards::topology`), else those of the
    /// pools the framework opens for tenant databases
    /// ([`TenancyBuilder::tenant_pool_options`](crate::TenancyBuilder::tenant_pool_options)).
    pub(crate) fn new_shard_pool(&self) -> PoolOptions {
        self.inner
            .topology
            .as_ref()
            .and_then(|topology| topology.pool_options())
            .unwrap_or(&self.inner.tenant_pool)
            .clone()
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
        Ok(AcrossShards::new(self.topology()?, &self.meter(None)))
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
