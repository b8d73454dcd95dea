//! Code generation.

use crate::ast::{Errors, Field, Kind, Model};
use crate::{fallback, valid};
use heck::ToUpperCamelCase;
use proc_macro2::TokenStream;
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{DeriveInput, Ident, Path};

pub fn derive(input: &DeriveInput, kind: Kind) -> TokenStream {
    // `#[sea_orm::model]` copies the model's derives onto the generated `ModelEx`; the
    // entity is implemented once, from `Model`, so the copy emits nothing.
    if input.ident == "ModelEx" {
        return TokenStream::new();
    }
    let mut errors = Errors::default();
    let Some(model) = Model::from_input(input, &mut errors) else {
        return to_compile_errors(errors);
    };
    let checked = valid::check(&model, kind, &mut errors);
    let names = Names::of(&model);
    match errors.into_result() {
        Ok(()) => match kind {
            Kind::TenantScoped => match checked.tenant {
                Some(tenant) => {
                    tenant_scoped(&names, &model, tenant, checked.shard_key, checked.unique_id)
                }
                None => fallback::placeholder(&names, None),
            },
            Kind::Global => global(&names),
        },
        Err(error) => {
            let mut out = error.to_compile_error();
            out.extend(fallback::placeholder(&names, checked.tenant));
            out
        }
    }
}

fn to_compile_errors(errors: Errors) -> TokenStream {
    errors
        .into_result()
        .err()
        .map(|e| e.to_compile_error())
        .unwrap_or_default()
}

/// The paths the generated code names.
pub struct Names {
    pub krate: Path,
    pub entity: Path,
    pub column: Path,
}

impl Names {
    fn of(model: &Model<'_>) -> Self {
        Names {
            krate: model
                .options
                .krate
                .clone()
                .unwrap_or_else(|| syn::parse_quote!(::tenancy_sea)),
            entity: model
                .options
                .entity
                .clone()
                .unwrap_or_else(|| syn::parse_quote!(Entity)),
            column: model
                .options
                .column
                .clone()
                .unwrap_or_else(|| syn::parse_quote!(Column)),
        }
    }
}

/// The `Column` variant SeaORM generates for a field: `enum_name`, or the field name in
/// UpperCamelCase (`Self` becomes `Self_`, as in SeaORM).
pub fn column_variant(field: &Field<'_>) -> Ident {
    if let Some(name) = &field.sea_orm.enum_name {
        return Ident::new(&name.value(), name.span());
    }
    let raw = field.ident.to_string();
    let name = raw.trim_start_matches("r#").to_upper_camel_case();
    if name == "Self" {
        format_ident!("Self_", span = field.ident.span())
    } else {
        Ident::new(&name, field.ident.span())
    }
}

fn tenant_scoped(
    names: &Names,
    model: &Model<'_>,
    tenant: &Field<'_>,
    shard_key: Option<&Field<'_>>,
    unique_id: Option<&Field<'_>>,
) -> TokenStream {
    let Names {
        krate,
        entity,
        column,
    } = names;
    let (id_type, primary_key) = tenant_keyed(names, model, tenant);
    let tenant_variant = column_variant(tenant);
    // Spanned on the field's type, so "not a tenant id type" points at it.
    let ty = tenant.ty;
    let ty = quote_spanned!(ty.span()=> #ty);
    // Read without a key only when the tenant is the shard key: a `#[shard_key]` entity is
    // read by key or explicitly across shards, so `find` on it does not compile.
    let (shard_key, by_tenant) = match shard_key {
        Some(field) => {
            let variant = column_variant(field);
            let key_ty = field.ty;
            let key_ty = quote_spanned!(key_ty.span()=> #key_ty);
            (
                quote! {
                    #[inline]
                    fn shard_key_column() -> ::core::option::Option<#column> {
                        ::core::option::Option::Some(#column::#variant)
                    }

                    fn shard_key_type() -> ::core::option::Option<#krate::KeyType> {
                        ::core::option::Option::Some(#krate::KeyType::of::<<#entity as #krate::ShardKeyed>::Key>())
                    }

                    fn write_shard_key(
                        value: #krate::__private::Value,
                        out: &mut ::std::vec::Vec<u8>,
                    ) -> ::core::result::Result<(), #krate::RoutingError> {
                        #krate::__private::write_shard_key::<<#entity as #krate::ShardKeyed>::Key>(value, out)
                    }
                },
                quote! {
                    #[automatically_derived]
                    #[diagnostic::do_not_recommend]
                    impl #krate::ShardKeyed for #entity {
                        type Key = #key_ty;
                    }

                    #[automatically_derived]
                    #[diagnostic::do_not_recommend]
                    impl #krate::__private::sealed::ShardKeyedSeal for #entity {}
                },
            )
        }
        None => (
            quote! {
                #[inline]
                fn shard_key_column() -> ::core::option::Option<#column> {
                    ::core::option::Option::None
                }
            },
            quote! {
                #[automatically_derived]
                #[diagnostic::do_not_recommend]
                impl #krate::ScopedEntity<<#entity as #krate::TenantScoped>::TenantId> for #entity {
                    type Id = #id_type;

                    #[inline]
                    fn scope_column() -> ::core::option::Option<#column> {
                        ::core::option::Option::Some(#column::#tenant_variant)
                    }

                    #primary_key
                }

                #[automatically_derived]
                #[diagnostic::do_not_recommend]
                impl #krate::__private::sealed::ScopedEntitySeal<
                    <#entity as #krate::TenantScoped>::TenantId,
                > for #entity
                {
                }
            },
        ),
    };
    let unique_id = unique_id.map(|field| {
        let variant = column_variant(field);
        let id_ty = field.ty;
        let check = quote_spanned!(id_ty.span()=> #krate::__private::unique_id_key::<#id_ty>());
        quote! {
            #[inline]
            fn unique_id_column() -> ::core::option::Option<#column> {
                #check;
                ::core::option::Option::Some(#column::#variant)
            }
        }
    });
    quote! {
        #[automatically_derived]
        #[diagnostic::do_not_recommend]
        impl #krate::TenantScoped for #entity {
            type TenantId = #ty;

            #[inline]
            fn tenant_column() -> #column {
                #column::#tenant_variant
            }

            #shard_key

            #unique_id
        }

        #[automatically_derived]
        #[diagnostic::do_not_recommend]
        impl #krate::__private::sealed::TenantScopedSeal for #entity {}

        #by_tenant

        #krate::__private::inventory::submit! {
            #krate::__private::Registered {
                describe: #krate::__private::describe_scoped::<#entity>,
            }
        }
    }
}

/// The id a handle's `find_by_id` and `delete_by_id` take, and how the whole primary key
/// is made from it: when the key holds the tenant column beside other columns, the rest
/// of the key (one type, or a tuple in the key's order), the handle filling in the
/// tenant; otherwise the whole key.
fn tenant_keyed(
    names: &Names,
    model: &Model<'_>,
    tenant: &Field<'_>,
) -> (TokenStream, TokenStream) {
    let Names { krate, entity, .. } = names;
    let key: Vec<&Field<'_>> = model
        .fields
        .iter()
        .filter(|f| f.sea_orm.primary_key)
        .collect();
    let holds_tenant = key.iter().any(|f| f.ident == tenant.ident);
    if !holds_tenant || key.len() < 2 {
        return (
            quote! {
                <<#entity as #krate::__private::EntityTrait>::PrimaryKey
                    as #krate::__private::PrimaryKeyTrait>::ValueType
            },
            quote! {
                #[inline]
                fn primary_key(_: &<#entity as #krate::TenantScoped>::TenantId, id: Self::Id)
                    -> <<#entity as #krate::__private::EntityTrait>::PrimaryKey
                        as #krate::__private::PrimaryKeyTrait>::ValueType
                {
                    id
                }
            },
        );
    }
    let rest: Vec<&Field<'_>> = key
        .iter()
        .copied()
        .filter(|f| f.ident != tenant.ident)
        .collect();
    let rest_types: Vec<&syn::Type> = rest.iter().map(|f| f.ty).collect();
    let id_type = if rest.len() == 1 {
        let ty = rest_types[0];
        quote!(#ty)
    } else {
        quote!((#(#rest_types,)*))
    };
    let mut part = 0usize;
    let parts: Vec<TokenStream> = key
        .iter()
        .map(|f| {
            if f.ident == tenant.ident {
                quote!(::core::clone::Clone::clone(tenant))
            } else if rest.len() == 1 {
                quote!(id)
            } else {
                let index = syn::Index::from(part);
                part += 1;
                quote!(id.#index)
            }
        })
        .collect();
    (
        id_type,
        quote! {
            #[inline]
            fn primary_key(tenant: &<#entity as #krate::TenantScoped>::TenantId, id: Self::Id)
                -> <<#entity as #krate::__private::EntityTrait>::PrimaryKey
                    as #krate::__private::PrimaryKeyTrait>::ValueType
            {
                (#(#parts,)*)
            }
        },
    )
}

fn global(names: &Names) -> TokenStream {
    let Names {
        krate,
        entity,
        column,
    } = names;
    quote! {
        #[automatically_derived]
        #[diagnostic::do_not_recommend]
        impl #krate::GlobalEntity for #entity {}

        #[automatically_derived]
        #[diagnostic::do_not_recommend]
        impl #krate::__private::sealed::GlobalEntitySeal for #entity {}

        #[automatically_derived]
        #[diagnostic::do_not_recommend]
        impl<__TenantId: #krate::SqlTenantId> #krate::ScopedEntity<__TenantId> for #entity {
            type Id = <<#entity as #krate::__private::EntityTrait>::PrimaryKey
                as #krate::__private::PrimaryKeyTrait>::ValueType;

            #[inline]
            fn scope_column() -> ::core::option::Option<#column> {
                ::core::option::Option::None
            }

            #[inline]
            fn primary_key(_: &__TenantId, id: Self::Id) -> Self::Id {
                id
            }
        }

        #[automatically_derived]
        #[diagnostic::do_not_recommend]
        impl<__TenantId: #krate::SqlTenantId> #krate::__private::sealed::ScopedEntitySeal<__TenantId>
            for #entity
        {
        }

        #krate::__private::inventory::submit! {
            #krate::__private::Registered {
                describe: #krate::__private::describe_global::<#entity>,
            }
        }
    }
}
