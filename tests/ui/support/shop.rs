// Entities shared by the UI cases that use a tenant handle.

pub mod orders {
    use sea_orm::entity::prelude::*;
    use tenancy_sea::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, TenantScoped)]
    #[sea_orm(table_name = "orders")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        #[tenant_id]
        pub tenant_id: i64,
        pub note_id: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {
        #[sea_orm(
            belongs_to = "super::notes::Entity",
            from = "Column::NoteId",
            to = "super::notes::Column::Id"
        )]
        Note,
    }

    impl Related<super::notes::Entity> for Entity {
        fn to() -> RelationDef {
            Relation::Note.def()
        }
    }

    impl ActiveModelBehavior for ActiveModel {}
}

/// Tenant-scoped with `String` tenant ids.
pub mod notes {
    use sea_orm::entity::prelude::*;
    use tenancy_sea::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, TenantScoped)]
    #[sea_orm(table_name = "notes")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        #[tenant_id]
        pub workspace: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// Global.
pub mod plans {
    use sea_orm::entity::prelude::*;
    use tenancy_sea::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, GlobalEntity)]
    #[sea_orm(table_name = "plans")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub name: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// Neither tenant-scoped nor global.
pub mod audit_log {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "audit_log")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub line: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod events {
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
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
