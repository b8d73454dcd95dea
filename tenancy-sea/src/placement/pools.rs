//! The pools the framework opens (tenant databases, shards): their options, their opening
//! with passwords hidden in errors, and the bounded cache of tenants' open pools.

use crate::entity::SqlTenantId;
use crate::error::Result;
use crate::shard::PoolOptions;
use sea_orm::{ConnectOptions, Database, DatabaseConnection, DbErr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

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

/// Open pools, one per tenant, at most `max_open`, least recently used evicted first (an
/// [`lru::LruCache`]), and any unused for `idle_timeout` dropped: the one asked for when
/// it is found idle, and the idle ones at the cold end of the cache whenever a pool opens.
///
/// An evicted pool is dropped, not closed: handles still holding it finish their work,
/// and its connections close when the last handle goes.
pub(crate) struct PoolCache<T> {
    idle_timeout: Duration,
    options: PoolOptions,
    pools: Mutex<lru::LruCache<T, (DatabaseConnection, Instant)>>,
}

impl<T: SqlTenantId> PoolCache<T> {
    pub(crate) fn new(max_open: usize, idle_timeout: Duration, options: PoolOptions) -> Self {
        let cap = std::num::NonZeroUsize::new(max_open).unwrap_or(std::num::NonZeroUsize::MIN);
        PoolCache {
            idle_timeout,
            options,
            pools: Mutex::new(lru::LruCache::new(cap)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, lru::LruCache<T, (DatabaseConnection, Instant)>> {
        // A panic while holding the lock leaves a consistent cache (every update is one
        // call of the cache), so a poisoned lock is still usable.
        self.pools
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The open pool of `tenant`, refreshed as most recently used; `None` when there is
    /// none, or it was idle too long (it is dropped then).
    pub(crate) fn get(&self, tenant: &T) -> Option<DatabaseConnection> {
        let mut pools = self.lock();
        let now = Instant::now();
        let (conn, used) = pools.get_mut(tenant)?;
        if now.duration_since(*used) < self.idle_timeout {
            *used = now;
            return Some(conn.clone());
        }
        pools.pop(tenant);
        None
    }

    /// Opens a pool for `tenant` at `url` and caches it, evicting as needed: the idle
    /// pools at the cold end of the cache, then the least recently used one when full.
    pub(crate) async fn open(&self, tenant: &T, url: &str) -> Result<DatabaseConnection> {
        let conn = connect(self.options.connect_options(url)).await?;
        let mut pools = self.lock();
        let now = Instant::now();
        if let Some((existing, used)) = pools.get_mut(tenant) {
            // Another task opened it meanwhile: use that one, drop ours.
            *used = now;
            return Ok(existing.clone());
        }
        while pools
            .peek_lru()
            .is_some_and(|(_, (_, used))| now.duration_since(*used) >= self.idle_timeout)
        {
            pools.pop_lru();
        }
        pools.push(tenant.clone(), (conn.clone(), now));
        Ok(conn)
    }

    /// Forgets `tenant`'s pool.
    pub(crate) fn evict(&self, tenant: &T) {
        self.lock().pop(tenant);
    }

    /// How many pools are open.
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_pool_cache_keeps_its_cap_and_drops_idle_pools() {
        let cache = PoolCache::<i64>::new(2, Duration::from_millis(200), 1.into());
        for tenant in [1, 2] {
            cache.open(&tenant, "sqlite::memory:").await.unwrap();
        }
        // 1 is used again, so 2 is the least recently used when 3 comes.
        assert!(cache.get(&1).is_some());
        cache.open(&3, "sqlite::memory:").await.unwrap();
        assert_eq!(cache.len(), 2);
        assert!(cache.get(&2).is_none());
        assert!(cache.get(&1).is_some() && cache.get(&3).is_some());
        // Idle past the timeout: gone when asked for, and from the cold end on an open.
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert!(cache.get(&1).is_none());
        cache.open(&4, "sqlite::memory:").await.unwrap();
        assert_eq!(cache.len(), 1);
        cache.evict(&4);
        assert_eq!(cache.len(), 0);
    }

    #[tokio::test]
    async fn tenant_pools_open_with_the_options_given() {
        let options = PoolOptions::new(3)
            .acquire_timeout(Duration::from_millis(1500))
            .test_before_acquire(true);
        let cache = PoolCache::<i64>::new(2, Duration::from_secs(60), options);
        let pool = cache.open(&1, "sqlite::memory:").await.unwrap();
        let opened = pool.get_sqlite_connection_pool().options();
        assert_eq!(opened.get_max_connections(), 3);
        assert_eq!(opened.get_acquire_timeout(), Duration::from_millis(1500));
        assert!(opened.get_test_before_acquire());
        assert_eq!(opened.get_idle_timeout(), None);
    }
}
