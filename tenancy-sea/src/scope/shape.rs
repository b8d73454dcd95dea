//! A tenant schema's shape marker, which lets the shape travel with the `BEGIN`.
//!
//! A schema's *shape* is a hash of its latest migration (see [`Session::schema`]). Reading
//! it costs a statement of its own after `BEGIN`, since the rows of a `BEGIN`'s simple
//! query are not returned. So each schema the library migrates also holds an empty view
//! whose name carries its shape (`tenancy_shape_` and 8 hex digits): a unit guesses the
//! shape (the one its schema was last read at, or the shape most schemas have, see
//! [`Shapes`]) and begins with `LOCK TABLE` on that marker, a utility
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

/// The most schemas a process remembers apart from the common shape (unmarked, or of
/// another shape); past it, it forgets those of the common shape first, then, if still
/// past it, all and its guess, and reads every shape until it reads one with its marker
/// again (memory stays bounded however many schemas predate markers or differ).
const MAX_APART: usize = 100_000;

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
/// [`Tenancy`](crate::Tenancy): the shape most schemas have, which units guess, and the
/// schemas known to differ from it: those of another shape (a fleet migration half done:
/// their units guess their own shape, so neither half misses on every unit), and those
/// whose units read their shape instead, because they hold no marker of it (not yet
/// migrated by this version of the library) or may not lock it. While no schema differs,
/// a unit takes no lock here: two atomic loads.
#[derive(Debug)]
pub(crate) struct Shapes {
    /// The shape guessed for a schema not in `apart` ([`NO_GUESS`]: none yet). Every
    /// `i32` is a shape, -1 and 0 included.
    guess: AtomicI64,
    /// Whether `apart` holds any schema.
    any_apart: AtomicBool,
    apart: RwLock<Apart>,
    /// The most schemas `apart` holds ([`MAX_APART`]).
    max_apart: usize,
}

/// The schemas whose units do not guess the common shape, and how many of them have each
/// other shape.
#[derive(Debug, Default)]
struct Apart {
    schemas: HashMap<Box<str>, Differs>,
    /// How many of `schemas` have each shape (see [`Shapes::change`]).
    counts: HashMap<i32, usize>,
    /// How many schemas of the common shape were forgotten to keep within the bound:
    /// they still weigh for it, until another shape becomes the common one.
    forgotten: usize,
}

/// How a schema differs from the common shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Differs {
    /// Its marker is of this other shape.
    Shape(i32),
    /// It has no marker of its shape (read it each unit, until a read finds one).
    Unmarked,
    /// Its marker may not be locked by this role (read its shape each unit, for as long as
    /// the process runs).
    Denied,
}

/// [`Shapes::guess`] when there is no guess yet.
const NO_GUESS: i64 = i64::MIN;

impl Default for Shapes {
    fn default() -> Self {
        Shapes::bounded(MAX_APART)
    }
}

impl Shapes {
    /// Knowing nothing yet, remembering at most `max_apart` schemas apart.
    fn bounded(max_apart: usize) -> Self {
        Shapes {
            guess: AtomicI64::new(NO_GUESS),
            any_apart: AtomicBool::new(false),
            apart: RwLock::default(),
            max_apart,
        }
    }
}

/// By how many schemas a shape must outnumber the common one, among the schemas
/// remembered, to become the common shape.
const FOLLOW_AFTER: usize = 16;

impl Apart {
    /// Sets (`Some`) or clears (`None`) how `schema` differs, keeping the counts.
    fn set(&mut self, schema: &str, differs: Option<Differs>) {
        let old = match differs {
            Some(differs) => self.schemas.insert(schema.into(), differs),
            None => self.schemas.remove(schema),
        };
        if let Some(Differs::Shape(shape)) = old {
            self.count(shape, false);
        }
        if let Some(Differs::Shape(shape)) = differs {
            self.count(shape, true);
        }
    }

    fn count(&mut self, shape: i32, up: bool) {
        let count = self.counts.entry(shape).or_default();
        match up {
            true => *count += 1,
            false => *count = count.saturating_sub(1),
        }
        if *count == 0 {
            self.counts.remove(&shape);
        }
    }
}

impl Shapes {
    /// The shape a unit of `schema` guesses, if any.
    pub(crate) fn guess(&self, schema: &str) -> Option<i32> {
        let guess = self.guess.load(Ordering::Relaxed);
        if guess == NO_GUESS {
            return None;
        }
        if self.any_apart.load(Ordering::Relaxed) {
            let apart = self.apart.read().unwrap_or_else(|p| p.into_inner());
            match apart.schemas.get(schema) {
                Some(Differs::Shape(shape)) => return Some(*shape),
                Some(Differs::Unmarked | Differs::Denied) => return None,
                None => {}
            }
        }
        i32::try_from(guess).ok()
    }

    /// A unit's lock of the marker it guessed was refused: the role may not lock it
    /// (`denied`), so units of `schema` read their shape from now on. (A missing marker
    /// needs nothing here: the read that follows says what the schema has.)
    pub(crate) fn missed(&self, schema: &str, denied: bool) {
        if denied {
            self.change(schema, Differs::Denied);
        }
    }

    /// A set-up read `shape` from `schema`, whose marker of it is there (`marked`) or not.
    pub(crate) fn read(&self, schema: &str, shape: i32, marked: bool) {
        let guess = self.guess.load(Ordering::Relaxed);
        if guess == NO_GUESS {
            // The first shape read with its marker is the common one. Without a guess
            // nothing misses: nothing to remember.
            if marked {
                self.guess.store(i64::from(shape), Ordering::Relaxed);
            }
            return;
        }
        match marked {
            true if i64::from(shape) == guess => {
                if self.any_apart.load(Ordering::Relaxed) {
                    self.change(schema, None);
                }
            }
            true => self.change(schema, Differs::Shape(shape)),
            false => self.change(schema, Differs::Unmarked),
        }
    }

    /// Records how `schema` differs (`None`: it has the common shape); a denial is never
    /// taken back. A shape had by more than [`FOLLOW_AFTER`] schemas more than the common
    /// one (among those remembered) becomes the common shape, so units of schemas not
    /// read yet guess it: a fleet migration is moving schemas to it. Schemas are not
    /// forgotten then, so a fleet that stays split misses once a schema, however its
    /// units alternate; once every schema remembered has the common shape, all are
    /// forgotten, and units take no lock here again. Past [`MAX_APART`] schemas, those of
    /// the common shape are forgotten (they guess it anyway); if the others alone are
    /// still too many, all are, with the guess, and shapes are read until one is read with
    /// its marker.
    fn change(&self, schema: &str, differs: impl Into<Option<Differs>>) {
        let differs = differs.into();
        let mut apart = self.apart.write().unwrap_or_else(|p| p.into_inner());
        let now = apart.schemas.get(schema).copied();
        if now == Some(Differs::Denied) || now == differs {
            return;
        }
        apart.set(schema, differs);
        let common = i32::try_from(self.guess.load(Ordering::Relaxed)).ok();
        let had = |apart: &Apart, shape: i32| {
            let forgotten = if Some(shape) == common {
                apart.forgotten
            } else {
                0
            };
            apart.counts.get(&shape).copied().unwrap_or(0) + forgotten
        };
        let follow = match (differs, common) {
            (Some(Differs::Shape(shape)), Some(old)) => {
                (had(&apart, shape) > had(&apart, old) + FOLLOW_AFTER).then_some(shape)
            }
            _ => None,
        };
        if let Some(shape) = follow {
            // The schemas of the new shape stay remembered: they are what the schemas of
            // the old one, remembered as they are read, must outnumber to take it back.
            self.guess.store(i64::from(shape), Ordering::Relaxed);
            apart.forgotten = 0;
        } else if apart.schemas.len() > self.max_apart {
            // First the schemas of the common shape, which guess it anyway (still
            // counted); all, with the guess, if the others alone are too many.
            if let Some(common) = common {
                apart
                    .schemas
                    .retain(|_, differs| *differs != Differs::Shape(common));
                apart.forgotten += apart.counts.remove(&common).unwrap_or(0);
            }
            if apart.schemas.len() > self.max_apart {
                self.guess.store(NO_GUESS, Ordering::Relaxed);
                *apart = Apart::default();
            }
        } else if common.is_some_and(|common| {
            apart.counts.get(&common).copied().unwrap_or(0) == apart.schemas.len()
        }) {
            // Every schema remembered has the common shape (the forgotten ones too).
            *apart = Apart::default();
        }
        self.any_apart
            .store(!apart.schemas.is_empty(), Ordering::Relaxed);
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

    /// The guess is the first shape read with its marker; a schema without one, or whose
    /// marker may not be locked, guesses nothing; a missing marker found later is taken
    /// back, a refused one is not.
    #[test]
    fn the_guess_skips_unmarked_schemas() {
        let shapes = Shapes::default();
        assert_eq!(shapes.guess("a"), None);
        // Before any guess, an unmarked schema is not remembered.
        shapes.read("z", 1, false);
        assert!(!shapes.any_apart.load(Ordering::Relaxed));
        shapes.read("a", -7, true);
        assert_eq!(shapes.guess("b"), Some(-7));
        shapes.read("b", -7, false);
        assert_eq!(shapes.guess("b"), None);
        assert_eq!(shapes.guess("a"), Some(-7));
        shapes.read("b", -7, true);
        assert_eq!(shapes.guess("b"), Some(-7));
        assert!(!shapes.any_apart.load(Ordering::Relaxed));
        shapes.missed("c", true);
        shapes.read("c", -7, true);
        assert_eq!(shapes.guess("c"), None);
        assert_eq!(shapes.guess("a"), Some(-7));
        shapes.missed("a", false);
        assert_eq!(shapes.guess("a"), Some(-7));
    }

    /// Half a fleet migrated: each schema guesses the shape it was last read with, so
    /// units of either shape stop missing once read; when the schemas remembered with the
    /// new shape outnumber those of the common one by more than [`FOLLOW_AFTER`], it
    /// becomes the common one, and the schemas of the old shape are remembered as they are
    /// read; once all remembered schemas have the common shape, they are forgotten.
    #[test]
    fn schemas_of_another_shape_guess_their_own_until_it_is_the_common_one() {
        let shapes = Shapes::default();
        shapes.read("s0", 1, true);
        for n in 1..=FOLLOW_AFTER {
            shapes.read(&format!("s{n}"), 2, true);
        }
        assert_eq!(shapes.guess("s0"), Some(1));
        assert_eq!(shapes.guess("unseen"), Some(1));
        for n in 1..=FOLLOW_AFTER {
            assert_eq!(shapes.guess(&format!("s{n}")), Some(2));
        }
        // A schema read back at the common shape (its migration rolled back) is forgotten.
        shapes.read("s1", 1, true);
        assert_eq!(shapes.guess("s1"), Some(1));
        shapes.read("s1", 2, true);
        // One more of the new shape: it becomes the common one.
        shapes.read("t", 2, true);
        assert_eq!(shapes.guess("unseen"), Some(2));
        assert_eq!(shapes.guess("s0"), Some(2), "not yet read at the old shape");
        shapes.read("s0", 1, true);
        assert_eq!(shapes.guess("s0"), Some(1));
        assert_eq!(shapes.guess("s3"), Some(2));
        // Unmarked and denied schemas stay apart whatever the common shape. A third shape
        // must outnumber the remembered schemas of the common one by more than
        // FOLLOW_AFTER (the 17 of shape 2 are still remembered).
        shapes.read("u", 2, false);
        shapes.missed("d", true);
        for n in 0..2 * FOLLOW_AFTER {
            shapes.read(&format!("r{n}"), 3, true);
        }
        assert_eq!(shapes.guess("unseen"), Some(2));
        for n in 2 * FOLLOW_AFTER..=2 * FOLLOW_AFTER + 1 {
            shapes.read(&format!("r{n}"), 3, true);
        }
        assert_eq!(shapes.guess("unseen"), Some(3));
        assert_eq!(shapes.guess("u"), None);
        assert_eq!(shapes.guess("d"), None);
        assert_eq!(shapes.guess("s0"), Some(1));
        // Every schema remembered read at the common shape: all are forgotten.
        let mut read: Vec<String> = vec!["s0".into(), "t".into(), "u".into()];
        read.extend((1..=FOLLOW_AFTER).map(|n| format!("s{n}")));
        read.extend((0..=2 * FOLLOW_AFTER + 1).map(|n| format!("r{n}")));
        for schema in &read {
            shapes.read(schema, 3, true);
        }
        assert!(
            shapes.any_apart.load(Ordering::Relaxed),
            "the denied one stays"
        );
        assert_eq!(shapes.guess("d"), None);
        assert_eq!(shapes.guess("s0"), Some(3));
    }

    /// Units of `schemas` (name, shape), each in turn, `passes` times, as `begin_unit`
    /// runs them: guess, and on a miss read. Returns the misses of each pass.
    fn units(shapes: &Shapes, schemas: &[(String, i32)], passes: usize) -> Vec<usize> {
        (0..passes)
            .map(|_| {
                let mut missed = 0;
                for (schema, shape) in schemas {
                    let guess = shapes.guess(schema);
                    if guess != Some(*shape) {
                        missed += usize::from(guess.is_some());
                        shapes.read(schema, *shape, true);
                    }
                }
                missed
            })
            .collect()
    }

    /// A fleet split in two shapes for good, its schemas' units interleaved: each schema
    /// misses at most once (when the common shape is not its own), then none does. A
    /// fleet migrated one schema at a time: at most two misses a schema, and once all
    /// have the new shape, no schema is remembered (units take no lock again).
    #[test]
    fn a_split_fleet_converges_and_a_migrated_one_is_forgotten() {
        let shapes = Shapes::default();
        let split: Vec<(String, i32)> = (0..400).map(|n| (format!("s{n}"), n % 2)).collect();
        let misses = units(&shapes, &split, 10);
        assert!(misses.iter().sum::<usize>() <= split.len(), "{misses:?}");
        assert_eq!(misses[8..], [0, 0], "{misses:?}");

        let shapes = Shapes::default();
        let mut fleet: Vec<(String, i32)> = (0..400).map(|n| (format!("s{n}"), 1)).collect();
        assert_eq!(units(&shapes, &fleet, 2), [0, 0]);
        let mut total = 0;
        for n in 0..fleet.len() {
            fleet[n].1 = 2;
            total += units(&shapes, &fleet, 1)[0];
        }
        assert!(
            total <= 2 * fleet.len(),
            "{total} misses migrating 400 schemas"
        );
        assert_eq!(units(&shapes, &fleet, 1), [0]);
        assert!(!shapes.any_apart.load(Ordering::Relaxed));
        assert_eq!(shapes.guess("unseen"), Some(2));
    }

    /// Every `i32` is a shape: -1 and 0 are guessed like any other.
    #[test]
    fn shapes_minus_one_and_zero_are_guessed() {
        for shape in [-1, 0, i32::MIN, i32::MAX] {
            let shapes = Shapes::default();
            shapes.read("a", shape, true);
            assert_eq!(shapes.guess("b"), Some(shape));
            shapes.read("c", 5, true);
            assert_eq!(shapes.guess("c"), Some(5));
            assert_eq!(shapes.guess("b"), Some(shape));
        }
    }

    /// Past the bound, the schemas remembered at the common shape are forgotten first
    /// (they guess it anyway, and still weigh for it): a fleet split in two shapes of 90
    /// schemas each, with room for 100, converges with one shape common and the other's
    /// schemas remembered.
    #[test]
    fn past_the_bound_the_common_shapes_schemas_go_first() {
        let shapes = Shapes::bounded(100);
        let split: Vec<(String, i32)> = (0..180).map(|n| (format!("s{n}"), n % 2)).collect();
        let misses = units(&shapes, &split, 20);
        assert_eq!(misses[18..], [0, 0], "{misses:?}");
        assert!(shapes.guess("unseen").is_some());
        let apart = shapes.apart.read().unwrap_or_else(|p| p.into_inner());
        assert!(apart.schemas.len() <= 100, "{}", apart.schemas.len());
    }

    /// Past the bound, the schemas apart and the guess are forgotten.
    #[test]
    fn the_schemas_apart_are_bounded() {
        let shapes = Shapes::bounded(1_000);
        shapes.read("a", 5, true);
        for n in 0..=1_000 {
            shapes.read(&format!("s{n}"), 6, false);
        }
        assert_eq!(shapes.guess("a"), None);
        assert!(!shapes.any_apart.load(Ordering::Relaxed));
        shapes.read("a", 5, true);
        assert_eq!(shapes.guess("s1"), Some(5));
    }
}
