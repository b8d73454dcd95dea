//! Moving a tenant between the shards of a directory-routed topology: its rows copied to
//! the new shard, its placement switched in the catalog and the router, its old rows
//! removed, with the tenant fenced meanwhile.

use super::move_cleanup::{Removal, Sides, delete_rows, remove_moved};
use super::move_steps::{EntityStep, MoveStep, Unit, read};
use crate::catalog::Claim;
use crate::catalog::directory::Directory;
use crate::citus;
use crate::entity::{ScopedEntity, SqlTenantId, TenantScoped};
use crate::error::{Error, Result};
use crate::isolation::Isolation;
use crate::placement::Placement;
use crate::scope::{schema_exists, set_up};
use crate::tenancy::Tenancy;
use futures_util::future::BoxFuture;
use sea_orm::{
    ActiveModelTrait, DatabaseTransaction, DbBackend, IntoActiveModel, TransactionTrait,
};
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
    /// run) and a lease ([`Directory::with_move_lease`], 60 s by default), renewed
    /// while the move runs; it is cleared when the move returns, and when the move's
    /// future is dropped (a timeout) or its process dies, it lapses after the lease and
    /// the next move takes it over. A move that loses its claim (not renewed for a whole
    /// lease) stops, its open transactions rolled back, with [`Error::TenantMoving`].
    ///
    /// While it runs, the tenant is fenced in this process: [`Tenancy::tenant`] refuses
    /// it with [`Error::TenantMoving`]. Handles taken before the move, and other
    /// processes, are not fenced, so stop the tenant's writes for the move's duration.
    /// The move checks for such writes: when a table's row count on the old shard
    /// changed during the copy, the copy is rolled back and the move abandoned with
    /// [`Error::MoveConflict`], before anything is switched; when the old shard holds
    /// other rows than those copied at the clean-up, nothing is removed from it and the
    /// error is [`Error::MoveLateWrites`].
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
    /// tenant already lives on `to` and the error is [`Error::MoveUnfinished`];
    /// [`Tenancy::remove_leftovers`] then removes the old rows that `to` holds too. A move
    /// to the shard the tenant lives on does nothing and removes nothing.
    pub fn move_tenant(&self, tenant: impl Into<T>, to: impl Into<ShardId>) -> TenantMove<'_, T> {
        TenantMove {
            tenancy: self,
            tenant: tenant.into(),
            to: to.into(),
            steps: Vec::new(),
            make_schema: None,
        }
    }
}

/// Makes a tenant schema with `M`'s migrations, for [`TenantMove::migrator`].
fn make_schema<'t, M: MigratorTrait + 'static>(
    txn: &'t DatabaseTransaction,
    schema: &'t Identifier,
) -> BoxFuture<'t, Result<()>> {
    Box::pin(super::fleet::create_schema::<M>(txn, schema))
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
        let outcome = directory
            .hold(&tenant, &claim, self.claimed(directory, &claim))
            .await;
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

    /// The move, once claimed.
    async fn claimed(self, directory: &Directory<T>, claim: &Claim) -> Result<MoveReport> {
        let router = &**directory.router();
        let TenantMove {
            tenancy,
            tenant,
            to,
            steps,
            make_schema,
        } = self;
        let schema = match (tenancy.isolation(), make_schema) {
            (Isolation::SchemaPerTenant { .. }, Some(make)) => Some(SchemaOf {
                name: tenancy.tenant_schema(&tenant)?,
                make,
                version_table: tenancy.version_table().cloned(),
            }),
            _ => None,
        };
        let topology = tenancy.topology()?;
        let to_conn = topology.connection(&to)?;
        // The catalog decides where the tenant lives; a cache that disagrees (another
        // process moved it) stops the move before anything changes.
        let cached = router.route(&tenant).ok();
        let placed = directory.placement(&tenant).await?;
        let from = match (placed, cached) {
            (Some(placed), Some(cached)) if placed == cached => placed,
            (placed, cached) => {
                return Err(Error::StaleDirectory {
                    tenant: tenant.to_string(),
                    catalog: shard_name(placed),
                    cached: shard_name(cached),
                });
            }
        };
        // The builder made sure the topology routes by the directory's router, so the
        // topology's shard of the tenant is `from`.
        let (_, from_conn) = topology.shard_of(&tenant)?;
        if from == to {
            // Nothing to move, and nothing is removed anywhere: rows of the tenant on
            // other shards are not known to be copies (`remove_leftovers` checks that).
            return Ok(MoveReport {
                from,
                to,
                copied: Vec::new(),
                removed: 0,
            });
        }
        directory.refuse_draining(&to).await?;
        let fence = topology.fence(&tenant)?;
        tracing::info!(target: "tenancy::move", tenant = %tenant, %from, %to, "moving tenant");

        // Each side's units run the tenant's set-up first (its setting, its schema).
        let from_session = tenancy.session_of(&tenant, from_conn.get_database_backend())?;
        let to_session = tenancy.session_of(&tenant, to_conn.get_database_backend())?;
        let (from_session, to_session) = (from_session.as_ref(), to_session.as_ref());
        let txn = match &schema {
            // Under schema per tenant the tenant's schema is made on `to` first (in the
            // copy's transaction: if the move fails, no schema is left there).
            Some(schema) => {
                let txn = to_conn.begin().await?;
                if !schema_exists(&txn, schema.name.as_str()).await? {
                    (schema.make)(&txn, &schema.name).await?;
                }
                let tag = set_up(&txn, &to_conn, to_session).await?;
                Unit {
                    txn,
                    tag: tag.unwrap_or_default(),
                }
            }
            None => Unit::begin(&to_conn, to_session).await?,
        };
        // Copies an interrupted move left on `to` go first, but only rows `from` holds
        // identically: anything else on `to` (the only copy of a write, say) stops the
        // move, and nothing is changed.
        let home = Unit::begin(&from_conn, from_session).await?;
        for step in steps.iter().rev() {
            let (_, kept) = step.remove_verified(&home, &txn, &tenant).await?;
            if kept > 0 {
                txn.rollback().await;
                return Err(Error::MoveDestinationNotEmpty {
                    tenant: tenant.to_string(),
                    shard: to.to_string(),
                    table: step.table(),
                    rows: kept,
                });
            }
        }
        let mut copied = Vec::with_capacity(steps.len());
        for step in &steps {
            copied.push((step.table(), step.copy(&home, &txn, &tenant).await?));
        }
        home.commit().await?;
        for step in &steps {
            step.advance_sequence(&txn).await?;
        }
        for (step, (table, rows)) in steps.iter().zip(&copied) {
            let now = read(&from_conn, from_session, async |unit| {
                step.count(unit, &tenant).await
            })
            .await?;
            if now != *rows {
                txn.rollback().await;
                return Err(Error::MoveConflict {
                    tenant: tenant.to_string(),
                    table,
                    copied: *rows,
                    now,
                    shard: from.to_string(),
                });
            }
        }
        txn.commit().await?;

        let switched = directory.switch(&tenant, &from, &to, claim).await;
        if let Err(lost @ Error::TenantMoving { .. }) = switched {
            // This run's claim lapsed: another run may hold the tenant now. Nothing more is
            // touched; the copies on `to` stay for the next move, which verifies them.
            return Err(lost);
        }
        if !matches!(switched, Ok(true)) {
            // Whether the switch took is read back from the catalog, not guessed from the
            // error: only a tenant still placed elsewhere has its copies removed.
            match directory.placement(&tenant).await {
                Ok(Some(now)) if now == to => {
                    // It took (the error came after): carry on with the clean-up.
                    if let Err(error) = router.assign(&tenant, to.clone()) {
                        tracing::warn!(target: "tenancy::move", %error, "router not updated");
                    }
                }
                Ok(placed) => {
                    if let Err(undo) = delete_rows(&to_conn, to_session, &steps, &tenant).await {
                        tracing::error!(
                            target: "tenancy::move", tenant = %tenant, %to, error = %undo,
                            "the copies of an abandoned move were not removed; the next \
                             move of the tenant clears them"
                        );
                    }
                    return Err(match switched {
                        Err(error) => error,
                        Ok(_) => Error::StaleDirectory {
                            tenant: tenant.to_string(),
                            catalog: shard_name(placed),
                            cached: from.to_string(),
                        },
                    });
                }
                // Unknown: the copies stay (the next move clears them) and the error says
                // what failed.
                Err(read) => return Err(switched.err().unwrap_or(read)),
            }
        }
        let sides = Sides {
            from: (&from_conn, from_session),
            to: (&to_conn, to_session),
        };
        let removed = remove_moved(&sides, &steps, &tenant, &copied, schema.as_ref())
            .await
            .map_err(|error| match error {
                Removal::Late {
                    table,
                    copied,
                    found,
                } => Error::MoveLateWrites {
                    tenant: tenant.to_string(),
                    from: from.to_string(),
                    to: to.to_string(),
                    table,
                    copied,
                    found,
                },
                Removal::Failed(source) => Error::MoveUnfinished {
                    tenant: tenant.to_string(),
                    from: from.to_string(),
                    to: to.to_string(),
                    source: Box::new(source),
                },
            })?;
        drop(fence);
        tracing::info!(target: "tenancy::move", tenant = %tenant, %from, %to, "tenant moved");
        Ok(MoveReport {
            from,
            to,
            copied,
            removed,
        })
    }
}

/// A shard's name for an error, `none` for no shard.
fn shard_name(shard: Option<ShardId>) -> String {
    shard.map_or_else(|| "none".to_owned(), |shard| shard.to_string())
}

/// A tenant's schema, for a move under schema per tenant: its name, how to make it on a
/// shard that lacks it (the application's migrator), and the migrations table in it.
pub(super) struct SchemaOf {
    pub(super) name: Identifier,
    make: MakeSchema,
    pub(super) version_table: Option<Identifier>,
}

/// Creates a tenant schema and runs the application's migrations in it.
type MakeSchema = for<'t> fn(&'t DatabaseTransaction, &'t Identifier) -> BoxFuture<'t, Result<()>>;
