//! The operator CLI (feature `cli`): the application's own binary hands its migrator and
//! its way of building a [`Tenancy`] to [`run`], as with
//! `sea_orm_migration::cli::run_cli(Migrator)`, and gets a command line for the fleet:
//!
//! ```text
//! tenants list | create ID | drop ID | migrate [--parallel N]
//! shards  list | create NAME [URL] | drain NAME | drop NAME | move TENANT --to SHARD | rebalance [--apply]
//! catalog show | refresh
//! ```
//!
//! Every command takes `--json` (one JSON document on standard output, with `"ok"` and
//! `"exit_code"`) and `--help`. Long work (fleet migrations, moves, rebalancing) draws a
//! progress bar on a terminal and writes a plain line per step to standard error
//! otherwise. The process ends with an [`Exit`] code: 0 done, 1 failed, 2 a usage or
//! configuration error, 3 partly done. Errors are printed without internals, and URLs
//! without their passwords.
//!
//! ```no_run
//! use sea_orm::Database;
//! use tenancy_sea::{Tenancy, catalog::TenantDatabases, cli};
//! # mod migration {
//! #     use tenancy_sea::sea_orm_migration::prelude::*;
//! #     pub struct Migrator;
//! #     impl MigratorTrait for Migrator {
//! #         fn migrations() -> Vec<Box<dyn MigrationTrait>> { vec![] }
//! #     }
//! # }
//! use migration::Migrator;
//!
//! #[tokio::main]
//! async fn main() -> cli::Exit {
//!     let config = cli::Config::new(|| async {
//!         let catalog = Database::connect("sqlite://catalog.db?mode=rwc").await?;
//!         let registry = TenantDatabases::new(catalog.clone());
//!         registry.install().await?;
//!         Tenancy::<i64>::builder(catalog).database_per_tenant(registry).build()
//!     });
//!     cli::run::<Migrator, _>(config).await
//! }
//! ```

mod args;
mod catalog;
mod output;
mod rebalance;
mod shards;
mod tenants;

use crate::admin::{Rebalance, TenantMove};
use crate::entity::{ScopedEntity, SqlTenantId, TenantScoped};
use crate::error::{Error, Result};
use crate::tenancy::Tenancy;
use futures_util::future::LocalBoxFuture;
use output::{Io, Report};
use sea_orm::{ActiveModelTrait, IntoActiveModel};
use sea_orm_migration::MigratorTrait;
use std::ffi::OsString;
use std::future::Future;
use std::io::{IsTerminal, Write};

/// How the CLI ended, as the process's exit code. Return it from `main`.
///
/// | code | meaning |
/// |---|---|
/// | 0 | done |
/// | 1 | failed: a tenant that exists, an unknown shard, a database error, every tenant of a fleet migration failing |
/// | 2 | usage or configuration: clap's own errors, an invalid tenant id or shard name, a command the tenancy's strategy cannot do; nothing was done |
/// | 3 | partly done: some tenants migrated (or moves ran) and some failed; the report names each failure |
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// Everything asked was done (0).
    Success,
    /// The operation failed (1).
    Failure,
    /// A usage or configuration error; nothing was done (2).
    Usage,
    /// Some parts succeeded and some failed (3).
    Partial,
}

impl Exit {
    /// The process exit code.
    pub fn code(self) -> u8 {
        match self {
            Exit::Success => 0,
            Exit::Failure => 1,
            Exit::Usage => 2,
            Exit::Partial => 3,
        }
    }

    /// The exit of an error: [`Exit::Usage`] for what the arguments or the configuration
    /// got wrong, [`Exit::Failure`] for the rest.
    pub fn of(error: &Error) -> Exit {
        match error {
            Error::Config(_)
            | Error::InvalidTenantId(_)
            | Error::InvalidIdentifier(_)
            | Error::Routing(tenancy_core::RoutingError::FixedShards(_)) => Exit::Usage,
            _ => Exit::Failure,
        }
    }

    /// The exit of a fleet operation that failed for `failed` of `total` items: total
    /// failure only when nothing succeeded.
    pub(crate) fn of_fleet(failed: usize, total: usize) -> Exit {
        match failed {
            0 => Exit::Success,
            n if n == total => Exit::Failure,
            _ => Exit::Partial,
        }
    }
}

impl std::process::Termination for Exit {
    fn report(self) -> std::process::ExitCode {
        std::process::ExitCode::from(self.code())
    }
}

impl From<Exit> for std::process::ExitCode {
    fn from(exit: Exit) -> Self {
        std::process::ExitCode::from(exit.code())
    }
}

/// Adds one entity to a move and to a rebalance (see [`Config::move_entity`]).
pub(crate) struct AddEntity<T: SqlTenantId> {
    pub(crate) to_move: for<'a> fn(TenantMove<'a, T>) -> TenantMove<'a, T>,
    pub(crate) to_rebalance: for<'a> fn(Rebalance<'a, T>) -> Rebalance<'a, T>,
}

/// What the CLI needs of the application: how to build its [`Tenancy`] (called once the
/// arguments parsed, so that `--help` and usage errors need no database), the entities a
/// tenant's move copies, and the global tables a dropped shard may hold.
pub struct Config<T: SqlTenantId> {
    connect: Box<dyn FnOnce() -> LocalBoxFuture<'static, Result<Tenancy<T>>>>,
    entities: Vec<AddEntity<T>>,
    global_tables: Vec<&'static str>,
    name: String,
    about: Option<String>,
}

impl<T: SqlTenantId> std::fmt::Debug for Config<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("name", &self.name)
            .field("entities", &self.entities.len())
            .field("global_tables", &self.global_tables)
            .finish_non_exhaustive()
    }
}

impl<T: SqlTenantId> Config<T> {
    /// A configuration that builds the tenancy with `connect`, as the application does at
    /// start: the catalog connection, the shard registry and the directory loaded, the
    /// template that names new databases.
    pub fn new<F, Fut>(connect: F) -> Self
    where
        F: FnOnce() -> Fut + 'static,
        Fut: Future<Output = Result<Tenancy<T>>> + 'static,
    {
        Config {
            connect: Box::new(move || Box::pin(connect())),
            entities: Vec::new(),
            global_tables: Vec::new(),
            name: "tenancy".to_owned(),
            about: None,
        }
    }

    /// A configuration around a tenancy built already.
    pub fn from_tenancy(tenancy: Tenancy<T>) -> Self {
        Self::new(move || async move { Ok(tenancy) })
    }

    /// Names an entity whose rows move with a tenant (`shards move`, `shards rebalance`),
    /// as [`TenantMove::entity`] does: parents before children.
    pub fn move_entity<E>(mut self) -> Self
    where
        E: TenantScoped<TenantId = T> + ScopedEntity<T>,
        E::Model: IntoActiveModel<E::ActiveModel> + Sync,
        E::ActiveModel: ActiveModelTrait<Entity = E> + Send,
    {
        self.entities.push(AddEntity {
            to_move: add_entity::<E, T>,
            to_rebalance: add_rebalanced::<E, T>,
        });
        self
    }

    /// The global tables whose copies a shard may hold when `shards drop` removes it
    /// (see [`Tenancy::drop_shard`]).
    pub fn global_tables(mut self, tables: &[&'static str]) -> Self {
        self.global_tables.extend_from_slice(tables);
        self
    }

    /// The program's name in `--help` and usage lines (`tenancy` unless set).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The text `--help` shows above the commands.
    pub fn about(mut self, text: impl Into<String>) -> Self {
        self.about = Some(text.into());
        self
    }
}

fn add_entity<E, T>(step: TenantMove<'_, T>) -> TenantMove<'_, T>
where
    T: SqlTenantId,
    E: TenantScoped<TenantId = T> + ScopedEntity<T>,
    E::Model: IntoActiveModel<E::ActiveModel> + Sync,
    E::ActiveModel: ActiveModelTrait<Entity = E> + Send,
{
    step.entity::<E>()
}

fn add_rebalanced<E, T>(rebalance: Rebalance<'_, T>) -> Rebalance<'_, T>
where
    T: SqlTenantId,
    E: TenantScoped<TenantId = T> + ScopedEntity<T>,
    E::Model: IntoActiveModel<E::ActiveModel> + Sync,
    E::ActiveModel: ActiveModelTrait<Entity = E> + Send,
{
    rebalance.entity::<E>()
}

/// Runs the CLI on the process's arguments, standard output and standard error, with `M`
/// as the application's migrator, and returns how it ended.
pub async fn run<M: MigratorTrait + 'static, T: SqlTenantId>(config: Config<T>) -> Exit {
    let terminal = std::io::stderr().is_terminal();
    let mut out = std::io::stdout().lock();
    let mut err = std::io::stderr();
    run_on::<M, T, _, _>(config, std::env::args_os(), &mut out, &mut err, terminal).await
}

/// Runs the CLI on `args` (the program name first), writing its result to `out` and its
/// messages and progress lines to `err` (plain lines, never a bar): for a binary that
/// nests it among its own commands, or a test.
pub async fn run_with<M, T, I, A>(
    config: Config<T>,
    args: I,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Exit
where
    M: MigratorTrait + 'static,
    T: SqlTenantId,
    I: IntoIterator<Item = A>,
    A: Into<OsString> + Clone,
{
    run_on::<M, T, I, A>(config, args, out, err, false).await
}

async fn run_on<M, T, I, A>(
    config: Config<T>,
    args: I,
    out: &mut dyn Write,
    err: &mut dyn Write,
    terminal: bool,
) -> Exit
where
    M: MigratorTrait + 'static,
    T: SqlTenantId,
    I: IntoIterator<Item = A>,
    A: Into<OsString> + Clone,
{
    let mut command = args::command::<T>(&config.name);
    if let Some(about) = &config.about {
        command = command.about(about.clone());
    }
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let json = args.iter().skip(1).any(|arg| arg == "--json");
    let parsed = match args::parse::<T, _, _>(command, args) {
        Ok(parsed) => parsed,
        Err(error) => {
            // clap's own text: help to standard output (exit 0), usage errors to
            // standard error (exit 2), and under `--json` a document too.
            let text = error.render().to_string();
            return if error.use_stderr() {
                let _ = write!(err, "{text}");
                if json {
                    let first = text.lines().next().unwrap_or_default();
                    let message = first.strip_prefix("error: ").unwrap_or(first);
                    let value = serde_json::json!({
                        "ok": false,
                        "exit_code": Exit::Usage.code(),
                        "error": { "kind": "usage", "message": output::clean(message) },
                    });
                    let _ = writeln!(out, "{value}");
                }
                Exit::Usage
            } else {
                let _ = write!(out, "{text}");
                Exit::Success
            };
        }
    };
    let mut io = Io::new(out, err, parsed.json, terminal);
    let work = Work {
        entities: &config.entities,
        global_tables: &config.global_tables,
    };
    let outcome = match (config.connect)().await {
        Ok(tenancy) => dispatch::<M, T>(&tenancy, &work, parsed.command, &mut io).await,
        Err(error) => Err(error),
    };
    match outcome {
        Ok(report) => io.report(report),
        Err(error) => io.error(&error),
    }
}

/// The application's part of the configuration the commands use.
pub(crate) struct Work<'c, T: SqlTenantId> {
    pub(crate) entities: &'c [AddEntity<T>],
    pub(crate) global_tables: &'c [&'static str],
}

async fn dispatch<M: MigratorTrait + 'static, T: SqlTenantId>(
    tenancy: &Tenancy<T>,
    work: &Work<'_, T>,
    command: args::Command<T>,
    io: &mut Io<'_>,
) -> Result<Report> {
    use args::{Catalog, Command, Shards, Tenants};
    match command {
        Command::Tenants(Tenants::List) => tenants::list(tenancy).await,
        Command::Tenants(Tenants::Create(id)) => tenants::create::<M, T>(tenancy, id).await,
        Command::Tenants(Tenants::Drop(id)) => tenants::drop(tenancy, id).await,
        Command::Tenants(Tenants::Migrate { parallel }) => {
            tenants::migrate::<M, T>(tenancy, parallel, io).await
        }
        Command::Shards(Shards::List) => shards::list(tenancy).await,
        Command::Shards(Shards::Create { name, url }) => {
            shards::create::<M, T>(tenancy, name, url).await
        }
        Command::Shards(Shards::Drain(name)) => shards::drain(tenancy, name).await,
        Command::Shards(Shards::Drop(name)) => shards::drop(tenancy, name, work).await,
        Command::Shards(Shards::Move { tenant, to }) => {
            shards::move_one::<M, T>(tenancy, work, tenant, to, io).await
        }
        Command::Shards(Shards::Rebalance {
            apply,
            by,
            parallel,
        }) => rebalance::run::<M, T>(tenancy, work, (apply, by, parallel), io).await,
        Command::Catalog(Catalog::Show) => catalog::show(tenancy).await,
        Command::Catalog(Catalog::Refresh) => catalog::refresh(tenancy).await,
    }
}
