//! A global table: every tenant reads it, none owns it.
use sea_orm::entity::prelude::*;
use tenancy_sea::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, GlobalEntity)]
#[sea_orm(table_name = "plans")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub name: String,
    pub price_cents: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(has_many = "super::customer::Entity")]
    Customer,
}

impl Related<super::customer::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Customer.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
