//! [`TenantDb`]: the scoped handle of one tenant, and its transaction [`TenantTxn`].

use crate::entity::{KeySharded, ScopedEntity, TenantKey, TenantScoped};
use crate::error::{Error, Result};
use crate::query::{
    GlobalJoins, ScopedDeleteMany, ScopedSelect, ScopedSubquery, ScopedUpdateMany, ScopedUpsert,
};
use crate::scope;
use crate::scope::audit::Refused;
use crate::scope::{HandleConnection, RawSql, SESSION_RESET, Session, Tag};
use crate::shard::{AcrossShards, ShardedSelect, Target, Topology};
use sea_orm::sea_query::{Condition, SchemaName, TableName, TableRef};
use sea_orm::{
    ActiveModelBehavior, ActiveModelTrait, ActiveValue, ColumnTrait, ConnectionTrait,
    DatabaseConnection, DatabaseTransaction, DbBackend, DbErr, DeleteResult, EntityName,
    EntityTrait, ExecResult, IdenStatic, IntoActiveModel, Iterable, LoaderTrait, ModelTrait,
    PrimaryKeyToColumn, PrimaryKeyTrait, QueryFilter, QueryResult, Related, Select, Statement,
    Value,
};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use tenancy_core::{KeyType, ShardId};
use tracing::Instrument;

/// What [`TenantDb::query_all_raw`] and [`TenantDb::execute_raw`] take: a SeaORM
/// [`Statement`], SQL text, or SQL text with its bound values, built for the handle's
/// backend.
///
/// ```
/// # async fn demo(db: tenancy_sea::TenantDb<i64>) -> tenancy_sea::Result<()> {
/// db.query_all_raw("SELECT 1").await?;
/// db.query_all_raw(("SELECT * FROM orders WHERE total_cents > $1", [1000.into()])).await?;
/// # Ok(()) }
/// ```
pub trait IntoRawStatement: Send {
    /// The statement, for `backend`.
    fn into_statement(self, backend: DbBackend) -> Statement;
}

impl IntoRawStatement for Statement {
    fn into_statement(self, _: DbBackend) -> Statement {
        self
    }
}

impl IntoRawStatement for &str {
    fn into_statement(self, backend: DbBackend) -> Statement {
        Statement::from_string(backend, self)
    }
}

impl IntoRawStatement for String {
    fn into_statement(self, backend: DbBackend) -> Statement {
        Statement::from_string(backend, self)
    }
}

impl<S, I> IntoRawStatement for (S, I)
where
    S: Into<String> + Send,
    I: IntoIterator<Item = Value> + Send,
{
    fn into_statement(self, backend: DbBackend) -> Statement {
        Statement::from_sql_and_values(backend, self.0, self.1)
    }
}

/// Whether the session's role can reach past its database: a superuser, or a member of
/// one or of the roles that read and write server files or run server programs.
const UNCONFINED_ROLE: &str = "SELECT EXISTS (SELECT 1 FROM pg_roles r WHERE (r.rolsuper \
     OR r.rolname IN ('pg_read_server_files', 'pg_write_server_files', \
     'pg_execute_server_program')) AND pg_has_role(session_user, r.oid, 'MEMBER')) \
     AS unconfined";

/// The handle of one tenant: every statement made through it is scoped to that tenant.
///
/// It reads like SeaORM without the connection argument: `db.find::<orders::Entity>()`
/// instead of `orders::Entity::find()`, `.all()` instead of `.all(&conn)`.
///
/// * reads of a [`TenantScoped`] entity carry `WHERE <tenant column> = $n`, with the id bound;
/// * inserts stamp the tenant; a row carrying another tenant is [`Error::TenantMismatch`];
/// * updates and deletes match only this tenant's rows and never change the tenant column;
/// * joins and loaders filter the related side too;
/// * [`GlobalEntity`](crate::GlobalEntity) tables are read unfiltered and cannot be written.
///
/// The handle does not implement SeaORM's `ConnectionTrait`, so a query built with plain
/// SeaORM cannot be run through it by mistake; that is a compile error.
///
/// `C` is the connection the handle runs on: a pool for [`TenantDb`], a transaction for
/// [`TenantTxn`]. Both have the same methods.
#[derive(Clone, Debug)]
pub struct TenantDb<T: TenantKey, C = DatabaseConnection> {
    conn: C,
    tenant: T,
    /// The tenant id as a bindable value, made once.
    value: Value,
    /// The set-up each unit of work runs first (RLS setting, `search_path`); `None` for
    /// row level, and inside a transaction that already ran it.
    session: Option<Arc<Session>>,
    /// Whether raw SQL is confined to this tenant under the strategy.
    raw_sql: RawSql,
    /// The shard the tenant lives on, when sharded.
    shard: Option<ShardId>,
    /// The shards, when sharded: rows of a `#[shard_key]` entity are routed by their key.
    topology: Option<Arc<Topology>>,
    /// The tag statements carry inside a transaction whose set-up read one (the schema's
    /// shape, schema per tenant).
    tag: Tag,
}

/// A handle, or the same tenant's handle on the shard a key routed to.
pub(crate) enum Routed<'a, T: TenantKey, C> {
    Here(&'a TenantDb<T, C>),
    There(TenantDb<T, C>),
}

impl<T: TenantKey, C> std::ops::Deref for Routed<'_, T, C> {
    type Target = TenantDb<T, C>;

    fn deref(&self) -> &TenantDb<T, C> {
        match self {
            Routed::Here(handle) => handle,
            Routed::There(handle) => handle,
        }
    }
}

/// A tenant handle inside a database transaction: the same API as [`TenantDb`], plus
/// [`commit`](TenantDb::commit) and [`rollback`](TenantDb::rollback). Dropping it without
/// committing rolls back.
pub type TenantTxn<T> = TenantDb<T, DatabaseTransaction>;

impl<T: TenantKey> TenantDb<T> {
    /// A handle over `conn`; the id must have been validated.
    pub(crate) fn new(
        conn: DatabaseConnection,
        tenant: T,
        session: Option<Session>,
        raw_sql: RawSql,
    ) -> Self {
        let value = tenant.clone().into();
        TenantDb {
            conn,
            tenant,
            value,
            session: session.map(Arc::new),
            raw_sql,
            shard: None,
            topology: None,
            tag: Tag::default(),
        }
    }

    pub(crate) fn on_shard(mut self, shard: ShardId, topology: Arc<Topology>) -> Self {
        self.shard = Some(shard);
        self.topology = Some(topology);
        self
    }

    /// Reads this tenant's rows on every shard (explicit scatter-gather), for entities
    /// sharded by a `#[shard_key]`, whose rows are spread over the shards. An entity whose
    /// shard key is the tenant is read on this tenant's shard only. Without sharding, the
    /// one database is the one "shard".
    ///
    /// ```
    /// # use tenancy_sea::prelude::*;
    /// # mod event {
    /// #     use sea_orm::entity::prelude::*;
    /// #     use tenancy_sea::prelude::*;
    /// #     #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, TenantScoped)]
    /// #     #[sea_orm(table_name = "event")]
    /// #     pub struct Model {
    /// #         #[sea_orm(primary_key)]
    /// #         pub id: i64,
    /// #         #[tenant_id]
    /// #         pub tenant_id: i64,
    /// #         #[shard_key]
    /// #         pub device_id: i64,
    /// #     }
    /// #     #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    /// #     pub enum Relation {}
    /// #     impl ActiveModelBehavior for ActiveModel {}
    /// # }
    /// # async fn demo(db: TenantDb<i64>) -> tenancy_sea::Result<()> {
    /// let latest = db
    ///     .across_shards()
    ///     .find::<event::Entity>()
    ///     .order_by_desc(event::Column::Id)
    ///     .limit(10)
    ///     .all()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn across_shards(&self) -> TenantAcrossShards<'_, T> {
        TenantAcrossShards { handle: self }
    }

    /// The one target of a handle that is not sharded: its own connection and set-up.
    fn own_target(&self, condition: Option<Condition>) -> Target {
        Target {
            shard: self
                .shard
                .clone()
                .unwrap_or_else(|| ShardId::new(UNSHARDED)),
            conn: self.conn.clone(),
            session: self.session.clone(),
            condition,
            tenant: Some(self.tenant.to_string()),
        }
    }

    /// Reads the rows of `E` whose shard keys are among `keys`, on the shards those keys
    /// route to (each shard asked only for its own keys), merged as a scatter-gather. An
    /// empty list reads nothing.
    pub fn by_keys<E>(
        &self,
        keys: impl IntoIterator<Item = impl Into<E::Key>>,
    ) -> Result<ShardedSelect<E>>
    where
        E: KeySharded<TenantId = T>,
    {
        let column = Self::key_column::<E>()?;
        self.may_spread::<E>()?;
        let keys: Vec<E::Key> = keys.into_iter().map(Into::into).collect();
        let select = E::find();
        // Each shard's query carries the tenant and its own keys, compared as its backend
        // compares exactly.
        let condition = |conn: &DatabaseConnection, values: Vec<Value>| {
            let backend = conn.get_database_backend();
            scope::equals(E::tenant_column(), &self.value, backend)
                .add(scope::is_in(column, values, backend))
        };
        let Some(topology) = &self.topology else {
            let values = keys.into_iter().map(Into::into).collect();
            let target = self.own_target(Some(condition(&self.conn, values)));
            return Ok(AcrossShards::single(target).select(select).scoped());
        };
        let mut groups: Vec<(ShardId, DatabaseConnection, Vec<Value>)> = Vec::new();
        for key in keys {
            let (shard, conn) = topology.shard_of_key_bytes(
                &tenancy_core::TenantId::canonical_bytes(&key),
                &KeyType::of::<E::Key>(),
            )?;
            match groups.iter_mut().find(|(s, _, _)| *s == shard) {
                Some((_, _, values)) => values.push(key.into()),
                None => groups.push((shard, conn, vec![key.into()])),
            }
        }
        let targets = groups
            .into_iter()
            .map(|(shard, conn, values)| Target {
                condition: Some(condition(&conn, values)),
                shard,
                conn,
                session: self.session.clone(),
                tenant: Some(self.tenant.to_string()),
            })
            .collect();
        Ok(AcrossShards::over(targets, topology)
            .select(select)
            .scoped())
    }
}

/// Where a row goes: a shard and its pool, or `None` for the handle's own connection.
type Placed = Option<(ShardId, DatabaseConnection)>;

/// The name of the one "shard" of a handle that is not sharded.
pub(crate) const UNSHARDED: &str = "default";

/// A tenant's reads on every shard, made by [`TenantDb::across_shards`]: still filtered by
/// tenant, but fanned out and merged like [`AcrossShards`].
#[derive(Debug)]
pub struct TenantAcrossShards<'h, T: TenantKey> {
    handle: &'h TenantDb<T>,
}

impl<T: TenantKey> TenantAcrossShards<'_, T> {
    /// This tenant's rows of `E`, on every shard that can hold them.
    pub fn find<E: TenantScoped<TenantId = T>>(&self) -> ShardedSelect<E> {
        let handle = self.handle;
        let mut targets = match &handle.topology {
            Some(topology) if E::shard_key_column().is_some() => {
                if let Err(refused) = handle.may_spread::<E>() {
                    return ShardedSelect::unmade(refused);
                }
                topology.targets(None)
            }
            _ => vec![handle.own_target(None)],
        };
        // Each shard's query carries the tenant condition its own backend compares
        // exactly, after the tenant's set-up (its setting or its schema) on that shard.
        for target in &mut targets {
            let backend = target.conn.get_database_backend();
            target.condition = Some(scope::equals(E::tenant_column(), &handle.value, backend));
            target.tenant = Some(handle.tenant.to_string());
            target.session = handle.session.clone();
        }
        let across = match &handle.topology {
            Some(topology) => AcrossShards::over(targets, topology),
            None => AcrossShards::single(targets.remove(0)),
        };
        across.select(E::find()).scoped()
    }
}

impl<T: TenantKey, C: HandleConnection> TenantDb<T, C> {
    /// The tenant this handle belongs to.
    pub fn tenant_id(&self) -> &T {
        &self.tenant
    }

    /// The handle's own connection. Statements must not run on it directly: they go
    /// through `on_conn!`, which wraps them in a unit of work when the strategy needs a
    /// set-up (row-level security, `search_path`).
    pub(crate) fn unit_connection(&self) -> &C {
        &self.conn
    }

    pub(crate) fn session(&self) -> Option<&Session> {
        self.session.as_deref()
    }

    pub(crate) fn tag(&self) -> &Tag {
        &self.tag
    }

    pub(crate) fn tenant_value(&self) -> &Value {
        &self.value
    }

    /// The span every statement of this handle runs in: it names the tenant, the table
    /// and the operation, so logs say who ran what.
    pub(crate) fn span(&self, op: &'static str, table: &'static str) -> tracing::Span {
        let span = tracing::info_span!(
            "tenancy",
            tenant = %self.tenant,
            table,
            op,
            shard = tracing::field::Empty
        );
        if let Some(shard) = &self.shard {
            span.record("shard", shard.as_str());
        }
        span
    }

    /// The shard this tenant lives on, when the strategy is sharded.
    pub fn shard(&self) -> Option<&ShardId> {
        self.shard.as_ref()
    }

    /// The tenant condition of an entity's reads, or none for a global entity.
    pub(crate) fn scope<E: ScopedEntity<T>>(&self) -> Option<Condition> {
        E::scope_column().map(|col| scope::equals(col, &self.value, self.backend()))
    }

    fn scoped_select<E: ScopedEntity<T>>(&self, select: Select<E>) -> ScopedSelect<'_, T, E, C> {
        let select = match self.scope::<E>() {
            Some(condition) => select.filter(condition),
            None => select,
        };
        ScopedSelect::new(self, select)
    }

    /// Selects rows of `E`: this tenant's rows of a tenant-scoped entity, every row of a
    /// global one. Continue with `.filter(..)`, `.order_by_asc(..)`, `.limit(..)`, then
    /// `.all()`, `.one()`, `.count()`, `.paginate(n)` or `.stream()`.
    pub fn find<E: ScopedEntity<T>>(&self) -> ScopedSelect<'_, T, E, C> {
        self.scoped_select(E::find())
    }

    /// A subquery of this tenant's rows of `E` (every row of a global entity), to add to a
    /// statement of this handle with `filter_in_subquery`, `filter_exists` or
    /// `column_as_subquery`: see [`ScopedSubquery`](crate::ScopedSubquery).
    pub fn subquery<E: ScopedEntity<T>>(&self) -> ScopedSubquery<'_, T, E, C> {
        let select = match self.scope::<E>() {
            Some(condition) => E::find().filter(condition),
            None => E::find(),
        };
        ScopedSubquery::new(self, select)
    }

    /// Selects the row of `E` with this primary key, if it belongs to this tenant.
    pub fn find_by_id<E: ScopedEntity<T>>(
        &self,
        id: impl Into<<E::PrimaryKey as PrimaryKeyTrait>::ValueType>,
    ) -> ScopedSelect<'_, T, E, C> {
        self.scoped_select(E::find_by_id(id))
    }

    /// Selects the rows of `R` related to `model`, this tenant's only.
    ///
    /// The tenant filter applies to `R` whatever `model` is, so a foreign key that points
    /// at another tenant's row finds nothing.
    pub fn find_related<R, M>(&self, model: &M) -> ScopedSelect<'_, T, R, C>
    where
        M: ModelTrait,
        M::Entity: Related<R>,
        R: ScopedEntity<T>,
    {
        let mut select = model.find_related(R::default());
        // Many-to-many: the junction the relation joins is this tenant's rows only.
        let junction = self.junction_scope::<M::Entity, R>();
        if let Ok(Some(condition)) = &junction {
            select = select.filter(condition.clone());
        }
        let select = self.scoped_select(select);
        match junction {
            Err(refused) => select.refuse(refused),
            Ok(_) => select,
        }
    }

    /// The tenant condition of the junction table a many-to-many relation from `E` to `R`
    /// goes through (its `via`), as it is joined: `None` for a direct relation or a global
    /// junction, refused for a junction no derive describes.
    pub(crate) fn junction_scope<E, R>(&self) -> std::result::Result<Option<Condition>, Refused>
    where
        E: Related<R>,
        R: EntityTrait,
    {
        let Some(via) = <E as Related<R>>::via() else {
            return Ok(None);
        };
        let TableRef::Table(TableName(schema, table), _) = &via.to_tbl else {
            return Ok(None);
        };
        let schema = schema.as_ref().map(|SchemaName(_, name)| name.to_string());
        let scope = crate::entity::table_scope(schema.as_deref(), &table.to_string());
        if !scope.known {
            return Err(Refused::UnscopedJunction {
                junction: table.to_string(),
                related: R::default().table_name(),
            });
        }
        let backend = self.backend();
        Ok(scope
            .tenant_columns
            .iter()
            .map(|column| scope::equals_at(&via.to_tbl, column, &self.value, backend))
            .reduce(Condition::add))
    }

    /// Loads, for each of `models`, its related `R` row (a belongs-to or has-one
    /// relation), this tenant's only: SeaORM's `load_one`, in one query.
    pub async fn load_one<R, M>(&self, models: &[M]) -> Result<Vec<Option<R::Model>>>
    where
        M: ModelTrait + Sync,
        M::Entity: Related<R>,
        R: ScopedEntity<T>,
        R::Model: Send + Sync,
    {
        let span = self.span("load_one", R::default().table_name());
        let select = self.related_select::<M::Entity, R>()?;
        async { Ok(on_conn!(self, |conn| models.load_one(select, conn).await?)) }
            .instrument(span)
            .await
    }

    /// Loads, for each of `models`, its related `R` rows (has-many, or many-to-many through
    /// a junction), this tenant's only: SeaORM's `load_many`, in one query.
    pub async fn load_many<R, M>(&self, models: &[M]) -> Result<Vec<Vec<R::Model>>>
    where
        M: ModelTrait + Sync,
        M::Entity: Related<R>,
        R: ScopedEntity<T>,
        R::Model: Send + Sync,
    {
        let span = self.span("load_many", R::default().table_name());
        let select = self.related_select::<M::Entity, R>()?;
        async {
            Ok(on_conn!(self, |conn| models
                .load_many(select, conn)
                .await?))
        }
        .instrument(span)
        .await
    }

    /// The select of `R` a loader runs for rows of `E`: this tenant's rows of `R`, and for
    /// a many-to-many relation this tenant's rows of the junction, which the loader joins.
    fn related_select<E, R>(&self) -> Result<Select<R>>
    where
        E: Related<R>,
        R: ScopedEntity<T>,
    {
        let select = self.find::<R>().into_select()?;
        match self.junction_scope::<E, R>() {
            Ok(Some(condition)) => Ok(select.filter(condition)),
            Ok(None) => Ok(select),
            Err(refused) => Err(refused.into_error()),
        }
    }

    /// `E`'s `#[shard_key]` column.
    fn key_column<E: TenantScoped>() -> Result<E::Column> {
        E::shard_key_column().ok_or_else(|| {
            Error::Config(format!(
                "`{}` has no `#[shard_key]` column",
                E::default().table_name()
            ))
        })
    }

    /// The shard of the row of `E` whose shard key is `value`: `None` when the statement
    /// stays on this handle's connection (no sharding, or the tenant is the key).
    fn shard_for<E>(&self, value: Option<Value>) -> Result<Placed>
    where
        E: TenantScoped<TenantId = T>,
    {
        let Some(column) = E::shard_key_column() else {
            return Ok(None);
        };
        let value = value.ok_or_else(|| Error::ShardKeyMissing {
            table: E::default().table_name(),
            column: column.as_str().to_owned(),
        })?;
        let Some(topology) = &self.topology else {
            return Ok(None);
        };
        self.may_spread::<E>()?;
        let mut bytes = Vec::with_capacity(16);
        E::write_shard_key(value, &mut bytes)?;
        let key_type = E::shard_key_type().ok_or_else(|| {
            Error::Config(format!(
                "`{}` has no `#[shard_key]` type",
                E::default().table_name()
            ))
        })?;
        Ok(Some(topology.shard_of_key_bytes(&bytes, &key_type)?))
    }

    /// Whether rows of `E` may live on shards other than the tenant's own: not under
    /// schema per tenant, where all of a tenant's tables are in its schema on its shard.
    fn may_spread<E: TenantScoped>(&self) -> Result<()> {
        match (&self.topology, &self.session) {
            (Some(_), Some(session)) if session.is_schema() => Err(Error::Config(format!(
                "`{}` is sharded by its `#[shard_key]`, which spreads a tenant's rows over \
                 shards; under schema per tenant a tenant's tables live in its schema on \
                 its own shard: drop the `#[shard_key]` or use row level isolation",
                E::default().table_name()
            ))),
            _ => Ok(()),
        }
    }

    /// This tenant's handle on the shard of the row of `E` whose shard key is `value`.
    /// Inside a transaction, a key on another shard is [`Error::CrossShard`].
    pub(crate) fn route<E>(&self, value: Option<Value>) -> Result<Routed<'_, T, C>>
    where
        E: TenantScoped<TenantId = T>,
    {
        let placed = self.shard_for::<E>(value)?;
        self.bind::<E>(placed)
    }

    /// This tenant's handle on `placed` (a shard and its pool), or this handle itself when
    /// `placed` is `None` or its own shard.
    fn bind<E: EntityTrait>(&self, placed: Placed) -> Result<Routed<'_, T, C>> {
        let Some((shard, pool)) = placed else {
            return Ok(Routed::Here(self));
        };
        if self.shard.as_ref() == Some(&shard) {
            return Ok(Routed::Here(self));
        }
        let conn = C::rebind(&pool).ok_or_else(|| Error::CrossShard {
            table: E::default().table_name(),
            shard: shard.to_string(),
            transaction_shard: self
                .shard
                .as_ref()
                .map_or_else(|| UNSHARDED.to_owned(), ToString::to_string),
        })?;
        Ok(Routed::There(TenantDb {
            conn,
            tenant: self.tenant.clone(),
            value: self.value.clone(),
            session: self.session.clone(),
            raw_sql: self.raw_sql,
            shard: Some(shard),
            topology: self.topology.clone(),
            tag: self.tag.clone(),
        }))
    }

    /// The shard-key value `am` carries, if its entity has a `#[shard_key]` and it is set.
    fn key_of<A>(am: &A) -> Option<Value>
    where
        A: ActiveModelTrait,
        A::Entity: TenantScoped,
    {
        let column = <A::Entity as TenantScoped>::shard_key_column()?;
        match am.get(column) {
            ActiveValue::Set(value) | ActiveValue::Unchanged(value) => Some(value),
            ActiveValue::NotSet => None,
        }
    }

    /// After a save hook ran on this handle's shard: the row's key must still route here
    /// (a hook that changes the key would leave the row on the wrong shard).
    fn check_key_unmoved<A>(&self, am: &A) -> Result<()>
    where
        A: ActiveModelTrait,
        A::Entity: TenantScoped<TenantId = T>,
    {
        let Some(column) = <A::Entity as TenantScoped>::shard_key_column() else {
            return Ok(());
        };
        if self.topology.is_none() {
            return Ok(());
        }
        match self.shard_for::<A::Entity>(Self::key_of(am))? {
            Some((shard, _)) if self.shard.as_ref() != Some(&shard) => Err(Error::ShardKeyWrite {
                table: A::Entity::default().table_name(),
                column: column.as_str().to_owned(),
            }),
            _ => Ok(()),
        }
    }

    /// This tenant's handle on the shard of the row `am`.
    pub(crate) fn route_model<A>(&self, am: &A) -> Result<Routed<'_, T, C>>
    where
        A: ActiveModelTrait,
        A::Entity: TenantScoped<TenantId = T>,
    {
        self.route::<A::Entity>(Self::key_of(am))
    }

    /// The rows of `E` whose `#[shard_key]` is `key`, on the one shard that holds them:
    /// reads, updates and deletes through the returned [`KeyedDb`] carry both the tenant
    /// and the key condition. Inside a transaction, a key on another shard is
    /// [`Error::CrossShard`].
    pub fn by_key<E>(&self, key: impl Into<E::Key>) -> Result<KeyedDb<'_, T, E, C>>
    where
        E: KeySharded<TenantId = T>,
    {
        let key: E::Key = key.into();
        let column = Self::key_column::<E>()?;
        let value: Value = key.into();
        let handle = self.route::<E>(Some(value.clone()))?;
        Ok(KeyedDb {
            handle,
            column,
            key: value,
        })
    }

    /// Checks the tenant column of `am`: unset becomes this tenant, another tenant is an
    /// error.
    pub(crate) fn stamp<A>(&self, mut am: A) -> Result<A>
    where
        A: ActiveModelTrait,
        A::Entity: TenantScoped<TenantId = T>,
    {
        let col = <A::Entity as TenantScoped>::tenant_column();
        match am.get(col) {
            ActiveValue::NotSet => am.try_set(col, self.value.clone())?,
            ActiveValue::Set(found) | ActiveValue::Unchanged(found) => {
                if found != self.value {
                    return Err(self.mismatch::<A::Entity>(found));
                }
            }
        }
        Ok(am)
    }

    pub(crate) fn mismatch<E: EntityTrait>(&self, found: Value) -> Error {
        let found = match T::try_from(found.clone()) {
            Ok(id) => id.to_string(),
            Err(_) => format!("{found:?}"),
        };
        Error::TenantMismatch {
            table: E::default().table_name(),
            expected: self.tenant.to_string(),
            found,
        }
    }

    pub(crate) fn not_found<E: EntityTrait>(&self) -> Error {
        Error::NotFound {
            table: E::default().table_name(),
            tenant: self.tenant.to_string(),
        }
    }

    /// Inserts one row for this tenant and returns it as stored.
    ///
    /// The tenant column is set to this tenant when it is not set; set to another tenant it
    /// is [`Error::TenantMismatch`] and nothing is written. `ActiveModelBehavior` hooks run
    /// as in SeaORM's `ActiveModel::insert`.
    ///
    /// A row of an entity with a `#[shard_key]` goes to the shard of its key; without the
    /// key it is [`Error::ShardKeyMissing`].
    pub async fn insert<A>(&self, am: A) -> Result<<A::Entity as EntityTrait>::Model>
    where
        A: ActiveModelTrait + ActiveModelBehavior + Send,
        A::Entity: TenantScoped<TenantId = T>,
        <A::Entity as EntityTrait>::Model: IntoActiveModel<A>,
    {
        if <A::Entity as TenantScoped>::shard_key_column().is_some() {
            return self.route_model(&am)?.insert_here(am).await;
        }
        self.insert_here(am).await
    }

    async fn insert_here<A>(&self, am: A) -> Result<<A::Entity as EntityTrait>::Model>
    where
        A: ActiveModelTrait + ActiveModelBehavior + Send,
        A::Entity: TenantScoped<TenantId = T>,
        <A::Entity as EntityTrait>::Model: IntoActiveModel<A>,
    {
        let span = self.span("insert", A::Entity::default().table_name());
        async {
            Ok(on_conn!(self, |conn| {
                let am = A::before_save(am, conn, true).await?;
                self.check_key_unmoved(&am)?;
                let am = self.stamp(am)?;
                let model = A::Entity::insert(am).exec_with_returning(conn).await?;
                A::after_save(model, conn, true).await?
            }))
        }
        .instrument(span)
        .await
    }

    /// Inserts many rows for this tenant in one statement; returns how many were inserted.
    ///
    /// Every row is checked before anything is sent: one row of another tenant fails the
    /// whole call and nothing is written.
    ///
    /// Rows of an entity with a `#[shard_key]` are split by shard: one statement per shard,
    /// each in a transaction of its shard, committed once every shard has accepted its rows
    /// (a failure before that writes nothing; transactions do not span shards, so a shard
    /// failing during the final commits is [`Error::PartialCommit`], naming the shards
    /// committed before it).
    pub async fn insert_many<A, I>(&self, models: I) -> Result<u64>
    where
        A: ActiveModelTrait + Send,
        A::Entity: TenantScoped<TenantId = T>,
        I: IntoIterator<Item = A>,
    {
        let models = models
            .into_iter()
            .map(|am| self.stamp(am))
            .collect::<Result<Vec<_>>>()?;
        if models.is_empty() {
            return Ok(0);
        }
        if <A::Entity as TenantScoped>::shard_key_column().is_none() {
            return self.insert_many_here(models).await;
        }
        let mut groups: Vec<(Placed, Vec<A>)> = Vec::new();
        for am in models {
            let placed = self.shard_for::<A::Entity>(Self::key_of(&am))?;
            let shard = placed.as_ref().map(|(shard, _)| shard);
            match groups
                .iter_mut()
                .find(|(group, _)| group.as_ref().map(|(s, _)| s) == shard)
            {
                Some((_, rows)) => rows.push(am),
                None => groups.push((placed, vec![am])),
            }
        }
        // Every shard is reached (or refused) before anything is written.
        let mut routed = Vec::with_capacity(groups.len());
        for (placed, rows) in groups {
            routed.push((self.bind::<A::Entity>(placed)?, rows));
        }
        if routed.len() == 1 {
            let (handle, rows) = routed.remove(0);
            return handle.insert_many_here(rows).await;
        }
        let mut open = Vec::with_capacity(routed.len());
        let mut inserted = 0;
        for (handle, rows) in routed {
            let txn = handle.begin().await?;
            inserted += txn.insert_many_here(rows).await?;
            open.push(txn);
        }
        crate::shard::commit_all(open.into_iter().map(|txn| {
            let shard = txn
                .shard
                .as_ref()
                .map_or_else(|| UNSHARDED.to_owned(), ToString::to_string);
            (shard, txn.conn)
        }))
        .await?;
        Ok(inserted)
    }

    async fn insert_many_here<A>(&self, models: Vec<A>) -> Result<u64>
    where
        A: ActiveModelTrait + Send,
        A::Entity: TenantScoped<TenantId = T>,
    {
        let span = self.span("insert_many", A::Entity::default().table_name());
        async {
            Ok(on_conn!(self, |conn| A::Entity::insert_many(models)
                .exec_without_returning(conn)
                .await?))
        }
        .instrument(span)
        .await
    }

    /// Starts an insert that resolves conflicts (an upsert): see [`ScopedUpsert`].
    pub fn upsert<A>(&self, am: A) -> ScopedUpsert<'_, T, A, C>
    where
        A: ActiveModelTrait + Send,
        A::Entity: TenantScoped<TenantId = T>,
    {
        ScopedUpsert::new(self, am)
    }

    /// The condition matching `am`'s primary key.
    fn primary_key_condition<A: ActiveModelTrait>(am: &A) -> Result<Condition> {
        let mut condition = Condition::all();
        for key in <A::Entity as EntityTrait>::PrimaryKey::iter() {
            let col = key.into_column();
            match am.get(col) {
                ActiveValue::Set(v) | ActiveValue::Unchanged(v) => {
                    condition = condition.add(col.eq(v));
                }
                ActiveValue::NotSet => {
                    return Err(DbErr::PrimaryKeyNotSet { ctx: "tenancy" }.into());
                }
            }
        }
        Ok(condition)
    }

    /// Updates one of this tenant's rows, found by the primary key of `am`, and returns
    /// it as stored.
    ///
    /// The tenant column is never written. A row of another tenant, or none, is
    /// [`Error::NotFound`] with nothing changed; `am` carrying another tenant is
    /// [`Error::TenantMismatch`].
    pub async fn update<A>(&self, am: A) -> Result<<A::Entity as EntityTrait>::Model>
    where
        A: ActiveModelTrait + ActiveModelBehavior + Send,
        A::Entity: TenantScoped<TenantId = T>,
        <A::Entity as EntityTrait>::Model: IntoActiveModel<A>,
    {
        let handle = self.route_model(&am)?;
        let span = handle.span("update", A::Entity::default().table_name());
        async {
            Ok(on_conn!(&*handle, |conn| handle
                .update_on(conn, am)
                .await?))
        }
        .instrument(span)
        .await
    }

    async fn update_on<A, C2>(&self, conn: &C2, am: A) -> Result<<A::Entity as EntityTrait>::Model>
    where
        A: ActiveModelTrait + ActiveModelBehavior + Send,
        A::Entity: TenantScoped<TenantId = T>,
        <A::Entity as EntityTrait>::Model: IntoActiveModel<A>,
        C2: ConnectionTrait,
    {
        let am = A::before_save(am, conn, false).await?;
        self.check_key_unmoved(&am)?;
        let mut am = self.stamp(am)?;
        let tenant_col = <A::Entity as TenantScoped>::tenant_column();
        let is_key = |col| {
            <<A::Entity as EntityTrait>::PrimaryKey as PrimaryKeyToColumn>::from_column(col)
                .is_some()
        };
        if !is_key(tenant_col) {
            // Not a key, so never part of the SET list.
            am.not_set(tenant_col);
        }
        let backend = ConnectionTrait::get_database_backend(conn);
        let mut scope = scope::equals(tenant_col, &self.value, backend);
        if let Some(shard_col) = <A::Entity as TenantScoped>::shard_key_column() {
            // The row is looked for under the key it carries, and the key never changes
            // in place: the row would stay on the shard of its old key.
            if let Some(value) = Self::key_of(&am) {
                scope = scope.add(scope::equals(shard_col, &value, backend));
            }
            if !is_key(shard_col) {
                am.not_set(shard_col);
            }
        }
        let key = Self::primary_key_condition(&am)?;
        let changes = <A::Entity as EntityTrait>::Column::iter()
            .any(|col| !is_key(col) && matches!(am.get(col), ActiveValue::Set(_)));
        let reread = A::Entity::find().filter(key).filter(scope.clone());
        let model = if !changes {
            // SeaORM would re-read by primary key alone; this read is tenant-filtered.
            reread.one(conn).await?
        } else {
            let update = A::Entity::update(am).validate()?.filter(scope);
            if conn.support_returning() {
                match update.exec(conn).await {
                    Ok(model) => Some(model),
                    Err(DbErr::RecordNotUpdated) => None,
                    Err(err) => return Err(err.into()),
                }
            } else {
                match update.exec_without_returning(conn).await {
                    Ok(result) if result.rows_affected > 0 => reread.one(conn).await?,
                    Ok(_) | Err(DbErr::RecordNotUpdated) => None,
                    Err(err) => return Err(err.into()),
                }
            }
        };
        let model = model.ok_or_else(|| self.not_found::<A::Entity>())?;
        Ok(A::after_save(model, conn, false).await?)
    }

    /// Starts an update of many of this tenant's rows: see [`ScopedUpdateMany`]. For an
    /// entity with a `#[shard_key]`, update by key with [`by_key`](Self::by_key).
    pub fn update_many<E>(&self) -> ScopedUpdateMany<'_, T, E, C>
    where
        E: TenantScoped<TenantId = T> + ScopedEntity<T>,
    {
        ScopedUpdateMany::new(self)
    }

    /// Deletes one of this tenant's rows, found by the primary key of `am`.
    ///
    /// A row of another tenant is not touched: the result says 0 rows. `am` carrying
    /// another tenant is [`Error::TenantMismatch`].
    pub async fn delete<A>(&self, am: A) -> Result<DeleteResult>
    where
        A: ActiveModelTrait + ActiveModelBehavior + Send,
        A::Entity: TenantScoped<TenantId = T>,
    {
        let handle = self.route_model(&am)?;
        let span = handle.span("delete", A::Entity::default().table_name());
        async {
            Ok(on_conn!(&*handle, |conn| {
                let am = A::before_delete(am, conn).await?;
                let am = handle.stamp(am)?;
                let backend = ConnectionTrait::get_database_backend(conn);
                let mut key = Self::primary_key_condition(&am)?;
                if let (Some(column), Some(value)) = (
                    <A::Entity as TenantScoped>::shard_key_column(),
                    Self::key_of(&am),
                ) {
                    key = key.add(scope::equals(column, &value, backend));
                }
                let tenant_col = <A::Entity as TenantScoped>::tenant_column();
                let result = A::Entity::delete_many()
                    .filter(key)
                    .filter(scope::equals(tenant_col, &handle.value, backend))
                    .exec(conn)
                    .await?;
                A::after_delete(am, conn).await?;
                result
            }))
        }
        .instrument(span)
        .await
    }

    /// Deletes this tenant's row of `E` with this primary key; 0 rows when it does not
    /// exist or belongs to another tenant.
    ///
    /// Not for an entity with a `#[shard_key]`, whose shard the id does not tell: use
    /// [`by_key`](Self::by_key)`(key).delete_by_id(id)`.
    pub async fn delete_by_id<E>(
        &self,
        id: impl Into<<E::PrimaryKey as PrimaryKeyTrait>::ValueType>,
    ) -> Result<DeleteResult>
    where
        E: TenantScoped<TenantId = T> + ScopedEntity<T>,
    {
        let span = self.span("delete", E::default().table_name());
        let delete = E::delete_by_id(id).filter(scope::equals(
            E::tenant_column(),
            &self.value,
            self.backend(),
        ));
        async { Ok(on_conn!(self, |conn| delete.exec(conn).await?)) }
            .instrument(span)
            .await
    }

    /// Starts a delete of many of this tenant's rows: see [`ScopedDeleteMany`]. For an
    /// entity with a `#[shard_key]`, delete by key with [`by_key`](Self::by_key).
    pub fn delete_many<E>(&self) -> ScopedDeleteMany<'_, T, E, C>
    where
        E: TenantScoped<TenantId = T> + ScopedEntity<T>,
    {
        ScopedDeleteMany::new(self)
    }
}

impl<T: TenantKey, C: HandleConnection> TenantDb<T, C> {
    /// Begins a transaction scoped to the same tenant (under row-level security or
    /// schema per tenant, its set-up runs first). On a [`TenantTxn`] this makes a nested
    /// transaction (a savepoint).
    pub async fn begin(&self) -> Result<TenantTxn<T>> {
        let txn = self.conn.begin().await?;
        let tag = match &self.session {
            Some(session) => session.apply(&txn, &self.conn).await?,
            None => self.tag.clone(),
        };
        Ok(TenantDb {
            tag,
            conn: txn,
            tenant: self.tenant.clone(),
            value: self.value.clone(),
            session: None,
            raw_sql: self.raw_sql,
            shard: self.shard.clone(),
            topology: self.topology.clone(),
        })
    }

    /// Runs raw SQL that returns rows, in this tenant's scope: only where the database
    /// confines a raw statement to the tenant, which is a PostgreSQL database of the
    /// tenant's own (database per tenant: a connection cannot reach another database).
    /// The statement runs in a transaction that ends by resetting every session-level
    /// change the statement could have made (`SET`, `SET ROLE`, temporary tables, cursors,
    /// listeners, advisory locks), so none reaches the next borrower of the connection.
    ///
    /// Everywhere else a raw statement could reach another tenant's rows, so it is
    /// [`Error::RawSqlNotIsolated`], naming why, and nothing runs: under row level it has
    /// no tenant filter; under row-level security it can change the setting the policies
    /// read (`set_config`); under schema per tenant it can name another tenant's schema;
    /// a MySQL/MariaDB database per tenant can name or `USE` another tenant's database,
    /// and a SQLite one can `ATTACH` another tenant's file. Use
    /// [`Tenancy::unscoped()`](crate::Tenancy::unscoped) there, and filter by tenant
    /// yourself.
    pub async fn query_all_raw(
        &self,
        statement: impl IntoRawStatement,
    ) -> Result<Vec<QueryResult>> {
        self.check_raw()?;
        let statement = statement.into_statement(self.backend());
        let span = self.span("raw", "");
        async {
            self.confined(|conn| Box::pin(conn.query_all_raw(statement)))
                .await
        }
        .instrument(span)
        .await
    }

    /// Runs raw SQL that changes rows, in this tenant's scope; confined and refused as
    /// [`query_all_raw`](Self::query_all_raw) is.
    pub async fn execute_raw(&self, statement: impl IntoRawStatement) -> Result<ExecResult> {
        self.check_raw()?;
        let statement = statement.into_statement(self.backend());
        let span = self.span("raw", "");
        async {
            self.confined(|conn| Box::pin(conn.execute_raw(statement)))
                .await
        }
        .instrument(span)
        .await
    }

    fn check_raw(&self) -> Result<()> {
        match self.raw_sql {
            RawSql::Confined => Ok(()),
            RawSql::Refused(why) => Err(Error::RawSqlNotIsolated { why }),
        }
    }

    /// Runs `statement` on a transaction of this handle, inside a savepoint, and resets the
    /// session before the transaction ends, whether the statement succeeded or not; refused
    /// when the connection's role can reach past its database ([`UNCONFINED_ROLE`]).
    async fn confined<'s, R>(
        &'s self,
        statement: impl for<'t> FnOnce(
            &'t DatabaseTransaction,
        ) -> Pin<
            Box<dyn Future<Output = std::result::Result<R, DbErr>> + Send + 't>,
        >,
    ) -> Result<R> {
        let txn = self.conn.begin().await?;
        // A database is a boundary only for a role that cannot step over it: a superuser
        // (or a member of one, or of the roles that read server files or run programs)
        // reaches other databases through `COPY .. PROGRAM`, `pg_read_binary_file` or
        // extensions. Checked on every raw unit, so a grant made later counts too.
        let unconfined = txn
            .query_one_raw(Statement::from_string(DbBackend::Postgres, UNCONFINED_ROLE))
            .await?
            .map(|row| row.try_get::<bool>("", "unconfined"))
            .transpose()?
            .unwrap_or(true);
        if unconfined {
            return Err(Error::RawSqlNotIsolated {
                why: "the tenant database's role is a superuser, or may read server files or \
                      run programs, which reach other databases: connect tenant databases as \
                      a role without those rights",
            });
        }
        txn.execute_unprepared("SAVEPOINT tenancy_raw").await?;
        let outcome = statement(&txn).await;
        let end = if outcome.is_ok() {
            "RELEASE SAVEPOINT tenancy_raw"
        } else {
            "ROLLBACK TO SAVEPOINT tenancy_raw"
        };
        txn.execute_unprepared(&format!("{end}; {SESSION_RESET}"))
            .await?;
        txn.commit().await?;
        Ok(outcome?)
    }

    /// The backend of this handle's connection, for building raw statements.
    pub fn backend(&self) -> DbBackend {
        ConnectionTrait::get_database_backend(&self.conn)
    }

    /// Runs `work` in a transaction of this tenant: committed when it returns `Ok`,
    /// rolled back when it returns `Err` (or panics). `work` is an async closure; `?` on
    /// the library's errors works inside it as it does outside.
    ///
    /// ```
    /// # use tenancy_sea::prelude::*;
    /// # async fn demo(db: TenantDb<i64>) -> tenancy_sea::Result<()> {
    /// let tenant = db
    ///     .transaction(async |txn| {
    ///         // ... writes through `txn`, with `?` ...
    ///         Ok(txn.tenant_id().to_string())
    ///     })
    ///     .await?;
    /// # let _ = tenant;
    /// # Ok(()) }
    /// ```
    pub async fn transaction<F, R>(&self, work: F) -> Result<R>
    where
        F: AsyncFnOnce(&TenantTxn<T>) -> Result<R>,
    {
        self.transaction_with(work).await
    }

    /// [`transaction`](Self::transaction) for work whose error is the application's own
    /// (any `E: From<tenancy_sea::Error>`).
    pub async fn transaction_with<F, R, E>(&self, work: F) -> std::result::Result<R, E>
    where
        F: AsyncFnOnce(&TenantTxn<T>) -> std::result::Result<R, E>,
        E: From<Error>,
    {
        let txn = self.begin().await?;
        match work(&txn).await {
            Ok(value) => {
                txn.commit().await?;
                Ok(value)
            }
            Err(err) => {
                if let Err(rollback) = txn.rollback().await {
                    tracing::warn!(error = %rollback, "rollback after a failed transaction failed");
                }
                Err(err)
            }
        }
    }
}

impl<T: TenantKey> TenantTxn<T> {
    /// Commits the transaction.
    pub async fn commit(self) -> Result<()> {
        Ok(self.conn.commit().await?)
    }

    /// Rolls the transaction back; nothing written through it remains.
    pub async fn rollback(self) -> Result<()> {
        Ok(self.conn.rollback().await?)
    }

    /// Not in a transaction: a transaction runs on one shard, and a fan-out reads every
    /// shard, so this does not compile, with a message that says so. Fan out with the
    /// tenant's handle ([`TenantDb::across_shards`]), outside the transaction.
    pub fn across_shards(&self) -> TenantAcrossShards<'_, T>
    where
        Self: FansOut<T>,
    {
        FansOut::fan_out(self)
    }

    /// Not in a transaction, like [`across_shards`](Self::across_shards): the keys may
    /// live on other shards. Read them with the tenant's handle ([`TenantDb::by_keys`]),
    /// or one key of this shard with [`by_key`](TenantDb::by_key).
    pub fn by_keys<E>(
        &self,
        keys: impl IntoIterator<Item = impl Into<E::Key>>,
    ) -> Result<ShardedSelect<E>>
    where
        E: KeySharded<TenantId = T>,
        Self: FansOut<T>,
    {
        let _ = keys;
        Err(FansOut::refused(self))
    }
}

/// What only a handle outside a transaction does: fan out over shards. Implemented for no
/// type; it exists to give calling [`TenantTxn::across_shards`] or
/// [`TenantTxn::by_keys`] a clear compile error.
#[diagnostic::on_unimplemented(
    message = "a transaction runs on one shard, so it does not fan out over shards",
    label = "called on a transaction",
    note = "call `across_shards()` or `by_keys(..)` on the tenant's handle (`TenantDb`), \
            outside the transaction; inside it, read one key of this shard with `by_key(..)`"
)]
pub trait FansOut<T: TenantKey>: crate::entity::__private_sealed::FansOutSeal {
    #[doc(hidden)]
    fn fan_out(&self) -> TenantAcrossShards<'_, T>;
    #[doc(hidden)]
    fn refused(&self) -> Error;
}

/// The rows of a `#[shard_key]` entity with one key, on the shard that holds them: made by
/// [`TenantDb::by_key`]. Every statement carries the tenant condition and the key
/// condition.
pub struct KeyedDb<'h, T: TenantKey, E: EntityTrait, C = DatabaseConnection> {
    handle: Routed<'h, T, C>,
    column: E::Column,
    key: Value,
}

impl<T: TenantKey, E: EntityTrait, C> std::fmt::Debug for KeyedDb<'_, T, E, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyedDb")
            .field("tenant", &self.handle.tenant)
            .field("shard", &self.handle.shard)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl<T, E, C> KeyedDb<'_, T, E, C>
where
    T: TenantKey,
    E: KeySharded<TenantId = T>,
    C: HandleConnection,
{
    /// The shard holding the key's rows (`None` without sharding).
    pub fn shard(&self) -> Option<&ShardId> {
        self.handle.shard()
    }

    fn condition(&self) -> Condition {
        let backend = self.handle.backend();
        scope::equals(E::tenant_column(), &self.handle.value, backend).add(scope::equals(
            self.column,
            &self.key,
            backend,
        ))
    }

    /// Selects this tenant's rows of `E` with this key. It runs on the key's shard, so it
    /// joins only global entities (whose copy is there): a join to the tenant's
    /// co-located rows, which live on the tenant's own shard, does not compile.
    pub fn find(&self) -> ScopedSelect<'_, T, E, C, GlobalJoins> {
        ScopedSelect::new(&self.handle, E::find().filter(self.condition()))
    }

    /// Selects the row with this primary key, if it is this tenant's and has this key.
    pub fn find_by_id(
        &self,
        id: impl Into<<E::PrimaryKey as PrimaryKeyTrait>::ValueType>,
    ) -> ScopedSelect<'_, T, E, C, GlobalJoins> {
        ScopedSelect::new(&self.handle, E::find_by_id(id).filter(self.condition()))
    }

    /// Starts an update of this tenant's rows with this key; the key column itself cannot
    /// be set ([`Error::ShardKeyWrite`]).
    pub fn update_many(&self) -> ScopedUpdateMany<'_, T, E, C> {
        ScopedUpdateMany::new(&self.handle).filter(self.column.eq(self.key.clone()))
    }

    /// Starts a delete of this tenant's rows with this key.
    pub fn delete_many(&self) -> ScopedDeleteMany<'_, T, E, C> {
        ScopedDeleteMany::new(&self.handle).filter(self.column.eq(self.key.clone()))
    }

    /// Deletes the row with this primary key, if it is this tenant's and has this key.
    pub async fn delete_by_id(
        &self,
        id: impl Into<<E::PrimaryKey as PrimaryKeyTrait>::ValueType>,
    ) -> Result<DeleteResult> {
        let handle: &TenantDb<T, C> = &self.handle;
        let span = handle.span("delete", E::default().table_name());
        let delete = E::delete_by_id(id).filter(self.condition());
        async { Ok(on_conn!(handle, |conn| delete.exec(conn).await?)) }
            .instrument(span)
            .await
    }
}
