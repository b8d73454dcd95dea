//! The data both overhead benchmarks run on: 4 tenants with 1,000 orders each.

#![allow(clippy::unwrap_used, missing_docs)] // benchmark support, `pub` only for the benches

use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, Set};
use std::hint::black_box;
use tenancy_sea::{Tenancy, TenantDb};
use tenancy_tests::entities::{customer, note_string, order};

pub const TENANTS: i64 = 4;
pub const ORDERS_PER_TENANT: i64 = 1_000;
pub const TENANT: i64 = 2;
/// The tenant of the text-keyed pair.
pub const STRING_TENANT: &str = "tenant-2";

pub struct Fixture {
    pub conn: DatabaseConnection,
    pub db: TenantDb<i64>,
    /// The handle of `STRING_TENANT`, whose tenant column is text.
    pub by_name: TenantDb<String>,
    /// A note id of `STRING_TENANT`.
    pub note_id: i64,
    /// An order id of `TENANT`.
    pub order_id: i64,
    /// Selects exactly 100 of `TENANT`'s orders with `total_cents >= threshold`.
    pub threshold: i64,
}

pub async fn fixture(conn: DatabaseConnection) -> Fixture {
    let tenancy: Tenancy<i64> = Tenancy::builder(conn.clone()).build().unwrap();
    let mut order_id = 0;
    for tenant in 1..=TENANTS {
        let db = tenancy.tenant(tenant).await.unwrap();
        let c = db
            .insert(customer::ActiveModel {
                name: Set("bench".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        for chunk in (0..ORDERS_PER_TENANT).collect::<Vec<_>>().chunks(250) {
            db.insert_many(chunk.iter().map(|i| order::ActiveModel {
                customer_id: Set(c.id),
                total_cents: Set(*i),
                ..Default::default()
            }))
            .await
            .unwrap();
        }
        if tenant == TENANT {
            order_id = db
                .find::<order::Entity>()
                .order_by_asc(order::Column::Id)
                .one()
                .await
                .unwrap()
                .unwrap()
                .id
                + 500;
        }
    }
    let by_name: Tenancy<String> = Tenancy::builder(conn.clone()).build().unwrap();
    let mut note_id = 0;
    for tenant in 1..=TENANTS {
        let db = by_name.tenant(format!("tenant-{tenant}")).await.unwrap();
        db.insert_many((0..250).map(|i| note_string::ActiveModel {
            body: Set(format!("note {i}")),
            ..Default::default()
        }))
        .await
        .unwrap();
        if tenant == TENANT {
            note_id = db
                .find::<note_string::Entity>()
                .order_by_asc(note_string::Column::Id)
                .one()
                .await
                .unwrap()
                .unwrap()
                .id
                + 100;
        }
    }
    Fixture {
        by_name: by_name.tenant(STRING_TENANT.to_owned()).await.unwrap(),
        note_id,
        db: tenancy.tenant(TENANT).await.unwrap(),
        conn,
        order_id,
        threshold: ORDERS_PER_TENANT - 100,
    }
}

// The four measured queries: each pair builds the same statement, by hand and scoped.

pub async fn pk_seaorm(f: &Fixture) {
    let row = order::Entity::find_by_id(black_box(f.order_id))
        .filter(order::Column::Tenant.eq(TENANT))
        .one(&f.conn)
        .await
        .unwrap();
    black_box(row.unwrap());
}

pub async fn pk_scoped(f: &Fixture) {
    let row =
        f.db.find_by_id::<order::Entity>(black_box(f.order_id))
            .one()
            .await
            .unwrap();
    black_box(row.unwrap());
}

pub async fn select_seaorm(f: &Fixture) {
    let rows = order::Entity::find()
        .filter(order::Column::Tenant.eq(TENANT))
        .filter(order::Column::TotalCents.gte(black_box(f.threshold)))
        .all(&f.conn)
        .await
        .unwrap();
    assert_eq!(rows.len(), 100);
    black_box(rows);
}

pub async fn select_scoped(f: &Fixture) {
    let rows =
        f.db.find::<order::Entity>()
            .filter(order::Column::TotalCents.gte(black_box(f.threshold)))
            .all()
            .await
            .unwrap();
    assert_eq!(rows.len(), 100);
    black_box(rows);
}

/// A primary-key lookup of a table whose tenant column is text: the scoped side adds the
/// exact comparison (`COLLATE "C"` on PostgreSQL, `COLLATE BINARY` on SQLite).
pub async fn string_pk_seaorm(f: &Fixture) {
    let row = note_string::Entity::find_by_id(black_box(f.note_id))
        .filter(note_string::Column::Owner.eq(STRING_TENANT))
        .one(&f.conn)
        .await
        .unwrap();
    black_box(row.unwrap());
}

pub async fn string_pk_scoped(f: &Fixture) {
    let row = f
        .by_name
        .find_by_id::<note_string::Entity>(black_box(f.note_id))
        .one()
        .await
        .unwrap();
    black_box(row.unwrap());
}
