//! How tenants are kept apart inside a database: the [`Isolation`] choice, which
//! combinations of isolation, placement and backend can work, whether raw SQL is confined
//! to the tenant under them, the row-level security policies (`rls`), the checks run
//! before the first handle (`verify`), and referential integrity per tenant (`integrity`).

pub mod integrity;
pub mod rls;
pub(crate) mod verify;

use crate::error::{Error, Result};
use crate::placement::Placement;
use crate::scope::RawSql;
use sea_orm::DbBackend;
use tenancy_core::Identifier;

/// How tenants are kept apart inside a database: the first of the two choices a
/// [`TenancyBuilder`] makes (the other is [`Placement`]). The entities and the calls on the
/// handles are the same under every isolation.
///
/// [`TenancyBuilder`]: crate::TenancyBuilder
/// [`Placement`]: crate::Placement
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Isolation {
    /// Shared tables with a tenant column, filtered and stamped by the framework.
    RowLevel,
    /// As [`RowLevel`](Isolation::RowLevel), and enforced by PostgreSQL row-level security
    /// on the named setting, set per transaction with `set_config(name, $1, true)`.
    RowLevelSecurity {
        /// The setting the policies read, e.g. `tenancy.tenant_id`.
        setting: String,
    },
    /// One PostgreSQL schema per tenant, named `prefix` + the tenant id; each transaction
    /// sets `search_path` to it (then `public`, for global tables) with `set_config`.
    /// MariaDB and MySQL have no schemas inside a database: their stand-in is
    /// [`Placement::DatabasePerTenant`](crate::Placement::DatabasePerTenant) with a
    /// [`DatabaseTemplate::Server`](crate::DatabaseTemplate::Server).
    SchemaPerTenant {
        /// The schema name prefix, e.g. `tenant_`.
        prefix: String,
    },
}

impl Isolation {
    /// The name used in messages and spans.
    pub fn name(&self) -> &'static str {
        match self {
            Isolation::RowLevel => "row level",
            Isolation::RowLevelSecurity { .. } => "row-level security",
            Isolation::SchemaPerTenant { .. } => "schema per tenant",
        }
    }
}

/// Whether raw SQL through a tenant handle is confined to the tenant under `isolation` and
/// `placement` on `backend`, or why not (see [`TenantDb::query_all_raw`]).
///
/// [`TenantDb::query_all_raw`]: crate::TenantDb::query_all_raw
pub(crate) fn raw_sql(isolation: &Isolation, placement: Placement, backend: DbBackend) -> RawSql {
    RawSql::Refused(match (isolation, placement, backend) {
        (_, Placement::DatabasePerTenant, DbBackend::Postgres) => return RawSql::Confined,
        (Isolation::RowLevelSecurity { .. }, _, _) => {
            "under row-level security a raw statement can change the setting the policies \
             read (`set_config`) and read another tenant's rows"
        }
        (Isolation::SchemaPerTenant { .. }, _, _) => {
            "under schema per tenant a raw statement can name another tenant's schema or \
             change `search_path`"
        }
        (_, Placement::DatabasePerTenant, DbBackend::MySql) => {
            "under a MySQL/MariaDB database per tenant a raw statement can name another \
             tenant's database or switch to it with `USE`"
        }
        (_, Placement::DatabasePerTenant, _) => {
            "under a SQLite database per tenant a raw statement can `ATTACH` another \
             tenant's file"
        }
        (_, Placement::Sharded, _) => "on a shard a raw statement has no tenant filter",
        (_, Placement::Citus, _) => {
            "on a Citus cluster a raw statement has no tenant filter and may run on every node"
        }
        (_, Placement::Shared, _) => "under row level a raw statement has no tenant filter",
    })
}

/// Checks that `isolation` can be kept on a database of `backend` under `placement`.
pub(crate) fn check_combination(
    isolation: &Isolation,
    placement: Placement,
    backend: DbBackend,
) -> Result<()> {
    let refused = |why: &str| {
        Err(Error::Config(format!(
            "{} isolation with {} placement: {why}",
            isolation.name(),
            placement.name()
        )))
    };
    match (isolation, placement) {
        (_, Placement::Citus) if backend != DbBackend::Postgres => refused(&format!(
            "Citus is an extension of PostgreSQL, and this database is {backend:?}"
        )),
        (Isolation::RowLevel, _) => Ok(()),
        (_, Placement::DatabasePerTenant) => refused(
            "a tenant's own database already keeps it apart; use row level isolation \
             (its filter stays as a second line)",
        ),
        (Isolation::SchemaPerTenant { .. }, _) if backend == DbBackend::MySql => refused(
            "MariaDB and MySQL have no schemas inside a database; their stand-in is a \
             database per tenant (`database_per_tenant` with `DatabaseTemplate::Server`)",
        ),
        (_, _) if backend != DbBackend::Postgres => refused(&format!(
            "it needs PostgreSQL, and this database is {backend:?}"
        )),
        _ => Ok(()),
    }
}

/// A custom PostgreSQL setting is `prefix.name`, each part a plain identifier.
pub(crate) fn validate_setting(setting: &str) -> Result<()> {
    let mut parts = setting.split('.');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(prefix), Some(name), None) => {
            Identifier::new(prefix)?;
            Identifier::new(name)?;
            Ok(())
        }
        _ => Err(Error::Config(format!(
            "row-level security setting {setting:?} must look like `prefix.name`"
        ))),
    }
}

/// PostgreSQL's functions of a move's write fence: the trigger function, and
/// `tenancy_fence_set`, which raises or lifts one fence trigger as its owner (the admin
/// layer's move calls it; row-level security's set-up makes both as the tables' owner, so
/// that a role that runs under the policies, which may neither create functions nor drop
/// triggers, can fence a moving tenant). `tenancy_fence_set` touches only triggers named
/// `tenancy_fence_` and a hexadecimal suffix, and quotes every name and value itself.
///
/// The trigger function refuses a write of a row whose tenant column (the trigger's second
/// argument; empty for every row of the table) holds the fenced id (its first argument),
/// unless the transaction carries the move's owner token (its third). The trigger's `WHEN`
/// compares the token first, without a call: the move's own deletes of the tenant's rows
/// pay no function call per row.
pub(crate) const PG_FENCE_FUNCTIONS: [&str; 2] = [PG_FENCE_TRIGGER, PG_FENCE_SET];

const PG_FENCE_TRIGGER: &str = r#"CREATE OR REPLACE FUNCTION public.tenancy_fence() RETURNS trigger
LANGUAGE plpgsql AS $tenancy_fence$
BEGIN
  IF current_setting('tenancy.fence_owner', true) IS DISTINCT FROM TG_ARGV[2] AND (
       TG_ARGV[1] = ''
       OR (TG_OP <> 'INSERT' AND to_jsonb(OLD) ->> TG_ARGV[1] = TG_ARGV[0])
       OR (TG_OP <> 'DELETE' AND to_jsonb(NEW) ->> TG_ARGV[1] = TG_ARGV[0])) THEN
    RAISE EXCEPTION USING ERRCODE = 'TN001',
      MESSAGE = 'tenancy fence: tenant is moving: ' || TG_ARGV[0];
  END IF;
  IF TG_OP = 'DELETE' THEN RETURN OLD; END IF;
  RETURN NEW;
END
$tenancy_fence$"#;

const PG_FENCE_SET: &str = r#"CREATE OR REPLACE FUNCTION public.tenancy_fence_set(tbl regclass, name text, args text[])
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog
AS $tenancy_fence_set$
BEGIN
  IF name !~ '^tenancy_fence_[0-9a-f_]+$' THEN
    RAISE EXCEPTION 'not a fence trigger: %', name;
  END IF;
  EXECUTE format('DROP TRIGGER IF EXISTS %I ON %s', name, tbl);
  IF args IS NOT NULL THEN
    EXECUTE format(
      'CREATE TRIGGER %I BEFORE INSERT OR UPDATE OR DELETE ON %s FOR EACH ROW '
      'WHEN (current_setting(''tenancy.fence_owner'', true) IS DISTINCT FROM %L) '
      'EXECUTE FUNCTION public.tenancy_fence(%L, %L, %L)',
      name, tbl, args[3], args[1], args[2], args[3]);
  END IF;
END
$tenancy_fence_set$"#;
