//! The plan of a distribution, pure: given how the coordinator keeps the entities'
//! tables ([`TableState`]), the statements that make them what Citus needs, in the order
//! that works, or every reason it cannot be done.

use super::TableKind;
use super::distribute::DistributionStep;
use crate::entity::Described;
use crate::error::{Error, Result};

/// A table of a registered entity as the coordinator keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TableState {
    /// Its name as PostgreSQL writes a `regclass` (schema-qualified unless on the search
    /// path, quoted where needed): usable in SQL text as it is.
    pub qualified: String,
    /// Its schema.
    pub schema: String,
    /// Its name in its schema.
    pub name: String,
    /// How Citus keeps it.
    pub citus: TableKind,
    /// The type of its entity's tenant column (`bigint`, `text`, ..), if it has one:
    /// Citus co-locates tables whose distribution columns have the same type.
    pub tenant_type: Option<String>,
    /// Its unique indexes (the primary key included): name and columns.
    pub unique: Vec<(String, Vec<String>)>,
    /// The foreign keys it holds or is referenced by.
    pub foreign_keys: Vec<ForeignKey>,
}

impl TableState {
    pub(crate) fn matches(&self, described: &Described) -> bool {
        self.name == described.table
            && described
                .schema
                .as_ref()
                .is_none_or(|schema| *schema == self.schema)
    }
}

/// A foreign key between two tables.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ForeignKey {
    /// The constraint's name.
    pub name: String,
    /// The referencing table (as a `regclass` is written).
    pub table: String,
    /// Its columns, in order.
    pub columns: Vec<String>,
    /// The referenced table.
    pub references: String,
    /// The referenced columns, in order.
    pub referenced: Vec<String>,
    /// The constraint as PostgreSQL writes it back (`pg_get_constraintdef`).
    pub definition: String,
}

/// The steps that distribute `entities`' tables, given how the coordinator keeps them
/// (`tables`); see [`distribute`](super::distribute). Pure: the same state gives the same steps.
pub(crate) fn plan(entities: &[Described], tables: &[TableState]) -> Result<Vec<DistributionStep>> {
    let mut problems = Vec::new();
    // Each changing table, with what it becomes (its tenant column, or `None` for a
    // reference table).
    let mut changing: Vec<(&TableState, Option<&str>)> = Vec::new();
    // The table each tenant column type's tables are co-located with.
    let mut anchors: Vec<(Option<&str>, &str)> = Vec::new();
    for described in entities {
        let Some(table) = tables.iter().find(|t| t.matches(described)) else {
            continue;
        };
        match (&described.tenant_column, &table.citus) {
            (Some(column), TableKind::Distributed { column: by }) if by == column => {
                let kind = table.tenant_type.as_deref();
                if !anchors.iter().any(|(k, _)| *k == kind) {
                    anchors.push((kind, table.qualified.as_str()));
                }
            }
            (None, TableKind::Reference) => {}
            (Some(column), TableKind::Local) => {
                for (name, columns) in &table.unique {
                    if !columns.contains(column) {
                        problems.push(format!(
                            "{}: unique key {name} ({}) lacks the tenant column {column}, so \
                             no node could keep it unique; make it ({column}, ..)",
                            table.qualified,
                            columns.join(", ")
                        ));
                    }
                }
                changing.push((table, Some(column.as_str())));
            }
            (None, TableKind::Local) => changing.push((table, None)),
            (_, kind) => problems.push(format!(
                "{} is already {}, not what its entity needs",
                table.qualified,
                kind.describe()
            )),
        }
    }
    // What each registered table is once distributed.
    let after = |qualified: &str| -> Option<Option<String>> {
        entities.iter().find_map(|described| {
            let table = tables
                .iter()
                .find(|t| t.matches(described) && t.qualified == qualified)?;
            Some(match &table.citus {
                TableKind::Reference => None,
                TableKind::Distributed { column } => Some(column.clone()),
                _ => described.tenant_column.clone(),
            })
        })
    };
    let mut keys: Vec<&ForeignKey> = Vec::new();
    for (table, _) in &changing {
        for key in &table.foreign_keys {
            if !keys
                .iter()
                .any(|k| k.name == key.name && k.table == key.table)
            {
                keys.push(key);
            }
        }
    }
    for key in &keys {
        match (after(&key.table), after(&key.references)) {
            (Some(Some(from)), Some(Some(to))) => {
                let paired = key
                    .columns
                    .iter()
                    .zip(&key.referenced)
                    .any(|(column, referenced)| *column == from && *referenced == to);
                if !paired {
                    problems.push(format!(
                        "{}: foreign key {} ({}) to {} does not pair the tenant columns \
                         ({from} with {to}); make it ({from}, ..) references {} ({to}, ..)",
                        key.table,
                        key.name,
                        key.columns.join(", "),
                        key.references,
                        key.references
                    ));
                }
            }
            (Some(_), Some(Some(_))) => problems.push(format!(
                "{}: foreign key {} from a global table to the tenant-scoped {}: a \
                 reference table cannot point into one node's rows",
                key.table, key.name, key.references
            )),
            (Some(_), Some(None)) => {}
            _ => problems.push(format!(
                "{}: foreign key {} to or from {}, which no entity of this program names",
                key.table,
                key.name,
                if after(&key.table).is_none() {
                    &key.table
                } else {
                    &key.references
                }
            )),
        }
    }
    if !problems.is_empty() {
        return Err(Error::Config(format!(
            "cannot distribute the tables for Citus: {}",
            problems.join("; ")
        )));
    }
    let mut steps: Vec<DistributionStep> = keys
        .iter()
        .map(|key| DistributionStep::DropForeignKey {
            table: key.table.clone(),
            name: key.name.clone(),
        })
        .collect();
    for (table, column) in &changing {
        if column.is_none() {
            steps.push(DistributionStep::Reference {
                table: table.qualified.clone(),
            });
        }
    }
    for (table, column) in &changing {
        if let Some(column) = column {
            let kind = table.tenant_type.as_deref();
            let anchor = anchors.iter().find(|(k, _)| *k == kind).map(|(_, a)| *a);
            steps.push(DistributionStep::Distribute {
                table: table.qualified.clone(),
                column: (*column).to_owned(),
                colocate_with: anchor.map(str::to_owned),
            });
            if anchor.is_none() {
                anchors.push((kind, table.qualified.as_str()));
            }
        }
    }
    steps.extend(keys.iter().map(|key| DistributionStep::AddForeignKey {
        table: key.table.clone(),
        name: key.name.clone(),
        definition: key.definition.clone(),
    }));
    Ok(steps)
}

#[cfg(test)]
mod tests {
    use super::super::distribute::quote_ident;
    use super::*;
    use sea_orm::Value;

    fn scoped(table: &str) -> Described {
        Described {
            schema: None,
            table: table.to_owned(),
            tenant_column: Some("tenant_id".to_owned()),
        }
    }

    fn global(table: &str) -> Described {
        Described {
            schema: None,
            table: table.to_owned(),
            tenant_column: None,
        }
    }

    fn local(name: &str, unique: &[(&str, &[&str])], keys: Vec<ForeignKey>) -> TableState {
        TableState {
            qualified: name.to_owned(),
            schema: "public".to_owned(),
            name: name.to_owned(),
            citus: TableKind::Local,
            tenant_type: Some("bigint".to_owned()),
            unique: unique
                .iter()
                .map(|(n, c)| ((*n).to_owned(), c.iter().map(|c| (*c).to_owned()).collect()))
                .collect(),
            foreign_keys: keys,
        }
    }

    fn key(name: &str, table: &str, columns: &[&str], to: &str, referenced: &[&str]) -> ForeignKey {
        ForeignKey {
            name: name.to_owned(),
            table: table.to_owned(),
            columns: columns.iter().map(|c| (*c).to_owned()).collect(),
            references: to.to_owned(),
            referenced: referenced.iter().map(|c| (*c).to_owned()).collect(),
            definition: format!(
                "FOREIGN KEY ({}) REFERENCES {to}({})",
                columns.join(", "),
                referenced.join(", ")
            ),
        }
    }

    /// The order that works: keys dropped, reference tables, distributed tables
    /// co-located with the first, keys back.
    #[test]
    fn plans_keys_references_distribution_keys() {
        let orders_customer = key(
            "orders_customer",
            "orders",
            &["tenant_id", "customer_id"],
            "customers",
            &["tenant_id", "id"],
        );
        let orders_plan = key("orders_plan", "orders", &["plan_id"], "plans", &["id"]);
        let tables = [
            local(
                "customers",
                &[("customers_pkey", &["tenant_id", "id"])],
                vec![orders_customer.clone()],
            ),
            local(
                "orders",
                &[("orders_pkey", &["tenant_id", "id"])],
                vec![orders_customer.clone(), orders_plan.clone()],
            ),
            local(
                "plans",
                &[("plans_pkey", &["id"])],
                vec![orders_plan.clone()],
            ),
        ];
        let entities = [scoped("customers"), scoped("orders"), global("plans")];
        let steps = plan(&entities, &tables).unwrap();
        let sql: Vec<String> = steps.iter().map(|s| s.statement().sql).collect();
        assert_eq!(
            sql,
            [
                "ALTER TABLE orders DROP CONSTRAINT \"orders_customer\"",
                "ALTER TABLE orders DROP CONSTRAINT \"orders_plan\"",
                "SELECT create_reference_table($1::regclass)",
                "SELECT create_distributed_table($1::regclass, $2, colocate_with => $3)",
                "SELECT create_distributed_table($1::regclass, $2, colocate_with => $3)",
                "ALTER TABLE orders ADD CONSTRAINT \"orders_customer\" FOREIGN KEY (tenant_id, \
                 customer_id) REFERENCES customers(tenant_id, id)",
                "ALTER TABLE orders ADD CONSTRAINT \"orders_plan\" FOREIGN KEY (plan_id) \
                 REFERENCES plans(id)",
            ]
        );
        assert_eq!(
            steps[3..5],
            [
                DistributionStep::Distribute {
                    table: "customers".to_owned(),
                    column: "tenant_id".to_owned(),
                    colocate_with: None,
                },
                DistributionStep::Distribute {
                    table: "orders".to_owned(),
                    column: "tenant_id".to_owned(),
                    colocate_with: Some("customers".to_owned()),
                },
            ]
        );
        assert_eq!(
            steps[2].statement().values.unwrap().0,
            [Value::from("plans")]
        );
        assert_eq!(
            steps[4].statement().values.unwrap().0,
            [
                Value::from("orders"),
                Value::from("tenant_id"),
                Value::from("customers")
            ]
        );
    }

    /// Distributed already: nothing to do, and new tables join the existing group.
    #[test]
    fn a_second_plan_is_empty_and_new_tables_join_the_group() {
        let mut customers = local(
            "customers",
            &[("customers_pkey", &["tenant_id", "id"])],
            vec![],
        );
        customers.citus = TableKind::Distributed {
            column: "tenant_id".to_owned(),
        };
        let mut plans = local("plans", &[("plans_pkey", &["id"])], vec![]);
        plans.citus = TableKind::Reference;
        let entities = [scoped("customers"), global("plans")];
        assert_eq!(plan(&entities, &[customers.clone(), plans]).unwrap(), []);

        let notes = local("notes", &[("notes_pkey", &["id", "tenant_id"])], vec![]);
        let steps = plan(&[scoped("customers"), scoped("notes")], &[customers, notes]).unwrap();
        assert_eq!(
            steps,
            [DistributionStep::Distribute {
                table: "notes".to_owned(),
                column: "tenant_id".to_owned(),
                colocate_with: Some("customers".to_owned()),
            }]
        );
    }

    /// Citus co-locates tables whose tenant columns have one type: each type gets its
    /// own group, anchored on its first table.
    #[test]
    fn each_tenant_column_type_is_its_own_group() {
        let mut notes = local("notes", &[("notes_pkey", &["tenant_id", "id"])], vec![]);
        notes.tenant_type = Some("text".to_owned());
        let mut memos = local("memos", &[("memos_pkey", &["tenant_id", "id"])], vec![]);
        memos.tenant_type = Some("text".to_owned());
        let orders = local("orders", &[("orders_pkey", &["tenant_id", "id"])], vec![]);
        let entities = [scoped("notes"), scoped("orders"), scoped("memos")];
        let colocated: Vec<(String, Option<String>)> = plan(&entities, &[notes, orders, memos])
            .unwrap()
            .into_iter()
            .map(|step| match step {
                DistributionStep::Distribute {
                    table,
                    colocate_with,
                    ..
                } => (table, colocate_with),
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(
            colocated,
            [
                ("notes".to_owned(), None),
                ("orders".to_owned(), None),
                ("memos".to_owned(), Some("notes".to_owned())),
            ]
        );
    }

    /// Everything that cannot work is found first and reported together; nothing runs.
    #[test]
    fn problems_are_reported_together_before_anything_runs() {
        let unpaired = key(
            "orders_customer",
            "orders",
            &["customer_id"],
            "customers",
            &["id"],
        );
        let inward = key("plans_owner", "plans", &["owner_id"], "customers", &["id"]);
        let outward = key("orders_audit", "orders", &["audit_id"], "audit", &["id"]);
        let tables = [
            local(
                "customers",
                &[
                    ("customers_pkey", &["id"]),
                    ("customers_email", &["tenant_id", "email"]),
                ],
                vec![unpaired.clone(), inward.clone()],
            ),
            local(
                "orders",
                &[("orders_pkey", &["tenant_id", "id"])],
                vec![unpaired, outward],
            ),
            local("plans", &[("plans_pkey", &["id"])], vec![inward]),
        ];
        let entities = [scoped("customers"), scoped("orders"), global("plans")];
        let Err(Error::Config(message)) = plan(&entities, &tables) else {
            panic!("expected a Config error");
        };
        for expected in [
            "unique key customers_pkey (id) lacks the tenant column tenant_id",
            "foreign key orders_customer (customer_id) to customers does not pair",
            "foreign key plans_owner from a global table",
            "foreign key orders_audit to or from audit",
        ] {
            assert!(message.contains(expected), "{expected:?} in {message}");
        }
        assert!(!message.contains("customers_email"), "{message}");
    }

    /// A table Citus keeps another way is not changed behind the application's back.
    #[test]
    fn a_table_distributed_otherwise_is_refused() {
        let mut orders = local("orders", &[("orders_pkey", &["tenant_id", "id"])], vec![]);
        orders.citus = TableKind::Distributed {
            column: "id".to_owned(),
        };
        let Err(Error::Config(message)) = plan(&[scoped("orders")], &[orders]) else {
            panic!("expected a Config error");
        };
        assert!(
            message.contains("orders is already distributed by id"),
            "{message}"
        );
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        let step = DistributionStep::DropForeignKey {
            table: "\"Odd\"".to_owned(),
            name: "k\"; DROP TABLE x; --".to_owned(),
        };
        assert_eq!(
            step.statement().sql,
            "ALTER TABLE \"Odd\" DROP CONSTRAINT \"k\"\"; DROP TABLE x; --\""
        );
    }
}
