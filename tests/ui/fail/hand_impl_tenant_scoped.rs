#[path = "../support/shop.rs"]
mod shop;

use shop::audit_log;

// A hand-written impl could name the wrong tenant column.
impl tenancy_sea::TenantScoped for audit_log::Entity {
    type TenantId = i64;

    fn tenant_column() -> Self::Column {
        audit_log::Column::Id
    }

    fn shard_key_column() -> Option<Self::Column> {
        None
    }
}

fn main() {}
