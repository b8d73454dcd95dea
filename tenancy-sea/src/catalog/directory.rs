//! The shard directory kept in a catalog database: which tenant lives on which shard, for
//! a [`DirectoryRouter`]. Read at start, changed only through this API, which updates the
//! catalog first (bumping the directory's version in the same transaction) and the
//! router's cache second; other processes' caches catch up through
//! [`Directory::refresh`] or [`Directory::watch`].

pub(crate) use super::changes::Changed;
use super::claims::DEFAULT_MOVE_LEASE;
use super::create_table_if_missing;
use super::entities::add_column_if_missing;
use super::entities::{change_entry, entry, move_entry, range_entry, router_entry, version_entry};
use super::routers::DEFAULT_ROUTER_LEASE;
use crate::entity::SqlTenantId;
use crate::error::{Error, Result};
use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DatabaseTransaction, EntityTrait,
    QueryFilter, QuerySelect, Set,
};
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tenancy_core::{DirectoryRouter, ShardId, ShardRouter};

/// How many times [`Directory::load`] reads the catalog again when this process
/// changed the directory while it read.
const LOAD_ATTEMPTS: usize = 8;

/// A fresh name for a router among those that acknowledge directory versions.
fn new_router_id() -> Arc<str> {
    uuid::Uuid::new_v4().simple().to_string().into()
}

/// Whether the directory tables exist in the catalog `conn`: (entries and ranges, move
/// claims); a catalog installed by an earlier version may lack the claims.
pub(crate) async fn installed(conn: &DatabaseConnection) -> Result<(bool, bool)> {
    let schema = sea_orm_migration::SchemaManager::new(conn);
    Ok((
        schema.has_table("tenancy_directory").await?
            && schema.has_table("tenancy_directory_ranges").await?,
        schema.has_table("tenancy_directory_claims").await?,
    ))
}

/// How many directory entries, ranges and (with `claims`) move claims, of every
/// directory, name `shard`.
pub(crate) async fn uses_of(
    txn: &DatabaseTransaction,
    shard: &ShardId,
    claims: bool,
) -> Result<(u64, u64, u64)> {
    use sea_orm::PaginatorTrait;
    let keys = entry::Entity::find()
        .filter(entry::Column::Shard.eq(shard.as_str()))
        .count(txn)
        .await?;
    let ranges = range_entry::Entity::find()
        .filter(range_entry::Column::Shard.eq(shard.as_str()))
        .count(txn)
        .await?;
    let moves = if claims {
        move_entry::Entity::find()
            .filter(move_entry::Column::Shard.eq(shard.as_str()))
            .count(txn)
            .await?
    } else {
        0
    };
    Ok((keys, ranges, moves))
}

/// What [`Directory::load`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DirectoryLoad {
    /// How many keys and ranges were loaded.
    pub loaded: usize,
    /// The rows that could not be, each with why; their keys are unplaced here.
    pub skipped: Vec<SkippedEntry>,
}

/// A directory row [`Directory::load`] skipped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkippedEntry {
    /// The key, in its text form, or the range (`range from <bound>`).
    pub entry: String,
    /// The shard the row names.
    pub shard: ShardId,
    /// Why it was skipped.
    pub reason: SkipReason,
}

/// Why a directory row was skipped.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SkipReason {
    /// The row names a shard the router does not have in service (dropped, or not yet
    /// connected in this process).
    UnknownShard,
    /// The key is not a valid id of the directory's key type.
    InvalidKey(String),
    /// A range, in a directory whose keys are not integers.
    RangeOfNonIntegers,
}

/// A directory of placements (key to shard) and key ranges in a catalog database (any
/// backend), for keys of type `K`. The tenants' directory is [`Directory::new`];
/// the values of a `#[shard_key]` have a directory of their own
/// ([`Directory::named`]), loaded into the router given to
/// [`Topology::with_key_router`](crate::Topology::with_key_router), so that tenant 42 and
/// device 42 are placed independently.
///
/// The directory takes keys of its type only, as its router does
/// ([`DirectoryRouter<K>`]): in an `i64` application, `assign(&"42".to_owned(), ..)` does
/// not compile. Keys are stored as text and compared exactly (a binary collation
/// on MySQL/MariaDB), so `"ACME"` and `"acme"` are two keys in the catalog as everywhere
/// else.
///
/// ```
/// # use std::sync::Arc;
/// # use tenancy_sea::{catalog::Directory, DirectoryRouter, ShardRouter};
/// # async fn demo(catalog: sea_orm::DatabaseConnection) -> tenancy_sea::Result<()> {
/// let router = Arc::new(DirectoryRouter::new(["s0", "s1"]));
/// let directory = Directory::<i64>::new(catalog, router.clone());
/// directory.install().await?;
/// directory.load().await?;             // at start
/// directory.assign(&42, "s1").await?;  // catalog first, then the router
/// assert_eq!(router.route(&42i64)?.as_str(), "s1");
/// # Ok(()) }
/// ```
pub struct Directory<K> {
    pub(super) conn: DatabaseConnection,
    pub(super) name: String,
    pub(super) lease: std::time::Duration,
    /// This view's router among those that acknowledge directory versions.
    pub(super) router_id: Arc<str>,
    /// How long the router routes after an acknowledged refresh.
    pub(super) router_lease: Duration,
    /// The router this process routes by, which the directory keeps in step with the
    /// catalog.
    pub(super) router: Arc<DirectoryRouter<K>>,
}

impl<K> Clone for Directory<K> {
    fn clone(&self) -> Self {
        Directory {
            conn: self.conn.clone(),
            name: self.name.clone(),
            lease: self.lease,
            router_id: self.router_id.clone(),
            router_lease: self.router_lease,
            router: self.router.clone(),
        }
    }
}

impl<K: SqlTenantId> std::fmt::Debug for Directory<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Directory")
            .field("name", &self.name)
            .field("keys", &K::TYPE_NAME)
            .finish_non_exhaustive()
    }
}

impl<K: SqlTenantId> Directory<K> {
    /// The tenants' directory in the catalog database `conn`, kept in `router`: the
    /// router the topology routes by (pass the same `Arc` to
    /// [`Topology::new`](crate::Topology::new)). The directory changes the catalog, then
    /// the router; [`load`](Self::load) and [`refresh`](Self::refresh) bring the router
    /// up to the catalog.
    pub fn new(conn: DatabaseConnection, router: Arc<DirectoryRouter<K>>) -> Self {
        Directory {
            conn,
            name: "tenants".to_owned(),
            lease: DEFAULT_MOVE_LEASE,
            router_id: new_router_id(),
            router_lease: DEFAULT_ROUTER_LEASE,
            router,
        }
    }

    /// Another directory in the same catalog tables, e.g. `devices` for the values of a
    /// `#[shard_key]`, kept in `router`. The name must be a plain identifier.
    pub fn named(
        conn: DatabaseConnection,
        name: &str,
        router: Arc<DirectoryRouter<K>>,
    ) -> Result<Self> {
        tenancy_core::Identifier::new(name)?;
        Ok(Directory {
            conn,
            name: name.to_owned(),
            lease: DEFAULT_MOVE_LEASE,
            router_id: new_router_id(),
            router_lease: DEFAULT_ROUTER_LEASE,
            router,
        })
    }

    /// The router this directory keeps in step with the catalog.
    pub fn router(&self) -> &Arc<DirectoryRouter<K>> {
        &self.router
    }

    /// The same catalog directory, kept in another router: another process's view of
    /// it, or a router made afresh after a restart.
    pub fn for_router(&self, router: Arc<DirectoryRouter<K>>) -> Self {
        Directory {
            router,
            router_id: new_router_id(),
            ..self.clone()
        }
    }

    /// How long a move's claim on a key lasts unless renewed ([`DEFAULT_MOVE_LEASE`], 60
    /// s, by default). A running move renews it every third of the lease; a move whose
    /// process died, or whose future was dropped, leaves a claim that lapses after the
    /// lease, and the next move takes it over. The processes' clocks must agree to well
    /// within the lease.
    pub fn with_move_lease(mut self, lease: std::time::Duration) -> Self {
        self.lease = lease.max(std::time::Duration::from_millis(30));
        self
    }

    /// The directory's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Creates the directory tables, and the shard registry whose states the directory
    /// obeys ([`Shards`](crate::catalog::Shards)), if they do not exist.
    pub async fn install(&self) -> Result<()> {
        super::shards::Shards::new(self.conn.clone())
            .install()
            .await?;
        create_table_if_missing(&self.conn, entry::Entity).await?;
        create_table_if_missing(&self.conn, range_entry::Entity).await?;
        create_table_if_missing(&self.conn, version_entry::Entity).await?;
        create_table_if_missing(&self.conn, move_entry::Entity).await?;
        create_table_if_missing(&self.conn, router_entry::Entity).await?;
        create_table_if_missing(&self.conn, change_entry::Entity).await?;
        for column in [move_entry::Column::FromShard, move_entry::Column::Digest] {
            add_column_if_missing(&self.conn, move_entry::Entity, column).await?;
        }
        self.ensure_version_row(&self.conn).await
    }

    /// The directory's version in the catalog: how many changes it has seen.
    pub async fn version(&self) -> Result<u64> {
        let row = version_entry::Entity::find_by_id(self.name.clone())
            .one(&self.conn)
            .await?;
        Ok(row.map_or(0, |row| u64::try_from(row.version).unwrap_or(0)))
    }

    /// Makes the directory's version row (at 0) unless it exists. The conflict "updates"
    /// the key to its own value, so two first changes at once both find the row.
    pub(super) async fn ensure_version_row(&self, conn: &impl ConnectionTrait) -> Result<()> {
        version_entry::Entity::insert(version_entry::ActiveModel {
            directory: Set(self.name.clone()),
            version: Set(0),
        })
        .on_conflict(
            OnConflict::column(version_entry::Column::Directory)
                .update_column(version_entry::Column::Directory)
                .to_owned(),
        )
        .exec_without_returning(conn)
        .await?;
        Ok(())
    }

    /// Keeps the router in step with the catalog: [`refresh`](Self::refresh) it now and
    /// then every `every`, and after each refresh [`acknowledge`](Self::acknowledge) the
    /// version applied. Changes made through another process's directory reach this one
    /// within `every`, and moves wait for this router to apply their switch before they
    /// remove a tenant's old rows. The router is leased
    /// ([`with_router_lease`](Self::with_router_lease), 30 s by default): when refreshes
    /// fail for longer, it stops routing
    /// ([`RoutingError::DirectoryStale`](crate::RoutingError::DirectoryStale)) until one
    /// succeeds. The future runs until dropped; spawn it on the application's runtime. A
    /// failed refresh is logged (`tracing`, target `tenancy::directory`) and tried again
    /// at the next tick, the router keeping what it had meanwhile.
    ///
    /// An entry that names a shard the router does not have is skipped (see
    /// [`load`](Self::load)), so when other processes create shards at run time, use
    /// [`Tenancy::watch_catalog`](crate::Tenancy::watch_catalog) instead: it connects new
    /// shards before it reloads the directory.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use std::time::Duration;
    /// # use tenancy_sea::{catalog::Directory, DirectoryRouter};
    /// # async fn demo(directory: Directory<i64>) {
    /// tokio::spawn(directory.watch(Duration::from_secs(2)));
    /// # }
    /// ```
    // Written out so the signature promises `Send + 'static` to any runtime's spawner.
    #[allow(clippy::manual_async_fn)]
    pub fn watch(self, every: Duration) -> impl Future<Output = ()> + Send + 'static {
        async move {
            loop {
                let refreshed = match self.refresh().await {
                    Ok(_) => self.acknowledge().await,
                    Err(error) => Err(error),
                };
                if let Err(error) = refreshed {
                    tracing::warn!(
                        target: "tenancy::directory",
                        directory = %self.name,
                        %error,
                        "refreshing the directory failed; keeping the entries loaded before"
                    );
                }
                futures_timer::Delay::new(every).await;
            }
        }
    }

    /// Loads the directory into the router, replacing every key and range it held, at once:
    /// a lookup meanwhile sees the old entries or the new ones. A row that cannot be
    /// loaded (a key that is not of this directory's type, a shard the router does not have
    /// in service, a range in a directory of non-integer keys) is skipped and reported in
    /// [`DirectoryLoad::skipped`] (and logged), and the rest is loaded: one bad row does
    /// not freeze every process's directory. Its key is then unplaced here.
    pub async fn load(&self) -> Result<DirectoryLoad> {
        let router = &*self.router;
        // A change made here while the catalog is read would be undone by the older
        // entries: the router refuses them, and they are read again.
        for attempt in 0..LOAD_ATTEMPTS {
            if attempt > 0 {
                // Changes come in bursts (a batch of placements): let one pass.
                futures_timer::Delay::new(Duration::from_millis(5 << attempt)).await;
            }
            let since = router.changes();
            let in_service = ShardRouter::shards(router);
            // The version first: a change committed while the entries are read makes the
            // next refresh load again rather than be missed.
            let version = self.version().await?;
            // Only the key and the shard of each row; each shard's name becomes one
            // `ShardId`, checked against the shards in service once, shared by its keys.
            let rows: Vec<(String, String)> = entry::Entity::find()
                .select_only()
                .column(entry::Column::Key)
                .column(entry::Column::Shard)
                .filter(entry::Column::Directory.eq(self.name.as_str()))
                .into_tuple()
                .all(&self.conn)
                .await?;
            let mut shards: HashMap<String, (ShardId, bool)> = HashMap::new();
            let mut skipped = Vec::new();
            let mut keys = Vec::with_capacity(rows.len());
            for (key, name) in rows {
                let (shard, serving) = match shards.get(&name) {
                    Some(known) => known.clone(),
                    None => {
                        let shard = ShardId::new(name.as_str());
                        let serving = in_service.contains(&shard);
                        shards.insert(name, (shard.clone(), serving));
                        (shard, serving)
                    }
                };
                match K::parse_tenant_id(&key) {
                    Err(error) => skipped.push(SkippedEntry {
                        entry: key,
                        shard,
                        reason: SkipReason::InvalidKey(error.to_string()),
                    }),
                    Ok(_) if !serving => skipped.push(SkippedEntry {
                        entry: key,
                        shard,
                        reason: SkipReason::UnknownShard,
                    }),
                    Ok(key) => keys.push((key, shard)),
                }
            }
            drop(shards);
            let mut ranges = Vec::new();
            for range in range_entry::Entity::find()
                .filter(range_entry::Column::Directory.eq(self.name.as_str()))
                .all(&self.conn)
                .await?
            {
                let shard = ShardId::new(range.shard);
                let reason = if !K::INTEGER {
                    Some(SkipReason::RangeOfNonIntegers)
                } else if !in_service.contains(&shard) {
                    Some(SkipReason::UnknownShard)
                } else {
                    None
                };
                match reason {
                    Some(reason) => skipped.push(SkippedEntry {
                        entry: format!("range from {}", range.lower_bound),
                        shard,
                        reason,
                    }),
                    None => ranges.push((range.lower_bound, shard)),
                }
            }
            let loaded = keys.len() + ranges.len();
            if router.replace(keys, ranges, version, since)? {
                for skip in &skipped {
                    tracing::warn!(
                        target: "tenancy::directory", directory = %self.name,
                        entry = %skip.entry, shard = %skip.shard, reason = ?skip.reason,
                        "a directory entry was skipped: its key is unplaced in this process"
                    );
                }
                return Ok(DirectoryLoad { loaded, skipped });
            }
            if version < router.version() {
                // Another load put a newer version in already.
                return Ok(DirectoryLoad::default());
            }
        }
        Err(Error::DirectoryBusy {
            directory: self.name.clone(),
            attempts: LOAD_ATTEMPTS,
        })
    }

    /// Where the catalog places `tenant`, if anywhere.
    pub async fn placement(&self, tenant: &K) -> Result<Option<ShardId>> {
        Ok(
            entry::Entity::find_by_id((self.name.clone(), tenant.to_string()))
                .one(&self.conn)
                .await?
                .map(|row| ShardId::new(row.shard)),
        )
    }
}
