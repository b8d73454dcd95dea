//! The pools the framework opens (tenant databases, shards): their options, their opening
//! with passwords hidden in errors, and the bounded cache of tenants' open pools.

use crate::entity::TenantKey;
use crate::error::Result;
use sea_orm::{ConnectOptions, Database, DatabaseConnection, DbErr};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The options of every pool the framework opens (tenant databases, shards): at most
/// `max_connections`, none kept open when idle, and no test query before each checkout
/// (`test_before_acquire(false)`): SeaORM's default pings the server before every
/// statement, a round trip that costs a point read about 40%. A connection the server
/// closed fails the statement that uses it, with the driver's error, and leaves the pool.
pub(crate) fn pool_options(url: &str, max_connections: u32) -> ConnectOptions {
    let mut options = ConnectOptions::new(url.to_owned());
    options
        .max_connections(max_connections.max(1))
        .min_connections(0)
        .test_before_acquire(false);
    options
}

/// Opens a pool: SeaORM's `Database::connect`, with the URL's password hidden in the
/// error (the driver's message can carry the whole URL). Every connection the library
/// opens goes through here.
pub(crate) async fn connect(
    options: impl Into<ConnectOptions>,
) -> std::result::Result<DatabaseConnection, DbErr> {
    let options: ConnectOptions = options.into();
    let url = options.get_url().to_owned();
    Database::connect(options)
        .await
        .map_err(|error| crate::redact::connect_error(&url, error))
}

/// Open pools, one per tenant, at most `max_open`, least recently used evicted first, and
/// any unused for `idle_timeout` dropped.
///
/// An evicted pool is dropped, not closed: handles still holding it finish their work,
/// and its connections close when the last handle goes.
pub(crate) struct PoolCache<T> {
    max_open: usize,
    idle_timeout: Duration,
    connections_per_pool: u32,
    pools: Mutex<HashMap<T, (DatabaseConnection, Instant)>>,
}

impl<T: TenantKey> PoolCache<T> {
    pub(crate) fn new(max_open: usize, idle_timeout: Duration, connections_per_pool: u32) -> Self {
        PoolCache {
            max_open: Ord::max(max_open, 1),
            idle_timeout,
            connections_per_pool: Ord::max(connections_per_pool, 1),
            pools: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<T, (DatabaseConnection, Instant)>> {
        // A panic while holding the lock leaves a consistent map (every update is one
        // insert or remove), so a poisoned lock is still usable.
        self.pools
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The open pool of `tenant`, refreshed as most recently used.
    pub(crate) fn get(&self, tenant: &T) -> Option<DatabaseConnection> {
        let mut pools = self.lock();
        let entry = pools.get_mut(tenant)?;
        entry.1 = Instant::now();
        Some(entry.0.clone())
    }

    /// Opens a pool for `tenant` at `url` and caches it, evicting as needed.
    pub(crate) async fn open(&self, tenant: &T, url: &str) -> Result<DatabaseConnection> {
        let mut options = pool_options(url, self.connections_per_pool);
        options.idle_timeout(self.idle_timeout);
        let conn = connect(options).await?;
        let mut pools = self.lock();
        if let Some(existing) = pools.get_mut(tenant) {
            // Another task opened it meanwhile: use that one, drop ours.
            existing.1 = Instant::now();
            return Ok(existing.0.clone());
        }
        let now = Instant::now();
        pools.retain(|_, (_, used)| now.duration_since(*used) < self.idle_timeout);
        while pools.len() >= self.max_open {
            let Some(oldest) = pools
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(id, _)| id.clone())
            else {
                break;
            };
            pools.remove(&oldest);
        }
        pools.insert(tenant.clone(), (conn.clone(), now));
        Ok(conn)
    }

    /// Forgets `tenant`'s pool.
    pub(crate) fn evict(&self, tenant: &T) {
        self.lock().remove(tenant);
    }

    /// How many pools are open.
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }
}
