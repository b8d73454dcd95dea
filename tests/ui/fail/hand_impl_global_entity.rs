#[path = "../support/shop.rs"]
mod shop;

use shop::audit_log;

// A hand-written impl would let `Tenancy::globals()` write rows of a tenant table.
impl tenancy_sea::GlobalEntity for audit_log::Entity {}

fn main() {}
