#[path = "../support/shop.rs"]
mod shop;

use sea_orm::EntityTrait;
use shop::orders;
use tenancy_sea::TenantDb;

async fn read(db: &TenantDb<i64>) {
    // Plain SeaORM needs a ConnectionTrait; the tenant handle is not one.
    let _ = orders::Entity::find().all(db).await;
}

fn main() {}
