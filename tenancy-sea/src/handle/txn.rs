//! Transactions and raw SQL of a tenant handle: [`TenantDb::begin`],
//! [`TenantDb::transaction`], a [`TenantTxn`]'s commit and rollback, and raw statements
//! ([`IntoRawStatement`]), run only where the database confines them to the tenant.

use super::{TenantDb, TenantTxn};
use crate::entity::SqlTenantId;
use crate::error::{Error, Result};
use crate::scope::RunTraced;
use crate::scope::{HandleConnection, RawSql, SESSION_RESET, TenantConn, UnitTxn, begin_unit};
use sea_orm::{ConnectionTrait, DbBackend, DbErr, ExecResult, QueryResult, Statement, Value};
use std::future::Future;
use std::pin::Pin;

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

impl<T: SqlTenantId, C: HandleConnection> TenantDb<T, C> {
    /// Begins a transaction scoped to the same tenant (under row-level security or
    /// schema per tenant, its set-up runs first). On a [`TenantTxn`] this makes a nested
    /// transaction (a savepoint).
    pub async fn begin(&self) -> Result<TenantTxn<T>> {
        let (txn, tag) = begin_unit(&self.inner.conn, self.inner.session.as_deref()).await?;
        // Inside a transaction that already ran the set-up, its tag stands.
        let tag = tag.unwrap_or_else(|| self.inner.tag.clone());
        Ok(TenantDb {
            inner: TenantConn {
                tag,
                conn: txn,
                tenant: self.inner.tenant.clone(),
                value: self.inner.value.clone(),
                session: None,
                raw_sql: self.inner.raw_sql,
                shard: self.inner.shard.clone(),
                placement: self.inner.placement.clone(),
                unique_ids: self.inner.unique_ids.clone(),
                meter: self.inner.meter.clone(),
            },
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
        let span = self.inner.span("raw", "");
        async {
            self.confined(|conn| Box::pin(conn.query_all_raw(statement)))
                .await
        }
        .traced(span)
        .await
    }

    /// Runs raw SQL that changes rows, in this tenant's scope; confined and refused as
    /// [`query_all_raw`](Self::query_all_raw) is.
    pub async fn execute_raw(&self, statement: impl IntoRawStatement) -> Result<ExecResult> {
        self.check_raw()?;
        let statement = statement.into_statement(self.backend());
        let span = self.inner.span("raw", "");
        async {
            self.confined(|conn| Box::pin(conn.execute_raw(statement)))
                .await
        }
        .traced(span)
        .await
    }

    fn check_raw(&self) -> Result<()> {
        match self.inner.raw_sql {
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
            &'t UnitTxn,
        ) -> Pin<
            Box<dyn Future<Output = std::result::Result<R, DbErr>> + Send + 't>,
        >,
    ) -> Result<R> {
        let txn = self.inner.conn.begin_txn().await?;
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
        self.inner.backend()
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

impl<T: SqlTenantId> TenantTxn<T> {
    /// Commits the transaction.
    pub async fn commit(self) -> Result<()> {
        Ok(self.inner.conn.commit().await?)
    }

    /// Rolls the transaction back; nothing written through it remains.
    pub async fn rollback(self) -> Result<()> {
        Ok(self.inner.conn.rollback().await?)
    }
}
