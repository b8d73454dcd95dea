//! The Citus placement on a real cluster (a coordinator with workers): every operation of
//! a tenant handle under row level, row-level security and schema per tenant runs as a
//! single-shard query (the tenant connection runs with the fan-out guard, which makes a
//! multi-shard statement an error), relations and joins to reference tables included;
//! hostile tenant ids under row-level security; the distribution and the provisioning
//! idempotent.
//!
//! These tests need `TENANCY_CITUS_URL` (the coordinator's database, e.g. the one
//! `scripts/citus-cluster` starts); without it each says `SKIPPED:` and passes. No
//! package registry carries Citus, so it is the one suite CI cannot run; the SQL the
//! placement generates is pinned by unit tests that need no cluster.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failure is a panic

use futures_util::{FutureExt, StreamExt};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, Database, DatabaseConnection, DbBackend,
    Statement,
};
use std::panic::AssertUnwindSafe;
use tenancy_sea::sea_orm_migration::prelude::*;
use tenancy_sea::{Error, Placement, Tenancy, TenantDb, citus};

/// Tenants' customers, keyed by `(tenant_id, id)`: Citus keeps a key unique only when it
/// holds the distribution column.
mod customer {
    use sea_orm::entity::prelude::*;
    use tenancy_sea::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, TenantScoped)]
    #[sea_orm(table_name = "citus_customers")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false, unique_key = "tenant_name")]
        #[tenant_id]
        pub tenant_id: i64,
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: i64,
        #[sea_orm(unique_key = "tenant_name")]
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

/// Tenants' orders: a composite foreign key to their customer (tenant columns paired),
/// and a plain one to a global plan (a reference table).
mod order {
    use sea_orm::entity::prelude::*;
    use tenancy_sea::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, TenantScoped)]
    #[sea_orm(table_name = "citus_orders")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        #[tenant_id]
        pub tenant_id: i64,
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: i64,
        pub customer_id: i64,
        pub plan_id: Option<i64>,
        pub total_cents: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {
        #[sea_orm(
            belongs_to = "super::customer::Entity",
            from = "(Column::TenantId, Column::CustomerId)",
            to = "(super::customer::Column::TenantId, super::customer::Column::Id)"
        )]
        Customer,
        #[sea_orm(
            belongs_to = "super::plan::Entity",
            from = "Column::PlanId",
            to = "super::plan::Column::Id"
        )]
        Plan,
    }

    impl Related<super::customer::Entity> for Entity {
        fn to() -> RelationDef {
            Relation::Customer.def()
        }
    }

    impl Related<super::plan::Entity> for Entity {
        fn to() -> RelationDef {
            Relation::Plan.def()
        }
    }

    impl ActiveModelBehavior for ActiveModel {}
}

/// A global table: on Citus, a reference table copied to every node.
mod plan {
    use sea_orm::entity::prelude::*;
    use tenancy_sea::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, GlobalEntity)]
    #[sea_orm(table_name = "citus_plans")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: i64,
        pub name: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// Notes of tenants whose ids are text: the hostile ids of the row-level security test.
mod note {
    use sea_orm::entity::prelude::*;
    use tenancy_sea::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, TenantScoped)]
    #[sea_orm(table_name = "citus_notes")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        #[tenant_id]
        pub tenant_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: i64,
        pub body: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// Tickets whose ids the database makes: `citus::create_table` gives the `id` of the key
/// `(tenant_id, id)` an identity.
mod ticket {
    use sea_orm::entity::prelude::*;
    use tenancy_sea::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, TenantScoped)]
    #[sea_orm(table_name = "citus_tickets")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        #[tenant_id]
        pub tenant_id: i64,
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: i64,
        pub title: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// Tickets inserted without ids get ids from the database, each tenant's found by its id
/// through its handle.
async fn tickets_get_their_ids(
    tenancy: &Tenancy<i64>,
    owner: &DatabaseConnection,
    distribute: bool,
) {
    owner
        .execute_unprepared(
            &citus::create_table(ticket::Entity)
                .to_string(sea_orm::sea_query::PostgresQueryBuilder),
        )
        .await
        .unwrap();
    if distribute {
        let made = tenancy.distribute_on_citus().await.unwrap();
        assert!(
            made.steps.iter().any(|s| matches!(s, citus::DistributionStep::Distribute { table, .. } if table == "citus_tickets")),
            "{:?}",
            made.steps
        );
    }
    for tenant in [51, 52] {
        let db = tenancy.tenant(tenant).await.unwrap();
        let mut ids = Vec::new();
        for title in ["first", "second"] {
            let made = db
                .insert(ticket::ActiveModel {
                    title: Set(title.to_owned()),
                    ..Default::default()
                })
                .await
                .unwrap();
            assert_eq!(made.tenant_id, tenant);
            ids.push(made.id);
        }
        assert_ne!(ids[0], ids[1]);
        let found = db
            .find_by_id::<ticket::Entity>(ids[1])
            .one()
            .await
            .unwrap()
            .unwrap();
        assert_eq!(found.title, "second");
    }
}

/// The same on plain PostgreSQL: `citus::create_table` is PostgreSQL DDL.
#[tokio::test]
async fn ids_of_a_tenant_key_are_made_by_postgresql() {
    tenancy_tests::on_empty(tenancy_tests::Backend::Postgres, async |db| {
        let tenancy = Tenancy::<i64>::builder(db.conn.clone()).build().unwrap();
        assert!(matches!(
            tenancy.distribute_on_citus().await,
            Err(Error::Config(_))
        ));
        tickets_get_their_ids(&tenancy, &db.conn, false).await;
    })
    .await;
}

const SETTING: &str = "tenancy.tenant_id";

/// The coordinator's URL, or `None` (and a loud `SKIPPED:` line) without one.
fn citus_url(test: &str) -> Option<String> {
    match std::env::var("TENANCY_CITUS_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            eprintln!(
                "SKIPPED: {test}: TENANCY_CITUS_URL is not set (a Citus coordinator; \
                 `scripts/citus-cluster` starts one from an installed Citus)"
            );
            None
        }
    }
}

/// A name no other run uses.
fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}{}_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_micros(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Runs `body` with a fresh schema on the coordinator (the tables of the row-level tests
/// live there) and drops it, and whatever roles the body names, also when it panics.
async fn sandbox<F>(url: &str, roles: &[&str], body: F)
where
    F: AsyncFnOnce(&DatabaseConnection, &str),
{
    let schema = unique("citus_t");
    let admin = tenancy_tests::citus_connection(url, None, Some(&schema), false).await;
    admin
        .execute_unprepared(&format!("CREATE SCHEMA \"{schema}\""))
        .await
        .unwrap();
    let outcome = AssertUnwindSafe(body(&admin, &schema)).catch_unwind().await;
    admin
        .execute_unprepared(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
        .await
        .unwrap();
    for role in roles {
        let _ = admin
            .execute_unprepared(&format!("DROP OWNED BY \"{role}\""))
            .await;
        let _ = admin
            .execute_unprepared(&format!("DROP ROLE IF EXISTS \"{role}\""))
            .await;
    }
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// The suite's tables, made with their foreign keys (as a migration would), then
/// distributed by the library; a second distribution changes nothing.
async fn make_tables(admin: &DatabaseConnection, by_migration: bool) {
    if by_migration {
        // The way an application would: one migration makes the tables and distributes
        // them, in its transaction.
        SuiteMigrator::up(admin, None).await.unwrap();
        SuiteMigrator::up(admin, None).await.unwrap();
    } else {
        admin
            .get_schema_builder()
            .register(plan::Entity)
            .register(customer::Entity)
            .register(order::Entity)
            .register(note::Entity)
            .apply(admin)
            .await
            .unwrap();
        let first = citus::distribute(admin).await.unwrap();
        let made: Vec<String> = first.steps.iter().map(|s| format!("{s:?}")).collect();
        assert!(
            first.steps.iter().any(
                |s| matches!(s, citus::DistributionStep::Reference { table } if table == "citus_plans")
            ),
            "{made:?}"
        );
        assert_eq!(
            first
                .steps
                .iter()
                .filter(|s| matches!(s, citus::DistributionStep::Distribute { .. }))
                .count(),
            3,
            "{made:?}"
        );
    }
    let again = citus::distribute(admin).await.unwrap();
    assert_eq!(again.steps, [], "a second distribution changes nothing");
    let kinds = admin
        .query_all_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT table_name::text AS t, citus_table_type::text AS k FROM public.citus_tables \
             WHERE table_name::text LIKE 'citus_%' AND table_name::text NOT LIKE '%.%' \
             ORDER BY 1",
        ))
        .await
        .unwrap()
        .iter()
        .map(|r| {
            (
                r.try_get::<String>("", "t").unwrap(),
                r.try_get::<String>("", "k").unwrap(),
            )
        })
        .collect::<Vec<_>>();
    assert_eq!(
        kinds,
        [
            ("citus_customers".to_owned(), "distributed".to_owned()),
            ("citus_notes".to_owned(), "distributed".to_owned()),
            ("citus_orders".to_owned(), "distributed".to_owned()),
            ("citus_plans".to_owned(), "reference".to_owned()),
        ]
    );
    admin
        .execute_unprepared("INSERT INTO citus_plans (id, name) VALUES (1, 'basic'), (2, 'pro')")
        .await
        .unwrap();
}

/// The suite's tables, made and distributed by one migration.
struct SuiteTables;

impl MigrationName for SuiteTables {
    fn name(&self) -> &str {
        "m20261203_000000_citus_suite_tables"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for SuiteTables {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let conn = manager.get_connection();
        conn.get_schema_builder()
            .register(plan::Entity)
            .register(customer::Entity)
            .register(order::Entity)
            .register(note::Entity)
            .apply(conn)
            .await?;
        citus::distribute(conn)
            .await
            .map_err(|error| DbErr::Migration(error.to_string()))?;
        Ok(())
    }

    async fn down(&self, _: &SchemaManager) -> Result<(), DbErr> {
        Ok(())
    }
}

struct SuiteMigrator;

impl MigratorTrait for SuiteMigrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(SuiteTables)]
    }
}

/// Every operation of a handle, for tenant `db` beside tenant `other` (whose rows it must
/// never see); with the fan-out guard on the connection, each one succeeding is each one
/// a single-shard query. `plans` says whether the global table is reachable.
async fn every_operation(db: &TenantDb<i64>, other: &TenantDb<i64>, plans: bool) {
    let me = *db.tenant_id();
    let plan_id = plans.then_some(2);
    for handle in [db, other] {
        handle
            .insert(customer::ActiveModel {
                id: Set(1),
                name: Set(format!("c{}", handle.tenant_id())),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let orders = (1..=5).map(|id| order::ActiveModel {
        id: Set(id),
        customer_id: Set(1),
        plan_id: Set(plan_id),
        total_cents: Set(id * 100),
        ..Default::default()
    });
    assert_eq!(db.insert_many(orders).await.unwrap(), 5);
    other
        .insert(order::ActiveModel {
            id: Set(1),
            customer_id: Set(1),
            plan_id: Set(None),
            total_cents: Set(7),
            ..Default::default()
        })
        .await
        .unwrap();

    // Reads: filter, order, count, page, stream, by key.
    let big = db
        .find::<order::Entity>()
        .filter(order::Column::TotalCents.gt(250))
        .order_by_asc(order::Column::Id)
        .all()
        .await
        .unwrap();
    assert_eq!(big.iter().map(|o| o.id).collect::<Vec<_>>(), [3, 4, 5]);
    assert!(big.iter().all(|o| o.tenant_id == me));
    assert_eq!(db.find::<order::Entity>().count().await.unwrap(), 5);
    let page = db
        .find::<order::Entity>()
        .order_by_asc(order::Column::Id)
        .paginate(2)
        .fetch_page(1)
        .await
        .unwrap();
    assert_eq!(page.iter().map(|o| o.id).collect::<Vec<_>>(), [3, 4]);
    let streamed: Vec<_> = db
        .find::<order::Entity>()
        .stream()
        .await
        .unwrap()
        .collect()
        .await;
    assert_eq!(streamed.len(), 5);
    // Keyed by `(tenant_id, id)`: the handle takes the id and fills in its tenant.
    let one = db
        .find_by_id::<order::Entity>(4)
        .one()
        .await
        .unwrap()
        .unwrap();
    assert_eq!((one.tenant_id, one.total_cents), (me, 400));
    let mine = db
        .find_by_id::<order::Entity>(1)
        .one()
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        mine.tenant_id, me,
        "id 1 through this handle is this tenant's 1"
    );
    assert!(
        other
            .find_by_id::<order::Entity>(4)
            .one()
            .await
            .unwrap()
            .is_none(),
        "the other tenant has no order 4"
    );

    // Relations: the customer's orders, orders with their customer, loaders.
    let customer = db.find::<customer::Entity>().one().await.unwrap().unwrap();
    assert_eq!(
        db.find_related::<order::Entity, _>(&customer)
            .count()
            .await
            .unwrap(),
        5
    );
    let with = db
        .find::<order::Entity>()
        .find_also_related::<customer::Entity>()
        .all()
        .await
        .unwrap();
    assert_eq!(with.len(), 5);
    assert!(
        with.iter()
            .all(|(_, c)| c.as_ref().is_some_and(|c| c.tenant_id == me))
    );
    let loaded = db
        .load_many::<order::Entity, _>(std::slice::from_ref(&customer))
        .await
        .unwrap();
    assert_eq!(loaded[0].len(), 5);
    if plans {
        // A join to a reference table stays on the tenant's node.
        let priced = db
            .find::<order::Entity>()
            .find_also_related::<plan::Entity>()
            .all()
            .await
            .unwrap();
        assert!(
            priced
                .iter()
                .all(|(_, p)| p.as_ref().is_some_and(|p| p.name == "pro"))
        );
        assert_eq!(db.find::<plan::Entity>().count().await.unwrap(), 2);
    }

    // An upsert on the name: the per-tenant unique key `(tenant_id, name)` puts the
    // tenant column in the conflict target, which Citus needs to route it.
    let renamed = db
        .upsert(customer::ActiveModel {
            id: Set(2),
            name: Set(format!("c{me}")),
            ..Default::default()
        })
        .on_conflict([customer::Column::Name])
        .update_columns([customer::Column::Name])
        .exec()
        .await
        .unwrap();
    assert_eq!(renamed, 1);
    assert_eq!(
        db.find::<customer::Entity>().count().await.unwrap(),
        1,
        "the conflict was this tenant's row: no second customer"
    );

    // Writes: update, update many, upsert on the tenant's key, delete by id, delete many.
    db.update(order::ActiveModel {
        tenant_id: Set(me),
        id: Set(1),
        total_cents: Set(111),
        ..Default::default()
    })
    .await
    .unwrap();
    let raised = db
        .update_many::<order::Entity>()
        .col_expr(
            order::Column::TotalCents,
            sea_orm::sea_query::Expr::col(order::Column::TotalCents).add(1),
        )
        .filter(order::Column::Id.lte(2))
        .exec()
        .await
        .unwrap();
    assert_eq!(raised.rows_affected, 2);
    let upserted = db
        .upsert(order::ActiveModel {
            id: Set(5),
            customer_id: Set(1),
            plan_id: Set(plan_id),
            total_cents: Set(555),
            ..Default::default()
        })
        .on_conflict([order::Column::TenantId, order::Column::Id])
        .update_columns([order::Column::TotalCents])
        .exec()
        .await
        .unwrap();
    assert_eq!(upserted, 1);
    let deleted = other.delete_by_id::<order::Entity>(4).await.unwrap();
    assert_eq!(
        deleted.rows_affected, 0,
        "another tenant's id 4 is not this one's"
    );
    db.delete_by_id::<order::Entity>(4).await.unwrap();
    let gone = db
        .delete_many::<order::Entity>()
        .filter(order::Column::Id.eq(3))
        .exec()
        .await
        .unwrap();
    assert_eq!(gone.rows_affected, 1);
    let totals: Vec<i64> = db
        .find::<order::Entity>()
        .order_by_asc(order::Column::Id)
        .all()
        .await
        .unwrap()
        .iter()
        .map(|o| o.total_cents)
        .collect();
    assert_eq!(totals, [112, 201, 555]);

    // A transaction with a savepoint: the inner part rolled back, the outer committed.
    let txn = db.begin().await.unwrap();
    txn.insert(order::ActiveModel {
        id: Set(10),
        customer_id: Set(1),
        plan_id: Set(None),
        total_cents: Set(10),
        ..Default::default()
    })
    .await
    .unwrap();
    let inner = txn.begin().await.unwrap();
    inner.delete_many::<order::Entity>().exec().await.unwrap();
    inner.rollback().await.unwrap();
    txn.commit().await.unwrap();
    assert_eq!(db.find::<order::Entity>().count().await.unwrap(), 4);

    // The other tenant saw nothing of it, and kept its own row.
    let theirs = other.find::<order::Entity>().all().await.unwrap();
    assert_eq!(theirs.len(), 1);
    assert_eq!(theirs[0].total_cents, 7);
}

/// After a move: the tenant's rows read, written and deleted as before, through a fresh
/// handle, each statement single-shard (the guard is on).
async fn every_operation_after_a_move(tenancy: &Tenancy<i64>, me: i64) {
    let db = tenancy.tenant(me).await.unwrap();
    let before = db.find::<order::Entity>().count().await.unwrap();
    db.insert(order::ActiveModel {
        id: Set(500),
        customer_id: Set(1),
        plan_id: Set(None),
        total_cents: Set(5),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(
        db.find::<order::Entity>().count().await.unwrap(),
        before + 1
    );
    assert!(
        db.find_by_id::<order::Entity>(500)
            .one()
            .await
            .unwrap()
            .is_some()
    );
    db.delete_by_id::<order::Entity>(500).await.unwrap();
    assert_eq!(db.find::<order::Entity>().count().await.unwrap(), before);
}

/// The fan-out guard is on for the tenant connection: the statement no handle makes (a
/// read of every tenant's rows) is refused there, and runs on the admin connection.
async fn guard_refuses_fan_out(tenant_conn: &DatabaseConnection, admin: &DatabaseConnection) {
    let every = Statement::from_string(DbBackend::Postgres, "SELECT count(*) FROM citus_orders");
    let refused = tenant_conn.query_one_raw(every.clone()).await.unwrap_err();
    assert!(
        refused.to_string().contains("multi-task query"),
        "{refused}"
    );
    assert!(admin.query_one_raw(every).await.unwrap().is_some());
}

/// The worker that holds `tenant`'s rows of `table`, as `host:port`.
async fn node_of(admin: &DatabaseConnection, table: &str, tenant: i64) -> String {
    scalar(
        admin,
        Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT n.nodename || ':' || n.nodeport AS node FROM pg_dist_placement p \
             JOIN pg_dist_node n ON n.groupid = p.groupid \
             WHERE p.shardid = get_shard_id_for_distribution_column($1::regclass, $2)",
            [sea_orm::Value::from(table), sea_orm::Value::from(tenant)],
        ),
    )
    .await
}

/// The worker that holds the distributed schema `schema`, as `host:port`.
async fn node_of_schema(admin: &DatabaseConnection, schema: &str) -> String {
    scalar(
        admin,
        Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT n.nodename || ':' || n.nodeport AS node FROM pg_dist_shard s \
             JOIN pg_class c ON c.oid = s.logicalrelid \
             JOIN pg_dist_placement p ON p.shardid = s.shardid \
             JOIN pg_dist_node n ON n.groupid = p.groupid \
             WHERE c.relnamespace = to_regnamespace($1) LIMIT 1",
            [sea_orm::Value::from(schema)],
        ),
    )
    .await
}

/// A worker other than `node`.
async fn other_worker(admin: &DatabaseConnection, node: &str) -> String {
    scalar(
        admin,
        Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT nodename || ':' || nodeport AS node FROM pg_dist_node \
             WHERE noderole = 'primary' AND shouldhaveshards AND isactive \
             AND nodename || ':' || nodeport <> $1 ORDER BY nodeport LIMIT 1",
            [sea_orm::Value::from(node)],
        ),
    )
    .await
}

async fn scalar(conn: &DatabaseConnection, statement: Statement) -> String {
    conn.query_one_raw(statement)
        .await
        .unwrap()
        .unwrap()
        .try_get::<String>("", "node")
        .unwrap()
}

/// A move under the Citus placement is Citus' own: the tenant's shards (isolated first)
/// move to the worker named, its co-located tables with them; the other tenant stays;
/// the handle reads the same rows after, still single-shard; a second move is a no-op;
/// a destination that is no worker is refused before anything changes.
async fn move_through_citus(
    tenancy: &Tenancy<i64>,
    admin: &DatabaseConnection,
    me: i64,
    other: i64,
) {
    let before = node_of(admin, "citus_orders", me).await;
    let neighbour = node_of(admin, "citus_orders", other).await;
    let target = other_worker(admin, &before).await;
    let count = async || {
        tenancy
            .tenant(me)
            .await
            .unwrap()
            .find::<order::Entity>()
            .count()
            .await
            .unwrap()
    };
    let rows = count().await;
    let report = tenancy
        .move_tenant(me, target.as_str())
        .entity::<customer::Entity>()
        .entity::<order::Entity>()
        .run()
        .await
        .unwrap();
    assert_eq!(
        (report.from.as_str(), report.to.as_str()),
        (before.as_str(), target.as_str())
    );
    assert_eq!(
        report.copied,
        [("citus_customers", 1), ("citus_orders", rows)]
    );
    assert_eq!(node_of(admin, "citus_orders", me).await, target);
    assert_eq!(
        node_of(admin, "citus_customers", me).await,
        target,
        "co-located tables move together"
    );
    assert_eq!(
        node_of(admin, "citus_orders", other).await,
        neighbour,
        "the other tenant stays"
    );
    assert_eq!(count().await, rows);
    let again = tenancy
        .move_tenant(me, target.as_str())
        .entity::<order::Entity>()
        .run()
        .await
        .unwrap();
    assert_eq!(again.from, again.to);
    for bad in ["127.0.0.1:1", "s1"] {
        assert!(
            tenancy
                .move_tenant(me, bad)
                .entity::<order::Entity>()
                .run()
                .await
                .is_err(),
            "{bad}"
        );
    }
    assert_eq!(node_of(admin, "citus_orders", me).await, target);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn citus_row_level_every_operation_is_single_shard() {
    let Some(url) = citus_url("citus_row_level_every_operation_is_single_shard") else {
        return;
    };
    sandbox(&url, &[], async |admin, schema| {
        make_tables(admin, false).await;
        let tenant_conn = tenancy_tests::citus_connection(&url, None, Some(schema), true).await;
        let tenancy = Tenancy::<i64>::builder(tenant_conn.clone())
            .admin_connection(admin.clone())
            .citus()
            .build()
            .unwrap();
        assert_eq!(tenancy.placement(), Placement::Citus);
        tenancy.verify().await.unwrap();
        let (a, b) = (
            tenancy.tenant(11).await.unwrap(),
            tenancy.tenant(12).await.unwrap(),
        );
        every_operation(&a, &b, true).await;
        guard_refuses_fan_out(&tenant_conn, admin).await;
        move_through_citus(&tenancy, admin, 11, 12).await;
        every_operation_after_a_move(&tenancy, 11).await;
        tickets_get_their_ids(&tenancy, admin, true).await;

        // Without the guard, the tenancy does not start.
        let unguarded = tenancy_tests::citus_connection(&url, None, Some(schema), false).await;
        let loose = Tenancy::<i64>::builder(unguarded).citus().build().unwrap();
        match loose.tenant(11).await {
            Err(Error::Config(message)) => assert!(message.contains("fan-out guard"), "{message}"),
            other => panic!("expected the guard's Config error, got {other:?}"),
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn citus_row_level_security_every_operation_and_hostile_ids() {
    let Some(url) = citus_url("citus_row_level_security_every_operation_and_hostile_ids") else {
        return;
    };
    let role = unique("citus_app");
    sandbox(&url, &[role.as_str()], async |admin, schema| {
        make_tables(admin, true).await;
        let tables = [
            tenancy_sea::rls::RlsTable::of::<customer::Entity>().unwrap(),
            tenancy_sea::rls::RlsTable::of::<order::Entity>().unwrap(),
            tenancy_sea::rls::RlsTable::of::<note::Entity>().unwrap(),
        ];
        tenancy_sea::rls::enable_row_level_security(admin, SETTING, &tables)
            .await
            .unwrap();
        for statement in [
            format!("CREATE ROLE \"{role}\" LOGIN"),
            format!("GRANT USAGE ON SCHEMA \"{schema}\" TO \"{role}\""),
            format!(
                "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA \"{schema}\" \
                 TO \"{role}\""
            ),
        ] {
            admin.execute_unprepared(&statement).await.unwrap();
        }
        let tenant_conn =
            tenancy_tests::citus_connection(&url, Some(&role), Some(schema), true).await;
        let tenancy = Tenancy::<i64>::builder(tenant_conn.clone())
            .admin_connection(admin.clone())
            .row_level_security(SETTING)
            .citus()
            .build()
            .unwrap();
        tenancy.verify().await.unwrap();
        let (a, b) = (
            tenancy.tenant(21).await.unwrap(),
            tenancy.tenant(22).await.unwrap(),
        );
        every_operation(&a, &b, true).await;
        guard_refuses_fan_out(&tenant_conn, admin).await;
        move_through_citus(&tenancy, admin, 21, 22).await;
        every_operation_after_a_move(&tenancy, 21).await;

        // The policies hold on the workers: the application role, with no tenant set,
        // reads nothing, whatever its query says.
        let bare = tenant_conn
            .query_one_raw(Statement::from_string(
                DbBackend::Postgres,
                "SELECT count(*) AS n FROM citus_orders WHERE tenant_id = 21",
            ))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(bare.try_get::<i64>("", "n").unwrap(), 0);

        // Hostile text ids: each is written into `SET LOCAL` by the audited literal, and
        // each tenant reads back exactly its own note, never another's.
        let texts = Tenancy::<String>::builder(tenant_conn.clone())
            .row_level_security(SETTING)
            .citus()
            .build()
            .unwrap();
        let hostile = [
            "o'brien",
            "a\\'b",
            "x'; SET LOCAL tenancy.tenant_id = 'victim",
            "\\",
            "victim",
            "VICTIM",
            "tab\tless",
            "ümlaut ünïcode",
            "$$; DROP TABLE citus_notes; $$",
        ];
        let hostile: Vec<&str> = hostile
            .into_iter()
            .filter(|id| tenancy_sea::TenantId::validate(&(*id).to_owned()).is_ok())
            .collect();
        assert!(hostile.len() >= 7, "{hostile:?}");
        for (n, id) in hostile.iter().enumerate() {
            texts
                .tenant(*id)
                .await
                .unwrap()
                .insert(note::ActiveModel {
                    id: Set(n as i64),
                    body: Set(format!("note of {id}")),
                    ..Default::default()
                })
                .await
                .unwrap();
        }
        for id in &hostile {
            let notes = texts
                .tenant(*id)
                .await
                .unwrap()
                .find::<note::Entity>()
                .all()
                .await
                .unwrap();
            assert_eq!(notes.len(), 1, "{id:?}: {notes:?}");
            assert_eq!(notes[0].tenant_id, *id);
            assert_eq!(notes[0].body, format!("note of {id}"));
        }
        let count = admin
            .query_one_raw(Statement::from_string(
                DbBackend::Postgres,
                "SELECT count(*) AS n FROM citus_notes",
            ))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(count.try_get::<i64>("", "n").unwrap(), hostile.len() as i64);
    })
    .await;
}

/// The migrations of each tenant schema: the suite's tenant-scoped tables.
struct TenantTables;

impl MigrationName for TenantTables {
    fn name(&self) -> &str {
        "m20261203_000001_citus_tenant_tables"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for TenantTables {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let schema = sea_orm::Schema::new(DbBackend::Postgres);
        manager
            .create_table(schema.create_table_from_entity(customer::Entity))
            .await?;
        for index in schema.create_index_from_entity(customer::Entity) {
            manager.create_index(index).await?;
        }
        manager
            .create_table(schema.create_table_from_entity(order::Entity))
            .await
    }

    async fn down(&self, _: &SchemaManager) -> Result<(), DbErr> {
        Ok(())
    }
}

struct TenantMigrator;

impl MigratorTrait for TenantMigrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(TenantTables)]
    }
}

/// The guard is on for the tenant connection (under schema per tenant a tenant's tables
/// live on one node, so a statement that spans nodes needs tables of several tenants,
/// which the tenant's `search_path` does not reach).
async fn guard_is_on(tenant_conn: &DatabaseConnection) {
    let level = tenant_conn
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT current_setting('citus.multi_task_query_log_level') AS level",
        ))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(level.try_get::<String>("", "level").unwrap(), "error");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn citus_schema_per_tenant_every_operation_and_provisioning() {
    let Some(url) = citus_url("citus_schema_per_tenant_every_operation_and_provisioning") else {
        return;
    };
    sandbox(&url, &[], async |admin, _| {
        let prefix = format!("{}_", unique("ct"));
        let tenant_conn = tenancy_tests::citus_connection(&url, None, None, true).await;
        let plain_admin = tenancy_tests::citus_connection(&url, None, None, false).await;
        let tenancy = Tenancy::<i64>::builder(tenant_conn.clone())
            .admin_connection(plain_admin.clone())
            .schema_per_tenant(&prefix)
            .citus()
            .build()
            .unwrap();
        let tenants = [31, 32];
        // The global table lives in `public`, where each tenant's `search_path` ends: a
        // reference table, made for this test and dropped after it.
        plain_admin
            .get_schema_builder()
            .register(plan::Entity)
            .apply(&plain_admin)
            .await
            .unwrap();
        for statement in [
            "SELECT create_reference_table('public.citus_plans')",
            "INSERT INTO public.citus_plans (id, name) VALUES (1, 'basic'), (2, 'pro')",
        ] {
            plain_admin.execute_unprepared(statement).await.unwrap();
        }
        let outcome = AssertUnwindSafe(async {
            for tenant in tenants {
                tenancy
                    .create_tenant_schema::<TenantMigrator>(tenant)
                    .await
                    .unwrap();
            }
            // Each schema is a distributed schema: Citus put it, tables and all, on a node.
            let distributed = plain_admin
                .query_all_raw(Statement::from_sql_and_values(
                    DbBackend::Postgres,
                    "SELECT schema_name::text AS s FROM citus_schemas \
                     WHERE schema_name::text LIKE $1 ORDER BY 1",
                    [sea_orm::Value::from(format!("{prefix}%"))],
                ))
                .await
                .unwrap();
            assert_eq!(distributed.len(), 2);
            // Migrating the fleet again changes nothing and fails nowhere.
            let report = tenancy
                .migrate_all::<TenantMigrator>(2, |_| {})
                .await
                .unwrap();
            assert!(report.is_success(), "{:?}", report.failed);
            tenancy.verify().await.unwrap();
            let (a, b) = (
                tenancy.tenant(31).await.unwrap(),
                tenancy.tenant(32).await.unwrap(),
            );
            every_operation(&a, &b, true).await;
            guard_is_on(&tenant_conn).await;
            // The tenant's distributed schema moves as a whole.
            let schema = format!("{prefix}31");
            let before = node_of_schema(&plain_admin, &schema).await;
            let target = other_worker(&plain_admin, &before).await;
            let report = tenancy
                .move_tenant(31, target.as_str())
                .entity::<customer::Entity>()
                .entity::<order::Entity>()
                .run()
                .await
                .unwrap();
            assert_eq!(
                (report.from.as_str(), report.to.as_str()),
                (before.as_str(), target.as_str())
            );
            assert_eq!(report.copied, [("citus_customers", 1), ("citus_orders", 4)]);
            assert_eq!(node_of_schema(&plain_admin, &schema).await, target);
            every_operation_after_a_move(&tenancy, 31).await;
        })
        .catch_unwind()
        .await;
        for tenant in tenants {
            let _ = tenancy.drop_tenant_schema(tenant).await;
        }
        let _ = plain_admin
            .execute_unprepared("DROP TABLE IF EXISTS public.citus_plans")
            .await;
        let _ = admin;
        if let Err(panic) = outcome {
            std::panic::resume_unwind(panic);
        }
    })
    .await;
}

/// What needs no cluster: the placement's pairs, and the guard's setting.
#[tokio::test]
async fn citus_placement_needs_postgresql() {
    let sqlite = Database::connect("sqlite::memory:").await.unwrap();
    match Tenancy::<i64>::builder(sqlite).citus().build() {
        Err(Error::Config(message)) => {
            assert!(message.contains("a Citus cluster"), "{message}");
            assert!(message.contains("PostgreSQL"), "{message}");
        }
        other => panic!("expected a Config error, got {other:?}"),
    }
    assert_eq!(citus::GUARD, ("citus.multi_task_query_log_level", "error"));
}

/// The one function that writes a value into SQL text reads back as exactly the value on
/// PostgreSQL, whatever `standard_conforming_strings` is: hostile ids, quotes, backslashes
/// and all. Runs on the suite's PostgreSQL (no cluster needed).
#[tokio::test]
async fn the_literal_writer_round_trips_on_postgresql() {
    tenancy_tests::on_empty(tenancy_tests::Backend::Postgres, async |db| {
        let values = [
            "acme",
            "o'brien",
            "''",
            "\\",
            "\\\\'",
            "a\\'b",
            "x'; SET LOCAL tenancy.tenant_id = 'victim",
            "$$; DROP TABLE t; $$",
            "E'x'",
            "ümlaut ünïcode ✓",
            "tab\tline\nbreak",
            "-- comment",
            "/* c */",
        ];
        let txn = sea_orm::TransactionTrait::begin(&db.conn).await.unwrap();
        for conforming in ["on", "off"] {
            txn.execute_unprepared(&format!(
                "SET LOCAL standard_conforming_strings = {conforming}"
            ))
            .await
            .unwrap();
            for value in values {
                let row = txn
                    .query_one_raw(Statement::from_string(
                        DbBackend::Postgres,
                        format!("SELECT {} AS v", citus::literal(value).unwrap()),
                    ))
                    .await
                    .unwrap()
                    .unwrap();
                assert_eq!(
                    row.try_get::<String>("", "v").unwrap(),
                    value,
                    "{conforming}"
                );
            }
        }
        txn.rollback().await.unwrap();
        assert!(citus::literal("a\0b").is_err());
        // The set-up text names a validated setting only.
        assert!(citus::tenant_setting_sql("tenancy.tenant_id; DROP", "1").is_err());
        assert_eq!(
            citus::tenant_setting_sql("tenancy.tenant_id", "7").unwrap(),
            "SET LOCAL citus.propagate_set_commands = 'local'; SET LOCAL tenancy.tenant_id = E'7'"
        );
    })
    .await;
}
