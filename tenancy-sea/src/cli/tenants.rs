//! `tenants list | create | drop | migrate`: a tenant is a schema (schema per tenant), a
//! database (database per tenant), or under sharded row level a placement in the
//! directory, whose rows share their shard's tables.

use super::Exit;
use super::catalog::placements;
use super::output::{Io, Report, message};
use crate::admin::{FleetProgress, FleetReport};
use crate::entity::SqlTenantId;
use crate::error::{Error, Result};
use crate::isolation::Isolation;
use crate::placement::Placement;
use crate::tenancy::Tenancy;
use sea_orm_migration::MigratorTrait;
use serde_json::{Value, json};

/// What a tenant is under the tenancy's strategy.
enum Kind {
    Databases,
    Schemas,
    /// Sharded row level with a directory: a tenant is its placement.
    Placements,
}

fn kind<T: SqlTenantId>(tenancy: &Tenancy<T>) -> Result<Kind> {
    match (tenancy.placement(), tenancy.isolation()) {
        (Placement::DatabasePerTenant, _) => Ok(Kind::Databases),
        (_, Isolation::SchemaPerTenant { .. }) => Ok(Kind::Schemas),
        (Placement::Sharded, _) if tenancy.directory().is_some() => Ok(Kind::Placements),
        (placement, isolation) => Err(Error::Config(format!(
            "tenants have no schema, database or placement of their own under {} on {}: \
             there is nothing per tenant to list, create, drop or migrate",
            isolation.name(),
            placement.name()
        ))),
    }
}

/// Every tenant, with its shard where a directory places it.
pub(crate) async fn list<T: SqlTenantId>(tenancy: &Tenancy<T>) -> Result<Report> {
    let kind = kind(tenancy)?;
    let placed = match tenancy.directory() {
        Some(_) => placements(tenancy).await?,
        None => Vec::new(),
    };
    let ids: Vec<String> = match kind {
        Kind::Databases => strings_of(tenancy.tenant_databases().await?),
        Kind::Schemas => strings_of(tenancy.tenant_schemas().await?),
        // Sharded row level: the directory is the list of tenants.
        Kind::Placements => placed
            .iter()
            .filter(|(key, _)| T::parse_tenant_id(key).is_ok())
            .map(|(key, _)| key.clone())
            .collect(),
    };
    let rows: Vec<(String, Option<String>)> = ids
        .into_iter()
        .map(|id| {
            let shard = placed
                .iter()
                .find(|(key, _)| *key == id)
                .map(|(_, shard)| shard.to_string());
            (id, shard)
        })
        .collect();
    let value = json!({
        "tenants": rows
            .iter()
            .map(|(id, shard)| json!({ "id": id, "shard": shard }))
            .collect::<Vec<Value>>(),
    });
    let mut text = String::new();
    for (id, shard) in &rows {
        match shard {
            Some(shard) => text.push_str(&format!("{id}\t{shard}\n")),
            None => text.push_str(&format!("{id}\n")),
        }
    }
    if rows.is_empty() {
        text.push_str("no tenants\n");
    }
    Ok(Report::done(value, text))
}

/// Creates `id`'s schema or database, migrated (on its shard, placed first, when a
/// directory places tenants). A tenant that exists is [`Error::TenantExists`], and
/// nothing changes.
pub(crate) async fn create<M: MigratorTrait + 'static, T: SqlTenantId>(
    tenancy: &Tenancy<T>,
    id: T,
) -> Result<Report> {
    let shard = match kind(tenancy)? {
        Kind::Databases => {
            tenancy.create_tenant_database::<M>(id.clone()).await?;
            None
        }
        Kind::Schemas => {
            if tenancy.tenant_schemas().await?.contains(&id) {
                return Err(Error::TenantExists {
                    tenant: id.to_string(),
                });
            }
            match tenancy.directory() {
                None => {
                    tenancy.create_tenant_schema::<M>(id.clone()).await?;
                    None
                }
                Some(directory) => {
                    let placed_before = directory.placement(&id).await?.is_some();
                    let shard = directory.place(&id).await?;
                    if let Err(error) = tenancy.create_tenant_schema::<M>(id.clone()).await {
                        // Undo the placement made here, unless a concurrent create of the
                        // same tenant made its schema (its `CREATE SCHEMA` committed before
                        // this one failed on the name): that tenant lives by it. When the
                        // check itself fails, the placement stays.
                        let made_elsewhere = tenancy
                            .tenant_schemas()
                            .await
                            .map_or(true, |tenants| tenants.contains(&id));
                        if !placed_before && !made_elsewhere {
                            directory.remove(&id).await?;
                        }
                        return Err(error);
                    }
                    Some(shard)
                }
            }
        }
        Kind::Placements => {
            let directory = tenancy.require_directory("placing a tenant")?;
            if directory.placement(&id).await?.is_some() {
                return Err(Error::TenantExists {
                    tenant: id.to_string(),
                });
            }
            Some(directory.place(&id).await?)
        }
    };
    let shard = shard.map(|s| s.to_string());
    let text = match &shard {
        Some(shard) => format!("tenant {id} created on shard {shard}"),
        None => format!("tenant {id} created"),
    };
    Ok(Report::done(
        json!({ "tenant": id.to_string(), "shard": shard }),
        text,
    ))
}

/// Drops `id`'s schema or database (and its placement). An unknown tenant is
/// [`Error::UnknownTenant`], and nothing changes.
pub(crate) async fn drop<T: SqlTenantId>(tenancy: &Tenancy<T>, id: T) -> Result<Report> {
    match kind(tenancy)? {
        Kind::Databases => tenancy.drop_tenant_database(id.clone()).await?,
        Kind::Schemas => {
            if !tenancy.tenant_schemas().await?.contains(&id) {
                return Err(Error::UnknownTenant {
                    tenant: id.to_string(),
                });
            }
            tenancy.drop_tenant_schema(id.clone()).await?;
            if let Some(directory) = tenancy.directory() {
                directory.remove(&id).await?;
            }
        }
        Kind::Placements => {
            return Err(Error::Config(
                "under row level a tenant's rows share their shard's tables: delete them \
                 through the tenant's handle; `tenants drop` drops schemas and databases"
                    .to_owned(),
            ));
        }
    }
    Ok(Report::done(
        json!({ "tenant": id.to_string(), "dropped": true }),
        format!("tenant {id} dropped"),
    ))
}

/// Runs the pending migrations of every tenant (of every shard under sharded row
/// level), `parallel` at a time; the report names each failure.
pub(crate) async fn migrate<M: MigratorTrait + 'static, T: SqlTenantId>(
    tenancy: &Tenancy<T>,
    parallel: usize,
    io: &mut Io<'_>,
) -> Result<Report> {
    let (what, report) = match kind(tenancy)? {
        Kind::Databases | Kind::Schemas => {
            let report = tenancy
                .migrate_all::<M>(parallel, |p| progress(io, "tenant", p))
                .await?;
            ("tenant", strings(report))
        }
        Kind::Placements => {
            let report = tenancy
                .migrate_shards::<M>(parallel, |p| progress(io, "shard", p))
                .await?;
            ("shard", strings(report))
        }
    };
    io.finish();
    let (migrated, failed) = report;
    let exit = Exit::of_fleet(failed.len(), migrated.len() + failed.len());
    let mut text = format!(
        "migrated {} {what}(s), {} failed\n",
        migrated.len(),
        failed.len()
    );
    for (item, error) in &failed {
        text.push_str(&format!("{what} {item} failed: {error}\n"));
    }
    let value = json!({
        "unit": what,
        "migrated": migrated,
        "failed": failed
            .iter()
            .map(|(item, error)| json!({ what: item, "error": error }))
            .collect::<Vec<Value>>(),
    });
    Ok(Report { value, text, exit })
}

fn progress<I: std::fmt::Display>(io: &mut Io<'_>, what: &'static str, p: FleetProgress<'_, I>) {
    if p.done == 1 {
        io.start("migrate", p.total);
    }
    io.step(&format!("{what} {}", p.tenant), p.error);
}

fn strings_of<I: std::fmt::Display>(items: Vec<I>) -> Vec<String> {
    items.iter().map(ToString::to_string).collect()
}

/// A fleet report's items and errors as text, in a stable order.
fn strings<I: std::fmt::Display>(report: FleetReport<I>) -> (Vec<String>, Vec<(String, String)>) {
    let mut migrated: Vec<String> = report.migrated.iter().map(ToString::to_string).collect();
    let mut failed: Vec<(String, String)> = report
        .failed
        .iter()
        .map(|(item, error)| (item.to_string(), message(error)))
        .collect();
    migrated.sort_by(|a, b| (a.len(), a).cmp(&(b.len(), b)));
    failed.sort_by(|a, b| (a.0.len(), &a.0).cmp(&(b.0.len(), &b.0)));
    (migrated, failed)
}
