//! Derive macros of `tenancy`: `#[derive(TenantScoped)]` and `#[derive(GlobalEntity)]`.
//!
//! Use them through `tenancy_sea`, which re-exports both; the generated code refers to
//! `::tenancy_sea` (change it with `#[tenancy(crate = "path")]`). Misuse is a compile error
//! pointing at the offending field or attribute; on error a placeholder implementation is
//! still emitted, so one mistake shows one error.

mod ast;
mod attr;
mod expand;
mod fallback;
mod valid;

use proc_macro::TokenStream;
use syn::{DeriveInput, parse_macro_input};

/// Makes a SeaORM entity tenant-scoped: derive it on the `Model` beside
/// `DeriveEntityModel` (or under `#[sea_orm::model]`) and mark the tenant column with
/// `#[tenant_id]`. An optional `#[shard_key]` names the field that places a row on a
/// shard. See the `tenancy_sea` documentation for the full guide.
#[proc_macro_derive(TenantScoped, attributes(tenant_id, shard_key, unique_id, tenancy))]
pub fn derive_tenant_scoped(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    expand::derive(&input, ast::Kind::TenantScoped).into()
}

/// Marks a SeaORM entity as global: a table every tenant reads (plans, currencies) and
/// that has no tenant column. Tenant handles read it unfiltered and cannot write it.
#[proc_macro_derive(GlobalEntity, attributes(tenant_id, shard_key, unique_id, tenancy))]
pub fn derive_global_entity(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    expand::derive(&input, ast::Kind::Global).into()
}
