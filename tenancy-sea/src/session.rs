//! How a unit of work is scoped on the database side, and the connections a handle runs on.

use crate::error::Error;
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr, Statement,
    StreamTrait, TransactionTrait, Value,
};
use tenancy_core::Identifier;

mod sealed {
    pub trait Sealed {}
    impl Sealed for sea_orm::DatabaseConnection {}
    impl Sealed for sea_orm::DatabaseTransaction {}
}

/// The connections a tenant handle can run on: a pool ([`DatabaseConnection`]) or a
/// transaction ([`DatabaseTransaction`]). Sealed: there is no way to make a handle over
/// anything else.
pub trait HandleConnection:
    ConnectionTrait
    + TransactionTrait<Transaction = DatabaseTransaction>
    + StreamTrait
    + Send
    + Sync
    + sealed::Sealed
{
    /// The same kind of connection on another shard's pool: the pool itself for a pool
    /// handle; `None` for a transaction, which never leaves its shard.
    #[doc(hidden)]
    fn rebind(pool: &DatabaseConnection) -> Option<Self>
    where
        Self: Sized;
}

impl HandleConnection for DatabaseConnection {
    fn rebind(pool: &DatabaseConnection) -> Option<Self> {
        Some(pool.clone())
    }
}

impl HandleConnection for DatabaseTransaction {
    fn rebind(_: &DatabaseConnection) -> Option<Self> {
        None
    }
}

/// Statements that scope a unit of work, run first in each transaction: a transaction-local
/// `set_config` (never a session-level `SET`, which would leak to the next borrower of a
/// pooled connection). The values are bound.
#[derive(Debug)]
pub(crate) struct Session {
    statements: Vec<Statement>,
    /// The tenant whose schema the set-up requires, for [`Error::UnknownTenant`] when it
    /// does not exist.
    schema_of: Option<String>,
}

impl Session {
    /// `SELECT set_config($1, $2, true)` for each `(setting, value)`.
    pub(crate) fn set_config(backend: DbBackend, settings: &[(&str, String)]) -> Self {
        let statements = settings
            .iter()
            .map(|(name, value)| {
                Statement::from_sql_and_values(
                    backend,
                    "SELECT set_config($1, $2, true)",
                    [Value::from(*name), Value::from(value.as_str())],
                )
            })
            .collect();
        Session {
            statements,
            schema_of: None,
        }
    }

    /// The set-up of a tenant `schema` (PostgreSQL): `search_path` set to it, then
    /// `public` for the global tables, in one statement that also fails when the schema
    /// does not exist (`$2::regnamespace`), so a tenant without a schema never resolves its
    /// tables in `public` ([`Error::UnknownTenant`]).
    pub(crate) fn schema(schema: &Identifier, tenant: String) -> Self {
        Session {
            statements: vec![Statement::from_sql_and_values(
                DbBackend::Postgres,
                "SELECT set_config('search_path', $1, true), $2::regnamespace",
                [
                    Value::from(format!("{}, public", schema.quoted())),
                    Value::from(schema.as_str()),
                ],
            )],
            schema_of: Some(tenant),
        }
    }

    pub(crate) async fn apply<C: ConnectionTrait>(&self, conn: &C) -> Result<(), Error> {
        for statement in &self.statements {
            if let Err(error) = conn.execute_raw(statement.clone()).await {
                return Err(match &self.schema_of {
                    Some(tenant) if sql_state(&error).as_deref() == Some("3F000") => {
                        Error::UnknownTenant {
                            tenant: tenant.clone(),
                        }
                    }
                    _ => error.into(),
                });
            }
        }
        Ok(())
    }
}

/// The SQLSTATE of a database error, if it is one.
pub(crate) fn sql_state(err: &DbErr) -> Option<String> {
    let (DbErr::Exec(sea_orm::RuntimeErr::SqlxError(inner))
    | DbErr::Query(sea_orm::RuntimeErr::SqlxError(inner))) = err
    else {
        return None;
    };
    match inner.as_ref() {
        sea_orm::sqlx::Error::Database(db) => db.code().map(|code| code.into_owned()),
        _ => None,
    }
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

/// Runs `$body` with `$conn` bound to the connection of one unit of work on `$pool` (a
/// [`HandleConnection`]): the connection itself when there is no set-up (`$session` is
/// `None`: row level, or inside a transaction that already ran it), else a new
/// transaction whose set-up ran first and which commits after `$body`. `?` in `$body`
/// drops the transaction, which rolls back.
macro_rules! in_unit {
    ($pool:expr, $session:expr, |$conn:ident| $body:expr) => {{
        let pool = $pool;
        match $session {
            None => {
                let $conn = pool;
                $body
            }
            Some(session) => {
                let txn = ::sea_orm::TransactionTrait::begin(pool).await?;
                session.apply(&txn).await?;
                let out = {
                    let $conn = &txn;
                    $body
                };
                ::sea_orm::TransactionSession::commit(txn).await?;
                out
            }
        }
    }};
}

/// Runs `$body` with `$conn` bound to the connection of one unit of work of `$handle`
/// (see `in_unit!`): every statement of a tenant handle goes through here.
macro_rules! on_conn {
    ($handle:expr, |$conn:ident| $body:expr) => {{
        let handle = $handle;
        in_unit!(handle.unit_connection(), handle.session(), |$conn| $body)
    }};
}
