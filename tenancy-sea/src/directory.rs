//! The shard directory kept in a catalog database: which tenant lives on which shard, for
//! a [`DirectoryRouter`]. Read at start, changed only through this API, which updates the
//! catalog first (bumping the directory's version in the same transaction) and the
//! router's cache second; other processes' caches catch up through
//! [`DirectoryCatalog::refresh`] or [`DirectoryCatalog::watch`].

use crate::catalog::create_table_if_missing;
use crate::entity::TenantKey;
use crate::error::{Error, Result};

/// How many times [`DirectoryCatalog::load`] reads the catalog again when this process
/// changed the directory while it read.
const LOAD_ATTEMPTS: usize = 8;
use crate::registry::{ShardState, shard_entry};
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DatabaseTransaction, EntityTrait,
    QueryFilter, QuerySelect, Set, TransactionTrait,
};
use std::collections::HashMap;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;
use tenancy_core::{DirectoryRouter, ShardId, ShardRouter};

/// The framework's catalog entity of the directories: one row per placed key.
pub mod entry {
    use sea_orm::entity::prelude::*;

    /// A key (a tenant id, or a `#[shard_key]` value, as text) of one directory and the
    /// shard it lives on.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "tenancy_directory")]
    pub struct Model {
        /// The directory: `tenants`, or the name given to [`DirectoryCatalog::named`](crate::DirectoryCatalog::named).
        #[sea_orm(primary_key, auto_increment = false)]
        pub directory: String,
        /// The key, in its text form.
        #[sea_orm(primary_key, auto_increment = false)]
        pub key: String,
        /// The shard's name.
        pub shard: String,
    }

    /// No relations.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// The framework's catalog entity of key ranges: integer keys from a lower bound up to
/// the next range's bound live on one shard.
pub mod range_entry {
    use sea_orm::entity::prelude::*;

    /// A range's lower bound and the shard its keys live on.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "tenancy_directory_ranges")]
    pub struct Model {
        /// The directory, as in [`entry`](super::entry).
        #[sea_orm(primary_key, auto_increment = false)]
        pub directory: String,
        /// The smallest key of the range.
        #[sea_orm(primary_key, auto_increment = false)]
        pub lower_bound: i64,
        /// The shard's name.
        pub shard: String,
    }

    /// No relations.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// The framework's catalog entity of directory versions: each change to a directory
/// bumps its version, so a process can tell that its cached copy is stale.
pub mod version_entry {
    use sea_orm::entity::prelude::*;

    /// A directory and how many changes it has seen.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "tenancy_directory_versions")]
    pub struct Model {
        /// The directory, as in [`entry`](super::entry).
        #[sea_orm(primary_key, auto_increment = false)]
        pub directory: String,
        /// Bumped by every change.
        pub version: i64,
    }

    /// No relations.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// The framework's catalog entity of moves in progress: one row per key being moved, so
/// that two processes cannot move one tenant at once.
pub mod move_entry {
    use sea_orm::entity::prelude::*;

    /// A key of a directory being moved, and where to: a claim, held by one run of a
    /// move (its owner) until its lease ends, and renewed while the move runs.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "tenancy_directory_claims")]
    pub struct Model {
        /// The directory, as in [`entry`](super::entry).
        #[sea_orm(primary_key, auto_increment = false)]
        pub directory: String,
        /// The key, in its text form.
        #[sea_orm(primary_key, auto_increment = false)]
        pub key: String,
        /// The shard it is being moved to.
        pub shard: String,
        /// The run of the move that holds the claim (random, one per run).
        pub owner: String,
        /// When the claim lapses unless renewed, in milliseconds since the Unix epoch.
        pub expires_at: i64,
    }

    /// No relations.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
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

/// What [`DirectoryCatalog::load`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DirectoryLoad {
    /// How many keys and ranges were loaded.
    pub loaded: usize,
    /// The rows that could not be, each with why; their keys are unplaced here.
    pub skipped: Vec<SkippedEntry>,
}

/// A directory row [`DirectoryCatalog::load`] skipped.
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

/// A claim on a key for one run of a move (see [`move_entry`]).
#[derive(Debug)]
pub(crate) struct Claim {
    owner: String,
}

/// Milliseconds since the Unix epoch, by this process's clock.
fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// How long a move's claim lasts unless renewed, by default.
pub const DEFAULT_MOVE_LEASE: std::time::Duration = std::time::Duration::from_secs(60);

/// A directory of placements (key to shard) and key ranges in a catalog database (any
/// backend), for keys of type `K`. The tenants' directory is [`DirectoryCatalog::new`];
/// the values of a `#[shard_key]` have a directory of their own
/// ([`DirectoryCatalog::named`]), loaded into the router given to
/// [`Topology::with_key_router`](crate::Topology::with_key_router), so that tenant 42 and
/// device 42 are placed independently.
///
/// The directory takes keys of its type only, as its router does
/// ([`DirectoryRouter<K>`]): in an `i64` application, `assign(&router, &"42".to_owned(),
/// ..)` does not compile. Keys are stored as text and compared exactly (a binary collation
/// on MySQL/MariaDB), so `"ACME"` and `"acme"` are two keys in the catalog as everywhere
/// else.
///
/// ```
/// # use std::sync::Arc;
/// # use tenancy_sea::{DirectoryCatalog, DirectoryRouter, ShardRouter};
/// # async fn demo(catalog: sea_orm::DatabaseConnection) -> tenancy_sea::Result<()> {
/// let directory = DirectoryCatalog::<i64>::new(catalog);
/// directory.install().await?;
/// let router = Arc::new(DirectoryRouter::new(["s0", "s1"]));
/// directory.load(&router).await?;             // at start
/// directory.assign(&router, &42, "s1").await?; // catalog first, then the cache
/// assert_eq!(router.route(&42i64)?.as_str(), "s1");
/// # Ok(()) }
/// ```
pub struct DirectoryCatalog<K> {
    conn: DatabaseConnection,
    name: String,
    lease: std::time::Duration,
    keys: PhantomData<fn(&K)>,
}

impl<K> Clone for DirectoryCatalog<K> {
    fn clone(&self) -> Self {
        DirectoryCatalog {
            conn: self.conn.clone(),
            name: self.name.clone(),
            lease: self.lease,
            keys: PhantomData,
        }
    }
}

impl<K: TenantKey> std::fmt::Debug for DirectoryCatalog<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirectoryCatalog")
            .field("name", &self.name)
            .field("keys", &K::TYPE_NAME)
            .finish_non_exhaustive()
    }
}

impl<K: TenantKey> DirectoryCatalog<K> {
    /// The tenants' directory in the catalog database `conn`.
    pub fn new(conn: DatabaseConnection) -> Self {
        DirectoryCatalog {
            conn,
            name: "tenants".to_owned(),
            lease: DEFAULT_MOVE_LEASE,
            keys: PhantomData,
        }
    }

    /// Another directory in the same catalog tables, e.g. `devices` for the values of a
    /// `#[shard_key]`. The name must be a plain identifier.
    pub fn named(conn: DatabaseConnection, name: &str) -> Result<Self> {
        tenancy_core::Identifier::new(name)?;
        Ok(DirectoryCatalog {
            conn,
            name: name.to_owned(),
            lease: DEFAULT_MOVE_LEASE,
            keys: PhantomData,
        })
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
    /// obeys ([`ShardCatalog`](crate::ShardCatalog)), if they do not exist.
    pub async fn install(&self) -> Result<()> {
        crate::ShardCatalog::new(self.conn.clone())
            .install()
            .await?;
        create_table_if_missing(&self.conn, entry::Entity).await?;
        create_table_if_missing(&self.conn, range_entry::Entity).await?;
        create_table_if_missing(&self.conn, version_entry::Entity).await?;
        create_table_if_missing(&self.conn, move_entry::Entity).await?;
        self.ensure_version_row(&self.conn).await
    }

    fn lease_millis(&self) -> i64 {
        i64::try_from(self.lease.as_millis()).unwrap_or(i64::MAX)
    }

    /// Records in the catalog that `tenant` is being moved to `to`, for one run of a move:
    /// a live claim of another run, in any process, is [`Error::TenantMoving`]; a lapsed
    /// one (its lease ended: its process died, or its future was dropped) is taken over.
    pub(crate) async fn claim_move(&self, tenant: &K, to: &ShardId) -> Result<Claim> {
        let owner = uuid::Uuid::new_v4().simple().to_string();
        let key = tenant.to_string();
        let claimed = move_entry::Entity::insert(move_entry::ActiveModel {
            directory: Set(self.name.clone()),
            key: Set(key.clone()),
            shard: Set(to.to_string()),
            owner: Set(owner.clone()),
            expires_at: Set(now_millis().saturating_add(self.lease_millis())),
        })
        .exec_without_returning(&self.conn)
        .await;
        match claimed {
            Ok(_) => return Ok(Claim { owner }),
            Err(error)
                if matches!(
                    error.sql_err(),
                    Some(sea_orm::SqlErr::UniqueConstraintViolation(_))
                ) => {}
            Err(error) => return Err(error.into()),
        }
        // Taken over only if it has lapsed, in one compare-and-set: of two processes
        // taking over at once, one wins.
        let now = now_millis();
        let taken = move_entry::Entity::update_many()
            .col_expr(move_entry::Column::Owner, Expr::value(owner.clone()))
            .col_expr(move_entry::Column::Shard, Expr::value(to.to_string()))
            .col_expr(
                move_entry::Column::ExpiresAt,
                Expr::value(now.saturating_add(self.lease_millis())),
            )
            .filter(move_entry::Column::Directory.eq(self.name.clone()))
            .filter(move_entry::Column::Key.eq(key.clone()))
            .filter(move_entry::Column::ExpiresAt.lt(now))
            .exec(&self.conn)
            .await?;
        if taken.rows_affected == 1 {
            tracing::warn!(
                target: "tenancy::move", tenant = %key,
                "a lapsed move claim was taken over (its move's process died or gave up)"
            );
            Ok(Claim { owner })
        } else {
            Err(Error::TenantMoving { tenant: key })
        }
    }

    /// Extends `claim` by a lease; `false` when it is no longer this run's (it lapsed and
    /// another run took it over, or an operator released it).
    pub(crate) async fn renew(&self, tenant: &K, claim: &Claim) -> Result<bool> {
        let renewed = move_entry::Entity::update_many()
            .col_expr(
                move_entry::Column::ExpiresAt,
                Expr::value(now_millis().saturating_add(self.lease_millis())),
            )
            .filter(move_entry::Column::Directory.eq(self.name.clone()))
            .filter(move_entry::Column::Key.eq(tenant.to_string()))
            .filter(move_entry::Column::Owner.eq(claim.owner.clone()))
            .exec(&self.conn)
            .await?;
        Ok(renewed.rows_affected == 1)
    }

    /// Runs `work` while holding `claim`, renewing it every third of the lease. If the
    /// claim is lost (not renewed for a whole lease and taken over, or released by an
    /// operator), `work` is dropped, which rolls back its open transactions, and the
    /// result is [`Error::TenantMoving`].
    pub(crate) async fn hold<R>(
        &self,
        tenant: &K,
        claim: &Claim,
        work: impl std::future::Future<Output = Result<R>>,
    ) -> Result<R> {
        let renewals = async {
            let mut renewed = std::time::Instant::now();
            loop {
                futures_timer::Delay::new(self.lease / 3).await;
                match self.renew(tenant, claim).await {
                    Ok(true) => renewed = std::time::Instant::now(),
                    Ok(false) => {
                        return Err(Error::TenantMoving {
                            tenant: tenant.to_string(),
                        });
                    }
                    Err(error) => tracing::warn!(
                        target: "tenancy::move", tenant = %tenant, %error,
                        "renewing a move's claim failed; trying again"
                    ),
                }
                // Not renewed for half a lease: the claim may lapse before the next try,
                // and another run may take it over. Stop before that can happen.
                if renewed.elapsed() >= self.lease / 2 {
                    tracing::error!(
                        target: "tenancy::move", tenant = %tenant,
                        "a move's claim could not be renewed for half its lease: the move stops"
                    );
                    return Err(Error::TenantMoving {
                        tenant: tenant.to_string(),
                    });
                }
            }
        };
        futures_util::pin_mut!(work, renewals);
        match futures_util::future::select(work, renewals).await {
            futures_util::future::Either::Left((outcome, _))
            | futures_util::future::Either::Right((outcome, _)) => outcome,
        }
    }

    /// Clears this run's claim (not a claim another run took over).
    pub(crate) async fn release_claim(&self, tenant: &K, claim: &Claim) -> Result<()> {
        move_entry::Entity::delete_many()
            .filter(move_entry::Column::Directory.eq(self.name.clone()))
            .filter(move_entry::Column::Key.eq(tenant.to_string()))
            .filter(move_entry::Column::Owner.eq(claim.owner.clone()))
            .exec(&self.conn)
            .await?;
        Ok(())
    }

    /// Clears the claim on `tenant`, whoever holds it. A move clears its own when it ends;
    /// a claim whose move's process died lapses after the lease
    /// ([`with_move_lease`](Self::with_move_lease)). Call this to clear it sooner, once
    /// sure that no move of the tenant runs.
    pub async fn release_move(&self, tenant: &K) -> Result<()> {
        move_entry::Entity::delete_by_id((self.name.clone(), tenant.to_string()))
            .exec(&self.conn)
            .await?;
        Ok(())
    }

    /// The directory's version in the catalog: how many changes it has seen.
    pub async fn version(&self) -> Result<u64> {
        let row = version_entry::Entity::find_by_id(self.name.clone())
            .one(&self.conn)
            .await?;
        Ok(row.map_or(0, |row| u64::try_from(row.version).unwrap_or(0)))
    }

    /// Records a change of the directory, in the transaction that makes it.
    async fn bump(&self, txn: &DatabaseTransaction) -> Result<()> {
        self.ensure_version_row(txn).await?;
        version_entry::Entity::update_many()
            .col_expr(
                version_entry::Column::Version,
                Expr::col(version_entry::Column::Version).add(1),
            )
            .filter(version_entry::Column::Directory.eq(self.name.as_str()))
            .exec(txn)
            .await?;
        Ok(())
    }

    /// Makes the directory's version row (at 0) unless it exists. The conflict "updates"
    /// the key to its own value, so two first changes at once both find the row.
    async fn ensure_version_row(&self, conn: &impl ConnectionTrait) -> Result<()> {
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

    /// Reloads `router` from the catalog if the directory changed since `router` was last
    /// loaded (by this process or another one); returns whether it did. Cheap when
    /// nothing changed: one primary-key read.
    pub async fn refresh(&self, router: &DirectoryRouter<K>) -> Result<bool> {
        if self.version().await? == router.version() {
            return Ok(false);
        }
        self.load(router).await?;
        Ok(true)
    }

    /// Keeps `router` in step with the catalog: every `every`, [`refresh`](Self::refresh)
    /// it. Changes made through another process's directory reach this one within
    /// `every`. The future runs until dropped; spawn it on the application's runtime. A
    /// failed refresh is logged (`tracing`, target `tenancy::directory`) and tried again
    /// at the next tick, the router keeping what it had.
    ///
    /// An entry that names a shard `router` does not have is skipped (see
    /// [`load`](Self::load)), so when other processes create shards at run time, use
    /// [`Tenancy::watch_catalog`](crate::Tenancy::watch_catalog) instead: it connects new
    /// shards before it reloads the directory.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use std::time::Duration;
    /// # use tenancy_sea::{DirectoryCatalog, DirectoryRouter};
    /// # async fn demo(directory: DirectoryCatalog<i64>, router: Arc<DirectoryRouter<i64>>) {
    /// tokio::spawn(directory.watch(router, Duration::from_secs(2)));
    /// # }
    /// ```
    // Written out so the signature promises `Send + 'static` to any runtime's spawner.
    #[allow(clippy::manual_async_fn)]
    pub fn watch(
        self,
        router: Arc<DirectoryRouter<K>>,
        every: Duration,
    ) -> impl Future<Output = ()> + Send + 'static {
        async move {
            loop {
                futures_timer::Delay::new(every).await;
                if let Err(error) = self.refresh(&router).await {
                    tracing::warn!(
                        target: "tenancy::directory",
                        directory = %self.name,
                        %error,
                        "refreshing the directory failed; keeping the entries loaded before"
                    );
                }
            }
        }
    }

    /// Loads the directory into `router`, replacing every key and range it held, at once:
    /// a lookup meanwhile sees the old entries or the new ones. A row that cannot be
    /// loaded (a key that is not of this directory's type, a shard `router` does not have
    /// in service, a range in a directory of non-integer keys) is skipped and reported in
    /// [`DirectoryLoad::skipped`] (and logged), and the rest is loaded: one bad row does
    /// not freeze every process's directory. Its key is then unplaced here.
    pub async fn load(&self, router: &DirectoryRouter<K>) -> Result<DirectoryLoad> {
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
            let rows = entry::Entity::find()
                .filter(entry::Column::Directory.eq(self.name.as_str()))
                .all(&self.conn)
                .await?;
            let mut skipped = Vec::new();
            let mut keys = Vec::with_capacity(rows.len());
            for row in rows {
                let shard = ShardId::new(row.shard);
                match K::parse_tenant_id(&row.key) {
                    Err(error) => skipped.push(SkippedEntry {
                        entry: row.key,
                        shard,
                        reason: SkipReason::InvalidKey(error.to_string()),
                    }),
                    Ok(_) if !in_service.contains(&shard) => skipped.push(SkippedEntry {
                        entry: row.key,
                        shard,
                        reason: SkipReason::UnknownShard,
                    }),
                    Ok(key) => keys.push((key, shard)),
                }
            }
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

    /// Moves `tenant`'s placement from `from` to `to`: in the catalog, only if it is on
    /// `from` there (compare and set, bumping the version in the same transaction), then in
    /// `router`. `Ok(false)` when the catalog had it elsewhere, and nothing changed.
    pub(crate) async fn switch(
        &self,
        router: &DirectoryRouter<K>,
        tenant: &K,
        from: &ShardId,
        to: &ShardId,
        claim: &Claim,
    ) -> Result<bool> {
        let txn = self.conn.begin().await?;
        self.guard_shard(&txn, to).await?;
        // Only the run that holds a live claim switches: one whose claim lapsed (and may
        // have been taken over) stops here, in the switch's own transaction.
        let mut held = move_entry::Entity::find()
            .filter(move_entry::Column::Directory.eq(self.name.clone()))
            .filter(move_entry::Column::Key.eq(tenant.to_string()))
            .filter(move_entry::Column::Owner.eq(claim.owner.clone()))
            .filter(move_entry::Column::ExpiresAt.gt(now_millis()));
        if txn.get_database_backend() != sea_orm::DbBackend::Sqlite {
            held = held.lock_exclusive();
        }
        if held.one(&txn).await?.is_none() {
            txn.rollback().await?;
            return Err(Error::TenantMoving {
                tenant: tenant.to_string(),
            });
        }
        let switched = entry::Entity::update_many()
            .col_expr(entry::Column::Shard, Expr::value(to.as_str()))
            .filter(entry::Column::Directory.eq(self.name.as_str()))
            .filter(entry::Column::Key.eq(tenant.to_string()))
            .filter(entry::Column::Shard.eq(from.as_str()))
            .exec(&txn)
            .await?;
        if switched.rows_affected != 1 {
            txn.rollback().await?;
            return Ok(false);
        }
        self.bump(&txn).await?;
        txn.commit().await?;
        router.assign(tenant, to.clone())?;
        Ok(true)
    }

    /// Places the integer keys from `lower_bound` up to the next range's bound on `shard`:
    /// in the catalog, then in `router`. Keys with an entry of their own
    /// ([`assign`](Self::assign)) keep it.
    pub async fn assign_range(
        &self,
        router: &DirectoryRouter<K>,
        lower_bound: i64,
        shard: impl Into<ShardId>,
    ) -> Result<()> {
        let shard = shard.into();
        if !tenancy_core::ShardRouter::shards(router).contains(&shard) {
            return Err(tenancy_core::RoutingError::UnknownShard(shard.to_string()).into());
        }
        let id = (self.name.clone(), lower_bound);
        let previous = range_entry::Entity::find_by_id(id.clone())
            .one(&self.conn)
            .await?;
        if previous
            .as_ref()
            .is_none_or(|row| row.shard != shard.as_str())
        {
            self.refuse_draining(&shard).await?;
        }
        let txn = self.conn.begin().await?;
        self.guard_shard(&txn, &shard).await?;
        self.put_range(&txn, lower_bound, shard.as_str()).await?;
        self.bump(&txn).await?;
        txn.commit().await?;
        if let Err(error) = router.assign_range(lower_bound, shard) {
            // The shard left the router meanwhile: the catalog goes back to what it held.
            let txn = self.conn.begin().await?;
            match previous {
                Some(row) => self.put_range(&txn, lower_bound, &row.shard).await?,
                None => {
                    range_entry::Entity::delete_by_id(id).exec(&txn).await?;
                }
            }
            self.bump(&txn).await?;
            txn.commit().await?;
            return Err(error.into());
        }
        Ok(())
    }

    async fn put_range(
        &self,
        txn: &DatabaseTransaction,
        lower_bound: i64,
        shard: &str,
    ) -> Result<()> {
        range_entry::Entity::insert(range_entry::ActiveModel {
            directory: Set(self.name.clone()),
            lower_bound: Set(lower_bound),
            shard: Set(shard.to_owned()),
        })
        .on_conflict(
            OnConflict::columns([
                range_entry::Column::Directory,
                range_entry::Column::LowerBound,
            ])
            .update_column(range_entry::Column::Shard)
            .to_owned(),
        )
        .exec_without_returning(txn)
        .await?;
        Ok(())
    }

    /// Removes the range starting at `lower_bound`: from the catalog, then from `router`.
    pub async fn remove_range(&self, router: &DirectoryRouter<K>, lower_bound: i64) -> Result<()> {
        let txn = self.conn.begin().await?;
        range_entry::Entity::delete_by_id((self.name.clone(), lower_bound))
            .exec(&txn)
            .await?;
        self.bump(&txn).await?;
        txn.commit().await?;
        router.remove_range(lower_bound);
        Ok(())
    }

    /// Places `tenant` on `shard`: in the catalog, then in `router`. A shard the router
    /// does not know is refused before the catalog is touched, and so is a shard the
    /// registry marks [draining](ShardState::Draining) ([`Error::ShardDraining`]) unless
    /// the key is on it already.
    pub async fn assign(
        &self,
        router: &DirectoryRouter<K>,
        tenant: &K,
        shard: impl Into<ShardId>,
    ) -> Result<()> {
        let shard = shard.into();
        tenant.validate()?;
        if !tenancy_core::ShardRouter::shards(router).contains(&shard) {
            return Err(tenancy_core::RoutingError::UnknownShard(shard.to_string()).into());
        }
        let id = (self.name.clone(), tenant.to_string());
        let previous = entry::Entity::find_by_id(id.clone())
            .one(&self.conn)
            .await?;
        if previous
            .as_ref()
            .is_none_or(|row| row.shard != shard.as_str())
        {
            self.refuse_draining(&shard).await?;
        }
        let txn = self.conn.begin().await?;
        self.guard_shard(&txn, &shard).await?;
        self.put_entry(&txn, &id.1, shard.as_str()).await?;
        self.bump(&txn).await?;
        txn.commit().await?;
        if let Err(error) = router.assign(tenant, shard) {
            // The shard left the router meanwhile: the catalog goes back to what it held.
            let txn = self.conn.begin().await?;
            match previous {
                Some(row) => self.put_entry(&txn, &id.1, &row.shard).await?,
                None => {
                    entry::Entity::delete_by_id(id).exec(&txn).await?;
                }
            }
            self.bump(&txn).await?;
            txn.commit().await?;
            return Err(error.into());
        }
        Ok(())
    }

    /// Places a new `tenant` on the shard of `router` that holds the fewest keys of this
    /// directory, passing over draining shards (ties go to the first name), and returns
    /// it. A tenant placed already keeps its shard, which is returned: placing is safe to
    /// repeat, and when two processes place the same tenant at once, both get the shard
    /// the first one recorded. Every shard draining is [`Error::NoShardAvailable`].
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use tenancy_sea::{DirectoryCatalog, DirectoryRouter, ShardRouter};
    /// # async fn demo(catalog: sea_orm::DatabaseConnection) -> tenancy_sea::Result<()> {
    /// let directory = DirectoryCatalog::<i64>::new(catalog);
    /// let router = Arc::new(DirectoryRouter::new(["s0", "s1"]));
    /// let home = directory.place(&router, &42).await?; // the emptier shard
    /// assert_eq!(router.route(&42i64)?, home);
    /// assert_eq!(directory.place(&router, &42).await?, home); // placed once
    /// # Ok(()) }
    /// ```
    pub async fn place(&self, router: &DirectoryRouter<K>, tenant: &K) -> Result<ShardId> {
        tenant.validate()?;
        let key = tenant.to_string();
        if let Some(row) = entry::Entity::find_by_id((self.name.clone(), key.clone()))
            .one(&self.conn)
            .await?
        {
            return self.settle(router, tenant, row.shard);
        }
        let draining: Vec<String> = shard_entry::Entity::find()
            .filter(
                shard_entry::Column::State
                    .is_in([ShardState::Draining.as_str(), crate::registry::DROPPED]),
            )
            .select_only()
            .column(shard_entry::Column::Name)
            .into_tuple()
            .all(&self.conn)
            .await?;
        let counts: HashMap<String, i64> = entry::Entity::find()
            .filter(entry::Column::Directory.eq(self.name.as_str()))
            .select_only()
            .column(entry::Column::Shard)
            .column_as(entry::Column::Key.count(), "keys")
            .group_by(entry::Column::Shard)
            .into_tuple::<(String, i64)>()
            .all(&self.conn)
            .await?
            .into_iter()
            .collect();
        let mut candidates = router.shards();
        candidates.retain(|shard| !draining.iter().any(|d| d == shard.as_str()));
        candidates.sort();
        let shard = candidates
            .into_iter()
            .min_by_key(|shard| counts.get(shard.as_str()).copied().unwrap_or(0))
            .ok_or_else(|| Error::NoShardAvailable {
                directory: self.name.clone(),
            })?;
        // Recorded only if no one placed the tenant meanwhile; the row that stands wins.
        // The conflict "updates" a key column to its own value: `DO NOTHING` has no
        // MySQL form that sea-query writes.
        let txn = self.conn.begin().await?;
        self.guard_shard(&txn, &shard).await?;
        entry::Entity::insert(entry::ActiveModel {
            directory: Set(self.name.clone()),
            key: Set(key.clone()),
            shard: Set(shard.to_string()),
        })
        .on_conflict(
            OnConflict::columns([entry::Column::Directory, entry::Column::Key])
                .update_column(entry::Column::Directory)
                .to_owned(),
        )
        .exec_without_returning(&txn)
        .await?;
        self.bump(&txn).await?;
        txn.commit().await?;
        let row = entry::Entity::find_by_id((self.name.clone(), key))
            .one(&self.conn)
            .await?
            .ok_or_else(|| {
                Error::Config(format!(
                    "the placement of {tenant} vanished from directory {} as it was made",
                    self.name
                ))
            })?;
        self.settle(router, tenant, row.shard)
    }

    /// Puts the catalog's placement of `tenant` in `router` and returns its shard.
    fn settle(&self, router: &DirectoryRouter<K>, tenant: &K, shard: String) -> Result<ShardId> {
        let shard = ShardId::new(shard);
        router.assign(tenant, shard.clone())?;
        Ok(shard)
    }

    /// [`Error::ShardDraining`] when the registry marks `shard` draining. A shard the
    /// registry does not list (a topology built by hand) takes keys.
    /// In `txn`, takes `shard`'s registry row shared (a drop of the shard, which takes it
    /// exclusively, waits for this placement, then sees it) and refuses a shard dropped
    /// meanwhile: a process whose cache still has a dropped shard cannot place a key on
    /// it. A shard missing from the registry (a topology not built from it) passes.
    async fn guard_shard(&self, txn: &DatabaseTransaction, shard: &ShardId) -> Result<()> {
        let mut row = shard_entry::Entity::find_by_id(shard.as_str());
        if txn.get_database_backend() != sea_orm::DbBackend::Sqlite {
            row = row.lock_shared();
        }
        match row.one(txn).await? {
            Some(row) if row.state == crate::registry::DROPPED => {
                Err(tenancy_core::RoutingError::UnknownShard(shard.to_string()).into())
            }
            _ => Ok(()),
        }
    }

    pub(crate) async fn refuse_draining(&self, shard: &ShardId) -> Result<()> {
        let row = shard_entry::Entity::find_by_id(shard.as_str())
            .one(&self.conn)
            .await?;
        match row {
            Some(row) if row.state == crate::registry::DROPPED => {
                Err(tenancy_core::RoutingError::UnknownShard(shard.to_string()).into())
            }
            Some(row) if ShardState::parse(&row.state)? == ShardState::Draining => {
                Err(Error::ShardDraining {
                    shard: shard.to_string(),
                })
            }
            _ => Ok(()),
        }
    }

    async fn put_entry(&self, txn: &DatabaseTransaction, key: &str, shard: &str) -> Result<()> {
        entry::Entity::insert(entry::ActiveModel {
            directory: Set(self.name.clone()),
            key: Set(key.to_owned()),
            shard: Set(shard.to_owned()),
        })
        .on_conflict(
            OnConflict::columns([entry::Column::Directory, entry::Column::Key])
                .update_column(entry::Column::Shard)
                .to_owned(),
        )
        .exec_without_returning(txn)
        .await?;
        Ok(())
    }

    /// Removes `tenant`'s placement: from the catalog, then from `router`.
    pub async fn remove(&self, router: &DirectoryRouter<K>, tenant: &K) -> Result<()> {
        let txn = self.conn.begin().await?;
        entry::Entity::delete_by_id((self.name.clone(), tenant.to_string()))
            .exec(&txn)
            .await?;
        self.bump(&txn).await?;
        txn.commit().await?;
        router.remove(tenant);
        Ok(())
    }
}
