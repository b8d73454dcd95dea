//! A tenant's connection, [`TenantConn`]: the connection a handle runs on, the tenant it is
//! scoped to and how each unit of work on it is set up, with what every statement of a
//! handle and of its builders needs from it: the tenant condition of an entity (and of the
//! junction of a many-to-many relation), the tenant stamped on a row, the span, and the
//! shard a row of a `#[shard_key]` entity is routed to.

use super::audit::Refused;
use super::{HandleConnection, Meter, RawSql, Session, Tag, Traced};
use crate::entity::{ScopedEntity, SqlTenantId, TenantScoped};
use crate::error::{Error, Result, UniqueIdError};
use crate::scope;
use sea_orm::sea_query::{Condition, SchemaName, TableName, TableRef};
use sea_orm::{
    ActiveModelTrait, ActiveValue, ConnectionTrait, DatabaseConnection, DbBackend, EntityName,
    EntityTrait, IdenStatic, Related, Value,
};
use std::sync::Arc;
use tenancy_core::{KeyType, ShardId};

/// Where a row goes: a shard and its pool, or `None` for the handle's own connection.
pub(crate) type Placed = Option<(ShardId, DatabaseConnection)>;

/// The name of the one "shard" of a handle that is not sharded.
pub(crate) const UNSHARDED: &str = "default";

/// Where the rows of a `#[shard_key]` value live: the shards as a tenant's connection
/// routes to them (implemented by [`Topology`](crate::Topology)).
pub(crate) trait KeyPlacement: std::any::Any + Send + Sync {
    /// The shard of the `#[shard_key]` value of type `key_type` whose canonical bytes are
    /// `key`, and its connection.
    fn shard_of_key_bytes(
        &self,
        key: &[u8],
        key_type: &KeyType,
    ) -> Result<(ShardId, DatabaseConnection)>;
}

/// What issues the ids of `#[unique_id]` keys (implemented by
/// `catalog::UniqueIds`).
pub(crate) trait IssueIds: Send + Sync {
    /// `count` new ids, unique across shards and processes.
    fn issue(&self, count: usize) -> futures_util::future::BoxFuture<'_, Result<Vec<i64>>>;
}

/// One tenant's connection: a pool or a transaction (`C`), the tenant, its set-up and its
/// shard. A [`TenantDb`](crate::TenantDb) holds one, and the builders it makes run on it.
#[derive(Clone)]
pub(crate) struct TenantConn<T, C> {
    pub(crate) conn: C,
    pub(crate) tenant: T,
    /// The tenant id as a bindable value, made once.
    pub(crate) value: Value,
    /// The set-up each unit of work runs first (RLS setting, `search_path`); `None` for
    /// row level, and inside a transaction that already ran it.
    pub(crate) session: Option<Arc<Session>>,
    /// Whether raw SQL is confined to this tenant under the strategy.
    pub(crate) raw_sql: RawSql,
    /// The shard the tenant lives on, when sharded.
    pub(crate) shard: Option<ShardId>,
    /// The shards, when sharded: rows of a `#[shard_key]` entity are routed by their key.
    pub(crate) placement: Option<Arc<dyn KeyPlacement>>,
    /// What fills a `#[unique_id]` key left unset on insert.
    pub(crate) unique_ids: Option<Arc<dyn IssueIds>>,
    /// The tag statements carry inside a transaction whose set-up read one (the schema's
    /// shape, schema per tenant).
    pub(crate) tag: Tag,
    /// The labels its statements are counted under (feature `metrics`; empty without).
    pub(crate) meter: Meter,
}

/// A handle, or the same tenant's handle on the shard a key routed to.
pub(crate) enum Routed<'a, H> {
    Here(&'a H),
    There(H),
}

impl<H> std::ops::Deref for Routed<'_, H> {
    type Target = H;

    fn deref(&self) -> &H {
        match self {
            Routed::Here(handle) => handle,
            Routed::There(handle) => handle,
        }
    }
}

impl<T: SqlTenantId, C: HandleConnection> TenantConn<T, C> {
    /// The tenant this handle belongs to.
    pub(crate) fn tenant_id(&self) -> &T {
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

    /// What every statement of this handle runs in ([`Traced::run`]): a span that names
    /// the tenant, the table and the operation, so logs say who ran what, and with the
    /// `metrics` feature the statement's counters and latency.
    pub(crate) fn span(&self, op: &'static str, table: &'static str) -> Traced {
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
        self.meter.statement(op, span)
    }

    /// The shard this tenant lives on, when the strategy is sharded.
    pub(crate) fn shard(&self) -> Option<&ShardId> {
        self.shard.as_ref()
    }

    /// The backend of the connection.
    pub(crate) fn backend(&self) -> DbBackend {
        ConnectionTrait::get_database_backend(&self.conn)
    }

    /// The tenant condition of an entity's reads, or none for a global entity.
    pub(crate) fn scope<E: ScopedEntity<T>>(&self) -> Option<Condition> {
        E::scope_column().map(|col| scope::equals(col, &self.value, self.backend()))
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

    /// The shard of the row of `E` whose shard key is `value`: `None` when the statement
    /// stays on this handle's connection (no sharding, or the tenant is the key).
    pub(crate) fn shard_for<E>(&self, value: Option<Value>) -> Result<Placed>
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
        let Some(topology) = &self.placement else {
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
    pub(crate) fn may_spread<E: TenantScoped>(&self) -> Result<()> {
        match (&self.placement, &self.session) {
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
    pub(crate) fn route<E>(&self, value: Option<Value>) -> Result<Routed<'_, Self>>
    where
        E: TenantScoped<TenantId = T>,
    {
        let placed = self.shard_for::<E>(value)?;
        self.bind::<E>(placed)
    }

    /// This tenant's handle on `placed` (a shard and its pool), or this handle itself when
    /// `placed` is `None` or its own shard.
    pub(crate) fn bind<E: EntityTrait>(&self, placed: Placed) -> Result<Routed<'_, Self>> {
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
        Ok(Routed::There(TenantConn {
            conn,
            tenant: self.tenant.clone(),
            value: self.value.clone(),
            session: self.session.clone(),
            raw_sql: self.raw_sql,
            shard: Some(shard.clone()),
            placement: self.placement.clone(),
            unique_ids: self.unique_ids.clone(),
            tag: self.tag.clone(),
            meter: self.meter.on_shard(&shard),
        }))
    }

    /// After a save hook ran on this handle's shard: the row's key must still route here
    /// (a hook that changes the key would leave the row on the wrong shard).
    pub(crate) fn check_key_unmoved<A>(&self, am: &A) -> Result<()>
    where
        A: ActiveModelTrait,
        A::Entity: TenantScoped<TenantId = T>,
    {
        let Some(column) = <A::Entity as TenantScoped>::shard_key_column() else {
            return Ok(());
        };
        if self.placement.is_none() {
            return Ok(());
        }
        match self.shard_for::<A::Entity>(key_of(am))? {
            Some((shard, _)) if self.shard.as_ref() != Some(&shard) => Err(Error::ShardKeyWrite {
                table: A::Entity::default().table_name(),
                column: column.as_str().to_owned(),
            }),
            _ => Ok(()),
        }
    }

    /// This tenant's handle on the shard of the row `am`.
    pub(crate) fn route_model<A>(&self, am: &A) -> Result<Routed<'_, Self>>
    where
        A: ActiveModelTrait,
        A::Entity: TenantScoped<TenantId = T>,
    {
        self.route::<A::Entity>(key_of(am))
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

    /// Fills the `#[unique_id]` key of each row that leaves it unset, from the tenancy's
    /// generator (one call for all of them); a row that sets it keeps its key.
    pub(crate) async fn fill_unique_ids<A>(&self, models: &mut [A]) -> Result<()>
    where
        A: ActiveModelTrait + Send,
        A::Entity: TenantScoped,
    {
        let Some(col) = <A::Entity as TenantScoped>::unique_id_column() else {
            return Ok(());
        };
        let unset: Vec<usize> = models
            .iter()
            .enumerate()
            .filter(|(_, am)| matches!(am.get(col), ActiveValue::NotSet))
            .map(|(at, _)| at)
            .collect();
        if unset.is_empty() {
            return Ok(());
        }
        let ids = self
            .unique_ids
            .as_ref()
            .ok_or(UniqueIdError::NotConfigured {
                table: A::Entity::default().table_name(),
            })?;
        let ids = ids.issue(unset.len()).await?;
        for (at, id) in unset.into_iter().zip(ids) {
            if let Some(am) = models.get_mut(at) {
                am.try_set(col, id.into())?;
            }
        }
        Ok(())
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
}

/// The shard-key value `am` carries, if its entity has a `#[shard_key]` and it is set.
pub(crate) fn key_of<A>(am: &A) -> Option<Value>
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
