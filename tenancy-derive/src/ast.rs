//! The parsed model of a derive input.

use crate::attr::{self, Options};
use proc_macro2::Span;
use syn::{Attribute, Data, DeriveInput, Fields, Ident, Type};

/// Which derive is being expanded.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    TenantScoped,
    Global,
}

/// A struct with named fields, as the derives see it.
pub struct Model<'a> {
    pub ident: &'a Ident,
    pub options: Options,
    pub fields: Vec<Field<'a>>,
}

/// One named field and what the derives care about on it.
pub struct Field<'a> {
    pub ident: &'a Ident,
    pub ty: &'a Type,
    /// The `#[tenant_id]` attribute, if present (kept for its span).
    pub tenant_id: Option<&'a Attribute>,
    /// The `#[shard_key]` attribute, if present.
    pub shard_key: Option<&'a Attribute>,
    /// The `#[unique_id]` attribute, if present.
    pub unique_id: Option<&'a Attribute>,
    /// The `#[sea_orm(...)]` facts that change how the column is named or whether it exists.
    pub sea_orm: attr::SeaOrmField,
}

impl<'a> Model<'a> {
    /// Parses `input`, collecting every error instead of stopping at the first.
    pub fn from_input(input: &'a DeriveInput, errors: &mut Errors) -> Option<Self> {
        let fields = match &input.data {
            Data::Struct(data) => match &data.fields {
                Fields::Named(named) => &named.named,
                Fields::Unnamed(_) | Fields::Unit => {
                    errors.push(syn::Error::new_spanned(
                        &input.ident,
                        "tenancy derives need a struct with named fields, like a SeaORM `Model`",
                    ));
                    return None;
                }
            },
            Data::Enum(data) => {
                errors.push(syn::Error::new(
                    data.enum_token.span,
                    "tenancy derives work on a SeaORM `Model` struct, not on an enum",
                ));
                return None;
            }
            Data::Union(data) => {
                errors.push(syn::Error::new(
                    data.union_token.span,
                    "tenancy derives work on a SeaORM `Model` struct, not on a union",
                ));
                return None;
            }
        };
        let options = attr::options(&input.attrs, errors);
        let fields = fields
            .iter()
            .filter_map(|field| {
                let ident = field.ident.as_ref()?;
                Some(Field {
                    ident,
                    ty: &field.ty,
                    tenant_id: attr::marker(&field.attrs, "tenant_id", errors),
                    shard_key: attr::marker(&field.attrs, "shard_key", errors),
                    unique_id: attr::marker(&field.attrs, "unique_id", errors),
                    sea_orm: attr::sea_orm_field(&field.attrs),
                })
            })
            .collect();
        Some(Model {
            ident: &input.ident,
            options,
            fields,
        })
    }
}

/// Errors collected over a whole derive, reported together.
#[derive(Default)]
pub struct Errors(Option<syn::Error>);

impl Errors {
    pub fn push(&mut self, error: syn::Error) {
        match &mut self.0 {
            Some(all) => all.combine(error),
            None => self.0 = Some(error),
        }
    }

    pub fn at(&mut self, span: Span, message: impl std::fmt::Display) {
        self.push(syn::Error::new(span, message));
    }

    pub fn into_result(self) -> Result<(), syn::Error> {
        match self.0 {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }
}
