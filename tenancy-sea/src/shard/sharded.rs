//! Explicit scatter-gather reads: [`AcrossShards`], and the [`ShardedSelect`] it makes, run
//! on every shard and merged ([`Partial`] when some shards may be missing).

use super::fanout::{Target, fan_out_tag, for_target, under_deadline};
use super::merge::{compare, mergeable, ordered};
use super::topology::{Spawned, Topology};
use crate::error::{Error, Result};
use crate::scope::Meter;
use crate::scope::RunTraced;
use futures_util::FutureExt;
use sea_orm::sea_query::IntoCondition;
use sea_orm::{
    DbErr, EntityTrait, ModelTrait, Order, PaginatorTrait, QueryFilter, QuerySelect, Select,
};
use std::cmp::Ordering;
use std::time::Duration;
use tenancy_core::ShardId;

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
    pub(crate) fn new(topology: &Topology, meter: &Meter) -> Self {
        AcrossShards::over(topology.targets(None, meter), topology)
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

/// A select run on several shards and merged: ORDER BY is a merge of the shards' sorted
/// rows, LIMIT/OFFSET apply to the merged result (each shard is asked for offset + limit
/// rows), COUNT is the sum. The result equals the same query on one database holding all
/// rows, as long as the order is total (end it with a unique column) and its columns are
/// not NULL. The aggregates (`count`, `sum`, `avg`, `min`, `max`) cover every row the
/// filters match: order, limit and offset shape the rows of `all` only. `sum` and `avg`
/// take integer columns; another type is [`Error::Config`].
#[must_use = "a select does nothing until `.all()` or `.count()`"]
pub struct ShardedSelect<E: EntityTrait> {
    pub(super) targets: Vec<Target>,
    pub(super) select: Select<E>,
    /// Whether this is a tenant's select (its fragments are audited), not an unscoped one.
    scoped: bool,
    /// The first fragment refused, reported when the select runs.
    error: Option<crate::scope::audit::Refused>,
    /// A select the handle could not make (its message), reported when it runs.
    unmade: Option<String>,
    order: Vec<(E::Column, Order)>,
    limit: Option<u64>,
    offset: u64,
    pub(super) timeout: Duration,
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
    pub(super) fn ready(&self) -> Result<()> {
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
                    let traced = target.span("scatter", table);
                    async move {
                        let rows =
                            async { Ok(on_target!(target, tag, |conn| select.all(conn).await?)) }
                                .traced(traced);
                        (index, rows.await)
                    }
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
                            async { Ok(on_target!(&target, &tag, |conn| select.all(conn).await?)) }
                                .traced(span);
                        // The receiver is gone when the fan-out has given up on this shard.
                        let _ = sender.send(rows.await);
                    };
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
            let traced = target.span("scatter_count", table);
            async move {
                let count = async {
                    Ok(on_target!(target, tag, |conn| PaginatorTrait::count(
                        select, conn
                    )
                    .await?))
                }
                .traced(traced);
                (index, count.await)
            }
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
}
