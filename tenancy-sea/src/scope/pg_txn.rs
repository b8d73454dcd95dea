//! A PostgreSQL transaction the library begins itself: its `BEGIN` carries the unit's
//! set-up (a transaction-local `set_config`) in the same simple query, one round trip,
//! where SeaORM can only begin with a plain `BEGIN` and send the set-up after it.

use futures_util::lock::{Mutex, MutexGuard};
use futures_util::{Stream, StreamExt, TryStreamExt};
use sea_orm::sqlx::pool::PoolConnection;
use sea_orm::sqlx::postgres::{PgTransactionManager, Postgres};
use sea_orm::sqlx::{AssertSqlSafe, Executor, PgPool, SqlSafeStr};
use sea_orm::{ConnAcquireErr, DbErr, ExecResult, QueryResult, RuntimeErr, Statement};
use sea_query_sqlx::SqlxValues;
use sqlx_core::transaction::TransactionManager;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// A pooled connection inside a transaction of the library's own. Whenever it leaves the
/// library's hands with a transaction still open (a unit dropped without commit, a future
/// cancelled), the rollback is queued before the connection goes back to the pool, which
/// sends it before anyone else can borrow the connection: the set-up never reaches the
/// next borrower.
struct Conn(PoolConnection<Postgres>);

impl Drop for Conn {
    fn drop(&mut self) {
        while PgTransactionManager::get_transaction_depth(&self.0) > 0 {
            PgTransactionManager::start_rollback(&mut self.0);
        }
    }
}

/// A PostgreSQL pool connection taken for a `BEGIN` of the library's own. Until the
/// transaction is known to be open (`defuse`), dropping it closes the connection instead
/// of returning it: a `BEGIN` cancelled half-way may have opened a transaction, with the
/// tenant's setting, that sqlx does not know about and would hand to the next borrower.
struct Beginning(Option<PoolConnection<Postgres>>);

impl Drop for Beginning {
    fn drop(&mut self) {
        if let Some(conn) = &mut self.0 {
            conn.close_on_drop();
        }
    }
}

/// A transaction begun with a set-up of the library's own (see the module), or a
/// savepoint inside one. Statements are sent as SeaORM sends them on a transaction:
/// prepared, their values bound.
pub(crate) struct PgTxn {
    conn: Arc<Mutex<Conn>>,
    /// Whether it is still to be committed or rolled back (a savepoint only ends itself).
    open: bool,
}

impl PgTxn {
    /// Takes a connection of `pool` and sends `begin` on it, one simple query: `BEGIN;`
    /// then the set-up, made of the audited writers of literals only. When it fails (a
    /// tenant schema that does not exist, a shape that changed), the transaction it
    /// opened is rolled back before the connection goes back to the pool.
    pub(crate) async fn begin(pool: &PgPool, begin: String) -> Result<PgTxn, DbErr> {
        let conn = pool.acquire().await.map_err(sqlx_conn_acquire_err)?;
        let mut beginning = Beginning(Some(conn));
        let Some(conn) = beginning.0.as_mut() else {
            return Err(DbErr::Custom("no connection to begin on".to_owned()));
        };
        let begun =
            PgTransactionManager::begin(conn, Some(AssertSqlSafe(begin).into_sql_str())).await;
        if let Err(error) = begun {
            // The failed statement left the server in an aborted transaction that sqlx
            // does not count: end it, and give the connection back; if even that fails,
            // the connection is closed (`beginning`). The error is the `BEGIN`'s.
            let ended = conn
                .execute(sea_orm::sqlx::raw_sql(AssertSqlSafe("ROLLBACK")))
                .await;
            if ended.is_ok() {
                beginning.0.take();
            }
            return Err(sqlx_error_to_query_err(error));
        }
        let conn = beginning.0.take().map(Conn);
        match conn {
            Some(conn) => Ok(PgTxn {
                conn: Arc::new(Mutex::new(conn)),
                open: true,
            }),
            None => Err(DbErr::Custom("no connection to begin on".to_owned())),
        }
    }

    /// A savepoint in this transaction, on the same connection.
    pub(crate) async fn savepoint(&self) -> Result<PgTxn, DbErr> {
        let mut conn = self.conn.lock().await;
        PgTransactionManager::begin(&mut conn.0, None)
            .await
            .map_err(sqlx_error_to_query_err)?;
        Ok(PgTxn {
            conn: self.conn.clone(),
            open: true,
        })
    }

    /// Commits (releases, for a savepoint).
    pub(crate) async fn commit(mut self) -> Result<(), DbErr> {
        let mut conn = self.conn.lock().await;
        PgTransactionManager::commit(&mut conn.0)
            .await
            .map_err(sqlx_error_to_query_err)?;
        self.open = false;
        Ok(())
    }

    /// Rolls back (to the savepoint, for a savepoint).
    pub(crate) async fn rollback(mut self) -> Result<(), DbErr> {
        let mut conn = self.conn.lock().await;
        PgTransactionManager::rollback(&mut conn.0)
            .await
            .map_err(sqlx_error_to_query_err)?;
        self.open = false;
        Ok(())
    }

    pub(crate) async fn execute(&self, statement: Statement) -> Result<ExecResult, DbErr> {
        let mut conn = self.conn.lock().await;
        query(statement)
            .execute(&mut *conn.0)
            .await
            .map(Into::into)
            .map_err(sqlx_error_to_exec_err)
    }

    pub(crate) async fn execute_unprepared(&self, sql: &str) -> Result<ExecResult, DbErr> {
        let mut conn = self.conn.lock().await;
        conn.0
            .execute(sea_orm::sqlx::raw_sql(AssertSqlSafe(sql.to_owned())))
            .await
            .map(Into::into)
            .map_err(sqlx_error_to_exec_err)
    }

    pub(crate) async fn query_one(
        &self,
        statement: Statement,
    ) -> Result<Option<QueryResult>, DbErr> {
        let mut conn = self.conn.lock().await;
        query(statement)
            .fetch_optional(&mut *conn.0)
            .await
            .map(|row| row.map(Into::into))
            .map_err(sqlx_error_to_query_err)
    }

    pub(crate) async fn query_all(&self, statement: Statement) -> Result<Vec<QueryResult>, DbErr> {
        let mut conn = self.conn.lock().await;
        query(statement)
            .fetch_all(&mut *conn.0)
            .await
            .map(|rows| rows.into_iter().map(Into::into).collect())
            .map_err(sqlx_error_to_query_err)
    }

    /// The rows of `statement`, read as they are consumed; the connection is held until
    /// the stream is dropped.
    pub(crate) async fn stream(&self, statement: Statement) -> PgRows<'_> {
        let conn = self.conn.lock().await;
        PgRowsBuilder {
            conn,
            rows_builder: |conn: &mut MutexGuard<'_, Conn>| {
                query(statement)
                    .fetch(&mut *conn.0)
                    .map_ok(Into::into)
                    .map_err(sqlx_error_to_query_err)
                    .boxed()
            },
        }
        .build()
    }
}

impl Drop for PgTxn {
    /// A transaction dropped open rolls back: queued on the connection now when nothing
    /// else holds it, else when the connection itself is let go ([`Conn`]).
    fn drop(&mut self) {
        if self.open
            && let Some(mut conn) = self.conn.try_lock()
        {
            PgTransactionManager::start_rollback(&mut conn.0);
        }
    }
}

/// `statement` as sqlx sends it: prepared, its values bound.
fn query(statement: Statement) -> sea_orm::sqlx::query::Query<'static, Postgres, SqlxValues> {
    let values = statement
        .values
        .unwrap_or(sea_orm::sea_query::Values(Vec::new()));
    sea_orm::sqlx::query_with(AssertSqlSafe(statement.sql), SqlxValues(values))
}

/// A failed statement, as SeaORM reports one (the same variants, so errors read the same
/// on every kind of unit).
fn sqlx_error_to_exec_err(error: sea_orm::sqlx::Error) -> DbErr {
    DbErr::Exec(RuntimeErr::SqlxError(error.into()))
}

/// A failed query, as SeaORM reports one.
fn sqlx_error_to_query_err(error: sea_orm::sqlx::Error) -> DbErr {
    DbErr::Query(RuntimeErr::SqlxError(error.into()))
}

/// A connection the pool could not give, as SeaORM reports one.
fn sqlx_conn_acquire_err(error: sea_orm::sqlx::Error) -> DbErr {
    match error {
        sea_orm::sqlx::Error::PoolTimedOut => DbErr::ConnectionAcquire(ConnAcquireErr::Timeout),
        sea_orm::sqlx::Error::PoolClosed => {
            DbErr::ConnectionAcquire(ConnAcquireErr::ConnectionClosed)
        }
        error => DbErr::Conn(RuntimeErr::SqlxError(error.into())),
    }
}

type RowStream<'a> = futures_util::stream::BoxStream<'a, Result<QueryResult, DbErr>>;

/// Rows read from a [`PgTxn`]'s connection, which the stream holds.
#[ouroboros::self_referencing]
pub(crate) struct PgRows<'a> {
    conn: MutexGuard<'a, Conn>,
    #[borrows(mut conn)]
    #[not_covariant]
    rows: RowStream<'this>,
}

impl Stream for PgRows<'_> {
    type Item = Result<QueryResult, DbErr>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut()
            .with_rows_mut(|rows| rows.as_mut().poll_next(cx))
    }
}
