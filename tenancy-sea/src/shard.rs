//! Sharding: a topology of shards, each a SeaORM connection, with a router that places
//! each tenant on one shard (the tenant id is the shard key: a tenant's rows live
//! together, as in Citus), and explicit scatter-gather reads across every shard.

use crate::entity::TenantKey;
use crate::error::{Error, Result};
use futures_util::FutureExt;
use futures_util::future::{Either, join_all, select};
use sea_orm::sea_query::{Alias, Expr, ExprTrait, Func, IntoCondition, SimpleExpr};
use sea_orm::{
    DatabaseConnection, DbBackend, DbErr, EntityTrait, ModelTrait, Order, PaginatorTrait,
    QueryFilter, QueryOrder, QuerySelect, Select, TryGetable, Value,
};
use std::cmp::Ordering;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tenancy_core::{ShardId, ShardRouter};

/// Runs a future to completion on the application's runtime, e.g.
/// `|future| { tokio::spawn(future); }`.
pub type Spawner = Arc<dyn Fn(Pin<Box<dyn Future<Output = ()> + Send>>) + Send + Sync>;

/// The shards and the router that places tenants on them.
pub struct Topology {
    router: Box<dyn ShardRouter>,
    shards: Vec<(ShardId, DatabaseConnection)>,
    timeout: Duration,
    spawner: Option<Spawner>,
}

impl std::fmt::Debug for Topology {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Topology")
            .field(
                "shards",
                &self.shards.iter().map(|(id, _)| id).collect::<Vec<_>>(),
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
            if !shards.iter().any(|(id, _)| id == routed) {
                return Err(Error::Config(format!(
                    "the router places keys on shard {routed}, which the topology lacks"
                )));
            }
        }
        Ok(Topology {
            router: Box::new(router),
            shards,
            timeout: Duration::from_secs(30),
            spawner: None,
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

    /// The shard of `tenant` and its connection.
    pub fn shard_of<T: TenantKey>(&self, tenant: &T) -> Result<(&ShardId, &DatabaseConnection)> {
        let mut bytes = Vec::with_capacity(16);
        tenant.write_canonical_bytes(&mut bytes);
        let shard = self.router.route_bytes(&bytes)?;
        self.connection(shard)
    }

    fn connection(&self, shard: &ShardId) -> Result<(&ShardId, &DatabaseConnection)> {
        self.shards
            .iter()
            .find(|(id, _)| id == shard)
            .map(|(id, conn)| (id, conn))
            .ok_or_else(|| Error::Config(format!("no connection for shard {shard}")))
    }

    /// Every shard, in order.
    pub fn shards(&self) -> impl Iterator<Item = (&ShardId, &DatabaseConnection)> {
        self.shards.iter().map(|(id, conn)| (id, conn))
    }
}

/// Reads across every shard, with no tenant filter: the sharded form of
/// [`Tenancy::unscoped`](crate::Tenancy::unscoped), made by
/// [`Tenancy::unscoped_across_shards`](crate::Tenancy::unscoped_across_shards). A
/// different type from a tenant handle, so a fan-out never happens by accident.
#[derive(Debug)]
pub struct AcrossShards<'t> {
    topology: &'t Topology,
}

impl<'t> AcrossShards<'t> {
    pub(crate) fn new(topology: &'t Topology) -> Self {
        AcrossShards { topology }
    }

    /// Selects rows of `E` on every shard.
    pub fn find<E: EntityTrait>(&self) -> ShardedSelect<'t, E> {
        ShardedSelect {
            topology: self.topology,
            select: E::find(),
            order: Vec::new(),
            limit: None,
            offset: 0,
            timeout: self.topology.timeout,
        }
    }
}

/// A select run on every shard and merged: ORDER BY is a merge of the shards' sorted
/// rows, LIMIT/OFFSET apply to the merged result (each shard is asked for offset + limit
/// rows), COUNT is the sum. The result equals the same query on one database holding all
/// rows, as long as the order is total (end it with a unique column) and its columns are
/// not NULL.
#[must_use = "a select does nothing until `.all()` or `.count()`"]
pub struct ShardedSelect<'t, E: EntityTrait> {
    topology: &'t Topology,
    select: Select<E>,
    order: Vec<(E::Column, Order)>,
    limit: Option<u64>,
    offset: u64,
    timeout: Duration,
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

/// Runs `work` for one shard, failing with the shard's name on error or after `timeout`.
async fn on_shard<R>(
    shard: &ShardId,
    timeout: Duration,
    work: impl Future<Output = std::result::Result<R, DbErr>>,
) -> Result<R> {
    let work = std::pin::pin!(work);
    let delay = futures_timer::Delay::new(timeout);
    match select(work, delay).await {
        Either::Left((Ok(value), _)) => Ok(value),
        Either::Left((Err(source), _)) => Err(Error::Shard {
            shard: shard.to_string(),
            source,
        }),
        Either::Right(((), _)) => Err(Error::ShardTimeout {
            shard: shard.to_string(),
            timeout,
        }),
    }
}

impl<E: EntityTrait> ShardedSelect<'_, E>
where
    E::Model: Sync,
{
    /// Adds a condition, run on every shard.
    pub fn filter(mut self, condition: impl IntoCondition) -> Self {
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
        let mut per_shard = self.select.clone();
        for (col, order) in &self.order {
            per_shard = per_shard.order_by(*col, order.clone());
        }
        if let Some(limit) = self.limit {
            per_shard = per_shard.limit(self.offset + limit);
        }
        let timeout = self.timeout;
        let results: Vec<(ShardId, Result<Vec<E::Model>>)> = match &self.topology.spawner {
            None => {
                let fan_out = self.topology.shards().map(|(shard, conn)| {
                    let select = per_shard.clone();
                    async move {
                        let result = on_shard(shard, timeout, select.all(conn)).await;
                        (shard.clone(), result)
                    }
                });
                join_all(fan_out).await
            }
            Some(spawn) => {
                let handles = self.topology.shards().map(|(shard, conn)| {
                    let (select, shard, conn) = (per_shard.clone(), shard.clone(), conn.clone());
                    let (task, handle) = async move {
                        let result = on_shard(&shard, timeout, select.all(&conn)).await;
                        (shard, result)
                    }
                    .remote_handle();
                    spawn(Box::pin(task));
                    handle
                });
                join_all(handles).await
            }
        };
        let mut rows = Vec::new();
        let mut missing = Vec::new();
        for (shard, result) in results {
            match result {
                Ok(shard_rows) => rows.extend(shard_rows),
                Err(error) => {
                    tracing::warn!(%shard, %error, "shard missing from a scatter-gather");
                    missing.push((shard, error));
                }
            }
        }
        let mut failure = None;
        rows.sort_by(|a, b| {
            for (col, order) in &self.order {
                let ordering = match compare(&a.get(*col), &b.get(*col)) {
                    Some(ordering) => ordering,
                    None => {
                        failure.get_or_insert_with(|| format!("{col:?}"));
                        Ordering::Equal
                    }
                };
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
        if let Some(column) = failure {
            return Err(Error::Config(format!(
                "cannot merge shards ordered by {column}: its values do not compare"
            )));
        }
        let skip = usize::try_from(self.offset).unwrap_or(usize::MAX);
        let take = self
            .limit
            .map_or(usize::MAX, |l| usize::try_from(l).unwrap_or(usize::MAX));
        Ok(Partial {
            rows: rows.into_iter().skip(skip).take(take).collect(),
            missing,
        })
    }

    /// How many rows match, over all shards (limit and offset ignored).
    pub async fn count(self) -> Result<u64> {
        let timeout = self.timeout;
        let fan_out = self.topology.shards().map(|(shard, conn)| {
            let select = self.select.clone();
            on_shard(shard, timeout, PaginatorTrait::count(select, conn))
        });
        let mut total = 0;
        for result in join_all(fan_out).await {
            total += result?;
        }
        Ok(total)
    }
}

impl<E: EntityTrait> ShardedSelect<'_, E>
where
    E::Model: Sync,
{
    /// One value per shard: `expr` selected alone (the shard's aggregate), or `None`.
    async fn per_shard<V>(&self, expr: SimpleExpr) -> Result<Vec<Option<V>>>
    where
        V: TryGetable + Send + Sync + 'static,
    {
        let timeout = self.timeout;
        let fan_out = self.topology.shards().map(|(shard, conn)| {
            let select = self
                .select
                .clone()
                .select_only()
                .column_as(expr.clone(), "value")
                .into_tuple::<Option<V>>();
            on_shard(shard, timeout, async move {
                Ok(select.one(conn).await?.flatten())
            })
        });
        join_all(fan_out).await.into_iter().collect()
    }

    /// The largest value of `col` over all shards (`None` when no row matches).
    pub async fn max<V>(self, col: E::Column) -> Result<Option<V>>
    where
        V: TryGetable + Ord + Send + Sync + 'static,
    {
        let values = self.per_shard::<V>(Expr::col(col).max()).await?;
        Ok(values.into_iter().flatten().max())
    }

    /// The smallest value of `col` over all shards (`None` when no row matches).
    pub async fn min<V>(self, col: E::Column) -> Result<Option<V>>
    where
        V: TryGetable + Ord + Send + Sync + 'static,
    {
        let values = self.per_shard::<V>(Expr::col(col).min()).await?;
        Ok(values.into_iter().flatten().min())
    }

    /// The sum of the integer column `col` over all shards (0 when no row matches). Each
    /// shard's sum is cast to a 64-bit integer (PostgreSQL and MySQL widen integer sums
    /// to decimals); a sum beyond `i64` is an error, not a wrap.
    pub async fn sum(self, col: E::Column) -> Result<i64> {
        let backends: Vec<DbBackend> = self
            .topology
            .shards()
            .map(|(_, conn)| conn.get_database_backend())
            .collect();
        let timeout = self.timeout;
        let fan_out = self
            .topology
            .shards()
            .zip(backends)
            .map(|((shard, conn), backend)| {
                let cast = match backend {
                    DbBackend::MySql => "SIGNED",
                    _ => "BIGINT",
                };
                let expr: SimpleExpr = Func::cast_as(Expr::col(col).sum(), Alias::new(cast)).into();
                let select = self
                    .select
                    .clone()
                    .select_only()
                    .column_as(expr, "value")
                    .into_tuple::<Option<i64>>();
                on_shard(shard, timeout, async move {
                    Ok(select.one(conn).await?.flatten())
                })
            });
        let mut total: i64 = 0;
        for result in join_all(fan_out).await {
            if let Some(value) = result? {
                total = total.checked_add(value).ok_or_else(|| {
                    Error::Config("the sum over all shards does not fit in i64".to_owned())
                })?;
            }
        }
        Ok(total)
    }
}

/// Orders two column values of the same type; `None` when they do not compare. NULL sorts
/// first.
fn compare(a: &Value, b: &Value) -> Option<Ordering> {
    use Value::*;
    Some(match (a, b) {
        (BigInt(a), BigInt(b)) => a.cmp(b),
        (Int(a), Int(b)) => a.cmp(b),
        (SmallInt(a), SmallInt(b)) => a.cmp(b),
        (TinyInt(a), TinyInt(b)) => a.cmp(b),
        (BigUnsigned(a), BigUnsigned(b)) => a.cmp(b),
        (Unsigned(a), Unsigned(b)) => a.cmp(b),
        (Bool(a), Bool(b)) => a.cmp(b),
        (String(a), String(b)) => a.cmp(b),
        (Uuid(a), Uuid(b)) => a.cmp(b),
        (Double(a), Double(b)) => a.partial_cmp(b)?,
        (Float(a), Float(b)) => a.partial_cmp(b)?,
        _ => return None,
    })
}
