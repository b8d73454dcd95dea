//! A tenant schema's shape marker, which lets the shape travel with the `BEGIN`.
//!
//! A schema's *shape* is a hash of its latest migration (see [`Session::schema`]). Reading
//! it costs a statement of its own after `BEGIN`, since the rows of a `BEGIN`'s simple
//! query are not returned. So each schema the library migrates also holds an empty view
//! whose name carries its shape (`tenancy_shape_` and 8 hex digits): a unit guesses the
//! shape (the last one read) and begins with `LOCK TABLE` on that marker, a utility
//! statement PostgreSQL runs without planning. The lock succeeding confirms the guess; the
//! marker missing (`42P01`: the schema has another shape, or no marker) sends the unit
//! the long way, where the shape is read, and with it whether its marker is there.
//!
//! The lock is held to the end of the unit, and a migration of the schema drops the
//! marker before it changes any table, so a migration waits for the units that confirmed
//! the old shape, and units begun meanwhile wait for the migration, then find the old
//! marker gone. A trigger on the migrations table drops the marker before anything else
//! changes that table (a migration run without the library), so a marker is never stale;
//! a schema holds at most one, of its shape.
//!
//! [`Session::schema`]: super::Session::schema

use std::collections::HashMap;
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use tenancy_core::Identifier;

/// The most schemas a process remembers as unmarked; past it, it forgets them and its
/// guess, and reads every shape until it reads one with its marker again (memory stays
/// bounded however many schemas predate markers).
const MAX_UNMARKED: usize = 100_000;

/// What every marker's name begins with.
pub(crate) const MARKER_PREFIX: &str = "tenancy_shape_";

/// The marker of `shape`: the prefix, then the hash's 32 bits as 8 hex digits (what
/// `lpad(to_hex(shape), 8, '0')` writes).
pub(crate) fn marker_name(shape: i32) -> String {
    format!(
        "{MARKER_PREFIX}{:08x}",
        u32::from_ne_bytes(shape.to_ne_bytes())
    )
}

/// The query of `schema`'s shape: a hash of the latest version in its migrations table
/// `table` (one row, column `shape`).
pub(crate) fn shape_sql(schema: &Identifier, table: &Identifier) -> String {
    shape_sql_quoted(&schema.quoted(), &table.quoted())
}

/// [`shape_sql`] of names already quoted.
fn shape_sql_quoted(schema: &str, table: &str) -> String {
    format!("SELECT hashtext(coalesce(max(version), '')) AS shape FROM {schema}.{table}")
}

/// [`marker_name`] in SQL: the marker of `shape`, an SQL expression of type `int4`.
fn marker_name_sql(shape: &str) -> String {
    format!("'{MARKER_PREFIX}' || lpad(to_hex({shape}), 8, '0')")
}

/// The SQL expression of whether the marker of `shape` (an SQL expression) exists in the
/// schema named by `schema` (another), for the set-up's read.
pub(crate) fn marker_exists_sql(schema: &str, shape: &str) -> String {
    format!(
        "to_regclass(format('%I.%I', {schema}, {})) IS NOT NULL",
        marker_name_sql(shape)
    )
}

/// The text that installs, in `schema`, the trigger on its migrations table `table` that
/// drops the schema's marker before anything changes that table, and the function it runs
/// (both replaced if present). The marker dropped is the one of the shape the schema has
/// until then: the library makes no other, so a schema holds at most one marker, of its
/// shape, and never needs its catalog listed.
pub(crate) fn trigger_sql(schema: &Identifier, table: &Identifier) -> String {
    let schema = schema.quoted();
    let table = table.quoted();
    format!(
        "CREATE OR REPLACE FUNCTION {schema}.tenancy_shape_changed() RETURNS trigger \
         LANGUAGE plpgsql AS $tenancy$ DECLARE marker text; BEGIN \
         SELECT {} INTO marker FROM ({}) AS m; \
         IF to_regclass(format('%I.%I', TG_TABLE_SCHEMA, marker)) IS NOT NULL THEN \
         EXECUTE format('DROP VIEW %I.%I', TG_TABLE_SCHEMA, marker); END IF; \
         RETURN NULL; END $tenancy$; \
         CREATE OR REPLACE TRIGGER tenancy_shape_changed BEFORE INSERT OR UPDATE OR DELETE \
         OR TRUNCATE ON {schema}.{table} FOR EACH STATEMENT \
         EXECUTE FUNCTION {schema}.tenancy_shape_changed()",
        marker_name_sql("m.shape"),
        shape_sql_quoted(&schema, &table)
    )
}

/// What a process knows of its tenant schemas' shapes, shared by every unit of a
/// [`Tenancy`](crate::Tenancy): the shape to guess, and the schemas whose units read
/// their shape instead, because they hold no marker of it (not yet migrated by this
/// version of the library) or may not lock it. While every schema has its marker, a unit
/// takes no lock here: two atomic loads.
#[derive(Debug, Default)]
pub(crate) struct Shapes {
    /// The shape last read from a schema that holds its marker, plus one (0: none yet).
    guess: AtomicI64,
    /// Whether `unmarked` holds any schema.
    any_unmarked: AtomicBool,
    /// Schemas whose units read their shape: `true` for a marker the role may not lock
    /// (kept until the process ends), `false` for one missing (until a read finds it).
    unmarked: RwLock<HashMap<Box<str>, bool>>,
}

impl Shapes {
    /// The shape a unit of `schema` guesses, if any.
    pub(crate) fn guess(&self, schema: &str) -> Option<i32> {
        let guess = self.guess.load(Ordering::Relaxed);
        if guess == 0 {
            return None;
        }
        if self.any_unmarked.load(Ordering::Relaxed) {
            let unmarked = self.unmarked.read().unwrap_or_else(|p| p.into_inner());
            if unmarked.contains_key(schema) {
                return None;
            }
        }
        i32::try_from(guess - 1).ok()
    }

    /// A unit's lock of the marker it guessed was refused: the role may not lock it
    /// (`denied`), so units of `schema` read their shape from now on. (A missing marker
    /// needs nothing here: the read that follows says whether the schema has one.)
    pub(crate) fn missed(&self, schema: &str, denied: bool) {
        if denied {
            self.mark(schema, Some(true));
        }
    }

    /// A set-up read `shape` from `schema`, whose marker of it is there (`marked`) or not.
    pub(crate) fn read(&self, schema: &str, shape: i32, marked: bool) {
        if marked {
            self.guess.store(i64::from(shape) + 1, Ordering::Relaxed);
            if self.any_unmarked.load(Ordering::Relaxed) {
                self.mark(schema, None);
            }
        } else if self.guess.load(Ordering::Relaxed) != 0 {
            // Without a guess nothing misses: nothing to remember.
            self.mark(schema, Some(false));
        }
    }

    /// Puts `schema` in `unmarked` (`Some`, a denial never downgraded) or takes it out
    /// unless denied (`None`).
    fn mark(&self, schema: &str, unmarked: Option<bool>) {
        let mut map = self.unmarked.write().unwrap_or_else(|p| p.into_inner());
        match unmarked {
            Some(denied) => {
                let entry = map.entry(schema.into()).or_insert(denied);
                *entry |= denied;
            }
            None => {
                if map.get(schema) == Some(&false) {
                    map.remove(schema);
                }
            }
        }
        if map.len() > MAX_UNMARKED {
            map.clear();
            self.guess.store(0, Ordering::Relaxed);
        }
        self.any_unmarked.store(!map.is_empty(), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Marker names are the hash's bits in 8 hex digits, as the SQL writes them.
    #[test]
    fn marker_names_carry_the_shape_in_eight_hex_digits() {
        assert_eq!(marker_name(0), "tenancy_shape_00000000");
        assert_eq!(marker_name(255), "tenancy_shape_000000ff");
        assert_eq!(marker_name(-1), "tenancy_shape_ffffffff");
        assert_eq!(marker_name(i32::MIN), "tenancy_shape_80000000");
    }

    /// The guess is the last shape read with its marker; a schema without one, or whose
    /// marker may not be locked, guesses nothing; a missing marker found later is taken
    /// back, a refused one is not.
    #[test]
    fn the_guess_follows_marked_reads_and_skips_unmarked_schemas() {
        let shapes = Shapes::default();
        assert_eq!(shapes.guess("a"), None);
        // Before any guess, an unmarked schema is not remembered.
        shapes.read("z", 1, false);
        assert!(!shapes.any_unmarked.load(Ordering::Relaxed));
        shapes.read("a", -7, true);
        assert_eq!(shapes.guess("b"), Some(-7));
        shapes.read("b", 3, false);
        assert_eq!(shapes.guess("b"), None);
        assert_eq!(shapes.guess("a"), Some(-7));
        shapes.read("b", 3, true);
        assert_eq!(shapes.guess("b"), Some(3));
        assert!(!shapes.any_unmarked.load(Ordering::Relaxed));
        shapes.missed("c", true);
        shapes.read("c", 3, true);
        assert_eq!(shapes.guess("c"), None);
        assert_eq!(shapes.guess("a"), Some(3));
        shapes.missed("a", false);
        assert_eq!(shapes.guess("a"), Some(3));
    }

    /// Past the bound, the unmarked schemas and the guess are forgotten.
    #[test]
    fn the_unmarked_schemas_are_bounded() {
        let shapes = Shapes::default();
        shapes.read("a", 5, true);
        for n in 0..=MAX_UNMARKED {
            shapes.read(&format!("s{n}"), 6, false);
        }
        assert_eq!(shapes.guess("a"), None);
        assert!(!shapes.any_unmarked.load(Ordering::Relaxed));
        shapes.read("a", 5, true);
        assert_eq!(shapes.guess("s1"), Some(5));
    }
}
