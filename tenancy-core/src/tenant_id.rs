use crate::InvalidTenantId;
use std::fmt::{Debug, Display};
use std::hash::Hash;

/// The longest string tenant id accepted, in bytes.
pub const MAX_STRING_TENANT_ID_LEN: usize = 128;

/// What a tenant id can be.
///
/// Implemented for `i32`, `i64`, `uuid::Uuid` and `String`. A tenant id is always sent to
/// the database as a bound parameter; this trait decides which values are acceptable at
/// all, how one is parsed from text (a header, a path segment, a subdomain) and which bytes
/// represent it when it is hashed to place data.
///
/// Implement it for a newtype to use your own id type:
///
/// ```
/// use tenancy_core::{InvalidTenantId, TenantId};
///
/// #[derive(Clone, Debug, PartialEq, Eq, Hash)]
/// struct Slug(String);
///
/// impl std::fmt::Display for Slug {
///     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
///         f.write_str(&self.0)
///     }
/// }
///
/// impl TenantId for Slug {
///     const TYPE_NAME: &'static str = "Slug";
///     fn validate(&self) -> Result<(), InvalidTenantId> {
///         if self.0.bytes().all(|b| b.is_ascii_lowercase() || b == b'-') && !self.0.is_empty() {
///             Ok(())
///         } else {
///             Err(InvalidTenantId::new(&self.0, Self::TYPE_NAME, "not a lowercase slug"))
///         }
///     }
///     fn parse_tenant_id(input: &str) -> Result<Self, InvalidTenantId> {
///         let slug = Slug(input.to_owned());
///         slug.validate()?;
///         Ok(slug)
///     }
///     fn write_canonical_bytes(&self, out: &mut Vec<u8>) {
///         out.extend_from_slice(self.0.as_bytes());
///     }
/// }
///
/// assert!(Slug::parse_tenant_id("acme-inc").is_ok());
/// assert!(Slug::parse_tenant_id("Acme Inc").is_err());
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be used as a tenant id",
    label = "not a tenant id type",
    note = "tenant ids can be i32, i64, uuid::Uuid or String, or a type that implements `TenantId`"
)]
pub trait TenantId: Clone + Debug + Display + Eq + Hash + Send + Sync + 'static {
    /// The name used in error messages, e.g. `"i64"`.
    const TYPE_NAME: &'static str;

    /// Checks that this value may identify a tenant.
    ///
    /// Every handle checks its tenant id with this before any statement runs.
    fn validate(&self) -> Result<(), InvalidTenantId>;

    /// Parses a tenant id from text and validates it.
    fn parse_tenant_id(input: &str) -> Result<Self, InvalidTenantId>;

    /// Appends the canonical bytes of this id to `out`.
    ///
    /// These bytes are what a hash router hashes, so they are part of the placement
    /// contract and never change: integers are their value as a big-endian `i64` (so `7i32`
    /// and `7i64` are the same key), a UUID its 16 bytes, a string its UTF-8 bytes.
    fn write_canonical_bytes(&self, out: &mut Vec<u8>);

    /// The text this id contributes to a schema or database name (see
    /// [`Identifier::for_tenant`](crate::Identifier::for_tenant)): its `Display` form, and
    /// for a UUID its 32 hex digits without dashes. The result is validated as part of an
    /// identifier, so an id that would make an unsafe name is rejected, never escaped.
    fn identifier_fragment(&self) -> String {
        self.to_string()
    }

    /// The canonical bytes of this id as a new vector.
    fn canonical_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16);
        self.write_canonical_bytes(&mut out);
        out
    }
}

macro_rules! integer_tenant_id {
    ($($ty:ty),*) => {$(
        impl TenantId for $ty {
            const TYPE_NAME: &'static str = stringify!($ty);

            fn validate(&self) -> Result<(), InvalidTenantId> {
                Ok(())
            }

            fn parse_tenant_id(input: &str) -> Result<Self, InvalidTenantId> {
                input
                    .parse::<$ty>()
                    .map_err(|_| InvalidTenantId::new(input, Self::TYPE_NAME, "not an integer"))
            }

            fn write_canonical_bytes(&self, out: &mut Vec<u8>) {
                out.extend_from_slice(&i64::from(*self).to_be_bytes());
            }
        }
    )*};
}

integer_tenant_id!(i32, i64);

impl TenantId for String {
    const TYPE_NAME: &'static str = "String";

    fn validate(&self) -> Result<(), InvalidTenantId> {
        let reason = if self.is_empty() {
            "empty"
        } else if self.len() > MAX_STRING_TENANT_ID_LEN {
            "longer than 128 bytes"
        } else if self.chars().any(char::is_control) {
            "contains a control character"
        } else if self.trim() != self {
            "has leading or trailing white space"
        } else {
            return Ok(());
        };
        Err(InvalidTenantId::new(self, Self::TYPE_NAME, reason))
    }

    fn parse_tenant_id(input: &str) -> Result<Self, InvalidTenantId> {
        let id = input.to_owned();
        id.validate()?;
        Ok(id)
    }

    fn write_canonical_bytes(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.as_bytes());
    }
}

impl TenantId for uuid::Uuid {
    const TYPE_NAME: &'static str = "Uuid";

    fn validate(&self) -> Result<(), InvalidTenantId> {
        if self.is_nil() {
            // The nil UUID is the usual "no tenant" placeholder: fail closed.
            Err(InvalidTenantId::new(
                &self.to_string(),
                Self::TYPE_NAME,
                "the nil UUID is not a tenant",
            ))
        } else {
            Ok(())
        }
    }

    fn parse_tenant_id(input: &str) -> Result<Self, InvalidTenantId> {
        let id = uuid::Uuid::parse_str(input)
            .map_err(|_| InvalidTenantId::new(input, Self::TYPE_NAME, "not a UUID"))?;
        id.validate()?;
        Ok(id)
    }

    fn write_canonical_bytes(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.as_bytes());
    }

    fn identifier_fragment(&self) -> String {
        self.simple().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_parse_and_share_canonical_bytes() {
        assert_eq!(i64::parse_tenant_id("-17"), Ok(-17));
        assert_eq!(i32::parse_tenant_id("7"), Ok(7));
        assert_eq!(7i32.canonical_bytes(), 7i64.canonical_bytes());
        assert_eq!(7i64.canonical_bytes(), vec![0, 0, 0, 0, 0, 0, 0, 7]);
        let err = i32::parse_tenant_id("99999999999").unwrap_err();
        assert_eq!(err.type_name(), "i32");
        assert_eq!(err.reason(), "not an integer");
    }

    #[test]
    fn strings_are_validated() {
        assert_eq!(String::parse_tenant_id("acme"), Ok("acme".to_owned()));
        for (bad, reason) in [
            ("", "empty"),
            (" acme", "has leading or trailing white space"),
            ("ac\0me", "contains a control character"),
        ] {
            let err = String::parse_tenant_id(bad).unwrap_err();
            assert_eq!(err.reason(), reason, "{bad:?}");
        }
        let long = "x".repeat(MAX_STRING_TENANT_ID_LEN + 1);
        let err = String::parse_tenant_id(&long).unwrap_err();
        assert_eq!(err.reason(), "longer than 128 bytes");
        assert_eq!(
            err.input().chars().count(),
            65,
            "input is shortened for logs"
        );
        assert_eq!(b"acme".to_vec(), "acme".to_owned().canonical_bytes());
    }

    #[test]
    fn uuids_reject_nil_and_garbage() {
        let id = uuid::Uuid::from_u128(0x1234);
        assert_eq!(uuid::Uuid::parse_tenant_id(&id.to_string()), Ok(id));
        assert_eq!(id.canonical_bytes(), id.as_bytes().to_vec());
        assert_eq!(
            uuid::Uuid::parse_tenant_id("00000000-0000-0000-0000-000000000000")
                .unwrap_err()
                .reason(),
            "the nil UUID is not a tenant"
        );
        assert_eq!(
            uuid::Uuid::parse_tenant_id("x").unwrap_err().reason(),
            "not a UUID"
        );
    }
}
