//! What every statement runs in: [`Traced`], its `tracing` span and, with the `metrics`
//! feature, its counters and latency histogram, labelled by the [`Meter`] of the handle,
//! fan-out target or admin operation that runs it. Without the feature a [`Meter`] is
//! empty and [`Traced::run`] is the span's `instrument`, nothing more.

use crate::error::Error;
use sea_orm::DbErr;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use tenancy_core::ShardId;
use tracing::Instrument;

#[cfg(feature = "metrics")]
/// The name of the counter of statements run (`tenancy_statements_total`).
pub const METRIC_STATEMENTS: &str = "tenancy_statements_total";
#[cfg(feature = "metrics")]
/// The name of the counter of statements that failed (`tenancy_statement_errors_total`),
/// with a `kind` label.
pub const METRIC_ERRORS: &str = "tenancy_statement_errors_total";
#[cfg(feature = "metrics")]
/// The name of the histogram of statement latencies in seconds
/// (`tenancy_statement_duration_seconds`).
pub const METRIC_DURATION: &str = "tenancy_statement_duration_seconds";
#[cfg(feature = "metrics")]
/// The name of the counter of units of work of a tenant schema whose `BEGIN` guessed a
/// shape the schema does not have (`tenancy_shape_misses_total`): each costs the failed
/// `BEGIN`, its `ROLLBACK` and the shape read the long way.
pub const METRIC_SHAPE_MISSES: &str = "tenancy_shape_misses_total";
#[cfg(feature = "metrics")]
/// The name of the counter of tenant schema shapes read the long way, in a statement of
/// their own after `BEGIN` (`tenancy_shape_reads_total`): after a miss, or for a schema
/// whose shape is not guessed (the first unit, a schema without its marker).
pub const METRIC_SHAPE_READS: &str = "tenancy_shape_reads_total";

/// The labels a handle's, a fan-out target's or an admin operation's statements are
/// counted under: isolation, placement, shard and, where the application opted in, the
/// tenant. Made once per handle or target (once per [`Tenancy`](crate::Tenancy) where no
/// tenant label is asked for), so a statement only adds its operation; the metric keys of
/// each operation are made at its first statement and kept, so a statement builds none.
#[derive(Clone, Debug)]
pub(crate) struct Meter {
    #[cfg(feature = "metrics")]
    labels: std::sync::Arc<Labels>,
}

/// A meter's labels, and the keys of the operations counted under them so far.
#[cfg(feature = "metrics")]
#[derive(Debug)]
struct Labels {
    labels: Vec<::metrics::Label>,
    /// The keys of each operation of [`OPERATIONS`], made at its first statement.
    keys: [std::sync::OnceLock<Box<Keys>>; OPERATIONS.len()],
}

/// The metric keys of one operation's statements under a meter's labels.
#[cfg(feature = "metrics")]
#[derive(Debug)]
struct Keys {
    statements: ::metrics::Key,
    duration: ::metrics::Key,
}

/// The operations whose keys a meter keeps: every operation the crate counts. Another
/// operation is counted the same, with keys made for each statement.
#[cfg(feature = "metrics")]
const OPERATIONS: [&str; 17] = [
    "select",
    "count",
    "stream",
    "insert",
    "insert_many",
    "update",
    "update_many",
    "delete",
    "delete_many",
    "upsert",
    "load_one",
    "load_many",
    "raw",
    "scatter",
    "scatter_count",
    "scatter_aggregate",
    "global_write",
];

/// Where `op` sits in [`OPERATIONS`].
#[cfg(feature = "metrics")]
fn slot(op: &str) -> Option<usize> {
    OPERATIONS.iter().position(|known| *known == op)
}

/// What the metrics macros would give the recorder for a statement counted here.
#[cfg(feature = "metrics")]
static METADATA: ::metrics::Metadata<'static> =
    ::metrics::Metadata::new(module_path!(), ::metrics::Level::INFO, Some(module_path!()));

/// Where the shard label sits among a meter's labels.
#[cfg(feature = "metrics")]
const SHARD: usize = 2;

#[cfg(feature = "metrics")]
impl Labels {
    fn new(labels: Vec<::metrics::Label>) -> Self {
        Labels {
            labels,
            keys: std::array::from_fn(|_| std::sync::OnceLock::new()),
        }
    }

    /// The keys of `op`'s statements: the meter's labels, then the operation.
    fn make(&self, op: &'static str) -> Keys {
        let mut labels = Vec::with_capacity(self.labels.len() + 1);
        labels.extend(self.labels.iter().cloned());
        labels.push(::metrics::Label::from_static_parts("operation", op));
        Keys {
            statements: ::metrics::Key::from_parts(METRIC_STATEMENTS, labels.clone()),
            duration: ::metrics::Key::from_parts(METRIC_DURATION, labels),
        }
    }
}

impl Meter {
    /// The labels of statements under `isolation` and `placement` (label values: short,
    /// fixed words), on no shard (`default`); with `tenant`, labelled by it too.
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    pub(crate) fn new(
        isolation: &'static str,
        placement: &'static str,
        tenant: Option<&dyn std::fmt::Display>,
    ) -> Self {
        #[cfg(feature = "metrics")]
        {
            use ::metrics::Label;
            let mut labels = Vec::with_capacity(4);
            labels.extend([
                Label::from_static_parts("isolation", isolation),
                Label::from_static_parts("placement", placement),
                Label::from_static_parts("shard", super::UNSHARDED),
            ]);
            if let Some(tenant) = tenant {
                let value: std::sync::Arc<str> = tenant.to_string().into();
                labels.push(Label::new("tenant", value));
            }
            Meter {
                labels: std::sync::Arc::new(Labels::new(labels)),
            }
        }
        #[cfg(not(feature = "metrics"))]
        Meter {}
    }

    /// The same labels on `shard`.
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    pub(crate) fn on_shard(&self, shard: &ShardId) -> Self {
        #[cfg(feature = "metrics")]
        {
            let mut labels = self.labels.labels.clone();
            if let Some(label) = labels.get_mut(SHARD) {
                let value: std::sync::Arc<str> = shard.as_str().into();
                *label = ::metrics::Label::new("shard", value);
            }
            Meter {
                labels: std::sync::Arc::new(Labels::new(labels)),
            }
        }
        #[cfg(not(feature = "metrics"))]
        self.clone()
    }

    /// A statement of operation `op` (`select`, `insert`, ...), to run in `span`.
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    pub(crate) fn statement(&self, op: &'static str, span: tracing::Span) -> Traced {
        Traced {
            span,
            #[cfg(feature = "metrics")]
            meter: self.clone(),
            #[cfg(feature = "metrics")]
            op,
        }
    }
}

/// One statement about to run: its span and, with the `metrics` feature, what it is
/// counted as. Not a `tracing::Span`, so no statement can be instrumented past it: every
/// statement runs through [`Traced::run`].
#[must_use = "run the statement with `.run(..)`"]
pub(crate) struct Traced {
    span: tracing::Span,
    #[cfg(feature = "metrics")]
    meter: Meter,
    #[cfg(feature = "metrics")]
    op: &'static str,
}

impl Traced {
    /// The statement's span, for what outlives the run (a stream's rows).
    pub(crate) fn span(&self) -> tracing::Span {
        self.span.clone()
    }

    /// Runs `statement` in the span; with the `metrics` feature, counts it, times it and
    /// counts its error by kind. A statement whose future is dropped before it ends (a
    /// shard past the fan-out's deadline, a caller that gave up) is an error of kind
    /// `cancelled`.
    pub(crate) fn run<F>(self, statement: F) -> Run<F> {
        Run {
            statement: statement.instrument(self.span),
            watch: Watch {
                #[cfg(feature = "metrics")]
                start: None,
                #[cfg(feature = "metrics")]
                meter: self.meter,
                #[cfg(feature = "metrics")]
                op: self.op,
                #[cfg(feature = "metrics")]
                done: false,
            },
        }
    }
}

pin_project_lite::pin_project! {
    /// A statement running in its span ([`Traced::run`]): the statement's future polled
    /// in place, timed from its first poll.
    #[must_use = "a statement does nothing until awaited"]
    pub(crate) struct Run<F> {
        #[pin]
        statement: tracing::instrument::Instrumented<F>,
        watch: Watch,
    }
}

impl<F, R, E> Future for Run<F>
where
    F: Future<Output = Result<R, E>>,
    E: Failure,
{
    type Output = Result<R, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        this.watch.start();
        let outcome = std::task::ready!(this.statement.poll(cx));
        this.watch.finish(&outcome);
        Poll::Ready(outcome)
    }
}

/// A statement being timed: recorded when it ends, or as `cancelled` when dropped first
/// (once started). Nothing without the `metrics` feature.
struct Watch {
    #[cfg(feature = "metrics")]
    start: Option<std::time::Instant>,
    #[cfg(feature = "metrics")]
    meter: Meter,
    #[cfg(feature = "metrics")]
    op: &'static str,
    #[cfg(feature = "metrics")]
    done: bool,
}

impl Watch {
    /// Starts the clock, at the statement's first poll.
    fn start(&mut self) {
        #[cfg(feature = "metrics")]
        if self.start.is_none() {
            self.start = Some(std::time::Instant::now());
        }
    }

    /// Records the statement's end with `outcome`.
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    fn finish<R, E: Failure>(&mut self, outcome: &Result<R, E>) {
        #[cfg(feature = "metrics")]
        self.record(outcome.as_ref().err().map(Failure::kind));
    }
}

#[cfg(feature = "metrics")]
impl Watch {
    fn record(&mut self, error: Option<&'static str>) {
        self.done = true;
        let Some(start) = self.start else {
            return;
        };
        let labels = &self.meter.labels;
        let made;
        let keys = match slot(self.op).and_then(|slot| labels.keys.get(slot)) {
            Some(kept) => &**kept.get_or_init(|| Box::new(labels.make(self.op))),
            None => {
                made = labels.make(self.op);
                &made
            }
        };
        ::metrics::with_recorder(|recorder| recorder.register_counter(&keys.statements, &METADATA))
            .increment(1);
        ::metrics::with_recorder(|recorder| recorder.register_histogram(&keys.duration, &METADATA))
            .record(start.elapsed());
        if let Some(kind) = error {
            let mut labels: Vec<::metrics::Label> = keys.statements.labels().cloned().collect();
            labels.push(::metrics::Label::from_static_parts("kind", kind));
            ::metrics::counter!(METRIC_ERRORS, labels).increment(1);
        }
    }
}

#[cfg(feature = "metrics")]
impl Drop for Watch {
    fn drop(&mut self) {
        if !self.done {
            self.record(Some("cancelled"));
        }
    }
}

/// An error a statement can end with, and the `kind` label it is counted under: a short,
/// fixed word, so the label's values are few.
pub(crate) trait Failure {
    /// The error's kind.
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    fn kind(&self) -> &'static str;
}

impl Failure for DbErr {
    fn kind(&self) -> &'static str {
        match self {
            DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => "connection",
            DbErr::Exec(sea_orm::RuntimeErr::SqlxError(inner))
            | DbErr::Query(sea_orm::RuntimeErr::SqlxError(inner)) => match inner.as_ref() {
                sea_orm::sqlx::Error::Database(db) => {
                    use sea_orm::sqlx::error::ErrorKind;
                    match db.kind() {
                        ErrorKind::UniqueViolation => "unique_violation",
                        ErrorKind::ForeignKeyViolation => "foreign_key_violation",
                        ErrorKind::NotNullViolation => "not_null_violation",
                        ErrorKind::CheckViolation => "check_violation",
                        _ => "database",
                    }
                }
                sea_orm::sqlx::Error::PoolTimedOut | sea_orm::sqlx::Error::PoolClosed => {
                    "connection"
                }
                sea_orm::sqlx::Error::Io(_) | sea_orm::sqlx::Error::Tls(_) => "connection",
                _ => "database",
            },
            DbErr::Exec(_) | DbErr::Query(_) => "database",
            DbErr::RecordNotFound(_) | DbErr::RecordNotUpdated => "not_found",
            _ => "orm",
        }
    }
}

impl Failure for Error {
    fn kind(&self) -> &'static str {
        match self {
            Error::Db(db) => db.kind(),
            Error::InvalidTenantId(_) => "invalid_tenant_id",
            Error::TenantMismatch { .. } => "tenant_mismatch",
            Error::NotFound { .. } => "not_found",
            Error::TenantColumnWrite { .. } => "tenant_column_write",
            Error::RawSqlNotIsolated { .. } => "raw_sql_not_isolated",
            Error::RawFragment { .. } => "raw_fragment",
            Error::UnscopedSubquery => "unscoped_subquery",
            Error::UnscopedJunction { .. } => "unscoped_junction",
            Error::RlsNotEnforced { .. } => "rls_not_enforced",
            Error::InvalidIdentifier(_) => "invalid_identifier",
            Error::Config(_) => "config",
            Error::CrossTenantConflict { .. } => "cross_tenant_conflict",
            Error::UnknownTenant { .. } => "unknown_tenant",
            Error::TenantExists { .. } => "tenant_exists",
            Error::Shard { source, .. } => source.kind(),
            Error::ShardTimeout { .. } => "timeout",
            Error::Routing(_) => "routing",
            Error::ShardKeyMissing { .. } => "shard_key_missing",
            Error::ShardKeyWrite { .. } => "shard_key_write",
            Error::CrossShard { .. } => "cross_shard",
            Error::GlobalDiverged { .. } => "global_diverged",
            Error::PartialCommit { .. } => "partial_commit",
            Error::ShardExists { .. } => "shard_exists",
            Error::ShardDraining { .. } => "shard_draining",
            Error::NoShardAvailable { .. } => "no_shard_available",
            Error::TenantMoving { .. } => "tenant_moving",
            Error::MoveConflict { .. } => "move_conflict",
            Error::StaleDirectory { .. } => "stale_directory",
            Error::MoveLateWrites { .. } => "move_late_writes",
            Error::MoveDestinationNotEmpty { .. } => "move_destination_not_empty",
            Error::Unmergeable { .. } => "unmergeable",
            Error::SumOverflow { .. } => "sum_overflow",
            Error::GlobalCopyNotEmpty { .. } => "global_copy_not_empty",
            Error::ShardUnavailable { .. } => "shard_unavailable",
            Error::MoveUnfinished { .. } => "move_unfinished",
            Error::DirectoryBusy { .. } => "directory_busy",
            Error::RoutersBehind { .. } => "routers_behind",
            Error::ShardNotEmpty { .. } => "shard_not_empty",
            Error::ZeroPageSize => "zero_page_size",
            Error::NoCurrentTenant { .. } => "no_current_tenant",
            Error::UniqueId(_) => "unique_id",
        }
    }
}

/// [`Traced::run`] as a method of the statement's future: `async { .. }.traced(span)`.
pub(crate) trait RunTraced<R, E: Failure>: Future<Output = Result<R, E>> + Sized {
    /// Runs this statement in `traced` (see [`Traced::run`]).
    fn traced(self, traced: Traced) -> impl Future<Output = Result<R, E>> {
        traced.run(self)
    }
}

impl<F, R, E: Failure> RunTraced<R, E> for F where F: Future<Output = Result<R, E>> {}

#[cfg(all(test, feature = "metrics"))]
mod tests {
    use super::*;

    /// Every operation kept has its own slot, where its keys are found again.
    #[test]
    fn each_operation_has_its_slot() {
        for (at, op) in OPERATIONS.iter().enumerate() {
            assert_eq!(slot(op), Some(at), "{op}");
        }
        assert_eq!(slot("other"), None);
    }

    /// The keys kept for an operation are the labels, then the operation.
    #[test]
    fn kept_keys_carry_the_operation_last() {
        let meter = Meter::new("row_level", "shared", None);
        let keys = meter.labels.make("select");
        let labels: Vec<_> = keys
            .statements
            .labels()
            .map(|l| (l.key().to_owned(), l.value().to_owned()))
            .collect();
        assert_eq!(
            labels.last().map(|(k, v)| (k.as_str(), v.as_str())),
            Some(("operation", "select"))
        );
        assert_eq!(keys.statements.name(), METRIC_STATEMENTS);
        assert_eq!(keys.duration.name(), METRIC_DURATION);
        assert_eq!(labels.len(), 4);
    }
}
