#!/usr/bin/env bash
# The derive's cost at compile time: builds a crate of 50 entities with
# `#[derive(TenantScoped)]` and the same crate without it, alternately, RUNS times each,
# and prints the median build times and their ratio as a markdown table row.
#
#   bash scripts/derive-build-time.sh [RUNS]
#
# Both crates depend on tenancy-sea and share one target directory, so only the entity
# crate itself is rebuilt in each timed run (after a `touch` of its source).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
runs=${1:-7}
entities=50
work="${CARGO_TARGET_DIR:-$root/target}/derive-bench"
export CARGO_TARGET_DIR="$work/target"
mkdir -p "$work"

generate() { # dir, derive list
    local dir=$1 derives=$2
    mkdir -p "$dir/src"
    cat > "$dir/Cargo.toml" <<TOML
[package]
name = "$(basename "$dir")"
version = "0.0.0"
edition = "2024"
publish = false

[dependencies]
tenancy-sea = { path = "$root/tenancy-sea" }
sea-orm = { version = "2.0.4", default-features = false, features = ["macros", "with-uuid"] }

[workspace]
TOML
    {
        echo "#![allow(missing_docs, dead_code)]"
        for i in $(seq 1 "$entities"); do
            cat <<RS
pub mod entity_$i {
    use sea_orm::entity::prelude::*;
    #[allow(unused_imports)]
    use tenancy_sea::prelude::*;

    #[derive($derives)]
    #[sea_orm(table_name = "entity_$i")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        $( [[ $derives == *TenantScoped* ]] && echo "#[tenant_id]" )
        pub tenant_id: i64,
        pub name: String,
        pub amount: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
RS
        done
    } > "$dir/src/lib.rs"
}

generate "$work/with_derive" "Clone, Debug, PartialEq, Eq, DeriveEntityModel, TenantScoped"
generate "$work/without_derive" "Clone, Debug, PartialEq, Eq, DeriveEntityModel"

build() { # dir -> seconds
    touch "$1/src/lib.rs"
    local start end
    start=$(date +%s.%N)
    cargo build -q --manifest-path "$1/Cargo.toml"
    end=$(date +%s.%N)
    awk -v a="$end" -v b="$start" 'BEGIN { print a - b }'
}

# Warm: dependencies are built once, outside the timings.
build "$work/with_derive" >/dev/null
build "$work/without_derive" >/dev/null

with=(); without=()
for _ in $(seq 1 "$runs"); do
    without+=("$(build "$work/without_derive")")
    with+=("$(build "$work/with_derive")")
done

median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
m_with=$(median "${with[@]}")
m_without=$(median "${without[@]}")
ratio=$(awk -v a="$m_with" -v b="$m_without" 'BEGIN { print a / b }')
printf '| %d entities, debug build of the entity crate | %.2f s | %.2f s | %.3f |\n' \
    "$entities" "$m_without" "$m_with" "$ratio"
