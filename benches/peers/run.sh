#!/usr/bin/env bash
# The peers benchmark (tests/benches/peers.rs): the framework's sharding against
# SQLAlchemy's ShardedSession and against routing written by hand in plain SeaORM, on the
# same 4 PostgreSQL shard databases, in one run.
#
#   benches/peers/run.sh
#
# Makes (once, and again when requirements.txt changes) a virtualenv with the Python side's
# pinned packages in PEERS_VENV (default ~/.cache/tenancy-peers-venv, outside the
# repository), then runs the bench with its python. The bench creates the shard databases,
# runs the three sides, prints the tables and drops the databases.
#
# TENANCY_PG_URL names the server (default postgres://postgres@127.0.0.1:5432/test; its
# user must be allowed to create databases); PEERS_REPS sets the repetitions (default 7).
set -euo pipefail
cd "$(dirname "$0")/../.."

venv="${PEERS_VENV:-$HOME/.cache/tenancy-peers-venv}"
requirements=benches/peers/requirements.txt

if ! command -v python3 >/dev/null 2>&1; then
    echo "FATAL: python3 is missing; install it (apt-get install python3 python3-venv)" >&2
    exit 1
fi
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv" || {
        echo "FATAL: cannot make a virtualenv in $venv; install python3-venv" >&2
        exit 1
    }
fi
if ! cmp -s "$requirements" "$venv/.peers-requirements"; then
    "$venv/bin/pip" install --quiet -r "$requirements"
    cp "$requirements" "$venv/.peers-requirements"
fi

export PEERS_PYTHON="$venv/bin/python"
exec cargo bench -p tenancy-tests --bench peers "$@"
