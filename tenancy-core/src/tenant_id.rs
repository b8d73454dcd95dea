use crate::InvalidTenantId;
use std::fmt::{Debug, Display};
use std::hash::Hash;
use unicode_normalization::is_nfc;
use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};

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

    /// Whether the canonical bytes are an integer's (8 big-endian bytes of an `i64`): only
    /// such keys are placed by ranges ([`RangeRouter`](crate::RangeRouter), the ranges of
    /// a [`DirectoryRouter`](crate::DirectoryRouter)). `false` unless overridden, so a key
    /// of another type is never read as a number because its bytes happen to be eight.
    const INTEGER: bool = false;

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
            const INTEGER: bool = true;

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

    /// A `String` tenant id is valid when it is 1 to 128 bytes of UTF-8 in Unicode
    /// normalization form C, has no white space at either end, and contains only visible
    /// characters and the ASCII space: no control, format (zero-width, byte-order mark),
    /// bidirectional-control, invisible filler, variation-selector, private-use,
    /// unassigned or non-ASCII space characters. So no two valid ids look the same by an
    /// invisible difference (`"acme"` and `"acme\u{200B}"`), and text that reorders itself
    /// on screen (`"\u{202E}gnp.exe"`) is refused.
    ///
    /// Ids that differ only by case or accent (`"acme"`, `"ACME"`, `"ácmé"`) are valid and
    /// are different tenants everywhere: the library compares tenant columns exactly on
    /// every backend. Characters of different scripts that look alike (Latin `a`, Cyrillic
    /// `а`) are not refused; restrict ids further with your own [`TenantId`] type (a slug)
    /// where that matters.
    fn validate(&self) -> Result<(), InvalidTenantId> {
        let reason = if self.is_empty() {
            "empty"
        } else if self.len() > MAX_STRING_TENANT_ID_LEN {
            "longer than 128 bytes"
        } else if self.chars().any(char::is_control) {
            "contains a control character"
        } else if self.trim() != self {
            "has leading or trailing white space"
        } else if let Some(reason) = self.chars().find_map(invisible) {
            reason
        } else if !is_nfc(self) {
            "is not in Unicode normalization form C (NFC)"
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

/// Why `c` cannot be in a `String` tenant id, if it cannot: it is invisible, changes how
/// the text around it is shown, or has no meaning yet.
fn invisible(c: char) -> Option<&'static str> {
    // Default-ignorable code points that are not format characters (Unicode's
    // DerivedCoreProperties.txt): combining grapheme joiner, Hangul and Khmer fillers,
    // Mongolian free variation selectors, variation selectors.
    const IGNORABLE: &[(char, char)] = &[
        ('\u{034F}', '\u{034F}'),
        ('\u{115F}', '\u{1160}'),
        ('\u{17B4}', '\u{17B5}'),
        ('\u{180B}', '\u{180F}'),
        ('\u{3164}', '\u{3164}'),
        // Braille pattern blank and the Hangul fillers render as nothing but are letters
        // or symbols, not format characters.
        ('\u{2800}', '\u{2800}'),
        ('\u{FE00}', '\u{FE0F}'),
        ('\u{FFA0}', '\u{FFA0}'),
        ('\u{E0100}', '\u{E01EF}'),
    ];
    if matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}' | '\u{061C}')
    {
        return Some("contains a bidirectional control character");
    }
    if IGNORABLE
        .iter()
        .any(|(low, high)| (*low..=*high).contains(&c))
    {
        return Some("contains an invisible character");
    }
    match c.general_category() {
        GeneralCategory::Format => Some("contains an invisible format character"),
        GeneralCategory::SpaceSeparator if c != ' ' => Some("contains a space other than U+0020"),
        GeneralCategory::LineSeparator | GeneralCategory::ParagraphSeparator => {
            Some("contains a line or paragraph separator")
        }
        GeneralCategory::PrivateUse => Some("contains a private-use character"),
        GeneralCategory::Unassigned | GeneralCategory::Surrogate => {
            Some("contains an unassigned code point")
        }
        _ => None,
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
        for (bad, reason) in [
            ("acme\u{200B}", "contains an invisible format character"),
            ("\u{FEFF}acme", "contains an invisible format character"),
            (
                "\u{202E}gnp.exe",
                "contains a bidirectional control character",
            ),
            ("ac\u{2066}me", "contains a bidirectional control character"),
            ("acme\u{00AD}", "contains an invisible format character"),
            ("a\u{034F}cme", "contains an invisible character"),
            ("acme\u{FE0F}", "contains an invisible character"),
            ("\u{3164}acme", "contains an invisible character"),
            ("ac\u{00A0}me", "contains a space other than U+0020"),
            ("ac\u{2028}me", "contains a line or paragraph separator"),
            ("acme\u{E000}", "contains a private-use character"),
            ("acme\u{0378}", "contains an unassigned code point"),
            ("acme\u{E0041}", "contains an invisible format character"),
            ("a\u{200D}b", "contains an invisible format character"),
            (
                "ca\u{0301}fe",
                "is not in Unicode normalization form C (NFC)",
            ),
        ] {
            let err = String::parse_tenant_id(bad).unwrap_err();
            assert_eq!(err.reason(), reason, "{bad:?}");
        }
        // Visible text in any script, case and accents are valid (and distinct) ids.
        for good in [
            "ACME",
            "ácmé",
            "MÜNCHEN",
            "münchen",
            "acme corp",
            "東京",
            "café",
            "👍",
        ] {
            assert!(String::parse_tenant_id(good).is_ok(), "{good:?}");
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
