//! The command line, declared with clap's builder: the tenant id type is the
//! application's, so its parser is made here for `T`, and a malformed id is a usage error
//! before anything connects.

use crate::entity::SqlTenantId;
use clap::{Arg, ArgAction, ArgMatches, value_parser};
use std::ffi::OsString;
use tenancy_core::{Identifier, InvalidTenantId, ShardId};

/// The parsed command line.
pub(crate) struct Parsed<T> {
    /// `--json`: one JSON document on standard output.
    pub(crate) json: bool,
    pub(crate) command: Command<T>,
}

pub(crate) enum Command<T> {
    Tenants(Tenants<T>),
    Shards(Shards<T>),
    Catalog(Catalog),
}

pub(crate) enum Tenants<T> {
    List,
    Create(T),
    Drop(T),
    Migrate { parallel: usize },
}

pub(crate) enum Shards<T> {
    List,
    Create {
        name: ShardId,
        url: Option<String>,
    },
    Drain(ShardId),
    Drop(ShardId),
    Move {
        tenant: T,
        to: ShardId,
    },
    Rebalance {
        apply: bool,
        by: crate::admin::Balance,
        parallel: usize,
    },
}

pub(crate) enum Catalog {
    Show,
    Refresh,
}

/// Parses a tenant id given on the command line. It must be written exactly as the id
/// prints (`7`, not `07`, `+7` or ` 7`): a look-alike spelling is refused rather than read
/// as another tenant's id.
pub(crate) fn parse_tenant<T: SqlTenantId>(input: &str) -> Result<T, crate::Error> {
    let id = T::parse_tenant_id(input)?;
    if id.to_string() != input {
        return Err(InvalidTenantId::new(
            input,
            T::TYPE_NAME,
            "not written as the id itself (no sign, leading zero, space or other spelling)",
        )
        .into());
    }
    id.validate()?;
    Ok(id)
}

fn tenant_arg<T: SqlTenantId>(name: &'static str, help: &'static str) -> Arg {
    Arg::new(name)
        .required(true)
        .help(help)
        .value_parser(|text: &str| parse_tenant::<T>(text).map_err(|e| e.to_string()))
}

/// A shard name argument: a plain identifier, as the catalog keeps it.
fn shard_arg(name: &'static str, help: &'static str) -> Arg {
    Arg::new(name)
        .required(true)
        .help(help)
        .value_parser(|text: &str| -> Result<ShardId, String> {
            Identifier::new(text).map_err(|e| e.to_string())?;
            Ok(ShardId::new(text))
        })
}

fn leaf(name: &'static str, about: &'static str) -> clap::Command {
    clap::Command::new(name).about(about)
}

fn group(name: &'static str, about: &'static str) -> clap::Command {
    leaf(name, about)
        .subcommand_required(true)
        .arg_required_else_help(true)
}

/// The whole command line, with its help texts.
pub(crate) fn command<T: SqlTenantId>(name: &str) -> clap::Command {
    let tenants = group("tenants", "The tenants: their schemas or databases")
        .subcommand(leaf(
            "list",
            "Lists every tenant (and its shard, when sharded)",
        ))
        .subcommand(
            leaf(
                "create",
                "Creates a tenant: its schema or database, migrated (placed on a shard first \
                 when a directory places tenants). A tenant that exists is an error",
            )
            .arg(tenant_arg::<T>(
                "ID",
                "The tenant's id, written as it prints",
            )),
        )
        .subcommand(
            leaf(
                "drop",
                "Drops a tenant's schema or database and everything in it. An unknown tenant \
                 is an error",
            )
            .arg(tenant_arg::<T>(
                "ID",
                "The tenant's id, written as it prints",
            )),
        )
        .subcommand(
            leaf(
                "migrate",
                "Runs the pending migrations of every tenant (of every shard when tenants \
                 share their shard's tables); exit code 3 when some failed",
            )
            .arg(
                Arg::new("parallel")
                    .long("parallel")
                    .value_name("N")
                    .default_value("4")
                    .help("How many tenants migrate at once")
                    .value_parser(value_parser!(u16).range(1..=1024)),
            ),
        );
    let shards = group("shards", "The shards registered in the catalog")
        .subcommand(leaf(
            "list",
            "Lists the shards, their states and tenant counts",
        ))
        .subcommand(
            leaf(
                "create",
                "Creates a shard's database from the template, or adds the empty database at \
                 URL; migrates it, registers it and puts it in service",
            )
            .arg(shard_arg("NAME", "The shard's name (a plain identifier)"))
            .arg(Arg::new("URL").help(
                "The URL of an existing, empty database; `env:VAR` reads it from the \
                 environment variable VAR, so that no password shows in the process list or \
                 the shell history. Never echoed with its password",
            )),
        )
        .subcommand(
            leaf(
                "drain",
                "Marks a shard draining: no new tenant is placed on it (rebalance moves its \
                 tenants off)",
            )
            .arg(shard_arg("NAME", "The shard's name")),
        )
        .subcommand(
            leaf(
                "drop",
                "Removes an empty shard: out of the catalog, its database dropped",
            )
            .arg(shard_arg("NAME", "The shard's name")),
        )
        .subcommand(
            leaf("move", "Moves a tenant and its rows to another shard")
                .arg(tenant_arg::<T>(
                    "TENANT",
                    "The tenant's id, written as it prints",
                ))
                .arg(
                    shard_arg("to", "The shard to move it to")
                        .long("to")
                        .value_name("SHARD"),
                ),
        )
        .subcommand(
            leaf(
                "rebalance",
                "Plans moves off draining shards, then from the fullest to the emptiest \
                 active shard, and prints the plan; moves a stopped rebalance left part-way \
                 are finished first",
            )
            .arg(
                Arg::new("apply")
                    .long("apply")
                    .action(ArgAction::SetTrue)
                    .help("Runs the planned moves online; exit code 3 when some failed"),
            )
            .arg(
                Arg::new("by")
                    .long("by")
                    .value_name("WEIGHT")
                    .default_value("tenants")
                    .value_parser(["tenants", "rows", "bytes"])
                    .help(
                        "What a shard's fullness is: its tenants, the rows of the moving \
                         entities, or the bytes those rows take",
                    ),
            )
            .arg(
                Arg::new("parallel")
                    .long("parallel")
                    .value_name("N")
                    .default_value("1")
                    .help("How many moves run at once")
                    .value_parser(value_parser!(u16).range(1..=64)),
            ),
        );
    let catalog = group("catalog", "The catalog database")
        .subcommand(leaf(
            "show",
            "Shows the strategy, the shards, the directory and the tenant databases the \
             catalog holds",
        ))
        .subcommand(leaf(
            "refresh",
            "Brings this process's topology in step with the catalog and says what changed \
             (shards added, removed, unreachable)",
        ));
    clap::Command::new(name.to_owned())
        .about("Operates a multi-tenant fleet: tenants, shards and the catalog")
        .after_help(
            "Exit codes: 0 success; 1 failure; 2 usage or configuration error (nothing was \
             done); 3 partial failure (some tenants or moves failed, the report names them, \
             the rest was done).",
        )
        .subcommand_required(true)
        .arg_required_else_help(true)
        .arg(
            Arg::new("json")
                .long("json")
                .global(true)
                .action(ArgAction::SetTrue)
                .help("Machine-readable output: one JSON document on standard output"),
        )
        .subcommand(tenants)
        .subcommand(shards)
        .subcommand(catalog)
}

fn value<V: Clone + Send + Sync + 'static>(
    matches: &ArgMatches,
    name: &str,
) -> Result<V, clap::Error> {
    matches
        .get_one::<V>(name)
        .cloned()
        .ok_or_else(|| clap::Error::new(clap::error::ErrorKind::MissingRequiredArgument))
}

/// Parses `args` (program name first) with the command line `command`.
pub(crate) fn parse<T, I, S>(mut command: clap::Command, args: I) -> Result<Parsed<T>, clap::Error>
where
    T: SqlTenantId,
    I: IntoIterator<Item = S>,
    S: Into<OsString> + Clone,
{
    let matches = command.try_get_matches_from_mut(args)?;
    let json = matches.get_flag("json");
    let unknown = |command: &mut clap::Command| {
        command.error(clap::error::ErrorKind::InvalidSubcommand, "unknown command")
    };
    let parsed = match matches.subcommand() {
        Some(("tenants", sub)) => Command::Tenants(match sub.subcommand() {
            Some(("list", _)) => Tenants::List,
            Some(("create", m)) => Tenants::Create(value(m, "ID")?),
            Some(("drop", m)) => Tenants::Drop(value(m, "ID")?),
            Some(("migrate", m)) => Tenants::Migrate {
                parallel: usize::from(value::<u16>(m, "parallel")?),
            },
            _ => return Err(unknown(&mut command)),
        }),
        Some(("shards", sub)) => Command::Shards(match sub.subcommand() {
            Some(("list", _)) => Shards::List,
            Some(("create", m)) => Shards::Create {
                name: value(m, "NAME")?,
                url: m.get_one::<String>("URL").cloned(),
            },
            Some(("drain", m)) => Shards::Drain(value(m, "NAME")?),
            Some(("drop", m)) => Shards::Drop(value(m, "NAME")?),
            Some(("move", m)) => Shards::Move {
                tenant: value(m, "TENANT")?,
                to: value(m, "to")?,
            },
            Some(("rebalance", m)) => Shards::Rebalance {
                apply: m.get_flag("apply"),
                by: match value::<String>(m, "by")?.as_str() {
                    "rows" => crate::admin::Balance::Rows,
                    "bytes" => crate::admin::Balance::Bytes,
                    _ => crate::admin::Balance::Tenants,
                },
                parallel: usize::from(value::<u16>(m, "parallel")?),
            },
            _ => return Err(unknown(&mut command)),
        }),
        Some(("catalog", sub)) => Command::Catalog(match sub.subcommand() {
            Some(("show", _)) => Catalog::Show,
            Some(("refresh", _)) => Catalog::Refresh,
            _ => return Err(unknown(&mut command)),
        }),
        _ => return Err(unknown(&mut command)),
    };
    Ok(Parsed {
        json,
        command: parsed,
    })
}
