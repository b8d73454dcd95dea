//! The Citus placement: tables keyed by `(tenant_id, id)`, distributed by the library in
//! the order that works, a tenant connection with the fan-out guard, and every tenant
//! statement routed to the one node that holds the tenant.
//!
//! Needs a Citus coordinator (`scripts/citus-cluster` starts one on loopback from an
//! installed Citus); the URL's user must own the tables it makes:
//!
//! ```text
//! DATABASE_URL=postgres://postgres@127.0.0.1:5433/citus cargo run --example citus
//! ```
#![allow(clippy::print_stdout)] // an example's job is to print what happens

use sea_orm::{ConnectOptions, ConnectionTrait, Database, DbBackend, Set, Statement};
use tenancy_sea::{Tenancy, citus};

/// A tenant's invoices: the key holds the tenant column, as Citus needs.
mod invoice {
    use sea_orm::entity::prelude::*;
    use tenancy_sea::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, TenantScoped)]
    #[sea_orm(table_name = "example_invoices")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false, unique_key = "tenant_number")]
        #[tenant_id]
        pub tenant_id: i64,
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: i64,
        #[sea_orm(unique_key = "tenant_number")]
        pub number: String,
        pub currency: String,
        pub total_cents: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {
        #[sea_orm(
            belongs_to = "super::currency::Entity",
            from = "Column::Currency",
            to = "super::currency::Column::Code"
        )]
        Currency,
    }

    impl Related<super::currency::Entity> for Entity {
        fn to() -> RelationDef {
            Relation::Currency.def()
        }
    }

    impl ActiveModelBehavior for ActiveModel {}
}

/// Shared by every tenant: a reference table, copied to every node.
mod currency {
    use sea_orm::entity::prelude::*;
    use tenancy_sea::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, GlobalEntity)]
    #[sea_orm(table_name = "example_currencies")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub code: String,
        pub name: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let Ok(url) = std::env::var("DATABASE_URL") else {
        println!("the Citus example needs a coordinator: set DATABASE_URL=postgres://...");
        return Err("DATABASE_URL is not set".into());
    };
    // As the owner: the tables (with their foreign key), then their distribution.
    let owner = Database::connect(&url).await?;
    owner
        .execute_unprepared("DROP TABLE IF EXISTS example_invoices, example_currencies CASCADE")
        .await?;
    owner
        .get_schema_builder()
        .register(currency::Entity)
        .register(invoice::Entity)
        .apply(&owner)
        .await?;
    let distribution = citus::distribute(&owner).await?;
    for step in &distribution.steps {
        println!("distribution: {}", step.statement().sql);
    }
    let again = citus::distribute(&owner).await?;
    println!("distributing again: {} steps", again.steps.len());
    owner
        .execute_unprepared(
            "INSERT INTO example_currencies (code, name) VALUES ('EUR', 'euro'), ('USD', 'dollar')",
        )
        .await?;

    // The application's connection, with the fan-out guard.
    let mut options = ConnectOptions::new(url.as_str());
    citus::guard(&mut options);
    let tenants = Database::connect(options).await?;
    let tenancy: Tenancy<i64> = Tenancy::builder(tenants.clone())
        .admin_connection(owner.clone())
        .citus()
        .build()?;
    tenancy.verify().await?;

    for (tenant, currency) in [(1, "EUR"), (2, "USD")] {
        let db = tenancy.tenant(tenant).await?;
        for id in 1..=3 {
            db.insert(invoice::ActiveModel {
                id: Set(id),
                number: Set(format!("{tenant}-{id:04}")),
                currency: Set(currency.to_owned()),
                total_cents: Set(id * 1_000),
                ..Default::default()
            })
            .await?;
        }
    }
    let acme = tenancy.tenant(1).await?;
    // The key is `(tenant_id, id)`: the handle takes the id and fills in the tenant.
    let second = acme.find_by_id::<invoice::Entity>(2).one().await?;
    println!("tenant 1's invoice 2: {second:?}");
    // A join to the reference table stays on tenant 1's node.
    let priced = acme
        .find::<invoice::Entity>()
        .find_also_related::<currency::Entity>()
        .all()
        .await?;
    println!("tenant 1's invoices with their currency: {}", priced.len());
    // An upsert on the invoice number: the unique key is (tenant_id, number).
    acme.upsert(invoice::ActiveModel {
        id: Set(9),
        number: Set("1-0003".to_owned()),
        currency: Set("EUR".to_owned()),
        total_cents: Set(3_500),
        ..Default::default()
    })
    .on_conflict([invoice::Column::Number])
    .update_columns([invoice::Column::TotalCents])
    .exec()
    .await?;

    // Where tenant 1 lives.
    let node = owner
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT nodename || ':' || nodeport AS node FROM citus_shards \
             WHERE shardid = get_shard_id_for_distribution_column('example_invoices', 1)",
        ))
        .await?
        .map(|row| row.try_get::<String>("", "node"))
        .transpose()?;
    println!("tenant 1 lives on {}", node.unwrap_or_default());

    // A statement over every tenant is refused on the tenant connection, and runs on the
    // owner's: explicit cross-tenant work goes through `unscoped()`.
    let every = Statement::from_string(
        DbBackend::Postgres,
        "SELECT count(*) AS n FROM example_invoices",
    );
    match tenants.query_one_raw(every.clone()).await {
        Err(refused) => println!("on the tenant connection: {refused}"),
        Ok(_) => return Err("the fan-out guard let a multi-shard statement through".into()),
    }
    let count = tenancy
        .unscoped()
        .query_one_raw(every)
        .await?
        .map(|row| row.try_get::<i64>("", "n"))
        .transpose()?;
    println!(
        "every tenant's invoices, through unscoped(): {}",
        count.unwrap_or_default()
    );

    owner
        .execute_unprepared("DROP TABLE example_invoices, example_currencies")
        .await?;
    Ok(())
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
