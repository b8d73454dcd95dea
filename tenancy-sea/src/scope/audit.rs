//! What a tenant handle refuses in the conditions and expressions it is given: raw SQL
//! fragments and plain subqueries.
//!
//! Values are always bound and identifiers always quoted, so a condition built from
//! columns, operators, functions and values cannot leave the `AND` it is put in. Three
//! things can: text pasted into the statement as it is (`Expr::cust`,
//! `Expr::cust_with_values`, a `Func::cust` name, a custom keyword), which can close the
//! parentheses around it (`1=1) OR (1=1`) or set the tenant column
//! (`0, tenant_id = 2`); and a subquery built with plain SeaORM or sea-query, which reads
//! its table with no tenant condition. The handle's builders run each fragment they are
//! given through [`check_condition`] or [`check_expr`]; a refused one fails the statement
//! with a typed error before anything is sent. Subqueries scoped to the tenant are made
//! with [`TenantDb::subquery`](crate::TenantDb::subquery) and added by the builders' own
//! methods, which never pass through here.
//!
//! The check walks the fragment with sea-query's own statement writer (a query builder
//! that writes nothing and notes what it meets), so it sees every expression the database
//! would: inside functions, `CASE`, `IN` lists and nested conditions.

use crate::error::Error;
#[cfg(feature = "postgres")]
use sea_orm::sea_query::ArrayType;
use sea_orm::sea_query::{
    BinOper, Condition, DynIden, EscapeBuilder, ExplainStatement, Expr, Func, Keyword, Oper,
    OperLeftAssocDecider, OptionEnum, PrecedenceDecider, Query, QueryBuilder, Quote, QuotedBuilder,
    SelectInto, SelectStatement, SqlWriter, SubQueryStatement, TableRefBuilder, Value,
};
use std::cell::Cell;
use std::fmt;

/// What a builder refused, kept until it runs (and for every page of a paginator).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// A scoped subquery made by another tenant's handle, or on another shard.
    ForeignSubquery {
        /// The tenant of the handle the subquery was given to.
        expected: String,
        /// The tenant of the handle that made it.
        found: String,
    },
    /// `Expr::cust` and its variants.
    RawSql,
    /// A `Func::cust` function name (written into the statement as it is).
    CustomFunction,
    /// A `Keyword::Custom` (written as it is).
    CustomKeyword,
    /// A `BinOper::Custom` operator (written as it is).
    CustomOperator,
    /// An enum type name (`Value::Enum`, `Expr::as_enum`) or an identifier that is not a
    /// plain name: the backends write them between quotes without escaping.
    UnsafeName,
    /// A subquery not made by the handle.
    Subquery,
    /// A many-to-many relation through a junction table that derives neither
    /// `TenantScoped` nor `GlobalEntity`.
    UnscopedJunction {
        /// The junction table.
        junction: String,
        /// The table the relation reaches.
        related: &'static str,
    },
}

impl Refused {
    pub(crate) fn into_error(self) -> Error {
        match self {
            Refused::ForeignSubquery { expected, found } => Error::TenantMismatch {
                table: "(subquery)",
                expected,
                found,
            },
            Refused::Subquery => Error::UnscopedSubquery,
            Refused::UnscopedJunction { junction, related } => {
                Error::UnscopedJunction { junction, related }
            }
            Refused::RawSql => Error::RawFragment {
                fragment: "a raw SQL expression (`Expr::cust`)",
            },
            Refused::CustomFunction => Error::RawFragment {
                fragment: "a custom function name (`Func::cust`)",
            },
            Refused::CustomKeyword => Error::RawFragment {
                fragment: "a custom keyword (`Keyword::Custom`)",
            },
            Refused::CustomOperator => Error::RawFragment {
                fragment: "a custom operator (`BinOper::Custom`)",
            },
            Refused::UnsafeName => Error::RawFragment {
                fragment: "an enum type name or identifier that is not a plain name \
                           (letters, digits and `_`)",
            },
        }
    }
}

/// Keeps the first refusal of a builder, to be returned when it runs.
pub(crate) fn keep(kept: &mut Option<Refused>, outcome: Result<(), Refused>) {
    if let Err(refused) = outcome {
        kept.get_or_insert(refused);
    }
}

/// A builder's slot for its first refusal, kept until the builder runs.
pub(crate) trait Keep {
    fn keep(&mut self, refused: Refused);
}

impl Keep for Option<Refused> {
    fn keep(&mut self, refused: Refused) {
        self.get_or_insert(refused);
    }
}

impl Keep for Option<Error> {
    fn keep(&mut self, refused: Refused) {
        self.get_or_insert_with(|| refused.into_error());
    }
}

/// The kept refusal as the error a builder returns, or `Ok` to run.
pub(crate) fn ready(kept: &Option<Refused>) -> Result<(), Error> {
    match kept {
        Some(refused) => Err(refused.clone().into_error()),
        None => Ok(()),
    }
}

/// `condition` as a handle's builder may use it, or why not.
pub(crate) fn check_condition(condition: &Condition) -> Result<(), Refused> {
    let mut select = Query::select();
    select.cond_where(condition.clone());
    audit(&select)
}

/// `expr` as a handle's builder may use it, or why not.
pub(crate) fn check_expr(expr: &Expr) -> Result<(), Refused> {
    let mut select = Query::select();
    select.expr(expr.clone());
    audit(&select)
}

fn audit(select: &SelectStatement) -> Result<(), Refused> {
    let auditor = Auditor {
        refused: Cell::new(None),
    };
    auditor.prepare_select_statement(select, &mut Discard);
    match auditor.refused.take() {
        Some(refused) => Err(refused),
        None => Ok(()),
    }
}

/// Whether `name` is a plain SQL type name: words of letters, digits and `_`, an optional
/// `(n)` or `(n, m)`, an optional `[]` (`text`, `varchar(200)`, `double precision`,
/// `numeric(10, 2)`, `BINARY`, `SIGNED INTEGER`, `bigint[]`).
fn is_type_name(name: &str) -> bool {
    let name = name.strip_suffix("[]").unwrap_or(name);
    let (words, size) = match name.split_once('(') {
        Some((words, rest)) => match rest.strip_suffix(')') {
            Some(size) => (words, Some(size)),
            None => return false,
        },
        None => (name, None),
    };
    let words_ok = words.trim_end().split(' ').all(|word| {
        word.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
            && word.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    });
    let size_ok = size.is_none_or(|size| {
        size.split(',').all(|n| {
            let n = n.trim();
            !n.is_empty() && n.chars().all(|c| c.is_ascii_digit())
        })
    });
    words_ok && size_ok
}

/// A query builder that writes nothing and notes the first fragment it must refuse.
struct Auditor {
    refused: Cell<Option<Refused>>,
}

impl Auditor {
    fn refuse(&self, what: Refused) {
        let first = self.refused.take().unwrap_or(what);
        self.refused.set(Some(first));
    }
}

/// A statement writer that keeps nothing: the audit needs the walk, not the text.
struct Discard;

impl fmt::Write for Discard {
    fn write_str(&mut self, _: &str) -> fmt::Result {
        Ok(())
    }
}

impl fmt::Display for Discard {
    fn fmt(&self, _: &mut fmt::Formatter<'_>) -> fmt::Result {
        Ok(())
    }
}

impl SqlWriter for Discard {
    fn push_param<T: QueryBuilder>(&mut self, _: Value, _: &T) {}

    fn as_writer(&mut self) -> &mut dyn fmt::Write {
        self
    }
}

/// Whether `name` is a plain SQL name (`[A-Za-z_][A-Za-z0-9_]*`), optionally an array of
/// it (`name[]`): what an enum type name must be, since backends write it between quotes
/// without escaping.
fn is_plain_name(name: &str) -> bool {
    let base = name.trim_end_matches("[]");
    base.chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && base.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl QueryBuilder for Auditor {
    fn prepare_expr(&self, expr: &Expr, sql: &mut impl SqlWriter) {
        match expr {
            // `Func::cast_as(expr, type)` writes the type as a raw fragment: a plain type
            // name is allowed, anything else is refused like any raw SQL.
            Expr::Binary(left, BinOper::As, right) => {
                if let Expr::Custom(name) = right.as_ref()
                    && is_type_name(name)
                {
                    return self.prepare_expr(left, sql);
                }
            }
            Expr::Custom(_) | Expr::CustomWithExpr(..) => self.refuse(Refused::RawSql),
            // Not walked: refused whatever it holds.
            Expr::SubQuery(..) => return self.refuse(Refused::Subquery),
            Expr::AsEnum(name, inner) => {
                if !is_plain_name(&name.inner()) {
                    self.refuse(Refused::UnsafeName);
                }
                return self.prepare_expr(inner, sql);
            }
            _ => {}
        }
        self.prepare_expr_common(expr, sql);
    }

    // Every operator and function is accepted by name except the raw ones; the common
    // writers of sea-query are not called, since they do not know the PostgreSQL and
    // SQLite ones (and the audit writes nothing).
    fn prepare_bin_oper(&self, oper: &BinOper, _: &mut impl SqlWriter) {
        if let BinOper::Custom(_) = oper {
            self.refuse(Refused::CustomOperator);
        }
    }

    fn prepare_function_name(&self, function: &Func, _: &mut impl SqlWriter) {
        if let Func::Custom(_) = function {
            self.refuse(Refused::CustomFunction);
        }
    }

    fn prepare_keyword(&self, keyword: &Keyword, _: &mut impl SqlWriter) {
        if let Keyword::Custom(_) = keyword {
            self.refuse(Refused::CustomKeyword);
        }
    }

    fn prepare_query_statement(&self, _: &SubQueryStatement, _: &mut impl SqlWriter) {
        self.refuse(Refused::Subquery);
    }

    fn prepare_select_into(&self, _: &SelectInto, _: &mut impl SqlWriter) {}

    fn prepare_explain_statement(&self, _: &ExplainStatement, _: &mut impl SqlWriter) {}

    fn prepare_value(&self, value: Value, _: &mut impl SqlWriter) {
        let type_name = match &value {
            Value::Enum(OptionEnum::Some(value)) => Some(value.type_name.clone()),
            Value::Enum(OptionEnum::None(name)) => Some(name.clone()),
            #[cfg(feature = "postgres")]
            Value::Array(ArrayType::Enum(name), _) => Some((**name).clone()),
            _ => None,
        };
        if type_name.is_some_and(|name| !is_plain_name(&name)) {
            self.refuse(Refused::UnsafeName);
        }
    }
}

impl QuotedBuilder for Auditor {
    fn quote(&self) -> Quote {
        Quote::new(b'"')
    }

    /// A name a hand-written `Iden` gives as a borrowed string is written unescaped by
    /// the backends: one holding a quote character is refused.
    fn prepare_iden(&self, iden: &DynIden, _: &mut impl SqlWriter) {
        if matches!(iden.inner(), std::borrow::Cow::Borrowed(name) if name.contains(['"', '`'])) {
            self.refuse(Refused::UnsafeName);
        }
    }
}

impl EscapeBuilder for Auditor {}

impl TableRefBuilder for Auditor {}

impl OperLeftAssocDecider for Auditor {
    fn well_known_left_associative(&self, _: &BinOper) -> bool {
        false
    }
}

impl PrecedenceDecider for Auditor {
    fn inner_expr_well_known_greater_precedence(&self, _: &Expr, _: &Oper) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sea_orm::sea_query::{Alias, ExprTrait, QueryStatementBuilder};

    fn col() -> Expr {
        Expr::col(Alias::new("total_cents"))
    }

    #[test]
    fn plain_conditions_pass() {
        let condition = Condition::any()
            .add(col().gt(5))
            .add(
                Condition::all()
                    .add(col().is_in([1, 2, 3]))
                    .add(col().like("x%")),
            )
            .add(Func::lower(col()).eq("x"))
            .add(Expr::case(col().eq(1), 2).finally(3).eq(2))
            .add(Func::cast_as(col(), Alias::new("text")).eq("7"))
            .add(col().is_null());
        assert!(check_condition(&condition).is_ok());
        assert!(check_expr(&Func::coalesce([col(), Expr::val(0)]).into()).is_ok());
        for name in [
            "text",
            "varchar(200)",
            "double precision",
            "numeric(10, 2)",
            "bigint[]",
        ] {
            let cast = Func::cast_as(col(), Alias::new(name));
            assert!(check_expr(&cast.into()).is_ok(), "{name}");
        }
        for name in ["text) OR (1=1", "text; DROP TABLE x", "int -- x", ""] {
            let cast = Func::cast_as(col(), Alias::new(name));
            assert!(check_expr(&cast.into()).is_err(), "{name}");
        }
    }

    #[test]
    fn postgres_and_sqlite_operators_pass_without_panicking() {
        use sea_orm::sea_query::extension::postgres::{PgExpr, PgFunc};
        let condition = Condition::all()
            .add(col().ilike("%a%"))
            .add(col().eq(PgFunc::any(Expr::val(vec![1, 2]))))
            .add(col().matches(Expr::val("x")));
        assert!(check_condition(&condition).is_ok());
    }

    #[test]
    fn unsafe_names_are_refused() {
        use sea_orm::sea_query::{Enum, OptionEnum};
        let hostile = Value::Enum(OptionEnum::Some(Box::new(Enum {
            type_name: r#"text" OR TRUE OR TRUE::"bool"#.into(),
            value: "x".into(),
        })));
        let refused = check_condition(&Condition::all().add(col().eq(hostile)));
        assert_eq!(refused, Err(Refused::UnsafeName));
        let plain = Value::Enum(OptionEnum::Some(Box::new(Enum {
            type_name: "tea_kind".into(),
            value: "x".into(),
        })));
        assert!(check_condition(&Condition::all().add(col().eq(plain))).is_ok());
        let cast = Expr::val("x").as_enum(Alias::new(r#"text") OR (TRUE"#));
        assert_eq!(check_expr(&cast), Err(Refused::UnsafeName));
        assert!(check_expr(&Expr::val("x").as_enum(Alias::new("tea_kind[]"))).is_ok());
        let custom = Expr::col(Alias::new("a")).binary(BinOper::Custom("= 1 OR 1 ="), 2);
        assert_eq!(check_expr(&custom), Err(Refused::CustomOperator));
    }

    #[test]
    fn raw_fragments_are_refused_wherever_they_hide() {
        let raw = Expr::cust("1=1) OR (1=1");
        let hidden = [
            Condition::all().add(raw.clone()),
            Condition::all()
                .add(col().gt(1))
                .add(Condition::any().add(raw.clone())),
            Condition::all().add(Func::lower(raw.clone()).eq("x")),
            Condition::all().add(Expr::case(raw.clone(), 1).finally(2).eq(1)),
            Condition::all().add(Expr::cust_with_values("? = ?", [1, 1])),
            Condition::all().add(col().eq(raw.clone()).not()),
        ];
        for condition in hidden {
            assert!(
                matches!(
                    check_condition(&condition),
                    Err(Refused::RawSql | Refused::CustomFunction | Refused::CustomKeyword)
                ),
                "{condition:?}"
            );
        }
        assert!(matches!(
            check_expr(&Expr::cust("0, tenant_id = 2")),
            Err(Refused::RawSql | Refused::CustomFunction | Refused::CustomKeyword)
        ));
        let function = Func::cust(Alias::new("pg_read_file")).arg("x");
        assert!(matches!(
            check_expr(&function.into()),
            Err(Refused::RawSql | Refused::CustomFunction | Refused::CustomKeyword)
        ));
        assert!(matches!(
            check_expr(&Expr::Keyword(Keyword::Custom(Alias::new("x").into()))),
            Err(Refused::RawSql | Refused::CustomFunction | Refused::CustomKeyword)
        ));
    }

    #[test]
    fn plain_subqueries_are_refused() {
        let sub = Query::select()
            .column(Alias::new("id"))
            .from(Alias::new("comments"))
            .to_owned();
        for condition in [
            Condition::all().add(col().in_subquery(sub.clone())),
            Condition::all().add(Expr::exists(sub.clone())),
            Condition::any()
                .add(col().gt(1))
                .add(Expr::exists(sub.clone()).not()),
        ] {
            assert!(matches!(
                check_condition(&condition),
                Err(Refused::Subquery)
            ));
        }
        assert!(matches!(
            check_expr(&Expr::SubQuery(
                None,
                Box::new(sub.into_sub_query_statement())
            )),
            Err(Refused::Subquery)
        ));
    }
}
