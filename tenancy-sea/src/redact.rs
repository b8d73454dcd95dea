//! Database URLs without their passwords, for every error, `Debug` output and log line
//! that names one.
//!
//! A URL reaches an error in two ways: the library names it (a registration that points
//! elsewhere), or the driver does (SeaORM puts the whole connection string in some
//! connection errors). Both go through here: the password in the user part and any
//! `password=` query parameter become `***`, and a driver's message is searched for the
//! URL and the password themselves.

use sea_orm::{DbErr, RuntimeErr};

/// What a hidden password is shown as.
const HIDDEN: &str = "***";

/// `url` with its password hidden. A text that is no URL is returned as it is unless it
/// has an `@`, in which case everything before the `@` is hidden.
pub(crate) fn url(text: &str) -> String {
    match url::Url::parse(text) {
        Ok(mut parsed) if parsed.has_host() || parsed.password().is_some() => {
            if parsed.password().is_some() {
                let _ = parsed.set_password(Some(HIDDEN));
            }
            let pairs: Vec<(String, String)> = parsed
                .query_pairs()
                .map(|(key, value)| {
                    let value = if is_secret(&key) {
                        HIDDEN.to_owned()
                    } else {
                        value.into_owned()
                    };
                    (key.into_owned(), value)
                })
                .collect();
            if pairs.iter().any(|(key, _)| is_secret(key)) {
                parsed.query_pairs_mut().clear().extend_pairs(pairs);
            }
            parsed.to_string()
        }
        _ => match text.rsplit_once('@') {
            Some((_, host)) => format!("{HIDDEN}@{host}"),
            None => text.to_owned(),
        },
    }
}

fn is_secret(key: &str) -> bool {
    matches!(
        key.to_ascii_lowercase().as_str(),
        "password" | "pass" | "pwd" | "sslpassword"
    )
}

/// The secrets of `text` (a URL): its password and secret query parameters, decoded and
/// as written.
fn secrets(text: &str) -> Vec<String> {
    let Ok(parsed) = url::Url::parse(text) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    if let Some(password) = parsed.password() {
        found.push(password.to_owned());
        if let Ok(decoded) = percent_encoding::percent_decode_str(password).decode_utf8() {
            found.push(decoded.into_owned());
        }
    }
    for (key, value) in parsed.query_pairs() {
        if is_secret(&key) {
            found.push(value.into_owned());
        }
    }
    found.retain(|secret| !secret.is_empty());
    found
}

/// `message` with `url` and its secrets hidden.
pub(crate) fn message(message: &str, text: &str) -> String {
    let mut out = message.replace(text, &url(text));
    for secret in secrets(text) {
        out = out.replace(&secret, HIDDEN);
    }
    out
}

/// The error of connecting to `text`, with the URL and its secrets hidden in its message.
pub(crate) fn connect_error(text: &str, error: DbErr) -> DbErr {
    let shown = message(&error.to_string(), text);
    if secrets(text).is_empty() && !error.to_string().contains(text) {
        return error;
    }
    DbErr::Conn(RuntimeErr::Internal(shown))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_hidden() {
        assert_eq!(
            url("postgres://app:s3cret@db:5432/main?sslmode=require"),
            "postgres://app:***@db:5432/main?sslmode=require"
        );
        assert_eq!(
            url("mysql://root@db/main?password=s3cret&ssl-mode=disabled"),
            "mysql://root@db/main?password=***&ssl-mode=disabled"
        );
        assert_eq!(url("sqlite://./t.db?mode=rwc"), "sqlite://./t.db?mode=rwc");
        assert_eq!(url("not a url user:pw@host"), "***@host");
        let shown = message(
            "The connection string 'postgres://u:p%40ss@h/x' has no supporting driver; p@ss",
            "postgres://u:p%40ss@h/x",
        );
        assert!(
            !shown.contains("p%40ss") && !shown.contains("p@ss"),
            "{shown}"
        );
    }
}
