//! Sharding: a topology of shards, each a SeaORM connection, with a router that places
//! each key on one shard, and explicit scatter-gather reads across shards.
//!
//! By default the tenant id is the shard key (a tenant's rows live together, as in
//! Citus); an entity with a `#[shard_key]` field is placed row by row by that key.

use crate::entity::TenantKey;
use crate::error::{Error, Result};
use crate::scope::Session;
use futures_util::FutureExt;
use sea_orm::sea_query::{Condition, Expr, ExprTrait, IntoCondition, SimpleExpr};
use sea_orm::{
    DatabaseConnection, DbBackend, DbErr, EntityTrait, ModelTrait, Order, PaginatorTrait,
    QueryFilter, QuerySelect, Select, TryGetable, TryGetableMany,
};
use std::cmp::Ordering;
use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tenancy_core::{KeyType, ShardId, ShardRouter};
use tracing::Instrument;

#[macro_use]
mod fanout;
mod merge;

use fanout::{fan_out_tag, for_target, under_deadline};
use merge::{compare, fits_i64, integer_column, mergeable, ordered, parse_sum, sum_as_text};

/// Runs a future to completion on the application's runtime, e.g.
/// `|future| { tokio::spawn(future); }`.
pub type Spawner = Arc<dyn Fn(Pin<Box<dyn Future<Output = ()> + Send>>) + Send + Sync>;

type Shards = Arc<Vec<(ShardId, DatabaseConnection)>>;

/// How long connecting to a shard may take before it counts as unavailable, by default.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The shards and the router that places keys on them.
///
/// The set of shards can change while the application runs
/// ([`add_shard`](Self::add_shard), [`remove_shard`](Self::remove_shard), or the shard
/// registry of [`ShardCatalog`](crate::ShardCatalog)); each fan-out works on the set as it
/// was when the fan-out started.
pub struct Topology {
    router: Arc<dyn ShardRouter>,
    /// Places `#[shard_key]` values, when they need a router of their own.
    key_router: Option<Arc<dyn ShardRouter>>,
    shards: RwLock<Shards>,
    timeout: Duration,
    spawner: Option<Spawner>,
    /// The canonical bytes of the tenants being moved between shards: no handle is given
    /// out for them meanwhile. `moves` counts them, so routing reads one atomic when
    /// nothing moves.
    moving: Mutex<HashSet<Vec<u8>>>,
    moves: AtomicUsize,
    /// Shards in the topology whose database could not be reached, with why: their
    /// tenants get [`Error::ShardUnavailable`] at once, and fan-outs report them missing.
    /// `unavailable_count` lets routing read one atomic when every shard is up.
    unavailable: RwLock<BTreeMap<ShardId, String>>,
    unavailable_count: AtomicUsize,
    /// How long a connection attempt to a shard may take before the shard counts as
    /// unavailable.
    connect_timeout: Duration,
}

impl std::fmt::Debug for Topology {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Topology")
            .field(
                "shards",
                &self
                    .snapshot()
                    .iter()
                    .map(|(id, _)| id.clone())
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl Topology {
    /// A topology of named shards; every shard `router` can return must be among them.
    pub fn new(
        router: impl ShardRouter + 'static,
        shards: impl IntoIterator<Item = (ShardId, DatabaseConnection)>,
    ) -> Result<Self> {
        let shards: Vec<_> = shards.into_iter().collect();
        for routed in router.shards() {
            if !shards.iter().any(|(id, _)| *id == routed) {
                return Err(Error::Config(format!(
                    "the router places keys on shard {routed}, which the topology lacks"
                )));
            }
        }
        Ok(Topology {
            router: Arc::new(router),
            key_router: None,
            shards: RwLock::new(Arc::new(shards)),
            timeout: Duration::from_secs(30),
            spawner: None,
            moving: Mutex::new(HashSet::new()),
            moves: AtomicUsize::new(0),
            unavailable: RwLock::new(BTreeMap::new()),
            unavailable_count: AtomicUsize::new(0),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
        })
    }

    /// Marks `shard` unavailable (its database could not be reached, for `reason`): its
    /// tenants get [`Error::ShardUnavailable`] at once instead of waiting on a connection,
    /// until [`mark_available`](Self::mark_available).
    pub fn mark_unavailable(&self, shard: &ShardId, reason: impl Into<String>) {
        let mut unavailable = self.unavailable.write().unwrap_or_else(|p| p.into_inner());
        unavailable.insert(shard.clone(), reason.into());
        self.unavailable_count
            .store(unavailable.len(), AtomicOrdering::SeqCst);
    }

    /// Puts `shard` back in service after [`mark_unavailable`](Self::mark_unavailable).
    pub fn mark_available(&self, shard: &ShardId) {
        let mut unavailable = self.unavailable.write().unwrap_or_else(|p| p.into_inner());
        unavailable.remove(shard);
        self.unavailable_count
            .store(unavailable.len(), AtomicOrdering::SeqCst);
    }

    /// The shards marked unavailable, with why.
    pub fn unavailable_shards(&self) -> Vec<(ShardId, String)> {
        self.unavailable
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(shard, why)| (shard.clone(), why.clone()))
            .collect()
    }

    /// `Err(ShardUnavailable)` when `shard` is marked unavailable.
    fn available(&self, shard: &ShardId) -> Result<()> {
        if self.unavailable_count.load(AtomicOrdering::SeqCst) == 0 {
            return Ok(());
        }
        match self
            .unavailable
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(shard)
        {
            Some(reason) => Err(Error::ShardUnavailable {
                shard: shard.to_string(),
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }

    /// How long connecting to a shard may take before it counts as unavailable
    /// ([`DEFAULT_CONNECT_TIMEOUT`], 5 s, by default).
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    pub(crate) fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// Fences `tenant` for a move: until the guard drops, [`shard_of`](Self::shard_of)
    /// refuses it with [`Error::TenantMoving`]. A tenant fenced already is that error.
    pub(crate) fn fence<K: TenantKey>(&self, tenant: &K) -> Result<MoveFence<'_>> {
        let bytes = tenant.canonical_bytes();
        let mut moving = self.moving.lock().unwrap_or_else(|p| p.into_inner());
        if !moving.insert(bytes.clone()) {
            return Err(Error::TenantMoving {
                tenant: tenant.to_string(),
            });
        }
        self.moves.fetch_add(1, AtomicOrdering::SeqCst);
        Ok(MoveFence {
            topology: self,
            bytes,
        })
    }

    /// Lets scatter-gather run each shard's query as a task of the application's runtime
    /// (the library spawns nothing by itself): with it, the shards' client-side work
    /// (encoding, decoding rows) runs on several cores instead of the caller's one task.
    ///
    /// ```
    /// # use tenancy_sea::{HashRouter, ShardId, Topology};
    /// # fn demo(conn: sea_orm::DatabaseConnection) -> tenancy_sea::Result<()> {
    /// let topology = Topology::new(HashRouter::new(["s0"]), [(ShardId::new("s0"), conn)])?
    ///     .with_spawner(|future| {
    ///         tokio::spawn(future);
    ///     });
    /// # Ok(()) }
    /// ```
    pub fn with_spawner(
        mut self,
        spawn: impl Fn(Pin<Box<dyn Future<Output = ()> + Send>>) + Send + Sync + 'static,
    ) -> Self {
        self.spawner = Some(Arc::new(spawn));
        self
    }

    /// How long a scatter-gather waits for each shard before it is
    /// [`Error::ShardTimeout`] (default 30 s; a query can set its own with
    /// [`ShardedSelect::timeout`]).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The shard of tenant `key` and its connection; a tenant being moved is
    /// [`Error::TenantMoving`].
    pub(crate) fn shard_of<K: TenantKey>(&self, key: &K) -> Result<(ShardId, DatabaseConnection)> {
        let mut bytes = Vec::with_capacity(16);
        key.write_canonical_bytes(&mut bytes);
        if self.moves.load(AtomicOrdering::SeqCst) > 0
            && self
                .moving
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains(&bytes)
        {
            return Err(Error::TenantMoving {
                tenant: key.to_string(),
            });
        }
        self.shard_of_bytes(&bytes)
    }

    /// The shard of the tenant whose canonical bytes are `key`, and its connection. Unlike
    /// [`shard_of`](Self::shard_of), it does not refuse a tenant being moved.
    pub(crate) fn shard_of_bytes(&self, key: &[u8]) -> Result<(ShardId, DatabaseConnection)> {
        let shard = self.router.route_bytes(key)?;
        self.available(&shard)?;
        let conn = self.unscoped_connection(&shard)?;
        Ok((shard.into_owned(), conn))
    }

    /// The shard the router places tenant (or key) `key` on now. A key of a type the
    /// router does not place is [`RoutingError::WrongKeyType`](crate::RoutingError::WrongKeyType).
    pub fn shard_id_of<K: TenantKey>(&self, key: &K) -> Result<ShardId> {
        Ok(self.router.route(key)?)
    }

    /// Routes the values of `#[shard_key]` columns with a router of their own, instead of
    /// the tenants' router. Needed when the tenants' router is a directory: its entries
    /// name tenants, and tenant 42 must not send device 42 along when it moves. Every
    /// shard the key router can return must be in the topology.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use tenancy_sea::{DirectoryRouter, HashRouter, ShardId, Topology};
    /// # fn demo(s0: sea_orm::DatabaseConnection, s1: sea_orm::DatabaseConnection) -> tenancy_sea::Result<()> {
    /// let tenants = Arc::new(DirectoryRouter::<i64>::new(["s0", "s1"]));
    /// let topology = Topology::new(tenants, [(ShardId::new("s0"), s0), (ShardId::new("s1"), s1)])?
    ///     .with_key_router(HashRouter::new(["s0", "s1"]))?;
    /// # Ok(()) }
    /// ```
    pub fn with_key_router(mut self, router: impl ShardRouter + 'static) -> Result<Self> {
        let known = self.shard_ids();
        for routed in router.shards() {
            if !known.contains(&routed) {
                return Err(Error::Config(format!(
                    "the key router places keys on shard {routed}, which the topology lacks"
                )));
            }
        }
        self.key_router = Some(Arc::new(router));
        Ok(self)
    }

    /// The shard of the `#[shard_key]` value of type `key_type` whose canonical bytes are
    /// `key`, and its connection: by the key router, or by the tenants' router when that
    /// places keys by their bytes alone (hash, range). A directory of tenants does not
    /// place keys: without a key router that is a configuration error, not a guess. A key
    /// of a type the router does not place is
    /// [`RoutingError::WrongKeyType`](crate::RoutingError::WrongKeyType).
    pub(crate) fn shard_of_key_bytes(
        &self,
        key: &[u8],
        key_type: &KeyType,
    ) -> Result<(ShardId, DatabaseConnection)> {
        let router = match &self.key_router {
            Some(router) => router,
            None if self.router.accepts_new_shards() => {
                return Err(Error::Config(
                    "the tenants' router is a directory, whose entries name tenants: route \
                     `#[shard_key]` values with a router of their own \
                     (`Topology::with_key_router`)"
                        .to_owned(),
                ));
            }
            None => &self.router,
        };
        if !router.places(key_type) {
            return Err(tenancy_core::RoutingError::WrongKeyType {
                expected: router.key_type_name(),
                found: key_type.name(),
            }
            .into());
        }
        let shard = router.route_bytes(key)?;
        let conn = self.unscoped_connection(&shard)?;
        Ok((shard.into_owned(), conn))
    }

    /// Makes `shard` available to the tenants' router and to a key router that can gain
    /// shards; on failure neither has it.
    pub(crate) fn add_to_routers(&self, shard: &ShardId) -> Result<()> {
        self.router.add_shard(shard)?;
        if let Some(keys) = &self.key_router
            && keys.accepts_new_shards()
            && let Err(error) = keys.add_shard(shard)
        {
            let _ = self.router.remove_shard(shard);
            return Err(error.into());
        }
        Ok(())
    }

    /// Withdraws `shard` from the tenants' router and from a key router that lists it;
    /// refused (and neither changed) while either places a key on it.
    pub(crate) fn remove_from_routers(
        &self,
        shard: &ShardId,
    ) -> std::result::Result<(), tenancy_core::RoutingError> {
        self.router.remove_shard(shard)?;
        if let Some(keys) = &self.key_router
            && keys.shards().contains(shard)
            && let Err(error) = keys.remove_shard(shard)
        {
            let _ = self.router.add_shard(shard);
            return Err(error);
        }
        Ok(())
    }

    /// The router placing `#[shard_key]` values, when it is not the tenants' router.
    pub fn key_router(&self) -> Option<&dyn ShardRouter> {
        self.key_router.as_deref()
    }

    /// The connection of `shard`, with no tenant scoping at all: an escape hatch for admin
    /// work, like [`Tenancy::unscoped`](crate::Tenancy::unscoped).
    pub fn unscoped_connection(&self, shard: &ShardId) -> Result<DatabaseConnection> {
        tracing::debug!(target: "tenancy::unscoped", %shard, "unscoped shard connection handed out");
        self.connection(shard)
    }

    /// The connection of `shard`, for the crate's own scoped paths.
    pub(crate) fn connection(&self, shard: &ShardId) -> Result<DatabaseConnection> {
        // Looked up under the read lock: no snapshot is taken on this per-request path.
        self.shards
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .find(|(id, _)| id == shard)
            .map(|(_, conn)| conn.clone())
            .ok_or_else(|| Error::Config(format!("no connection for shard {shard}")))
    }

    /// Every shard and its connection, in order, as the set is now: unscoped connections,
    /// an escape hatch for admin work like [`Tenancy::unscoped`](crate::Tenancy::unscoped).
    pub fn unscoped_shards(&self) -> Vec<(ShardId, DatabaseConnection)> {
        tracing::debug!(target: "tenancy::unscoped", "unscoped shard connections handed out");
        self.shards()
    }

    /// Every shard and its connection, for the crate's own paths.
    pub(crate) fn shards(&self) -> Vec<(ShardId, DatabaseConnection)> {
        self.snapshot().as_ref().clone()
    }

    /// The backend of each shard, in order.
    pub(crate) fn backends(&self) -> Vec<sea_orm::DbBackend> {
        self.snapshot()
            .iter()
            .map(|(_, conn)| conn.get_database_backend())
            .collect()
    }

    /// The names of the shards, in order.
    pub fn shard_ids(&self) -> Vec<ShardId> {
        self.snapshot().iter().map(|(id, _)| id.clone()).collect()
    }

    /// The router placing keys.
    pub fn router(&self) -> &dyn ShardRouter {
        self.router.as_ref()
    }

    /// Adds a shard (replacing the connection of a shard of the same name). The router
    /// decides whether keys land on it: a [`DirectoryRouter`](crate::DirectoryRouter)
    /// must be told with `add_shard` too.
    pub fn add_shard(&self, shard: impl Into<ShardId>, conn: DatabaseConnection) {
        let shard = shard.into();
        let mut guard = self.shards.write().unwrap_or_else(|p| p.into_inner());
        let mut shards = guard.as_ref().clone();
        match shards.iter_mut().find(|(id, _)| *id == shard) {
            Some(entry) => entry.1 = conn,
            None => shards.push((shard, conn)),
        }
        *guard = Arc::new(shards);
    }

    /// Removes a shard the routers no longer place keys on; returns whether it was in the
    /// topology. Its pool closes when the last handle on it is dropped.
    pub fn remove_shard(&self, shard: &ShardId) -> Result<bool> {
        Ok(self.take_shard(shard)?.is_some())
    }

    /// Removes a shard the routers no longer place keys on; returns its connection, to
    /// close.
    pub(crate) fn take_shard(&self, shard: &ShardId) -> Result<Option<DatabaseConnection>> {
        let key_router_uses = self
            .key_router
            .as_ref()
            .is_some_and(|router| router.shards().contains(shard));
        if self.router.shards().contains(shard) || key_router_uses {
            return Err(Error::ShardNotEmpty {
                shard: shard.to_string(),
                reason: "the router still places keys on it".to_owned(),
            });
        }
        let mut guard = self.shards.write().unwrap_or_else(|p| p.into_inner());
        let mut shards = guard.as_ref().clone();
        let removed = shards
            .iter()
            .position(|(id, _)| id == shard)
            .map(|i| shards.remove(i).1);
        *guard = Arc::new(shards);
        Ok(removed)
    }

    fn snapshot(&self) -> Shards {
        self.shards
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// One target per shard, with an optional condition for all of them.
    pub(crate) fn targets(&self, condition: Option<Condition>) -> Vec<Target> {
        self.snapshot()
            .iter()
            .map(|(shard, conn)| Target {
                shard: shard.clone(),
                conn: conn.clone(),
                session: None,
                condition: condition.clone(),
                tenant: None,
            })
            .collect()
    }

    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    pub(crate) fn spawner(&self) -> Option<Spawned> {
        self.spawner.clone().map(Spawned)
    }
}

/// One shard of a fan-out: its connection, the set-up its unit of work runs first (when
/// the strategy needs one), and the condition only this shard's query carries.
#[derive(Clone, Debug)]
pub(crate) struct Target {
    pub(crate) shard: ShardId,
    pub(crate) conn: DatabaseConnection,
    pub(crate) session: Option<Arc<Session>>,
    pub(crate) condition: Option<Condition>,
    /// The tenant whose rows this target reads (for the span); `None` when unscoped.
    pub(crate) tenant: Option<String>,
}

impl Target {
    fn backend(&self) -> DbBackend {
        self.conn.get_database_backend()
    }

    /// The span a target's statement runs in: the shard, and the tenant when scoped.
    fn span(&self, op: &'static str, table: &'static str) -> tracing::Span {
        match &self.tenant {
            Some(tenant) => {
                tracing::info_span!("tenancy", tenant = %tenant, table, op, shard = %self.shard)
            }
            None => tracing::info_span!("tenancy", table, op, shard = %self.shard),
        }
    }
}

/// Reads across every shard, with no tenant filter: the sharded form of
/// [`Tenancy::unscoped`](crate::Tenancy::unscoped), made by
/// [`Tenancy::unscoped_across_shards`](crate::Tenancy::unscoped_across_shards). A
/// different type from a tenant handle, so a fan-out never happens by accident.
#[derive(Debug)]
pub struct AcrossShards {
    targets: Vec<Target>,
    timeout: Duration,
    spawner: Option<Spawned>,
}

impl AcrossShards {
    pub(crate) fn new(topology: &Topology) -> Self {
        AcrossShards::over(topology.targets(None), topology)
    }

    pub(crate) fn over(targets: Vec<Target>, topology: &Topology) -> Self {
        AcrossShards {
            targets,
            timeout: topology.timeout(),
            spawner: topology.spawner(),
        }
    }

    pub(crate) fn single(target: Target) -> Self {
        AcrossShards {
            targets: vec![target],
            timeout: Duration::from_secs(30),
            spawner: None,
        }
    }

    /// Selects rows of `E` on every shard.
    pub fn find<E: EntityTrait>(&self) -> ShardedSelect<E> {
        ShardedSelect::new(
            self.targets.clone(),
            E::find(),
            self.timeout,
            self.spawner.clone(),
        )
    }

    pub(crate) fn select<E: EntityTrait>(self, select: Select<E>) -> ShardedSelect<E> {
        ShardedSelect::new(self.targets, select, self.timeout, self.spawner)
    }
}

impl std::fmt::Debug for Spawned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Spawner")
    }
}

/// A spawner that prints as `Spawner` in `Debug` output.
#[derive(Clone)]
pub(crate) struct Spawned(Spawner);

/// A select run on several shards and merged: ORDER BY is a merge of the shards' sorted
/// rows, LIMIT/OFFSET apply to the merged result (each shard is asked for offset + limit
/// rows), COUNT is the sum. The result equals the same query on one database holding all
/// rows, as long as the order is total (end it with a unique column) and its columns are
/// not NULL. The aggregates (`count`, `sum`, `avg`, `min`, `max`) cover every row the
/// filters match: order, limit and offset shape the rows of `all` only. `sum` and `avg`
/// take integer columns; another type is [`Error::Config`].
#[must_use = "a select does nothing until `.all()` or `.count()`"]
pub struct ShardedSelect<E: EntityTrait> {
    targets: Vec<Target>,
    select: Select<E>,
    /// Whether this is a tenant's select (its fragments are audited), not an unscoped one.
    scoped: bool,
    /// The first fragment refused, reported when the select runs.
    error: Option<crate::scope::audit::Refused>,
    /// A select the handle could not make (its message), reported when it runs.
    unmade: Option<String>,
    order: Vec<(E::Column, Order)>,
    limit: Option<u64>,
    offset: u64,
    timeout: Duration,
    spawner: Option<Spawned>,
}

/// What [`ShardedSelect::all_or_partial`] returns: the merged rows of the shards that
/// answered, and the shards that did not, each with its error.
#[derive(Debug)]
pub struct Partial<M> {
    /// The merged rows of the shards that answered (ordered, offset and limit applied).
    pub rows: Vec<M>,
    /// The shards that failed or timed out.
    pub missing: Vec<(ShardId, Error)>,
}

impl<M> Partial<M> {
    /// Whether every shard answered.
    pub fn is_complete(&self) -> bool {
        self.missing.is_empty()
    }
}

impl<E: EntityTrait> ShardedSelect<E> {
    pub(crate) fn new(
        targets: Vec<Target>,
        select: Select<E>,
        timeout: Duration,
        spawner: Option<Spawned>,
    ) -> Self {
        ShardedSelect {
            targets,
            select,
            scoped: false,
            error: None,
            unmade: None,
            order: Vec::new(),
            limit: None,
            offset: 0,
            timeout,
            spawner,
        }
    }
}

impl<E: EntityTrait> ShardedSelect<E> {
    /// Marks this select as a tenant's: its fragments are audited like a handle's.
    pub(crate) fn scoped(mut self) -> Self {
        self.scoped = true;
        self
    }

    /// A select that fails with `error` (a configuration error) when it runs.
    pub(crate) fn unmade(error: Error) -> Self {
        let mut select = ShardedSelect::new(Vec::new(), E::find(), Duration::ZERO, None);
        select.unmade = Some(match error {
            Error::Config(message) => message,
            other => other.to_string(),
        });
        select
    }

    /// Whether the select can run: it was made, and no fragment of it was refused.
    fn ready(&self) -> Result<()> {
        if let Some(message) = &self.unmade {
            return Err(Error::Config(message.clone()));
        }
        crate::scope::audit::ready(&self.error)
    }
}

impl<E: EntityTrait> ShardedSelect<E>
where
    E::Model: Sync,
{
    /// The shards this select runs on.
    pub fn shards(&self) -> Vec<ShardId> {
        self.targets.iter().map(|t| t.shard.clone()).collect()
    }

    /// Adds a condition, run on every shard. On a tenant's select
    /// ([`TenantDb::across_shards`](crate::TenantDb::across_shards)) it is audited as a
    /// handle's filter: a raw SQL fragment or a plain subquery fails the select when it
    /// runs.
    pub fn filter(mut self, condition: impl IntoCondition) -> Self {
        let condition = condition.into_condition();
        if self.scoped
            && let Err(refused) = crate::scope::audit::check_condition(&condition)
        {
            crate::scope::audit::Keep::keep(&mut self.error, refused);
        }
        self.select = self.select.filter(condition);
        self
    }

    /// Orders by `col` ascending.
    pub fn order_by_asc(mut self, col: E::Column) -> Self {
        self.order.push((col, Order::Asc));
        self
    }

    /// Orders by `col` descending.
    pub fn order_by_desc(mut self, col: E::Column) -> Self {
        self.order.push((col, Order::Desc));
        self
    }

    /// Orders by `col` in the given direction. The merge compares the rows' own values
    /// of `col`, so a fan-out orders by columns of `E`, not by expressions (an expression's
    /// value is not in the rows the shards return); select the value as a column of a
    /// view or of the model to order by it.
    pub fn order_by(mut self, col: E::Column, order: Order) -> Self {
        self.order.push((col, order));
        self
    }

    /// At most `limit` rows, over all shards.
    pub fn limit(mut self, limit: u64) -> Self {
        self.limit = Some(limit);
        self
    }

    /// Skips the first `offset` rows, over all shards.
    pub fn offset(mut self, offset: u64) -> Self {
        self.offset = offset;
        self
    }

    /// How long to wait for each shard (instead of the topology's timeout).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Every matching row of every shard, merged. A shard that fails or does not answer
    /// within the timeout is an error naming it: never a hang, never silently fewer rows.
    pub async fn all(self) -> Result<Vec<E::Model>> {
        let partial = self.gather().await?;
        match partial.missing.into_iter().next() {
            Some((_, error)) => Err(error),
            None => Ok(partial.rows),
        }
    }

    /// Like [`all`](Self::all), but the opt-in for partial results: the rows of the shards
    /// that answered, and the list of those that did not.
    pub async fn all_or_partial(self) -> Result<Partial<E::Model>> {
        self.gather().await
    }

    async fn gather(self) -> Result<Partial<E::Model>> {
        self.ready()?;
        for (col, _) in &self.order {
            mergeable(*col)?;
        }
        let mut per_shard = self.select.clone();
        if let Some(limit) = self.limit {
            per_shard = per_shard.limit(self.offset.saturating_add(limit));
        }
        let order = self.order.clone();
        let for_target = move |select: &Select<E>, target: &Target| {
            ordered(for_target(select, target), &order, target.backend())
        };
        let timeout = self.timeout;
        let table = E::default().table_name();
        let targets = &self.targets;
        let tag = crate::scope::Tag::text_of(fan_out_tag(timeout));
        let results: Vec<Result<Vec<E::Model>>> = match &self.spawner {
            None => {
                let fan_out = targets.iter().enumerate().map(|(index, target)| {
                    let tag = &tag;
                    let select = for_target(&per_shard, target);
                    async move {
                        let rows =
                            async { Ok(on_target!(target, tag, |conn| select.all(conn).await?)) };
                        (index, rows.await)
                    }
                    .instrument(target.span("scatter", table))
                });
                under_deadline(targets, &tag, timeout, fan_out).await
            }
            Some(Spawned(spawn)) => {
                let handles = targets.iter().enumerate().map(|(index, target)| {
                    let tag = &tag;
                    let (select, target) = (for_target(&per_shard, target), target.clone());
                    let tag = tag.clone();
                    let span = target.span("scatter", table);
                    let (sender, receiver) = futures_channel::oneshot::channel();
                    let task = async move {
                        let rows =
                            async { Ok(on_target!(&target, &tag, |conn| select.all(conn).await?)) };
                        // The receiver is gone when the fan-out has given up on this shard.
                        let _ = sender.send(rows.await);
                    }
                    .instrument(span);
                    spawn(Box::pin(task));
                    // A task the runtime drops unfinished (shutting down, say) is this
                    // shard's error, not a panic.
                    receiver.map(move |outcome| {
                        (
                            index,
                            outcome.unwrap_or_else(|_| {
                                Err(DbErr::Custom(
                                    "the runtime dropped this shard's task".to_owned(),
                                ))
                            }),
                        )
                    })
                });
                under_deadline(targets, &tag, timeout, handles).await
            }
        };
        let mut rows = Vec::new();
        let mut missing = Vec::new();
        for (target, result) in self.targets.iter().zip(results) {
            match result {
                Ok(shard_rows) => rows.extend(shard_rows),
                Err(error) => {
                    let shard = target.shard.clone();
                    tracing::warn!(%shard, %error, "shard missing from a scatter-gather");
                    missing.push((shard, error));
                }
            }
        }
        // Every value must compare, with itself too (a NaN does not): sorting by an order
        // that is not total could panic, and the shards' order could not be reproduced.
        for (col, _) in &self.order {
            if rows.iter().any(|row| {
                let value = row.get(*col);
                compare(&value, &value).is_none()
            }) {
                return Err(Error::Unmergeable {
                    column: format!("{col:?}"),
                    reason: "a value of it does not compare (a float NaN, or a date, time or \
                             decimal type without tenancy-sea's feature of the same name as \
                             SeaORM's: `with-chrono`, `with-time`, `with-rust_decimal`, \
                             `with-bigdecimal`)",
                });
            }
        }
        rows.sort_by(|a, b| {
            for (col, order) in &self.order {
                // Every value compares (checked above), so `Equal` is never a stand-in.
                let ordering = compare(&a.get(*col), &b.get(*col)).unwrap_or(Ordering::Equal);
                let ordering = if matches!(order, Order::Desc) {
                    ordering.reverse()
                } else {
                    ordering
                };
                if ordering != Ordering::Equal {
                    return ordering;
                }
            }
            Ordering::Equal
        });
        let skip = usize::try_from(self.offset).unwrap_or(usize::MAX);
        let take = self
            .limit
            .map_or(usize::MAX, |l| usize::try_from(l).unwrap_or(usize::MAX));
        Ok(Partial {
            rows: rows.into_iter().skip(skip).take(take).collect(),
            missing,
        })
    }

    /// How many rows [`all`](Self::all) would return: the rows that match over all
    /// shards, after `offset` and at most `limit`, as SeaORM's `count` and a tenant's
    /// `db.find::<E>().limit(..).count()` mean it (`SELECT COUNT(*)` of the limited
    /// select). Each shard counts its matching rows; the offset and limit apply to the
    /// total.
    pub async fn count(self) -> Result<u64> {
        self.ready()?;
        let timeout = self.timeout;
        let table = E::default().table_name();
        let tag = crate::scope::Tag::text_of(fan_out_tag(timeout));
        let fan_out = self.targets.iter().enumerate().map(|(index, target)| {
            let tag = &tag;
            let select = for_target(&self.select, target);
            async move {
                let count = async {
                    Ok(on_target!(target, tag, |conn| PaginatorTrait::count(
                        select, conn
                    )
                    .await?))
                };
                (index, count.await)
            }
            .instrument(target.span("scatter_count", table))
        });
        let mut total: u64 = 0;
        for result in under_deadline(&self.targets, &tag, timeout, fan_out).await {
            total = total.saturating_add(result?);
        }
        let after_offset = total.saturating_sub(self.offset);
        Ok(self
            .limit
            .map_or(after_offset, |limit| Ord::min(after_offset, limit)))
    }

    /// Groups the rows by `col` for aggregates per group over every shard (`GROUP BY`
    /// across shards): each shard aggregates its own rows by group, and the groups are
    /// merged by key.
    ///
    /// ```
    /// # use tenancy_sea::{AcrossShards, Result};
    /// # mod order {
    /// #     use sea_orm::entity::prelude::*;
    /// #     #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    /// #     #[sea_orm(table_name = "orders")]
    /// #     pub struct Model {
    /// #         #[sea_orm(primary_key)]
    /// #         pub id: i64,
    /// #         pub tenant_id: i64,
    /// #         pub total_cents: i64,
    /// #     }
    /// #     #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    /// #     pub enum Relation {}
    /// #     impl ActiveModelBehavior for ActiveModel {}
    /// # }
    /// # async fn demo(across: AcrossShards) -> Result<()> {
    /// // Orders and revenue per tenant, over every shard, by tenant id.
    /// let per_tenant: Vec<(i64, i64)> = across
    ///     .find::<order::Entity>()
    ///     .group_by(order::Column::TenantId)
    ///     .sum(order::Column::TotalCents)
    ///     .await?;
    /// let tenants: Vec<i64> = across
    ///     .find::<order::Entity>()
    ///     .group_by(order::Column::TenantId)
    ///     .keys()
    ///     .await?; // DISTINCT tenant_id
    /// # let _ = (per_tenant, tenants);
    /// # Ok(()) }
    /// ```
    pub fn group_by(self, col: E::Column) -> GroupedSelect<E> {
        GroupedSelect {
            select: self,
            group: col,
        }
    }

    /// Every shard's rows of the aggregates `exprs(backend)`, selected alone and in
    /// order, as the tuple `R`: one row per shard, or with a `group` column, one row per
    /// group of the shard, the group's value first.
    async fn per_shard<R>(
        &self,
        group: Option<E::Column>,
        exprs: impl Fn(DbBackend) -> Vec<SimpleExpr>,
    ) -> Result<Vec<Vec<R>>>
    where
        R: TryGetableMany + Send + Sync + 'static,
    {
        self.ready()?;
        let timeout = self.timeout;
        let table = E::default().table_name();
        let tag = crate::scope::Tag::text_of(fan_out_tag(timeout));
        let fan_out = self.targets.iter().enumerate().map(|(index, target)| {
            let tag = &tag;
            let mut select = for_target(&self.select, target).select_only();
            if let Some(group) = group {
                select = select
                    .column_as(Expr::col(group), "group_key")
                    .group_by(group);
            }
            for (n, expr) in exprs(target.conn.get_database_backend())
                .into_iter()
                .enumerate()
            {
                select = select.column_as(expr, format!("value_{n}"));
            }
            let select = select.into_tuple::<R>();
            async move {
                let rows = async { Ok(on_target!(target, tag, |conn| select.all(conn).await?)) };
                (index, rows.await)
            }
            .instrument(target.span("scatter_aggregate", table))
        });
        under_deadline(&self.targets, &tag, timeout, fan_out)
            .await
            .into_iter()
            .collect()
    }

    /// The largest value of `col` over all shards (`None` when no row matches).
    pub async fn max<V>(self, col: E::Column) -> Result<Option<V>>
    where
        V: TryGetable + Ord + Send + Sync + 'static,
    {
        let values = self
            .per_shard::<Option<V>>(None, |_| vec![Expr::col(col).max()])
            .await?;
        Ok(values.into_iter().flatten().flatten().max())
    }

    /// The smallest value of `col` over all shards (`None` when no row matches).
    pub async fn min<V>(self, col: E::Column) -> Result<Option<V>>
    where
        V: TryGetable + Ord + Send + Sync + 'static,
    {
        let values = self
            .per_shard::<Option<V>>(None, |_| vec![Expr::col(col).min()])
            .await?;
        Ok(values.into_iter().flatten().flatten().min())
    }

    /// The sum of the integer column `col` over all shards (0 when no row matches). Each
    /// shard sends its sum as text, whatever width its backend sums in (PostgreSQL and
    /// MySQL widen integer sums to decimals), and the total is added up in 128 bits: a
    /// sum beyond `i64` is an error, never a wrap or a cap.
    pub async fn sum(self, col: E::Column) -> Result<i64> {
        integer_column(col, "sum")?;
        let values = self
            .per_shard::<Option<String>>(None, |backend| vec![sum_as_text(backend, col)])
            .await?;
        let mut total = 0;
        for value in values.into_iter().flatten() {
            total += parse_sum(value)?;
        }
        fits_i64(total)
    }

    /// The mean of the integer column `col` over all shards, as SQL's `AVG` computes it on
    /// one database: the rows where `col` is NULL are left out, and no such row at all is
    /// `None`. Each shard returns its sum and count in one statement, and the mean is
    /// taken from their totals, so it weighs every row once (averaging the shards'
    /// averages would not).
    pub async fn avg(self, col: E::Column) -> Result<Option<f64>> {
        integer_column(col, "avg")?;
        let values = self
            .per_shard::<(Option<String>, i64)>(None, |backend| {
                vec![sum_as_text(backend, col), Expr::col(col).count()]
            })
            .await?;
        let (mut total, mut rows) = (0i128, 0i64);
        for (sum, count) in values.into_iter().flatten() {
            total += parse_sum(sum)?;
            rows += count;
        }
        // An f64 holds every sum and count this can meet to within its precision; the
        // division is the one rounding step.
        #[allow(clippy::cast_precision_loss)]
        Ok((rows > 0).then(|| total as f64 / rows as f64))
    }
}

/// A [`ShardedSelect`] grouped by one column ([`ShardedSelect::group_by`]): aggregates
/// per group over every shard, merged by the group's value and returned in ascending order
/// of it. Each shard groups its own rows; a group found on several shards is combined as
/// the scalar aggregates are (counts and sums added, the least and greatest kept, a mean
/// from the total sum and count), so the result equals `GROUP BY` on one database holding
/// every row. The filters of the select apply; its order, limit and offset do not. For a
/// nullable group column, ask for `Option<K>` keys: the NULL group comes first.
#[must_use = "a grouped select does nothing until an aggregate is awaited"]
pub struct GroupedSelect<E: EntityTrait> {
    select: ShardedSelect<E>,
    group: E::Column,
}

impl<E: EntityTrait> std::fmt::Debug for GroupedSelect<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupedSelect")
            .field("table", &E::default().table_name())
            .field("group", &sea_orm::IdenStatic::as_str(&self.group))
            .finish_non_exhaustive()
    }
}

impl<E: EntityTrait> GroupedSelect<E>
where
    E::Model: Sync,
{
    /// The distinct values of the group column over every shard (`SELECT DISTINCT`),
    /// ascending.
    pub async fn keys<K>(self) -> Result<Vec<K>>
    where
        K: TryGetable + Ord + Send + Sync + 'static,
    {
        let shards = self
            .select
            .per_shard::<K>(Some(self.group), |_| Vec::new())
            .await?;
        let keys: std::collections::BTreeSet<K> = shards.into_iter().flatten().collect();
        Ok(keys.into_iter().collect())
    }

    /// The number of rows of each group.
    pub async fn count<K>(self) -> Result<Vec<(K, u64)>>
    where
        K: TryGetable + Ord + Send + Sync + 'static,
    {
        let shards = self
            .select
            .per_shard::<(K, i64)>(Some(self.group), |_| {
                vec![Expr::col(sea_orm::sea_query::Asterisk).count()]
            })
            .await?;
        let mut groups = BTreeMap::new();
        for (key, count) in shards.into_iter().flatten() {
            *groups.entry(key).or_insert(0) += u64::try_from(count).unwrap_or(0);
        }
        Ok(groups.into_iter().collect())
    }

    /// The sum of the integer column `col` in each group (a group whose values are all
    /// NULL sums to 0); a sum beyond `i64` is an error, not a wrap.
    pub async fn sum<K>(self, col: E::Column) -> Result<Vec<(K, i64)>>
    where
        K: TryGetable + Ord + Send + Sync + 'static,
    {
        integer_column(col, "sum")?;
        let shards = self
            .select
            .per_shard::<(K, Option<String>)>(Some(self.group), |backend| {
                vec![sum_as_text(backend, col)]
            })
            .await?;
        let mut groups: BTreeMap<K, i128> = BTreeMap::new();
        for (key, sum) in shards.into_iter().flatten() {
            *groups.entry(key).or_insert(0) += parse_sum(sum)?;
        }
        groups
            .into_iter()
            .map(|(key, total)| Ok((key, fits_i64(total)?)))
            .collect()
    }

    /// The mean of the integer column `col` in each group, as `AVG` gives it (`None` for a
    /// group whose values are all NULL), from the total sum and count of every shard.
    pub async fn avg<K>(self, col: E::Column) -> Result<Vec<(K, Option<f64>)>>
    where
        K: TryGetable + Ord + Send + Sync + 'static,
    {
        integer_column(col, "avg")?;
        let shards = self
            .select
            .per_shard::<(K, Option<String>, i64)>(Some(self.group), |backend| {
                vec![sum_as_text(backend, col), Expr::col(col).count()]
            })
            .await?;
        let mut groups: BTreeMap<K, (i128, i64)> = BTreeMap::new();
        for (key, sum, count) in shards.into_iter().flatten() {
            let (total, rows) = groups.entry(key).or_insert((0, 0));
            *total += parse_sum(sum)?;
            *rows += count;
        }
        // As in `ShardedSelect::avg`: the division is the one rounding step.
        #[allow(clippy::cast_precision_loss)]
        Ok(groups
            .into_iter()
            .map(|(key, (total, rows))| (key, (rows > 0).then(|| total as f64 / rows as f64)))
            .collect())
    }

    /// The smallest value of `col` in each group (`None` when all are NULL).
    pub async fn min<K, V>(self, col: E::Column) -> Result<Vec<(K, Option<V>)>>
    where
        K: TryGetable + Ord + Send + Sync + 'static,
        V: TryGetable + Ord + Send + Sync + 'static,
    {
        self.extreme(col, Ordering::Less).await
    }

    /// The largest value of `col` in each group (`None` when all are NULL).
    pub async fn max<K, V>(self, col: E::Column) -> Result<Vec<(K, Option<V>)>>
    where
        K: TryGetable + Ord + Send + Sync + 'static,
        V: TryGetable + Ord + Send + Sync + 'static,
    {
        self.extreme(col, Ordering::Greater).await
    }

    /// Each group's least (`keep` = `Less`) or greatest value of `col`.
    async fn extreme<K, V>(self, col: E::Column, keep: Ordering) -> Result<Vec<(K, Option<V>)>>
    where
        K: TryGetable + Ord + Send + Sync + 'static,
        V: TryGetable + Ord + Send + Sync + 'static,
    {
        let shards = self
            .select
            .per_shard::<(K, Option<V>)>(Some(self.group), |_| {
                vec![if keep == Ordering::Less {
                    Expr::col(col).min()
                } else {
                    Expr::col(col).max()
                }]
            })
            .await?;
        let mut groups: BTreeMap<K, Option<V>> = BTreeMap::new();
        for (key, value) in shards.into_iter().flatten() {
            let best = groups.entry(key).or_insert(None);
            if let Some(value) = value {
                match best {
                    Some(current) if value.cmp(current) != keep => {}
                    _ => *best = Some(value),
                }
            }
        }
        Ok(groups.into_iter().collect())
    }
}

/// A tenant fenced for a move (see [`Topology::fence`]); dropping it lifts the fence, also
/// when the move fails or its future is dropped.
pub(crate) struct MoveFence<'t> {
    topology: &'t Topology,
    bytes: Vec<u8>,
}

impl Drop for MoveFence<'_> {
    fn drop(&mut self) {
        let mut moving = self
            .topology
            .moving
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if moving.remove(&self.bytes) {
            self.topology.moves.fetch_sub(1, AtomicOrdering::SeqCst);
        }
    }
}
