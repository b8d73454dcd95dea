//! Entities keyed by tenant, `(tenant_id, id)` (the key Citus needs, and a common design
//! anywhere): on every backend a handle's `find_by_id` and `delete_by_id` take the rest of
//! the key and fill in the tenant, so two tenants' rows with the same id stay apart and no
//! id reaches another tenant's row.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failure is a panic

use sea_orm::ActiveValue::Set;
use tenancy_sea::Tenancy;
use tenancy_tests::Backend;

/// A tenant's ledger lines, keyed by `(tenant_id, id)`, and lines keyed by three columns
/// with the tenant in the middle.
mod ledger {
    use sea_orm::entity::prelude::*;
    use tenancy_sea::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, TenantScoped)]
    #[sea_orm(table_name = "ledger")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        #[tenant_id]
        pub tenant_id: i64,
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: i64,
        pub amount: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// Members with an email unique per tenant: the unique key `(tenant_id, email)`.
mod member {
    use sea_orm::entity::prelude::*;
    use tenancy_sea::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, TenantScoped)]
    #[sea_orm(table_name = "ledger_members")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false, unique_key = "tenant_email")]
        #[tenant_id]
        pub tenant_id: i64,
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: i64,
        #[sea_orm(unique_key = "tenant_email")]
        pub email: String,
        pub visits: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

mod entry {
    use sea_orm::entity::prelude::*;
    use tenancy_sea::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, TenantScoped)]
    #[sea_orm(table_name = "ledger_entries")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub book: String,
        #[sea_orm(primary_key, auto_increment = false)]
        #[tenant_id]
        pub tenant_id: i64,
        #[sea_orm(primary_key, auto_increment = false)]
        pub line: i32,
        pub amount: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

async fn keyed_by_tenant(backend: Backend) {
    tenancy_tests::on_empty(backend, async |db| {
        db.conn
            .get_schema_builder()
            .register(ledger::Entity)
            .register(entry::Entity)
            .register(member::Entity)
            .apply(&db.conn)
            .await
            .unwrap();
        let tenancy = Tenancy::<i64>::builder(db.conn.clone()).build().unwrap();
        let (a, b) = (
            tenancy.tenant(1).await.unwrap(),
            tenancy.tenant(2).await.unwrap(),
        );
        for (handle, amount) in [(&a, 100), (&b, 200)] {
            for id in 1..=3 {
                handle
                    .insert(ledger::ActiveModel {
                        id: Set(id),
                        amount: Set(amount + id),
                        ..Default::default()
                    })
                    .await
                    .unwrap();
            }
        }
        // The same id in two tenants: each handle finds its own.
        let mine = a
            .find_by_id::<ledger::Entity>(2)
            .one()
            .await
            .unwrap()
            .unwrap();
        let theirs = b
            .find_by_id::<ledger::Entity>(2)
            .one()
            .await
            .unwrap()
            .unwrap();
        assert_eq!((mine.tenant_id, mine.amount), (1, 102));
        assert_eq!((theirs.tenant_id, theirs.amount), (2, 202));
        assert!(
            a.find_by_id::<ledger::Entity>(9)
                .one()
                .await
                .unwrap()
                .is_none()
        );

        // A delete by id removes this tenant's row only.
        let deleted = a.delete_by_id::<ledger::Entity>(2).await.unwrap();
        assert_eq!(deleted.rows_affected, 1);
        assert!(
            a.find_by_id::<ledger::Entity>(2)
                .one()
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            b.find_by_id::<ledger::Entity>(2)
                .one()
                .await
                .unwrap()
                .is_some()
        );

        // An update by the whole key changes this tenant's row, never the other's.
        a.update(ledger::ActiveModel {
            tenant_id: Set(1),
            id: Set(3),
            amount: Set(-1),
        })
        .await
        .unwrap();
        let other = b
            .find_by_id::<ledger::Entity>(3)
            .one()
            .await
            .unwrap()
            .unwrap();
        assert_eq!(other.amount, 203);

        // Three key columns, the tenant in the middle: the rest is a tuple in key order.
        for (handle, book) in [(&a, "cash"), (&b, "cash")] {
            handle
                .insert(entry::ActiveModel {
                    book: Set(book.to_owned()),
                    line: Set(1),
                    amount: Set(*handle.tenant_id() * 10),
                    ..Default::default()
                })
                .await
                .unwrap();
        }
        let line = b
            .find_by_id::<entry::Entity>(("cash".to_owned(), 1))
            .one()
            .await
            .unwrap()
            .unwrap();
        assert_eq!((line.tenant_id, line.amount), (2, 20));
        assert_eq!(
            a.delete_by_id::<entry::Entity>(("cash".to_owned(), 1))
                .await
                .unwrap()
                .rows_affected,
            1
        );
        assert!(
            b.find_by_id::<entry::Entity>(("cash".to_owned(), 1))
                .one()
                .await
                .unwrap()
                .is_some()
        );

        // An upsert on the email finds the per-tenant key `(tenant_id, email)`: the tenant
        // column joins the conflict target, and each tenant's `ann@x` is its own row.
        let visit = |id: i64| member::ActiveModel {
            id: Set(id),
            email: Set("ann@x".to_owned()),
            visits: Set(1),
            ..Default::default()
        };
        for (handle, id) in [(&a, 1), (&a, 2), (&b, 7), (&a, 3)] {
            handle
                .upsert(visit(id))
                .on_conflict([member::Column::Email])
                .update_columns([member::Column::Visits])
                .exec()
                .await
                .unwrap();
        }
        let ann = |handle: &tenancy_sea::TenantDb<i64>| {
            let handle = handle.clone();
            async move {
                handle
                    .find::<member::Entity>()
                    .all()
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|m| (m.id, m.visits))
                    .collect::<Vec<_>>()
            }
        };
        assert_eq!(ann(&a).await, [(1, 1)], "one row of a's, inserted once");
        assert_eq!(
            ann(&b).await,
            [(7, 1)],
            "b's own row, untouched by a's upserts"
        );
    })
    .await;
}

#[tokio::test]
async fn sqlite_keyed_by_tenant() {
    keyed_by_tenant(Backend::Sqlite).await;
}

#[tokio::test]
async fn postgres_keyed_by_tenant() {
    keyed_by_tenant(Backend::Postgres).await;
}

#[tokio::test]
async fn mysql_keyed_by_tenant() {
    keyed_by_tenant(Backend::MySql).await;
}
