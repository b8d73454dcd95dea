//! How a unit of work is scoped on the database side, and the connections a handle runs on.

use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr, Statement,
    StreamTrait, TransactionTrait, Value,
};

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
        Session { statements }
    }

    pub(crate) async fn apply<C: ConnectionTrait>(&self, conn: &C) -> Result<(), DbErr> {
        for statement in &self.statements {
            conn.execute_raw(statement.clone()).await?;
        }
        Ok(())
    }
}

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
