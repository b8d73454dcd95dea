//! [`UniqueIds`]: 64-bit ids unique across shards and processes, with no round trip per id.
//!
//! Each process holds a node number from the catalog under a lease and issues ids of a
//! time part, its node and a sequence ([`tenancy_core::IdClock`]). Before issuing ids of a
//! time, the holder records in the node's row a ceiling at or above it; a process that
//! takes the node over (after the lease ran out) starts above that ceiling. So two ids are
//! never equal, whatever the clocks of the machines say, and a process that lost its node
//! while paused issues nothing the new holder issues: each holder's ids lie in its own
//! span of time.

use super::claims::now_millis;
use super::entities::{create_table_if_missing, id_node_entry};
use crate::error::{Result, UniqueIdError};
use sea_orm::{
    ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set,
};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tenancy_core::{IdClock, IdError, MAX_NODES, id_millis};

/// How long a process holds its node without renewing, by default: it renews after half
/// of it, on the first id it issues then.
pub const DEFAULT_ID_LEASE: Duration = Duration::from_secs(60);

/// How many times a claim is tried when other processes claim the same node at once.
const CLAIM_ATTEMPTS: usize = 32;

/// A generator of 64-bit ids unique across shards and processes: a time part (milliseconds
/// since 2026), a node part (the process's node number, leased from the catalog) and a
/// sequence (4,096 per millisecond; a burst borrows the next milliseconds). Ids grow with
/// time, so they index well, and moving a tenant between shards keeps its ids unique on
/// the destination.
///
/// Cheap to clone (one generator per process, shared). Its first id claims a node (a
/// round trip to the catalog); after that it goes to the catalog once per half
/// [lease](Self::with_lease), never per id. Given to a tenancy with
/// [`TenancyBuilder::unique_ids`](crate::TenancyBuilder::unique_ids), it fills the key of
/// an entity marked `#[unique_id]` on insert.
///
/// ```no_run
/// # async fn run(catalog: sea_orm::DatabaseConnection) -> tenancy_sea::Result<()> {
/// use tenancy_sea::catalog::UniqueIds;
///
/// let ids = UniqueIds::new(catalog);
/// ids.install().await?;
/// let a = ids.next_id().await?;
/// let b = ids.next_id().await?;
/// assert!(b > a);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct UniqueIds {
    inner: Arc<Inner>,
}

struct Inner {
    conn: DatabaseConnection,
    owner: String,
    lease: Duration,
    state: Mutex<State>,
    /// One catalog round trip (claim or renewal) at a time.
    renewing: futures_util::lock::Mutex<()>,
}

#[derive(Default)]
struct State {
    /// The clock of the node held, `None` before the first claim or after losing it.
    clock: Option<IdClock>,
    /// When to renew the lease: half of it after the last renewal was sent.
    renew_at: Option<Instant>,
}

impl std::fmt::Debug for UniqueIds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UniqueIds")
            .field("node", &self.node())
            .field("lease", &self.inner.lease)
            .finish_non_exhaustive()
    }
}

impl UniqueIds {
    /// A generator whose node leases live in the catalog database `catalog` (the table
    /// [`id_node_entry`], made by [`install`](Self::install)). Every process whose ids must
    /// not collide uses the same catalog.
    #[must_use]
    pub fn new(catalog: DatabaseConnection) -> Self {
        UniqueIds {
            inner: Arc::new(Inner {
                conn: catalog,
                owner: uuid::Uuid::new_v4().simple().to_string(),
                lease: DEFAULT_ID_LEASE,
                state: Mutex::new(State::default()),
                renewing: futures_util::lock::Mutex::new(()),
            }),
        }
    }

    /// How long this process holds its node between renewals ([`DEFAULT_ID_LEASE`] by
    /// default, at least 1 s). A node whose process died is taken over after it; the
    /// holder renews after half of it. Set before the first id.
    #[must_use]
    pub fn with_lease(self, lease: Duration) -> Self {
        let lease = lease.max(Duration::from_secs(1));
        match Arc::try_unwrap(self.inner) {
            Ok(mut inner) => {
                inner.lease = lease;
                UniqueIds {
                    inner: Arc::new(inner),
                }
            }
            // Shared already: a fresh generator with the lease, nothing issued yet by it.
            Err(shared) => UniqueIds::new(shared.conn.clone()).with_lease(lease),
        }
    }

    /// Creates the catalog's table of nodes unless it exists.
    pub async fn install(&self) -> Result<()> {
        create_table_if_missing(&self.inner.conn, id_node_entry::Entity).await
    }

    /// The node this process holds, if it holds one.
    #[must_use]
    pub fn node(&self) -> Option<u16> {
        self.state().clock.as_ref().map(IdClock::node)
    }

    /// A new id, larger than every id this generator issued before.
    pub async fn next_id(&self) -> Result<i64> {
        let mut ids = self.take(1).await?;
        ids.pop()
            .ok_or_else(|| UniqueIdError::Clock(IdError::TimeExhausted).into())
    }

    /// `count` new ids, ascending.
    ///
    /// Ids are issued up to the ceiling this process recorded last, whatever its lease says
    /// (the node's next holder starts above that ceiling). So a renewal that fails, the
    /// catalog out of reach, fails no insert until the ceiling is used up (about half a
    /// lease later): it is logged and tried again at the next call.
    pub async fn take(&self, count: usize) -> Result<Vec<i64>> {
        let mut ids = Vec::with_capacity(count);
        loop {
            let due = {
                let mut state = self.state();
                if let Some(clock) = state.clock.as_mut() {
                    while ids.len() < count {
                        match clock.next_id(now()) {
                            Ok(id) => ids.push(id),
                            Err(IdError::CeilingReached { .. }) => break,
                            Err(other) => return Err(UniqueIdError::Clock(other).into()),
                        }
                    }
                }
                if ids.len() < count {
                    // No node, or its ceiling is reached: renew now.
                    state.renew_at = None;
                }
                state.renew_at.is_none_or(|at| Instant::now() >= at)
            };
            if !due {
                return Ok(ids);
            }
            match self.renew().await {
                Ok(()) if ids.len() == count => return Ok(ids),
                Ok(()) => {}
                Err(error) if ids.len() == count => {
                    tracing::warn!(
                        %error,
                        "the id node's lease was not renewed; ids are issued below its \
                         recorded ceiling until a renewal succeeds"
                    );
                    return Ok(ids);
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// Gives the node back (its ceiling stays recorded): for a process that stops. Ids
    /// asked for later claim a node again.
    pub async fn release(&self) -> Result<()> {
        let _one = self.inner.renewing.lock().await;
        let node = {
            let mut state = self.state();
            state.renew_at = None;
            state.clock.take().map(|clock| clock.node())
        };
        if let Some(node) = node {
            id_node_entry::Entity::update_many()
                .col_expr(id_node_entry::Column::ExpiresAt, 0i64.into())
                .filter(id_node_entry::Column::Node.eq(i32::from(node)))
                .filter(id_node_entry::Column::Owner.eq(self.inner.owner.as_str()))
                .exec(&self.inner.conn)
                .await?;
        }
        Ok(())
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is whole between statements: a panic elsewhere leaves it usable.
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn lease_millis(&self) -> i64 {
        i64::try_from(self.inner.lease.as_millis()).unwrap_or(i64::MAX)
    }

    /// Claims a node if none is held, then records a ceiling one lease ahead and lets the
    /// clock issue up to it.
    async fn renew(&self) -> Result<()> {
        let _one = self.inner.renewing.lock().await;
        if self.state().renew_at.is_some_and(|at| Instant::now() < at) {
            return Ok(()); // another task renewed while this one waited
        }
        let sent = Instant::now();
        let held = self.state().clock.clone();
        let mut clock = match held {
            Some(clock) => clock,
            None => self.claim().await?,
        };
        let ahead = u64::try_from(self.lease_millis()).unwrap_or(u64::MAX);
        let ceiling = clock
            .next_millis(now())
            .saturating_add(ahead)
            .max(clock.ceiling());
        let recorded = id_node_entry::Entity::update_many()
            .col_expr(
                id_node_entry::Column::Ceiling,
                i64::try_from(ceiling).unwrap_or(i64::MAX).into(),
            )
            .col_expr(
                id_node_entry::Column::ExpiresAt,
                now_millis().saturating_add(self.lease_millis()).into(),
            )
            .filter(id_node_entry::Column::Node.eq(i32::from(clock.node())))
            .filter(id_node_entry::Column::Owner.eq(self.inner.owner.as_str()))
            .exec(&self.inner.conn)
            .await?;
        let mut state = self.state();
        if recorded.rows_affected == 0 {
            // Taken over after the lease ran out: the ids issued stay below the ceiling
            // the new holder starts above. Claim another node next time.
            tracing::warn!(
                node = clock.node(),
                "this process's id node was taken over after its lease ran out; claiming another"
            );
            state.clock = None;
            state.renew_at = None;
            return Ok(());
        }
        clock.raise_ceiling(ceiling);
        // Keep what this process issued since the clone (the clock's last id) by raising
        // the live clock's ceiling when there is one.
        match state.clock.as_mut() {
            Some(live) if live.node() == clock.node() => live.raise_ceiling(ceiling),
            _ => state.clock = Some(clock),
        }
        state.renew_at = Some(sent + self.inner.lease / 2);
        Ok(())
    }

    /// Takes a node: one whose lease ran out (the lowest), else the lowest number not yet
    /// used. Its recorded ceiling is the new clock's floor.
    async fn claim(&self) -> Result<IdClock> {
        let conn = &self.inner.conn;
        for _ in 0..CLAIM_ATTEMPTS {
            let now = now_millis();
            let expires = now.saturating_add(self.lease_millis());
            let lapsed = id_node_entry::Entity::find()
                .filter(id_node_entry::Column::ExpiresAt.lt(now))
                .order_by_asc(id_node_entry::Column::Node)
                .one(conn)
                .await?;
            if let Some(node) = lapsed {
                // Compare and set: only if it is still lapsed (another process may have
                // taken it since the read).
                let taken = id_node_entry::Entity::update_many()
                    .col_expr(
                        id_node_entry::Column::Owner,
                        self.inner.owner.clone().into(),
                    )
                    .col_expr(id_node_entry::Column::ExpiresAt, expires.into())
                    .filter(id_node_entry::Column::Node.eq(node.node))
                    .filter(id_node_entry::Column::ExpiresAt.lt(now))
                    .exec(conn)
                    .await?;
                if taken.rows_affected == 1 {
                    // Only the owner changes the ceiling from here: read it after the take.
                    let row = id_node_entry::Entity::find_by_id(node.node)
                        .filter(id_node_entry::Column::Owner.eq(self.inner.owner.as_str()))
                        .one(conn)
                        .await?;
                    if let Some(row) = row {
                        return clock_of(row.node, row.ceiling);
                    }
                }
                continue;
            }
            let used: Vec<i32> = id_node_entry::Entity::find()
                .select_only()
                .column(id_node_entry::Column::Node)
                .order_by_asc(id_node_entry::Column::Node)
                .into_tuple()
                .all(conn)
                .await?;
            let Some(free) = (0..i32::from(MAX_NODES)).find(|n| used.binary_search(n).is_err())
            else {
                return Err(UniqueIdError::NodesExhausted { nodes: MAX_NODES }.into());
            };
            let inserted = id_node_entry::Entity::insert(id_node_entry::ActiveModel {
                node: Set(free),
                owner: Set(self.inner.owner.clone()),
                expires_at: Set(expires),
                ceiling: Set(0),
            })
            .exec(conn)
            .await;
            match inserted {
                Ok(_) => return clock_of(free, 0),
                // Another process inserted the same number first: look again.
                Err(error)
                    if matches!(
                        error.sql_err(),
                        Some(sea_orm::SqlErr::UniqueConstraintViolation(_))
                    ) => {}
                Err(other) => return Err(other.into()),
            }
        }
        Err(UniqueIdError::NodesExhausted { nodes: MAX_NODES }.into())
    }
}

/// The clock of `node`, whose earlier holders recorded `ceiling` (0 for a new node).
fn clock_of(node: i32, ceiling: i64) -> Result<IdClock> {
    let node = u32::try_from(node).unwrap_or(u32::MAX);
    let floor = u64::try_from(ceiling).unwrap_or(0);
    Ok(IdClock::new(node, floor).map_err(UniqueIdError::Clock)?)
}

/// Now, in milliseconds after the id epoch.
fn now() -> u64 {
    id_millis(u64::try_from(now_millis()).unwrap_or(0))
}

impl crate::scope::IssueIds for UniqueIds {
    fn issue(&self, count: usize) -> futures_util::future::BoxFuture<'_, Result<Vec<i64>>> {
        Box::pin(self.take(count))
    }
}
