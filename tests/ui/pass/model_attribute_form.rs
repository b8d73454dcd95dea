// SeaORM 2.0's `#[sea_orm::model]` form: the derive is copied onto `ModelEx` and must
// emit nothing there.

mod user {
    use sea_orm::entity::prelude::*;
    use tenancy_sea::prelude::*;

    #[sea_orm::model]
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, TenantScoped)]
    #[sea_orm(table_name = "users")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        #[tenant_id]
        pub tenant_id: i64,
        #[sea_orm(has_many)]
        pub posts: HasMany<super::post::Entity>,
    }

    impl ActiveModelBehavior for ActiveModel {}
}

mod post {
    use sea_orm::entity::prelude::*;
    use tenancy_sea::prelude::*;

    #[sea_orm::model]
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, TenantScoped)]
    #[sea_orm(table_name = "posts")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        #[tenant_id]
        #[sea_orm(enum_name = "Owner", column_name = "tenant_id")]
        pub tenant_id: i64,
        pub user_id: i64,
        #[sea_orm(belongs_to, from = "user_id", to = "id")]
        pub user: HasOne<super::user::Entity>,
    }

    impl ActiveModelBehavior for ActiveModel {}
}

use sea_orm::IdenStatic;
use tenancy_sea::prelude::*;

#[allow(dead_code)]
async fn read(db: &TenantDb<i64>) -> tenancy_sea::Result<()> {
    let users = db.find::<user::Entity>().find_with_related::<post::Entity>().all().await?;
    let _posts = db.load_many::<post::Entity, _>(&users.into_iter().map(|(u, _)| u).collect::<Vec<_>>()).await?;
    Ok(())
}

fn main() {
    assert_eq!(<post::Entity as TenantScoped>::tenant_column().as_str(), "tenant_id");
    assert!(matches!(<post::Entity as TenantScoped>::tenant_column(), post::Column::Owner));
}
