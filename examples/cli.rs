//! The operator CLI wired to the shop's migrator and entities: the application's own
//! admin binary is these few lines.
//!
//! Where the fleet lives:
//!
//! * by default, a database per tenant: one SQLite file per tenant and a catalog file, in
//!   the directory `TENANCY_CLI_DIR` (the system's temp directory's `tenancy-cli` unless
//!   set). The `tenants` and `catalog show` commands work here;
//! * `TENANCY_CLI_LAYOUT=sharded`: SQLite shards (one file each, in the same directory)
//!   routed by a catalog directory, tenants' rows in shared tables (row level): every
//!   `shards` command, `tenants list | create | migrate` (the shards) and `catalog`;
//! * `DATABASE_URL=postgres://...`: the most of it: schema per tenant on shards that are
//!   databases on that server (named `TENANCY_CLI_PREFIX` and the shard's name,
//!   `tenancy_cli_shard_` unless set), the catalog in `DATABASE_URL`'s database. Every
//!   command works: tenants are schemas placed on shards, moved with their rows.
//!
//! ```text
//! cargo run -p tenancy-examples --features cli --example cli -- --help
//! cargo run -p tenancy-examples --features cli --example cli -- tenants create 1
//! cargo run -p tenancy-examples --features cli --example cli -- tenants migrate --parallel 8
//! cargo run -p tenancy-examples --features cli --example cli -- --json tenants list
//! TENANCY_CLI_LAYOUT=sharded cargo run -p tenancy-examples --features cli --example cli -- shards create s0
//! DATABASE_URL=postgres://postgres@127.0.0.1:5432/test cargo run -p tenancy-examples --features cli --example cli -- shards list
//! ```
#![allow(clippy::print_stdout)] // the shared shop module's helpers print; the CLI writes its own output

#[path = "shared/shop.rs"]
mod shop;

use sea_orm::Database;
use shop::{migration::Migrator, order};
use std::path::PathBuf;
use std::sync::Arc;
use tenancy_sea::catalog::{Directory, Shards, TenantDatabases};
use tenancy_sea::{DatabaseTemplate, DirectoryRouter, Tenancy, cli};

fn data_dir() -> tenancy_sea::Result<PathBuf> {
    let dir = match std::env::var_os("TENANCY_CLI_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => std::env::temp_dir().join("tenancy-cli"),
    };
    std::fs::create_dir_all(&dir)
        .map_err(|e| tenancy_sea::Error::Config(format!("cannot make the data directory: {e}")))?;
    Ok(dir)
}

/// The tenancy, as the application builds it at start.
async fn start() -> tenancy_sea::Result<Tenancy<i64>> {
    if let Ok(url) = std::env::var("DATABASE_URL") {
        let prefix =
            std::env::var("TENANCY_CLI_PREFIX").unwrap_or_else(|_| "tenancy_cli_shard_".to_owned());
        let template = DatabaseTemplate::Server {
            server_url: url.clone(),
            prefix,
        };
        let catalog = Database::connect(&url).await?;
        return sharded(catalog, template, Some("tenant_")).await;
    }
    let dir = data_dir()?;
    let catalog = Database::connect(format!(
        "sqlite://{}?mode=rwc",
        dir.join("catalog.db").display()
    ))
    .await?;
    if std::env::var("TENANCY_CLI_LAYOUT").is_ok_and(|layout| layout == "sharded") {
        let template = DatabaseTemplate::SqliteDir {
            dir,
            prefix: "shard_".into(),
        };
        return sharded(catalog, template, None).await;
    }
    let registry = TenantDatabases::new(catalog.clone());
    registry.install().await?;
    Tenancy::builder(catalog)
        .database_per_tenant(registry)
        .database_template(DatabaseTemplate::SqliteDir {
            dir,
            prefix: "tenant_".into(),
        })
        .build()
}

/// Shards registered in the catalog, tenants placed by its directory; tenant schemas on
/// the shards when `schema_prefix` is given.
async fn sharded(
    catalog: sea_orm::DatabaseConnection,
    template: DatabaseTemplate,
    schema_prefix: Option<&str>,
) -> tenancy_sea::Result<Tenancy<i64>> {
    let shards = Shards::new(catalog.clone());
    shards.install().await?;
    let router = Arc::new(DirectoryRouter::new(shards.names().await?));
    let directory = Directory::new(catalog.clone(), router.clone());
    directory.install().await?;
    directory.load().await?;
    let topology = shards.topology(router, 2).await?;
    let mut builder = Tenancy::builder(catalog)
        .sharded(topology)
        .directory(directory)
        .database_template(template);
    if let Some(prefix) = schema_prefix {
        builder = builder.schema_per_tenant(prefix);
    }
    builder.build()
}

#[tokio::main]
async fn main() -> cli::Exit {
    let config = cli::Config::new(start)
        .name("cli")
        .about("The shop's fleet: its tenants, shards and catalog")
        .move_entity::<order::Entity>();
    cli::run::<Migrator, i64>(config).await
}
