//! Rebalancing a directory-routed topology: a plan of moves from the fullest active shards
//! to the emptiest (by tenants, rows or bytes), tenants first taken off draining shards, and
//! its application with the online moves, a few at a time, after finishing any move that
//! stopped part-way.

use super::move_steps::{EntityStep, MoveStep};
use super::moves::MakeSchema;
use super::rebalance_plan::plan_moves;
use crate::catalog::ShardState;
use crate::catalog::directory_entry;
use crate::entity::{ScopedEntity, SqlTenantId, TenantScoped};
use crate::error::{Error, Result};
use crate::isolation::Isolation;
use crate::scope::quote_identifier;
use crate::tenancy::Tenancy;
use futures_util::StreamExt;
use sea_orm::sea_query::{Alias, Expr, Func, SimpleExpr};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DbBackend, EntityTrait, IdenStatic, IntoActiveModel, Iterable,
    QueryFilter, QuerySelect,
};
use sea_orm_migration::MigratorTrait;
use std::collections::BTreeMap;
use std::marker::PhantomData;
use tenancy_core::ShardId;

/// What a rebalance weighs shards by.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Balance {
    /// How many tenants each shard holds.
    #[default]
    Tenants,
    /// How many rows of the named entities each shard holds (counted per tenant on the
    /// shard the directory places it on).
    Rows,
    /// How many bytes the named entities' rows take on each shard (per tenant, on the
    /// shard the directory places it on): on PostgreSQL the rows' stored size
    /// (`pg_column_size` of each row), on MariaDB and SQLite the length of each value's
    /// text form (a blob's bytes), so that a tenant of few wide rows weighs what it holds.
    Bytes,
}

/// One move of a [`RebalancePlan`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedMove<T> {
    /// The tenant.
    pub tenant: T,
    /// Where it lives.
    pub from: ShardId,
    /// Where it goes.
    pub to: ShardId,
    /// Its weight (1 by tenants; its rows by rows; its bytes by bytes).
    pub weight: u64,
}

/// What [`Rebalance::plan`] proposes: the moves in order, and each active shard's load
/// before and after them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RebalancePlan<T> {
    /// Moves that stopped part-way (their claims lapsed), finished first.
    pub unfinished: Vec<(T, ShardId)>,
    /// The moves, draining shards emptied first.
    pub moves: Vec<PlannedMove<T>>,
    /// Each shard's load now.
    pub before: BTreeMap<ShardId, u64>,
    /// Each shard's load once the moves are done.
    pub after: BTreeMap<ShardId, u64>,
}

/// A finished move of a rebalance, told to [`Rebalance::on_progress`].
#[derive(Debug)]
pub struct RebalanceProgress<'p, T> {
    /// How many moves have ended, this one included.
    pub done: usize,
    /// How many moves there are.
    pub total: usize,
    /// The tenant.
    pub tenant: &'p T,
    /// How its move ended.
    pub outcome: &'p Result<super::MoveReport>,
}

/// What [`Rebalance::apply`] did.
#[derive(Debug, Default)]
pub struct RebalanceReport<T> {
    /// The tenants moved, each with its report.
    pub moved: Vec<(T, super::MoveReport)>,
    /// The tenants whose move failed, each with its error; the others went on.
    pub failed: Vec<(T, Error)>,
}

type Step<'a, T> = fn() -> Box<dyn MoveStep<T> + 'a>;
type Weigh<'a, T> = for<'t> fn(
    &'t Tenancy<T>,
    &'t ShardId,
    Balance,
) -> futures_util::future::BoxFuture<'t, Result<Vec<(String, u64)>>>;
type OnRebalance<'a, T> = Box<dyn Fn(&RebalanceProgress<'_, T>) + Send + Sync + 'a>;

/// A rebalance of the tenants over the active shards, built by [`Tenancy::rebalance`].
#[must_use = "a rebalance does nothing until it is planned and applied"]
pub struct Rebalance<'a, T: SqlTenantId> {
    tenancy: &'a Tenancy<T>,
    steps: Vec<(Step<'a, T>, Weigh<'a, T>)>,
    balance: Balance,
    parallel: usize,
    make_schema: Option<MakeSchema>,
    progress: Option<OnRebalance<'a, T>>,
}

impl<T: SqlTenantId> std::fmt::Debug for Rebalance<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rebalance")
            .field("balance", &self.balance)
            .field("parallel", &self.parallel)
            .finish_non_exhaustive()
    }
}

/// Each tenant's weight of `E` on `shard` (its rows, or its bytes), keyed by the tenant's
/// id as text.
fn weigh<'t, T, E>(
    tenancy: &'t Tenancy<T>,
    shard: &'t ShardId,
    balance: Balance,
) -> futures_util::future::BoxFuture<'t, Result<Vec<(String, u64)>>>
where
    T: SqlTenantId,
    E: TenantScoped<TenantId = T> + ScopedEntity<T>,
{
    Box::pin(async move {
        let conn = tenancy.topology()?.unscoped_connection(shard)?;
        let backend = conn.get_database_backend();
        let text = match backend {
            DbBackend::MySql => "CHAR",
            _ => "TEXT",
        };
        let weight = match balance {
            Balance::Bytes => Expr::cust(bytes_of::<E>(backend)),
            _ => E::tenant_column().count(),
        };
        let rows: Vec<(String, i64)> = E::find()
            .select_only()
            .column_as(
                SimpleExpr::from(Func::cast_as(
                    Expr::col(E::tenant_column()),
                    Alias::new(text),
                )),
                "tenant",
            )
            .column_as(weight, "n")
            .group_by(E::tenant_column())
            .into_tuple()
            .all(&conn)
            .await?;
        Ok(rows
            .into_iter()
            .map(|(tenant, n)| (tenant, u64::try_from(n).unwrap_or(0)))
            .collect())
    })
}

/// The SQL of the bytes a group of `E`'s rows takes on `backend` (see [`Balance::Bytes`]),
/// a 64-bit integer. The names are the entity's own (compile-time identifiers), quoted.
fn bytes_of<E: EntityTrait>(backend: DbBackend) -> String {
    let quote = |name: &str| quote_identifier(name, backend);
    if backend == DbBackend::Postgres {
        return format!(
            "COALESCE(sum(pg_column_size({}.*)), 0)::bigint",
            quote(E::default().table_name())
        );
    }
    let lengths = E::Column::iter()
        .map(|column| format!("COALESCE(LENGTH({}), 0)", quote(column.as_str())))
        .collect::<Vec<_>>()
        .join(" + ");
    match backend {
        DbBackend::MySql => format!("CAST(COALESCE(SUM({lengths}), 0) AS SIGNED)"),
        _ => format!("COALESCE(SUM({lengths}), 0)"),
    }
}

impl<T: SqlTenantId> Tenancy<T> {
    /// A rebalance of the tenants of the directory given to the builder over the active
    /// shards: name the tenants' entities (parents first) as for a move, choose what to
    /// weigh ([`Balance`]), [`plan`](Rebalance::plan) it, show the plan, and
    /// [`apply`](Rebalance::apply) it. Applying runs the online moves
    /// ([`Tenancy::move_tenant`]) a few at a time; a rebalance that stops (its process
    /// killed) is resumed by planning and applying again: moves that stopped part-way are
    /// finished first, and the plan starts from where the tenants live then.
    pub fn rebalance(&self) -> Rebalance<'_, T> {
        Rebalance {
            tenancy: self,
            steps: Vec::new(),
            balance: Balance::Tenants,
            parallel: 1,
            make_schema: None,
            progress: None,
        }
    }
}

impl<'a, T: SqlTenantId> Rebalance<'a, T> {
    /// Adds an entity whose rows move with each tenant (parents first, as for a move).
    pub fn entity<E>(mut self) -> Self
    where
        E: TenantScoped<TenantId = T> + ScopedEntity<T>,
        E::Model: IntoActiveModel<E::ActiveModel> + Sync,
        E::ActiveModel: ActiveModelTrait<Entity = E> + Send,
    {
        fn step<'s, T, E>() -> Box<dyn MoveStep<T> + 's>
        where
            T: SqlTenantId,
            E: TenantScoped<TenantId = T> + ScopedEntity<T>,
            E::Model: IntoActiveModel<E::ActiveModel> + Sync,
            E::ActiveModel: ActiveModelTrait<Entity = E> + Send,
        {
            Box::new(EntityStep::<E>(PhantomData))
        }
        self.steps.push((step::<T, E>, weigh::<T, E>));
        self
    }

    /// What to weigh shards by ([`Balance::Tenants`] by default).
    pub fn by(mut self, balance: Balance) -> Self {
        self.balance = balance;
        self
    }

    /// How many moves run at once (1 by default; each moves one tenant).
    pub fn parallel(mut self, moves: usize) -> Self {
        self.parallel = moves.max(1);
        self
    }

    /// The application's migrator, for moves under schema per tenant (see
    /// [`TenantMove::migrator`](super::TenantMove::migrator)).
    pub fn migrator<M: MigratorTrait + 'static>(mut self) -> Self {
        self.make_schema = Some(super::moves::make_schema::<M>);
        self
    }

    /// Calls `progress` as each move ends.
    pub fn on_progress(
        mut self,
        progress: impl Fn(&RebalanceProgress<'_, T>) + Send + Sync + 'a,
    ) -> Self {
        self.progress = Some(Box::new(progress));
        self
    }

    /// Plans the rebalance from the catalog as it is: tenants off draining shards first
    /// (the heaviest first, each to the lightest active shard), then, while it narrows the
    /// spread, the heaviest tenant of the fullest active shard that fits the gap to the
    /// emptiest. Under schema per tenant it weighs by tenants only.
    pub async fn plan(&self) -> Result<RebalancePlan<T>> {
        let tenancy = self.tenancy;
        let directory = tenancy.require_directory("rebalancing")?;
        if self.steps.is_empty() {
            return Err(Error::Config(
                "a rebalance names the tenants' entities: `.entity::<E>()` for each, parents first"
                    .to_owned(),
            ));
        }
        if self.balance != Balance::Tenants
            && matches!(tenancy.isolation(), Isolation::SchemaPerTenant { .. })
        {
            return Err(Error::Config(
                "a rebalance by rows or bytes weighs rows in shared tables; under schema per \
                 tenant balance by tenants"
                    .to_owned(),
            ));
        }
        let shards = tenancy.shard_catalog().list().await?;
        let placed: Vec<(String, ShardId)> = directory_entry::Entity::find()
            .filter(directory_entry::Column::Directory.eq(directory.name()))
            .all(tenancy.unscoped())
            .await?
            .into_iter()
            .map(|row| (row.key, ShardId::new(row.shard)))
            .collect();
        let mut weights: BTreeMap<(String, ShardId), u64> = BTreeMap::new();
        if self.balance != Balance::Tenants {
            for record in &shards {
                for (_, weigh) in &self.steps {
                    for (tenant, rows) in weigh(tenancy, &record.name, self.balance).await? {
                        *weights.entry((tenant, record.name.clone())).or_default() += rows;
                    }
                }
            }
        }
        let unfinished: Vec<(T, ShardId)> = directory
            .lapsed_moves()
            .await?
            .into_iter()
            .filter_map(|(key, to)| T::parse_tenant_id(&key).ok().map(|t| (t, to)))
            .collect();
        let mut tenants = Vec::with_capacity(placed.len());
        for (key, shard) in placed {
            let Ok(tenant) = T::parse_tenant_id(&key) else {
                continue;
            };
            let weight = match self.balance {
                Balance::Tenants => 1,
                // Only the rows on the shard the directory places it on: copies a stopped
                // move left elsewhere do not count.
                Balance::Rows | Balance::Bytes => {
                    weights.get(&(key, shard.clone())).copied().unwrap_or(0)
                }
            };
            // A tenant whose move stopped part-way is where that move takes it, and stays.
            match unfinished.iter().find(|(t, _)| *t == tenant) {
                Some((_, to)) => tenants.push((tenant, to.clone(), weight, false)),
                None => tenants.push((tenant, shard, weight, true)),
            }
        }
        let states: Vec<(ShardId, ShardState)> =
            shards.into_iter().map(|r| (r.name, r.state)).collect();
        let (moves, before, after) = plan_moves(&states, tenants)?;
        Ok(RebalancePlan {
            unfinished,
            moves,
            before,
            after,
        })
    }

    /// Applies `plan`: the unfinished moves first, then the planned ones, at most
    /// [`parallel`](Self::parallel) at once. A failed move is reported and the others go
    /// on.
    pub async fn apply(&self, plan: &RebalancePlan<T>) -> RebalanceReport<T> {
        let total = plan.unfinished.len() + plan.moves.len();
        let mut report = RebalanceReport {
            moved: Vec::new(),
            failed: Vec::new(),
        };
        let mut done = 0;
        // The unfinished moves end before any planned one starts: no tenant is in two.
        self.run_moves(plan.unfinished.clone(), total, &mut done, &mut report)
            .await;
        let planned = plan.moves.iter().map(|m| (m.tenant.clone(), m.to.clone()));
        self.run_moves(planned.collect(), total, &mut done, &mut report)
            .await;
        report
    }

    /// Runs `work`'s moves, [`parallel`](Self::parallel) at a time, into `report`.
    async fn run_moves(
        &self,
        work: Vec<(T, ShardId)>,
        total: usize,
        done: &mut usize,
        report: &mut RebalanceReport<T>,
    ) {
        let mut outcomes = futures_util::stream::iter(work)
            .map(|(tenant, to)| async move {
                let mut moving = self.tenancy.move_tenant(tenant.clone(), to);
                for (step, _) in &self.steps {
                    moving = moving.with_step(step());
                }
                if let Some(make) = self.make_schema {
                    moving = moving.with_make_schema(make);
                }
                (tenant, moving.run().await)
            })
            .buffer_unordered(self.parallel);
        while let Some((tenant, outcome)) = outcomes.next().await {
            *done += 1;
            if let Some(progress) = &self.progress {
                progress(&RebalanceProgress {
                    done: *done,
                    total,
                    tenant: &tenant,
                    outcome: &outcome,
                });
            }
            match outcome {
                Ok(moved) => report.moved.push((tenant, moved)),
                Err(error) => report.failed.push((tenant, error)),
            }
        }
    }
}
