//! A tenant-scoped table sharded by a key of its own (`device_id`): a tenant's rows are
//! spread over the shards. Ids are given by the client, so they are unique across shards.
use sea_orm::entity::prelude::*;
use tenancy_sea::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, TenantScoped)]
#[sea_orm(table_name = "events")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: i64,
    #[tenant_id]
    pub tenant_id: i64,
    #[shard_key]
    pub device_id: i64,
    pub reading: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
