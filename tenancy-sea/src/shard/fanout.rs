//! The fan-out's machinery: one target's unit of work, the mark its statements carry, one
//! deadline for all targets, and the cancellation on the server of what passed it.

use crate::error::{Error, Result};
use crate::scope::{Meter, Session, Traced};
use futures_util::StreamExt;
use futures_util::future::{Either, select};
use futures_util::stream::FuturesUnordered;
use sea_orm::sea_query::Condition;
use sea_orm::{DatabaseConnection, DbBackend, DbErr, EntityTrait, QueryFilter, Select};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tenancy_core::ShardId;

/// Runs `$body` with `$conn` bound to a target's connection, inside a transaction that ran
/// the target's set-up first when it has one.
macro_rules! on_target {
    ($target:expr, $tag:expr, |$conn:ident| $body:expr) => {{
        let target: &Target = $target;
        in_unit!(&target.conn, target.session.as_deref(), $tag, |$conn| $body)
    }};
}

/// What marks the statements of this process's fan-outs with a given timeout: a comment at
/// the start of their text, `/* tenancy fan-out <process> <timeout ms> */`. When a part
/// passes its deadline, the statements that carry it and have run for about the timeout
/// are cancelled on their server. The text is the same for every fan-out of the process
/// with that timeout, so the driver's prepared statements are shared; nothing is sent
/// on the way that a fan-out without the mark would not send.
pub(super) fn fan_out_tag(timeout: Duration) -> String {
    static PROCESS: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let process =
        PROCESS.get_or_init(|| uuid::Uuid::new_v4().simple().to_string()[..12].to_owned());
    format!("/* tenancy fan-out {process} {} */ ", timeout.as_millis())
}

/// How long cancelling a timed-out part on its server may take.
const CANCEL_TIMEOUT: Duration = Duration::from_secs(2);

/// How much younger than the timeout a marked statement may be and still be cancelled:
/// the parts of a fan-out start a little after the fan-out does. A fan-out of the same
/// process and timeout begun less than this after the timed-out one can lose up to this
/// much of its time.
const CANCEL_SLACK: Duration = Duration::from_millis(100);

/// Cancels, on `target`'s server, the statements carrying `tag` that have run for at
/// least `timeout` less [`CANCEL_SLACK`]: the timed-out part, and any part of this process
/// past the same deadline. From a connection of its own: the pool may be exhausted by the
/// waiting statements.
#[cfg_attr(
    not(any(feature = "postgres", feature = "mysql")),
    allow(unused_variables)
)]
async fn cancel_on_server(target: &Target, tag: &str, timeout: Duration) {
    let age = timeout.saturating_sub(CANCEL_SLACK);
    let outcome = async {
        match target.conn.get_database_backend() {
            #[cfg(feature = "postgres")]
            DbBackend::Postgres => {
                use sea_orm::sqlx::Connection;
                let options = target.conn.get_postgres_connection_pool().connect_options();
                let mut conn = sea_orm::sqlx::PgConnection::connect_with(&options).await?;
                let cancelled: i64 = sea_orm::sqlx::query_scalar(
                    "SELECT count(pg_cancel_backend(pid)) FROM pg_stat_activity \
                     WHERE datname = current_database() AND pid <> pg_backend_pid() \
                     AND state = 'active' AND starts_with(query, $1) \
                     AND query_start <= clock_timestamp() - make_interval(secs => $2)",
                )
                .bind(tag)
                .bind(age.as_secs_f64())
                .fetch_one(&mut conn)
                .await?;
                conn.close().await?;
                Ok::<i64, sea_orm::sqlx::Error>(cancelled)
            }
            #[cfg(feature = "mysql")]
            DbBackend::MySql => {
                use sea_orm::sqlx::Connection;
                let options = target.conn.get_mysql_connection_pool().connect_options();
                let mut conn = sea_orm::sqlx::MySqlConnection::connect_with(&options).await?;
                let prefix = i64::try_from(tag.len()).unwrap_or(i64::MAX);
                let millis = i64::try_from(age.as_millis()).unwrap_or(i64::MAX);
                // MariaDB keeps each statement's age in milliseconds; MySQL in whole
                // seconds, rounded up here so that no younger statement is cancelled.
                let ids: Vec<i64> = match sea_orm::sqlx::query_scalar(
                    "SELECT CAST(ID AS SIGNED) FROM information_schema.PROCESSLIST \
                     WHERE ID <> CONNECTION_ID() AND LEFT(INFO, ?) = ? AND TIME_MS >= ?",
                )
                .bind(prefix)
                .bind(tag)
                .bind(millis)
                .fetch_all(&mut conn)
                .await
                {
                    Ok(ids) => ids,
                    Err(_) => {
                        sea_orm::sqlx::query_scalar(
                            "SELECT CAST(ID AS SIGNED) FROM information_schema.PROCESSLIST \
                             WHERE ID <> CONNECTION_ID() AND LEFT(INFO, ?) = ? AND TIME >= ?",
                        )
                        .bind(prefix)
                        .bind(tag)
                        .bind((millis + 999) / 1000)
                        .fetch_all(&mut conn)
                        .await?
                    }
                };
                for id in &ids {
                    // The id is an integer the server gave: nothing of the caller's is in it.
                    sea_orm::sqlx::raw_sql(sea_orm::sqlx::AssertSqlSafe(format!(
                        "KILL QUERY {id}"
                    )))
                    .execute(&mut conn)
                    .await?;
                }
                conn.close().await?;
                Ok(i64::try_from(ids.len()).unwrap_or(i64::MAX))
            }
            _ => Ok::<i64, sea_orm::sqlx::Error>(0),
        }
    };
    futures_util::pin_mut!(outcome);
    match select(outcome, futures_timer::Delay::new(CANCEL_TIMEOUT)).await {
        Either::Left((Ok(cancelled), _)) => {
            tracing::info!(shard = %target.shard, cancelled, "timed-out statements cancelled on the server");
        }
        Either::Left((Err(error), _)) => {
            // The driver's own error: it does not carry the pool's URL or password.
            tracing::warn!(shard = %target.shard, %error, "cancelling a timed-out statement failed");
        }
        Either::Right(_) => {
            tracing::warn!(shard = %target.shard, "cancelling a timed-out statement timed out");
        }
    }
}

/// Waits for the shards' futures (each yielding its target's index and outcome) under one
/// deadline for the whole fan-out: one timer, not one per shard, since every shard starts
/// at once. Returns one result per target, in order: a shard that failed is
/// [`Error::Shard`], one still running at the deadline [`Error::ShardTimeout`] (its
/// future is dropped, which cancels it).
pub(super) async fn under_deadline<R, F>(
    targets: &[Target],
    tag: &crate::scope::Tag,
    timeout: Duration,
    shards: impl IntoIterator<Item = F>,
) -> Vec<Result<R>>
where
    F: Future<Output = (usize, std::result::Result<R, DbErr>)>,
{
    let mut pending: FuturesUnordered<F> = shards.into_iter().collect();
    let mut results: Vec<Option<Result<R>>> = targets.iter().map(|_| None).collect();
    let mut deadline = futures_timer::Delay::new(timeout);
    while let Either::Left((Some((index, outcome)), _)) =
        select(pending.next(), &mut deadline).await
    {
        if let (Some(slot), Some(target)) = (results.get_mut(index), targets.get(index)) {
            *slot = Some(outcome.map_err(|source| Error::Shard {
                shard: target.shard.to_string(),
                source,
            }));
        }
    }
    // The parts still running are dropped here; their statements are cancelled on their
    // servers, so that they do not go on holding connections.
    drop(pending);
    if let Some(text) = tag.text() {
        let cancels = results
            .iter()
            .zip(targets)
            .filter(|(result, _)| result.is_none())
            .map(|(_, target)| cancel_on_server(target, text, timeout));
        futures_util::future::join_all(cancels).await;
    }
    results
        .into_iter()
        .zip(targets)
        .map(|(result, target)| {
            result.unwrap_or_else(|| {
                Err(Error::ShardTimeout {
                    shard: target.shard.to_string(),
                    timeout,
                })
            })
        })
        .collect()
}

/// A target's query: the shared select plus the target's own condition.
pub(super) fn for_target<E: EntityTrait>(select: &Select<E>, target: &Target) -> Select<E> {
    match &target.condition {
        Some(condition) => select.clone().filter(condition.clone()),
        None => select.clone(),
    }
}

/// One shard of a fan-out: its connection, the set-up its unit of work runs first (when
/// the strategy needs one), and the condition only this shard's query carries.
#[derive(Clone, Debug)]
pub(crate) struct Target {
    pub(crate) shard: ShardId,
    pub(crate) conn: DatabaseConnection,
    pub(crate) session: Option<Arc<Session>>,
    pub(crate) condition: Option<Condition>,
    /// The tenant whose rows this target reads (for the span); `None` when unscoped.
    pub(crate) tenant: Option<String>,
    /// The labels its statements are counted under, its shard among them.
    pub(crate) meter: Meter,
}

impl Target {
    pub(super) fn backend(&self) -> DbBackend {
        self.conn.get_database_backend()
    }

    /// What a target's statement runs in ([`Traced::run`]): a span naming the shard, and
    /// the tenant when scoped, and the statement's metrics.
    pub(super) fn span(&self, op: &'static str, table: &'static str) -> Traced {
        let span = match &self.tenant {
            Some(tenant) => {
                tracing::info_span!("tenancy", tenant = %tenant, table, op, shard = %self.shard)
            }
            None => tracing::info_span!("tenancy", table, op, shard = %self.shard),
        };
        self.meter.statement(op, span)
    }
}
