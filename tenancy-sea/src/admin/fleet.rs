//! Provisioning tenants and migrating the whole fleet.
//!
//! Under [`Placement::DatabasePerTenant`](crate::Placement::DatabasePerTenant) a tenant is a
//! database: [`Tenancy::create_tenant_database`] creates, migrates and registers it, and
//! undoes what it did if a step fails. Under
//! [`Isolation::SchemaPerTenant`](crate::Isolation::SchemaPerTenant) a tenant is a
//! PostgreSQL schema, in the shared database or on the tenant's shard. [`Tenancy::create_tenant_schema`] creates it and runs the
//! application's sea-orm-migration `Migrator` in it, in one transaction: PostgreSQL DDL is
//! transactional, so a failed step leaves no schema behind. [`Tenancy::migrate_all`] runs
//! the migrator for every tenant (schema or database) with bounded parallelism; a failure in one tenant is
//! reported with its id and does not stop the others, and a re-run resumes where each
//! tenant stopped (the migrator records what it applied, per schema).

use crate::entity::SqlTenantId;
use crate::error::{Error, Result};
use crate::isolation::Isolation;
use crate::placement::Placement;
use crate::scope::Session;
use crate::tenancy::Tenancy;
use futures_util::StreamExt;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement, TransactionTrait, Value};
use sea_orm_migration::MigratorTrait;
use tenancy_core::Identifier;
use tracing::Instrument;

/// The outcome of [`Tenancy::migrate_all`].
#[derive(Debug)]
pub struct FleetReport<T> {
    /// Tenants whose migrations all ran (or had nothing to run).
    pub migrated: Vec<T>,
    /// Tenants whose migration failed, with the error; their transaction rolled back.
    pub failed: Vec<(T, Error)>,
}

impl<T> FleetReport<T> {
    /// Whether every tenant migrated.
    pub fn is_success(&self) -> bool {
        self.failed.is_empty()
    }
}

/// One step of a fleet operation, for progress reporting.
#[derive(Debug)]
pub struct FleetProgress<'a, T> {
    /// Tenants finished so far, this one included.
    pub done: usize,
    /// Tenants in the operation.
    pub total: usize,
    /// The tenant just finished.
    pub tenant: &'a T,
    /// Its error, if it failed.
    pub error: Option<&'a Error>,
}

impl<T: SqlTenantId> Tenancy<T> {
    /// The schema prefix, or a configuration error when the isolation is not schema per
    /// tenant.
    fn schema_prefix(&self) -> Result<&str> {
        match self.isolation() {
            Isolation::SchemaPerTenant { prefix } => Ok(prefix),
            other => Err(Error::Config(format!(
                "tenant schemas need schema per tenant isolation, not {}",
                other.name()
            ))),
        }
    }

    /// Where tenant `id`'s schema lives: the admin connection, or on shards the
    /// connection of the shard the tenant is placed on.
    fn schema_home(&self, id: &T) -> Result<DatabaseConnection> {
        match self.placement() {
            Placement::Sharded => Ok(self.topology()?.shard_of(id)?.1),
            _ => Ok(self.unscoped().clone()),
        }
    }

    /// The databases tenant schemas are kept in: the admin connection's, or every shard.
    fn schema_databases(&self) -> Result<Vec<DatabaseConnection>> {
        match self.placement() {
            Placement::Sharded => Ok(self
                .topology()?
                .shards()
                .into_iter()
                .map(|(_, conn)| conn)
                .collect()),
            _ => Ok(vec![self.unscoped().clone()]),
        }
    }

    /// The schema of tenant `id`: the prefix and the id, validated.
    pub fn tenant_schema(&self, id: &T) -> Result<Identifier> {
        id.validate()?;
        Ok(Identifier::for_tenant(self.schema_prefix()?, id)?)
    }

    /// Creates tenant `id`'s schema and runs `M`'s migrations in it, in one transaction on
    /// the admin connection (on shards, on the tenant's shard): either the tenant exists
    /// fully migrated or nothing was made. Creating a tenant that exists is an error
    /// (nothing changes).
    pub async fn create_tenant_schema<M: MigratorTrait>(&self, id: impl Into<T>) -> Result<()> {
        let id = id.into();
        let schema = self.tenant_schema(&id)?;
        let home = self.schema_home(&id)?;
        let span = tracing::info_span!("tenancy.provision", tenant = %id, schema = %schema);
        async {
            let txn = home.begin().await?;
            if self.placement() == Placement::Citus {
                // A distributed schema: Citus places it, tables and all, on one node.
                txn.execute_unprepared(crate::citus::DISTRIBUTED_SCHEMA)
                    .await?;
            }
            create_schema::<M>(&txn, &schema, self.marked_version_table()).await?;
            txn.commit().await?;
            tracing::info!("tenant schema created");
            Ok(())
        }
        .instrument(span)
        .await
    }

    /// Drops tenant `id`'s schema and everything in it. Dropping a tenant that does not
    /// exist is not an error. The schema is the tenant's own by construction: the prefix is
    /// not empty and a reserved name (`public`, `pg_*`, `information_schema`) is refused
    /// ([`Error::InvalidIdentifier`]), so no tenant id names a schema that is not a
    /// tenant's.
    pub async fn drop_tenant_schema(&self, id: impl Into<T>) -> Result<()> {
        let id = id.into();
        let schema = self.tenant_schema(&id)?;
        self.schema_home(&id)?
            .execute_unprepared(&format!(
                "DROP SCHEMA IF EXISTS {} CASCADE",
                schema.quoted()
            ))
            .await?;
        tracing::info!(tenant = %id, schema = %schema, "tenant schema dropped");
        Ok(())
    }

    /// Every tenant that has a schema, in schema-name order (on shards, on any shard,
    /// once each).
    pub async fn tenant_schemas(&self) -> Result<Vec<T>> {
        let prefix = self.schema_prefix()?;
        let mut rows = Vec::new();
        for conn in self.schema_databases()? {
            rows.extend(
                conn.query_all_raw(Statement::from_sql_and_values(
                    DbBackend::Postgres,
                    "SELECT nspname FROM pg_namespace WHERE starts_with(nspname, $1)",
                    [Value::from(prefix)],
                ))
                .await?,
            );
        }
        let mut names = Vec::with_capacity(rows.len());
        for row in rows {
            names.push(row.try_get::<String>("", "nspname")?);
        }
        names.sort_unstable();
        names.dedup();
        let mut tenants = Vec::with_capacity(names.len());
        for name in names {
            // A schema that merely shares the prefix but names no valid tenant is not ours.
            if let Ok(id) = T::parse_tenant_id(&name[prefix.len()..])
                && Identifier::for_tenant(prefix, &id).is_ok_and(|s| s.as_str() == name)
            {
                tenants.push(id);
            }
        }
        Ok(tenants)
    }

    /// Runs `M`'s pending migrations for one tenant: in its schema, in one transaction
    /// (schema per tenant, on its shard when sharded), or in its database (database per
    /// tenant).
    pub async fn migrate_tenant<M: MigratorTrait>(&self, id: &T) -> Result<()> {
        if let Placement::DatabasePerTenant = self.placement() {
            let url =
                self.databases()?
                    .registry
                    .url(id)
                    .await?
                    .ok_or_else(|| Error::UnknownTenant {
                        tenant: id.to_string(),
                    })?;
            return migrate_database::<M>(&url).await;
        }
        let schema = self.tenant_schema(id)?;
        let txn = self.schema_home(id)?.begin().await?;
        enter_schema(&txn, &schema).await?;
        super::markers::migrate_schema::<M>(&txn, &schema, self.marked_version_table(), false)
            .await?;
        txn.commit().await?;
        Ok(())
    }

    /// Every tenant the fleet operations cover: the tenant schemas, or the registered
    /// tenant databases.
    pub async fn fleet_tenants(&self) -> Result<Vec<T>> {
        match (self.placement(), self.isolation()) {
            (Placement::DatabasePerTenant, _) => self.tenant_databases().await,
            (_, Isolation::SchemaPerTenant { .. }) => self.tenant_schemas().await,
            (Placement::Sharded, _) => Err(Error::Config(
                "sharded tenants share their shard's tables: migrate the shards with \
                 `Tenancy::migrate_shards`"
                    .to_owned(),
            )),
            _ => self.tenant_schemas().await,
        }
    }

    /// Creates tenant `id`'s database from the [`DatabaseTemplate`](crate::DatabaseTemplate),
    /// runs `M`'s migrations in it and registers it. A failed step undoes the earlier ones:
    /// no tenant is registered without its database, and a database made for a tenant that
    /// failed is dropped again (if even that fails, the error says so and names it).
    pub async fn create_tenant_database<M: MigratorTrait>(&self, id: impl Into<T>) -> Result<()> {
        let id = id.into();
        id.validate()?;
        let databases = self.databases()?;
        let template = databases.template.as_ref().ok_or_else(|| {
            Error::Config("creating tenant databases needs a `database_template`".to_owned())
        })?;
        let planned = template.plan(&id)?;
        if databases.registry.url(&id).await?.is_some() {
            return Err(Error::TenantExists {
                tenant: id.to_string(),
            });
        }
        let span = tracing::info_span!("tenancy.provision", tenant = %id, database = %planned.name);
        async {
            template.create(&planned).await?;
            let outcome = async {
                migrate_database::<M>(&planned.url).await?;
                databases.registry.register(&id, &planned.url).await
            }
            .await;
            if let Err(error) = outcome {
                if let Err(cleanup) = template.drop_database(&planned).await {
                    tracing::error!(%error, %cleanup, database = %planned.name, "tenant database left behind");
                    return Err(Error::Config(format!(
                        "creating tenant {id} failed ({error}) and its database {} could not be \
                         dropped ({cleanup}); drop it by hand",
                        planned.name
                    )));
                }
                return Err(error);
            }
            tracing::info!("tenant database created");
            Ok(())
        }
        .instrument(span)
        .await
    }

    /// Drops tenant `id`'s database and unregisters it. Only a registered tenant is
    /// dropped ([`Error::UnknownTenant`] otherwise, and nothing is touched), and only when
    /// it is registered at the database its template names: a registration that points
    /// elsewhere (a database made by hand, another tenant's) is refused rather than
    /// dropped. Safe to run again after a failure: the database is dropped first (if it
    /// exists), then the registration removed.
    pub async fn drop_tenant_database(&self, id: impl Into<T>) -> Result<()> {
        let id = id.into();
        id.validate()?;
        let databases = self.databases()?;
        let template = databases.template.as_ref().ok_or_else(|| {
            Error::Config("dropping tenant databases needs a `database_template`".to_owned())
        })?;
        let planned = template.plan(&id)?;
        let registered =
            databases
                .registry
                .url(&id)
                .await?
                .ok_or_else(|| Error::UnknownTenant {
                    tenant: id.to_string(),
                })?;
        if registered != planned.url {
            return Err(Error::Config(format!(
                "tenant {id} is registered at {}, not at the database its template names \
                 ({}); drop it by hand rather than a database it may not own",
                crate::redact::url(&registered),
                crate::redact::url(&planned.url),
            )));
        }
        databases.pools.evict(&id);
        template.drop_database(&planned).await?;
        databases.registry.unregister(&id).await?;
        tracing::info!(tenant = %id, database = %planned.name, "tenant database dropped");
        Ok(())
    }

    /// Every registered tenant (database per tenant).
    pub async fn tenant_databases(&self) -> Result<Vec<T>> {
        self.databases()?.registry.tenants().await
    }

    /// Under the Citus placement, distributes the tables of this program's entities on
    /// the admin connection ([`citus::distribute`](crate::citus::distribute)): the fleet
    /// tooling's way to it, beside a migration's. Another placement has nothing to
    /// distribute ([`Error::Config`]).
    pub async fn distribute_on_citus(&self) -> Result<crate::citus::Distribution> {
        if self.placement() != Placement::Citus {
            return Err(Error::Config(format!(
                "distributing tables is for the Citus placement, not {}",
                self.placement().name()
            )));
        }
        crate::citus::distribute(self.unscoped()).await
    }

    /// Runs `M`'s pending migrations for every tenant (schema or database), at most
    /// `parallelism` at a
    /// time, calling `progress` after each tenant. Never stops early: failures are
    /// collected in the report. Running it again is safe and resumes.
    pub async fn migrate_all<M: MigratorTrait>(
        &self,
        parallelism: usize,
        mut progress: impl FnMut(FleetProgress<'_, T>),
    ) -> Result<FleetReport<T>> {
        let tenants = self.fleet_tenants().await?;
        let span = tracing::info_span!("tenancy.migrate_all", tenants = tenants.len());
        Ok(run_fleet(tenants, parallelism, &mut progress, |id| {
            let span = span.clone();
            async move { self.migrate_tenant::<M>(&id).instrument(span).await }
        })
        .await)
    }
}

/// Runs `work` for every item, at most `parallelism` at a time, calling `progress` after
/// each; never stops early: failures are collected in the report.
pub(crate) async fn run_fleet<I, F, Fut>(
    items: Vec<I>,
    parallelism: usize,
    progress: &mut impl FnMut(FleetProgress<'_, I>),
    work: F,
) -> FleetReport<I>
where
    I: Clone + std::fmt::Display,
    F: Fn(I) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let total = items.len();
    let work = &work;
    let mut outcomes = futures_util::stream::iter(items)
        .map(|item| async move {
            let outcome = work(item.clone()).await;
            (item, outcome)
        })
        .buffer_unordered(parallelism.max(1));
    let mut report = FleetReport {
        migrated: Vec::with_capacity(total),
        failed: Vec::new(),
    };
    let mut done = 0;
    while let Some((item, outcome)) = outcomes.next().await {
        done += 1;
        progress(FleetProgress {
            done,
            total,
            tenant: &item,
            error: outcome.as_ref().err(),
        });
        match outcome {
            Ok(()) => report.migrated.push(item),
            Err(error) => {
                tracing::warn!(%item, %error, "fleet operation failed");
                report.failed.push((item, error));
            }
        }
    }
    report
}

/// Sets the transaction's `search_path` to the tenant schema (then `public`).
pub(crate) async fn enter_schema<C: ConnectionTrait>(txn: &C, schema: &Identifier) -> Result<()> {
    Session::set_config(
        DbBackend::Postgres,
        &[("search_path", format!("{}, public", schema.quoted()))],
    )
    .apply(txn)
    .await?;
    Ok(())
}

/// Creates `schema` in `txn` and runs `M`'s migrations in it; with `marked` (the
/// migrations table), makes its shape marker too.
pub(crate) async fn create_schema<M: MigratorTrait>(
    txn: &sea_orm::DatabaseTransaction,
    schema: &Identifier,
    marked: Option<&Identifier>,
) -> Result<()> {
    txn.execute_unprepared(&format!("CREATE SCHEMA {}", schema.quoted()))
        .await?;
    enter_schema(txn, schema).await?;
    super::markers::migrate_schema::<M>(txn, schema, marked, true).await
}

/// Runs `M`'s pending migrations in the database at `url`.
async fn migrate_database<M: MigratorTrait>(url: &str) -> Result<()> {
    let conn = crate::placement::connect(url).await?;
    let outcome = M::up(&conn, None).await;
    let _ = conn.close().await;
    Ok(outcome?)
}
