//! The error type of every fallible call: [`Error`], and [`Result`].

use sea_orm::DbErr;
use tenancy_core::InvalidTenantId;

mod db;
mod ids;

pub(crate) use db::{FENCE_REFUSAL, is_rls_violation};
pub use ids::UniqueIdError;

/// `: a, b` for a non-empty list, for messages that name what they are about.
fn list(items: &[String]) -> String {
    if items.is_empty() {
        String::new()
    } else {
        format!(": {}", items.join(", "))
    }
}

/// The result type of every fallible `tenancy` call.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong through a tenant handle.
///
/// Each variant is detected before anything is written: a rejected statement leaves the
/// database as it was.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The database or the driver failed.
    #[error(transparent)]
    Db(DbErr),

    /// The tenant id was rejected before any statement ran.
    #[error(transparent)]
    InvalidTenantId(#[from] InvalidTenantId),

    /// A row handed to a tenant handle carries another tenant's id.
    #[error(
        "tenant mismatch on `{table}`: the handle belongs to tenant {expected} but the row \
         carries tenant {found}; nothing was written"
    )]
    TenantMismatch {
        /// The table of the row.
        table: &'static str,
        /// The handle's tenant.
        expected: String,
        /// The tenant the row carried.
        found: String,
    },

    /// No row of this tenant has the given primary key.
    #[error("no row of `{table}` with that primary key belongs to tenant {tenant}")]
    NotFound {
        /// The table searched.
        table: &'static str,
        /// The handle's tenant.
        tenant: String,
    },

    /// A statement tried to write the tenant column, which a tenant handle never changes.
    #[error(
        "the tenant column `{column}` of `{table}` cannot be written through a tenant handle; \
         use `Tenancy::unscoped()` to move rows between tenants"
    )]
    TenantColumnWrite {
        /// The table written.
        table: &'static str,
        /// The tenant column.
        column: String,
    },

    /// Raw SQL was sent through a handle whose strategy cannot confine it to the tenant
    /// (everywhere but a PostgreSQL database per tenant): nothing ran.
    #[error(
        "raw SQL through a tenant handle is confined only by a PostgreSQL database per \
         tenant; here {why}. Use `Tenancy::unscoped()` and filter by tenant yourself. \
         Nothing ran"
    )]
    RawSqlNotIsolated {
        /// How a raw statement could reach another tenant's rows under this strategy.
        why: &'static str,
    },

    /// A fragment given to a tenant handle's builder is written into the statement as it
    /// is (`Expr::cust`, a `Func::cust` name, a custom keyword), so it could escape the
    /// tenant condition. Nothing ran.
    #[error(
        "{fragment} cannot be used through a tenant handle: it is pasted into the statement \
         as it is and can escape the tenant condition; build the condition from columns, \
         functions and values, or run the statement through `Tenancy::unscoped()` and \
         filter by tenant yourself. Nothing ran"
    )]
    RawFragment {
        /// What was refused.
        fragment: &'static str,
    },

    /// A subquery built with plain SeaORM or sea-query was given to a tenant handle's
    /// builder: it reads its table with no tenant condition. Nothing ran.
    #[error(
        "a subquery built with plain SeaORM or sea-query is not scoped to the tenant; build \
         it with `db.subquery::<E>()` and add it with `filter_in_subquery`, \
         `filter_exists` or `column_as_subquery`. Nothing ran"
    )]
    UnscopedSubquery,

    /// A relation reaches its rows through a junction table (many-to-many) that derives
    /// neither `TenantScoped` nor `GlobalEntity`: the library cannot filter it, and a
    /// junction row of another tenant could link this tenant's rows. Nothing ran.
    #[error(
        "the relation to `{related}` goes through the junction table `{junction}`, which \
         derives neither `TenantScoped` nor `GlobalEntity`, so its rows cannot be filtered \
         by tenant; derive `TenantScoped` on the junction's model. Nothing ran"
    )]
    UnscopedJunction {
        /// The junction table.
        junction: String,
        /// The table the relation reaches.
        related: &'static str,
    },

    /// Row-level security does not protect what the strategy relies on: tables of
    /// tenant-scoped entities without it, or an application role to which no policy
    /// applies. Found by [`Tenancy::verify`](crate::Tenancy::verify), before any handle.
    #[error("row-level security is not enforced: {reason}{}", list(tables))]
    RlsNotEnforced {
        /// The tables not covered (empty when the role is the problem).
        tables: Vec<String>,
        /// What is wrong and how to fix it.
        reason: String,
    },

    /// A schema or database name derived from a tenant id, or a setting name, is unsafe.
    #[error(transparent)]
    InvalidIdentifier(#[from] tenancy_core::InvalidIdentifier),

    /// The configuration cannot work, e.g. a strategy on a backend that lacks it.
    #[error("invalid tenancy configuration: {0}")]
    Config(String),

    /// Under row-level security, an upsert collided with a row of another tenant: the
    /// database refused to touch it, and the statement (and, in PostgreSQL, the enclosing
    /// transaction) failed. Nothing was inserted or changed. Under plain row level the
    /// same collision is left alone and reported as 0 rows.
    #[error(
        "the upsert into `{table}` collided with a row of another tenant; nothing was \
         inserted or changed"
    )]
    CrossTenantConflict {
        /// The table written.
        table: &'static str,
    },

    /// No database is registered for this tenant (database per tenant).
    #[error("tenant {tenant} is not registered")]
    UnknownTenant {
        /// The tenant asked for.
        tenant: String,
    },

    /// The current tenant's handle was asked for
    /// ([`Tenancy::current`](crate::Tenancy::current)) where there is no current tenant of
    /// this id type: outside `task::in_tenant`, or in a task spawned without one. Name the
    /// tenant (`Tenancy::tenant`) or use `Tenancy::unscoped()`.
    #[error(
        "no current tenant (of type {id_type}) here: name the tenant with \
         `Tenancy::tenant`, run the work inside `task::in_tenant`, or use \
         `Tenancy::unscoped()` for admin work"
    )]
    NoCurrentTenant {
        /// The tenant id type asked for.
        id_type: &'static str,
    },

    /// The tenant to be created exists already; nothing was changed.
    #[error("tenant {tenant} exists already")]
    TenantExists {
        /// The tenant.
        tenant: String,
    },

    /// A shard failed during a fan-out; nothing partial was returned.
    #[error("shard {shard} failed: {source}")]
    Shard {
        /// The shard.
        shard: String,
        /// What it reported.
        source: DbErr,
    },

    /// A shard did not answer a fan-out within its timeout.
    #[error("shard {shard} did not answer within {timeout:?}")]
    ShardTimeout {
        /// The shard.
        shard: String,
        /// The timeout that passed.
        timeout: std::time::Duration,
    },

    /// A key could not be placed on a shard.
    #[error(transparent)]
    Routing(#[from] tenancy_core::RoutingError),

    /// A write of an entity sharded by `#[shard_key]` carried no key, so its shard cannot
    /// be known; it is refused rather than sent to every shard.
    #[error(
        "`{table}` is sharded by `{column}`, and this write does not set it: its shard \
         cannot be known; nothing was written"
    )]
    ShardKeyMissing {
        /// The table written.
        table: &'static str,
        /// The shard-key column.
        column: String,
    },

    /// A statement tried to change the `#[shard_key]` column, which would leave the row on
    /// the wrong shard: delete the row and insert it with its new key instead.
    #[error(
        "the shard key `{column}` of `{table}` cannot be changed in place: the row would \
         stay on its old shard; delete it and insert it with the new key"
    )]
    ShardKeyWrite {
        /// The table written.
        table: &'static str,
        /// The shard-key column.
        column: String,
    },

    /// Work inside one shard's transaction reached a row on another shard: transactions
    /// never span shards. Nothing was written.
    #[error(
        "`{table}` row belongs on shard {shard} but the transaction is on shard \
         {transaction_shard}; transactions do not span shards, nothing was written"
    )]
    CrossShard {
        /// The table.
        table: &'static str,
        /// The shard the row belongs on.
        shard: String,
        /// The shard of the transaction.
        transaction_shard: String,
    },

    /// A write to a global table matched a different number of rows on different shards:
    /// the copies have diverged. Nothing was committed on any shard.
    #[error(
        "the copies of global table `{table}` have diverged: the write matched {counts:?} \
         rows per shard; nothing was committed"
    )]
    GlobalDiverged {
        /// The table written.
        table: &'static str,
        /// Rows matched on each shard.
        counts: Vec<(tenancy_core::ShardId, u64)>,
    },

    /// Work spread over several shards was accepted by every shard, but a commit failed
    /// after others had succeeded: transactions do not span shards, so the shards in
    /// `committed` hold the write and the others do not.
    #[error(
        "the commit on shard {failed} failed after shards {committed:?} had committed: \
         {source}"
    )]
    PartialCommit {
        /// The shards whose part is committed.
        committed: Vec<String>,
        /// The shard whose commit failed; later shards were rolled back.
        failed: String,
        /// What it reported.
        source: DbErr,
    },

    /// The shard to be created exists already; nothing was changed.
    #[error("shard {shard} exists already")]
    ShardExists {
        /// The shard.
        shard: String,
    },

    /// The shard is draining (being emptied): no key is newly placed on it. Nothing was
    /// changed.
    #[error("shard {shard} is draining: no new keys are placed on it")]
    ShardDraining {
        /// The shard.
        shard: String,
    },

    /// No shard can take a new key: every shard the router knows is draining.
    #[error("no shard can take a new key in directory {directory}: every shard is draining")]
    NoShardAvailable {
        /// The directory.
        directory: String,
    },

    /// The tenant is being moved to another shard: its old shard's database refuses its
    /// writes (from every process), no handle is given out for it in the moving process,
    /// and no other move of it starts in any process, until the move ends. Retry after it,
    /// refreshing the directory (the tenant may live elsewhere by then). A move whose
    /// process died keeps refusing until the next move of the tenant, run after the dead
    /// one's claim lapses, finishes it.
    #[error("tenant {tenant} is being moved to another shard; retry when the move ends")]
    TenantMoving {
        /// The tenant.
        tenant: String,
    },

    /// The tenant's rows on its old shard differ by content from their copies (a writer
    /// got past the move's fence), so the move was abandoned before switching: the copies
    /// were removed, the tenant still lives on its old shard, and nothing was lost.
    #[error(
        "moving tenant {tenant}: `{table}` had {copied} rows when copied and {now} after; \
         the move was abandoned and the tenant stays on shard {shard}"
    )]
    MoveConflict {
        /// The tenant.
        tenant: String,
        /// The table whose rows changed.
        table: &'static str,
        /// The rows copied.
        copied: u64,
        /// The rows on the old shard afterwards.
        now: u64,
        /// The shard the tenant stays on.
        shard: String,
    },

    /// A move switched a tenant, but some processes' routers had not applied the switch
    /// (nor let their lease run out) within the bound: the tenant's old rows were kept
    /// and its fence stays up on its old shard. Run the move again to finish it once its
    /// claim's lease has ended.
    #[error(
        "{routers} router(s) of directory {directory} have not applied version {version} \
         within the bound; the move's clean-up waits for them: run the move again later"
    )]
    RoutersBehind {
        /// The directory.
        directory: String,
        /// How many live routers were behind.
        routers: u64,
        /// The version they had to apply.
        version: u64,
    },

    /// The directory this process caches disagrees with the catalog about where the
    /// tenant lives (another process changed it): nothing was changed.
    #[error(
        "the directory cached here places tenant {tenant} on {cached}, the catalog on \
         {catalog}; refresh it (catalog::Directory::refresh) and retry"
    )]
    StaleDirectory {
        /// The tenant.
        tenant: String,
        /// Where the catalog places it (`none` when it does not).
        catalog: String,
        /// Where this process's router places it (`none` when it does not).
        cached: String,
    },

    /// The tenant was moved, but the shard it left held other rows of it than those
    /// copied: its rows there were inserted or deleted during the move. Nothing was
    /// removed from that shard; the tenant lives on its new shard.
    #[error(
        "tenant {tenant} now lives on shard {to}, but shard {from} held {found} rows of \
         `{table}` where {copied} were copied: its rows there changed during the move. \
         Nothing was removed from {from}; reconcile {to} with it, then run \
         `Tenancy::remove_leftovers` to remove the old rows {to} holds too"
    )]
    MoveLateWrites {
        /// The tenant.
        tenant: String,
        /// The shard it left.
        from: String,
        /// The shard it lives on now.
        to: String,
        /// The table.
        table: &'static str,
        /// The rows copied.
        copied: u64,
        /// The rows found on the old shard when removing them.
        found: u64,
    },

    /// A move found rows of the tenant on its destination that the source does not hold
    /// identically (the only copy of a write, say): nothing was changed, and the operator
    /// reconciles them before moving the tenant there.
    #[error(
        "shard {shard} holds {rows} row(s) of `{table}` of tenant {tenant} that its current \
         shard does not hold identically: the move stopped, nothing was changed"
    )]
    MoveDestinationNotEmpty {
        /// The tenant.
        tenant: String,
        /// The destination shard.
        shard: String,
        /// The table.
        table: &'static str,
        /// How many such rows.
        rows: u64,
    },

    /// Rows across shards cannot be merged in the order asked: the databases order the
    /// column's type by a rule of their own (enums, JSON), or its values do not compare
    /// in the merge (a date, time or decimal type without this crate's feature of the
    /// same name as SeaORM's).
    #[error("cannot merge shards ordered by `{column}`: {reason}")]
    Unmergeable {
        /// The order column.
        column: String,
        /// Why, and what to do.
        reason: &'static str,
    },

    /// A sum over all shards does not fit in `i64` (each shard's sum is added up exactly,
    /// in 128 bits): an error, never a wrap or a silent cap.
    #[error("the sum over all shards, {total}, does not fit in i64")]
    SumOverflow {
        /// The exact total, or the shard's sum that could not be read.
        total: String,
    },

    /// A shard's copy of a global table already holds rows, so copying the table to it
    /// would duplicate them.
    #[error("shard {shard}'s copy of `{table}` holds {rows} row(s) already")]
    GlobalCopyNotEmpty {
        /// The shard.
        shard: String,
        /// The global table.
        table: &'static str,
        /// How many rows it holds.
        rows: u64,
    },

    /// The shard's database could not be reached when it was last connected (at start, or
    /// at a catalog refresh): its tenants are refused at once rather than wait on a
    /// connection, until a refresh connects it again.
    #[error("shard {shard} is unavailable ({reason}); retry after the next catalog refresh")]
    ShardUnavailable {
        /// The shard.
        shard: String,
        /// Why, as the connection attempt failed (passwords hidden).
        reason: String,
    },

    /// The tenant was moved (its rows copied and its placement switched) but its rows
    /// could not be removed from the shard it left. It is served from its new shard;
    /// [`Tenancy::remove_leftovers`](crate::Tenancy::remove_leftovers) removes what was
    /// left (the rows its new shard holds too).
    #[error(
        "tenant {tenant} now lives on shard {to}, but its rows on shard {from} were not \
         removed ({source}); run `Tenancy::remove_leftovers` to remove them"
    )]
    MoveUnfinished {
        /// The tenant.
        tenant: String,
        /// The shard it left.
        from: String,
        /// The shard it lives on now.
        to: String,
        /// Why the old rows were not removed.
        source: Box<Error>,
    },

    /// The directory changed in this process during every attempt to load it from the
    /// catalog, each read being older than a change made here; the router kept what it
    /// had. Retry when the changes settle.
    #[error("directory {directory} kept changing here during {attempts} attempts to load it")]
    DirectoryBusy {
        /// The directory.
        directory: String,
        /// How many loads were tried.
        attempts: usize,
    },

    /// A shard cannot be removed while it holds data or tenants.
    #[error("shard {shard} cannot be removed: {reason}")]
    ShardNotEmpty {
        /// The shard.
        shard: String,
        /// What it still holds.
        reason: String,
    },

    /// A paginator was asked for pages of zero rows.
    #[error("page size must be at least 1")]
    ZeroPageSize,

    /// No unique id was issued (see `catalog::UniqueIds`).
    #[error(transparent)]
    UniqueId(#[from] UniqueIdError),
}
