//! The write fence of a move, kept by the old shard's database itself: while a tenant
//! moves, a trigger on each of its tables refuses every insert, update and delete of the
//! tenant's rows there, from any process, whatever its cached directory says, with an error
//! the library reads back as [`Error::TenantMoving`](crate::Error::TenantMoving). Reads go
//! on. The move's own removal of the old rows passes the fence by the move's owner token
//! (PostgreSQL, MariaDB) or by lifting it in the removal's transaction (SQLite).
//!
//! The fence is per tenant and exists only during a move: a table that no tenant of it is
//! moving off carries no trigger, so writes pay nothing when no move runs. The tenant's id
//! reaches the trigger's text as a string literal written by [`literal`] only.

use crate::error::{Error, Result};
use crate::scope::quote_identifier;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement, TransactionTrait};

/// The start of the message of a refusal by a fence, followed by the tenant's id.
const REFUSAL: &str = crate::error::FENCE_REFUSAL;

/// How long raising a fence waits for the table locks its triggers need (writers of the
/// table that are in a transaction finish first) before the move gives up, unchanged.
const LOCK_TIMEOUT_MS: u32 = 10_000;

use crate::isolation::PG_FENCE_FUNCTIONS as PG_FUNCTIONS;

/// One table a fence covers: its name, its schema (a tenant schema, or the entity's own)
/// and its tenant column (`None`: every row of the table is the tenant's, as in a tenant
/// schema).
#[derive(Clone, Debug)]
pub(crate) struct FenceTable {
    pub(crate) table: &'static str,
    pub(crate) schema: Option<String>,
    pub(crate) column: Option<&'static str>,
}

impl FenceTable {
    /// The table's name, quoted (and qualified by its schema) for `backend`.
    pub(crate) fn qualified(&self, backend: DbBackend) -> String {
        let quote = |name: &str| quote_identifier(name, backend);
        match &self.schema {
            Some(schema) => format!("{}.{}", quote(schema), quote(self.table)),
            None => quote(self.table),
        }
    }
}

/// The fence of one tenant on one shard for one run of a move.
#[derive(Clone, Debug)]
pub(crate) struct Fence {
    key: String,
    owner: String,
    tables: Vec<FenceTable>,
}

/// `value` as a string literal of `backend`, for the text of a trigger: quotes doubled;
/// on MariaDB/MySQL backslashes doubled too unless the session runs with
/// `NO_BACKSLASH_ESCAPES` (`backslash_escapes` false). A NUL is refused: no tenant id
/// holds one, and not every backend can write it.
pub(crate) fn literal(value: &str, backend: DbBackend, backslash_escapes: bool) -> Result<String> {
    if value.contains('\0') {
        return Err(Error::Config(
            "a value with a NUL character cannot be written into a fence".to_owned(),
        ));
    }
    let mut out = String::with_capacity(value.len() + 2);
    out.push('\'');
    for c in value.chars() {
        match c {
            '\'' => out.push_str("''"),
            '\\' if backend == DbBackend::MySql && backslash_escapes => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('\'');
    Ok(out)
}

/// A name for the fence's trigger on `table` (and, where one trigger serves one kind of
/// write, `op`): the tenant and the table hashed, so names stay short and plain whatever
/// the id holds.
fn trigger_name(key: &str, table: &str, op: &str) -> String {
    let tenant = xxhash_rust::xxh3::xxh3_64(key.as_bytes());
    let table = xxhash_rust::xxh3::xxh3_64(table.as_bytes()) as u32;
    format!("tenancy_fence_{tenant:016x}_{table:08x}{op}")
}

impl Fence {
    /// The fence of `key` (the tenant's id as text) over `tables`, for the move run `owner`.
    pub(crate) fn new(key: String, owner: String, tables: Vec<FenceTable>) -> Self {
        Fence { key, owner, tables }
    }

    /// Raises the fence on `conn`: from when this returns, every write of the tenant's
    /// rows of the tables on this database is refused, and every such write that was in
    /// a transaction when it began has ended (the triggers' locks wait for it). Raising a
    /// fence another run of the move left is done again under this run's owner.
    pub(crate) async fn raise(&self, conn: &DatabaseConnection) -> Result<()> {
        let backend = conn.get_database_backend();
        match backend {
            // One table per transaction: a transaction of the fence holds one table's lock
            // at a time, so it cannot deadlock with another move's clean-up or copy, which
            // take the same tables' locks in another order.
            DbBackend::Postgres => {
                for (at, table) in self.tables.iter().enumerate() {
                    let txn = conn.begin().await?;
                    txn.execute_unprepared(&format!("SET LOCAL lock_timeout = {LOCK_TIMEOUT_MS}"))
                        .await?;
                    // One fence's DDL at a time on a database: two moves making the function
                    // at once would collide on its catalog row.
                    txn.execute_unprepared("SELECT pg_advisory_xact_lock(1952542324, 1)")
                        .await?;
                    if at == 0 {
                        make_pg_functions(&txn).await?;
                    }
                    self.pg_raise(&txn, table).await?;
                    txn.commit().await?;
                }
            }
            DbBackend::Sqlite => {
                let txn = conn.begin().await?;
                for table in &self.tables {
                    for (op, event, when) in self.sqlite_triggers(table)? {
                        let name = trigger_name(&self.key, table.table, op);
                        txn.execute_unprepared(&format!("DROP TRIGGER IF EXISTS \"{name}\""))
                            .await?;
                        txn.execute_unprepared(&format!(
                            "CREATE TRIGGER \"{name}\" BEFORE {event} ON {} {when} BEGIN \
                             SELECT RAISE(ABORT, {}); END",
                            table.qualified(backend),
                            literal(&format!("{REFUSAL}{}", self.key), backend, false)?,
                        ))
                        .await?;
                    }
                }
                txn.commit().await?;
            }
            DbBackend::MySql => {
                // DDL commits on its own here; each trigger waits for the table's metadata
                // lock, so a transaction that wrote to the table ends first. One connection
                // of the pool runs it all (its mode read, its lock timeout set), and its
                // timeout goes back to the default before it returns to the pool.
                let txn = conn.begin().await?;
                txn.execute_unprepared(&format!(
                    "SET SESSION lock_wait_timeout = {}",
                    LOCK_TIMEOUT_MS / 1000
                ))
                .await?;
                let made = self.mysql_raise(&txn).await;
                let reset = txn
                    .execute_unprepared("SET SESSION lock_wait_timeout = DEFAULT")
                    .await;
                made?;
                reset?;
                txn.commit().await?;
            }
            other => return Err(unsupported(other)),
        }
        Ok(())
    }

    /// PostgreSQL's trigger of `table`, made in `txn`.
    async fn pg_raise(&self, txn: &impl ConnectionTrait, table: &FenceTable) -> Result<()> {
        let backend = DbBackend::Postgres;
        // The names and values travel bound; the function quotes them.
        txn.execute_raw(Statement::from_sql_and_values(
            backend,
            "SELECT public.tenancy_fence_set($1::regclass, $2, ARRAY[$3, $4, $5])",
            [
                table.qualified(backend).into(),
                trigger_name(&self.key, table.table, "").into(),
                self.key.clone().into(),
                table.column.unwrap_or("").into(),
                self.owner.clone().into(),
            ],
        ))
        .await?;
        Ok(())
    }

    /// MariaDB/MySQL's triggers of every table, made on `conn` (one connection).
    async fn mysql_raise(&self, conn: &impl ConnectionTrait) -> Result<()> {
        let backend = DbBackend::MySql;
        let escapes = mysql_backslash_escapes(conn).await?;
        for table in &self.tables {
            for (op, event, condition) in self.mysql_triggers(table, escapes)? {
                let name = trigger_name(&self.key, table.table, op);
                conn.execute_unprepared(&format!(
                    "DROP TRIGGER IF EXISTS {}",
                    trigger_of(table, &name)
                ))
                .await?;
                conn.execute_unprepared(&format!(
                    "CREATE TRIGGER {} BEFORE {event} ON {} FOR EACH ROW \
                     IF NOT (@tenancy_fence_owner <=> {}) AND ({condition}) THEN \
                     SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = {}; END IF",
                    trigger_of(table, &name),
                    table.qualified(backend),
                    literal(&self.owner, backend, escapes)?,
                    literal(&mysql_message(&self.key), backend, escapes)?,
                ))
                .await?;
            }
        }
        Ok(())
    }

    /// Lets the statements of `txn` (the move's removal of the tenant's old rows) pass the
    /// fence. On PostgreSQL for the transaction only; on MariaDB/MySQL for the session,
    /// until [`close_pass`](Self::close_pass); on SQLite the fence is lifted in `txn`
    /// instead (its writers are serialised, so no other write passes meanwhile).
    pub(crate) async fn pass(&self, txn: &impl ConnectionTrait) -> Result<()> {
        let backend = txn.get_database_backend();
        match backend {
            DbBackend::Postgres => {
                txn.execute_raw(Statement::from_sql_and_values(
                    backend,
                    "SELECT set_config('tenancy.fence_owner', $1, true)",
                    [self.owner.clone().into()],
                ))
                .await?;
            }
            DbBackend::MySql => {
                txn.execute_raw(Statement::from_sql_and_values(
                    backend,
                    "SET @tenancy_fence_owner = ?",
                    [self.owner.clone().into()],
                ))
                .await?;
            }
            DbBackend::Sqlite => self.drop_triggers(txn).await?,
            other => return Err(unsupported(other)),
        }
        Ok(())
    }

    /// Ends a [`pass`](Self::pass) on MariaDB/MySQL, whose session outlives the
    /// transaction (a no-op elsewhere).
    pub(crate) async fn close_pass(&self, txn: &impl ConnectionTrait) -> Result<()> {
        if txn.get_database_backend() == DbBackend::MySql {
            txn.execute_unprepared("SET @tenancy_fence_owner = NULL")
                .await?;
        }
        Ok(())
    }

    /// Lifts the fence on `conn`: the tenant's rows there take writes again. Lifting a
    /// fence that is not there does nothing; a table that no longer exists (a dropped
    /// tenant schema) is passed over.
    pub(crate) async fn lift(&self, conn: &DatabaseConnection) -> Result<()> {
        match conn.get_database_backend() {
            DbBackend::MySql => self.drop_triggers(conn).await,
            // One table per transaction, as the fence was raised.
            DbBackend::Postgres => {
                for table in &self.tables {
                    let txn = conn.begin().await?;
                    txn.execute_unprepared(&format!("SET LOCAL lock_timeout = {LOCK_TIMEOUT_MS}"))
                        .await?;
                    self.drop_triggers_of(&txn, std::slice::from_ref(table))
                        .await?;
                    txn.commit().await?;
                }
                Ok(())
            }
            _ => {
                let txn = conn.begin().await?;
                self.drop_triggers(&txn).await?;
                txn.commit().await?;
                Ok(())
            }
        }
    }

    async fn drop_triggers(&self, conn: &impl ConnectionTrait) -> Result<()> {
        self.drop_triggers_of(conn, &self.tables).await
    }

    async fn drop_triggers_of(
        &self,
        conn: &impl ConnectionTrait,
        tables: &[FenceTable],
    ) -> Result<()> {
        let backend = conn.get_database_backend();
        for table in tables {
            match backend {
                DbBackend::Postgres => {
                    let name = trigger_name(&self.key, table.table, "");
                    // A table of a schema dropped since is passed over: `IF EXISTS` does not
                    // cover a missing table's schema.
                    let exists = conn
                        .query_one_raw(Statement::from_sql_and_values(
                            backend,
                            "SELECT to_regclass($1) IS NOT NULL AS present",
                            [table.qualified(backend).into()],
                        ))
                        .await?
                        .map(|row| row.try_get::<bool>("", "present"))
                        .transpose()?
                        .unwrap_or(false);
                    if exists {
                        conn.execute_raw(Statement::from_sql_and_values(
                            backend,
                            "SELECT public.tenancy_fence_set($1::regclass, $2, NULL)",
                            [table.qualified(backend).into(), name.into()],
                        ))
                        .await?;
                    }
                }
                DbBackend::Sqlite => {
                    for op in ["_i", "_u", "_d"] {
                        let name = trigger_name(&self.key, table.table, op);
                        conn.execute_unprepared(&format!("DROP TRIGGER IF EXISTS \"{name}\""))
                            .await?;
                    }
                }
                DbBackend::MySql => {
                    for op in ["_i", "_u", "_d"] {
                        let name = trigger_name(&self.key, table.table, op);
                        conn.execute_unprepared(&format!(
                            "DROP TRIGGER IF EXISTS {}",
                            trigger_of(table, &name)
                        ))
                        .await?;
                    }
                }
                other => return Err(unsupported(other)),
            }
        }
        Ok(())
    }

    /// SQLite's three triggers of `table`: (name suffix, event, `WHEN` clause).
    fn sqlite_triggers(
        &self,
        table: &FenceTable,
    ) -> Result<Vec<(&'static str, &'static str, String)>> {
        let key = literal(&self.key, DbBackend::Sqlite, false)?;
        let row = |side: &str| match table.column {
            Some(column) => format!(
                "CAST({side}.{} AS TEXT) = {key}",
                quote_identifier(column, DbBackend::Sqlite)
            ),
            None => "1".to_owned(),
        };
        Ok(vec![
            ("_i", "INSERT", format!("WHEN {}", row("NEW"))),
            (
                "_u",
                "UPDATE",
                format!("WHEN {} OR {}", row("OLD"), row("NEW")),
            ),
            ("_d", "DELETE", format!("WHEN {}", row("OLD"))),
        ])
    }

    /// MariaDB/MySQL's three triggers of `table`: (name suffix, event, condition). Ids are
    /// compared as bytes, so a look-alike id under a case-insensitive collation is not
    /// fenced with the moving one.
    fn mysql_triggers(
        &self,
        table: &FenceTable,
        escapes: bool,
    ) -> Result<Vec<(&'static str, &'static str, String)>> {
        let key = literal(&self.key, DbBackend::MySql, escapes)?;
        let row = |side: &str| match table.column {
            Some(column) => format!(
                "CAST({side}.`{}` AS BINARY) = CAST({key} AS BINARY)",
                column.replace('`', "``")
            ),
            None => "TRUE".to_owned(),
        };
        Ok(vec![
            ("_i", "INSERT", row("NEW")),
            ("_u", "UPDATE", format!("{} OR {}", row("OLD"), row("NEW"))),
            ("_d", "DELETE", row("OLD")),
        ])
    }
}

/// The error of a backend without a fence.
fn unsupported(backend: DbBackend) -> Error {
    Error::Config(format!(
        "a move's write fence is not available on {backend:?}"
    ))
}

/// A MariaDB/MySQL trigger's name, in the table's schema (trigger names are per schema).
fn trigger_of(table: &FenceTable, name: &str) -> String {
    match &table.schema {
        Some(schema) => format!("`{}`.`{name}`", schema.replace('`', "``")),
        None => format!("`{name}`"),
    }
}

/// The refusal's message on MariaDB/MySQL, within its 128 characters (a longer id is cut;
/// the error then names a prefix of it).
fn mysql_message(key: &str) -> String {
    let mut message = format!("{REFUSAL}{key}");
    while message.chars().count() > 128 {
        message.pop();
    }
    message
}

/// Makes the fence's PostgreSQL functions in `txn` unless they exist (row-level
/// security's set-up makes them as the tables' owner, for a role that may not create
/// functions).
async fn make_pg_functions(txn: &impl ConnectionTrait) -> Result<()> {
    let missing = txn
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT to_regprocedure('public.tenancy_fence_set(regclass,text,text[])') \
             IS NULL AS missing",
        ))
        .await?
        .map(|row| row.try_get::<bool>("", "missing"))
        .transpose()?
        .unwrap_or(true);
    if missing {
        for statement in PG_FUNCTIONS {
            txn.execute_unprepared(statement).await?;
        }
    }
    Ok(())
}

/// Whether the MariaDB/MySQL session reads backslashes in strings as escapes.
async fn mysql_backslash_escapes(conn: &impl ConnectionTrait) -> Result<bool> {
    let row = conn
        .query_one_raw(Statement::from_string(
            DbBackend::MySql,
            "SELECT @@SESSION.sql_mode AS mode",
        ))
        .await?;
    let mode: String = match row {
        Some(row) => row.try_get("", "mode")?,
        None => String::new(),
    };
    Ok(!mode.to_ascii_uppercase().contains("NO_BACKSLASH_ESCAPES"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_double_quotes_and_escape_backslashes_where_they_are_escapes() {
        assert_eq!(
            literal("o'b", DbBackend::Postgres, false).unwrap(),
            "'o''b'"
        );
        assert_eq!(
            literal("a\\'b", DbBackend::Postgres, false).unwrap(),
            "'a\\''b'"
        );
        assert_eq!(
            literal("a\\'b", DbBackend::Sqlite, false).unwrap(),
            "'a\\''b'"
        );
        assert_eq!(
            literal("a\\'b", DbBackend::MySql, true).unwrap(),
            "'a\\\\''b'"
        );
        assert_eq!(
            literal("a\\'b", DbBackend::MySql, false).unwrap(),
            "'a\\''b'"
        );
        assert!(literal("a\0b", DbBackend::Postgres, false).is_err());
    }

    #[test]
    fn trigger_names_are_plain_short_and_tell_tenants_apart() {
        let a = trigger_name("acme", "orders", "_i");
        let b = trigger_name("ACME", "orders", "_i");
        let hostile = trigger_name("x\"; DROP TABLE orders; --", "orders", "_i");
        assert_ne!(a, b);
        for name in [&a, &b, &hostile] {
            assert!(name.len() <= 63, "{name}");
            assert!(
                name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                "{name}"
            );
        }
    }

    #[test]
    fn a_long_id_is_cut_to_the_mysql_message_limit() {
        let long = "x".repeat(300);
        assert_eq!(mysql_message(&long).chars().count(), 128);
        assert!(mysql_message("42").ends_with(": 42"));
    }
}
