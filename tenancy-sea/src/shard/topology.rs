//! The shards and the router that places keys on them: [`Topology`], and the fence that
//! keeps a tenant being moved from getting a handle.

use super::availability::Availability;
use super::fanout::Target;
use super::pool_options::PoolOptions;
use crate::entity::SqlTenantId;
use crate::error::{Error, Result};
use crate::scope::Meter;
use sea_orm::DatabaseConnection;
use sea_orm::sea_query::Condition;
use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tenancy_core::{KeyType, ShardId, ShardRouter};

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
/// registry of `catalog::Shards`); each fan-out works on the set as it
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
    availability: Availability,
    /// How long a connection attempt to a shard may take before the shard counts as
    /// unavailable.
    connect_timeout: Duration,
    /// The options of the pools `Shards::topology` opened, which later shards' pools share.
    pool_options: Option<PoolOptions>,
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
            availability: Availability::default(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            pool_options: None,
        })
    }

    /// Marks `shard` unavailable (its database could not be reached, for `reason`): its
    /// tenants get [`Error::ShardUnavailable`] at once instead of waiting on a connection,
    /// until [`mark_available`](Self::mark_available).
    pub fn mark_unavailable(&self, shard: &ShardId, reason: impl Into<String>) {
        self.availability.mark_unavailable(shard, reason.into());
    }

    /// Puts `shard` back in service after [`mark_unavailable`](Self::mark_unavailable).
    pub fn mark_available(&self, shard: &ShardId) {
        self.availability.mark_available(shard);
    }

    /// The shards marked unavailable, with why.
    pub fn unavailable_shards(&self) -> Vec<(ShardId, String)> {
        self.availability.list()
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

    /// The options of the pools the library opens for shards added later
    /// ([`Tenancy::create_shard`](crate::Tenancy::create_shard),
    /// [`Tenancy::add_shard`](crate::Tenancy::add_shard), a catalog refresh). Set by
    /// `catalog::Shards::topology` to the options it opened
    /// the first shards with; for a topology of pools the application opened, the
    /// [`TenancyBuilder::tenant_pool_options`](crate::TenancyBuilder::tenant_pool_options)
    /// stand when this is not set.
    pub fn with_pool_options(mut self, options: impl Into<PoolOptions>) -> Self {
        self.pool_options = Some(options.into());
        self
    }

    /// The options of the pools of shards added later, when set
    /// ([`with_pool_options`](Self::with_pool_options)).
    pub fn pool_options(&self) -> Option<&PoolOptions> {
        self.pool_options.as_ref()
    }

    /// Fences `tenant` for a move: until the guard drops, [`shard_of`](Self::shard_of)
    /// refuses it with [`Error::TenantMoving`]. A tenant fenced already is that error.
    pub(crate) fn fence<K: SqlTenantId>(&self, tenant: &K) -> Result<MoveFence<'_>> {
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
    /// [`ShardedSelect::timeout`](crate::ShardedSelect::timeout)).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The shard of tenant `key` and its connection; a tenant being moved is
    /// [`Error::TenantMoving`].
    pub(crate) fn shard_of<K: SqlTenantId>(
        &self,
        key: &K,
    ) -> Result<(ShardId, DatabaseConnection)> {
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
        self.availability.check(&shard)?;
        let conn = self.unscoped_connection(&shard)?;
        Ok((shard.into_owned(), conn))
    }

    /// The shard the router places tenant (or key) `key` on now. A key of a type the
    /// router does not place is [`RoutingError::WrongKeyType`](crate::RoutingError::WrongKeyType).
    pub fn shard_id_of<K: SqlTenantId>(&self, key: &K) -> Result<ShardId> {
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

    /// One target per shard, with an optional condition for all of them, its statements
    /// counted under `meter`'s labels on its shard.
    pub(crate) fn targets(&self, condition: Option<Condition>, meter: &Meter) -> Vec<Target> {
        self.snapshot()
            .iter()
            .map(|(shard, conn)| Target {
                shard: shard.clone(),
                conn: conn.clone(),
                session: None,
                condition: condition.clone(),
                tenant: None,
                meter: meter.on_shard(shard),
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

impl std::fmt::Debug for Spawned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Spawner")
    }
}

/// A spawner that prints as `Spawner` in `Debug` output.
#[derive(Clone)]
pub(crate) struct Spawned(pub(super) Spawner);

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

/// Routes the rows of a tenant's `#[shard_key]` entities.
impl crate::scope::KeyPlacement for Topology {
    fn shard_of_key_bytes(
        &self,
        key: &[u8],
        key_type: &KeyType,
    ) -> Result<(ShardId, DatabaseConnection)> {
        Topology::shard_of_key_bytes(self, key, key_type)
    }
}
