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
    /// Whether the (last) statement also reads the schema's shape, a hash of its latest
    /// migration (`shape` column): statements of the unit carry it in a comment, so that
    /// schemas of different shapes never share a prepared statement.
    shaped: bool,
    /// Whether the statements go as simple queries, unprepared: a text that carries its
    /// value (a `SET LOCAL`, which takes no parameter) must not become one prepared
    /// statement per tenant in the driver's cache.
    simple: bool,
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
            shaped: false,
            simple: false,
        }
    }

    /// A set-up whose text carries its values: `sql` is sent as one simple query (it may
    /// hold several statements, one round trip), never prepared. Only for text made by
    /// the audited writers of literals (`citus::tenant_setting_sql`).
    pub(crate) fn simple(backend: DbBackend, sql: String) -> Self {
        Session {
            statements: vec![Statement::from_string(backend, sql)],
            schema_of: None,
            shaped: false,
            simple: true,
        }
    }

    /// The set-up of a tenant `schema` (PostgreSQL): `search_path` set to it, then
    /// `public` for the global tables, in one statement that also fails when the schema
    /// does not exist (`$2::regnamespace`), so a tenant without a schema never resolves its
    /// tables in `public` ([`Error::UnknownTenant`]).
    ///
    /// With `version_table` (the migrations table in each tenant schema), the same
    /// statement reads a hash of the schema's latest migration, its *shape*. PostgreSQL
    /// ties a prepared statement to the row type it was first planned for; with one pool
    /// and a `search_path` per unit, tenants whose schemas differ (halfway through a fleet
    /// migration) would share the driver's prepared statements and fail with "cached plan
    /// must not change result type". The unit's statements carry the shape in a comment,
    /// so each shape gets statements of its own, and tenants of one shape share them.
    ///
    /// `apart` sends the shape's read as a statement of its own, after the setting: on
    /// Citus a statement that reads a table of a distributed schema runs on that schema's
    /// node, so a `set_config` in it would set the node's `search_path`, not the
    /// coordinator's.
    pub(crate) fn schema(
        schema: &Identifier,
        tenant: String,
        version_table: Option<&Identifier>,
        apart: bool,
    ) -> Self {
        const SET: &str = "SELECT set_config('search_path', $1, true), $2::regnamespace";
        // The names are validated identifiers, quoted: the statement is the same for
        // every unit of the tenant, so the driver prepares it once.
        let shape = version_table.map(|table| {
            format!(
                "(SELECT hashtext(coalesce(max(version), '')) FROM {}.{}) AS shape",
                schema.quoted(),
                table.quoted()
            )
        });
        let set = |sql: String| {
            Statement::from_sql_and_values(
                DbBackend::Postgres,
                sql,
                [
                    Value::from(format!("{}, public", schema.quoted())),
                    Value::from(schema.as_str()),
                ],
            )
        };
        let statements = match shape {
            None => vec![set(SET.to_owned())],
            Some(shape) if apart => vec![
                set(SET.to_owned()),
                Statement::from_string(DbBackend::Postgres, format!("SELECT {shape}")),
            ],
            Some(shape) => vec![set(format!("{SET}, {shape}"))],
        };
        Session {
            statements,
            schema_of: Some(tenant),
            shaped: version_table.is_some(),
            simple: false,
        }
    }

    /// Whether this is a tenant schema's set-up.
    pub(crate) fn is_schema(&self) -> bool {
        self.schema_of.is_some()
    }

    /// Runs the set-up on `conn`; returns the tag the unit's statements carry (the
    /// schema's shape), if any.
    /// `pool` is where the unit's transaction was begun: when the set-up fails because a
    /// relation is missing, it tells a tenant without a schema from a schema without its
    /// migrations table (the unit's own transaction is aborted by then).
    pub(crate) async fn apply<C, P>(&self, conn: &C, pool: &P) -> Result<Tag, Error>
    where
        C: ConnectionTrait,
        P: ConnectionTrait,
    {
        let mut tag = Tag::default();
        for (n, statement) in self.statements.iter().enumerate() {
            let last = n + 1 == self.statements.len();
            let outcome = if self.shaped && last {
                conn.query_one_raw(statement.clone())
                    .await
                    .and_then(|row| match row {
                        Some(row) => row.try_get::<i32>("", "shape").map(Some),
                        None => Ok(None),
                    })
                    .map(|shape| {
                        tag = Tag::shape(shape.unwrap_or_default());
                    })
            } else {
                if self.simple {
                    conn.execute_unprepared(&statement.sql).await.map(|_| ())
                } else {
                    conn.execute_raw(statement.clone()).await.map(|_| ())
                }
            };
            if let Err(error) = outcome {
                let state = sql_state(&error);
                let missing_schema = match (&self.schema_of, state.as_deref()) {
                    (Some(_), Some("3F000")) => true,
                    (Some(_), Some("42P01")) => !self.schema_exists(pool).await?,
                    _ => false,
                };
                return Err(match &self.schema_of {
                    Some(tenant) if missing_schema => Error::UnknownTenant {
                        tenant: tenant.clone(),
                    },
                    Some(tenant) if state.as_deref() == Some("42P01") => Error::Config(format!(
                        "tenant {tenant}'s schema has no migrations table to read its shape \
                         from: provision tenant schemas with `create_tenant_schema`, or name \
                         the table with `TenancyBuilder::schema_version_table` (`None` when \
                         tenant schemas never differ)"
                    )),
                    _ => error.into(),
                });
            }
        }
        Ok(tag)
    }

    /// Whether the schema the set-up names exists, asked on `pool`.
    async fn schema_exists<P: ConnectionTrait>(&self, pool: &P) -> Result<bool, Error> {
        let Some(statement) = self.statements.last() else {
            return Ok(true);
        };
        let Some(schema) = statement.values.as_ref().and_then(|v| v.0.get(1)).cloned() else {
            return Ok(true);
        };
        schema_exists(pool, schema).await
    }
}

/// Runs `session`, if any, first in `txn`, a transaction just begun on `pool`: the one way
/// a unit of work is set up (handles, transactions, streams, fan-outs and moves all come
/// here). Returns the tag the unit's statements carry, `None` when there is no set-up.
pub(crate) async fn set_up<P: ConnectionTrait>(
    txn: &DatabaseTransaction,
    pool: &P,
    session: Option<&Session>,
) -> Result<Option<Tag>, Error> {
    match session {
        Some(session) => Ok(Some(session.apply(txn, pool).await?)),
        None => Ok(None),
    }
}

/// Begins a unit of work on `pool`: a transaction with `session`, if any, run first
/// ([`set_up`]). Returns the transaction and the tag its statements carry (`None` when
/// there is no set-up: the caller's own tag stands).
pub(crate) async fn begin_unit<P>(
    pool: &P,
    session: Option<&Session>,
) -> Result<(DatabaseTransaction, Option<Tag>), Error>
where
    P: ConnectionTrait + TransactionTrait<Transaction = DatabaseTransaction>,
{
    let txn = pool.begin().await?;
    let tag = set_up(&txn, pool, session).await?;
    Ok((txn, tag))
}

/// Whether the PostgreSQL schema named `schema` exists, asked on `conn` (a server that
/// answers with no row is taken to hold it: the next statement then says what is missing).
pub(crate) async fn schema_exists<C: ConnectionTrait>(
    conn: &C,
    schema: impl Into<Value>,
) -> Result<bool, Error> {
    let row = conn
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT to_regnamespace($1) IS NOT NULL AS present",
            [schema.into()],
        ))
        .await?;
    Ok(match row {
        Some(row) => row.try_get::<bool>("", "present")?,
        None => true,
    })
}

/// The comment a unit's statements carry (see [`Session::schema`]): empty, or
/// `/* tenancy shape <n> */ `, made only of digits and fixed text.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Tag(Option<std::sync::Arc<str>>);

impl Tag {
    /// A tag of the given text (made by the crate: fixed text and numbers only).
    pub(crate) fn text_of(text: String) -> Self {
        Tag(Some(text.into()))
    }

    /// The tag's text, if any.
    pub(crate) fn text(&self) -> Option<&str> {
        self.0.as_deref()
    }

    /// This tag, with `other`'s text before it.
    pub(crate) fn then(self, other: &Tag) -> Self {
        match (self.0, &other.0) {
            (None, _) => other.clone(),
            (Some(mine), None) => Tag(Some(mine)),
            (Some(mine), Some(theirs)) => Tag(Some(format!("{theirs}{mine}").into())),
        }
    }

    fn shape(hash: i32) -> Self {
        Tag(Some(format!("/* tenancy shape {hash} */ ").into()))
    }

    /// `statement` as a tagged unit sends it (streams take a statement, not a connection).
    pub(crate) fn apply(&self, mut statement: Statement) -> Statement {
        if let Some(tag) = &self.0 {
            statement.sql = format!("{tag}{}", statement.sql);
        }
        statement
    }
}

/// A connection whose statements carry a unit's [`Tag`]: the driver caches prepared
/// statements by their text, so tagged statements of different schema shapes never share
/// one. Everything else passes through.
pub(crate) struct Tagged<'a, C> {
    pub(crate) inner: &'a C,
    pub(crate) tag: &'a Tag,
}

#[sea_orm::prelude::async_trait::async_trait]
impl<C: ConnectionTrait> ConnectionTrait for Tagged<'_, C> {
    fn get_database_backend(&self) -> DbBackend {
        self.inner.get_database_backend()
    }

    async fn execute_raw(&self, stmt: Statement) -> Result<sea_orm::ExecResult, DbErr> {
        self.inner.execute_raw(self.tag.apply(stmt)).await
    }

    async fn execute_unprepared(&self, sql: &str) -> Result<sea_orm::ExecResult, DbErr> {
        self.inner.execute_unprepared(sql).await
    }

    async fn query_one_raw(&self, stmt: Statement) -> Result<Option<sea_orm::QueryResult>, DbErr> {
        self.inner.query_one_raw(self.tag.apply(stmt)).await
    }

    async fn query_all_raw(&self, stmt: Statement) -> Result<Vec<sea_orm::QueryResult>, DbErr> {
        self.inner.query_all_raw(self.tag.apply(stmt)).await
    }

    fn support_returning(&self) -> bool {
        self.inner.support_returning()
    }

    fn is_mock_connection(&self) -> bool {
        self.inner.is_mock_connection()
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
    ($pool:expr, $session:expr, $tag:expr, |$conn:ident| $body:expr) => {{
        let pool = $pool;
        match $session {
            None => {
                let tagged = $crate::scope::Tagged {
                    inner: pool,
                    tag: $tag,
                };
                let $conn = &tagged;
                $body
            }
            Some(session) => {
                // Boxed, here and at the commit: a unit with a set-up makes round trips
                // of its own, and the statement's future should not carry their futures.
                let (txn, tag) =
                    ::std::boxed::Box::pin($crate::scope::begin_unit(pool, Some(session))).await?;
                // The set-up's tag (a schema's shape) after the caller's (a fan-out's mark).
                let tag = tag.unwrap_or_default().then($tag);
                let out = {
                    let tagged = $crate::scope::Tagged {
                        inner: &txn,
                        tag: &tag,
                    };
                    let $conn = &tagged;
                    $body
                };
                ::std::boxed::Box::pin(::sea_orm::TransactionSession::commit(txn)).await?;
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
        in_unit!(
            handle.unit_connection(),
            handle.session(),
            handle.tag(),
            |$conn| $body
        )
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sql(session: &Session) -> Vec<String> {
        session.statements.iter().map(|s| s.sql.clone()).collect()
    }

    /// A tenant schema's set-up: one statement on PostgreSQL; on Citus the shape's read
    /// apart, after the setting, so the setting runs on the coordinator.
    #[test]
    fn a_schema_set_up_reads_its_shape_apart_on_citus() {
        let schema = Identifier::new("tenant_7").unwrap();
        let table = Identifier::new("seaql_migrations").unwrap();
        let shape = "(SELECT hashtext(coalesce(max(version), '')) FROM \"tenant_7\".\
                     \"seaql_migrations\") AS shape";
        let together = Session::schema(&schema, "7".to_owned(), Some(&table), false);
        assert_eq!(
            sql(&together),
            [format!(
                "SELECT set_config('search_path', $1, true), $2::regnamespace, {shape}"
            )]
        );
        let apart = Session::schema(&schema, "7".to_owned(), Some(&table), true);
        assert_eq!(
            sql(&apart),
            [
                "SELECT set_config('search_path', $1, true), $2::regnamespace".to_owned(),
                format!("SELECT {shape}"),
            ]
        );
        assert!(apart.shaped && !apart.simple);
        assert_eq!(
            apart.statements[0].values.as_ref().unwrap().0,
            [Value::from("\"tenant_7\", public"), Value::from("tenant_7")]
        );
    }

    /// A simple set-up goes unprepared, as one text.
    #[test]
    fn a_simple_set_up_is_one_unprepared_text() {
        let session = Session::simple(DbBackend::Postgres, "SET LOCAL a.b = E'1'".to_owned());
        assert!(session.simple && !session.shaped);
        assert_eq!(sql(&session), ["SET LOCAL a.b = E'1'"]);
        assert!(session.statements[0].values.is_none());
    }
}
