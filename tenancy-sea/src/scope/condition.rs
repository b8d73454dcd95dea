//! The tenant condition: the one place that writes `<tenant column> = <tenant>`, for every
//! read, write, join, loader, move and fan-out of the library.
//!
//! The comparison is exact on every backend. MySQL and MariaDB compare text under the
//! column's collation, by default case- and accent-insensitive and blind to trailing
//! spaces (`'ACME' = 'acme '`); PostgreSQL columns can carry a nondeterministic ICU
//! collation; SQLite columns can be `NOCASE`. The library treats `"ACME"` and `"acme"`
//! as two tenants (validation, hashing, routing), so the database must too: a text value
//! is compared twice, once under the column's collation (which an index on the column
//! serves) and once byte for byte (`CAST(? AS BINARY)`, `COLLATE "C"`, `COLLATE BINARY`).
//! Integers and UUIDs compare exactly already and get the plain condition.

use sea_orm::sea_query::{Alias, Condition, Expr, ExprTrait, SchemaName, TableName, TableRef};
use sea_orm::{ColumnTrait, DbBackend, Value};

/// `value` as an expression that compares byte for byte with a text column, or `None` when
/// `value` is not text (its comparison is exact already).
fn exact(value: &Value, backend: DbBackend) -> Option<Expr> {
    if !matches!(value, Value::String(Some(_)) | Value::Char(Some(_))) {
        return None;
    }
    let template = match backend {
        DbBackend::MySql => "CAST(? AS BINARY)",
        DbBackend::Postgres => r#"$1 COLLATE "C""#,
        _ => "? COLLATE BINARY",
    };
    Some(Expr::cust_with_values(template, [value.clone()]))
}

/// `col = value`, compared exactly (see the module documentation).
pub(crate) fn equals<C: ColumnTrait>(col: C, value: &Value, backend: DbBackend) -> Condition {
    Condition::all().add(equals_expr(col, value, backend))
}

/// `column = value`, compared exactly, for a column known by its table and name only (the
/// junction of a many-to-many relation).
pub(crate) fn equals_at(
    table: &TableRef,
    column: &str,
    value: &Value,
    backend: DbBackend,
) -> Condition {
    let column = Alias::new(column.to_owned());
    let at = || match table {
        TableRef::Table(_, Some(alias)) => Expr::col((alias.clone(), column.clone())),
        TableRef::Table(TableName(Some(SchemaName(_, schema)), table), None) => {
            Expr::col((schema.clone(), table.clone(), column.clone()))
        }
        TableRef::Table(TableName(None, table), None) => Expr::col((table.clone(), column.clone())),
        // Not a table a relation joins: the column unqualified, as the statement sees it.
        _ => Expr::col(column.clone()),
    };
    let condition = Condition::all().add(at().eq(value.clone()));
    match exact(value, backend) {
        Some(exact) => condition.add(at().eq(exact)),
        None => condition,
    }
}

/// [`equals`] as one expression, where a condition does not fit (`ON CONFLICT .. WHERE`).
pub(crate) fn equals_expr<C: ColumnTrait>(col: C, value: &Value, backend: DbBackend) -> Expr {
    let plain = col.eq(value.clone());
    match exact(value, backend) {
        Some(exact) => plain.and(Expr::col(col.as_column_ref()).eq(exact)),
        None => plain,
    }
}

/// `col IN (values)`, compared exactly: for text, each value must also match byte for
/// byte. An empty list matches nothing.
pub(crate) fn is_in<C: ColumnTrait>(col: C, values: Vec<Value>, backend: DbBackend) -> Condition {
    let exact: Vec<Expr> = values.iter().filter_map(|v| exact(v, backend)).collect();
    let condition = Condition::all().add(col.is_in(values));
    if exact.is_empty() {
        return condition;
    }
    let any = exact.into_iter().fold(Condition::any(), |any, value| {
        any.add(Expr::col(col.as_column_ref()).eq(value))
    });
    condition.add(any)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sea_orm::entity::prelude::*;
    use sea_orm::{QueryFilter, QueryTrait};

    mod note {
        use sea_orm::entity::prelude::*;

        #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
        #[sea_orm(table_name = "notes")]
        pub struct Model {
            #[sea_orm(primary_key)]
            pub id: i64,
            pub owner: String,
            pub number: i64,
        }

        #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
        pub enum Relation {}

        impl ActiveModelBehavior for ActiveModel {}
    }

    fn sql(backend: DbBackend, condition: Condition) -> String {
        note::Entity::find()
            .filter(condition)
            .build(backend)
            .to_string()
    }

    #[test]
    fn text_is_compared_byte_for_byte_on_every_backend() {
        let acme = Value::from("acme");
        let col = note::Column::Owner;
        assert!(
            sql(DbBackend::MySql, equals(col, &acme, DbBackend::MySql)).ends_with(
                "WHERE `notes`.`owner` = 'acme' AND `notes`.`owner` = (CAST('acme' AS BINARY))"
            )
        );
        assert!(
            sql(DbBackend::Postgres, equals(col, &acme, DbBackend::Postgres)).ends_with(
                r#"WHERE "notes"."owner" = 'acme' AND "notes"."owner" = ('acme' COLLATE "C")"#
            )
        );
        assert!(
            sql(DbBackend::Sqlite, equals(col, &acme, DbBackend::Sqlite)).ends_with(
                r#"WHERE "notes"."owner" = 'acme' AND "notes"."owner" = ('acme' COLLATE BINARY)"#
            )
        );
        // Bound, never inlined: the statement carries the value twice as parameters.
        let statement = note::Entity::find()
            .filter(equals(col, &acme, DbBackend::Postgres))
            .build(DbBackend::Postgres);
        assert!(
            statement
                .sql
                .ends_with(r#"= $1 AND "notes"."owner" = ($2 COLLATE "C")"#)
        );
        assert_eq!(statement.values.map(|v| v.0.len()), Some(2));
    }

    #[test]
    fn numbers_keep_the_plain_condition() {
        let condition = equals(note::Column::Number, &Value::from(7i64), DbBackend::MySql);
        assert!(sql(DbBackend::MySql, condition).ends_with("WHERE `notes`.`number` = 7"));
    }

    #[test]
    fn lists_are_exact_too() {
        let values = vec![Value::from("a"), Value::from("b")];
        let condition = is_in(note::Column::Owner, values, DbBackend::MySql);
        assert!(sql(DbBackend::MySql, condition).ends_with(
            "WHERE `notes`.`owner` IN ('a', 'b') AND (`notes`.`owner` = (CAST('a' AS BINARY)) \
             OR `notes`.`owner` = (CAST('b' AS BINARY)))"
        ));
    }
}
