//! Moving a tenant between the shards of a directory-routed topology: its rows copied to
//! the new shard, its placement switched in the catalog and the router, its old rows
//! removed, with the tenant fenced meanwhile.

use super::move_run::{Ending, Run};
use super::move_steps::{EntityStep, MoveStep, Unit};
use crate::citus;
use crate::entity::{ScopedEntity, SqlTenantId, TenantScoped};
use crate::error::{Error, Result};
use crate::isolation::Isolation;
use crate::placement::Placement;
use crate::tenancy::Tenancy;
use futures_util::future::BoxFuture;
use sea_orm::{ActiveModelTrait, DatabaseTransaction, DbBackend, IntoActiveModel};
use sea_orm_migration::MigratorTrait;
use std::marker::PhantomData;
use tenancy_core::{Identifier, ShardId, ShardRouter};

/// What a move did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MoveReport {
    /// The shard the tenant left (the shard it is on, when it was there already).
    pub from: ShardId,
    /// The shard the tenant lives on now.
    pub to: ShardId,
    /// The rows copied, per table, in the order the entities were given.
    pub copied: Vec<(&'static str, u64)>,
    /// The rows removed from the shards the tenant does not live on: the moved rows
    /// from the old shard, or what an unfinished move had left.
    pub removed: u64,
}

/// A move of one tenant to another shard, built by [`Tenancy::move_tenant`]: name the
/// tenant's entities with [`entity`](Self::entity), then [`run`](Self::run) it.
#[must_use = "a move does nothing until it is run"]
pub struct TenantMove<'a, T: SqlTenantId> {
    tenancy: &'a Tenancy<T>,
    tenant: T,
    to: ShardId,
    steps: Vec<Box<dyn MoveStep<T> + 'a>>,
    /// How the tenant's schema is made on the new shard (schema per tenant).
    make_schema: Option<MakeSchema>,
    progress: Option<OnProgress<'a>>,
}

/// What [`TenantMove::on_progress`] calls.
type OnProgress<'a> = Box<dyn Fn(&MoveProgress) + Send + Sync + 'a>;

/// Where a move has got, told to [`TenantMove::on_progress`] as it goes. The stages come
/// in this order; a stage marked *in a transaction* is told before that transaction
/// commits.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MoveProgress {
    /// A run of a move of the tenant stopped part-way (its process died, or its future
    /// was dropped) and this run took its claim over: it finishes that run's clean-up
    /// (`switched`) or removes its copies, and lifts its fence, before moving on.
    Resumed {
        /// The shard the stopped run was moving the tenant from.
        from: ShardId,
        /// The shard it was moving the tenant to.
        to: ShardId,
        /// Whether it had switched the tenant's placement.
        switched: bool,
    },
    /// The tenant is claimed for this run and known to live on `from`.
    Claimed {
        /// The shard the tenant lives on.
        from: ShardId,
        /// The shard it moves to.
        to: ShardId,
    },
    /// The write fence is up on the old shard: every write of the tenant's rows there is
    /// refused, from any process, with [`Error::TenantMoving`]; reads go on.
    Fenced,
    /// A table's rows are copied (in the copy's transaction on the new shard).
    Copying {
        /// The table.
        table: &'static str,
        /// The rows copied.
        rows: u64,
    },
    /// The copy is committed on the new shard.
    Copied,
    /// Both shards hold the same rows by content, and the catalog records their digest.
    Verified,
    /// The placement is being switched (in the catalog's transaction).
    Switching,
    /// The tenant lives on the new shard, in the catalog and in this process's router.
    Switched,
    /// A table's old rows are removed (in the removal's transaction on the old shard).
    Removing {
        /// The table.
        table: &'static str,
        /// The rows removed.
        rows: u64,
    },
    /// The old rows are gone and the fence is lifted.
    Done,
}

impl<T: SqlTenantId> std::fmt::Debug for TenantMove<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantMove")
            .field("tenant", &self.tenant.to_string())
            .field("to", &self.to)
            .field(
                "tables",
                &self.steps.iter().map(|s| s.table()).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl<T: SqlTenantId> Tenancy<T> {
    /// Moves `tenant` to the shard `to` of a topology routed by the catalog directory
    /// given to the builder ([`TenancyBuilder::directory`](crate::TenancyBuilder::directory)): the tenant's rows of each entity named with
    /// [`TenantMove::entity`] are copied to `to` in one transaction, its placement is
    /// switched in the catalog and then the router, and its rows are removed from the
    /// shard it left in one transaction.
    ///
    /// ```
    /// # use sea_orm::entity::prelude::*;
    /// # use tenancy_sea::prelude::*;
    /// # mod customer {
    /// #     use sea_orm::entity::prelude::*;
    /// #     use tenancy_sea::prelude::*;
    /// #     #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, TenantScoped)]
    /// #     #[sea_orm(table_name = "customers")]
    /// #     pub struct Model {
    /// #         #[sea_orm(primary_key)]
    /// #         pub id: i64,
    /// #         #[tenant_id]
    /// #         pub tenant_id: i64,
    /// #     }
    /// #     #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    /// #     pub enum Relation {}
    /// #     impl ActiveModelBehavior for ActiveModel {}
    /// # }
    /// # use customer as order;
    /// # async fn demo(tenancy: Tenancy<i64>) -> tenancy_sea::Result<()> {
    /// let report = tenancy
    ///     .move_tenant(42, "s3")
    ///     .entity::<customer::Entity>() // parents first: they are copied first
    ///     .entity::<order::Entity>() //    and removed last
    ///     .run()
    ///     .await?;
    /// println!("{report:?}");
    /// # Ok(()) }
    /// ```
    ///
    /// The catalog decides where the tenant lives: when this process's router disagrees
    /// (another process moved it), the move is [`Error::StaleDirectory`] before anything
    /// changes, and the switch is a compare-and-set on the catalog.
    ///
    /// A move claims the tenant in the catalog first: a second move of the tenant, from
    /// any process, is [`Error::TenantMoving`] until it ends. The claim has an owner (this
    /// run) and a lease ([`Directory::with_move_lease`](crate::catalog::Directory::with_move_lease),
    /// 60 s by default), renewed while the move runs, and records how far the move got.
    ///
    /// The tenant's writes need no stopping: before copying, the move raises a fence on
    /// the old shard's database (a trigger per table, for this tenant only), which refuses
    /// every insert, update and delete of the tenant's rows there, from every process and
    /// every handle, with [`Error::TenantMoving`] (retry after the move); reads go on. It
    /// stays up after the switch, so a process that still routes the tenant to the old
    /// shard cannot write there, until the old rows are removed. In this process
    /// [`Tenancy::tenant`] refuses the tenant for the whole move. After the copy both
    /// shards are compared by content (a digest of each table's rows of the tenant); a
    /// difference (a writer that got past the fence: a session that disables triggers)
    /// abandons the move with [`Error::MoveConflict`] before anything is
    /// switched. The old rows are removed only while they are still what was copied, else
    /// nothing is removed and the error is [`Error::MoveLateWrites`].
    ///
    /// A move that stops part-way (its process killed, its future dropped) leaves its
    /// claim, which lapses after the lease, and its fence: the tenant's writes on its
    /// shard are refused until the next move of the tenant, from any process, takes the
    /// claim over and finishes the stopped run's work (its clean-up, when it had switched)
    /// or undoes it (its copies removed), lifts its fence and moves on. See
    /// [`MoveProgress`] for the stages, and the sharding chapter for what each process
    /// sees at each.
    ///
    /// Every unit of the move runs the tenant's set-up first, as a handle's does: under
    /// row-level security its setting (so the shards' own role, subject to the policies,
    /// is enough to move the tenant's rows, and can reach no other's; on PostgreSQL it
    /// also needs `UPDATE` on the sequences of auto-increment keys, for `setval`), under
    /// schema per tenant its schema. Under schema per tenant, name the application's
    /// migrator with [`TenantMove::migrator`]: the tenant's schema is made on `to` in the
    /// copy's transaction, and the old schema is dropped with the clean-up once none of
    /// its tables holds a row.
    ///
    /// Rows keep their primary keys, so keys must be unique across shards (UUIDs, or ids
    /// from one sequence); a key the new shard holds already fails the copy, which is
    /// rolled back, and the tenant stays where it was. On PostgreSQL the new shard's
    /// sequence of an auto-increment key is moved past the copied ids.
    ///
    /// Only co-located entities (whose shard key is the tenant) can be named: an entity
    /// with a `#[shard_key]` of its own does not compile here, its rows being placed by
    /// key, not by tenant. The destination must be in the topology and the router and
    /// not [draining](crate::ShardState::Draining). If removing the old rows fails, the
    /// tenant already lives on `to` and the error is [`Error::MoveUnfinished`]; the claim
    /// is kept, and the same move run again after its lease finishes the clean-up. A move
    /// to the shard the tenant lives on does nothing and removes nothing.
    pub fn move_tenant(&self, tenant: impl Into<T>, to: impl Into<ShardId>) -> TenantMove<'_, T> {
        TenantMove {
            tenancy: self,
            tenant: tenant.into(),
            to: to.into(),
            steps: Vec::new(),
            make_schema: None,
            progress: None,
        }
    }
}

/// Makes a tenant schema with `M`'s migrations, for [`TenantMove::migrator`].
pub(super) fn make_schema<'t, M: MigratorTrait + 'static>(
    txn: &'t DatabaseTransaction,
    schema: &'t Identifier,
    marked: Option<&'t Identifier>,
) -> BoxFuture<'t, Result<()>> {
    Box::pin(super::fleet::create_schema::<M>(txn, schema, marked))
}

impl<'a, T: SqlTenantId> TenantMove<'a, T> {
    /// The application's migrator, which makes the tenant's schema on the new shard under
    /// schema per tenant isolation (required there; the schema is made in the copy's
    /// transaction, so a failed move leaves none). The old schema is dropped with the
    /// clean-up when none of its tables holds a row any more.
    pub fn migrator<M: MigratorTrait + 'static>(mut self) -> Self {
        self.make_schema = Some(make_schema::<M>);
        self
    }

    /// Adds an entity whose rows of the tenant move. Name parents before children:
    /// rows are copied in this order and removed in the reverse order, so foreign keys
    /// hold throughout.
    pub fn entity<E>(mut self) -> Self
    where
        E: TenantScoped<TenantId = T> + ScopedEntity<T>,
        E::Model: IntoActiveModel<E::ActiveModel> + Sync,
        E::ActiveModel: ActiveModelTrait<Entity = E> + Send,
    {
        self.steps.push(Box::new(EntityStep::<E>(PhantomData)));
        self
    }

    /// Adds a step made elsewhere (a rebalance's, for each of its moves).
    pub(super) fn with_step(mut self, step: Box<dyn MoveStep<T> + 'a>) -> Self {
        self.steps.push(step);
        self
    }

    /// Sets how the tenant's schema is made (a rebalance's migrator).
    pub(super) fn with_make_schema(mut self, make: MakeSchema) -> Self {
        self.make_schema = Some(make);
        self
    }

    /// Calls `progress` at each stage of the move ([`MoveProgress`]), from the task that
    /// runs it: for a progress bar, a log line, or a test that stops the process at a given
    /// stage. It should return quickly; a stage marked *in a transaction* holds that
    /// transaction open while it runs.
    pub fn on_progress(mut self, progress: impl Fn(&MoveProgress) + Send + Sync + 'a) -> Self {
        self.progress = Some(Box::new(progress));
        self
    }

    /// Runs the move, through the catalog directory given to the builder
    /// ([`TenancyBuilder::directory`](crate::TenancyBuilder::directory); without one, a
    /// move is [`Error::Config`]).
    pub async fn run(self) -> Result<MoveReport> {
        self.tenant.validate()?;
        if self.tenancy.placement() == Placement::Citus {
            return self.run_on_citus().await;
        }
        let tenancy = self.tenancy;
        let directory = tenancy.require_directory("moving a tenant")?;
        let router = &**directory.router();
        if self.steps.is_empty() {
            return Err(Error::Config(
                "a move names the tenant's entities: `.entity::<E>()` for each, parents first"
                    .to_owned(),
            ));
        }
        if matches!(self.tenancy.isolation(), Isolation::SchemaPerTenant { .. })
            && self.make_schema.is_none()
        {
            return Err(Error::Config(
                "a move under schema per tenant makes the tenant's schema on the new shard: \
                 name the application's migrator with `.migrator::<M>()`"
                    .to_owned(),
            ));
        }
        if !router.shards().contains(&self.to) {
            return Err(tenancy_core::RoutingError::UnknownShard(self.to.to_string()).into());
        }
        // One move of a tenant at a time, in every process: the claim is in the catalog,
        // renewed while the move runs, and lapses after its lease if this run is dropped.
        let claim = directory.claim_move(&self.tenant, &self.to).await?;
        let tenant = self.tenant.clone();
        let schema = match (self.tenancy.isolation(), self.make_schema) {
            (Isolation::SchemaPerTenant { .. }, Some(make)) => Some(SchemaOf {
                name: tenancy.tenant_schema(&tenant)?,
                make,
                version_table: tenancy.version_table().cloned(),
                marked: tenancy.marked_version_table().cloned(),
            }),
            _ => None,
        };
        let progress = self
            .progress
            .unwrap_or_else(|| Box::new(|_: &MoveProgress| {}));
        let run = Run {
            tenancy,
            directory,
            claim: &claim,
            tenant: self.tenant,
            to: self.to,
            steps: &self.steps,
            schema,
            progress: &*progress,
        };
        let (outcome, ending) = directory
            .hold(&tenant, &claim, async { Ok(run.go().await) })
            .await
            .unwrap_or_else(|lost| (Err(lost), Ending::Keep));
        if matches!(ending, Ending::Keep) && outcome.is_err() {
            tracing::warn!(
                target: "tenancy::move", tenant = %tenant,
                "the move stopped after fencing or switching the tenant: its claim is kept \
                 until its lease ends, and the next move of the tenant finishes it"
            );
            return outcome;
        }
        if let Err(error) = directory.release_claim(&tenant, &claim).await {
            tracing::error!(
                target: "tenancy::move", tenant = %tenant, %error,
                "the claim of a finished move was not cleared: later moves of the tenant \
                 are refused until its lease ends"
            );
        }
        outcome
    }

    /// The move under the Citus placement, done by Citus: the tenant's shards (isolated
    /// first when it shares them) or its distributed schema move to the worker `to`
    /// (`host:port`), online; the report counts the tenant's rows of each entity named,
    /// read after the move under its own set-up.
    async fn run_on_citus(self) -> Result<MoveReport> {
        let Some(first) = self.steps.first() else {
            return Err(Error::Config(
                "a move names the tenant's entities: `.entity::<E>()` for each, parents first"
                    .to_owned(),
            ));
        };
        let to = citus::moves::Node::parse(&self.to)?;
        let tenancy = self.tenancy;
        let conn = tenancy.unscoped();
        citus::moves::check_worker(conn, &to).await?;
        tracing::info!(target: "tenancy::move", tenant = %self.tenant, to = %self.to, "moving tenant on Citus");
        let from = match tenancy.isolation() {
            Isolation::SchemaPerTenant { .. } => {
                let schema = tenancy.tenant_schema(&self.tenant)?;
                citus::moves::move_schema(conn, schema.as_str(), &to).await?
            }
            _ => {
                let tenant = self.tenant.clone().into();
                citus::moves::move_rows(conn, first.table(), tenant, &to).await?
            }
        };
        let session = tenancy.session_of(&self.tenant, DbBackend::Postgres)?;
        let unit = Unit::begin(conn, session.as_ref()).await?;
        let mut copied = Vec::with_capacity(self.steps.len());
        for step in &self.steps {
            copied.push((step.table(), step.count(&unit, &self.tenant).await?));
        }
        unit.rollback().await;
        Ok(MoveReport {
            from: from.id(),
            to: to.id(),
            copied,
            removed: 0,
        })
    }
}

/// A tenant's schema, for a move under schema per tenant: its name, how to make it on a
/// shard that lacks it (the application's migrator), and the migrations table in it.
pub(super) struct SchemaOf {
    pub(super) name: Identifier,
    pub(super) make: MakeSchema,
    pub(super) version_table: Option<Identifier>,
    /// The migrations table, when the library keeps the schema's shape marker in it.
    pub(super) marked: Option<Identifier>,
}

/// Creates a tenant schema and runs the application's migrations in it.
pub(super) type MakeSchema = for<'t> fn(
    &'t DatabaseTransaction,
    &'t Identifier,
    Option<&'t Identifier>,
) -> BoxFuture<'t, Result<()>>;
