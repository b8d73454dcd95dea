//! What every statement runs in: [`Traced`], its `tracing` span and, with the `metrics`
//! feature, its counters and latency histogram, labelled by the [`Meter`] of the handle,
//! fan-out target or admin operation that runs it. Without the feature a [`Meter`] is
//! empty and [`Traced::run`] is the span's `instrument`, nothing more.

use crate::error::Error;
use sea_orm::DbErr;
use std::future::Future;
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

/// The labels a handle's, a fan-out target's or an admin operation's statements are
/// counted under: isolation, placement, shard and, where the application opted in, the
/// tenant. Made once per handle or target, so a statement only adds its operation.
#[derive(Clone, Debug)]
pub(crate) struct Meter {
    #[cfg(feature = "metrics")]
    labels: std::sync::Arc<[::metrics::Label]>,
}

/// Where the shard label sits among a meter's labels.
#[cfg(feature = "metrics")]
const SHARD: usize = 2;

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
            let mut labels = vec![
                Label::from_static_parts("isolation", isolation),
                Label::from_static_parts("placement", placement),
                Label::from_static_parts("shard", super::UNSHARDED),
            ];
            if let Some(tenant) = tenant {
                let value: std::sync::Arc<str> = tenant.to_string().into();
                labels.push(Label::new("tenant", value));
            }
            Meter {
                labels: labels.into(),
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
            let mut labels = self.labels.to_vec();
            if let Some(label) = labels.get_mut(SHARD) {
                let value: std::sync::Arc<str> = shard.as_str().into();
                *label = ::metrics::Label::new("shard", value);
            }
            Meter {
                labels: labels.into(),
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
    pub(crate) async fn run<F, R, E>(self, statement: F) -> Result<R, E>
    where
        F: Future<Output = Result<R, E>>,
        E: Failure,
    {
        #[cfg(feature = "metrics")]
        {
            let mut watch = Watch {
                start: std::time::Instant::now(),
                meter: self.meter,
                op: self.op,
                done: false,
            };
            let outcome = statement.instrument(self.span).await;
            watch.finish(outcome.as_ref().err().map(Failure::kind));
            outcome
        }
        #[cfg(not(feature = "metrics"))]
        statement.instrument(self.span).await
    }
}

/// A statement being timed: recorded when it ends, or as `cancelled` when dropped first.
#[cfg(feature = "metrics")]
struct Watch {
    start: std::time::Instant,
    meter: Meter,
    op: &'static str,
    done: bool,
}

#[cfg(feature = "metrics")]
impl Watch {
    fn finish(&mut self, error: Option<&'static str>) {
        self.done = true;
        let mut labels = Vec::with_capacity(self.meter.labels.len() + 2);
        labels.extend(self.meter.labels.iter().cloned());
        labels.push(::metrics::Label::from_static_parts("operation", self.op));
        ::metrics::counter!(METRIC_STATEMENTS, labels.clone()).increment(1);
        ::metrics::histogram!(METRIC_DURATION, labels.clone()).record(self.start.elapsed());
        if let Some(kind) = error {
            labels.push(::metrics::Label::from_static_parts("kind", kind));
            ::metrics::counter!(METRIC_ERRORS, labels).increment(1);
        }
    }
}

#[cfg(feature = "metrics")]
impl Drop for Watch {
    fn drop(&mut self) {
        if !self.done {
            self.finish(Some("cancelled"));
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
