//! Attribute parsing: `#[tenancy(...)]` on the struct, `#[tenant_id]`, `#[shard_key]` and
//! the parts of `#[sea_orm(...)]` that matter on a field.

use crate::ast::Errors;
use syn::meta::ParseNestedMeta;
use syn::spanned::Spanned;
use syn::{Attribute, Ident, LitStr, Meta, Path};

/// The struct-level `#[tenancy(...)]` options.
#[derive(Default)]
pub struct Options {
    /// `crate = "path"`: where the `tenancy_sea` crate is.
    pub krate: Option<Path>,
    /// `entity = "Path"`: the entity type, `Entity` by default.
    pub entity: Option<Path>,
    /// `column = "Path"`: the column enum, `Column` by default.
    pub column: Option<Path>,
}

/// Every key `#[tenancy(...)]` accepts, for the "did you mean" hint.
const OPTION_KEYS: &[&str] = &["crate", "entity", "column"];

pub fn options(attrs: &[Attribute], errors: &mut Errors) -> Options {
    let mut options = Options::default();
    for attr in attrs.iter().filter(|a| a.path().is_ident("tenancy")) {
        let parsed = attr.parse_nested_meta(|meta| {
            let slot = if meta.path.is_ident("crate") {
                &mut options.krate
            } else if meta.path.is_ident("entity") {
                &mut options.entity
            } else if meta.path.is_ident("column") {
                &mut options.column
            } else {
                return Err(unknown_option(&meta));
            };
            if slot.is_some() {
                return Err(meta.error("this `#[tenancy(...)]` option is given twice"));
            }
            let value: LitStr = meta.value()?.parse()?;
            *slot = Some(value.parse()?);
            Ok(())
        });
        if let Err(error) = parsed {
            errors.push(error);
        }
    }
    options
}

fn unknown_option(meta: &ParseNestedMeta<'_>) -> syn::Error {
    let key = meta
        .path
        .get_ident()
        .map(Ident::to_string)
        .unwrap_or_default();
    let known = OPTION_KEYS
        .iter()
        .map(|k| format!("`{k}`"))
        .collect::<Vec<_>>()
        .join(", ");
    let message = match closest(&key, OPTION_KEYS) {
        Some(guess) => format!(
            "unknown option `{key}` in `#[tenancy(...)]`; did you mean `{guess}`? (known: {known})"
        ),
        None => format!("unknown option `{key}` in `#[tenancy(...)]` (known: {known})"),
    };
    syn::Error::new(meta.path.span(), message)
}

/// The known key nearest to `key` by edit distance, if it is near enough to be a typo.
fn closest<'k>(key: &str, known: &[&'k str]) -> Option<&'k str> {
    known
        .iter()
        .map(|k| (edit_distance(key, k), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

/// Finds a bare marker attribute such as `#[tenant_id]`; a second one or arguments are errors.
pub fn marker<'a>(
    attrs: &'a [Attribute],
    name: &str,
    errors: &mut Errors,
) -> Option<&'a Attribute> {
    let mut found: Option<&Attribute> = None;
    for attr in attrs.iter().filter(|a| a.path().is_ident(name)) {
        if !matches!(attr.meta, Meta::Path(_)) {
            errors.push(syn::Error::new_spanned(
                &attr.meta,
                format!("`#[{name}]` takes no arguments"),
            ));
        }
        if found.is_some() {
            errors.push(syn::Error::new_spanned(
                attr,
                format!("`#[{name}]` is given twice on this field"),
            ));
        } else {
            found = Some(attr);
        }
    }
    found
}

/// What `#[sea_orm(...)]` says about a field's column.
#[derive(Default)]
pub struct SeaOrmField {
    /// `enum_name = "X"`: the `Column` variant is `X`.
    pub enum_name: Option<LitStr>,
    /// The `ignore` key, kept for its span: the field is no column at all.
    pub ignore: Option<proc_macro2::Span>,
    /// The `primary_key` key: the field is (part of) the primary key.
    pub primary_key: bool,
}

pub fn sea_orm_field(attrs: &[Attribute]) -> SeaOrmField {
    let mut field = SeaOrmField::default();
    for attr in attrs.iter().filter(|a| a.path().is_ident("sea_orm")) {
        let parsed = attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("enum_name") {
                field.enum_name = Some(meta.value()?.parse()?);
            } else if meta.path.is_ident("ignore") {
                field.ignore = Some(meta.path.span());
            } else if meta.path.is_ident("primary_key") {
                field.primary_key = true;
                skip_value(&meta)?;
            } else {
                skip_value(&meta)?;
            }
            Ok(())
        });
        // A malformed `#[sea_orm(...)]` is reported by SeaORM's own derive; one error is enough.
        drop(parsed);
    }
    field
}

/// Consumes whatever follows a `#[sea_orm(...)]` key we do not interpret.
fn skip_value(meta: &ParseNestedMeta<'_>) -> syn::Result<()> {
    if meta.input.peek(syn::Token![=]) {
        meta.value()?.parse::<syn::Expr>()?;
    } else if meta.input.peek(syn::token::Paren) {
        let content;
        syn::parenthesized!(content in meta.input);
        content.parse::<proc_macro2::TokenStream>()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_near_keys_only() {
        assert_eq!(closest("entiy", OPTION_KEYS), Some("entity"));
        assert_eq!(closest("krate", OPTION_KEYS), Some("crate"));
        assert_eq!(closest("colum", OPTION_KEYS), Some("column"));
        assert_eq!(closest("shard_count", OPTION_KEYS), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
