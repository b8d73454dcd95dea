// A select by `#[shard_key]` runs on the key's shard: it may join global entities (each
// shard has their copy) but not the tenant's co-located rows, which live elsewhere.
use sea_orm::entity::prelude::*;
use tenancy_sea::prelude::*;

pub mod customers {
    use sea_orm::entity::prelude::*;
    use tenancy_sea::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, TenantScoped)]
    #[sea_orm(table_name = "customers")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        #[tenant_id]
        pub tenant_id: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod plans {
    use sea_orm::entity::prelude::*;
    use tenancy_sea::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, GlobalEntity)]
    #[sea_orm(table_name = "plans")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, TenantScoped)]
#[sea_orm(table_name = "events")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: i64,
    #[tenant_id]
    pub tenant_id: i64,
    #[shard_key]
    pub device_id: i64,
    pub customer_id: i64,
    pub plan_id: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(belongs_to = "customers::Entity", from = "Column::CustomerId", to = "customers::Column::Id")]
    Customer,
    #[sea_orm(belongs_to = "plans::Entity", from = "Column::PlanId", to = "plans::Column::Id")]
    Plan,
}

impl Related<customers::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Customer.def()
    }
}

impl Related<plans::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Plan.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}

async fn read(db: &TenantDb<i64>) -> tenancy_sea::Result<()> {
    let device = db.by_key::<Entity>(7)?;
    let _with_plans = device.find().find_also_related::<plans::Entity>().all().await?;
    let _with_customers = device.find().find_also_related::<customers::Entity>().all().await?;
    Ok(())
}

fn main() {}
