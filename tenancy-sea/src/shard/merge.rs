//! The merge of scatter-gather: how the shards are made to order rows as the merge does,
//! how two values compare in it, and how partial sums add up. Pure functions, unit-tested
//! without a database.

use crate::error::{Error, Result};
use sea_orm::sea_query::{Alias, Expr, ExprTrait, Func, SimpleExpr};
use sea_orm::{ColumnTrait, ColumnType, DbBackend, EntityTrait, Order, QuerySelect, Select, Value};
use std::cmp::Ordering;

/// [`Error::Config`] unless `col` holds integers: their sums are exact, a float's or a
/// decimal's would be cut to an integer.
pub(super) fn integer_column<C: sea_orm::ColumnTrait>(col: C, aggregate: &str) -> Result<()> {
    use sea_orm::sea_query::ColumnType::*;
    match col.def().get_column_type() {
        TinyInteger | SmallInteger | Integer | BigInteger | TinyUnsigned | SmallUnsigned
        | Unsigned | BigUnsigned => Ok(()),
        other => Err(Error::Config(format!(
            "{aggregate} across shards needs an integer column; `{}` is {other:?}",
            col.as_str()
        ))),
    }
}

/// `SUM(col)` as text: exact at any width (a cast to a 64-bit integer would fail on
/// PostgreSQL and cap without an error on MySQL when the sum is wider).
pub(super) fn sum_as_text<C: sea_orm::ColumnTrait>(backend: DbBackend, col: C) -> SimpleExpr {
    let cast = match backend {
        DbBackend::MySql => "CHAR",
        _ => "TEXT",
    };
    Func::cast_as(Expr::col(col).sum(), Alias::new(cast)).into()
}

/// A shard's integer sum from its text (`None`, no row, is 0).
pub(super) fn parse_sum(text: Option<String>) -> Result<i128> {
    let Some(text) = text else {
        return Ok(0);
    };
    text.trim().parse().map_err(|_| Error::SumOverflow {
        total: text.clone(),
    })
}

/// The total of a sum as `i64`: a wider total is an error, not a wrap.
pub(super) fn fits_i64(total: i128) -> Result<i64> {
    i64::try_from(total).map_err(|_| Error::SumOverflow {
        total: total.to_string(),
    })
}

/// Refuses, before anything runs, an order the merge cannot reproduce: a column whose
/// values the shards order by a rule of their own (an enum type's declaration order, JSON).
pub(super) fn mergeable<C: ColumnTrait>(col: C) -> Result<()> {
    match col.def().get_column_type() {
        ColumnType::Enum { .. } | ColumnType::Json | ColumnType::JsonBinary => {
            Err(Error::Unmergeable {
                column: col.as_str().to_owned(),
                reason: "the databases order its type by a rule of their own; order by \
                         another column, or sort the rows after reading them",
            })
        }
        _ => Ok(()),
    }
}

/// Whether the shards compare `col` as text, under a collation of their own.
pub(super) fn is_text<C: ColumnTrait>(col: C) -> bool {
    matches!(
        col.def().get_column_type(),
        ColumnType::String(_) | ColumnType::Text | ColumnType::Char(_)
    )
}

/// `select` ordered by `order` on `backend` exactly as the merge orders rows ([`compare`]):
/// text byte for byte (not by the column's collation, which the merge cannot know), and
/// NULL before every value in ascending order (PostgreSQL's default puts it last).
pub(super) fn ordered<E: EntityTrait>(
    mut select: Select<E>,
    order: &[(E::Column, Order)],
    backend: DbBackend,
) -> Select<E> {
    use sea_orm::sea_query::NullOrdering;
    for (col, direction) in order {
        let column = Expr::col((col.entity_name(), *col));
        let expr = if is_text(*col) {
            match backend {
                DbBackend::Postgres => Expr::cust_with_expr(r#"$1 COLLATE "C""#, column),
                DbBackend::MySql => {
                    Expr::cust_with_expr("CAST(CONVERT(? USING utf8mb4) AS BINARY)", column)
                }
                _ => Expr::cust_with_expr("? COLLATE BINARY", column),
            }
        } else {
            column
        };
        let query = QuerySelect::query(&mut select);
        // Only a nullable column needs its NULLs placed: on a NOT NULL column the clause
        // would only keep PostgreSQL from reading an index in the order asked.
        if backend == DbBackend::Postgres && col.def().is_null() {
            let nulls = match direction {
                Order::Desc => NullOrdering::Last,
                _ => NullOrdering::First,
            };
            query.order_by_expr_with_nulls(expr, direction.clone(), nulls);
        } else {
            query.order_by_expr(expr, direction.clone());
        }
    }
    select
}

/// Orders two column values of the same type as the shards were made to order them
/// ([`ordered`]); `None` when they do not compare. NULL sorts first. Text compares byte for
/// byte, timestamps with a time zone by the instant, decimals by value. The date, time and
/// decimal types compare when this crate's feature of the same name as SeaORM's is on
/// (`with-chrono`, `with-time`, `with-rust_decimal`, `with-bigdecimal`).
pub(super) fn compare(a: &Value, b: &Value) -> Option<Ordering> {
    use Value::*;
    Some(match (a, b) {
        (BigInt(a), BigInt(b)) => a.cmp(b),
        (Int(a), Int(b)) => a.cmp(b),
        (SmallInt(a), SmallInt(b)) => a.cmp(b),
        (TinyInt(a), TinyInt(b)) => a.cmp(b),
        (BigUnsigned(a), BigUnsigned(b)) => a.cmp(b),
        (Unsigned(a), Unsigned(b)) => a.cmp(b),
        (SmallUnsigned(a), SmallUnsigned(b)) => a.cmp(b),
        (TinyUnsigned(a), TinyUnsigned(b)) => a.cmp(b),
        (Bool(a), Bool(b)) => a.cmp(b),
        (String(a), String(b)) => a.cmp(b),
        (Char(a), Char(b)) => a.cmp(b),
        (Bytes(a), Bytes(b)) => a.cmp(b),
        (Uuid(a), Uuid(b)) => a.cmp(b),
        (Double(a), Double(b)) => a.partial_cmp(b)?,
        (Float(a), Float(b)) => a.partial_cmp(b)?,
        #[cfg(feature = "with-chrono")]
        (ChronoDate(a), ChronoDate(b)) => a.cmp(b),
        #[cfg(feature = "with-chrono")]
        (ChronoTime(a), ChronoTime(b)) => a.cmp(b),
        #[cfg(feature = "with-chrono")]
        (ChronoDateTime(a), ChronoDateTime(b)) => a.cmp(b),
        #[cfg(feature = "with-chrono")]
        (ChronoDateTimeUtc(a), ChronoDateTimeUtc(b)) => a.cmp(b),
        #[cfg(feature = "with-chrono")]
        (ChronoDateTimeLocal(a), ChronoDateTimeLocal(b)) => a.cmp(b),
        #[cfg(feature = "with-chrono")]
        (ChronoDateTimeWithTimeZone(a), ChronoDateTimeWithTimeZone(b)) => a.cmp(b),
        #[cfg(feature = "with-time")]
        (TimeDate(a), TimeDate(b)) => a.cmp(b),
        #[cfg(feature = "with-time")]
        (TimeTime(a), TimeTime(b)) => a.cmp(b),
        #[cfg(feature = "with-time")]
        (TimeDateTime(a), TimeDateTime(b)) => a.cmp(b),
        #[cfg(feature = "with-time")]
        (TimeDateTimeWithTimeZone(a), TimeDateTimeWithTimeZone(b)) => a.cmp(b),
        #[cfg(feature = "with-rust_decimal")]
        (Decimal(a), Decimal(b)) => a.cmp(b),
        #[cfg(feature = "with-bigdecimal")]
        (BigDecimal(a), BigDecimal(b)) => a.cmp(b),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_compare_as_the_shards_are_made_to_order_them() {
        use Value::*;
        let less = |a: Value, b: Value| assert_eq!(compare(&a, &b), Some(Ordering::Less));
        // Text byte for byte: capitals first, accents after, a prefix before its longer.
        less(String(Some("Apple".into())), String(Some("apple".into())));
        less(String(Some("apple".into())), String(Some("ápple".into())));
        less(String(Some("a".into())), String(Some("a\t".into())));
        // NULL before every value.
        less(BigInt(None), BigInt(Some(i64::MIN)));
        less(String(None), String(Some(std::string::String::new())));
        // Integers of every width, bytes, UUIDs by value.
        less(SmallInt(Some(-1)), SmallInt(Some(0)));
        less(BigUnsigned(Some(u64::MAX - 1)), BigUnsigned(Some(u64::MAX)));
        less(Bytes(Some(vec![0, 255])), Bytes(Some(vec![1])));
        less(
            Uuid(Some(uuid::Uuid::nil())),
            Uuid(Some(uuid::Uuid::from_u128(1))),
        );
        // NaN and values of different types do not compare: the merge refuses them.
        assert_eq!(compare(&Double(Some(f64::NAN)), &Double(Some(1.0))), None);
        assert_eq!(compare(&BigInt(Some(1)), &Int(Some(1))), None);
    }

    #[test]
    fn sums_add_up_exactly_or_refuse() {
        assert_eq!(parse_sum(None).unwrap(), 0);
        assert_eq!(parse_sum(Some(" 42 ".into())).unwrap(), 42);
        assert_eq!(parse_sum(Some(i128::MAX.to_string())).unwrap(), i128::MAX);
        assert!(matches!(
            parse_sum(Some("4.5".into())),
            Err(Error::SumOverflow { .. })
        ));
        assert_eq!(fits_i64(i128::from(i64::MAX)).unwrap(), i64::MAX);
        assert!(matches!(
            fits_i64(i128::from(i64::MAX) + 1),
            Err(Error::SumOverflow { total }) if total == "9223372036854775808"
        ));
    }
}
