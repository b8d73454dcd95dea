//! A tenant-scoped table whose tenant column has its own `enum_name`.
use sea_orm::entity::prelude::*;
use tenancy_sea::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, TenantScoped)]
#[sea_orm(table_name = "orders")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    #[tenant_id]
    #[sea_orm(enum_name = "Tenant", column_name = "tenant_id")]
    pub tenant_id: i64,
    pub customer_id: i64,
    pub total_cents: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(
        belongs_to = "super::customer::Entity",
        from = "Column::CustomerId",
        to = "super::customer::Column::Id"
    )]
    Customer,
}

impl Related<super::customer::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Customer.def()
    }
}

impl Related<super::tag::Entity> for Entity {
    fn to() -> RelationDef {
        super::order_tag::Relation::Tag.def()
    }
    fn via() -> Option<RelationDef> {
        Some(super::order_tag::Relation::Order.def().rev())
    }
}

impl ActiveModelBehavior for ActiveModel {}
