#!/usr/bin/env python3
"""The SQLAlchemy side of the peers benchmark (tests/benches/peers.rs).

The same workload as the two Rust sides, on the same shard databases, through
SQLAlchemy 2.x's ShardedSession (sqlalchemy.ext.horizontal_shard):

1. single-row inserts, each its own unit of work (session.add + commit);
2. point reads by (tenant, id);
3. tenant scans (WHERE tenant_id = ?);
4. scatter-gather top-N (ORDER BY total_cents DESC, id LIMIT n on every shard, merged
   here).

Each shard is one engine with exactly one connection (pool_size=1, max_overflow=0,
pool_pre_ping off) in autocommit, so every statement is its own transaction as on the
Rust side (no BEGIN/COMMIT round trips, and skip_autocommit_rollback: no rollback call
when a connection goes back to its pool). Each operation runs in a session of its own,
the unit-of-work-per-request pattern: the session checks the shard's connection out
of its pool and returns it when it closes, as SQLx does around each SeaORM statement.

Routing: the shard of a tenant is placement[tenant] (given by the Rust bench, which
takes it from the framework's hash router, so all three sides place every tenant on
the same shard). shard_chooser routes new rows by their tenant_id; execute_chooser
routes a statement by its `tenant_id = value` criterion and sends a statement without
one to every shard; identity_chooser (lookups by primary key alone) tries every shard.

    python sqlalchemy_sharded.py --shards URL0,URL1,URL2,URL3 [--placement 0,2,...]

prints one line of JSON: the seconds of each phase (wall, and this process's CPU as
cpu_<phase>), and checksums of what was read, so that the Rust bench can check that
every side did the same work.
"""

import argparse
import json
import sys
import time

try:
    import sqlalchemy
    from sqlalchemy import BigInteger, create_engine, select, text
    from sqlalchemy.ext.horizontal_shard import ShardedSession
    from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker
    from sqlalchemy.sql import operators
    from sqlalchemy.sql.elements import BinaryExpression, BindParameter, BooleanClauseList
    import psycopg2  # noqa: F401  (the driver the engines use)
except ImportError as error:
    sys.stderr.write(
        f"the SQLAlchemy side needs SQLAlchemy 2.x and psycopg2 ({error}).\n"
        "Install them with benches/peers/run.sh, or by hand:\n"
        "  python3 -m venv ~/.cache/tenancy-peers-venv\n"
        "  ~/.cache/tenancy-peers-venv/bin/pip install -r benches/peers/requirements.txt\n"
    )
    sys.exit(2)


class Base(DeclarativeBase):
    pass


class Order(Base):
    __tablename__ = "orders"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    tenant_id: Mapped[int] = mapped_column(BigInteger)
    customer_id: Mapped[int] = mapped_column(BigInteger)
    total_cents: Mapped[int] = mapped_column(BigInteger)


TENANT_COLUMN = Order.__table__.c.tenant_id


class Workload:
    """The rows and the access order; the same formulas as tests/benches/peers.rs."""

    def __init__(self, rows, tenants, reads, scans, tops, limit):
        self.rows, self.tenants = rows, tenants
        self.reads, self.scans, self.tops, self.limit = reads, scans, tops, limit

    def tenant_of(self, id_):
        return (id_ - 1) % self.tenants + 1

    def customer_of(self, id_):
        return id_ * 31 % 997 + 1

    def total_of(self, id_):
        return (id_ * 104_729 + self.tenant_of(id_) * 7_919) % 1_000_000

    def read_id(self, k):
        return k * 7_919 % self.rows + 1

    def scan_tenant(self, k):
        return k * 37 % self.tenants + 1


def tenant_values(clause, out):
    """Collects v from every `tenant_id = v` ANDed into `clause`."""
    if isinstance(clause, BooleanClauseList):
        if clause.operator is operators.and_:
            for inner in clause.clauses:
                tenant_values(inner, out)
    elif (
        isinstance(clause, BinaryExpression)
        and clause.operator is operators.eq
        and isinstance(clause.right, BindParameter)
        and clause.left.shares_lineage(TENANT_COLUMN)
    ):
        out.append(clause.right.effective_value)
    return out


def session_factory(urls, placement):
    names = [f"s{i}" for i in range(len(urls))]
    engines = {
        name: create_engine(
            url,
            pool_size=1,
            max_overflow=0,
            pool_pre_ping=False,
            isolation_level="AUTOCOMMIT",
            # Nothing to roll back in autocommit: do not even call the driver's rollback.
            skip_autocommit_rollback=True,
        )
        for name, url in zip(names, urls)
    }

    def shard_of(tenant):
        return names[placement[tenant]]

    def shard_chooser(mapper, instance, clause=None):
        if instance is not None:
            return shard_of(instance.tenant_id)
        tenants = tenant_values(clause, []) if clause is not None else []
        if len({shard_of(t) for t in tenants}) != 1:
            raise ValueError("a statement without one tenant cannot pick a shard")
        return shard_of(tenants[0])

    def identity_chooser(mapper, primary_key, *, lazy_loaded_from, **kw):
        if lazy_loaded_from is not None:
            return [lazy_loaded_from.identity_token]
        return names

    def execute_chooser(context):
        tenants = tenant_values(context.statement.whereclause, [])
        if tenants:
            return sorted({shard_of(t) for t in tenants})
        return names

    factory = sessionmaker(
        class_=ShardedSession,
        shards=engines,
        shard_chooser=shard_chooser,
        identity_chooser=identity_chooser,
        execute_chooser=execute_chooser,
    )
    return factory, engines


def run(factory, engines, w):
    # Reset, and open each engine's one connection before any clock starts.
    for engine in engines.values():
        with engine.connect() as conn:
            conn.execute(text("TRUNCATE orders"))
    times = {}

    start, cpu = time.perf_counter(), time.process_time()
    for id_ in range(1, w.rows + 1):
        with factory() as session:
            session.add(
                Order(
                    id=id_,
                    tenant_id=w.tenant_of(id_),
                    customer_id=w.customer_of(id_),
                    total_cents=w.total_of(id_),
                )
            )
            session.commit()
    times["inserts"] = time.perf_counter() - start
    times["cpu_inserts"] = time.process_time() - cpu

    # Same plans on every side: fresh statistics, and no autovacuum during the reads.
    for engine in engines.values():
        with engine.connect() as conn:
            conn.execute(text("VACUUM ANALYZE orders"))

    check_reads = 0
    start, cpu = time.perf_counter(), time.process_time()
    for k in range(w.reads):
        id_ = w.read_id(k)
        tenant = w.tenant_of(id_)
        with factory() as session:
            row = session.execute(
                select(Order).where(Order.id == id_, Order.tenant_id == tenant)
            ).scalar_one()
            check_reads += row.total_cents
    times["point_reads"] = time.perf_counter() - start
    times["cpu_point_reads"] = time.process_time() - cpu

    check_scan_rows = check_scan_sum = 0
    start, cpu = time.perf_counter(), time.process_time()
    for k in range(w.scans):
        tenant = w.scan_tenant(k)
        with factory() as session:
            rows = (
                session.execute(select(Order).where(Order.tenant_id == tenant))
                .scalars()
                .all()
            )
            check_scan_rows += len(rows)
            check_scan_sum += sum(row.total_cents for row in rows)
    times["tenant_scans"] = time.perf_counter() - start
    times["cpu_tenant_scans"] = time.process_time() - cpu

    top = []
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(w.tops):
        with factory() as session:
            # No tenant criterion: execute_chooser sends it to every shard, and the
            # results come back concatenated, so the merge is ours.
            rows = (
                session.execute(
                    select(Order)
                    .order_by(Order.total_cents.desc(), Order.id)
                    .limit(w.limit)
                )
                .scalars()
                .all()
            )
            rows.sort(key=lambda row: (-row.total_cents, row.id))
            top = rows[: w.limit]
    times["top_n"] = time.perf_counter() - start
    times["cpu_top_n"] = time.process_time() - cpu

    times["check_reads"] = check_reads
    times["check_scan_rows"] = check_scan_rows
    times["check_scan_sum"] = check_scan_sum
    times["check_top"] = sum((i + 1) * row.id for i, row in enumerate(top))
    return times


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shards", required=True, help="comma-separated shard URLs")
    parser.add_argument(
        "--placement",
        help="comma-separated shard index of tenants 1..N (default: tenant %% shards)",
    )
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--tenants", type=int, default=200)
    parser.add_argument("--reads", type=int, default=20_000)
    parser.add_argument("--scans", type=int, default=2_000)
    parser.add_argument("--tops", type=int, default=500)
    parser.add_argument("--limit", type=int, default=20)
    args = parser.parse_args()

    urls = [
        url.replace("postgres://", "postgresql+psycopg2://", 1)
        for url in args.shards.split(",")
    ]
    if args.placement:
        placement = [None] + [int(s) for s in args.placement.split(",")]
    else:
        placement = [t % len(urls) for t in range(args.tenants + 1)]
    if len(placement) != args.tenants + 1:
        parser.error("--placement needs one shard index per tenant")

    w = Workload(args.rows, args.tenants, args.reads, args.scans, args.tops, args.limit)
    factory, engines = session_factory(urls, placement)
    try:
        times = run(factory, engines, w)
    finally:
        for engine in engines.values():
            engine.dispose()
    times["sqlalchemy"] = sqlalchemy.__version__
    print(json.dumps(times))


if __name__ == "__main__":
    main()
