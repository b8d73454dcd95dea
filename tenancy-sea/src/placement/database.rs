//! Database per tenant: where each tenant's database is ([`TenantRegistry`], kept in a
//! catalog database by `catalog::TenantDatabases`), and how a new one is named and created
//! ([`DatabaseTemplate`]).

use super::pools::connect;
use crate::entity::SqlTenantId;
use crate::error::{Error, Result};
use futures_util::future::BoxFuture;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend};
use std::path::PathBuf;
use tenancy_core::Identifier;

/// Where each tenant's database is: tenant id → connection URL.
///
/// `catalog::TenantDatabases` (listed below among the implementors) keeps the map in a
/// catalog database; implement this trait to keep it elsewhere (a config service, a
/// file). Implementations must be consistent: a tenant is listed exactly when
/// [`url`](TenantRegistry::url) finds it.
pub trait TenantRegistry<T>: Send + Sync + 'static {
    /// The URL of `tenant`'s database, or `None` when the tenant is unknown.
    fn url<'a>(&'a self, tenant: &'a T) -> BoxFuture<'a, Result<Option<String>>>;
    /// Records `tenant` at `url`. Registering a known tenant is an error.
    fn register<'a>(&'a self, tenant: &'a T, url: &'a str) -> BoxFuture<'a, Result<()>>;
    /// Forgets `tenant`.
    fn unregister<'a>(&'a self, tenant: &'a T) -> BoxFuture<'a, Result<()>>;
    /// Every registered tenant.
    fn tenants(&self) -> BoxFuture<'_, Result<Vec<T>>>;
}

/// How a new tenant database is named and where it is created: `prefix` followed by the
/// tenant id, validated as an identifier (so a hostile id never reaches DDL). Its `Debug`
/// output hides the server URL's password.
#[derive(Clone)]
pub enum DatabaseTemplate {
    /// A database on the PostgreSQL or MySQL/MariaDB server at `server_url` (any database
    /// on it; the URL's user must be allowed to create databases). On MariaDB this is also
    /// the equivalent of schema per tenant.
    Server {
        /// A URL of the server.
        server_url: String,
        /// The database name prefix.
        prefix: String,
    },
    /// A SQLite file `prefix<id>.db` in `dir`.
    SqliteDir {
        /// The directory of the files.
        dir: PathBuf,
        /// The file name prefix.
        prefix: String,
    },
}

impl std::fmt::Debug for DatabaseTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DatabaseTemplate::Server { server_url, prefix } => f
                .debug_struct("Server")
                .field("server_url", &crate::redact::url(server_url))
                .field("prefix", prefix)
                .finish(),
            DatabaseTemplate::SqliteDir { dir, prefix } => f
                .debug_struct("SqliteDir")
                .field("dir", dir)
                .field("prefix", prefix)
                .finish(),
        }
    }
}

/// A tenant database about to be made.
pub(crate) struct PlannedDatabase {
    pub(crate) name: Identifier,
    pub(crate) url: String,
}

impl DatabaseTemplate {
    pub(crate) fn plan<T: SqlTenantId>(&self, tenant: &T) -> Result<PlannedDatabase> {
        match self {
            DatabaseTemplate::Server { server_url, prefix } => {
                let name = Identifier::for_tenant(prefix, tenant)?;
                let url = with_path(server_url, name.as_str())?;
                Ok(PlannedDatabase { name, url })
            }
            DatabaseTemplate::SqliteDir { dir, prefix } => {
                let name = Identifier::for_tenant(prefix, tenant)?;
                let path = dir.join(format!("{}.db", name.as_str()));
                Ok(PlannedDatabase {
                    name,
                    url: format!("sqlite://{}?mode=rwc", path.display()),
                })
            }
        }
    }

    /// Creates the database (a server `CREATE DATABASE`, or an empty SQLite file).
    /// Fails when it exists already, so that a concurrent creation of the same tenant
    /// never goes on to use (or, on failure, drop) a database it did not make.
    pub(crate) async fn create(&self, db: &PlannedDatabase) -> Result<()> {
        match self {
            DatabaseTemplate::Server { server_url, .. } => {
                let server = connect(server_url.as_str()).await?;
                let sql = format!("CREATE DATABASE {}", quoted_for(&server, &db.name));
                let result = server.execute_unprepared(&sql).await;
                let _ = server.close().await;
                result?;
            }
            DatabaseTemplate::SqliteDir { dir, .. } => {
                let path = dir.join(format!("{}.db", db.name.as_str()));
                std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&path)
                    .map_err(|err| match err.kind() {
                        // As a server's `CREATE DATABASE` of an existing name: a database
                        // error, not a configuration one.
                        std::io::ErrorKind::AlreadyExists => {
                            Error::Db(sea_orm::DbErr::Custom(format!(
                                "database {} exists already (being made by a concurrent \
                                 creation, or left over)",
                                db.name.as_str()
                            )))
                        }
                        _ => Error::Config(format!("cannot create {}: {err}", path.display())),
                    })?;
            }
        }
        Ok(())
    }

    /// Drops the database (or deletes the SQLite file).
    pub(crate) async fn drop_database(&self, db: &PlannedDatabase) -> Result<()> {
        match self {
            DatabaseTemplate::Server { server_url, .. } => {
                let server = connect(server_url.as_str()).await?;
                let name = quoted_for(&server, &db.name);
                let sql = if server.get_database_backend() == DbBackend::Postgres {
                    format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")
                } else {
                    format!("DROP DATABASE IF EXISTS {name}")
                };
                let result = server.execute_unprepared(&sql).await;
                let _ = server.close().await;
                result?;
            }
            DatabaseTemplate::SqliteDir { dir, .. } => {
                for suffix in ["", "-wal", "-shm"] {
                    let path = dir.join(format!("{}.db{suffix}", db.name.as_str()));
                    match std::fs::remove_file(&path) {
                        Ok(()) => {}
                        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                        Err(err) => {
                            return Err(Error::Config(format!(
                                "cannot delete {}: {err}",
                                path.display()
                            )));
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

fn quoted_for(conn: &DatabaseConnection, name: &Identifier) -> String {
    match conn.get_database_backend() {
        DbBackend::MySql => name.backquoted(),
        _ => name.quoted(),
    }
}

/// `url` with its path (the database) replaced by `/name`, query string kept.
fn with_path(url: &str, name: &str) -> Result<String> {
    let not_a_url = || Error::Config(format!("not a database URL: {}", crate::redact::url(url)));
    let mut parsed = url::Url::parse(url).map_err(|_| not_a_url())?;
    if parsed.cannot_be_a_base() {
        return Err(not_a_url());
    }
    // The name is a validated identifier: nothing in it needs escaping in a path.
    parsed.set_path(&format!("/{name}"));
    Ok(parsed.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_get_the_tenant_database() {
        assert_eq!(
            with_path("postgres://u@h:5432/test?sslmode=disable", "t_1").unwrap(),
            "postgres://u@h:5432/t_1?sslmode=disable"
        );
        assert_eq!(
            with_path("mysql://root@h", "t_1").unwrap(),
            "mysql://root@h/t_1"
        );
        assert_eq!(
            with_path("postgres://u:p%40ss@h/test", "t_1").unwrap(),
            "postgres://u:p%40ss@h/t_1"
        );
        assert!(with_path("nonsense", "t_1").is_err());
        assert!(with_path("mailto:someone", "t_1").is_err());
    }
}
