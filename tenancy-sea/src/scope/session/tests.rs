//! The set-ups' texts, pinned.

use super::*;

fn sql(session: &Session) -> Vec<String> {
    session.statements.iter().map(|s| s.sql.clone()).collect()
}

/// A tenant schema's set-up: one statement on PostgreSQL, which also says whether the
/// shape's marker is there; on Citus the shape's read apart, after the setting, so the
/// setting runs on the coordinator.
#[test]
fn a_schema_set_up_reads_its_shape_apart_on_citus() {
    let schema = Identifier::new("tenant_7").unwrap();
    let table = Identifier::new("seaql_migrations").unwrap();
    let read = "SELECT hashtext(coalesce(max(version), '')) AS shape FROM \"tenant_7\".\
                \"seaql_migrations\"";
    let together = Session::schema(&schema, "7".to_owned(), Some(&table), false, None);
    assert_eq!(
        sql(&together),
        [format!(
            "SELECT set_config('search_path', $1, true), $2::regnamespace, m.shape, \
             to_regclass(format('%I.%I', $2::text, 'tenancy_shape_' || \
             lpad(to_hex(m.shape), 8, '0'))) IS NOT NULL AS marked FROM ({read}) AS m"
        )]
    );
    let apart = Session::schema(&schema, "7".to_owned(), Some(&table), true, None);
    assert_eq!(
        sql(&apart),
        [
            "SELECT set_config('search_path', $1, true), $2::regnamespace".to_owned(),
            format!("SELECT ({read}) AS shape"),
        ]
    );
    assert!(apart.shaped && !apart.simple);
    assert_eq!(
        apart.statements[0].values.as_ref().unwrap().0,
        [Value::from("\"tenant_7\", public"), Value::from("tenant_7")]
    );
}

/// A simple set-up goes unprepared, as one text.
#[test]
fn a_simple_set_up_is_one_unprepared_text() {
    let session = Session::simple(DbBackend::Postgres, "SET LOCAL a.b = E'1'".to_owned());
    assert!(session.simple && !session.shaped);
    assert_eq!(sql(&session), ["SET LOCAL a.b = E'1'"]);
    assert!(session.statements[0].values.is_none());
}

/// A row-level security set-up travels with `BEGIN`, its values written as escaped
/// literals: a hostile id stays one string constant.
#[test]
fn a_setting_travels_with_begin_as_literals() {
    let session = Session::set_config(
        DbBackend::Postgres,
        &[(
            "tenancy.tenant_id",
            r"x', true); DROP TABLE t; --\".to_owned(),
        )],
    );
    assert_eq!(
        session.begin_text().unwrap().0,
        r#"BEGIN; SET LOCAL "tenancy"."tenant_id" = E'x'', true); DROP TABLE t; --\\'"#
    );
    // Not on another backend; not for a value PostgreSQL cannot hold.
    let mysql = Session::set_config(DbBackend::MySql, &[("a.b", "1".to_owned())]);
    assert!(mysql.begin_text().is_none());
    let nul = Session::set_config(DbBackend::Postgres, &[("a.b", "1\0".to_owned())]);
    assert!(nul.begin_text().is_none());
    // Citus' `SET LOCAL` set-up never does.
    let citus = Session::simple(DbBackend::Postgres, "SET LOCAL a.b = E'1'".to_owned());
    assert!(citus.begin_text().is_none());
    // Nor for a list setting.
    let path = Session::set_config(DbBackend::Postgres, &[("search_path", "a, b".to_owned())]);
    assert!(path.begin_text().is_none());
}

/// A tenant schema's set-up travels with `BEGIN` when no shape is read, never on
/// Citus; with a shape, once a shape has been read from a schema holding its marker,
/// as a lock of the guessed shape's marker, and the unit's tag is that shape's.
#[test]
fn a_schema_set_up_travels_with_begin_as_a_guess_of_its_shape() {
    let schema = Identifier::new("tenant_7").unwrap();
    let table = Identifier::new("seaql_migrations").unwrap();
    let plain = Session::schema(&schema, "7".to_owned(), None, false, None);
    assert_eq!(
        plain.begin_text().unwrap(),
        (
            Cow::Borrowed(
                "BEGIN; SET LOCAL search_path = \"tenant_7\", public; \
                 SELECT E'tenant_7'::regnamespace"
            ),
            Tag::default()
        )
    );
    assert!(
        Session::schema(&schema, "7".to_owned(), None, true, None)
            .begin_text()
            .is_none()
    );
    let shapes = Arc::new(Shapes::default());
    let shaped = Session::schema(&schema, "7".to_owned(), Some(&table), false, Some(&shapes));
    assert!(shaped.begin_text().is_none(), "no shape read yet");
    shapes.read("tenant_7", -2, true);
    assert_eq!(
        shaped.begin_text().unwrap(),
        (
            Cow::Owned(
                "BEGIN; SET LOCAL search_path = \"tenant_7\", public; \
                 LOCK TABLE \"tenant_7\".\"tenancy_shape_fffffffe\" IN ACCESS SHARE MODE"
                    .to_owned()
            ),
            Tag::shape(-2)
        )
    );
    // Never on Citus, whose set-up reads the shape apart.
    let citus = Session::schema(&schema, "7".to_owned(), Some(&table), true, Some(&shapes));
    assert!(citus.begin_text().is_none());
    // A schema without its marker guesses nothing.
    shapes.read("tenant_7", -2, false);
    assert!(shaped.begin_text().is_none());
}
