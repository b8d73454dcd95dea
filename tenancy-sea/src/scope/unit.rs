//! The transaction a unit of work runs in ([`UnitTxn`]), how one begins with its set-up
//! ([`begin_unit`]), and the connections a handle can run on ([`HandleConnection`]).

use super::{Session, Tag};
use crate::error::Error;
use futures_util::Stream;
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr, ExecResult,
    QueryResult, Statement, StreamTrait, TransactionTrait,
};
use std::future::Future;
use std::pin::Pin;

mod sealed {
    pub trait Sealed {}
    impl Sealed for sea_orm::DatabaseConnection {}
    impl Sealed for super::UnitTxn {}
}

/// The connections a tenant handle can run on: a pool ([`DatabaseConnection`]) or a
/// transaction ([`UnitTxn`]). Sealed: there is no way to make a handle over anything
/// else.
pub trait HandleConnection: ConnectionTrait + StreamTrait + Send + Sync + sealed::Sealed {
    /// The same kind of connection on another shard's pool: the pool itself for a pool
    /// handle; `None` for a transaction, which never leaves its shard.
    #[doc(hidden)]
    fn rebind(pool: &DatabaseConnection) -> Option<Self>
    where
        Self: Sized;

    /// A transaction on this connection: a new one on a pool, a savepoint in a
    /// transaction.
    #[doc(hidden)]
    fn begin_txn(&self) -> impl Future<Output = Result<UnitTxn, DbErr>> + Send;

    /// A new transaction on this pool that begins with `sql` (`BEGIN`, then a set-up
    /// written as literals), where the library begins transactions itself (a PostgreSQL
    /// pool); `None` elsewhere (another backend, or a transaction).
    #[doc(hidden)]
    fn begin_with(&self, sql: &str) -> Option<impl Future<Output = Result<UnitTxn, DbErr>> + Send>;
}

/// A transaction of the library's own on `db`'s pool, begun with `sql` (PostgreSQL only: a
/// set-up in the `BEGIN`) or a plain `BEGIN`: on a PostgreSQL or MySQL/MariaDB pool;
/// `None` elsewhere (SQLite, whose connection may hold an in-memory database that closing
/// it would lose, goes through SeaORM). See [`OwnTxn`].
///
/// [`OwnTxn`]: super::own_txn::OwnTxn
#[allow(
    clippy::needless_return,
    unreachable_code,
    unused_variables,
    unused_imports
)]
fn own_begin(
    db: &DatabaseConnection,
    sql: Option<&str>,
) -> Option<impl Future<Output = Result<UnitTxn, DbErr>> + Send + use<>> {
    use futures_util::FutureExt;
    use futures_util::future::BoxFuture;
    let sql = sql.map(str::to_owned);
    let begin: BoxFuture<'static, Result<UnitTxn, DbErr>> = match &db.inner {
        #[cfg(feature = "postgres")]
        sea_orm::DatabaseConnectionType::SqlxPostgresPoolConnection(_) => {
            let pool = db.get_postgres_connection_pool().clone();
            async move {
                Ok(UnitTxn(Kind::Pg(
                    super::own_txn::OwnTxn::begin(&pool, sql).await?,
                )))
            }
            .boxed()
        }
        #[cfg(feature = "mysql")]
        sea_orm::DatabaseConnectionType::SqlxMySqlPoolConnection(_) if sql.is_none() => {
            let pool = db.get_mysql_connection_pool().clone();
            let returning = db.support_returning();
            async move {
                Ok(UnitTxn(Kind::My(
                    super::own_txn::OwnTxn::begin(&pool, None).await?,
                    returning,
                )))
            }
            .boxed()
        }
        _ => return None,
    };
    Some(begin)
}

impl HandleConnection for DatabaseConnection {
    fn rebind(pool: &DatabaseConnection) -> Option<Self> {
        Some(pool.clone())
    }

    async fn begin_txn(&self) -> Result<UnitTxn, DbErr> {
        if let Some(begin) = own_begin(self, None) {
            return begin.await;
        }
        Ok(UnitTxn::sea(self.begin().await?))
    }

    fn begin_with(&self, sql: &str) -> Option<impl Future<Output = Result<UnitTxn, DbErr>> + Send> {
        own_begin(self, Some(sql))
    }
}

impl HandleConnection for UnitTxn {
    fn rebind(_: &DatabaseConnection) -> Option<Self> {
        None
    }

    async fn begin_txn(&self) -> Result<UnitTxn, DbErr> {
        self.begin().await
    }

    fn begin_with(&self, _: &str) -> Option<impl Future<Output = Result<UnitTxn, DbErr>> + Send> {
        None::<std::future::Ready<Result<UnitTxn, DbErr>>>
    }
}

/// The transaction of a unit of work, and the connection a
/// [`TenantTxn`](crate::TenantTxn) runs on. On PostgreSQL and MySQL/MariaDB it is a
/// transaction the library begins itself: a `BEGIN` cancelled half-way closes its
/// connection rather than hand an open transaction to the next borrower, savepoints end
/// only themselves, and on PostgreSQL under row-level security and schema per tenant the
/// `BEGIN` carries the tenant's set-up in the same round trip. On SQLite it is a SeaORM
/// [`DatabaseTransaction`]. Dropping it without committing rolls back. Only the library
/// makes one, and a tenant handle does not hand it out.
///
/// On PostgreSQL and MySQL/MariaDB its statements go to sqlx directly: sqlx's statement log
/// and the library's own spans and metrics see them, but a SeaORM metric callback
/// (`DatabaseConnection::set_metric_callback`) and SeaORM's own `sea_orm.*` spans do not.
pub struct UnitTxn(Kind);

enum Kind {
    Sea(DatabaseTransaction),
    #[cfg(feature = "postgres")]
    Pg(super::own_txn::OwnTxn<sea_orm::sqlx::Postgres>),
    /// With whether the server returns rows from writes (MariaDB), as SeaORM found it.
    #[cfg(feature = "mysql")]
    My(super::own_txn::OwnTxn<sea_orm::sqlx::MySql>, bool),
}

/// `$body` with `$txn` bound to the library's own transaction of any driver, in a `match`
/// on `$kind` whose SeaORM arm is `$sea`.
macro_rules! on_kind {
    ($kind:expr, $txn:ident => $body:expr, $sea:ident => $sea_body:expr) => {
        match $kind {
            Kind::Sea($sea) => $sea_body,
            #[cfg(feature = "postgres")]
            Kind::Pg($txn) => $body,
            #[cfg(feature = "mysql")]
            Kind::My($txn, _) => $body,
        }
    };
}

impl std::fmt::Debug for UnitTxn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match &self.0 {
            Kind::Sea(_) => "UnitTxn(DatabaseTransaction)",
            #[cfg(feature = "postgres")]
            Kind::Pg(_) => "UnitTxn(PostgreSQL)",
            #[cfg(feature = "mysql")]
            Kind::My(..) => "UnitTxn(MySQL)",
        })
    }
}

impl UnitTxn {
    /// A SeaORM transaction as a unit's (one the library began).
    pub(crate) fn sea(txn: DatabaseTransaction) -> Self {
        UnitTxn(Kind::Sea(txn))
    }

    /// A nested transaction (a savepoint) in this one.
    pub(crate) async fn begin(&self) -> Result<UnitTxn, DbErr> {
        Ok(UnitTxn(match &self.0 {
            Kind::Sea(txn) => Kind::Sea(txn.begin().await?),
            #[cfg(feature = "postgres")]
            Kind::Pg(txn) => Kind::Pg(txn.savepoint().await?),
            #[cfg(feature = "mysql")]
            Kind::My(txn, returning) => Kind::My(txn.savepoint().await?, *returning),
        }))
    }

    /// Commits the transaction (releases the savepoint).
    pub(crate) async fn commit(self) -> Result<(), DbErr> {
        on_kind!(self.0, txn => txn.commit().await, txn => txn.commit().await)
    }

    /// Rolls the transaction back (to the savepoint).
    pub(crate) async fn rollback(self) -> Result<(), DbErr> {
        on_kind!(self.0, txn => txn.rollback().await, txn => txn.rollback().await)
    }
}

#[sea_orm::prelude::async_trait::async_trait]
impl ConnectionTrait for UnitTxn {
    fn get_database_backend(&self) -> DbBackend {
        match &self.0 {
            Kind::Sea(txn) => ConnectionTrait::get_database_backend(txn),
            #[cfg(feature = "postgres")]
            Kind::Pg(_) => DbBackend::Postgres,
            #[cfg(feature = "mysql")]
            Kind::My(..) => DbBackend::MySql,
        }
    }

    async fn execute_raw(&self, stmt: Statement) -> Result<ExecResult, DbErr> {
        on_kind!(&self.0, txn => txn.execute(stmt).await, txn => txn.execute_raw(stmt).await)
    }

    async fn execute_unprepared(&self, sql: &str) -> Result<ExecResult, DbErr> {
        on_kind!(
            &self.0,
            txn => txn.execute_unprepared(sql).await,
            txn => txn.execute_unprepared(sql).await
        )
    }

    async fn query_one_raw(&self, stmt: Statement) -> Result<Option<QueryResult>, DbErr> {
        on_kind!(&self.0, txn => txn.query_one(stmt).await, txn => txn.query_one_raw(stmt).await)
    }

    async fn query_all_raw(&self, stmt: Statement) -> Result<Vec<QueryResult>, DbErr> {
        on_kind!(&self.0, txn => txn.query_all(stmt).await, txn => txn.query_all_raw(stmt).await)
    }

    fn support_returning(&self) -> bool {
        match &self.0 {
            Kind::Sea(txn) => txn.support_returning(),
            #[cfg(feature = "postgres")]
            Kind::Pg(_) => true,
            #[cfg(feature = "mysql")]
            Kind::My(_, returning) => *returning,
        }
    }

    fn is_mock_connection(&self) -> bool {
        match &self.0 {
            Kind::Sea(txn) => txn.is_mock_connection(),
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }
}

/// The rows of a statement run on a [`UnitTxn`].
pub type UnitRows<'a> = Pin<Box<dyn Stream<Item = Result<QueryResult, DbErr>> + Send + 'a>>;

impl StreamTrait for UnitTxn {
    type Stream<'a> = UnitRows<'a>;

    fn get_database_backend(&self) -> DbBackend {
        ConnectionTrait::get_database_backend(self)
    }

    fn stream_raw<'a>(
        &'a self,
        stmt: Statement,
    ) -> Pin<Box<dyn Future<Output = Result<UnitRows<'a>, DbErr>> + 'a + Send>> {
        Box::pin(async move {
            Ok(on_kind!(
                &self.0,
                txn => Box::pin(txn.stream(stmt).await?) as UnitRows<'a>,
                txn => Box::pin(txn.stream_raw(stmt).await?) as UnitRows<'a>
            ))
        })
    }
}

/// Runs `session`, if any, first in `txn`, a transaction just begun on `pool`. Returns
/// the transaction and the tag the unit's statements carry, `None` when there is no
/// set-up. When the set-up fails, the transaction is ended (rolled back) before `pool` is
/// asked what the failure means ([`Session::explain`]), so that the question never waits
/// for the connection the unit holds.
pub(crate) async fn set_up<C: ConnectionTrait, P: ConnectionTrait>(
    txn: C,
    pool: &P,
    session: Option<&Session>,
) -> Result<(C, Option<Tag>), Error> {
    let Some(session) = session else {
        return Ok((txn, None));
    };
    match session.apply(&txn).await {
        Ok(tag) => Ok((txn, Some(tag))),
        Err(error) => {
            drop(txn);
            Err(session.explain(error, pool).await)
        }
    }
}

/// Begins a unit of work on `pool`: the one way a unit is set up (handles, transactions,
/// streams, fan-outs and moves all come here). Returns the transaction and the tag its
/// statements carry (`None` when there is no set-up: the caller's own tag stands).
///
/// On a PostgreSQL pool, a set-up that can be written as literals travels with the
/// `BEGIN`, one simple query ([`Session::begin_text`]); otherwise, or when the shape that
/// `BEGIN` guessed misses, the transaction begins and the set-up runs first in it
/// ([`set_up`]).
pub(crate) async fn begin_unit<P: HandleConnection>(
    pool: &P,
    session: Option<&Session>,
) -> Result<(UnitTxn, Option<Tag>), Error> {
    if let Some(session) = session
        && let Some((sql, tag)) = session.begin_text()
        && let Some(begin) = pool.begin_with(&sql)
    {
        match begin.await {
            Ok(txn) => return Ok((txn, Some(tag))),
            // The failed `BEGIN` was rolled back: begin again, and read the shape.
            Err(error) if session.missed(&error) => {}
            Err(error) => return Err(session.explain(error, pool).await),
        }
    }
    let txn = pool.begin_txn().await?;
    set_up(txn, pool, session).await
}

/// What raw SQL through a tenant handle may do under the handle's strategy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RawSql {
    /// Refused, with the reason: a raw statement could reach another tenant's rows.
    Refused(&'static str),
    /// Confined by the database (a PostgreSQL database of the tenant's own, which a
    /// connection cannot leave); run in a transaction whose session state is reset after.
    Confined,
}

/// What a confined raw statement's unit ends with, in the same round trip as the end of
/// its savepoint: every session-level change it could have made undone (settings, role,
/// temporary tables, cursors, listeners, advisory locks), so none reaches the next
/// borrower of the connection. Prepared statements are left alone: the driver's own
/// cache depends on them.
pub(crate) const SESSION_RESET: &str = "RESET ALL; RESET ROLE; RESET SESSION AUTHORIZATION; \
     DISCARD TEMP; CLOSE ALL; UNLISTEN *; SELECT pg_advisory_unlock_all()";
