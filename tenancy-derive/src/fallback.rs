//! On error, still implement the traits, so the user sees the derive's error and not a
//! cascade of "trait not implemented" errors wherever the entity is used.

use crate::ast::Field;
use crate::expand::Names;
use crate::valid;
use proc_macro2::TokenStream;
use quote::quote;

pub fn placeholder(names: &Names, tenant: Option<&Field<'_>>) -> TokenStream {
    let Names {
        krate,
        entity,
        column,
    } = names;
    let mut out = quote! {
        #[automatically_derived]
        #[diagnostic::do_not_recommend]
        impl<__TenantId: #krate::SqlTenantId> #krate::ScopedEntity<__TenantId> for #entity {
            type Id = <<#entity as #krate::__private::EntityTrait>::PrimaryKey
                as #krate::__private::PrimaryKeyTrait>::ValueType;
            fn scope_column() -> ::core::option::Option<#column> {
                ::core::unreachable!("placeholder emitted beside a compile error")
            }
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
    };
    if let Some(field) = tenant {
        let ty = valid::option_inner(field.ty).unwrap_or(field.ty);
        out.extend(quote! {
            #[automatically_derived]
            #[diagnostic::do_not_recommend]
            impl #krate::TenantScoped for #entity {
                type TenantId = #ty;
                fn tenant_column() -> #column {
                    ::core::unreachable!("placeholder emitted beside a compile error")
                }
                fn shard_key_column() -> ::core::option::Option<#column> {
                    ::core::option::Option::None
                }
            }

            #[automatically_derived]
            #[diagnostic::do_not_recommend]
            impl #krate::__private::sealed::TenantScopedSeal for #entity {}
        });
    }
    out
}
