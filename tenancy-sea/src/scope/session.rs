//! How a unit of work is scoped on the database side: the set-up it runs first
//! ([`Session`]), as bound statements or, on PostgreSQL, written into its `BEGIN`.

use super::Tag;
use super::ident::{literal, quote_identifier};
use super::shape::{Shapes, marker_exists_sql, marker_name, shape_sql};
use crate::error::Error;
use sea_orm::{ConnectionTrait, DbBackend, DbErr, Statement, Value};
use std::borrow::Cow;
use std::sync::Arc;
use tenancy_core::Identifier;

/// What scopes a unit of work, run first in each transaction: transaction-local settings
/// (never a session-level `SET`, which would leak to the next borrower of a pooled
/// connection), as statements with bound values or, where the set-up can travel with the
/// `BEGIN`, as `SET LOCAL` with values written by the one writer of literals.
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
    /// The same set-up written into the simple query that begins its transaction, when it
    /// can be (PostgreSQL): `BEGIN;` then the set-up, its values written by the one writer
    /// of literals, so that the unit opens and is scoped in one round trip. Still
    /// transaction-local: `SET LOCAL`, which PostgreSQL runs without planning (a
    /// `SELECT set_config(..)` would be planned on every unit, since a simple query is not
    /// prepared). For a tenant schema, a `SELECT` that fails when the schema does not
    /// exist follows. See [`begin_text`](Self::begin_text).
    begin: Option<String>,
    /// For a tenant schema whose shape is read: the shape guessed and confirmed in the
    /// `BEGIN` by a lock of its marker (see [`super::shape`]).
    guessing: Option<Guessing>,
}

/// How a unit of a tenant schema guesses its shape and checks the guess in its `BEGIN`.
#[derive(Debug)]
struct Guessing {
    shapes: Arc<Shapes>,
    schema: String,
    /// The `BEGIN` up to the marker's name: `BEGIN; SET LOCAL search_path = "s", public;
    /// LOCK TABLE "s"."`.
    begin: String,
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
        // Only custom settings (`prefix.name`, plain strings): a list setting such as
        // `search_path` reads a quoted `SET` value as one element, not as a list.
        let custom = settings.iter().all(|(name, _)| name.contains('.'));
        let begin = (backend == DbBackend::Postgres && !settings.is_empty() && custom)
            .then(|| {
                let mut sql = "BEGIN".to_owned();
                for (name, value) in settings {
                    // Each part of the name quoted: `"tenancy"."tenant_id"`.
                    let name: Vec<String> = name
                        .split('.')
                        .map(|part| quote_identifier(part, DbBackend::Postgres))
                        .collect();
                    sql.push_str(&format!(
                        "; SET LOCAL {} = {}",
                        name.join("."),
                        literal(value)?
                    ));
                }
                Some(sql)
            })
            .flatten();
        Session {
            statements,
            schema_of: None,
            shaped: false,
            simple: false,
            begin,
            guessing: None,
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
            begin: None,
            guessing: None,
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
    ///
    /// Without a shape to read, the set-up travels with the `BEGIN`
    /// ([`begin_text`](Self::begin_text)). With one, the rows of a `BEGIN` are not
    /// returned, so the statement reads the shape in a round trip of its own, and whether
    /// the schema holds the shape's marker: with `shapes` (given where migrations keep
    /// markers, `Tenancy::marked_version_table`; never used `apart`), the next units
    /// guess that shape and confirm it in their `BEGIN` by locking the marker (see
    /// [`super::shape`]), and come back here only when the guess misses.
    pub(crate) fn schema(
        schema: &Identifier,
        tenant: String,
        version_table: Option<&Identifier>,
        apart: bool,
        shapes: Option<&Arc<Shapes>>,
    ) -> Self {
        const SET: &str = "SELECT set_config('search_path', $1, true), $2::regnamespace";
        // The names are validated identifiers, quoted: the statement is the same for
        // every unit of the tenant, so the driver prepares it once.
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
        let statements = match version_table {
            None => vec![set(SET.to_owned())],
            Some(table) if apart => vec![
                set(SET.to_owned()),
                Statement::from_string(
                    DbBackend::Postgres,
                    format!("SELECT ({}) AS shape", shape_sql(schema, table)),
                ),
            ],
            Some(table) => vec![set(format!(
                "{SET}, m.shape, {} AS marked FROM ({}) AS m",
                marker_exists_sql("$2::text", "m.shape"),
                shape_sql(schema, table)
            ))],
        };
        let guessing = shapes
            .filter(|_| !apart && version_table.is_some())
            .map(|shapes| {
                let quoted = schema.quoted();
                Guessing {
                    shapes: shapes.clone(),
                    schema: schema.as_str().to_owned(),
                    begin: format!(
                        "BEGIN; SET LOCAL search_path = {quoted}, public; LOCK TABLE {quoted}.\""
                    ),
                }
            });
        let begin = (!apart && version_table.is_none())
            .then(|| {
                let name = literal(schema.as_str())?;
                // The schema quoted as an identifier (a validated one), then `public`; the
                // `SELECT` fails when the schema does not exist.
                Some(format!(
                    "BEGIN; SET LOCAL search_path = {}, public; SELECT {name}::regnamespace",
                    schema.quoted()
                ))
            })
            .flatten();
        Session {
            statements,
            schema_of: Some(tenant),
            shaped: version_table.is_some(),
            simple: false,
            begin,
            guessing,
        }
    }

    /// The set-up as the text of a `BEGIN`, when it can travel with the `BEGIN`, and the
    /// tag the unit's statements then carry: a PostgreSQL row-level security setting, a
    /// tenant schema's `search_path` when no shape is read, or the `search_path` and the
    /// lock of the marker of the shape guessed (the shape's tag). `None` otherwise: the
    /// unit begins, then runs [`apply`](Self::apply).
    pub(crate) fn begin_text(&self) -> Option<(Cow<'_, str>, Tag)> {
        if let Some(begin) = &self.begin {
            return Some((Cow::Borrowed(begin), Tag::default()));
        }
        let guessing = self.guessing.as_ref()?;
        let shape = guessing.shapes.guess(&guessing.schema)?;
        let sql = format!(
            "{}{}\" IN ACCESS SHARE MODE",
            guessing.begin,
            marker_name(shape)
        );
        Some((Cow::Owned(sql), Tag::shape(shape)))
    }

    /// Whether `error`, from a `BEGIN` of [`begin_text`](Self::begin_text), is its guess
    /// of the shape missing: the marker is not there (`42P01`; the schema exists, or the
    /// error would be `3F000`) or may not be locked (`42501`). The unit then begins again
    /// and reads the shape.
    pub(crate) fn missed(&self, error: &DbErr) -> bool {
        let Some(guessing) = &self.guessing else {
            return false;
        };
        let denied = match sql_state(error).as_deref() {
            Some("42P01") => false,
            Some("42501") => true,
            _ => return false,
        };
        tracing::debug!(
            schema = %guessing.schema,
            denied,
            "tenant schema's shape guess missed: reading its shape"
        );
        #[cfg(feature = "metrics")]
        ::metrics::counter!(super::METRIC_SHAPE_MISSES).increment(1);
        guessing.shapes.missed(&guessing.schema, denied);
        true
    }

    /// Whether this is a tenant schema's set-up.
    pub(crate) fn is_schema(&self) -> bool {
        self.schema_of.is_some()
    }

    /// Runs the set-up on `conn`; returns the tag the unit's statements carry (the
    /// schema's shape), if any. A failure is the database's error as it is: the caller
    /// ends the unit, then asks [`explain`](Self::explain) what it means.
    pub(crate) async fn apply<C: ConnectionTrait>(&self, conn: &C) -> Result<Tag, DbErr> {
        let mut tag = Tag::default();
        for (n, statement) in self.statements.iter().enumerate() {
            let last = n + 1 == self.statements.len();
            if self.shaped && last {
                let row = conn.query_one_raw(statement.clone()).await?;
                let (shape, marked) = match row {
                    Some(row) if self.guessing.is_some() => (
                        row.try_get::<i32>("", "shape")?,
                        row.try_get::<bool>("", "marked")?,
                    ),
                    Some(row) => (row.try_get::<i32>("", "shape")?, false),
                    None => (0, false),
                };
                if let Some(guessing) = &self.guessing {
                    tracing::debug!(
                        schema = %guessing.schema,
                        shape,
                        marked,
                        "tenant schema's shape read the long way"
                    );
                    #[cfg(feature = "metrics")]
                    ::metrics::counter!(super::METRIC_SHAPE_READS).increment(1);
                    guessing.shapes.read(&guessing.schema, shape, marked);
                }
                tag = Tag::shape(shape);
            } else if self.simple {
                conn.execute_unprepared(&statement.sql).await?;
            } else {
                conn.execute_raw(statement.clone()).await?;
            }
        }
        Ok(tag)
    }

    /// What a failed set-up means: a tenant whose schema does not exist is
    /// [`Error::UnknownTenant`]; a schema without the migrations table its shape is read
    /// from is a configuration error; anything else is the database's error. `pool` is
    /// asked whether the schema exists: the unit must have ended first, so that its
    /// connection is free for the question (a pool of one connection would wait forever).
    pub(crate) async fn explain<P: ConnectionTrait>(&self, error: DbErr, pool: &P) -> Error {
        let state = sql_state(&error);
        let missing_schema = match (&self.schema_of, state.as_deref()) {
            (Some(_), Some("3F000")) => true,
            (Some(_), Some("42P01")) => match self.schema_exists(pool).await {
                Ok(exists) => !exists,
                Err(error) => return error,
            },
            _ => false,
        };
        match &self.schema_of {
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
        }
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
                ::std::boxed::Box::pin(txn.commit()).await?;
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
mod tests;
