//! How a unit of work is scoped on the database side: the set-up it runs first
//! ([`Session`]), as bound statements or, on PostgreSQL, written into its `BEGIN`.

use super::Tag;
use super::ident::{literal, quote_identifier};
use crate::error::Error;
use sea_orm::{ConnectionTrait, DbBackend, DbErr, Statement, Value};
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
    /// exist follows. See [`begin_sql`](Self::begin_sql).
    begin: Option<String>,
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
    /// ([`begin_sql`](Self::begin_sql)). With one it does not: rows of a `BEGIN` are not
    /// returned, and checking a shape read before, in the `BEGIN`'s simple query, makes
    /// PostgreSQL plan that read on every unit, which measured slower than the prepared
    /// read in a round trip of its own (1.41x row level for one lookup, against
    /// 1.20–1.32x, on the local server: see the benchmarks).
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
        }
    }

    /// The set-up as the text of a `BEGIN`, when it can travel with the `BEGIN`: a
    /// PostgreSQL row-level security setting, or a tenant schema's `search_path` when no
    /// shape is read. `None` otherwise: the unit begins, then runs
    /// [`apply`](Self::apply).
    pub(crate) fn begin_sql(&self) -> Option<&str> {
        self.begin.as_deref()
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
                let shape = match row {
                    Some(row) => row.try_get::<i32>("", "shape")?,
                    None => 0,
                };
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

    /// A row-level security set-up travels with `BEGIN`, its values written as escaped
    /// literals: a hostile id stays one string constant.
    #[test]
    fn a_setting_travels_with_begin_as_literals() {
        let session = Session::set_config(
            DbBackend::Postgres,
            &[(
                "tenancy.tenant_id",
                r"x', true); DROP TABLE t; --\".to_owned(),
            )],
        );
        assert_eq!(
            session.begin_sql().unwrap(),
            r#"BEGIN; SET LOCAL "tenancy"."tenant_id" = E'x'', true); DROP TABLE t; --\\'"#
        );
        // Not on another backend; not for a value PostgreSQL cannot hold.
        let mysql = Session::set_config(DbBackend::MySql, &[("a.b", "1".to_owned())]);
        assert!(mysql.begin_sql().is_none());
        let nul = Session::set_config(DbBackend::Postgres, &[("a.b", "1\0".to_owned())]);
        assert!(nul.begin_sql().is_none());
        // Citus' `SET LOCAL` set-up never does.
        let citus = Session::simple(DbBackend::Postgres, "SET LOCAL a.b = E'1'".to_owned());
        assert!(citus.begin_sql().is_none());
        // Nor for a list setting.
        let path = Session::set_config(DbBackend::Postgres, &[("search_path", "a, b".to_owned())]);
        assert!(path.begin_sql().is_none());
    }

    /// A tenant schema's set-up travels with `BEGIN` when no shape is read, never on
    /// Citus, and not when a shape is read.
    #[test]
    fn a_schema_set_up_travels_with_begin_without_a_shape() {
        let schema = Identifier::new("tenant_7").unwrap();
        let table = Identifier::new("seaql_migrations").unwrap();
        let plain = Session::schema(&schema, "7".to_owned(), None, false);
        assert_eq!(
            plain.begin_sql(),
            Some(
                "BEGIN; SET LOCAL search_path = \"tenant_7\", public; \
                 SELECT E'tenant_7'::regnamespace"
            )
        );
        assert!(
            Session::schema(&schema, "7".to_owned(), None, true)
                .begin_sql()
                .is_none()
        );
        let shaped = Session::schema(&schema, "7".to_owned(), Some(&table), false);
        assert!(shaped.begin_sql().is_none());
    }
}
