//! Row-level tenancy, end to end, on every backend.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failure is a panic

use futures_util::TryStreamExt;
use sea_orm::ActiveValue::NotSet;
use sea_orm::sea_query::{Condition, Expr, ExprTrait};
use sea_orm::{ColumnTrait, Set};
use tenancy_sea::{Error, TenantDb};
use tenancy_tests::entities::*;
use tenancy_tests::{Flavor, Provisioned, TestDb, TestTenancy, backend_tests};

backend_tests!(
    reads_see_only_their_tenant,
    filters_cannot_widen_the_scope,
    pagination_count_and_stream_are_scoped,
    projections_and_aggregates_are_scoped,
    insert_stamps_the_tenant_and_rejects_another,
    insert_many_is_all_or_nothing,
    update_one_touches_only_its_tenant,
    update_many_and_delete_many_are_scoped,
    delete_one_touches_only_its_tenant,
    upsert_is_scoped_on_both_sides,
    transactions_commit_and_roll_back,
    relations_never_return_another_tenants_rows,
    many_to_many_never_crosses_tenants,
    global_entities_are_shared_and_read_only,
    tenant_id_types_i32_string_uuid,
    tenant_ids_are_validated_and_bound,
    concurrent_tenants_never_mix,
);

async fn new_customer(db: &TenantDb<i64>, name: &str) -> customer::Model {
    db.insert(customer::ActiveModel {
        name: Set(name.into()),
        ..Default::default()
    })
    .await
    .unwrap()
}

async fn new_order(db: &TenantDb<i64>, customer: i64, total: i64) -> order::Model {
    db.insert(order::ActiveModel {
        customer_id: Set(customer),
        total_cents: Set(total),
        ..Default::default()
    })
    .await
    .unwrap()
}

/// Two tenants with a customer and three orders each (totals 100, 200, 300 for tenant 1
/// and 1000, 2000, 3000 for tenant 2). Tenant 2's ids start at 1001, so that "another
/// tenant's primary key" means the same under a schema or database per tenant, where
/// each tenant numbers its rows from 1.
async fn two_shops(db: &TestDb) -> (TestTenancy<i64>, TenantDb<i64>, TenantDb<i64>) {
    let tenancy = db.tenancy::<i64>();
    let a = tenancy.provisioned(1).await.unwrap();
    let b = tenancy.provisioned(2).await.unwrap();
    for (handle, scale, first_id) in [(&a, 100, None), (&b, 1000, Some(1001))] {
        let c = handle
            .insert(customer::ActiveModel {
                id: first_id.map_or(NotSet, Set),
                name: Set("first".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        for i in 1..=3 {
            handle
                .insert(order::ActiveModel {
                    id: first_id.map_or(NotSet, |id| Set(id + i)),
                    customer_id: Set(c.id),
                    total_cents: Set(i * scale),
                    ..Default::default()
                })
                .await
                .unwrap();
        }
    }
    (tenancy, a, b)
}

async fn all_orders(tenancy: &TestTenancy<i64>) -> Vec<order::Model> {
    tenancy.everyone::<order::Entity>().await
}

async fn reads_see_only_their_tenant(db: &TestDb) {
    let (tenancy, a, b) = two_shops(db).await;
    let mine = a.find::<order::Entity>().all().await.unwrap();
    assert_eq!(mine.len(), 3);
    assert!(mine.iter().all(|o| o.tenant_id == 1));

    let theirs = b.find::<order::Entity>().all().await.unwrap();
    assert_eq!(theirs.len(), 3);
    assert!(theirs.iter().all(|o| o.tenant_id == 2));

    // By primary key: another tenant's row is simply not there.
    let foreign = theirs[0].id;
    assert_eq!(
        a.find_by_id::<order::Entity>(foreign).one().await.unwrap(),
        None
    );
    assert_eq!(
        b.find_by_id::<order::Entity>(foreign)
            .one()
            .await
            .unwrap()
            .map(|o| o.id),
        Some(foreign)
    );

    // Filters, order, limit and offset read as in SeaORM.
    let big = a
        .find::<order::Entity>()
        .filter(order::Column::TotalCents.gte(200))
        .order_by_desc(order::Column::TotalCents)
        .limit(1)
        .offset(1)
        .all()
        .await
        .unwrap();
    assert_eq!(big.iter().map(|o| o.total_cents).collect::<Vec<_>>(), [200]);

    let empty = tenancy.provisioned(3).await.unwrap();
    assert!(
        empty
            .find::<order::Entity>()
            .all()
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(empty.find::<order::Entity>().one().await.unwrap(), None);
}

async fn filters_cannot_widen_the_scope(db: &TestDb) {
    let (_tenancy, a, _b) = two_shops(db).await;
    // An OR that names the other tenant, and one that is always true: both stay ANDed
    // with the tenant condition.
    let or_other = a
        .find::<order::Entity>()
        .filter(
            Condition::any()
                .add(order::Column::Tenant.eq(2))
                .add(Expr::val(1).eq(1)),
        )
        .all()
        .await
        .unwrap();
    assert_eq!(or_other.len(), 3);
    assert!(or_other.iter().all(|o| o.tenant_id == 1));

    let only_other = a
        .find::<order::Entity>()
        .filter(order::Column::Tenant.eq(2))
        .all()
        .await
        .unwrap();
    assert!(only_other.is_empty());

    // The tenant id is a bound value, never spliced into the SQL text.
    let statement = a.find::<order::Entity>().build();
    assert!(statement.values.is_some_and(|v| !v.0.is_empty()));
}

async fn pagination_count_and_stream_are_scoped(db: &TestDb) {
    let (_tenancy, a, b) = two_shops(db).await;
    assert_eq!(a.find::<order::Entity>().count().await.unwrap(), 3);
    assert_eq!(
        b.find::<order::Entity>()
            .filter(order::Column::TotalCents.gt(1000))
            .count()
            .await
            .unwrap(),
        2
    );

    let mut pages = a
        .find::<order::Entity>()
        .order_by_asc(order::Column::Id)
        .paginate(2);
    assert_eq!(pages.num_items().await.unwrap(), 3);
    assert_eq!(pages.num_pages().await.unwrap(), 2);
    let mut seen = Vec::new();
    while let Some(page) = pages.fetch_and_next().await.unwrap() {
        assert!(page.len() <= 2);
        seen.extend(page.into_iter().map(|o| o.total_cents));
    }
    assert_eq!(seen, [100, 200, 300]);
    assert_eq!(pages.cur_page(), 3);

    let zero = a.find::<order::Entity>().paginate(0);
    assert!(matches!(zero.fetch().await, Err(Error::ZeroPageSize)));

    let streamed: Vec<order::Model> = b
        .find::<order::Entity>()
        .order_by_asc(order::Column::TotalCents)
        .stream()
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(
        streamed.iter().map(|o| o.total_cents).collect::<Vec<_>>(),
        [1000, 2000, 3000]
    );
}

async fn projections_and_aggregates_are_scoped(db: &TestDb) {
    let (_tenancy, a, b) = two_shops(db).await;
    // One more customer for tenant 2, with a single order.
    let extra = new_customer(&b, "second").await;
    new_order(&b, extra.id, 7).await;

    let per_customer: Vec<(i64, i64)> = b
        .find::<order::Entity>()
        .select_only()
        .column(order::Column::CustomerId)
        .column_as(Expr::col(order::Column::Id).count(), "orders")
        .group_by(order::Column::CustomerId)
        .order_by_asc(order::Column::CustomerId)
        .into_tuple()
        .all()
        .await
        .unwrap();
    let mut counts: Vec<i64> = per_customer.iter().map(|(_, n)| *n).collect();
    counts.sort();
    assert_eq!(counts, [1, 3]);

    let busy: Vec<i64> = b
        .find::<order::Entity>()
        .select_only()
        .column(order::Column::CustomerId)
        .group_by(order::Column::CustomerId)
        .having(Expr::col(order::Column::Id).count().gt(1))
        .into_tuple()
        .all()
        .await
        .unwrap();
    assert_eq!(busy.len(), 1);

    #[derive(Debug, PartialEq, sea_orm::FromQueryResult)]
    struct Total {
        total_cents: i64,
    }
    let totals = a
        .find::<order::Entity>()
        .select_only()
        .column(order::Column::TotalCents)
        .order_by_desc(order::Column::TotalCents)
        .into_model::<Total>()
        .one()
        .await
        .unwrap();
    assert_eq!(totals, Some(Total { total_cents: 300 }));
}

async fn insert_stamps_the_tenant_and_rejects_another(db: &TestDb) {
    let tenancy = db.tenancy::<i64>();
    let a = tenancy.provisioned(1).await.unwrap();
    let c = new_customer(&a, "stamped").await;
    assert_eq!(c.tenant_id, 1);

    // Naming the handle's own tenant is fine.
    let explicit = a
        .insert(customer::ActiveModel {
            tenant_id: Set(1),
            name: Set("explicit".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(explicit.tenant_id, 1);

    // Naming another is an error, and nothing is written.
    let err = a
        .insert(customer::ActiveModel {
            tenant_id: Set(2),
            name: Set("smuggled".into()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    match &err {
        Error::TenantMismatch {
            table,
            expected,
            found,
        } => {
            assert_eq!(
                (*table, expected.as_str(), found.as_str()),
                ("customers", "1", "2")
            );
        }
        other => panic!("expected TenantMismatch, got {other:?}"),
    }
    assert!(err.to_string().contains("nothing was written"));
    let everyone = tenancy.everyone::<customer::Entity>().await;
    assert_eq!(everyone.len(), 2);
    assert!(everyone.iter().all(|c| c.tenant_id == 1));
}

async fn insert_many_is_all_or_nothing(db: &TestDb) {
    let tenancy = db.tenancy::<i64>();
    let a = tenancy.provisioned(1).await.unwrap();
    let c = new_customer(&a, "bulk").await;
    let row = |tenant: Option<i64>, total: i64| order::ActiveModel {
        tenant_id: tenant.map_or(sea_orm::ActiveValue::NotSet, Set),
        customer_id: Set(c.id),
        total_cents: Set(total),
        ..Default::default()
    };
    let err = a
        .insert_many([row(None, 1), row(Some(1), 2), row(Some(9), 3)])
        .await
        .unwrap_err();
    assert!(matches!(err, Error::TenantMismatch { .. }), "{err:?}");
    assert!(all_orders(&tenancy).await.is_empty());

    let inserted = a
        .insert_many([row(None, 1), row(Some(1), 2)])
        .await
        .unwrap();
    assert_eq!(inserted, 2);
    assert_eq!(
        a.insert_many(Vec::<order::ActiveModel>::new())
            .await
            .unwrap(),
        0
    );
    let stored = all_orders(&tenancy).await;
    assert_eq!(stored.len(), 2);
    assert!(stored.iter().all(|o| o.tenant_id == 1));
}

async fn update_one_touches_only_its_tenant(db: &TestDb) {
    let (tenancy, a, b) = two_shops(db).await;
    let mine = a.find::<order::Entity>().one().await.unwrap().unwrap();
    let theirs = b.find::<order::Entity>().one().await.unwrap().unwrap();

    let updated = a
        .update(order::ActiveModel {
            id: Set(mine.id),
            total_cents: Set(555),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        (updated.id, updated.tenant_id, updated.total_cents),
        (mine.id, 1, 555)
    );

    // Another tenant's primary key: not found, nothing changed.
    let err = a
        .update(order::ActiveModel {
            id: Set(theirs.id),
            total_cents: Set(1),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::NotFound { table: "orders", ref tenant } if tenant == "1"),
        "{err:?}"
    );
    // The same with nothing to change (SeaORM would only re-read the row).
    let err = a
        .update(order::ActiveModel {
            id: Set(theirs.id),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
    let unchanged = a
        .update(order::ActiveModel {
            id: Set(mine.id),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(unchanged.total_cents, 555);

    // Moving a row to another tenant is refused.
    let err = a
        .update(order::ActiveModel {
            id: Set(mine.id),
            tenant_id: Set(2),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(matches!(err, Error::TenantMismatch { .. }), "{err:?}");

    // A model read through the handle round-trips.
    let mut am: order::ActiveModel = updated.into();
    am.total_cents = Set(777);
    assert_eq!(a.update(am).await.unwrap().total_cents, 777);

    let stored = all_orders(&tenancy).await;
    let by_id = |id: i64| stored.iter().find(|o| o.id == id).unwrap().clone();
    assert_eq!(by_id(theirs.id), theirs);
    let mine_stored = by_id(mine.id);
    assert_eq!((mine_stored.tenant_id, mine_stored.total_cents), (1, 777));
}

async fn update_many_and_delete_many_are_scoped(db: &TestDb) {
    let (tenancy, a, b) = two_shops(db).await;
    let result = a
        .update_many::<order::Entity>()
        .col_expr(
            order::Column::TotalCents,
            Expr::col(order::Column::TotalCents).add(1),
        )
        .exec()
        .await
        .unwrap();
    assert_eq!(result.rows_affected, 3);

    let filtered = b
        .update_many::<order::Entity>()
        .set(order::ActiveModel {
            total_cents: Set(0),
            tenant_id: Set(2),
            ..Default::default()
        })
        .filter(order::Column::TotalCents.gte(2000))
        .exec()
        .await
        .unwrap();
    assert_eq!(filtered.rows_affected, 2);

    let err = a
        .update_many::<order::Entity>()
        .col_expr(order::Column::Tenant, Expr::value(2))
        .exec()
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::TenantColumnWrite {
                table: "orders",
                ..
            }
        ),
        "{err:?}"
    );
    let err = a
        .update_many::<order::Entity>()
        .set(order::ActiveModel {
            tenant_id: Set(2),
            ..Default::default()
        })
        .exec()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::TenantMismatch { .. }), "{err:?}");

    let mut totals: Vec<(i64, i64)> = all_orders(&tenancy)
        .await
        .into_iter()
        .map(|o| (o.tenant_id, o.total_cents))
        .collect();
    totals.sort();
    assert_eq!(
        totals,
        [(1, 101), (1, 201), (1, 301), (2, 0), (2, 0), (2, 1000)]
    );

    let deleted = a
        .delete_many::<order::Entity>()
        .filter(order::Column::TotalCents.lt(250))
        .exec()
        .await
        .unwrap();
    assert_eq!(deleted.rows_affected, 2);
    let deleted = b.delete_many::<order::Entity>().exec().await.unwrap();
    assert_eq!(deleted.rows_affected, 3);
    let left = all_orders(&tenancy).await;
    assert_eq!(left.len(), 1);
    assert_eq!((left[0].tenant_id, left[0].total_cents), (1, 301));
}

async fn delete_one_touches_only_its_tenant(db: &TestDb) {
    let (tenancy, a, b) = two_shops(db).await;
    let theirs = b.find::<order::Entity>().one().await.unwrap().unwrap();
    let mine = a.find::<order::Entity>().one().await.unwrap().unwrap();

    assert_eq!(
        a.delete_by_id::<order::Entity>(theirs.id)
            .await
            .unwrap()
            .rows_affected,
        0
    );
    let as_model: order::ActiveModel = theirs.clone().into();
    let err = a.delete(as_model).await.unwrap_err();
    assert!(matches!(err, Error::TenantMismatch { .. }), "{err:?}");
    let forged = order::ActiveModel {
        id: Set(theirs.id),
        ..Default::default()
    };
    assert_eq!(a.delete(forged).await.unwrap().rows_affected, 0);
    assert_eq!(all_orders(&tenancy).await.len(), 6);

    assert_eq!(
        a.delete_by_id::<order::Entity>(mine.id)
            .await
            .unwrap()
            .rows_affected,
        1
    );
    let second = a.find::<order::Entity>().one().await.unwrap().unwrap();
    assert_eq!(
        a.delete(order::ActiveModel::from(second))
            .await
            .unwrap()
            .rows_affected,
        1
    );
    assert_eq!(a.find::<order::Entity>().count().await.unwrap(), 1);
    assert_eq!(b.find::<order::Entity>().count().await.unwrap(), 3);
}

async fn upsert_is_scoped_on_both_sides(db: &TestDb) {
    let tenancy = db.tenancy::<i64>();
    let a = tenancy.provisioned(1).await.unwrap();
    let b = tenancy.provisioned(2).await.unwrap();
    let visit = |visits: i64| account::ActiveModel {
        email: Set("ada@example.com".into()),
        visits: Set(visits),
        ..Default::default()
    };
    async fn upsert(db: &TenantDb<i64>, model: account::ActiveModel) {
        db.upsert(model)
            .on_conflict([account::Column::Email])
            .update_columns([account::Column::Visits])
            .exec()
            .await
            .unwrap();
    }
    upsert(&a, visit(1)).await;
    upsert(&a, visit(2)).await;
    let rows = tenancy.everyone::<account::Entity>().await;
    assert_eq!(rows.len(), 1);
    assert_eq!((rows[0].tenant_id, rows[0].visits), (1, 2));

    // Tenant 2 hits tenant 1's unique email: nothing is inserted, nothing is changed.
    let collided = b
        .upsert(visit(99))
        .on_conflict([account::Column::Email])
        .update_columns([account::Column::Visits])
        .exec()
        .await;
    // Tenants 1 and 2 share a shard in the sharded flavors: the same as one database.
    match db.flavor.per_database() {
        // The database refuses to touch another tenant's row.
        Flavor::Rls => assert!(
            matches!(
                collided,
                Err(Error::CrossTenantConflict { table: "accounts" })
            ),
            "{collided:?}"
        ),
        // The framework's WHERE leaves it alone (MySQL counts the matched row, 1, though
        // nothing changed).
        Flavor::RowLevel => {
            let matched = u64::from(db.backend == tenancy_tests::Backend::MySql);
            assert_eq!(collided.unwrap(), matched);
        }
        // Separate tables: no conflict at all, tenant 2 gets its own row.
        Flavor::Schema | Flavor::Database => assert_eq!(collided.unwrap(), 1),
        sharded => unreachable!("{sharded:?} is not one database's flavor"),
    }
    let rows = tenancy.everyone::<account::Entity>().await;
    let first = rows.iter().find(|r| r.tenant_id == 1).unwrap();
    assert_eq!(first.visits, 2, "tenant 1's row is unchanged");
    assert_eq!(rows.len(), if db.flavor.shares_tables() { 1 } else { 2 });
    if db.flavor.shares_tables() {
        assert!(b.find::<account::Entity>().all().await.unwrap().is_empty());
    }

    // Do-nothing on conflict, and the tenant column cannot be an update column.
    a.upsert(visit(50))
        .on_conflict([account::Column::Email])
        .exec()
        .await
        .unwrap();
    assert_eq!(
        a.find::<account::Entity>()
            .one()
            .await
            .unwrap()
            .unwrap()
            .visits,
        2
    );
    let err = a
        .upsert(visit(3))
        .on_conflict([account::Column::Email])
        .update_columns([account::Column::TenantId])
        .exec()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::TenantColumnWrite { .. }), "{err:?}");
    let err = a
        .upsert(account::ActiveModel {
            tenant_id: Set(2),
            ..visit(4)
        })
        .exec()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::TenantMismatch { .. }), "{err:?}");
}

async fn transactions_commit_and_roll_back(db: &TestDb) {
    let tenancy = db.tenancy::<i64>();
    let a = tenancy.provisioned(1).await.unwrap();

    let txn = a.begin().await.unwrap();
    txn.insert(customer::ActiveModel {
        name: Set("rolled back".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(txn.find::<customer::Entity>().count().await.unwrap(), 1);
    txn.rollback().await.unwrap();
    assert_eq!(a.find::<customer::Entity>().count().await.unwrap(), 0);

    let txn = a.begin().await.unwrap();
    let kept = txn
        .insert(customer::ActiveModel {
            name: Set("kept".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(*txn.tenant_id(), 1);
    txn.commit().await.unwrap();
    assert_eq!(
        a.find_by_id::<customer::Entity>(kept.id)
            .one()
            .await
            .unwrap(),
        Some(kept.clone())
    );

    // The closure form: an error rolls back everything written in it.
    let result = a
        .transaction(async |txn| {
            txn.insert(customer::ActiveModel {
                name: Set("inside".into()),
                ..Default::default()
            })
            .await?;
            // A mismatch part-way through aborts the whole unit.
            txn.insert(customer::ActiveModel {
                tenant_id: Set(2),
                name: Set("smuggled".into()),
                ..Default::default()
            })
            .await?;
            Ok(())
        })
        .await;
    assert!(matches!(result, Err(Error::TenantMismatch { .. })));
    assert_eq!(tenancy.everyone::<customer::Entity>().await, vec![kept]);

    let name = a
        .transaction(async |txn| {
            let nested = txn.begin().await?;
            nested
                .insert(customer::ActiveModel {
                    name: Set("nested".into()),
                    ..Default::default()
                })
                .await?;
            nested.commit().await?;
            txn.find::<customer::Entity>().count().await
        })
        .await
        .unwrap();
    assert_eq!(name, 2);
}

async fn relations_never_return_another_tenants_rows(db: &TestDb) {
    let tenancy = db.tenancy::<i64>();
    let a = tenancy.provisioned(1).await.unwrap();
    let b = tenancy.provisioned(2).await.unwrap();
    let ca = new_customer(&a, "a-customer").await;
    // Ids apart from tenant 1's, so a reference to it is foreign under every strategy.
    let cb = b
        .insert(customer::ActiveModel {
            id: Set(1001),
            name: Set("b-customer".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let good = new_order(&a, ca.id, 10).await;
    // A foreign key planted across tenants past the framework: tenant 1's order pointing
    // at tenant 2's customer.
    let plant = format!(
        "INSERT INTO orders (tenant_id, customer_id, total_cents) VALUES (1, {}, 20)",
        cb.id
    );
    let planted = if db.flavor.shares_tables() {
        tenancy.raw_in_storage(&1, &plant).await.unwrap();
        let planted = a
            .find::<order::Entity>()
            .filter(order::Column::TotalCents.eq(20))
            .one()
            .await
            .unwrap()
            .unwrap();
        // find_related from the planted order finds no customer.
        assert_eq!(
            a.find_related::<customer::Entity, _>(&planted)
                .one()
                .await
                .unwrap(),
            None
        );
        Some(planted)
    } else {
        // With a schema or database per tenant the reference cannot even be stored:
        // tenant 1's orders can only reference tenant 1's customers.
        let refused = tenancy.raw_in_storage(&1, &plant).await;
        assert!(refused.is_err(), "a cross-tenant reference was stored");
        None
    };
    assert_eq!(
        a.find_related::<customer::Entity, _>(&good)
            .one()
            .await
            .unwrap(),
        Some(ca.clone())
    );

    // find_also_related: the order is there, the foreign customer is not.
    let pairs = a
        .find::<order::Entity>()
        .find_also_related::<customer::Entity>()
        .order_by_asc(order::Column::TotalCents)
        .all()
        .await
        .unwrap();
    let mut expected = vec![(good.clone(), Some(ca.clone()))];
    expected.extend(planted.iter().map(|p| (p.clone(), None)));
    assert_eq!(pairs, expected);

    // find_with_related from tenant 2's customer: tenant 1's order is not among its orders.
    let with = b
        .find::<customer::Entity>()
        .find_with_related::<order::Entity>()
        .all()
        .await
        .unwrap();
    assert_eq!(with, vec![(cb.clone(), vec![])]);
    let with = a
        .find::<customer::Entity>()
        .find_with_related::<order::Entity>()
        .all()
        .await
        .unwrap();
    assert_eq!(with, vec![(ca.clone(), vec![good.clone()])]);

    // Loaders.
    let orders = a
        .find::<order::Entity>()
        .order_by_asc(order::Column::TotalCents)
        .all()
        .await
        .unwrap();
    let customers = a.load_one::<customer::Entity, _>(&orders).await.unwrap();
    let mut expected = vec![Some(ca.clone())];
    expected.extend(planted.iter().map(|_| None));
    assert_eq!(customers, expected);
    let b_customers = b.find::<customer::Entity>().all().await.unwrap();
    let their_orders = b.load_many::<order::Entity, _>(&b_customers).await.unwrap();
    assert_eq!(their_orders, vec![Vec::<order::Model>::new()]);

    // An inner join used as a filter is scoped on both sides.
    let joined = a
        .find::<order::Entity>()
        .inner_join::<customer::Entity>()
        .filter(customer::Column::Name.eq("b-customer"))
        .all()
        .await
        .unwrap();
    assert!(joined.is_empty());
    let joined = a
        .find::<order::Entity>()
        .inner_join::<customer::Entity>()
        .filter(customer::Column::Name.eq("a-customer"))
        .all()
        .await
        .unwrap();
    assert_eq!(joined, vec![good]);
}

async fn many_to_many_never_crosses_tenants(db: &TestDb) {
    let tenancy = db.tenancy::<i64>();
    let a = tenancy.provisioned(1).await.unwrap();
    let b = tenancy.provisioned(2).await.unwrap();
    let ca = new_customer(&a, "a").await;
    let order = new_order(&a, ca.id, 10).await;
    let mine = a
        .insert(tag::ActiveModel {
            label: Set("mine".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let theirs = b
        .insert(tag::ActiveModel {
            id: Set(1001),
            label: Set("theirs".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    a.insert(order_tag::ActiveModel {
        order_id: Set(order.id),
        tag_id: Set(mine.id),
        ..Default::default()
    })
    .await
    .unwrap();
    // Planted: tenant 1's order linked to tenant 2's tag.
    let plant = format!(
        "INSERT INTO order_tags (order_id, tag_id, tenant_id) VALUES ({}, {}, 1)",
        order.id, theirs.id
    );
    if db.flavor.shares_tables() {
        tenancy.raw_in_storage(&1, &plant).await.unwrap();
    } else {
        // Separate tables per tenant: the link cannot be stored at all.
        let refused = tenancy.raw_in_storage(&1, &plant).await;
        assert!(refused.is_err(), "a cross-tenant link was stored");
    }

    let tags = a
        .find_related::<tag::Entity, _>(&order)
        .all()
        .await
        .unwrap();
    assert_eq!(tags, vec![mine.clone()]);
    let loaded = a
        .load_many::<tag::Entity, _>(std::slice::from_ref(&order))
        .await
        .unwrap();
    assert_eq!(loaded, vec![vec![mine.clone()]]);
    let mut with = a
        .find::<order::Entity>()
        .find_with_related::<tag::Entity>()
        .all()
        .await
        .unwrap();
    assert_eq!(with.len(), 1);
    assert_eq!(std::mem::take(&mut with[0].1), vec![mine]);
}

async fn global_entities_are_shared_and_read_only(db: &TestDb) {
    let tenancy = db.tenancy::<i64>();
    let a = tenancy.provisioned(1).await.unwrap();
    let b = tenancy.provisioned(2).await.unwrap();
    tenancy
        .run_globally(
            &[&a, &b],
            "INSERT INTO plans (name, price_cents) VALUES ('free', 0), ('pro', 900)",
        )
        .await;
    for handle in [&a, &b] {
        let plans = handle
            .find::<plan::Entity>()
            .filter(plan::Column::PriceCents.gt(0))
            .all()
            .await
            .unwrap();
        assert_eq!(plans.len(), 1);
        assert_eq!(plans[0].name, "pro");
        let pro = plans[0].id;
        handle
            .insert(customer::ActiveModel {
                name: Set("with plan".into()),
                plan_id: Set(Some(pro)),
                ..Default::default()
            })
            .await
            .unwrap();
        // The join to the global table is not filtered on the global side.
        let pairs = handle
            .find::<customer::Entity>()
            .find_also_related::<plan::Entity>()
            .all()
            .await
            .unwrap();
        assert_eq!(pairs.len(), 1);
        assert_eq!(pairs[0].1.as_ref().map(|p| p.name.as_str()), Some("pro"));
        // And from the global side, the tenant side is filtered.
        let customers = handle
            .find::<plan::Entity>()
            .find_with_related::<customer::Entity>()
            .filter(plan::Column::Id.eq(pro))
            .all()
            .await
            .unwrap();
        assert_eq!(customers[0].1.len(), 1);
        assert_eq!(customers[0].1[0].tenant_id, *handle.tenant_id());
    }
}

async fn tenant_id_types_i32_string_uuid(db: &TestDb) {
    let by_i32 = db.tenancy::<i32>();
    let by_string = db.tenancy::<String>();
    let by_uuid = db.tenancy::<uuid::Uuid>();

    let (x, y) = (
        by_i32.provisioned(7).await.unwrap(),
        by_i32.provisioned(8).await.unwrap(),
    );
    for (handle, body) in [(&x, "x"), (&y, "y")] {
        handle
            .insert(note_i32::ActiveModel {
                body: Set(body.into()),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let notes = x.find::<note_i32::Entity>().all().await.unwrap();
    assert_eq!(
        notes
            .iter()
            .map(|n| (n.owner, n.body.as_str()))
            .collect::<Vec<_>>(),
        [(7, "x")]
    );

    let (acme, globex) = (
        by_string.provisioned("acme").await.unwrap(),
        by_string.provisioned("globex").await.unwrap(),
    );
    for (handle, body) in [(&acme, "a"), (&globex, "g")] {
        handle
            .insert(note_string::ActiveModel {
                body: Set(body.into()),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let notes = globex.find::<note_string::Entity>().all().await.unwrap();
    assert_eq!(notes.len(), 1);
    assert_eq!(
        (notes[0].owner.as_str(), notes[0].body.as_str()),
        ("globex", "g")
    );
    let err = acme
        .insert(note_string::ActiveModel {
            owner: Set("globex".into()),
            body: Set("smuggled".into()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::TenantMismatch { expected, found, .. } if expected == "acme" && found == "globex"),
        "{err:?}"
    );

    let (u1, u2) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    let h1 = by_uuid.provisioned(u1).await.unwrap();
    let h2 = {
        by_uuid.provisioned(u2).await.unwrap();
        by_uuid.tenant_from_str(&u2.to_string()).await.unwrap()
    };
    for handle in [&h1, &h2] {
        handle
            .insert(note_uuid::ActiveModel {
                body: Set(handle.tenant_id().to_string()),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let notes = h2.find::<note_uuid::Entity>().all().await.unwrap();
    assert_eq!(notes.len(), 1);
    assert_eq!(notes[0].owner, u2);
    assert_eq!(notes[0].body, u2.to_string());
}

async fn tenant_ids_are_validated_and_bound(db: &TestDb) {
    let by_string = db.tenancy::<String>();
    for bad in ["", " padded", "nul\0byte"] {
        let err = by_string.provisioned(bad).await.unwrap_err();
        assert!(matches!(err, Error::InvalidTenantId(_)), "{bad:?}: {err:?}");
    }
    let err = db
        .tenancy::<i64>()
        .tenant_from_str("12; DROP TABLE orders")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not an integer"), "{err}");
    let err = db
        .tenancy::<uuid::Uuid>()
        .provisioned(uuid::Uuid::nil())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidTenantId(_)));

    // A hostile but valid string id is just a value where it only ever travels as one.
    let hostile = "x'; DROP TABLE notes_string; --";
    if !db.flavor.shares_tables() {
        // Where the id also names a schema or database, it must be a plain identifier:
        // refused before anything runs.
        let err = by_string.provisioned(hostile).await.unwrap_err();
        assert!(matches!(err, Error::InvalidIdentifier(_)), "{err:?}");
        assert!(by_string.fleet_tenants().await.unwrap().is_empty());
        return;
    }
    let h = by_string.provisioned(hostile).await.unwrap();
    h.insert(note_string::ActiveModel {
        body: Set("still here".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    let notes = h.find::<note_string::Entity>().all().await.unwrap();
    assert_eq!(notes.len(), 1);
    assert_eq!(notes[0].owner, hostile);
    let sql = h.find::<note_string::Entity>().build().sql;
    assert!(!sql.contains("DROP"), "{sql}");
    assert_eq!(by_string.everyone::<note_string::Entity>().await.len(), 1);
}

async fn concurrent_tenants_never_mix(db: &TestDb) {
    let tenancy = db.tenancy::<i64>();
    let tasks = (1..=16i64).map(|tenant| {
        let tenancy = tenancy.clone();
        tokio::spawn(async move {
            let db = tenancy.provisioned(tenant).await.unwrap();
            let customer = new_customer(&db, &format!("c{tenant}")).await;
            for round in 0..5 {
                new_order(&db, customer.id, tenant * 100 + round).await;
                let rows = db.find::<order::Entity>().all().await.unwrap();
                assert_eq!(rows.len() as i64, round + 1);
                assert!(
                    rows.iter().all(|o| o.tenant_id == tenant),
                    "tenant {tenant} saw another's row"
                );
            }
        })
    });
    for task in tasks.collect::<Vec<_>>() {
        task.await.unwrap();
    }
    assert_eq!(all_orders(&tenancy).await.len(), 80);
}
