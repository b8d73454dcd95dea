//! [`TenantDb`]: the scoped handle of one tenant, and its transaction [`TenantTxn`]. Its
//! methods are split by concern: reads (`reads`), writes (`writes`), transactions and raw
//! SQL (`txn`), routing by shard key (`keyed`), and the tenant's reads on every shard
//! (`across`).

mod across;
mod keyed;
mod reads;
mod txn;
mod writes;

pub use across::{FansOut, TenantAcrossShards};
pub use keyed::ShardKeyDb;
pub use txn::IntoRawStatement;

use crate::entity::SqlTenantId;
use crate::scope::UnitTxn;
use crate::scope::{IssueIds, Meter, RawSql, Session, Tag, TenantConn};
use crate::shard::Topology;
use sea_orm::DatabaseConnection;
use std::sync::Arc;
use tenancy_core::ShardId;

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
///
/// [`TenantScoped`]: crate::TenantScoped
/// [`Error::TenantMismatch`]: crate::Error::TenantMismatch
#[derive(Clone)]
pub struct TenantDb<T: SqlTenantId, C = DatabaseConnection> {
    /// The connection, the tenant and its set-up: what every statement of the handle and
    /// of its builders runs on.
    inner: TenantConn<T, C>,
}

/// Shows the handle's connection, tenant, set-up, shard and topology.
impl<T: SqlTenantId + std::fmt::Debug, C: std::fmt::Debug> std::fmt::Debug for TenantDb<T, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = &self.inner;
        f.debug_struct("TenantDb")
            .field("conn", &inner.conn)
            .field("tenant", &inner.tenant)
            .field("value", &inner.value)
            .field("session", &inner.session)
            .field("raw_sql", &inner.raw_sql)
            .field("shard", &inner.shard)
            .field("topology", &self.topology())
            .field("tag", &inner.tag)
            .finish()
    }
}

/// A tenant handle inside a database transaction: the same API as [`TenantDb`], plus
/// [`commit`](TenantDb::commit) and [`rollback`](TenantDb::rollback). Dropping it without
/// committing rolls back.
pub type TenantTxn<T> = TenantDb<T, UnitTxn>;

impl<T: SqlTenantId> TenantDb<T> {
    /// A handle over `conn`; the id must have been validated.
    pub(crate) fn new(
        conn: DatabaseConnection,
        tenant: T,
        session: Option<Session>,
        raw_sql: RawSql,
        meter: Meter,
    ) -> Self {
        let value = tenant.clone().into();
        TenantDb {
            inner: TenantConn {
                conn,
                tenant,
                value,
                session: session.map(Arc::new),
                raw_sql,
                shard: None,
                placement: None,
                unique_ids: None,
                tag: Tag::default(),
                meter,
            },
        }
    }

    pub(crate) fn with_unique_ids(mut self, ids: Option<Arc<dyn IssueIds>>) -> Self {
        self.inner.unique_ids = ids;
        self
    }

    pub(crate) fn on_shard(mut self, shard: ShardId, topology: Arc<Topology>) -> Self {
        self.inner.meter = self.inner.meter.on_shard(&shard);
        self.inner.shard = Some(shard);
        self.inner.placement = Some(topology);
        self
    }
}

impl<T: SqlTenantId, C> TenantDb<T, C> {
    /// The shards, when sharded: the tenant's fan-outs run on them. The handle keeps them
    /// once, as the placement its keyed rows are routed by.
    fn topology(&self) -> Option<&Topology> {
        let placement: &dyn std::any::Any = self.inner.placement.as_deref()?;
        placement.downcast_ref::<Topology>()
    }
}

impl<T: SqlTenantId, C: crate::scope::HandleConnection> TenantDb<T, C> {
    /// The tenant this handle belongs to.
    pub fn tenant_id(&self) -> &T {
        &self.inner.tenant
    }

    /// The shard this tenant lives on, when the strategy is sharded.
    pub fn shard(&self) -> Option<&ShardId> {
        self.inner.shard()
    }
}
