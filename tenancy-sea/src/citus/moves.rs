//! A tenant's move on Citus, done by Citus itself: under row level and row-level security
//! the tenant gets shards of its own (`isolate_tenant_to_new_shard`, its co-located tables
//! with it) and those move to the worker named (`citus_move_shard_placement`); under
//! schema per tenant its distributed schema moves (`citus_schema_move`). Citus copies the
//! rows online and switches the placement in its own metadata; nothing is copied through
//! the application.

use crate::error::{Error, Result};
use sea_orm::{ConnectionTrait, DbBackend, Statement, Value};
use tenancy_core::ShardId;

/// A Citus worker, named `host:port` where a move names its destination.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Node {
    pub(crate) host: String,
    pub(crate) port: i32,
}

impl Node {
    /// `host:port`, as a move's destination names a worker.
    pub(crate) fn parse(name: &ShardId) -> Result<Node> {
        let text = name.as_str();
        let parsed = text
            .rsplit_once(':')
            .and_then(|(host, port)| Some((host, port.parse::<i32>().ok()?)))
            .filter(|(host, _)| !host.is_empty());
        match parsed {
            Some((host, port)) => Ok(Node {
                host: host.to_owned(),
                port,
            }),
            None => Err(Error::Config(format!(
                "under the Citus placement a move names a worker as `host:port`, not {text:?}"
            ))),
        }
    }

    /// The node as a move's report names it.
    pub(crate) fn id(&self) -> ShardId {
        ShardId::new(format!("{}:{}", self.host, self.port))
    }
}

/// The statements of a move, each with its values bound.
pub(crate) mod sql {
    use super::*;

    fn pg(sql: &str, values: Vec<Value>) -> Statement {
        Statement::from_sql_and_values(DbBackend::Postgres, sql, values)
    }

    /// Whether `node` is a worker that takes shards.
    pub(crate) fn worker(node: &Node) -> Statement {
        pg(
            "SELECT count(*) AS n FROM pg_dist_node WHERE nodename = $1 AND nodeport = $2 \
             AND isactive AND noderole = 'primary' AND shouldhaveshards",
            vec![Value::from(node.host.as_str()), Value::from(node.port)],
        )
    }

    /// The shard of `table` that holds `tenant`, and whether it holds that tenant only.
    pub(crate) fn shard_of(table: &str, tenant: Value) -> Statement {
        pg(
            "SELECT s.shardid AS shard, s.shardminvalue = s.shardmaxvalue AS isolated \
             FROM pg_dist_shard s \
             WHERE s.shardid = get_shard_id_for_distribution_column($1::regclass, $2)",
            vec![Value::from(table), tenant],
        )
    }

    /// Gives `tenant` shards of its own in `table` and every table co-located with it.
    pub(crate) fn isolate(table: &str, tenant: Value) -> Statement {
        pg(
            "SELECT isolate_tenant_to_new_shard($1::regclass, $2, 'CASCADE') AS shard",
            vec![Value::from(table), tenant],
        )
    }

    /// The worker that holds `shard`.
    pub(crate) fn placement(shard: i64) -> Statement {
        pg(
            "SELECT n.nodename::text AS host, n.nodeport AS port FROM pg_dist_placement p \
             JOIN pg_dist_node n ON n.groupid = p.groupid WHERE p.shardid = $1",
            vec![Value::from(shard)],
        )
    }

    /// Moves `shard` (and its co-located shards) from `from` to `to`.
    pub(crate) fn move_shard(shard: i64, from: &Node, to: &Node) -> Statement {
        pg(
            "SELECT citus_move_shard_placement($1, $2, $3, $4, $5)",
            vec![
                Value::from(shard),
                Value::from(from.host.as_str()),
                Value::from(from.port),
                Value::from(to.host.as_str()),
                Value::from(to.port),
            ],
        )
    }

    /// A shard of one of `schema`'s distributed tables: where the schema lives.
    pub(crate) fn schema_shard(schema: &str) -> Statement {
        pg(
            "SELECT s.shardid AS shard FROM pg_dist_shard s \
             JOIN pg_class c ON c.oid = s.logicalrelid \
             WHERE c.relnamespace = to_regnamespace($1) ORDER BY s.shardid LIMIT 1",
            vec![Value::from(schema)],
        )
    }

    /// Moves the distributed schema `schema` to `to`.
    pub(crate) fn move_schema(schema: &str, to: &Node) -> Statement {
        pg(
            "SELECT citus_schema_move($1::regnamespace, $2, $3)",
            vec![
                Value::from(schema),
                Value::from(to.host.as_str()),
                Value::from(to.port),
            ],
        )
    }
}

/// Checks that `to` is a worker that takes shards.
pub(crate) async fn check_worker(conn: &impl ConnectionTrait, to: &Node) -> Result<()> {
    let n: i64 = one(conn, sql::worker(to), "n").await?;
    if n == 1 {
        Ok(())
    } else {
        Err(tenancy_core::RoutingError::UnknownShard(to.id().to_string()).into())
    }
}

/// Moves `tenant`'s rows of `table` (and of every table co-located with it) to `to`, on
/// the coordinator `conn` (the owner's): isolated first when the tenant shares its
/// shards. Returns the worker it left (`to` when it was there already).
pub(crate) async fn move_rows(
    conn: &impl ConnectionTrait,
    table: &str,
    tenant: Value,
    to: &Node,
) -> Result<Node> {
    let row = conn
        .query_one_raw(sql::shard_of(table, tenant.clone()))
        .await?
        .ok_or_else(|| Error::Config(format!("{table} is not a distributed table")))?;
    let mut shard: i64 = row.try_get("", "shard")?;
    let isolated: bool = row.try_get("", "isolated")?;
    let from = placement(conn, shard).await?;
    if from == *to {
        return Ok(from);
    }
    if !isolated {
        shard = patiently(|| one(conn, sql::isolate(table, tenant.clone()), "shard")).await?;
    }
    let from = placement(conn, shard).await?;
    if from != *to {
        patiently(|| conn.execute_raw(sql::move_shard(shard, &from, to))).await?;
    }
    Ok(from)
}

/// Moves the distributed schema `schema` to `to`; returns the worker it left.
pub(crate) async fn move_schema(
    conn: &impl ConnectionTrait,
    schema: &str,
    to: &Node,
) -> Result<Node> {
    let shard: i64 = one(conn, sql::schema_shard(schema), "shard").await?;
    let from = placement(conn, shard).await?;
    if from != *to {
        patiently(|| conn.execute_raw(sql::move_schema(schema, to))).await?;
    }
    Ok(from)
}

/// How long a move waits for another split or move of the cluster to finish: Citus runs
/// one at a time and refuses the second ("could not acquire the lock required to ...")
/// instead of queueing it.
const BUSY_WAIT: std::time::Duration = std::time::Duration::from_secs(120);

/// Runs `step`, again while Citus says another split or move holds the lock it needs,
/// for at most [`BUSY_WAIT`]; any other error at once.
async fn patiently<V, E, F, Fut>(mut step: F) -> Result<V>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::result::Result<V, E>>,
    E: Into<Error>,
{
    let started = std::time::Instant::now();
    let mut pause = std::time::Duration::from_millis(100);
    loop {
        let error: Error = match step().await {
            Ok(value) => return Ok(value),
            Err(error) => error.into(),
        };
        let busy = error
            .to_string()
            .contains("could not acquire the lock required to");
        if !busy || started.elapsed() + pause > BUSY_WAIT {
            return Err(error);
        }
        tracing::info!(target: "tenancy::move", %error, "Citus runs another split or move; waiting");
        futures_timer::Delay::new(pause).await;
        pause = (pause * 2).min(std::time::Duration::from_secs(2));
    }
}

async fn placement(conn: &impl ConnectionTrait, shard: i64) -> Result<Node> {
    let row = conn
        .query_one_raw(sql::placement(shard))
        .await?
        .ok_or_else(|| Error::Config(format!("shard {shard} has no placement")))?;
    Ok(Node {
        host: row.try_get("", "host")?,
        port: row.try_get("", "port")?,
    })
}

async fn one<V: sea_orm::TryGetable>(
    conn: &impl ConnectionTrait,
    statement: Statement,
    column: &str,
) -> Result<V> {
    let row = conn
        .query_one_raw(statement)
        .await?
        .ok_or_else(|| Error::Config(format!("the coordinator returned no {column}")))?;
    Ok(row.try_get("", column)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The texts the placement sends that carry no value, pinned.
    #[test]
    fn the_fixed_texts() {
        assert_eq!(
            crate::citus::DISTRIBUTED_SCHEMA,
            "SET LOCAL citus.enable_schema_based_sharding = on"
        );
        assert_eq!(
            crate::citus::GUARD,
            ("citus.multi_task_query_log_level", "error")
        );
    }

    #[test]
    fn a_destination_is_host_and_port() {
        let node = Node::parse(&ShardId::new("10.0.0.7:5434")).unwrap();
        assert_eq!((node.host.as_str(), node.port), ("10.0.0.7", 5434));
        assert_eq!(node.id().as_str(), "10.0.0.7:5434");
        for bad in ["s1", "host:", ":5432", "host:port"] {
            assert!(Node::parse(&ShardId::new(bad)).is_err(), "{bad}");
        }
    }

    /// The statements a move sends, pinned: names and values bound, never written in.
    #[test]
    fn the_statements_bind_every_value() {
        let to = Node {
            host: "w2".to_owned(),
            port: 5435,
        };
        let from = Node {
            host: "w1".to_owned(),
            port: 5434,
        };
        let isolate = sql::isolate("orders", Value::from(42i64));
        assert_eq!(
            isolate.sql,
            "SELECT isolate_tenant_to_new_shard($1::regclass, $2, 'CASCADE') AS shard"
        );
        assert_eq!(
            isolate.values.unwrap().0,
            [Value::from("orders"), Value::from(42i64)]
        );
        let moved = sql::move_shard(7, &from, &to);
        assert_eq!(
            moved.sql,
            "SELECT citus_move_shard_placement($1, $2, $3, $4, $5)"
        );
        assert_eq!(
            moved.values.unwrap().0,
            [
                Value::from(7i64),
                Value::from("w1"),
                Value::from(5434),
                Value::from("w2"),
                Value::from(5435)
            ]
        );
        let schema = sql::move_schema("tenant_42", &to);
        assert_eq!(
            schema.sql,
            "SELECT citus_schema_move($1::regnamespace, $2, $3)"
        );
        assert!(
            sql::shard_of("orders", Value::from(1i64))
                .sql
                .contains("get_shard_id_for_distribution_column($1::regclass, $2)")
        );
    }
}
