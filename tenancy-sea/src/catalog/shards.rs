//! The shard registry kept in the catalog database: [`Shards`], its [`ShardRecord`]s
//! and their [`ShardState`], and connecting the registered shards into a
//! [`Topology`](crate::Topology).

use super::create_table_if_missing;
use super::entities::shard_entry;
use crate::error::{Error, Result};
use crate::placement::connect;
use crate::shard::PoolOptions;
use crate::shard::Topology;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect, Set, TransactionTrait,
};
use std::time::Duration;
use tenancy_core::{Identifier, ShardId, ShardRouter};

/// The state of a dropped shard's tombstone row in the registry.
pub(crate) const DROPPED: &str = "dropped";

/// The state of a registered shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShardState {
    /// In service: new tenants may be placed on it.
    Active,
    /// Still serving its tenants, but to be emptied: no new key is placed on it.
    /// [`Directory::assign`](crate::catalog::Directory::assign) and
    /// [`assign_range`](crate::catalog::Directory::assign_range) refuse it with
    /// [`Error::ShardDraining`], [`Directory::place`](crate::catalog::Directory::place)
    /// passes it over, and [`Shards::active`] leaves it out.
    Draining,
}

impl ShardState {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ShardState::Active => "active",
            ShardState::Draining => "draining",
        }
    }

    pub(crate) fn parse(text: &str) -> Result<Self> {
        match text {
            "active" => Ok(ShardState::Active),
            "draining" => Ok(ShardState::Draining),
            other => Err(Error::Config(format!(
                "unknown shard state {other:?} in the catalog"
            ))),
        }
    }
}

/// One shard of the registry. Its `Debug` output hides the URL's password.
#[derive(Clone, PartialEq, Eq)]
pub struct ShardRecord {
    /// Its name.
    pub name: ShardId,
    /// The URL of its database.
    pub url: String,
    /// Its state.
    pub state: ShardState,
}

impl std::fmt::Debug for ShardRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardRecord")
            .field("name", &self.name)
            .field("url", &crate::redact::url(&self.url))
            .field("state", &self.state)
            .finish()
    }
}

/// The shard registry in a catalog database (any backend): read at start to build the
/// [`Topology`], changed through [`Tenancy::create_shard`] and [`Tenancy::drop_shard`],
/// which keep the running topology in step.
///
/// ```
/// # use std::sync::Arc;
/// # use tenancy_sea::{DirectoryRouter, catalog::Shards, Tenancy};
/// # async fn demo(catalog_conn: sea_orm::DatabaseConnection) -> tenancy_sea::Result<()> {
/// let catalog = Shards::new(catalog_conn.clone());
/// catalog.install().await?;
/// let router = Arc::new(DirectoryRouter::<i64>::new(catalog.names().await?));
/// let topology = catalog.topology(router, 4).await?; // connects every registered shard
/// let tenancy: Tenancy<i64> = Tenancy::builder(catalog_conn).sharded(topology).build()?;
/// # Ok(()) }
/// ```
///
/// [`Tenancy::create_shard`]: crate::Tenancy::create_shard
/// [`Tenancy::drop_shard`]: crate::Tenancy::drop_shard
#[derive(Clone, Debug)]
pub struct Shards {
    conn: DatabaseConnection,
    connect_timeout: Duration,
}

impl Shards {
    /// The registry in the catalog database `conn`.
    pub fn new(conn: DatabaseConnection) -> Self {
        Shards {
            conn,
            connect_timeout: crate::shard::DEFAULT_CONNECT_TIMEOUT,
        }
    }

    /// How long connecting to a shard may take before it counts as unavailable
    /// ([`DEFAULT_CONNECT_TIMEOUT`](crate::DEFAULT_CONNECT_TIMEOUT), 5 s, by default);
    /// the topology keeps it for its refreshes.
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Creates the registry table if it does not exist.
    pub async fn install(&self) -> Result<()> {
        create_table_if_missing(&self.conn, shard_entry::Entity).await
    }

    /// Every registered shard, by name.
    pub async fn list(&self) -> Result<Vec<ShardRecord>> {
        shard_entry::Entity::find()
            .filter(shard_entry::Column::State.ne(DROPPED))
            .order_by_asc(shard_entry::Column::Name)
            .all(&self.conn)
            .await?
            .into_iter()
            .map(|row| {
                Ok(ShardRecord {
                    name: ShardId::new(row.name),
                    url: row.url,
                    state: ShardState::parse(&row.state)?,
                })
            })
            .collect()
    }

    /// The names of every registered shard.
    pub async fn names(&self) -> Result<Vec<ShardId>> {
        Ok(self.list().await?.into_iter().map(|r| r.name).collect())
    }

    /// The shards new tenants may be placed on.
    pub async fn active(&self) -> Result<Vec<ShardId>> {
        Ok(self
            .list()
            .await?
            .into_iter()
            .filter(|r| r.state == ShardState::Active)
            .map(|r| r.name)
            .collect())
    }

    /// Records a shard. A name that is not a plain identifier, or one registered already,
    /// is refused.
    pub async fn register(&self, name: &ShardId, url: &str, state: ShardState) -> Result<()> {
        Identifier::new(name.as_str())?;
        match shard_entry::Entity::find_by_id(name.as_str())
            .one(&self.conn)
            .await?
        {
            // A dropped shard's name can be used again.
            Some(row) if row.state == DROPPED => {
                shard_entry::Entity::delete_by_id(name.as_str())
                    .exec(&self.conn)
                    .await?;
            }
            Some(_) => {
                return Err(Error::ShardExists {
                    shard: name.to_string(),
                });
            }
            None => {}
        }
        shard_entry::ActiveModel {
            name: Set(name.to_string()),
            url: Set(url.to_owned()),
            state: Set(state.as_str().to_owned()),
        }
        .insert(&self.conn)
        .await?;
        Ok(())
    }

    /// Changes a shard's state.
    pub async fn set_state(&self, name: &ShardId, state: ShardState) -> Result<()> {
        let result = shard_entry::Entity::update_many()
            .col_expr(shard_entry::Column::State, Expr::value(state.as_str()))
            .filter(shard_entry::Column::Name.eq(name.as_str()))
            .filter(shard_entry::Column::State.ne(DROPPED))
            .exec(&self.conn)
            .await?;
        if result.rows_affected == 0 {
            return Err(tenancy_core::RoutingError::UnknownShard(name.to_string()).into());
        }
        Ok(())
    }

    /// Retires a shard in the catalog, in one transaction that first takes the shard's
    /// registry row (a placement on it waits for this, and then finds it gone) and
    /// checks that no directory places a key or a range on it and no move is bound for
    /// it: otherwise [`Error::ShardNotEmpty`] and nothing changes. The row stays as a
    /// tombstone (state `dropped`), so that a process whose cache still has the shard
    /// cannot place a key on it afterwards; [`list`](Self::list) and the topology no
    /// longer see it, and [`register`](Self::register) can use the name again.
    pub(crate) async fn retire(&self, name: &ShardId) -> Result<()> {
        let (directory_installed, claims) = super::directory::installed(&self.conn).await?;
        let txn = self.conn.begin().await?;
        let mut row = shard_entry::Entity::find_by_id(name.as_str());
        if txn.get_database_backend() != sea_orm::DbBackend::Sqlite {
            row = row.lock_exclusive();
        }
        if row.one(&txn).await?.is_none() {
            txn.commit().await?;
            return Ok(());
        }
        if directory_installed {
            let (keys, ranges, moves) = super::directory::uses_of(&txn, name, claims).await?;
            if keys + ranges + moves > 0 {
                txn.rollback().await?;
                return Err(Error::ShardNotEmpty {
                    shard: name.to_string(),
                    reason: format!(
                        "the catalog places {keys} key(s) and {ranges} range(s) on it and \
                         {moves} move(s) are bound for it"
                    ),
                });
            }
        }
        shard_entry::Entity::update_many()
            .col_expr(shard_entry::Column::State, Expr::value(DROPPED))
            .filter(shard_entry::Column::Name.eq(name.as_str()))
            .exec(&txn)
            .await?;
        txn.commit().await?;
        Ok(())
    }

    /// Forgets a shard at once, with no check: an operator's tool. A shard is dropped
    /// with [`Tenancy::drop_shard`](crate::Tenancy::drop_shard), which checks the catalog first.
    pub async fn unregister(&self, name: &ShardId) -> Result<()> {
        shard_entry::Entity::delete_by_id(name.as_str())
            .exec(&self.conn)
            .await?;
        Ok(())
    }

    /// Connects every registered shard (pools opened with `pool`: a [`PoolOptions`], or
    /// a number of connections per shard with the other defaults), all at once, and
    /// builds the topology routed by `router`. The topology keeps the pool options: a
    /// shard added later
    /// ([`Tenancy::create_shard`](crate::Tenancy::create_shard),
    /// [`Tenancy::add_shard`](crate::Tenancy::add_shard), a catalog refresh) gets a pool of
    /// the same options. A shard that cannot be reached within the connect timeout
    /// ([`with_connect_timeout`](Self::with_connect_timeout)) does not stop the start: it
    /// is marked unavailable (its tenants get [`Error::ShardUnavailable`] at once, the
    /// others are served) and [`Tenancy::refresh_catalog`] connects it again later. A
    /// shard whose URL cannot even be parsed is an error.
    ///
    /// [`Tenancy::refresh_catalog`]: crate::Tenancy::refresh_catalog
    pub async fn topology(
        &self,
        router: impl ShardRouter + 'static,
        pool: impl Into<PoolOptions>,
    ) -> Result<Topology> {
        let pool = pool.into();
        let records = self.list().await?;
        let attempts = records
            .iter()
            .map(|record| connect_shard(&record.url, &pool, self.connect_timeout));
        let outcomes = futures_util::future::join_all(attempts).await;
        let mut shards = Vec::with_capacity(records.len());
        let mut down = Vec::new();
        for (record, outcome) in records.into_iter().zip(outcomes) {
            let conn = match outcome {
                Ok(conn) => conn,
                Err(reason) => {
                    tracing::warn!(
                        target: "tenancy::catalog", shard = %record.name, %reason,
                        "shard unreachable at start: its tenants are refused until a \
                         catalog refresh reaches it"
                    );
                    let conn = lazy_shard(&record.url, &pool, self.connect_timeout)
                        .await
                        .map_err(|source| Error::Shard {
                            shard: record.name.to_string(),
                            source,
                        })?;
                    down.push((record.name.clone(), reason));
                    conn
                }
            };
            shards.push((record.name, conn));
        }
        let topology = Topology::new(router, shards)?
            .with_connect_timeout(self.connect_timeout)
            .with_pool_options(pool);
        for (shard, reason) in down {
            topology.mark_unavailable(&shard, reason);
        }
        Ok(topology)
    }
}

/// Connects a shard within `timeout`: its pool, or why not (passwords hidden).
pub(crate) async fn connect_shard(
    url: &str,
    pool: &PoolOptions,
    timeout: Duration,
) -> std::result::Result<DatabaseConnection, String> {
    let attempt = connect(pool.connect_options(url));
    futures_util::pin_mut!(attempt);
    match futures_util::future::select(attempt, futures_timer::Delay::new(timeout)).await {
        futures_util::future::Either::Left((Ok(conn), _)) => Ok(conn),
        futures_util::future::Either::Left((Err(error), _)) => Err(error.to_string()),
        futures_util::future::Either::Right(_) => {
            Err(format!("no connection within {} ms", timeout.as_millis()))
        }
    }
}

/// The stand-in pool of a shard that could not be reached: it connects on first use and
/// gives up after `timeout`, so the shard stays in the topology (its directory entries
/// load) and its part of a fan-out fails fast.
pub(crate) async fn lazy_shard(
    url: &str,
    pool: &PoolOptions,
    timeout: Duration,
) -> std::result::Result<DatabaseConnection, sea_orm::DbErr> {
    let mut options = pool.connect_options(url);
    options.connect_lazy(true).acquire_timeout(timeout);
    connect(options).await
}
