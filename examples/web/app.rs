//! The web example's application: the quickstart's customers and orders behind an axum
//! router whose requests name their tenant in the `X-Tenant-Id` header. The test suite
//! serves this same router (tests/tests/web.rs).

#![allow(dead_code)] // the example and the tests each use their part

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use sea_orm::Set;
use serde::{Deserialize, Serialize};
use tenancy_sea::web::{Header, Tenant, TenantLayer};
use tenancy_sea::{Tenancy, TenantDb, task};

/// The quickstart's customers, serialisable for the JSON API.
pub mod customer {
    use sea_orm::entity::prelude::*;
    use serde::Serialize;
    use tenancy_sea::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, TenantScoped, Serialize)]
    #[sea_orm(table_name = "quickstart_customers")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        #[tenant_id]
        pub tenant_id: i64,
        pub name: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// The quickstart's orders.
pub mod order {
    use sea_orm::entity::prelude::*;
    use serde::Serialize;
    use tenancy_sea::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, TenantScoped, Serialize)]
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
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// The tables, as sea-orm-migration makes them: in the shared database, or in each
/// tenant's schema or database when it is provisioned.
pub mod migration {
    use sea_orm::Schema;
    use tenancy_sea::sea_orm_migration::prelude::*;

    pub struct Migrator;

    impl MigratorTrait for Migrator {
        fn migrations() -> Vec<Box<dyn MigrationTrait>> {
            vec![Box::new(CreateTables)]
        }
    }

    struct CreateTables;

    impl MigrationName for CreateTables {
        fn name(&self) -> &str {
            "m0001_create_customers_and_orders"
        }
    }

    #[async_trait::async_trait]
    impl MigrationTrait for CreateTables {
        async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            let schema = Schema::new(manager.get_database_backend());
            manager
                .create_table(schema.create_table_from_entity(super::customer::Entity))
                .await?;
            manager
                .create_table(schema.create_table_from_entity(super::order::Entity))
                .await
        }
    }
}

/// The API: every route runs for the tenant of the request's `X-Tenant-Id` header.
///
/// | route | |
/// |---|---|
/// | `GET /customers`, `POST /customers {"name"}` | the tenant's customers; a new one |
/// | `GET`, `PUT {"name"}`, `DELETE /customers/{id}` | one of them (404 if not the tenant's) |
/// | `POST /customers/{id}/orders {"total_cents"}` | an order of one of them |
/// | `GET /orders` | the tenant's orders |
/// | `GET /summary` | counted by a background task that knows only the current tenant |
pub fn router(tenancy: Tenancy<i64>) -> Router {
    Router::new()
        .route("/customers", get(list_customers).post(create_customer))
        .route(
            "/customers/{id}",
            get(show_customer)
                .put(rename_customer)
                .delete(delete_customer),
        )
        .route("/customers/{id}/orders", axum::routing::post(place_order))
        .route("/orders", get(list_orders))
        .route("/summary", get(summary))
        .layer(TenantLayer::new(tenancy.clone(), Header::default()))
        .with_state(tenancy)
}

type ApiResult<T> = Result<T, tenancy_sea::Error>;

#[derive(Deserialize)]
pub struct NewCustomer {
    pub name: String,
}

#[derive(Deserialize)]
pub struct NewOrder {
    pub total_cents: i64,
}

async fn list_customers(db: TenantDb<i64>) -> ApiResult<Json<Vec<customer::Model>>> {
    Ok(Json(db.find::<customer::Entity>().all().await?))
}

async fn create_customer(
    db: TenantDb<i64>,
    Json(new): Json<NewCustomer>,
) -> ApiResult<(StatusCode, Json<customer::Model>)> {
    let created = db
        .insert(customer::ActiveModel {
            name: Set(new.name),
            ..Default::default()
        })
        .await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// One of the tenant's customers, or [`tenancy_sea::Error::NotFound`] (404).
async fn customer_of(db: &TenantDb<i64>, id: i64) -> ApiResult<customer::Model> {
    db.find_by_id::<customer::Entity>(id)
        .one()
        .await?
        .ok_or_else(|| tenancy_sea::Error::NotFound {
            table: "quickstart_customers",
            tenant: db.tenant_id().to_string(),
        })
}

async fn show_customer(db: TenantDb<i64>, Path(id): Path<i64>) -> ApiResult<Json<customer::Model>> {
    Ok(Json(customer_of(&db, id).await?))
}

async fn rename_customer(
    db: TenantDb<i64>,
    Path(id): Path<i64>,
    Json(new): Json<NewCustomer>,
) -> ApiResult<Json<customer::Model>> {
    // Another tenant's row is not matched: NotFound, 404.
    let renamed = db
        .update(customer::ActiveModel {
            id: Set(id),
            name: Set(new.name),
            ..Default::default()
        })
        .await?;
    Ok(Json(renamed))
}

async fn delete_customer(db: TenantDb<i64>, Path(id): Path<i64>) -> ApiResult<StatusCode> {
    let deleted = db.delete_by_id::<customer::Entity>(id).await?;
    Ok(if deleted.rows_affected == 0 {
        StatusCode::NOT_FOUND
    } else {
        StatusCode::NO_CONTENT
    })
}

async fn place_order(
    db: TenantDb<i64>,
    Path(customer_id): Path<i64>,
    Json(new): Json<NewOrder>,
) -> ApiResult<(StatusCode, Json<order::Model>)> {
    // An insert does not check where a foreign key points: the customer must be ours.
    let customer = customer_of(&db, customer_id).await?;
    let placed = db
        .insert(order::ActiveModel {
            customer_id: Set(customer.id),
            total_cents: Set(new.total_cents),
            ..Default::default()
        })
        .await?;
    Ok((StatusCode::CREATED, Json(placed)))
}

async fn list_orders(db: TenantDb<i64>) -> ApiResult<Json<Vec<order::Model>>> {
    Ok(Json(db.find::<order::Entity>().all().await?))
}

/// What a background job reports: the tenant it ran for and what it counted.
#[derive(Debug, Deserialize, Serialize, PartialEq, Eq)]
pub struct Summary {
    pub tenant: i64,
    pub customers: u64,
    pub orders: u64,
}

/// Hands the counting to a background task that gets no handle and no id: it finds its
/// tenant as the current one, which `task::spawn` carried over from the request.
async fn summary(
    State(tenancy): State<Tenancy<i64>>,
    Tenant(asked): Tenant<i64>,
) -> ApiResult<Json<Summary>> {
    let job = task::spawn(async move {
        let db = tenancy.current().await?;
        Ok::<_, tenancy_sea::Error>(Summary {
            tenant: *db.tenant_id(),
            customers: db.find::<customer::Entity>().count().await?,
            orders: db.find::<order::Entity>().count().await?,
        })
    });
    let summary = job
        .await
        .map_err(|join| tenancy_sea::Error::Config(format!("the summary job failed: {join}")))??;
    debug_assert_eq!(summary.tenant, asked);
    Ok(Json(summary))
}
