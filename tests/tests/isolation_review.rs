//! One regression test per finding of the isolation review: each attack that crossed
//! from one tenant to another, or that left a door open, tried again on every backend and
//! strategy where it applies. The compile-time items (sealed traits, typed directory
//! keys) are UI cases in `ui/fail`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failure is a panic

use sea_orm::sea_query::{Expr, ExprTrait, Query};
use sea_orm::{
    ColumnTrait, ConnectionTrait, Database, DbBackend, EntityTrait, Schema, Set, Statement,
};
use std::sync::{Arc, Mutex};
use tenancy_sea::integrity::TenantIntegrity;
use tenancy_sea::{
    DatabaseTemplate, DirectoryRouter, Error, ShardId, ShardRouter, ShardState, Tenancy, TenantDb,
    TenantRegistry, catalog::Directory, catalog::Shards, catalog::TenantDatabases,
};
use tenancy_tests::entities::*;
use tenancy_tests::{Backend, Flavor, Provisioned, RLS_SETTING, TestDb, raw, run};

/// Declares `name` as a test on each listed `(module, backend, flavor)`.
macro_rules! on {
    ($name:ident: $(($module:ident, $backend:ident, $flavor:ident)),+ $(,)?) => {
        mod $name {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $module() {
                run(tenancy_tests::Backend::$backend, tenancy_tests::Flavor::$flavor, super::$name).await
            })+
            use super::run;
        }
    };
}

/// Every strategy whose tables are shared by tenants (the tenant column decides).
macro_rules! on_shared_tables {
    ($name:ident) => {
        on!($name: (sqlite, Sqlite, RowLevel), (postgres, Postgres, RowLevel),
            (mysql, MySql, RowLevel), (postgres_rls, Postgres, Rls));
    };
}

/// Every combination of isolation and placement on every backend it supports.
macro_rules! on_every_strategy {
    ($name:ident) => {
        on!($name: (sqlite, Sqlite, RowLevel), (postgres, Postgres, RowLevel),
            (mysql, MySql, RowLevel), (postgres_rls, Postgres, Rls),
            (postgres_schema, Postgres, Schema), (sqlite_database, Sqlite, Database),
            (postgres_database, Postgres, Database), (mysql_database, MySql, Database),
            (sqlite_sharded, Sqlite, ShardedRowLevel), (postgres_sharded, Postgres, ShardedRowLevel),
            (mysql_sharded, MySql, ShardedRowLevel), (postgres_sharded_rls, Postgres, ShardedRls),
            (postgres_sharded_schema, Postgres, ShardedSchema));
    };
}

fn note(body: &str) -> note_string::ActiveModel {
    note_string::ActiveModel {
        body: Set(body.into()),
        ..Default::default()
    }
}

// ---------------------------------------------------------------------------------------
// 1. Tenants that differ only by case, accent or padding are different tenants.
// ---------------------------------------------------------------------------------------

on_shared_tables!(case_and_accent_differences_are_different_tenants);

async fn case_and_accent_differences_are_different_tenants(db: &TestDb) {
    if db.backend == Backend::Postgres && db.flavor == Flavor::RowLevel {
        // A case- and accent-insensitive ICU collation on the tenant column, the
        // PostgreSQL counterpart of MariaDB's default.
        raw(
            &db.conn,
            "CREATE COLLATION IF NOT EXISTS tenancy_ci \
             (provider = icu, locale = 'und-u-ks-level1', deterministic = false)",
        )
        .await;
        raw(
            &db.conn,
            "ALTER TABLE notes_string ALTER COLUMN owner TYPE text COLLATE tenancy_ci",
        )
        .await;
        let row = db
            .conn
            .query_one_raw(Statement::from_string(
                DbBackend::Postgres,
                "SELECT count(*) AS n FROM (VALUES ('acme'::text COLLATE tenancy_ci)) v(x) \
                 WHERE x = 'ÁCMÉ'",
            ))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            row.try_get::<i64>("", "n").unwrap(),
            1,
            "the collation is not insensitive"
        );
    }
    if db.flavor == Flavor::Rls {
        // The policy, generated anew over a nondeterministic collation, compares exactly
        // too: what raw SQL, a hook or any statement of the application role meets.
        raw(
            &db.conn,
            "CREATE COLLATION IF NOT EXISTS tenancy_ci \
             (provider = icu, locale = 'und-u-ks-level1', deterministic = false)",
        )
        .await;
        raw(&db.conn, "DROP POLICY tenancy_isolation ON notes_string").await;
        raw(
            &db.conn,
            "ALTER TABLE notes_string ALTER COLUMN owner TYPE text COLLATE tenancy_ci",
        )
        .await;
        tenancy_sea::rls::enable_row_level_security(
            &db.conn,
            RLS_SETTING,
            &[tenancy_sea::rls::RlsTable::of::<note_string::Entity>().unwrap()],
        )
        .await
        .unwrap();
        let tenancy = db.tenancy::<String>();
        tenancy
            .tenant("acme".to_owned())
            .await
            .unwrap()
            .insert(note("policy"))
            .await
            .unwrap();
        let app = db.app.clone().unwrap();
        let txn = sea_orm::TransactionTrait::begin(&app).await.unwrap();
        txn.execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT set_config($1, 'ACME', true)",
            [RLS_SETTING.into()],
        ))
        .await
        .unwrap();
        let seen = txn
            .query_all_raw(Statement::from_string(
                DbBackend::Postgres,
                "SELECT owner FROM notes_string",
            ))
            .await
            .unwrap();
        assert!(seen.is_empty(), "the policy let ACME see acme's rows");
        txn.rollback().await.unwrap();
        raw(&db.conn, "DELETE FROM notes_string").await;
    }
    let tenancy = db.tenancy::<String>();
    for (owner, look_alikes) in [
        ("acme", &["ACME", "Acme", "ácmé", "ÁCMÉ", "acmé"][..]),
        ("münchen", &["MÜNCHEN", "munchen", "Munchen"][..]),
    ] {
        let mine = tenancy.tenant(owner.to_owned()).await.unwrap();
        let kept = mine.insert(note(owner)).await.unwrap();
        for other in look_alikes {
            let theirs = tenancy.tenant(other.to_string()).await.unwrap();
            assert_eq!(
                theirs.find::<note_string::Entity>().all().await.unwrap(),
                [],
                "{other:?} read {owner:?}'s rows"
            );
            assert_eq!(
                theirs
                    .find_by_id::<note_string::Entity>(kept.id)
                    .one()
                    .await
                    .unwrap(),
                None
            );
            let updated = theirs
                .update_many::<note_string::Entity>()
                .col_expr(note_string::Column::Body, Expr::value("taken"))
                .exec()
                .await
                .unwrap();
            assert_eq!(
                updated.rows_affected, 0,
                "{other:?} updated {owner:?}'s rows"
            );
            let deleted = theirs
                .delete_by_id::<note_string::Entity>(kept.id)
                .await
                .unwrap();
            assert_eq!(
                deleted.rows_affected, 0,
                "{other:?} deleted {owner:?}'s row"
            );
            // Its own row stays its own.
            theirs.insert(note(other)).await.unwrap();
            assert_eq!(
                theirs
                    .find::<note_string::Entity>()
                    .all()
                    .await
                    .unwrap()
                    .len(),
                1
            );
        }
        assert_eq!(
            mine.find::<note_string::Entity>().all().await.unwrap(),
            [kept]
        );
    }
    // Padding: trailing (and leading) white space is not a valid id, so `"acme "` can
    // never be compared under a PAD SPACE collation.
    for padded in ["acme ", " acme", "acme\t"] {
        assert!(matches!(
            tenancy.tenant(padded.to_owned()).await,
            Err(Error::InvalidTenantId(_))
        ));
    }
}

on!(catalog_keys_are_exact:
    (sqlite, Sqlite, RowLevel), (postgres, Postgres, RowLevel), (mysql, MySql, RowLevel));

/// The catalog's own tables compare keys exactly: on MariaDB's default collation,
/// `"ACME"` does not get `"acme"`'s database, and assigning `"ACME"` does not move
/// `"acme"`.
async fn catalog_keys_are_exact(db: &TestDb) {
    let registry = TenantDatabases::new(db.conn.clone());
    registry.install().await.unwrap();
    TenantRegistry::<String>::register(&registry, &"acme".to_owned(), "sqlite://acme.db")
        .await
        .unwrap();
    for other in ["ACME", "Acme", "ácmé"] {
        assert_eq!(
            TenantRegistry::<String>::url(&registry, &other.to_owned())
                .await
                .unwrap(),
            None,
            "{other:?} got acme's database"
        );
    }
    TenantRegistry::<String>::register(&registry, &"ACME".to_owned(), "sqlite://ACME.db")
        .await
        .unwrap();
    assert_eq!(
        TenantRegistry::<String>::url(&registry, &"acme".to_owned())
            .await
            .unwrap()
            .as_deref(),
        Some("sqlite://acme.db")
    );

    let router = Arc::new(DirectoryRouter::<String>::new(["s0", "s1"]));
    let directory = Directory::new(db.conn.clone(), router.clone());
    directory.install().await.unwrap();
    directory.assign(&"acme".to_owned(), "s0").await.unwrap();
    directory.assign(&"ACME".to_owned(), "s1").await.unwrap();
    directory.assign(&"ácmé".to_owned(), "s1").await.unwrap();
    let reloaded = Arc::new(DirectoryRouter::<String>::new(["s0", "s1"]));
    directory.for_router(reloaded.clone()).load().await.unwrap();
    for router in [&router, &reloaded] {
        assert_eq!(
            router.route(&"acme".to_owned()).unwrap(),
            ShardId::from("s0")
        );
        assert_eq!(
            router.route(&"ACME".to_owned()).unwrap(),
            ShardId::from("s1")
        );
    }
    assert_eq!(
        directory.placement(&"acme".to_owned()).await.unwrap(),
        Some(ShardId::from("s0"))
    );
}

// ---------------------------------------------------------------------------------------
// 2. Look-alike ids.
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn look_alike_ids_are_refused() {
    let conn = Database::connect("sqlite::memory:").await.unwrap();
    let tenancy = Tenancy::<String>::builder(conn).build().unwrap();
    for look_alike in [
        "acme\u{200B}",    // zero-width space
        "\u{FEFF}acme",    // byte-order mark
        "\u{202E}gnp.exe", // right-to-left override
        "ac\u{200D}me",    // zero-width joiner
        "ac\u{00AD}me",    // soft hyphen
        "acme\u{00A0}x",   // no-break space
        "a\u{0301}cme",    // not in normalization form C (a + combining acute)
        "ac\u{E000}me",    // private use
        "acme\u{2800}",    // Braille pattern blank
        "ac\u{3164}me",    // Hangul filler
    ] {
        let err = tenancy.tenant(look_alike.to_owned()).await.unwrap_err();
        assert!(
            matches!(err, Error::InvalidTenantId(_)),
            "{look_alike:?}: {err:?}"
        );
    }
    // Visible letters of any script are fine.
    for valid in ["ácmé", "münchen", "東京", "acme corp"] {
        tenancy.tenant(valid.to_owned()).await.unwrap();
    }
}

// ---------------------------------------------------------------------------------------
// 3. Ids of the wrong type.
// ---------------------------------------------------------------------------------------

/// An 8-byte `String` key is not an integer: an unplaced one is `Unassigned`, never routed
/// by the integer ranges. (Assigning a `String` in an `i64` directory does not compile:
/// `ui/fail/directory_assign_wrong_type.rs`.)
#[tokio::test]
async fn ids_of_the_wrong_type() {
    let conn = Database::connect("sqlite::memory:").await.unwrap();
    let router = Arc::new(DirectoryRouter::<String>::new(["s0", "s1"]));
    let strings = Directory::new(conn.clone(), router.clone());
    strings.install().await.unwrap();
    assert!(
        strings.assign_range(0, "s1").await.is_err(),
        "integer ranges in a String directory"
    );
    let unplaced = router.route(&"abcdefgh".to_owned()).unwrap_err();
    assert!(
        matches!(unplaced, tenancy_sea::RoutingError::Unassigned),
        "{unplaced:?}"
    );
    strings.assign(&"abcdefgh".to_owned(), "s0").await.unwrap();
    assert_eq!(
        router.route(&"abcdefgh".to_owned()).unwrap(),
        ShardId::from("s0")
    );

    // A router of i64 keys refuses another type's key instead of reading its bytes.
    let ints = DirectoryRouter::<i64>::new(["s0"]);
    let err = ShardRouter::route(&ints, &"42".to_owned()).unwrap_err();
    assert!(
        matches!(err, tenancy_sea::RoutingError::WrongKeyType { .. }),
        "{err:?}"
    );
}

// ---------------------------------------------------------------------------------------
// 4. Many-to-many through a junction.
// ---------------------------------------------------------------------------------------

/// A customer, an order of it and a tag, written through `db`.
async fn customer_order_and_tag(db: &TenantDb<i64>) -> (customer::Model, order::Model, tag::Model) {
    let customer = db
        .insert(customer::ActiveModel {
            name: Set("a".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let order = db
        .insert(order::ActiveModel {
            customer_id: Set(customer.id),
            total_cents: Set(1),
            ..Default::default()
        })
        .await
        .unwrap();
    let tag = db
        .insert(tag::ActiveModel {
            label: Set("a's".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    (customer, order, tag)
}

on_every_strategy!(junction_rows_stay_in_their_tenant);

/// Tenant B, through its own handle, links A's order to A's tag. None of A's five relation
/// reads shows B's link, A's own identical link is not blocked by it, and with
/// [`TenantIntegrity`] the database refuses to store it at all.
async fn junction_rows_stay_in_their_tenant(db: &TestDb) {
    let tenancy = db.tenancy::<i64>();
    let a = tenancy.provisioned(1).await.unwrap();
    let b = tenancy.provisioned(2).await.unwrap();
    let (_, order, tag) = customer_order_and_tag(&a).await;
    let link = |tenant: i64| order_tag::ActiveModel {
        order_id: Set(order.id),
        tag_id: Set(tag.id),
        tenant_id: Set(tenant),
    };
    let planted = b.insert(link(2)).await;
    if db.flavor.shares_tables() {
        // Stored (no per-tenant keys in this schema), but B's row.
        planted.unwrap();
    }
    let reads = |h: &TenantDb<i64>| {
        let (h, order) = (h.clone(), order.clone());
        async move {
            let related = h
                .find_related::<tag::Entity, _>(&order)
                .all()
                .await
                .unwrap();
            let loaded = h
                .load_many::<tag::Entity, _>(std::slice::from_ref(&order))
                .await
                .unwrap()
                .concat();
            let with = h
                .find::<order::Entity>()
                .find_with_related::<tag::Entity>()
                .all()
                .await
                .unwrap()
                .into_iter()
                .flat_map(|(_, tags)| tags)
                .collect::<Vec<_>>();
            let also = h
                .find::<order::Entity>()
                .find_also_related::<tag::Entity>()
                .all()
                .await
                .unwrap()
                .into_iter()
                .filter_map(|(_, tag)| tag)
                .collect::<Vec<_>>();
            let joined = h
                .find::<order::Entity>()
                .inner_join::<tag::Entity>()
                .all()
                .await
                .unwrap();
            (
                related.len(),
                loaded.len(),
                with.len(),
                also.len(),
                joined.len(),
            )
        }
    };
    assert_eq!(
        reads(&a).await,
        (0, 0, 0, 0, 0),
        "B's link shows in A's reads"
    );
    // A's own identical link is not blocked by B's, and is the only one A sees.
    a.insert(link(1)).await.unwrap_or_else(|e| {
        panic!("A's own link was blocked: {e}");
    });
    assert_eq!(reads(&a).await, (1, 1, 1, 1, 1));
    // B cannot delete A's link.
    let gone = b.delete_many::<order_tag::Entity>().exec().await.unwrap();
    assert!(gone.rows_affected <= 1);
    assert_eq!(reads(&a).await, (1, 1, 1, 1, 1));
}

on!(tenant_integrity_refuses_cross_tenant_links:
    (sqlite, Sqlite, RowLevel), (postgres, Postgres, RowLevel), (mysql, MySql, RowLevel));

/// With per-tenant keys ([`TenantIntegrity`]) the database refuses a row of B that points
/// at A's rows, however it is written.
async fn tenant_integrity_refuses_cross_tenant_links(db: &TestDb) {
    let backend = db.conn.get_database_backend();
    // Fresh tables with the constraints: the suite's shared schema has none.
    for table in ["order_tags", "orders", "tags", "customers"] {
        raw(&db.conn, &format!("DROP TABLE IF EXISTS {table}")).await;
    }
    let schema = Schema::new(backend);
    let mut customers = schema.create_table_from_entity(customer::Entity);
    TenantIntegrity::of::<customer::Entity>().add_to(&mut customers);
    let mut tags = schema.create_table_from_entity(tag::Entity);
    TenantIntegrity::of::<tag::Entity>().add_to(&mut tags);
    let mut orders = schema.create_table_from_entity(order::Entity);
    let order_keys = TenantIntegrity::of::<order::Entity>();
    assert_eq!(order_keys.foreign_keys(), 1);
    let mut order_tags = schema.create_table_from_entity(order_tag::Entity);
    let link_keys = TenantIntegrity::of::<order_tag::Entity>();
    assert_eq!(link_keys.foreign_keys(), 2);
    if backend == DbBackend::Sqlite {
        order_keys.add_to(&mut orders);
        link_keys.add_to(&mut order_tags);
    }
    for create in [&customers, &tags, &orders, &order_tags] {
        db.conn.execute(create).await.unwrap();
    }
    if backend != DbBackend::Sqlite {
        order_keys.apply(&db.conn).await.unwrap();
        link_keys.apply(&db.conn).await.unwrap();
    } else {
        raw(&db.conn, "PRAGMA foreign_keys = ON").await;
    }
    if backend == DbBackend::MySql {
        // A text tenant column under the server's case-insensitive default collation
        // would let a foreign key match `ACME` to `acme`: refused, with the fix.
        let err = TenantIntegrity::of::<note_string::Entity>()
            .apply(&db.conn)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::Config(m) if m.contains("utf8mb4_bin")),
            "{err:?}"
        );
    }
    let tenancy = db.tenancy::<i64>();
    let a = tenancy.tenant(1).await.unwrap();
    let b = tenancy.tenant(2).await.unwrap();
    let (customer, order, tag) = customer_order_and_tag(&a).await;
    let planted = b
        .insert(order_tag::ActiveModel {
            order_id: Set(order.id),
            tag_id: Set(tag.id),
            tenant_id: Set(2),
        })
        .await;
    assert!(planted.is_err(), "B linked A's rows");
    let theirs = b
        .insert(order::ActiveModel {
            customer_id: Set(customer.id),
            total_cents: Set(2),
            ..Default::default()
        })
        .await;
    assert!(theirs.is_err(), "B's order references A's customer");
    a.insert(order_tag::ActiveModel {
        order_id: Set(order.id),
        tag_id: Set(tag.id),
        tenant_id: Set(1),
    })
    .await
    .unwrap();
}

/// Entities whose many-to-many relation goes through a junction that is neither
/// tenant-scoped nor global.
mod loose {
    pub mod doc {
        use sea_orm::entity::prelude::*;
        use tenancy_sea::prelude::*;

        #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, TenantScoped)]
        #[sea_orm(table_name = "loose_docs")]
        pub struct Model {
            #[sea_orm(primary_key)]
            pub id: i64,
            #[tenant_id]
            pub tenant_id: i64,
        }

        #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
        pub enum Relation {}

        impl Related<super::label::Entity> for Entity {
            fn to() -> RelationDef {
                super::doc_label::Relation::Label.def()
            }
            fn via() -> Option<RelationDef> {
                Some(super::doc_label::Relation::Doc.def().rev())
            }
        }

        impl ActiveModelBehavior for ActiveModel {}
    }

    pub mod label {
        use sea_orm::entity::prelude::*;
        use tenancy_sea::prelude::*;

        #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, TenantScoped)]
        #[sea_orm(table_name = "loose_labels")]
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

    /// A junction with no tenant column and no derive of the library.
    pub mod doc_label {
        use sea_orm::entity::prelude::*;

        #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
        #[sea_orm(table_name = "loose_doc_labels")]
        pub struct Model {
            #[sea_orm(primary_key, auto_increment = false)]
            pub doc_id: i64,
            #[sea_orm(primary_key, auto_increment = false)]
            pub label_id: i64,
        }

        #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
        pub enum Relation {
            #[sea_orm(
                belongs_to = "super::doc::Entity",
                from = "Column::DocId",
                to = "super::doc::Column::Id"
            )]
            Doc,
            #[sea_orm(
                belongs_to = "super::label::Entity",
                from = "Column::LabelId",
                to = "super::label::Column::Id"
            )]
            Label,
        }

        impl ActiveModelBehavior for ActiveModel {}
    }
}

/// A relation through an unscoped junction is refused before any SQL is sent, by every
/// relation read. (SeaORM's `Related::via` names the junction only at run time, so this
/// is a typed error, not a compile error.)
#[tokio::test]
async fn unscoped_junction_is_refused() {
    let conn = Database::connect("sqlite::memory:").await.unwrap();
    let tenancy = Tenancy::<i64>::builder(conn).build().unwrap();
    let a = tenancy.tenant(1).await.unwrap();
    let doc = loose::doc::Model {
        id: 1,
        tenant_id: 1,
    };
    let refused = |err: Error| {
        assert!(
            matches!(&err, Error::UnscopedJunction { junction, .. } if junction == "loose_doc_labels"),
            "{err:?}"
        );
    };
    refused(
        a.find_related::<loose::label::Entity, _>(&doc)
            .all()
            .await
            .unwrap_err(),
    );
    refused(
        a.load_many::<loose::label::Entity, _>(std::slice::from_ref(&doc))
            .await
            .unwrap_err(),
    );
    refused(
        a.find::<loose::doc::Entity>()
            .find_with_related::<loose::label::Entity>()
            .all()
            .await
            .unwrap_err(),
    );
    refused(
        a.find::<loose::doc::Entity>()
            .find_also_related::<loose::label::Entity>()
            .all()
            .await
            .unwrap_err(),
    );
    refused(
        a.find::<loose::doc::Entity>()
            .inner_join::<loose::label::Entity>()
            .all()
            .await
            .unwrap_err(),
    );
}

// ---------------------------------------------------------------------------------------
// 5. Raw fragments.
// ---------------------------------------------------------------------------------------

on_shared_tables!(raw_fragments_cannot_widen_or_move);

async fn raw_fragments_cannot_widen_or_move(db: &TestDb) {
    let tenancy = db.tenancy::<i64>();
    tenancy_tests::customer_with_orders(&tenancy, 1, None, [(None, 10), (None, 20)]).await;
    tenancy_tests::customer_with_orders(&tenancy, 2, None, [(None, 30)]).await;
    let a = tenancy.tenant(1).await.unwrap();
    let fragment = |err: Error| assert!(matches!(err, Error::RawFragment { .. }), "{err:?}");

    fragment(
        a.find::<order::Entity>()
            .filter(Expr::cust("1=1) OR (1=1"))
            .all()
            .await
            .unwrap_err(),
    );
    fragment(
        a.find::<order::Entity>()
            .filter(Expr::col(order::Column::TotalCents).eq(Expr::cust("total_cents) OR (1=1")))
            .count()
            .await
            .unwrap_err(),
    );
    fragment(
        a.update_many::<order::Entity>()
            .col_expr(order::Column::TotalCents, Expr::cust("0, tenant_id = 2"))
            .exec()
            .await
            .unwrap_err(),
    );
    fragment(
        a.delete_many::<order::Entity>()
            .filter(Expr::cust("1=1) OR (1=1"))
            .exec()
            .await
            .unwrap_err(),
    );
    fragment(
        a.find::<order::Entity>()
            .select_only()
            .column_as(Expr::cust("(SELECT max(total_cents) FROM orders)"), "m")
            .into_tuple::<i64>()
            .all()
            .await
            .unwrap_err(),
    );
    fragment(
        a.find::<order::Entity>()
            .order_by_asc(Expr::cust("(SELECT 1) OR 1=1"))
            .all()
            .await
            .unwrap_err(),
    );
    // Nothing moved, nothing was deleted.
    let b = tenancy.tenant(2).await.unwrap();
    assert_eq!(b.find::<order::Entity>().count().await.unwrap(), 1);
    assert_eq!(a.find::<order::Entity>().count().await.unwrap(), 2);
    // The explicit escape hatch is named in the error.
    let err = a
        .find::<order::Entity>()
        .filter(Expr::cust("1=1"))
        .all()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("unscoped"), "{err}");
}

// ---------------------------------------------------------------------------------------
// 6. Typed subqueries.
// ---------------------------------------------------------------------------------------

on_every_strategy!(plain_subqueries_are_refused_and_scoped_ones_stay_in_tenant);

async fn plain_subqueries_are_refused_and_scoped_ones_stay_in_tenant(db: &TestDb) {
    let tenancy = db.tenancy::<i64>();
    tenancy.provisioned(1).await.unwrap();
    tenancy.provisioned(2).await.unwrap();
    tenancy_tests::customer_with_orders(&tenancy, 1, None, [(None, 10)]).await;
    tenancy_tests::customer_with_orders(&tenancy, 2, None, [(None, 30), (None, 40)]).await;
    let a = tenancy.tenant(1).await.unwrap();
    let b = tenancy.tenant(2).await.unwrap();

    // Plain sea-query subqueries are refused wherever a handle takes an expression.
    let plain = Query::select()
        .expr(Expr::col(order::Column::TotalCents).max())
        .from(order::Entity)
        .to_owned();
    let err = a
        .find::<customer::Entity>()
        .select_only()
        .column_as(
            Expr::SubQuery(
                None,
                Box::new(sea_orm::sea_query::SubQueryStatement::SelectStatement(
                    plain,
                )),
            ),
            "m",
        )
        .into_tuple::<i64>()
        .all()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::UnscopedSubquery), "{err:?}");
    let err = a
        .find::<customer::Entity>()
        .filter(
            customer::Column::Id.in_subquery(
                Query::select()
                    .column(order::Column::CustomerId)
                    .from(order::Entity)
                    .to_owned(),
            ),
        )
        .all()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::UnscopedSubquery), "{err:?}");

    // A scoped subquery of A's: only A's orders, whatever it asks.
    let biggest = a
        .find::<customer::Entity>()
        .select_only()
        .column_as_subquery(
            a.subquery::<order::Entity>()
                .select_only()
                .column_as(Expr::col(order::Column::TotalCents).max(), "m"),
            "biggest",
        )
        .into_tuple::<Option<i64>>()
        .all()
        .await
        .unwrap();
    assert_eq!(biggest, [Some(10)]);
    let with_orders = a
        .find::<customer::Entity>()
        .filter_exists(
            a.subquery::<order::Entity>()
                .filter(order::Column::TotalCents.gt(20)),
        )
        .count()
        .await
        .unwrap();
    assert_eq!(with_orders, 0, "an EXISTS over B's orders answered for A");
    let in_orders = a
        .find::<customer::Entity>()
        .filter_in_subquery(
            customer::Column::Id,
            a.subquery::<order::Entity>()
                .select_only()
                .column(order::Column::CustomerId),
        )
        .count()
        .await
        .unwrap();
    assert_eq!(in_orders, 1);
    // B's subquery in A's select is refused.
    let err = a
        .find::<customer::Entity>()
        .filter_exists(b.subquery::<order::Entity>())
        .all()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::TenantMismatch { .. }), "{err:?}");
}

// ---------------------------------------------------------------------------------------
// 7. A tenant without a schema.
// ---------------------------------------------------------------------------------------

on!(tenant_without_schema_is_unknown: (postgres_schema, Postgres, Schema));

/// `public` holds tables of the same names with other tenants' rows: tenant 3, which has
/// no schema, neither reads them nor writes into them.
async fn tenant_without_schema_is_unknown(db: &TestDb) {
    let tenancy = db.tenancy::<i64>();
    tenancy.provisioned(1).await.unwrap();
    raw(
        &db.conn,
        "CREATE TABLE public.orders (id bigserial PRIMARY KEY, tenant_id bigint NOT NULL, \
         customer_id bigint NOT NULL, total_cents bigint NOT NULL)",
    )
    .await;
    raw(
        &db.conn,
        "INSERT INTO public.orders (tenant_id, customer_id, total_cents) VALUES (3, 1, 1), (4, 1, 2)",
    )
    .await;
    // The set-up check notices the shadowing table first.
    let fresh = db.tenancy::<i64>();
    let err = fresh.tenant(3).await.unwrap_err();
    assert!(
        matches!(err, Error::Config(ref m) if m.contains("orders")),
        "{err:?}"
    );
    // A process already running (verified before the table appeared) fails closed.
    let three = tenancy.tenant(3).await.unwrap();
    let unknown = |err: Error| {
        assert!(
            matches!(&err, Error::UnknownTenant { tenant } if tenant == "3"),
            "{err:?}"
        );
    };
    unknown(three.find::<order::Entity>().all().await.unwrap_err());
    unknown(
        three
            .insert(order::ActiveModel {
                customer_id: Set(1),
                total_cents: Set(5),
                ..Default::default()
            })
            .await
            .unwrap_err(),
    );
    unknown(
        three
            .delete_many::<order::Entity>()
            .exec()
            .await
            .unwrap_err(),
    );
    let row = db
        .conn
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT count(*) AS n FROM public.orders",
        ))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.try_get::<i64>("", "n").unwrap(), 2);
}

// ---------------------------------------------------------------------------------------
// 8. Destructive provisioning.
// ---------------------------------------------------------------------------------------

on!(destructive_provisioning_is_refused: (postgres_schema, Postgres, Schema));

async fn destructive_provisioning_is_refused(db: &TestDb) {
    for prefix in ["", "pg_", "pg_toast_"] {
        let result = Tenancy::<String>::builder(db.conn.clone())
            .schema_per_tenant(prefix)
            .build();
        assert!(result.is_err(), "prefix {prefix:?} accepted");
    }
    let tenancy = db.tenancy::<String>();
    // With the prefix, tenant "public" names `tenant_public`, never `public`.
    tenancy
        .create_tenant_schema::<tenancy_tests::migration::Migrator>("public".to_owned())
        .await
        .unwrap();
    assert_eq!(
        tenancy
            .tenant_schema(&"public".to_owned())
            .unwrap()
            .as_str(),
        "tenant_public"
    );
    tenancy
        .drop_tenant_schema("public".to_owned())
        .await
        .unwrap();
    let row = db
        .conn
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT count(*) AS n FROM pg_namespace WHERE nspname = 'public'",
        ))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        row.try_get::<i64>("", "n").unwrap(),
        1,
        "public was dropped"
    );
}

on!(unregistered_databases_are_never_dropped:
    (sqlite_database, Sqlite, Database), (postgres_database, Postgres, Database),
    (mysql_database, MySql, Database));

/// A database that has a tenant's name but was never registered is not dropped.
async fn unregistered_databases_are_never_dropped(db: &TestDb) {
    let tenancy = db.tenancy::<i64>();
    tenancy.provisioned(1).await.unwrap();
    // Tenant 7's name, made by someone else.
    let prefix = match db.template.as_ref().unwrap() {
        DatabaseTemplate::SqliteDir { prefix, .. } | DatabaseTemplate::Server { prefix, .. } => {
            prefix.clone()
        }
    };
    let name = format!("{prefix}7");
    let exists = |name: String| async move {
        match db.template.as_ref().unwrap() {
            DatabaseTemplate::SqliteDir { dir, .. } => dir.join(format!("{name}.db")).exists(),
            DatabaseTemplate::Server { .. } => {
                let sql = if db.backend == Backend::Postgres {
                    format!("SELECT count(*) AS n FROM pg_database WHERE datname = '{name}'")
                } else {
                    format!(
                        "SELECT count(*) AS n FROM information_schema.schemata WHERE schema_name = '{name}'"
                    )
                };
                let row = db
                    .conn
                    .query_one_raw(Statement::from_string(db.conn.get_database_backend(), sql))
                    .await
                    .unwrap()
                    .unwrap();
                row.try_get::<i64>("", "n").unwrap() == 1
            }
        }
    };
    match db.template.as_ref().unwrap() {
        DatabaseTemplate::SqliteDir { dir, .. } => {
            std::fs::write(dir.join(format!("{name}.db")), b"").unwrap();
        }
        DatabaseTemplate::Server { .. } => raw(&db.conn, &format!("CREATE DATABASE {name}")).await,
    }
    let err = tenancy.drop_tenant_database(7).await.unwrap_err();
    assert!(
        matches!(&err, Error::UnknownTenant { tenant } if tenant == "7"),
        "{err:?}"
    );
    assert!(
        exists(name.clone()).await,
        "an unregistered database was dropped"
    );
    match db.template.as_ref().unwrap() {
        DatabaseTemplate::SqliteDir { dir, .. } => {
            std::fs::remove_file(dir.join(format!("{name}.db"))).unwrap();
        }
        DatabaseTemplate::Server { .. } => raw(&db.conn, &format!("DROP DATABASE {name}")).await,
    }
    // A registered tenant is dropped by its registered name.
    tenancy.drop_tenant_database(1).await.unwrap();
}

// ---------------------------------------------------------------------------------------
// 9. Raw SQL per strategy.
// ---------------------------------------------------------------------------------------

on_every_strategy!(raw_sql_is_refused_unless_confined);

/// Raw SQL through a handle runs only where the database confines it (a PostgreSQL
/// database of the tenant's own, reached as a role that cannot step past it); everywhere
/// else it is `RawSqlNotIsolated`, before anything is sent. The suite's tenant databases
/// are reached as the server's superuser, so here it is refused on every strategy.
async fn raw_sql_is_refused_unless_confined(db: &TestDb) {
    let tenancy = db.tenancy::<i64>();
    let a = tenancy.provisioned(1).await.unwrap();
    let probe = Statement::from_string(a.backend(), "SELECT 1 AS one");
    let read = a.query_all_raw(probe.clone()).await;
    let write = a.execute_raw(probe).await;
    for err in [read.unwrap_err(), write.unwrap_err()] {
        assert!(matches!(err, Error::RawSqlNotIsolated { .. }), "{err:?}");
        if db.backend == Backend::Postgres && db.flavor == Flavor::Database {
            assert!(err.to_string().contains("superuser"), "{err}");
        }
    }
}

on!(confined_raw_sql_leaves_no_session_state: (postgres_database, Postgres, Database));

/// Under a PostgreSQL database per tenant reached as a role with no rights past its
/// database, raw SQL runs; on a pool of one connection, session state a raw statement
/// changes (settings, `search_path`, temporary tables) does not reach the next borrower
/// of the connection.
async fn confined_raw_sql_leaves_no_session_state(db: &TestDb) {
    let role = db.create_dba_role().await;
    let tenancy = Tenancy::<i64>::builder(db.conn.clone())
        .database_per_tenant(TenantDatabases::new(db.conn.clone()))
        .database_template(db.template_as(&role))
        .connections_per_tenant(1)
        .build()
        .unwrap();
    tenancy
        .create_tenant_database::<tenancy_tests::migration::DatabaseMigrator>(1)
        .await
        .unwrap();
    let a = tenancy.tenant(1).await.unwrap();
    let run = |sql: &'static str| {
        let a = a.clone();
        async move {
            a.execute_raw(Statement::from_string(DbBackend::Postgres, sql))
                .await
                .unwrap();
        }
    };
    run("SET search_path TO pg_catalog").await;
    run("SELECT set_config('tenancy.leak', 'yes', false)").await;
    run("SET application_name = 'leaked'").await;
    run("CREATE TEMP TABLE leak (x int)").await;
    let rows = a
        .query_all_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT current_setting('search_path') AS path, \
             coalesce(current_setting('tenancy.leak', true), '') AS leak, \
             current_setting('application_name') AS app, \
             (SELECT count(*) FROM pg_class WHERE relname = 'leak' AND relpersistence = 't') AS temp",
        ))
        .await
        .unwrap();
    let row = &rows[0];
    assert_eq!(
        row.try_get::<String>("", "path").unwrap(),
        "\"$user\", public"
    );
    assert_eq!(row.try_get::<String>("", "leak").unwrap(), "");
    assert_ne!(row.try_get::<String>("", "app").unwrap(), "leaked");
    assert_eq!(row.try_get::<i64>("", "temp").unwrap(), 0);
    // The ORM still works on the same connection after a failed raw statement.
    assert!(
        a.execute_raw(Statement::from_string(DbBackend::Postgres, "SELECT 1/0"))
            .await
            .is_err()
    );
    assert_eq!(a.find::<order::Entity>().all().await.unwrap(), []);
    // A right granted later that reaches past the database stops raw SQL at once.
    db.conn
        .execute_unprepared(&format!("GRANT pg_read_server_files TO {role}"))
        .await
        .unwrap();
    let err = a
        .query_all_raw(Statement::from_string(DbBackend::Postgres, "SELECT 1"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::RawSqlNotIsolated { .. }), "{err:?}");
    drop(a);
    tenancy.drop_tenant_database(1).await.unwrap();
}

// ---------------------------------------------------------------------------------------
// 10. RLS coverage.
// ---------------------------------------------------------------------------------------

on!(rls_coverage_is_checked: (postgres_rls, Postgres, Rls));

async fn rls_coverage_is_checked(db: &TestDb) {
    db.tenancy::<i64>().tenant(1).await.unwrap();
    for (sql, undo) in [
        (
            "ALTER TABLE tags DISABLE ROW LEVEL SECURITY",
            "ALTER TABLE tags ENABLE ROW LEVEL SECURITY",
        ),
        (
            "ALTER TABLE tags NO FORCE ROW LEVEL SECURITY",
            "ALTER TABLE tags FORCE ROW LEVEL SECURITY",
        ),
    ] {
        raw(&db.conn, sql).await;
        let err = db.tenancy::<i64>().tenant(1).await.unwrap_err();
        assert!(
            matches!(&err, Error::RlsNotEnforced { tables, .. } if tables.iter().any(|t| t == "tags")),
            "{sql}: {err:?}"
        );
        assert!(err.to_string().contains("tags"), "{err}");
        raw(&db.conn, undo).await;
    }
    // Another permissive policy is ORed with the library's and widens it.
    raw(&db.conn, "CREATE POLICY reporting ON tags USING (true)").await;
    let err = db.tenancy::<i64>().tenant(1).await.unwrap_err();
    assert!(
        matches!(&err, Error::RlsNotEnforced { tables, .. } if tables.iter().any(|t| t == "tags")),
        "{err:?}"
    );
    raw(&db.conn, "DROP POLICY reporting ON tags").await;
    // A restrictive one narrows it, and is fine.
    raw(
        &db.conn,
        "CREATE POLICY reporting ON tags AS RESTRICTIVE USING (true)",
    )
    .await;
    db.tenancy::<i64>().tenant(1).await.unwrap();
    // A role that bypasses the policies is refused too.
    let err = Tenancy::<i64>::builder(db.conn.clone())
        .row_level_security(RLS_SETTING)
        .build()
        .unwrap()
        .tenant(1)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::RlsNotEnforced { .. }), "{err:?}");
    db.tenancy::<i64>().tenant(1).await.unwrap();
}

// ---------------------------------------------------------------------------------------
// 12. Every accessor that hands out an unscoped connection says `unscoped`.
// ---------------------------------------------------------------------------------------

#[test]
fn unscoped_accessors_say_unscoped() {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tenancy-sea/src");
    let mut offenders = Vec::new();
    let mut checked = 0;
    let mut stack = vec![src];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            // Public functions, their signature up to the body.
            for (at, _) in text
                .match_indices("pub fn ")
                .chain(text.match_indices("pub async fn "))
            {
                let signature = &text[at..at + text[at..].find('{').unwrap_or(0)];
                let Some((_, returns)) = signature.split_once("->") else {
                    continue;
                };
                if !(returns.contains("DatabaseConnection") || returns.contains("AcrossShards")) {
                    continue;
                }
                checked += 1;
                let name = signature
                    .trim_start_matches("pub async fn ")
                    .trim_start_matches("pub fn ")
                    .split(['(', '<'])
                    .next()
                    .unwrap();
                // A tenant's scope-keeping fan-out is the one exception: its selects carry
                // the tenant condition.
                if !name.contains("unscoped") && name != "across_shards" {
                    offenders.push(format!("{}: {name}", path.display()));
                }
            }
        }
    }
    assert!(checked >= 4, "the scan found only {checked} accessors");
    assert!(
        offenders.is_empty(),
        "accessors without `unscoped`: {offenders:?}"
    );
}

// ---------------------------------------------------------------------------------------
// 13. What a SeaORM hook sees under each strategy.
// ---------------------------------------------------------------------------------------

/// The `tags` table again, with a `before_save` hook that counts the rows it can see
/// through the connection SeaORM hands it.
mod hooked {
    use sea_orm::entity::prelude::*;
    use std::sync::Mutex;
    use tenancy_sea::prelude::*;

    pub static SEEN: Mutex<Vec<u64>> = Mutex::new(Vec::new());

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, TenantScoped)]
    #[sea_orm(table_name = "tags")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        #[tenant_id]
        pub tenant_id: i64,
        pub label: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    #[async_trait::async_trait]
    impl ActiveModelBehavior for ActiveModel {
        async fn before_save<C>(self, db: &C, _insert: bool) -> Result<Self, DbErr>
        where
            C: ConnectionTrait,
        {
            let n = Entity::find().count(db).await?;
            SEEN.lock().unwrap().push(n);
            Ok(self)
        }
    }
}

on_every_strategy!(hooks_see_per_strategy);

/// Row level: the hook's connection is unscoped, so an unfiltered query in a hook counts
/// every tenant's rows (the documented limit; filter by the model's own tenant column).
/// Every other isolation: the database confines the hook to the tenant.
async fn hooks_see_per_strategy(db: &TestDb) {
    // The hook records into one static: the cases of this test (one per backend and
    // flavor, run in parallel) take turns, or one would read another's record.
    static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _turn = TURN.lock().await;
    let tenancy = db.tenancy::<i64>();
    let a = tenancy.provisioned(1).await.unwrap();
    let b = tenancy.provisioned(2).await.unwrap();
    for label in ["b1", "b2"] {
        b.insert(tag::ActiveModel {
            label: Set(label.into()),
            ..Default::default()
        })
        .await
        .unwrap();
    }
    a.insert(tag::ActiveModel {
        label: Set("a1".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    hooked::SEEN.lock().unwrap().clear();
    a.insert(hooked::ActiveModel {
        label: Set("a2".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    let seen = hooked::SEEN.lock().unwrap().clone();
    // Tenants 1 and 2 share a shard in the sharded flavors.
    let expected = if db.flavor.per_database() == Flavor::RowLevel {
        3
    } else {
        1
    };
    assert_eq!(seen, [expected], "{:?}", db.flavor);
}

// ---------------------------------------------------------------------------------------
// 14. Passwords in errors and logs.
// ---------------------------------------------------------------------------------------

const PASSWORD: &str = "s3cr3t-Pa55";

/// Every event's fields, as text.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<String>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Captured {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        struct Text<'a>(&'a mut String);
        impl tracing::field::Visit for Text<'_> {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                self.0.push_str(&format!("{}={value:?} ", field.name()));
            }
        }
        event.record(&mut Text(&mut self.0.lock().unwrap()));
        self.0.lock().unwrap().push('\n');
    }
}

fn no_password(what: &str, text: &str) {
    assert!(
        !text.contains(PASSWORD),
        "{what} shows the password: {text}"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn passwords_never_appear_in_errors_or_logs() {
    use tracing_subscriber::layer::SubscriberExt;
    let captured = Captured::default();
    let _guard =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(captured.clone()));

    // A real server that refuses the role at once (an unreachable port would have the
    // driver retry until its timeout).
    let Some(server) = Backend::Postgres.server_url() else {
        return;
    };
    let mut url = url::Url::parse(&server).unwrap();
    url.set_username("tenancy_no_such_role").unwrap();
    url.set_password(Some(PASSWORD)).unwrap();
    let unreachable = url.to_string();
    let template = DatabaseTemplate::Server {
        server_url: unreachable.clone(),
        prefix: "t_".into(),
    };
    no_password("DatabaseTemplate's Debug", &format!("{template:?}"));

    // Provisioning against an unreachable server.
    let catalog = Database::connect("sqlite::memory:").await.unwrap();
    let registry = TenantDatabases::new(catalog.clone());
    registry.install().await.unwrap();
    let tenancy = Tenancy::<i64>::builder(catalog.clone())
        .database_per_tenant(registry.clone())
        .database_template(template)
        .build()
        .unwrap();
    let err = tenancy
        .create_tenant_database::<tenancy_tests::migration::DatabaseMigrator>(1)
        .await
        .unwrap_err();
    no_password("a provisioning error", &format!("{err} {err:?}"));
    // A registered tenant whose database is unreachable.
    TenantRegistry::<i64>::register(&registry, &2, &unreachable)
        .await
        .unwrap();
    let err = tenancy.tenant(2).await.unwrap_err();
    no_password("a tenant's connect error", &format!("{err} {err:?}"));
    // A URL that cannot be parsed keeps its secret too.
    TenantRegistry::<i64>::register(&registry, &3, &format!("postgres://app:{PASSWORD}@[bad/x"))
        .await
        .unwrap();
    let err = tenancy.tenant(3).await.unwrap_err();
    no_password("a malformed URL's error", &format!("{err} {err:?}"));
    let rows = tenancy_sea::catalog::Entity::find()
        .all(&catalog)
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    no_password("the catalog's rows' Debug", &format!("{rows:?}"));

    // A shard registered in the catalog that cannot be reached: the registry's records,
    // the reason the topology keeps, the error its tenants get, a refresh's report and
    // the log lines of the start and of the catalog watcher.
    let shards = Shards::new(catalog.clone());
    shards.install().await.unwrap();
    shards
        .register(&ShardId::from("s9"), &unreachable, ShardState::Active)
        .await
        .unwrap();
    let records = shards.list().await.unwrap();
    no_password("ShardRecord's Debug", &format!("{records:?}"));
    let router = Arc::new(DirectoryRouter::<i64>::new(shards.names().await.unwrap()));
    let topology = shards.topology(router.clone(), 1).await.unwrap();
    let reasons = topology.unavailable_shards();
    assert_eq!(reasons.len(), 1);
    no_password("an unavailable shard's reason", &format!("{reasons:?}"));
    let directory = Directory::new(catalog.clone(), router);
    directory.install().await.unwrap();
    let sharded = Tenancy::<i64>::builder(catalog.clone())
        .sharded(topology)
        .directory(directory)
        .build()
        .unwrap();
    sharded.directory().unwrap().assign(&5, "s9").await.unwrap();
    let err = sharded.tenant(5).await.unwrap_err();
    assert!(matches!(err, Error::ShardUnavailable { .. }), "{err:?}");
    no_password("ShardUnavailable", &format!("{err} {err:?}"));
    let refresh = sharded.refresh_catalog().await.unwrap();
    assert_eq!(refresh.unavailable, [ShardId::from("s9")]);
    let watch = sharded
        .clone()
        .watch_catalog(std::time::Duration::from_millis(10));
    let _ = tokio::time::timeout(std::time::Duration::from_millis(500), watch).await;
    let log = captured.0.lock().unwrap().clone();
    assert!(
        log.contains("shard unreachable at start"),
        "no warning logged: {log}"
    );
    no_password("the tracing output", &log);
}
