use std::fmt;

/// The longest identifier accepted, in bytes: PostgreSQL's limit (MySQL allows 64).
pub const MAX_IDENTIFIER_LEN: usize = 63;

/// A SQL identifier (a schema or database name) that is safe to put in DDL.
///
/// Only lowercase ASCII letters, digits and `_` are allowed, starting with a letter or
/// `_`, at most 63 bytes: such a name needs no escaping on any backend and cannot be
/// confused with another by case folding. It is still quoted wherever it is used.
///
/// ```
/// use tenancy_core::Identifier;
///
/// let schema = Identifier::for_tenant("tenant_", &42i64)?;
/// assert_eq!(schema.as_str(), "tenant_42");
/// assert!(Identifier::new(r#"x"; DROP SCHEMA public; --"#).is_err());
/// # Ok::<(), tenancy_core::InvalidIdentifier>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Identifier(String);

/// A name that cannot be used as a schema or database identifier.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidIdentifier {
    name: String,
    reason: &'static str,
}

impl InvalidIdentifier {
    /// The rejected name, shortened to 64 characters.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Why it was rejected.
    pub fn reason(&self) -> &'static str {
        self.reason
    }
}

impl fmt::Display for InvalidIdentifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid identifier {:?}: {}", self.name, self.reason)
    }
}

impl std::error::Error for InvalidIdentifier {}

impl Identifier {
    /// Validates `name`.
    pub fn new(name: &str) -> Result<Self, InvalidIdentifier> {
        let reason = if name.is_empty() {
            "empty"
        } else if name.len() > MAX_IDENTIFIER_LEN {
            "longer than 63 bytes"
        } else if !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            "only a-z, 0-9 and _ are allowed"
        } else if name.as_bytes()[0].is_ascii_digit() {
            "starts with a digit"
        } else {
            return Ok(Identifier(name.to_owned()));
        };
        let shown: String = name.chars().take(64).collect();
        Err(InvalidIdentifier {
            name: shown,
            reason,
        })
    }

    /// `prefix` followed by the tenant's identifier fragment
    /// ([`TenantId::identifier_fragment`](crate::TenantId::identifier_fragment)), validated.
    ///
    /// The prefix must not be empty (a tenant could otherwise name any schema or database,
    /// `public` or `mysql`), and the name must not be one a database server keeps for
    /// itself ([`Identifier::reserved`]): either is an error, so provisioning and dropping
    /// never reach a schema or database that is not a tenant's.
    ///
    /// ```
    /// use tenancy_core::Identifier;
    /// assert!(Identifier::for_tenant("", &"public".to_owned()).is_err());
    /// assert!(Identifier::for_tenant("pg_", &"toast".to_owned()).is_err());
    /// assert_eq!(Identifier::for_tenant("t_", &"public".to_owned())?.as_str(), "t_public");
    /// # Ok::<(), tenancy_core::InvalidIdentifier>(())
    /// ```
    pub fn for_tenant<T: crate::TenantId>(
        prefix: &str,
        tenant: &T,
    ) -> Result<Self, InvalidIdentifier> {
        let name = format!("{prefix}{}", tenant.identifier_fragment());
        let refuse = |reason| {
            Err(InvalidIdentifier {
                name: name.chars().take(64).collect(),
                reason,
            })
        };
        if prefix.is_empty() {
            return refuse("a tenant's name needs a non-empty prefix");
        }
        let identifier = Identifier::new(&name)?;
        if Identifier::reserved(&name) {
            return refuse("the name is reserved by a database server");
        }
        Ok(identifier)
    }

    /// Whether `name` is a schema or database that PostgreSQL or MySQL/MariaDB keep for
    /// themselves: `public`, `information_schema`, `pg_*`, `postgres`, `template0`,
    /// `template1`, `mysql`, `performance_schema`, `sys`.
    pub fn reserved(name: &str) -> bool {
        matches!(
            name,
            "public"
                | "information_schema"
                | "postgres"
                | "template0"
                | "template1"
                | "mysql"
                | "performance_schema"
                | "sys"
        ) || name.starts_with("pg_")
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name in double quotes (PostgreSQL, SQLite).
    pub fn quoted(&self) -> String {
        // Validation leaves nothing to escape.
        format!("\"{}\"", self.0)
    }

    /// The name in backticks (MySQL, MariaDB).
    pub fn backquoted(&self) -> String {
        format!("`{}`", self.0)
    }
}

impl fmt::Display for Identifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_names_only() {
        assert_eq!(
            Identifier::new("tenant_42").unwrap().quoted(),
            "\"tenant_42\""
        );
        assert_eq!(Identifier::new("_x").unwrap().backquoted(), "`_x`");
        for (bad, reason) in [
            ("", "empty"),
            ("Tenant", "only a-z, 0-9 and _ are allowed"),
            ("a-b", "only a-z, 0-9 and _ are allowed"),
            (
                "x\"; DROP SCHEMA public; --",
                "only a-z, 0-9 and _ are allowed",
            ),
            ("9lives", "starts with a digit"),
        ] {
            assert_eq!(
                Identifier::new(bad).unwrap_err().reason(),
                reason,
                "{bad:?}"
            );
        }
        assert_eq!(
            Identifier::new(&"a".repeat(64)).unwrap_err().reason(),
            "longer than 63 bytes"
        );
        assert!(Identifier::new(&"a".repeat(63)).is_ok());
    }

    #[test]
    fn tenant_names() {
        let uuid = uuid::Uuid::from_u128(0xabc);
        assert_eq!(
            Identifier::for_tenant("t_", &uuid).unwrap().as_str(),
            "t_00000000000000000000000000000abc"
        );
        assert!(Identifier::for_tenant("t_", &-1i64).is_err());
        assert!(Identifier::for_tenant("t_", &"acme".to_owned()).is_ok());
        assert!(Identifier::for_tenant("t_", &"x\"; DROP".to_owned()).is_err());
        for (prefix, id) in [
            ("", "public"),
            ("", "x"),
            ("pub", "lic"),
            ("my", "sql"),
            ("pg_", "x"),
        ] {
            assert!(
                Identifier::for_tenant(prefix, &id.to_owned()).is_err(),
                "{prefix}{id}"
            );
        }
    }
}
