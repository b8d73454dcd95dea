//! A tenant-scoped table whose key is `#[unique_id]`: filled on insert from the tenancy's
//! `UniqueIds`, unique across shards and processes.
use sea_orm::entity::prelude::*;
use tenancy_sea::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, TenantScoped)]
#[sea_orm(table_name = "tickets")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    #[unique_id]
    pub id: i64,
    #[tenant_id]
    pub tenant_id: i64,
    pub title: String,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
