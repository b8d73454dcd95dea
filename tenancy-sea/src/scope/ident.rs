//! A name written into SQL as an identifier: quoted for its backend, its quote character
//! doubled, so a name is never read as SQL (entities' table and column names, names read
//! from a database's own catalog); and a value written into SQL as a PostgreSQL string
//! constant, for the few texts that cannot bind their values.

use sea_orm::DbBackend;

/// `name` quoted as an identifier on `backend`: in backticks on MySQL and MariaDB, in
/// double quotes elsewhere.
pub(crate) fn quote_identifier(name: &str, backend: DbBackend) -> String {
    match backend {
        DbBackend::MySql => format!("`{}`", name.replace('`', "``")),
        _ => format!("\"{}\"", name.replace('"', "\"\"")),
    }
}

/// `value` as a PostgreSQL string constant that reads back as exactly `value`, whatever
/// `standard_conforming_strings` is: an escape string (`E'...'`) with each backslash and
/// each quote doubled. `None` for a value with a NUL character, which cannot be a
/// PostgreSQL string. The one writer of literals: `citus::literal` and the set-ups that
/// travel with `BEGIN` use it.
pub(crate) fn literal(value: &str) -> Option<String> {
    if value.contains('\0') {
        return None;
    }
    let mut out = String::with_capacity(value.len() + 4);
    out.push_str("E'");
    for c in value.chars() {
        match c {
            '\'' => out.push_str("''"),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('\'');
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quote_characters_are_doubled() {
        assert_eq!(quote_identifier("a\"b", DbBackend::Postgres), "\"a\"\"b\"");
        assert_eq!(quote_identifier("a`b", DbBackend::MySql), "`a``b`");
        assert_eq!(quote_identifier("t", DbBackend::Sqlite), "\"t\"");
    }
}
