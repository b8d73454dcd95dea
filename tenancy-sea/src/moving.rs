//! Moving a tenant between the shards of a directory-routed topology: its rows copied to
//! the new shard, its placement switched in the catalog and the router, its old rows
//! removed, with the tenant fenced meanwhile.

use crate::catalog::directory::DirectoryCatalog;
use crate::entity::{ScopedEntity, TenantKey, TenantScoped};
use crate::error::{Error, Result};
use crate::isolation::Isolation;
use crate::scope;
use crate::scope::{Session, Tag, Tagged};
use crate::tenancy::Tenancy;
use futures_util::TryStreamExt;
use futures_util::future::BoxFuture;
use sea_orm::QueryTrait;
use sea_orm::sea_query::{Alias, Expr, ExprTrait, Func, SimpleExpr};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseConnection, DatabaseTransaction,
    DbBackend, EntityTrait, IdenStatic, IntoActiveModel, Iterable, ModelTrait, PaginatorTrait,
    PrimaryKeyToColumn, PrimaryKeyTrait, QueryFilter, QuerySelect, Statement, TransactionTrait,
};
use sea_orm_migration::MigratorTrait;
use std::marker::PhantomData;
use tenancy_core::{DirectoryRouter, Identifier, ShardId, ShardRouter};

/// Bind parameters per copying statement, under every backend's limit (SQLite's is the
/// lowest, 32,766).
const PARAMETERS_PER_STATEMENT: usize = 30_000;

/// One unit of a move on one shard: a transaction whose first statement is the tenant's
/// set-up under the tenancy's isolation (its setting, its schema), and the tag the unit's
/// statements carry (a tenant schema's shape). Under row level it is a plain transaction.
pub(crate) struct Unit {
    txn: DatabaseTransaction,
    tag: Tag,
}

impl Unit {
    /// Begins a unit on `conn`, with `session` run first.
    async fn begin(conn: &DatabaseConnection, session: Option<&Session>) -> Result<Unit> {
        let txn = conn.begin().await?;
        let tag = match session {
            Some(session) => session.apply(&txn, conn).await?,
            None => Tag::default(),
        };
        Ok(Unit { txn, tag })
    }

    /// The unit's connection: its statements carry its tag.
    fn conn(&self) -> Tagged<'_, DatabaseTransaction> {
        Tagged {
            inner: &self.txn,
            tag: &self.tag,
        }
    }

    async fn commit(self) -> Result<()> {
        Ok(self.txn.commit().await?)
    }

    async fn rollback(self) {
        let _ = self.txn.rollback().await;
    }
}

/// Runs `work` in a unit on `conn` that commits after it: a read of the tenant's rows as
/// they are now (each such read sees what committed before it, on every backend).
async fn read<R>(
    conn: &DatabaseConnection,
    session: Option<&Session>,
    work: impl AsyncFnOnce(&Unit) -> Result<R>,
) -> Result<R> {
    let unit = Unit::begin(conn, session).await?;
    let out = work(&unit).await?;
    unit.commit().await?;
    Ok(out)
}

/// One entity's part of a move, with its type erased so that one move spans many.
trait MoveStep<T>: Send + Sync {
    fn table(&self) -> &'static str;

    /// Copies the tenant's rows from `from` into `to`, returning how many.
    fn copy<'a>(
        &'a self,
        from: &'a Unit,
        to: &'a Unit,
        tenant: &'a T,
    ) -> BoxFuture<'a, Result<u64>>;

    /// Counts the tenant's rows in `unit`.
    fn count<'a>(&'a self, unit: &'a Unit, tenant: &'a T) -> BoxFuture<'a, Result<u64>>;

    /// Deletes the tenant's rows in `unit`, returning how many.
    fn delete<'a>(&'a self, unit: &'a Unit, tenant: &'a T) -> BoxFuture<'a, Result<u64>>;

    /// Deletes in `other` each of the tenant's rows that `home` holds too, with the same
    /// primary key and the same value in every column; returns how many were removed and
    /// how many kept (rows `home` does not hold, or holds otherwise).
    fn remove_verified<'a>(
        &'a self,
        home: &'a Unit,
        other: &'a Unit,
        tenant: &'a T,
    ) -> BoxFuture<'a, Result<(u64, u64)>>;

    /// On PostgreSQL, moves the sequence of an auto-increment key past the copied ids, so
    /// the shard's next insert does not collide with them (MySQL and SQLite do this on
    /// their own).
    fn advance_sequence<'a>(&'a self, unit: &'a Unit) -> BoxFuture<'a, Result<()>>;
}

struct EntityStep<E>(PhantomData<fn() -> E>);

impl<T, E> MoveStep<T> for EntityStep<E>
where
    T: TenantKey,
    E: TenantScoped<TenantId = T> + ScopedEntity<T>,
    E::Model: IntoActiveModel<E::ActiveModel> + Sync,
    E::ActiveModel: ActiveModelTrait<Entity = E> + Send,
{
    fn table(&self) -> &'static str {
        E::default().table_name()
    }

    fn copy<'a>(
        &'a self,
        from: &'a Unit,
        to: &'a Unit,
        tenant: &'a T,
    ) -> BoxFuture<'a, Result<u64>> {
        Box::pin(async move {
            let per_statement =
                (PARAMETERS_PER_STATEMENT / E::Column::iter().count().max(1)).max(1);
            let backend = from.txn.get_database_backend();
            // Streamed: a stream takes a statement, so it carries the unit's tag itself.
            let statement = E::find()
                .filter(scope::equals(
                    E::tenant_column(),
                    &tenant.clone().into(),
                    backend,
                ))
                .build(backend);
            let mut rows = E::find()
                .from_raw_sql(from.tag.apply(statement))
                .stream(&from.txn)
                .await?;
            let to = &to.conn();
            let mut batch = Vec::with_capacity(per_statement);
            let mut copied = 0;
            while let Some(model) = rows.try_next().await? {
                batch.push(model.into_active_model());
                if batch.len() == per_statement {
                    copied += insert_batch::<E>(&mut batch, to).await?;
                }
            }
            copied += insert_batch::<E>(&mut batch, to).await?;
            Ok(copied)
        })
    }

    fn count<'a>(&'a self, unit: &'a Unit, tenant: &'a T) -> BoxFuture<'a, Result<u64>> {
        Box::pin(async move {
            let conn = &unit.conn();
            Ok(E::find()
                .filter(scope::equals(
                    E::tenant_column(),
                    &tenant.clone().into(),
                    conn.get_database_backend(),
                ))
                .count(conn)
                .await?)
        })
    }

    fn delete<'a>(&'a self, unit: &'a Unit, tenant: &'a T) -> BoxFuture<'a, Result<u64>> {
        Box::pin(async move {
            let txn = &unit.conn();
            Ok(E::delete_many()
                .filter(scope::equals(
                    E::tenant_column(),
                    &tenant.clone().into(),
                    txn.get_database_backend(),
                ))
                .exec(txn)
                .await?
                .rows_affected)
        })
    }

    fn remove_verified<'a>(
        &'a self,
        home: &'a Unit,
        other: &'a Unit,
        tenant: &'a T,
    ) -> BoxFuture<'a, Result<(u64, u64)>> {
        Box::pin(async move {
            let (home, other) = (&home.conn(), &other.conn());
            let value: sea_orm::Value = tenant.clone().into();
            let rows = E::find()
                .filter(scope::equals(
                    E::tenant_column(),
                    &value,
                    other.get_database_backend(),
                ))
                .all(other)
                .await?;
            let (mut removed, mut kept) = (0, 0);
            for row in rows {
                let by_key = || {
                    E::PrimaryKey::iter().fold(sea_orm::Condition::all(), |condition, key| {
                        let column = key.into_column();
                        condition.add(column.into_expr().eq(row.get(column)))
                    })
                };
                let held = E::find()
                    .filter(scope::equals(
                        E::tenant_column(),
                        &value,
                        home.get_database_backend(),
                    ))
                    .filter(by_key())
                    .one(home)
                    .await?;
                let same = held.is_some_and(|held| {
                    E::Column::iter().all(|column| held.get(column) == row.get(column))
                });
                if !same {
                    kept += 1;
                    continue;
                }
                removed += E::delete_many()
                    .filter(scope::equals(
                        E::tenant_column(),
                        &value,
                        other.get_database_backend(),
                    ))
                    .filter(by_key())
                    .exec(other)
                    .await?
                    .rows_affected;
            }
            Ok((removed, kept))
        })
    }

    fn advance_sequence<'a>(&'a self, unit: &'a Unit) -> BoxFuture<'a, Result<()>> {
        let key = {
            let mut keys = E::PrimaryKey::iter();
            match (keys.next(), keys.next()) {
                (Some(key), None) => Some(key),
                _ => None,
            }
        };
        Box::pin(async move {
            let Some(key) = key else {
                return Ok(());
            };
            let txn = &unit.conn();
            if txn.get_database_backend() != DbBackend::Postgres
                || !<E::PrimaryKey as PrimaryKeyTrait>::auto_increment()
            {
                return Ok(());
            }
            let column = key.into_column();
            let max: Option<i64> = E::find()
                .select_only()
                .column_as(
                    SimpleExpr::from(Func::cast_as(Expr::col(column).max(), Alias::new("BIGINT"))),
                    "max",
                )
                .into_tuple()
                .one(txn)
                .await?
                .flatten();
            let Some(max) = max else {
                return Ok(());
            };
            // The table's name reaches the server as a bound value, quoted as an
            // identifier for `pg_get_serial_sequence`; a key without a sequence gives
            // NULL, which leaves everything as it was.
            let entity = E::default();
            let quote = |name: &str| format!("\"{}\"", name.replace('"', "\"\""));
            let table = match entity.schema_name() {
                Some(schema) => format!("{}.{}", quote(schema), quote(entity.table_name())),
                None => quote(entity.table_name()),
            };
            txn.query_one_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "SELECT setval(pg_get_serial_sequence($1, $2), \
                 GREATEST($3, nextval(pg_get_serial_sequence($1, $2))))",
                [table.into(), column.as_str().into(), max.into()],
            ))
            .await?;
            Ok(())
        })
    }
}

/// Inserts and empties `batch`, returning how many rows went in.
async fn insert_batch<E: EntityTrait>(
    batch: &mut Vec<E::ActiveModel>,
    to: &Tagged<'_, DatabaseTransaction>,
) -> Result<u64>
where
    E::ActiveModel: ActiveModelTrait<Entity = E> + Send,
{
    if batch.is_empty() {
        return Ok(0);
    }
    let rows = std::mem::take(batch);
    Ok(E::insert_many(rows).exec_without_returning(to).await?)
}

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
pub struct TenantMove<'a, T: TenantKey> {
    tenancy: &'a Tenancy<T>,
    tenant: T,
    to: ShardId,
    steps: Vec<Box<dyn MoveStep<T> + 'a>>,
    /// How the tenant's schema is made on the new shard (schema per tenant).
    make_schema: Option<MakeSchema>,
}

impl<T: TenantKey> std::fmt::Debug for TenantMove<'_, T> {
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

impl<T: TenantKey> Tenancy<T> {
    /// Moves `tenant` to the shard `to` of a topology routed by a
    /// [`DirectoryRouter`]: the tenant's rows of each entity named with
    /// [`TenantMove::entity`] are copied to `to` in one transaction, its placement is
    /// switched in the catalog and then the router, and its rows are removed from the
    /// shard it left in one transaction.
    ///
    /// ```
    /// # use sea_orm::entity::prelude::*;
    /// # use tenancy_sea::prelude::*;
    /// # use tenancy_sea::{DirectoryCatalog, DirectoryRouter};
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
    /// # async fn demo(
    /// #     tenancy: Tenancy<i64>,
    /// #     directory: DirectoryCatalog<i64>,
    /// #     router: &DirectoryRouter<i64>,
    /// # ) -> tenancy_sea::Result<()> {
    /// let report = tenancy
    ///     .move_tenant(42, "s3")
    ///     .entity::<customer::Entity>() // parents first: they are copied first
    ///     .entity::<order::Entity>() //    and removed last
    ///     .run(&directory, router)
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
    /// run) and a lease ([`DirectoryCatalog::with_move_lease`], 60 s by default), renewed
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
    Box::pin(crate::fleet::create_schema::<M>(txn, schema))
}

impl<'a, T: TenantKey> TenantMove<'a, T> {
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

    /// Runs the move, with `directory` and `router` the catalog directory and the router
    /// of this tenancy's topology.
    pub async fn run(
        self,
        directory: &DirectoryCatalog<T>,
        router: &DirectoryRouter<T>,
    ) -> Result<MoveReport> {
        self.tenant.validate()?;
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
            .hold(&tenant, &claim, self.claimed(directory, router, &claim))
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

    /// The move, once claimed.
    async fn claimed(
        self,
        directory: &DirectoryCatalog<T>,
        router: &DirectoryRouter<T>,
        claim: &crate::catalog::Claim,
    ) -> Result<MoveReport> {
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
        let (routed, from_conn) = topology.shard_of(&tenant)?;
        if routed != from {
            return Err(Error::Config(format!(
                "the router given places tenant {tenant} on {from}, the topology's on \
                 {routed}: pass the topology's own directory router"
            )));
        }
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
                if !schema_exists(&txn, &schema.name).await? {
                    (schema.make)(&txn, &schema.name).await?;
                }
                let tag = match to_session {
                    Some(session) => session.apply(&txn, &to_conn).await?,
                    None => Tag::default(),
                };
                Unit { txn, tag }
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

        let switched = directory.switch(router, &tenant, &from, &to, claim).await;
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

/// Why the moved rows were not removed from the old shard.
enum Removal {
    /// A table held other rows of the tenant than those copied.
    Late {
        table: &'static str,
        copied: u64,
        found: u64,
    },
    Failed(Error),
}

impl From<Error> for Removal {
    fn from(error: Error) -> Self {
        Removal::Failed(error)
    }
}

impl From<sea_orm::DbErr> for Removal {
    fn from(error: sea_orm::DbErr) -> Self {
        Removal::Failed(error.into())
    }
}

/// The two shards of a move: each one's pool and the tenant's set-up there.
struct Sides<'a> {
    from: (&'a DatabaseConnection, Option<&'a Session>),
    to: (&'a DatabaseConnection, Option<&'a Session>),
}

/// Deletes the moved rows from the old shard in one transaction, children first, only if
/// each table holds exactly the rows copied and `to` holds each of them identically: a
/// row written or changed there during the move keeps every row in place. Under schema
/// per tenant the old schema goes too, in the same transaction, when nothing is left in
/// any of its tables.
async fn remove_moved<T: TenantKey>(
    sides: &Sides<'_>,
    steps: &[Box<dyn MoveStep<T> + '_>],
    tenant: &T,
    copied: &[(&'static str, u64)],
    schema: Option<&SchemaOf>,
) -> std::result::Result<u64, Removal> {
    let unit = Unit::begin(sides.from.0, sides.from.1).await?;
    let to = Unit::begin(sides.to.0, sides.to.1).await?;
    let mut removed = 0;
    for (step, (table, rows)) in steps.iter().zip(copied).rev() {
        // By content, not by count: an update, or an insert and a delete that cancel out,
        // leaves a row `to` does not hold identically, which stops the clean-up.
        let (gone, kept) = step.remove_verified(&to, &unit, tenant).await?;
        if kept > 0 || gone != *rows {
            unit.rollback().await;
            return Err(Removal::Late {
                table,
                copied: *rows,
                found: gone + kept,
            });
        }
        removed += gone;
    }
    to.commit().await?;
    if let Some(schema) = schema {
        drop_if_empty(&unit.txn, &schema.name, schema.version_table.as_ref()).await?;
    }
    unit.commit().await?;
    Ok(removed)
}

/// Deletes the tenant's rows of every step on `conn` in one transaction, children first.
async fn delete_rows<T: TenantKey>(
    conn: &DatabaseConnection,
    session: Option<&Session>,
    steps: &[Box<dyn MoveStep<T> + '_>],
    tenant: &T,
) -> Result<u64> {
    let unit = Unit::begin(conn, session).await?;
    let mut removed = 0;
    for step in steps.iter().rev() {
        removed += step.delete(&unit, tenant).await?;
    }
    unit.commit().await?;
    Ok(removed)
}

/// A tenant's schema, for a move under schema per tenant: its name, how to make it on a
/// shard that lacks it (the application's migrator), and the migrations table in it.
struct SchemaOf {
    name: Identifier,
    make: MakeSchema,
    version_table: Option<Identifier>,
}

/// Creates a tenant schema and runs the application's migrations in it.
type MakeSchema = for<'t> fn(&'t DatabaseTransaction, &'t Identifier) -> BoxFuture<'t, Result<()>>;

/// Whether `schema` exists, asked in `txn`.
async fn schema_exists(txn: &DatabaseTransaction, schema: &Identifier) -> Result<bool> {
    let row = txn
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT to_regnamespace($1) IS NOT NULL AS present",
            [schema.as_str().into()],
        ))
        .await?;
    Ok(match row {
        Some(row) => row.try_get::<bool>("", "present")?,
        None => false,
    })
}

/// Drops `schema` in `txn` if none of its tables holds a row (the migrations table
/// aside): its tables locked first, so no write can land between the check and the drop.
/// A table the move did not name that still holds rows keeps the schema, and says so.
async fn drop_if_empty(
    txn: &DatabaseTransaction,
    schema: &Identifier,
    version_table: Option<&Identifier>,
) -> Result<()> {
    let tables = txn
        .query_all_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT tablename::text AS name FROM pg_tables WHERE schemaname = $1 ORDER BY 1",
            [schema.as_str().into()],
        ))
        .await?;
    let mut names = Vec::with_capacity(tables.len());
    for row in tables {
        // Names from the catalog are quoted as identifiers, never trusted as SQL.
        let name: String = row.try_get("", "name")?;
        if version_table.is_some_and(|v| v.as_str() == name) {
            continue;
        }
        names.push(format!(
            "{}.\"{}\"",
            schema.quoted(),
            name.replace('"', "\"\"")
        ));
    }
    if !names.is_empty() {
        txn.execute_unprepared(&format!(
            "LOCK TABLE {} IN ACCESS EXCLUSIVE MODE",
            names.join(", ")
        ))
        .await?;
        for table in &names {
            let row = txn
                .query_one_raw(Statement::from_string(
                    DbBackend::Postgres,
                    format!("SELECT EXISTS (SELECT 1 FROM {table}) AS held"),
                ))
                .await?;
            if let Some(row) = row
                && row.try_get::<bool>("", "held")?
            {
                tracing::warn!(
                    target: "tenancy::move", schema = %schema, %table,
                    "the old tenant schema still holds rows of a table the move did not \
                     name: it is kept"
                );
                return Ok(());
            }
        }
    }
    txn.execute_unprepared(&format!("DROP SCHEMA {} CASCADE", schema.quoted()))
        .await?;
    Ok(())
}

/// What [`Tenancy::remove_leftovers`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeftoverReport {
    /// The shard the catalog places the tenant on, whose rows are the reference.
    pub home: ShardId,
    /// Rows removed from other shards, per shard and table: each held on `home` too, with
    /// the same primary key and the same values.
    pub removed: Vec<(ShardId, &'static str, u64)>,
    /// Rows kept on other shards, per shard and table: `home` does not hold them, or
    /// holds them with other values (a write that reached the old shard after a move, for
    /// one). Reconcile them by hand; nothing of them was changed.
    pub kept: Vec<(ShardId, &'static str, u64)>,
}

/// The removal of a tenant's leftover rows from the shards it does not live on, built by
/// [`Tenancy::remove_leftovers`].
#[must_use = "a removal does nothing until it is run"]
pub struct LeftoverRemoval<'a, T: TenantKey> {
    tenancy: &'a Tenancy<T>,
    tenant: T,
    steps: Vec<Box<dyn MoveStep<T> + 'a>>,
}

impl<T: TenantKey> Tenancy<T> {
    /// Removes `tenant`'s rows from every shard the catalog does not place it on, but only
    /// rows its home shard holds too, identically (same primary key, same values): copies
    /// that a move left behind. Anything else stays and is counted in
    /// [`LeftoverReport::kept`]: a row that exists only on the old shard may be the only
    /// copy of a write, and is never deleted by the library. Name the tenant's entities
    /// as for a move; each shard is cleaned in one transaction, children first. The
    /// tenant's move claim is held meanwhile, so no move of it runs at the same time.
    pub fn remove_leftovers(&self, tenant: impl Into<T>) -> LeftoverRemoval<'_, T> {
        LeftoverRemoval {
            tenancy: self,
            tenant: tenant.into(),
            steps: Vec::new(),
        }
    }
}

impl<'a, T: TenantKey> LeftoverRemoval<'a, T> {
    /// Adds an entity whose leftover rows of the tenant are removed (parents first).
    pub fn entity<E>(mut self) -> Self
    where
        E: TenantScoped<TenantId = T> + ScopedEntity<T>,
        E::Model: IntoActiveModel<E::ActiveModel> + Sync,
        E::ActiveModel: ActiveModelTrait<Entity = E> + Send,
    {
        self.steps.push(Box::new(EntityStep::<E>(PhantomData)));
        self
    }

    /// Runs the removal against `directory`, the catalog directory of this tenancy's
    /// topology.
    pub async fn run(self, directory: &DirectoryCatalog<T>) -> Result<LeftoverReport> {
        self.tenant.validate()?;
        if self.steps.is_empty() {
            return Err(Error::Config(
                "a removal names the tenant's entities: `.entity::<E>()` for each, parents first"
                    .to_owned(),
            ));
        }
        let home =
            directory
                .placement(&self.tenant)
                .await?
                .ok_or_else(|| Error::UnknownTenant {
                    tenant: self.tenant.to_string(),
                })?;
        let claim = directory.claim_move(&self.tenant, &home).await?;
        // Read again under the claim: a move may have switched the tenant meanwhile.
        let outcome = match directory.placement(&self.tenant).await {
            Ok(Some(now)) if now == home => {
                directory
                    .hold(&self.tenant, &claim, self.claimed(home))
                    .await
            }
            Ok(_) => Err(Error::TenantMoving {
                tenant: self.tenant.to_string(),
            }),
            Err(error) => Err(error),
        };
        if let Err(error) = directory.release_claim(&self.tenant, &claim).await {
            tracing::error!(
                target: "tenancy::move", tenant = %self.tenant, %error,
                "the claim of a leftover removal was not cleared: moves of the tenant are \
                 refused until its lease ends"
            );
        }
        outcome
    }

    async fn claimed(&self, home: ShardId) -> Result<LeftoverReport> {
        let tenancy = self.tenancy;
        let topology = tenancy.topology()?;
        let home_conn = topology.connection(&home)?;
        let home_session = tenancy.session_of(&self.tenant, home_conn.get_database_backend())?;
        let mut report = LeftoverReport {
            home: home.clone(),
            removed: Vec::new(),
            kept: Vec::new(),
        };
        for (shard, conn) in topology.shards() {
            if shard == home {
                continue;
            }
            let on_shard = |error| match error {
                Error::Db(source) => Error::Shard {
                    shard: shard.to_string(),
                    source,
                },
                other => other,
            };
            let session = tenancy.session_of(&self.tenant, conn.get_database_backend())?;
            let unit = match Unit::begin(&conn, session.as_ref()).await {
                Ok(unit) => unit,
                // Under schema per tenant, a shard without the tenant's schema holds
                // nothing of it.
                Err(Error::UnknownTenant { .. })
                    if session.as_ref().is_some_and(|s| s.is_schema()) =>
                {
                    continue;
                }
                Err(error) => return Err(on_shard(error)),
            };
            for step in self.steps.iter().rev() {
                let (removed, kept) = read(&home_conn, home_session.as_ref(), async |home| {
                    step.remove_verified(home, &unit, &self.tenant).await
                })
                .await
                .map_err(on_shard)?;
                if removed > 0 {
                    report.removed.push((shard.clone(), step.table(), removed));
                }
                if kept > 0 {
                    report.kept.push((shard.clone(), step.table(), kept));
                }
            }
            unit.commit().await.map_err(on_shard)?;
        }
        tracing::info!(
            target: "tenancy::move", tenant = %self.tenant, %home,
            removed = ?report.removed, kept = ?report.kept,
            "leftovers removed"
        );
        Ok(report)
    }
}
