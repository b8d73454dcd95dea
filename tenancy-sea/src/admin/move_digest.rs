//! A table's rows of a tenant by content ([`Digest`]): how many, and an order-independent
//! sum of a hash of each row. Between two PostgreSQL shards the database computes it
//! (nothing crosses the network but the result, and the clean-up deletes and digests in
//! one statement); anywhere else the rows are read and hashed here.

use super::move_steps::{Unit, tenant_rows};
use crate::entity::{ScopedEntity, SqlTenantId, TenantScoped};
use crate::error::Result;
use crate::scope;
use crate::scope::quote_identifier;
use futures_util::TryStreamExt;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ConnectionTrait, DbBackend, EntityTrait, IdenStatic, Iterable, ModelTrait, QueryFilter,
    QuerySelect, QueryTrait, Statement,
};

/// How a [`Digest`] was computed: two digests are comparable only if computed alike.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum DigestKind {
    /// Each row read here and hashed with xxh3-128 (any backend).
    #[default]
    Read,
    /// By PostgreSQL: the sums of `hashtextextended` of each row's text form under two
    /// seeds, in UTC and ISO formats (both shards PostgreSQL).
    Postgres,
}

/// A table's rows of a tenant by content: the same rows in any order give the same digest,
/// a changed, added or removed row a different one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Digest {
    pub(crate) kind: DigestKind,
    pub(crate) rows: u64,
    pub(crate) sum: u128,
}

impl Digest {
    /// The digest's text form as the catalog keeps it: `rows:sum` in hexadecimal, after
    /// `pg:` when PostgreSQL computed it.
    pub(crate) fn to_text(self) -> String {
        let prefix = match self.kind {
            DigestKind::Read => "",
            DigestKind::Postgres => "pg:",
        };
        format!("{prefix}{}:{:032x}", self.rows, self.sum)
    }

    /// Reads [`to_text`](Self::to_text)'s form back.
    pub(crate) fn from_text(text: &str) -> Option<Digest> {
        let (kind, text) = match text.strip_prefix("pg:") {
            Some(rest) => (DigestKind::Postgres, rest),
            None => (DigestKind::Read, text),
        };
        let (rows, sum) = text.split_once(':')?;
        Some(Digest {
            kind,
            rows: rows.parse().ok()?,
            sum: u128::from_str_radix(sum, 16).ok()?,
        })
    }
}

/// The kind of digest a move between a shard of `from` and one of `to` compares.
pub(crate) fn kind_between(from: DbBackend, to: DbBackend) -> DigestKind {
    if from == DbBackend::Postgres && to == DbBackend::Postgres {
        DigestKind::Postgres
    } else {
        DigestKind::Read
    }
}

/// The digest of `E`'s rows of `tenant` in `unit`, computed as `kind` says.
pub(super) async fn digest<T, E>(unit: &Unit, tenant: &T, kind: DigestKind) -> Result<Digest>
where
    T: SqlTenantId,
    E: TenantScoped<TenantId = T> + ScopedEntity<T>,
    E::Model: Sync,
{
    match kind {
        DigestKind::Read => read_digest::<T, E>(unit, tenant).await,
        DigestKind::Postgres => {
            let backend = unit.txn.get_database_backend();
            let select = E::find()
                .select_only()
                .expr(Expr::cust(aggregates::<E>("")))
                .filter(tenant_filter::<T, E>(tenant, backend))
                .build(backend);
            postgres_digest(unit, select).await
        }
    }
}

/// Deletes `E`'s rows of `tenant` in `unit` and returns the digest of what was deleted, in
/// one statement (PostgreSQL): the caller rolls back if it is not what was copied.
pub(super) async fn delete_with_digest<T, E>(unit: &Unit, tenant: &T) -> Result<Digest>
where
    T: SqlTenantId,
    E: TenantScoped<TenantId = T> + ScopedEntity<T>,
{
    let backend = unit.txn.get_database_backend();
    let delete = E::delete_many()
        .filter(tenant_filter::<T, E>(tenant, backend))
        .build(backend);
    let Statement { sql, values, .. } = delete;
    let values = values.map_or_else(Vec::new, |values| values.0);
    let columns = E::Column::iter()
        .map(|column| quote(column.as_str()))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "WITH tenancy_deleted AS ({sql} RETURNING {columns}) SELECT {} FROM tenancy_deleted",
        aggregates::<E>("tenancy_deleted.")
    );
    postgres_digest(unit, Statement::from_sql_and_values(backend, sql, values)).await
}

fn tenant_filter<T, E>(tenant: &T, backend: DbBackend) -> sea_orm::Condition
where
    T: SqlTenantId,
    E: TenantScoped<TenantId = T>,
{
    scope::equals(E::tenant_column(), &tenant.clone().into(), backend)
}

/// An identifier quoted for PostgreSQL.
fn quote(name: &str) -> String {
    quote_identifier(name, DbBackend::Postgres)
}

/// The digest's select list over `E`'s columns, each named after `prefix`: the row count
/// and two seeded hash sums of the row's text form, as text (sums of 64-bit values are
/// `numeric`).
fn aggregates<E: EntityTrait>(prefix: &str) -> String {
    let row = E::Column::iter()
        .map(|column| format!("{prefix}{}", quote(column.as_str())))
        .collect::<Vec<_>>()
        .join(", ");
    // The column names are the entity's own (compile-time identifiers), quoted.
    let sum =
        |seed: u8| format!("COALESCE(sum(hashtextextended(ROW({row})::text, {seed})), 0)::text");
    format!(
        "count(*) AS tenancy_rows, {} AS tenancy_a, {} AS tenancy_b",
        sum(0),
        sum(1)
    )
}

/// Runs a digest statement in `unit` with the text forms of times, intervals and floats
/// fixed for the transaction (so two servers configured differently agree).
async fn postgres_digest(unit: &Unit, statement: Statement) -> Result<Digest> {
    let conn = &unit.conn();
    conn.execute_raw(Statement::from_string(
        DbBackend::Postgres,
        "SELECT set_config('TimeZone', 'UTC', true), set_config('DateStyle', 'ISO, YMD', true), \
         set_config('IntervalStyle', 'postgres', true), \
         set_config('extra_float_digits', '3', true)",
    ))
    .await?;
    let row = conn.query_one_raw(statement).await?;
    let (rows, a, b) = match row {
        Some(row) => (
            row.try_get::<i64>("", "tenancy_rows")?,
            row.try_get::<String>("", "tenancy_a")?,
            row.try_get::<String>("", "tenancy_b")?,
        ),
        None => (0, String::new(), String::new()),
    };
    Ok(Digest {
        kind: DigestKind::Postgres,
        rows: u64::try_from(rows).unwrap_or(0),
        sum: xxhash_rust::xxh3::xxh3_128(format!("{a}:{b}").as_bytes()),
    })
}

/// The digest of `E`'s rows of `tenant` read here, each row's values hashed by their debug
/// form (type and value) with a separator between them.
async fn read_digest<T, E>(unit: &Unit, tenant: &T) -> Result<Digest>
where
    T: SqlTenantId,
    E: TenantScoped<TenantId = T> + ScopedEntity<T>,
    E::Model: Sync,
{
    let mut rows = E::find()
        .from_raw_sql(tenant_rows::<E, T>(unit, tenant))
        .stream(&unit.txn)
        .await?;
    let mut digest = Digest::default();
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    while let Some(model) = rows.try_next().await? {
        hasher.reset();
        for column in E::Column::iter() {
            hasher.update(format!("{:?}", model.get(column)).as_bytes());
            hasher.update(&[0xff]);
        }
        digest.rows += 1;
        digest.sum = digest.sum.wrapping_add(hasher.digest128());
    }
    Ok(digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_forms_keep_their_kind() {
        for kind in [DigestKind::Read, DigestKind::Postgres] {
            let digest = Digest {
                kind,
                rows: 12,
                sum: u128::MAX - 7,
            };
            assert_eq!(Digest::from_text(&digest.to_text()), Some(digest));
        }
        assert_eq!(Digest::from_text("pg:x:1"), None);
    }
}
