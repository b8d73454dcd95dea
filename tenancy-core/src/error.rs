use std::fmt;

/// A tenant id that was rejected before it could reach a database.
///
/// Returned when a tenant id fails [`TenantId::validate`](crate::TenantId::validate) or
/// cannot be parsed by [`TenantId::parse_tenant_id`](crate::TenantId::parse_tenant_id).
/// The rejected input is kept (shortened to 64 characters) so the error can be logged.
///
/// ```
/// use tenancy_core::TenantId;
///
/// let err = i64::parse_tenant_id("acme").unwrap_err();
/// assert_eq!(err.to_string(), r#"invalid tenant id "acme" for type i64: not an integer"#);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidTenantId {
    input: String,
    type_name: &'static str,
    reason: &'static str,
}

impl InvalidTenantId {
    /// Creates the error for `input`, which is not a valid tenant id of `type_name`.
    pub fn new(input: &str, type_name: &'static str, reason: &'static str) -> Self {
        const SHOWN: usize = 64;
        let input = match input.char_indices().nth(SHOWN) {
            Some((cut, _)) => format!("{}…", &input[..cut]),
            None => input.to_owned(),
        };
        Self {
            input,
            type_name,
            reason,
        }
    }

    /// The rejected input, shortened to at most 64 characters.
    pub fn input(&self) -> &str {
        &self.input
    }

    /// The tenant id type that rejected it, e.g. `"i64"`.
    pub fn type_name(&self) -> &'static str {
        self.type_name
    }

    /// Why it was rejected.
    pub fn reason(&self) -> &'static str {
        self.reason
    }
}

impl fmt::Display for InvalidTenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid tenant id {:?} for type {}: {}",
            self.input, self.type_name, self.reason
        )
    }
}

impl std::error::Error for InvalidTenantId {}
