//! Every rule a derive input must follow, each error with a span on the offending item.

use crate::ast::{Errors, Field, Kind, Model};
use syn::spanned::Spanned;
use syn::{GenericArgument, PathArguments, Type};

/// The fields the derive is about, once the input has passed every rule.
pub struct Checked<'m, 'a> {
    pub tenant: Option<&'m Field<'a>>,
    pub shard_key: Option<&'m Field<'a>>,
    pub unique_id: Option<&'m Field<'a>>,
}

pub fn check<'m, 'a>(model: &'m Model<'a>, kind: Kind, errors: &mut Errors) -> Checked<'m, 'a> {
    let tenant_fields: Vec<&Field> = model
        .fields
        .iter()
        .filter(|f| f.tenant_id.is_some())
        .collect();
    let shard_fields: Vec<&Field> = model
        .fields
        .iter()
        .filter(|f| f.shard_key.is_some())
        .collect();

    match kind {
        Kind::TenantScoped => {
            if tenant_fields.is_empty() {
                errors.at(
                    model.ident.span(),
                    format!(
                        "`#[derive(TenantScoped)]` on `{}` needs one field marked `#[tenant_id]` \
                         (or derive `GlobalEntity` for a table shared by every tenant)",
                        model.ident
                    ),
                );
            }
            for extra in tenant_fields.iter().skip(1) {
                errors.at(
                    attr_span(extra.tenant_id),
                    format!(
                        "a model has exactly one `#[tenant_id]` field; `{}` is marked already",
                        tenant_fields[0].ident
                    ),
                );
            }
            for field in &tenant_fields {
                check_column_field(field, "tenant id", errors);
            }
        }
        Kind::Global => {
            for field in &tenant_fields {
                errors.at(
                    attr_span(field.tenant_id),
                    "a `GlobalEntity` belongs to no tenant: remove `#[tenant_id]`, or derive \
                     `TenantScoped` instead",
                );
            }
            for field in &shard_fields {
                errors.at(
                    attr_span(field.shard_key),
                    "a `GlobalEntity` lives on every shard and has no `#[shard_key]`",
                );
            }
        }
    }

    if kind == Kind::TenantScoped {
        for extra in shard_fields.iter().skip(1) {
            errors.at(
                attr_span(extra.shard_key),
                format!(
                    "a model has at most one `#[shard_key]` field; `{}` is marked already",
                    shard_fields[0].ident
                ),
            );
        }
        for field in &shard_fields {
            if field.tenant_id.is_some() {
                errors.at(
                    attr_span(field.shard_key),
                    "the tenant id is the shard key already when no field is `#[shard_key]`; \
                     remove this attribute",
                );
            } else {
                check_column_field(field, "shard key", errors);
            }
        }
    }

    let unique_id = check_unique_id(model, kind, errors);
    Checked {
        tenant: tenant_fields.first().copied(),
        shard_key: shard_fields.first().copied(),
        unique_id,
    }
}

/// At most one `#[unique_id]` field, on a tenant-scoped model's primary key, not the tenant
/// column (its `i64` type is checked by the generated code, with the type's span).
fn check_unique_id<'m, 'a>(
    model: &'m Model<'a>,
    kind: Kind,
    errors: &mut Errors,
) -> Option<&'m Field<'a>> {
    let marked: Vec<&Field> = model
        .fields
        .iter()
        .filter(|f| f.unique_id.is_some())
        .collect();
    for field in &marked {
        let span = attr_span(field.unique_id);
        if kind == Kind::Global {
            errors.at(
                span,
                "`#[unique_id]` is for tenant-scoped models: a `GlobalEntity`'s rows are the \
                 same on every shard, so set their keys yourself",
            );
        } else if field.tenant_id.is_some() {
            errors.at(
                span,
                "the tenant id is not a `#[unique_id]`: mark the row's own key instead",
            );
        } else if !field.sea_orm.primary_key {
            errors.at(
                span,
                format!(
                    "`#[unique_id]` fills a primary key, and `{}` is not one: mark it \
                     `#[sea_orm(primary_key, auto_increment = false)]`",
                    field.ident
                ),
            );
        } else {
            check_column_field(field, "unique id", errors);
        }
    }
    for extra in marked.iter().skip(1) {
        errors.at(
            attr_span(extra.unique_id),
            format!(
                "a model has at most one `#[unique_id]` field; `{}` is marked already",
                marked[0].ident
            ),
        );
    }
    marked.first().copied()
}

/// A tenant or shard-key field must be a real, non-null column.
fn check_column_field(field: &Field<'_>, role: &str, errors: &mut Errors) {
    if let Some(span) = field.sea_orm.ignore {
        errors.at(
            span,
            format!(
                "the {role} field `{}` cannot be `#[sea_orm(ignore)]`: it must be a column",
                field.ident
            ),
        );
    }
    if let Some(inner) = option_inner(field.ty) {
        errors.at(
            field.ty.span(),
            format!(
                "the {role} field `{}` cannot be `Option<_>`: a row without one would belong \
                 nowhere; use `{}` and a NOT NULL column",
                field.ident,
                quote::quote!(#inner)
            ),
        );
    }
}

/// `Some(T)` when `ty` is written `Option<T>` (or a path ending in `Option<T>`).
pub fn option_inner(ty: &Type) -> Option<&Type> {
    let Type::Path(path) = ty else { return None };
    let last = path.path.segments.last()?;
    if last.ident != "Option" {
        return None;
    }
    match &last.arguments {
        PathArguments::AngleBracketed(args) if args.args.len() == 1 => match args.args.first() {
            Some(GenericArgument::Type(inner)) => Some(inner),
            _ => None,
        },
        _ => None,
    }
}

fn attr_span(attr: Option<&syn::Attribute>) -> proc_macro2::Span {
    attr.map_or_else(proc_macro2::Span::call_site, |a| a.span())
}
