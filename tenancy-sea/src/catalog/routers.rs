//! Routers that acknowledge: a process that keeps its directory in step with the catalog
//! ([`Directory::watch`], [`Tenancy::watch_catalog`](crate::Tenancy::watch_catalog))
//! records after each refresh which directory version its router has applied, under a
//! lease; its router stops routing when the lease runs out without a refresh. A move then
//! waits, before removing a tenant's old rows, until every live router has applied the
//! switch (or its lease has run out).

use super::claims::now_millis;
use super::directory::Directory;
use super::entities::router_entry;
use crate::entity::SqlTenantId;
use crate::error::{Error, Result};
use sea_orm::sea_query::OnConflict;
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, Set};
use std::time::{Duration, Instant};

/// How long a router routes after its last acknowledged refresh, by default.
pub const DEFAULT_ROUTER_LEASE: Duration = Duration::from_secs(30);

/// How far the processes' clocks may disagree: a router's lease is counted as ending this
/// much later than its row says.
const CLOCK_SKEW_MS: i64 = 250;

/// A row of a router that has not acknowledged for this long is removed.
const FORGET_AFTER_MS: i64 = 3_600_000;

impl<K: SqlTenantId> Directory<K> {
    /// How long this process's router routes after each refresh that
    /// [`watch`](Self::watch) (or [`Tenancy::watch_catalog`](crate::Tenancy::watch_catalog))
    /// acknowledges in the catalog ([`DEFAULT_ROUTER_LEASE`], 30 s, by default): a process
    /// that cannot reach the catalog for longer stops routing (the router's
    /// [`RoutingError::DirectoryStale`](crate::RoutingError::DirectoryStale)) instead of
    /// serving a tenant that may have moved. Moves wait up to this long for every router
    /// to apply their switch. Make it several times the watch interval.
    pub fn with_router_lease(mut self, lease: Duration) -> Self {
        self.router_lease = lease.max(Duration::from_millis(100));
        self
    }

    /// How long a move waits for the live routers to apply its switch: their lease, and
    /// the clocks' allowance on top.
    pub(crate) fn routers_bound(&self) -> Duration {
        self.router_lease + Duration::from_millis(2 * CLOCK_SKEW_MS.unsigned_abs())
    }

    fn router_lease_millis(&self) -> i64 {
        i64::try_from(self.router_lease.as_millis()).unwrap_or(i64::MAX)
    }

    /// Records in the catalog the directory version this process's router has applied,
    /// and leases the router for [`with_router_lease`](Self::with_router_lease): called
    /// after each successful refresh by the watch loops.
    pub async fn acknowledge(&self) -> Result<()> {
        // The router's own deadline is counted from before the row is written, so it never
        // outlives what the row tells the other processes.
        let start = Instant::now();
        let now = now_millis();
        let version = i64::try_from(self.router.version()).unwrap_or(i64::MAX);
        router_entry::Entity::insert(router_entry::ActiveModel {
            directory: Set(self.name.clone()),
            router: Set(self.router_id.to_string()),
            version: Set(version),
            expires_at: Set(now.saturating_add(self.router_lease_millis())),
        })
        .on_conflict(
            OnConflict::columns([
                router_entry::Column::Directory,
                router_entry::Column::Router,
            ])
            .update_columns([
                router_entry::Column::Version,
                router_entry::Column::ExpiresAt,
            ])
            .to_owned(),
        )
        .exec_without_returning(&self.conn)
        .await?;
        self.router.lease_until(start + self.router_lease);
        router_entry::Entity::delete_many()
            .filter(router_entry::Column::Directory.eq(self.name.clone()))
            .filter(router_entry::Column::ExpiresAt.lt(now.saturating_sub(FORGET_AFTER_MS)))
            .exec(&self.conn)
            .await?;
        Ok(())
    }

    /// Withdraws this process's router from the acknowledging ones (moves stop waiting
    /// for it) and lifts its lease: for a process that stops watching.
    pub async fn withdraw(&self) -> Result<()> {
        router_entry::Entity::delete_by_id((self.name.clone(), self.router_id.to_string()))
            .exec(&self.conn)
            .await?;
        self.router.unlease();
        Ok(())
    }

    /// Waits until every live router of the directory but this process's own has applied
    /// `version` or its lease has run out (then it routes nothing), polling the catalog.
    /// Gives up after `bound` with [`Error::RoutersBehind`].
    pub(crate) async fn await_routers(&self, version: u64) -> Result<()> {
        let bound = self.routers_bound();
        let version = i64::try_from(version).unwrap_or(i64::MAX);
        let started = Instant::now();
        loop {
            let behind = router_entry::Entity::find()
                .filter(router_entry::Column::Directory.eq(self.name.clone()))
                .filter(router_entry::Column::Router.ne(self.router_id.to_string()))
                .filter(router_entry::Column::Version.lt(version))
                .filter(router_entry::Column::ExpiresAt.gt(now_millis() - CLOCK_SKEW_MS))
                .count(&self.conn)
                .await?;
            if behind == 0 {
                return Ok(());
            }
            if started.elapsed() >= bound {
                return Err(Error::RoutersBehind {
                    directory: self.name.clone(),
                    routers: behind,
                    version: u64::try_from(version).unwrap_or(0),
                });
            }
            futures_timer::Delay::new(Duration::from_millis(20)).await;
        }
    }
}
