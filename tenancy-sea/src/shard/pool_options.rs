//! The options of the pools the library opens itself: shards' (from the catalog, by
//! `create_shard`, `add_shard` and catalog refreshes) and tenant databases'.

use sea_orm::ConnectOptions;
use std::sync::Arc;
use std::time::Duration;

/// A change to the driver's options the typed fields do not cover.
type Configure = Arc<dyn Fn(&mut ConnectOptions) + Send + Sync>;

/// How the library opens a pool of its own: a shard's
/// (`catalog::Shards::topology`, and every shard added later
/// through [`Tenancy::create_shard`](crate::Tenancy::create_shard),
/// [`Tenancy::add_shard`](crate::Tenancy::add_shard) or
/// [`Tenancy::refresh_catalog`](crate::Tenancy::refresh_catalog), which take the
/// topology's options), or a tenant database's
/// ([`TenancyBuilder::tenant_pool_options`](crate::TenancyBuilder::tenant_pool_options)).
///
/// The defaults are those measured fastest (see the benchmarks' "Shard pools"): at most
/// `max_connections`, none opened before it is needed, no test query before each
/// checkout (SeaORM's default pings the server before every statement, a round trip that
/// costs a point read about 40%), no idle timeout and no maximum lifetime (either starts
/// the driver's reaper task, which in sqlx 0.9.0 can spin without yielding: sqlx issue
/// 3645; the library drops whole pools instead), and the driver's statement log as SeaORM
/// sets it (measured free when no subscriber listens).
///
/// A plain number is a pool of that many connections with the other defaults:
///
/// ```
/// use std::time::Duration;
/// use tenancy_sea::PoolOptions;
///
/// let small: PoolOptions = 2.into();
/// assert_eq!(small.max_connections(), 2);
/// let tuned = PoolOptions::new(8)
///     .acquire_timeout(Duration::from_secs(2))
///     .statement_logging(false)
///     .configure(|options| {
///         options.connect_timeout(Duration::from_secs(3));
///     });
/// assert_eq!(tuned.max_connections(), 8);
/// ```
#[derive(Clone)]
pub struct PoolOptions {
    max_connections: u32,
    min_connections: u32,
    acquire_timeout: Option<Duration>,
    idle_timeout: Option<Duration>,
    max_lifetime: Option<Duration>,
    test_before_acquire: bool,
    statement_logging: Option<bool>,
    configure: Option<Configure>,
}

impl std::fmt::Debug for PoolOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolOptions")
            .field("max_connections", &self.max_connections)
            .field("min_connections", &self.min_connections)
            .field("acquire_timeout", &self.acquire_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("max_lifetime", &self.max_lifetime)
            .field("test_before_acquire", &self.test_before_acquire)
            .field("statement_logging", &self.statement_logging)
            .field("configure", &self.configure.is_some())
            .finish()
    }
}

impl Default for PoolOptions {
    /// Four connections, the other defaults.
    fn default() -> Self {
        PoolOptions::new(4)
    }
}

impl From<u32> for PoolOptions {
    fn from(max_connections: u32) -> Self {
        PoolOptions::new(max_connections)
    }
}

impl PoolOptions {
    /// Pools of at most `max_connections` (at least 1), with the defaults above.
    pub fn new(max_connections: u32) -> Self {
        PoolOptions {
            max_connections: max_connections.max(1),
            min_connections: 0,
            acquire_timeout: None,
            idle_timeout: None,
            max_lifetime: None,
            test_before_acquire: false,
            statement_logging: None,
            configure: None,
        }
    }

    /// The most connections of one pool.
    pub fn max_connections(&self) -> u32 {
        self.max_connections
    }

    /// The same options with at most `max` connections (at least 1).
    pub fn with_max_connections(mut self, max: u32) -> Self {
        self.max_connections = max.max(1);
        self
    }

    /// Connections each pool opens at once and keeps (default 0: opened when needed).
    /// More than `max_connections` is capped to it.
    pub fn min_connections(mut self, min: u32) -> Self {
        self.min_connections = min;
        self
    }

    /// How long a statement may wait for a free connection of the pool before it fails
    /// (the driver's default, 30 s, when unset).
    pub fn acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = Some(timeout);
        self
    }

    /// Closes connections idle this long. Off by default: it starts the driver's reaper
    /// task (see the type's documentation for why the library avoids it).
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = Some(timeout);
        self
    }

    /// Closes connections this old. Off by default, for the reason
    /// [`idle_timeout`](Self::idle_timeout) is.
    pub fn max_lifetime(mut self, lifetime: Duration) -> Self {
        self.max_lifetime = Some(lifetime);
        self
    }

    /// Whether each checkout first pings the server (default `false`: a connection the
    /// server closed fails the statement that uses it, with the driver's error, and leaves
    /// the pool).
    pub fn test_before_acquire(mut self, test: bool) -> Self {
        self.test_before_acquire = test;
        self
    }

    /// Whether the driver logs each statement (through `tracing`, target `sqlx::query`);
    /// SeaORM's default (on) when unset.
    pub fn statement_logging(mut self, on: bool) -> Self {
        self.statement_logging = Some(on);
        self
    }

    /// Any other change to SeaORM's [`ConnectOptions`], applied last, to every pool opened
    /// with these options (a connect timeout, the driver's own options through
    /// `map_sqlx_postgres_opts`, ...). A later call replaces an earlier one.
    pub fn configure(
        mut self,
        change: impl Fn(&mut ConnectOptions) + Send + Sync + 'static,
    ) -> Self {
        self.configure = Some(Arc::new(change));
        self
    }

    /// SeaORM's options for a pool of the database at `url`.
    pub(crate) fn connect_options(&self, url: &str) -> ConnectOptions {
        let mut options = ConnectOptions::new(url.to_owned());
        options
            .max_connections(self.max_connections)
            .min_connections(self.min_connections.min(self.max_connections))
            .idle_timeout(self.idle_timeout)
            .max_lifetime(self.max_lifetime)
            .test_before_acquire(self.test_before_acquire);
        if let Some(timeout) = self.acquire_timeout {
            options.acquire_timeout(timeout);
        }
        if let Some(on) = self.statement_logging {
            options.sqlx_logging(on);
        }
        if let Some(change) = &self.configure {
            change(&mut options);
        }
        options
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_options_reach_seaorms() {
        let options = PoolOptions::new(0)
            .min_connections(9)
            .acquire_timeout(Duration::from_millis(250))
            .test_before_acquire(true)
            .statement_logging(false)
            .configure(|options| {
                options.connect_timeout(Duration::from_millis(70));
            })
            .connect_options("sqlite::memory:");
        assert_eq!(options.get_max_connections(), Some(1));
        assert_eq!(options.get_min_connections(), Some(1));
        assert_eq!(
            options.get_acquire_timeout(),
            Some(Duration::from_millis(250))
        );
        assert_eq!(
            options.get_connect_timeout(),
            Some(Duration::from_millis(70))
        );
        assert!(!options.get_sqlx_logging());
        assert!(options.get_test_before_acquire());
        assert_eq!(options.get_idle_timeout(), Some(None));
        assert_eq!(options.get_max_lifetime(), Some(None));
        let plain = PoolOptions::from(3).connect_options("sqlite::memory:");
        assert_eq!(plain.get_max_connections(), Some(3));
        assert_eq!(plain.get_min_connections(), Some(0));
        assert!(!plain.get_test_before_acquire());
    }
}
