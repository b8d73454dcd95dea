//! The shard registry kept in the catalog database, and shard provisioning: create a
//! shard's database, migrate it, register it and put it in service; remove an empty one;
//! migrate every shard.

use super::fleet::{FleetProgress, FleetReport, run_fleet};
use crate::catalog::shards::{ShardState, Shards, connect_shard, lazy_shard};
use crate::entity::SqlTenantId;
use crate::error::{Error, Result};
use crate::placement::connect;
use crate::scope::quote_identifier;
use crate::tenancy::Tenancy;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};
use sea_orm_migration::MigratorTrait;
use std::future::Future;
use std::time::Duration;
use tenancy_core::ShardId;
use tracing::Instrument;

/// The tables of a shard's database (its migration table left out).
async fn user_tables(conn: &DatabaseConnection) -> Result<Vec<String>> {
    let backend = conn.get_database_backend();
    let sql = match backend {
        DbBackend::Postgres => {
            "SELECT table_name AS name FROM information_schema.tables \
             WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'"
        }
        DbBackend::MySql => {
            "SELECT table_name AS name FROM information_schema.tables \
             WHERE table_schema = DATABASE() AND table_type = 'BASE TABLE'"
        }
        _ => "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
    };
    let rows = conn
        .query_all_raw(Statement::from_string(backend, sql))
        .await?;
    let mut tables = Vec::with_capacity(rows.len());
    for row in rows {
        let name: String = row.try_get("", "name")?;
        if name != "seaql_migrations" {
            tables.push(name);
        }
    }
    Ok(tables)
}

/// The first table of `tables` (other than `keep`) holding rows, with its count.
async fn first_nonempty(conn: &DatabaseConnection, keep: &[&str]) -> Result<Option<(String, i64)>> {
    let backend = conn.get_database_backend();
    for table in user_tables(conn).await? {
        if keep.contains(&table.as_str()) {
            continue;
        }
        // The name comes from the database's own catalog; it is quoted as an identifier.
        let quoted = quote_identifier(&table, backend);
        let sql = format!("SELECT COUNT(*) AS n FROM {quoted}");
        let row = conn
            .query_one_raw(Statement::from_string(backend, sql))
            .await?;
        let count: i64 = match row {
            Some(row) => row.try_get("", "n")?,
            None => 0,
        };
        if count > 0 {
            return Ok(Some((table, count)));
        }
    }
    Ok(None)
}

impl<T: SqlTenantId> Tenancy<T> {
    /// The shard registry in this tenancy's catalog (admin) connection.
    pub fn shard_catalog(&self) -> Shards {
        Shards::new(self.unscoped().clone())
    }

    /// Adds a shard: creates its database from the
    /// [`database_template`](crate::TenancyBuilder::database_template) (a PostgreSQL or
    /// MariaDB database, or a SQLite file), runs `M`'s migrations in it, registers it in
    /// the catalog, and puts it in service in the running topology and router. A failed
    /// step undoes the earlier ones.
    ///
    /// Only a router that can gain shards without moving keys (a
    /// [`DirectoryRouter`](crate::DirectoryRouter)) accepts a new shard; with a hash or
    /// range router this is [`RoutingError::FixedShards`](crate::RoutingError::FixedShards)
    /// and nothing is created.
    pub async fn create_shard<M: MigratorTrait>(&self, name: impl Into<ShardId>) -> Result<()> {
        let name = name.into();
        let topology = self.topology()?;
        let template = self.template().ok_or_else(|| {
            Error::Config("creating shards needs a `database_template`".to_owned())
        })?;
        if !topology.router().accepts_new_shards() {
            return Err(tenancy_core::RoutingError::FixedShards(name.to_string()).into());
        }
        let catalog = self.shard_catalog();
        if catalog.names().await?.contains(&name) || topology.shard_ids().contains(&name) {
            return Err(Error::ShardExists {
                shard: name.to_string(),
            });
        }
        let planned = template.plan(&name.to_string())?;
        let span =
            tracing::info_span!("tenancy.create_shard", shard = %name, database = %planned.name);
        async {
            template.create(&planned).await?;
            let outcome = async {
                let conn = connect(self.new_shard_pool().connect_options(&planned.url)).await?;
                M::up(&conn, None).await?;
                catalog
                    .register(&name, &planned.url, ShardState::Active)
                    .await?;
                Ok::<_, Error>(conn)
            }
            .await;
            let conn = match outcome {
                Ok(conn) => conn,
                Err(error) => {
                    if let Err(cleanup) = template.drop_database(&planned).await {
                        tracing::error!(%error, %cleanup, "shard database left behind");
                    }
                    return Err(error);
                }
            };
            topology.add_shard(name.clone(), conn.clone());
            if let Err(error) = topology.add_to_routers(&name) {
                // Undo: out of the topology and the catalog, and the database dropped.
                let _ = topology.take_shard(&name);
                let _ = conn.close().await;
                let _ = catalog.unregister(&name).await;
                if let Err(cleanup) = template.drop_database(&planned).await {
                    tracing::error!(%error, %cleanup, "shard database left behind");
                }
                return Err(error);
            }
            tracing::info!("shard created");
            Ok(())
        }
        .instrument(span)
        .await
    }

    /// Adds the existing, empty database at `url` as shard `name`: connects it (within
    /// the topology's connect timeout), runs `M`'s migrations in it, registers it in the
    /// catalog and puts it in service, as [`create_shard`](Self::create_shard) does with a
    /// database its template makes. A database that holds tables already (another shard's,
    /// the catalog's) is refused with [`Error::ShardNotEmpty`] before anything changes; a
    /// failed later step undoes the registration. [`drop_shard`](Self::drop_shard) drops
    /// only databases its template names, so it refuses a shard added this way.
    pub async fn add_shard<M: MigratorTrait>(
        &self,
        name: impl Into<ShardId>,
        url: &str,
    ) -> Result<()> {
        let name = name.into();
        tenancy_core::Identifier::new(name.as_str())?;
        let topology = self.topology()?;
        if !topology.router().accepts_new_shards() {
            return Err(tenancy_core::RoutingError::FixedShards(name.to_string()).into());
        }
        let catalog = self.shard_catalog();
        if catalog.names().await?.contains(&name) || topology.shard_ids().contains(&name) {
            return Err(Error::ShardExists {
                shard: name.to_string(),
            });
        }
        let conn = connect_shard(url, &self.new_shard_pool(), topology.connect_timeout())
            .await
            .map_err(|reason| Error::Shard {
                shard: name.to_string(),
                source: sea_orm::DbErr::Conn(sea_orm::RuntimeErr::Internal(reason)),
            })?;
        let outcome = async {
            if let Some(table) = user_tables(&conn).await?.into_iter().next() {
                return Err(Error::ShardNotEmpty {
                    shard: name.to_string(),
                    reason: format!(
                        "its database holds table `{table}` already: a new shard starts empty"
                    ),
                });
            }
            M::up(&conn, None).await.map_err(|source| Error::Shard {
                shard: name.to_string(),
                source,
            })?;
            catalog.register(&name, url, ShardState::Active).await
        }
        .await;
        if let Err(error) = outcome {
            let _ = conn.close().await;
            return Err(error);
        }
        topology.add_shard(name.clone(), conn.clone());
        if let Err(error) = topology.add_to_routers(&name) {
            let _ = topology.take_shard(&name);
            let _ = conn.close().await;
            let _ = catalog.unregister(&name).await;
            return Err(error);
        }
        tracing::info!(shard = %name, "shard added");
        Ok(())
    }

    /// Removes an empty shard: the router must place no key on it any more, the catalog
    /// neither (no directory entry, range or move of any process names it: checked in
    /// the transaction that retires it, so a placement by another process cannot slip in
    /// between), and no table of its database may hold rows except the copies of
    /// `global_tables`; otherwise [`Error::ShardNotEmpty`] and nothing changes. Then it leaves the catalog (first, so
    /// that a process starting now does not load it), the topology and the router, and its
    /// database is dropped. A shard registered at a URL its template would not make is
    /// refused. After a failure, running it again finishes the job. With a hash or range
    /// router, whose shards are fixed, it is
    /// [`RoutingError::FixedShards`](crate::RoutingError::FixedShards).
    pub async fn drop_shard(&self, name: impl Into<ShardId>, global_tables: &[&str]) -> Result<()> {
        let name = name.into();
        let topology = self.topology()?;
        let template = self.template().ok_or_else(|| {
            Error::Config("dropping shards needs a `database_template`".to_owned())
        })?;
        let catalog = self.shard_catalog();
        let planned = template.plan(&name.to_string())?;
        let record = catalog.list().await?.into_iter().find(|r| r.name == name);
        if let Some(record) = &record
            && record.url != planned.url
        {
            return Err(Error::Config(format!(
                "shard {name} is registered at a URL its template does not make ({}); drop \
                 it by hand rather than a database it may not name",
                crate::redact::url(&record.url)
            )));
        }
        // A retry after a failure below finds the shard out of the topology already.
        if let Ok(conn) = topology.connection(&name) {
            topology
                .remove_from_routers(&name)
                .map_err(|error| match error {
                    tenancy_core::RoutingError::FixedShards(_) => Error::Routing(error),
                    other => Error::ShardNotEmpty {
                        shard: name.to_string(),
                        reason: other.to_string(),
                    },
                })?;
            let left = match first_nonempty(&conn, global_tables).await {
                Ok(None) => None,
                Ok(Some((table, rows))) => Some(Error::ShardNotEmpty {
                    shard: name.to_string(),
                    reason: format!("table `{table}` holds {rows} row(s)"),
                }),
                Err(error) => Some(error),
            };
            if let Some(error) = left {
                topology.add_to_routers(&name)?;
                return Err(error);
            }
            // The catalog first: a process that starts now no longer loads the shard, and
            // no process can place a key on it any more.
            if record.is_some()
                && let Err(error) = catalog.retire(&name).await
            {
                topology.add_to_routers(&name)?;
                return Err(error);
            }
            topology.take_shard(&name)?;
            let _ = conn.close().await;
        } else if record.is_some() {
            catalog.retire(&name).await?;
        }
        // Dropping is idempotent, so a retry finishes what a failure here left.
        template.drop_database(&planned).await?;
        tracing::info!(shard = %name, "shard dropped");
        Ok(())
    }

    /// Runs `M`'s pending migrations on every shard, at most `parallelism` at a time,
    /// calling `progress` after each shard (its `tenant` field is the shard). Never stops
    /// early: failures are collected in the report; running it again resumes.
    pub async fn migrate_shards<M: MigratorTrait>(
        &self,
        parallelism: usize,
        mut progress: impl FnMut(FleetProgress<'_, ShardId>),
    ) -> Result<FleetReport<ShardId>> {
        let topology = self.topology()?;
        let shards = topology.shard_ids();
        let span = tracing::info_span!("tenancy.migrate_shards", shards = shards.len());
        Ok(run_fleet(shards, parallelism, &mut progress, |shard| {
            let span = tracing::info_span!(parent: &span, "shard", shard = %shard);
            async move {
                let conn = topology.connection(&shard)?;
                M::up(&conn, None).await.map_err(|source| Error::Shard {
                    shard: shard.to_string(),
                    source,
                })
            }
            .instrument(span)
        })
        .await)
    }
}

/// What [`Tenancy::refresh_catalog`] changed in this process.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CatalogRefresh {
    /// Shards registered elsewhere, now connected and in service here.
    pub added: Vec<ShardId>,
    /// Shards unregistered elsewhere, now out of service here.
    pub removed: Vec<ShardId>,
    /// Whether the directory was reloaded (it had changed).
    pub directory_reloaded: bool,
    /// Shards that were unavailable and are reached again.
    pub reconnected: Vec<ShardId>,
    /// Shards still (or newly) unavailable: their tenants are refused with
    /// [`Error::ShardUnavailable`] until a later refresh reaches them.
    pub unavailable: Vec<ShardId>,
}

impl<T: SqlTenantId> Tenancy<T> {
    /// Brings this process's topology and directory router in step with the catalog, after other
    /// processes changed it:
    ///
    /// 1. the directory is reloaded if its version moved, first and on its own, so that
    ///    no shard's trouble keeps a directory change from this process;
    /// 2. shards registered since are connected (each within the topology's connect
    ///    timeout) and put in service; one that cannot be reached is put in service
    ///    unavailable, its tenants refused with [`Error::ShardUnavailable`];
    /// 3. after a shard was added, the directory is loaded in full, so that entries an
    ///    earlier load skipped for want of it load now;
    /// 4. unavailable shards are tried again, and those reached are back in service;
    /// 5. shards no longer registered are taken out of service (one the directory here
    ///    still places keys on is kept until it does not).
    ///
    /// Only a failure to read the catalog itself is an error; shards that cannot be
    /// reached are reported in [`CatalogRefresh::unavailable`].
    pub async fn refresh_catalog(&self) -> Result<CatalogRefresh> {
        let topology = self.topology()?;
        let directory = self.require_directory("refreshing the catalog")?;
        let mut refresh = CatalogRefresh {
            directory_reloaded: directory.refresh().await?,
            ..CatalogRefresh::default()
        };
        let registered = self.shard_catalog().list().await?;
        let present = topology.shard_ids();
        let timeout = topology.connect_timeout();
        let pool = self.new_shard_pool();
        for record in &registered {
            if present.contains(&record.name) {
                continue;
            }
            let conn = match connect_shard(&record.url, &pool, timeout).await {
                Ok(conn) => conn,
                Err(reason) => {
                    tracing::warn!(
                        target: "tenancy::catalog", shard = %record.name, %reason,
                        "shard registered elsewhere is unreachable: in service unavailable"
                    );
                    let conn = lazy_shard(&record.url, &pool, timeout)
                        .await
                        .map_err(|source| Error::Shard {
                            shard: record.name.to_string(),
                            source,
                        })?;
                    topology.mark_unavailable(&record.name, reason);
                    refresh.unavailable.push(record.name.clone());
                    conn
                }
            };
            topology.add_shard(record.name.clone(), conn.clone());
            if let Err(error) = topology.add_to_routers(&record.name) {
                let _ = topology.take_shard(&record.name);
                topology.mark_available(&record.name);
                let _ = conn.close().await;
                return Err(error);
            }
            tracing::info!(shard = %record.name, "shard registered elsewhere put in service");
            refresh.added.push(record.name.clone());
        }
        if !refresh.added.is_empty() {
            directory.load().await?;
            refresh.directory_reloaded = true;
        }
        for (shard, _) in topology.unavailable_shards() {
            if refresh.unavailable.contains(&shard) {
                continue;
            }
            let Some(record) = registered.iter().find(|record| record.name == shard) else {
                continue;
            };
            match connect_shard(&record.url, &pool, timeout).await {
                Ok(conn) => {
                    topology.add_shard(shard.clone(), conn);
                    topology.mark_available(&shard);
                    tracing::info!(target: "tenancy::catalog", %shard, "shard reached again");
                    refresh.reconnected.push(shard);
                }
                Err(reason) => {
                    topology.mark_unavailable(&shard, reason);
                    refresh.unavailable.push(shard);
                }
            }
        }
        for shard in present {
            if registered.iter().any(|record| record.name == shard) {
                continue;
            }
            if let Err(error) = topology.remove_from_routers(&shard) {
                tracing::warn!(%shard, %error, "shard unregistered elsewhere still has keys here");
                continue;
            }
            if let Some(conn) = topology.take_shard(&shard)? {
                let _ = conn.close().await;
            }
            topology.mark_available(&shard);
            tracing::info!(%shard, "shard unregistered elsewhere taken out of service");
            refresh.removed.push(shard);
        }
        Ok(refresh)
    }

    /// Calls [`refresh_catalog`](Self::refresh_catalog) now and then every `every` until
    /// dropped, acknowledging each refresh of the directory as
    /// [`Directory::watch`](crate::catalog::Directory::watch) does (the router is leased,
    /// and moves wait for it); spawn it on the application's runtime. A failed refresh is logged (`tracing`,
    /// target `tenancy::catalog`) and tried again at the next tick.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use std::time::Duration;
    /// # use tenancy_sea::Tenancy;
    /// # async fn demo(tenancy: Tenancy<i64>) {
    /// tokio::spawn(tenancy.clone().watch_catalog(Duration::from_secs(2)));
    /// # }
    /// ```
    // Written out so the signature promises `Send + 'static` to any runtime's spawner.
    #[allow(clippy::manual_async_fn)]
    pub fn watch_catalog(self, every: Duration) -> impl Future<Output = ()> + Send + 'static {
        async move {
            loop {
                let refreshed = match self.refresh_catalog().await {
                    Ok(_) => match self.require_directory("watching the catalog") {
                        Ok(directory) => directory.acknowledge().await,
                        Err(error) => Err(error),
                    },
                    Err(error) => Err(error),
                };
                if let Err(error) = refreshed {
                    tracing::warn!(
                        target: "tenancy::catalog",
                        %error,
                        "refreshing the catalog failed; keeping what was loaded before"
                    );
                }
                futures_timer::Delay::new(every).await;
            }
        }
    }
}
