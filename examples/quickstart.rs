//! Quickstart: two tenants in one database, and neither can see the other.
//!
//! ```text
//! cargo run --example quickstart                      # SQLite in memory, no setup
//! DATABASE_URL=postgres://postgres@127.0.0.1/test cargo run --example quickstart
//! DATABASE_URL=mysql://root@127.0.0.1/test cargo run --example quickstart
//! ```
// An example's job is to print what happens.
#![allow(clippy::print_stdout)]

use sea_orm::{ColumnTrait, ConnectionTrait, Database, EntityTrait, Schema, Set};
use tenancy_sea::prelude::*;

/// A shop's customers. `#[derive(TenantScoped)]` and `#[tenant_id]` are all it takes.
mod customer {
    use sea_orm::entity::prelude::*;
    use tenancy_sea::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, TenantScoped)]
    #[sea_orm(table_name = "quickstart_customers")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        #[tenant_id]
        pub tenant_id: i64,
        pub name: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {
        #[sea_orm(has_many = "super::order::Entity")]
        Order,
    }

    impl Related<super::order::Entity> for Entity {
        fn to() -> RelationDef {
            Relation::Order.def()
        }
    }

    impl ActiveModelBehavior for ActiveModel {}
}

/// Their orders.
mod order {
    use sea_orm::entity::prelude::*;
    use tenancy_sea::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, TenantScoped)]
    #[sea_orm(table_name = "quickstart_orders")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        #[tenant_id]
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

    impl ActiveModelBehavior for ActiveModel {}
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| "sqlite::memory:".to_owned());
    let conn = Database::connect(&url).await?;
    println!("database: {:?}", conn.get_database_backend());

    // Fresh tables for the example (its own names, so it is safe on a shared database).
    let backend = conn.get_database_backend();
    let schema = Schema::new(backend);
    for drop in ["quickstart_orders", "quickstart_customers"] {
        conn.execute_unprepared(&format!("DROP TABLE IF EXISTS {drop}"))
            .await?;
    }
    conn.execute(&schema.create_table_from_entity(customer::Entity))
        .await?;
    conn.execute(&schema.create_table_from_entity(order::Entity))
        .await?;

    // Built once, at start-up: the tenant id type is i64.
    let tenancy: Tenancy<i64> = Tenancy::builder(conn).build()?;

    // One handle per tenant, e.g. per request after authentication.
    let acme = tenancy.tenant(1).await?;
    let globex = tenancy.tenant(2).await?;

    // Inserts are stamped with the handle's tenant: no tenant_id in sight.
    for (db, name, totals) in [
        (&acme, "Ada", [12_000, 800]),
        (&globex, "Grace", [50_000, 4_200]),
    ] {
        let customer = db
            .insert(customer::ActiveModel {
                name: Set(name.into()),
                ..Default::default()
            })
            .await?;
        for total_cents in totals {
            db.insert(order::ActiveModel {
                customer_id: Set(customer.id),
                total_cents: Set(total_cents),
                ..Default::default()
            })
            .await?;
        }
    }

    // Reads are filtered: SELECT ... WHERE tenant_id = $1 AND total_cents > $2
    let big = acme
        .find::<order::Entity>()
        .filter(order::Column::TotalCents.gt(1_000))
        .all()
        .await?;
    println!("acme's big orders: {big:?}");
    let statement = acme.find::<order::Entity>().build();
    let values = statement.values.map(|v| v.0).unwrap_or_default();
    println!(
        "acme's reads run as: {}\n  with bound values {values:?}",
        statement.sql
    );

    // Joins are filtered on both sides.
    for (customer, orders) in globex
        .find::<customer::Entity>()
        .find_with_related::<order::Entity>()
        .all()
        .await?
    {
        let totals: Vec<i64> = orders.iter().map(|o| o.total_cents).collect();
        println!("globex customer {} has orders {totals:?}", customer.name);
    }

    // Another tenant's row does not exist for this handle...
    let globex_order = globex
        .find::<order::Entity>()
        .one()
        .await?
        .ok_or("no order")?;
    let seen = acme
        .find_by_id::<order::Entity>(globex_order.id)
        .one()
        .await?;
    println!("acme looks up globex's order {}: {seen:?}", globex_order.id);

    // ...cannot be updated or deleted through it...
    let update = acme
        .update(order::ActiveModel {
            id: Set(globex_order.id),
            total_cents: Set(0),
            ..Default::default()
        })
        .await;
    println!("acme updates globex's order: {}", describe(update));
    let deleted = acme.delete_by_id::<order::Entity>(globex_order.id).await?;
    println!(
        "acme deletes globex's order: {} rows",
        deleted.rows_affected
    );

    // ...and cannot be written into another tenant by naming it.
    let smuggled = acme
        .insert(order::ActiveModel {
            tenant_id: Set(2),
            customer_id: Set(globex_order.customer_id),
            total_cents: Set(1),
            ..Default::default()
        })
        .await;
    println!("acme inserts a row for globex: {}", describe(smuggled));

    println!(
        "orders: acme {}, globex {}",
        acme.find::<order::Entity>().count().await?,
        globex.find::<order::Entity>().count().await?
    );

    // The compile-time guarantee: the handle is not a SeaORM connection, so a query that
    // forgets the tenant does not build.
    //
    //     order::Entity::find().all(&acme).await?;
    //     // error[E0277]: the trait bound `TenantDb<i64>: ConnectionTrait` is not satisfied
    //
    // Admin work that must see every tenant says so, greppably:
    let all = order::Entity::find().all(tenancy.unscoped()).await?;
    println!("unscoped (admin) view: {} orders in all", all.len());
    Ok(())
}

fn describe<T>(result: tenancy_sea::Result<T>) -> String {
    match result {
        Ok(_) => "ok".to_owned(),
        Err(err) => format!("refused: {err}"),
    }
}

#[cfg(feature = "runtime-tokio")]
#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    run().await
}

#[cfg(all(feature = "runtime-async-std", not(feature = "runtime-tokio")))]
#[async_std::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    run().await
}
