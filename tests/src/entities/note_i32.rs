//! A tenant-scoped table whose tenant id is `i32`.
use sea_orm::entity::prelude::*;
use tenancy_sea::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, TenantScoped)]
#[sea_orm(table_name = "notes_i32")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    #[tenant_id]
    pub owner: i32,
    pub body: String,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
