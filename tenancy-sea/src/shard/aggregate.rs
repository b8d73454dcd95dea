//! Aggregates across shards: the scalar ones of a [`ShardedSelect`] (`max`, `min`, `sum`,
//! `avg`) and those per group of a [`GroupedSelect`], each shard aggregating its own rows.

use super::fanout::{Target, fan_out_tag, for_target, under_deadline};
use super::merge::{fits_i64, integer_column, parse_sum, sum_as_text};
use super::sharded::ShardedSelect;
use crate::error::Result;
use crate::scope::RunTraced;
use sea_orm::sea_query::{Expr, ExprTrait, SimpleExpr};
use sea_orm::{DbBackend, EntityTrait, QuerySelect, TryGetable, TryGetableMany};
use std::cmp::Ordering;
use std::collections::BTreeMap;

impl<E: EntityTrait> ShardedSelect<E>
where
    E::Model: Sync,
{
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
            let traced = target.span("scatter_aggregate", table);
            async move {
                let rows = async { Ok(on_target!(target, tag, |conn| select.all(conn).await?)) }
                    .traced(traced);
                (index, rows.await)
            }
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
