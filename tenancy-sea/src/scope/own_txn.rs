//! A transaction the library begins itself, on PostgreSQL and MySQL/MariaDB. On
//! PostgreSQL its `BEGIN` carries the unit's set-up (`SET LOCAL`, its value written as a
//! literal) in the same simple query, one round trip, where SeaORM can only begin with a
//! plain `BEGIN` and send the set-up after it. On both, a `BEGIN` cancelled half-way
//! closes its connection, where sqlx would hand the next borrower a connection inside an
//! open transaction it does not count. Savepoints are the library's own too, each named,
//! so that ending one never ends another level by mistake.

use futures_util::future::BoxFuture;
use futures_util::lock::{Mutex, MutexGuard};
use futures_util::stream::BoxStream;
use futures_util::{FutureExt, Stream, StreamExt, TryStreamExt};
use sea_orm::sqlx::pool::PoolConnection;
use sea_orm::sqlx::{AssertSqlSafe, Database, Executor, Pool, SqlSafeStr};
use sea_orm::{ConnAcquireErr, DbErr, ExecResult, QueryResult, RuntimeErr, Statement};
use sea_query_sqlx::SqlxValues;
use sqlx_core::transaction::TransactionManager;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// What a transaction of the library's own needs of a sqlx driver: its statements sent as
/// SeaORM sends them (prepared, values bound by SeaORM's own binder) and read into
/// SeaORM's results.
pub(crate) trait Driver: Database {
    /// Runs a statement.
    fn execute(
        conn: &mut PoolConnection<Self>,
        statement: Statement,
    ) -> BoxFuture<'_, Result<ExecResult, DbErr>>;

    /// Runs `sql` unprepared, as one simple query.
    fn execute_unprepared(
        conn: &mut PoolConnection<Self>,
        sql: String,
    ) -> BoxFuture<'_, Result<ExecResult, DbErr>>;

    /// Its first row, if any.
    fn query_one(
        conn: &mut PoolConnection<Self>,
        statement: Statement,
    ) -> BoxFuture<'_, Result<Option<QueryResult>, DbErr>>;

    /// All its rows.
    fn query_all(
        conn: &mut PoolConnection<Self>,
        statement: Statement,
    ) -> BoxFuture<'_, Result<Vec<QueryResult>, DbErr>>;

    /// Its rows as they are read.
    fn fetch(
        conn: &mut PoolConnection<Self>,
        statement: Statement,
    ) -> BoxStream<'_, Result<QueryResult, DbErr>>;
}

/// A [`Driver`] for a sqlx database whose rows and results SeaORM reads.
macro_rules! driver {
    ($db:ty) => {
        impl Driver for $db {
            fn execute(
                conn: &mut PoolConnection<Self>,
                statement: Statement,
            ) -> BoxFuture<'_, Result<ExecResult, DbErr>> {
                query::<Self>(statement)
                    .execute(&mut **conn)
                    .map(|done| done.map(Into::into).map_err(sqlx_error_to_exec_err))
                    .boxed()
            }

            fn execute_unprepared(
                conn: &mut PoolConnection<Self>,
                sql: String,
            ) -> BoxFuture<'_, Result<ExecResult, DbErr>> {
                conn.execute(sea_orm::sqlx::raw_sql(AssertSqlSafe(sql)))
                    .map(|done| done.map(Into::into).map_err(sqlx_error_to_exec_err))
                    .boxed()
            }

            fn query_one(
                conn: &mut PoolConnection<Self>,
                statement: Statement,
            ) -> BoxFuture<'_, Result<Option<QueryResult>, DbErr>> {
                query::<Self>(statement)
                    .fetch_optional(&mut **conn)
                    .map(|row| {
                        row.map(|row| row.map(Into::into))
                            .map_err(sqlx_error_to_query_err)
                    })
                    .boxed()
            }

            fn query_all(
                conn: &mut PoolConnection<Self>,
                statement: Statement,
            ) -> BoxFuture<'_, Result<Vec<QueryResult>, DbErr>> {
                query::<Self>(statement)
                    .fetch_all(&mut **conn)
                    .map(|rows| {
                        rows.map(|rows| rows.into_iter().map(Into::into).collect())
                            .map_err(sqlx_error_to_query_err)
                    })
                    .boxed()
            }

            fn fetch(
                conn: &mut PoolConnection<Self>,
                statement: Statement,
            ) -> BoxStream<'_, Result<QueryResult, DbErr>> {
                query::<Self>(statement)
                    .fetch(&mut **conn)
                    .map_ok(Into::into)
                    .map_err(sqlx_error_to_query_err)
                    .boxed()
            }
        }
    };
}

#[cfg(feature = "postgres")]
driver!(sea_orm::sqlx::Postgres);
#[cfg(feature = "mysql")]
driver!(sea_orm::sqlx::MySql);

/// A pooled connection inside a transaction of the library's own, and the savepoints
/// open in it. Whenever it leaves the library's hands with the transaction still open (a
/// unit dropped without commit, a future cancelled), the rollback is queued before the
/// connection goes back to the pool, which sends it before anyone else can borrow the
/// connection: the set-up never reaches the next borrower.
struct Conn<DB: Driver> {
    conn: PoolConnection<DB>,
    /// The savepoints open, innermost last, by number.
    savepoints: Vec<u64>,
    /// The number the next savepoint is named by.
    next: u64,
    /// Set once the transaction has committed or rolled back: a savepoint that outlives
    /// it runs nothing (its statements would otherwise run outside any transaction).
    ended: bool,
}

impl<DB: Driver> Drop for Conn<DB> {
    fn drop(&mut self) {
        while DB::TransactionManager::get_transaction_depth(&self.conn) > 0 {
            DB::TransactionManager::start_rollback(&mut self.conn);
        }
    }
}

/// What the levels of one transaction share: the connection, and the levels dropped
/// while it was busy.
struct Shared<DB: Driver> {
    conn: Mutex<Conn<DB>>,
    /// Levels dropped without commit, rolled back before anything else runs on the
    /// connection (a `Drop` cannot wait for the connection): `None` is the transaction.
    abandoned: std::sync::Mutex<Vec<Option<u64>>>,
}

/// A pool connection taken for a `BEGIN` of the library's own. Until the
/// transaction is known to be open, dropping it closes the connection instead of
/// returning it: a `BEGIN` cancelled half-way may have opened a transaction, with the
/// tenant's setting, that sqlx does not know about and would hand to the next borrower.
struct Beginning<DB: Database>(Option<PoolConnection<DB>>);

impl<DB: Database> Drop for Beginning<DB> {
    fn drop(&mut self) {
        if let Some(conn) = &mut self.0 {
            conn.close_on_drop();
        }
    }
}

/// A transaction begun with a set-up of the library's own (see the module), or a
/// savepoint inside one. Statements are sent as SeaORM sends them on a transaction:
/// prepared, their values bound.
pub(crate) struct OwnTxn<DB: Driver> {
    shared: Arc<Shared<DB>>,
    /// `None` for the transaction, the savepoint's number for a savepoint.
    level: Option<u64>,
    /// Whether it is still to be committed or rolled back.
    open: bool,
}

/// The transaction has ended (committed or rolled back, or its set-up failed), so a
/// level of it runs nothing.
fn ended() -> DbErr {
    DbErr::Custom(
        "this transaction has already ended: a savepoint cannot outlive the transaction \
         (or savepoint) it was begun in"
            .to_owned(),
    )
}

impl<DB: Driver> OwnTxn<DB> {
    /// Takes a connection of `pool` and begins a transaction on it: with `begin`, one
    /// simple query, `BEGIN;` then the set-up, made of the audited writers of literals
    /// only (PostgreSQL); else a plain `BEGIN`. When it fails (a tenant schema that does
    /// not exist), the transaction it opened is rolled back before the connection goes
    /// back to the pool.
    pub(crate) async fn begin(pool: &Pool<DB>, begin: Option<String>) -> Result<Self, DbErr> {
        let conn = pool.acquire().await.map_err(sqlx_conn_acquire_err)?;
        let mut beginning = Beginning(Some(conn));
        let Some(conn) = beginning.0.as_mut() else {
            return Err(DbErr::Custom("no connection to begin on".to_owned()));
        };
        let begin = begin.map(|sql| AssertSqlSafe(sql).into_sql_str());
        let begun = DB::TransactionManager::begin(conn, begin).await;
        if let Err(error) = begun {
            // The failed statement left the server in an aborted transaction that sqlx
            // does not count: end it, and give the connection back; if even that fails,
            // the connection is closed (`beginning`). The error is the `BEGIN`'s.
            let ended = DB::execute_unprepared(conn, "ROLLBACK".to_owned()).await;
            if ended.is_ok() {
                beginning.0.take();
            }
            return Err(sqlx_error_to_query_err(error));
        }
        match beginning.0.take() {
            Some(conn) => Ok(OwnTxn {
                shared: Arc::new(Shared {
                    conn: Mutex::new(Conn {
                        conn,
                        savepoints: Vec::new(),
                        next: 0,
                        ended: false,
                    }),
                    abandoned: std::sync::Mutex::new(Vec::new()),
                }),
                level: None,
                open: true,
            }),
            None => Err(DbErr::Custom("no connection to begin on".to_owned())),
        }
    }

    /// The connection, once the levels dropped without commit are rolled back; refused
    /// once the transaction has ended.
    async fn conn(&self) -> Result<MutexGuard<'_, Conn<DB>>, DbErr> {
        let mut conn = self.shared.conn.lock().await;
        let abandoned = match self.shared.abandoned.lock() {
            Ok(abandoned) => abandoned.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        for level in abandoned {
            match level {
                None if !conn.ended => {
                    DB::TransactionManager::rollback(&mut conn.conn)
                        .await
                        .map_err(sqlx_error_to_query_err)?;
                    conn.savepoints.clear();
                    conn.ended = true;
                }
                None => {}
                Some(id) => {
                    if let Some(at) = conn.savepoints.iter().position(|open| *open == id) {
                        run(
                            &mut conn.conn,
                            &format!("ROLLBACK TO SAVEPOINT tenancy_{id}"),
                        )
                        .await?;
                        conn.savepoints.truncate(at);
                    }
                }
            }
            // Forgotten only once rolled back: a cancelled rollback is made again.
            if let Ok(mut abandoned) = self.shared.abandoned.lock() {
                abandoned.retain(|other| *other != level);
            }
        }
        // A savepoint ended with an enclosing level (its release or rollback) runs nothing.
        let gone = self.level.is_some_and(|id| !conn.savepoints.contains(&id));
        if conn.ended || gone {
            return Err(ended());
        }
        Ok(conn)
    }

    /// A savepoint in this transaction (or savepoint), on the same connection.
    pub(crate) async fn savepoint(&self) -> Result<Self, DbErr> {
        let mut conn = self.conn().await?;
        let id = conn.next;
        conn.next += 1;
        run(&mut conn.conn, &format!("SAVEPOINT tenancy_{id}")).await?;
        conn.savepoints.push(id);
        Ok(OwnTxn {
            shared: self.shared.clone(),
            level: Some(id),
            open: true,
        })
    }

    /// Commits the transaction, with every savepoint still open in it (releases the
    /// savepoint, with those open inside it).
    pub(crate) async fn commit(mut self) -> Result<(), DbErr> {
        self.end(true).await
    }

    /// Rolls back the transaction (to the savepoint, discarding those inside it).
    pub(crate) async fn rollback(mut self) -> Result<(), DbErr> {
        self.end(false).await
    }

    async fn end(&mut self, commit: bool) -> Result<(), DbErr> {
        let mut conn = self.conn().await?;
        match self.level {
            None => {
                let conn = &mut *conn;
                if commit {
                    DB::TransactionManager::commit(&mut conn.conn).await
                } else {
                    DB::TransactionManager::rollback(&mut conn.conn).await
                }
                .map_err(sqlx_error_to_query_err)?;
                conn.savepoints.clear();
                conn.ended = true;
            }
            Some(id) => {
                // Open: `conn()` refuses a savepoint that is not.
                let at = conn
                    .savepoints
                    .iter()
                    .position(|open| *open == id)
                    .unwrap_or(conn.savepoints.len());
                if commit {
                    // Off the list before it is sent: a release cancelled on its way may
                    // have happened, and rolling back to a savepoint that no longer
                    // exists would abort the whole transaction.
                    conn.savepoints.truncate(at);
                    run(&mut conn.conn, &format!("RELEASE SAVEPOINT tenancy_{id}")).await?;
                } else {
                    // Kept (not released): rolling back to it again, after a rollback
                    // cancelled on its way, is harmless.
                    run(
                        &mut conn.conn,
                        &format!("ROLLBACK TO SAVEPOINT tenancy_{id}"),
                    )
                    .await?;
                    conn.savepoints.truncate(at);
                }
            }
        }
        drop(conn);
        self.open = false;
        Ok(())
    }

    pub(crate) async fn execute(&self, statement: Statement) -> Result<ExecResult, DbErr> {
        DB::execute(&mut self.conn().await?.conn, statement).await
    }

    pub(crate) async fn execute_unprepared(&self, sql: &str) -> Result<ExecResult, DbErr> {
        DB::execute_unprepared(&mut self.conn().await?.conn, sql.to_owned()).await
    }

    pub(crate) async fn query_one(
        &self,
        statement: Statement,
    ) -> Result<Option<QueryResult>, DbErr> {
        DB::query_one(&mut self.conn().await?.conn, statement).await
    }

    pub(crate) async fn query_all(&self, statement: Statement) -> Result<Vec<QueryResult>, DbErr> {
        DB::query_all(&mut self.conn().await?.conn, statement).await
    }

    /// The rows of `statement`, read as they are consumed; the connection is held until
    /// the stream is dropped.
    pub(crate) async fn stream(&self, statement: Statement) -> Result<OwnRows<'_, DB>, DbErr> {
        let conn = self.conn().await?;
        Ok(OwnRowsBuilder {
            conn,
            rows_builder: |conn: &mut MutexGuard<'_, Conn<DB>>| {
                DB::fetch(&mut conn.conn, statement)
            },
        }
        .build())
    }
}

impl<DB: Driver> Drop for OwnTxn<DB> {
    /// A level dropped open rolls back: noted now (a `Drop` cannot wait for the
    /// connection, which a stream or another statement may hold), and rolled back before
    /// anything else runs on the connection, or when the connection is let go ([`Conn`]).
    fn drop(&mut self) {
        if self.open {
            match self.shared.abandoned.lock() {
                Ok(mut abandoned) => abandoned.push(self.level),
                Err(poisoned) => poisoned.into_inner().push(self.level),
            }
        }
    }
}

/// Runs `sql`, made by this module of fixed text and numbers, as one simple query.
async fn run<DB: Driver>(conn: &mut PoolConnection<DB>, sql: &str) -> Result<(), DbErr> {
    DB::execute_unprepared(conn, sql.to_owned())
        .await
        .map(|_| ())
}

/// `statement` as sqlx sends it: prepared, its values bound by SeaORM's binder.
fn query<DB: Database>(statement: Statement) -> sea_orm::sqlx::query::Query<'static, DB, SqlxValues>
where
    SqlxValues: sea_orm::sqlx::IntoArguments<DB>,
{
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

type RowStream<'a> = BoxStream<'a, Result<QueryResult, DbErr>>;

/// Rows read from an [`OwnTxn`]'s connection, which the stream holds.
#[ouroboros::self_referencing]
pub(crate) struct OwnRows<'a, DB: Driver> {
    conn: MutexGuard<'a, Conn<DB>>,
    #[borrows(mut conn)]
    #[not_covariant]
    rows: RowStream<'this>,
}

impl<DB: Driver> Stream for OwnRows<'_, DB> {
    type Item = Result<QueryResult, DbErr>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut()
            .with_rows_mut(|rows| rows.as_mut().poll_next(cx))
    }
}
