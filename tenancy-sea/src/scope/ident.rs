//! A name written into SQL as an identifier: quoted for its backend, its quote character
//! doubled, so a name is never read as SQL (entities' table and column names, names read
//! from a database's own catalog).

use sea_orm::DbBackend;

/// `name` quoted as an identifier on `backend`: in backticks on MySQL and MariaDB, in
/// double quotes elsewhere.
pub(crate) fn quote_identifier(name: &str, backend: DbBackend) -> String {
    match backend {
        DbBackend::MySql => format!("`{}`", name.replace('`', "``")),
        _ => format!("\"{}\"", name.replace('"', "\"\"")),
    }
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
