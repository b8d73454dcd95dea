//! The comment a unit's statements carry ([`Tag`]), a connection that adds it to each
//! statement ([`Tagged`]).

use sea_orm::{ConnectionTrait, DbBackend, DbErr, Statement};
use std::future::Future;
use std::pin::Pin;

/// The comment a unit's statements carry (see
/// [`Session::schema`](super::Session::schema)): empty, or `/* tenancy shape <n> */ `,
/// made only of digits and fixed text.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Tag(Option<std::sync::Arc<str>>);

impl Tag {
    /// A tag of the given text (made by the crate: fixed text and numbers only).
    pub(crate) fn text_of(text: String) -> Self {
        Tag(Some(text.into()))
    }

    /// The tag's text, if any.
    pub(crate) fn text(&self) -> Option<&str> {
        self.0.as_deref()
    }

    /// This tag, with `other`'s text before it.
    pub(crate) fn then(self, other: &Tag) -> Self {
        match (self.0, &other.0) {
            (None, _) => other.clone(),
            (Some(mine), None) => Tag(Some(mine)),
            (Some(mine), Some(theirs)) => Tag(Some(format!("{theirs}{mine}").into())),
        }
    }

    pub(crate) fn shape(hash: i32) -> Self {
        Tag(Some(format!("/* tenancy shape {hash} */ ").into()))
    }

    /// `statement` as a tagged unit sends it (streams take a statement, not a connection).
    pub(crate) fn apply(&self, mut statement: Statement) -> Statement {
        if let Some(tag) = &self.0 {
            statement.sql = format!("{tag}{}", statement.sql);
        }
        statement
    }
}

/// A connection whose statements carry a unit's [`Tag`]: the driver caches prepared
/// statements by their text, so tagged statements of different schema shapes never share
/// one. Everything else passes through.
pub(crate) struct Tagged<'a, C> {
    pub(crate) inner: &'a C,
    pub(crate) tag: &'a Tag,
}

/// The futures of [`ConnectionTrait`]'s methods, as its `async_trait` declares them.
type Boxed<'a, R> = Pin<Box<dyn Future<Output = Result<R, DbErr>> + Send + 'a>>;

// Written out rather than through `async_trait`: each method hands back the inner
// connection's own boxed future, so a tagged statement costs no box and no poll of its own.
impl<C: ConnectionTrait> ConnectionTrait for Tagged<'_, C> {
    fn get_database_backend(&self) -> DbBackend {
        self.inner.get_database_backend()
    }

    fn execute_raw<'a, 'f>(&'a self, stmt: Statement) -> Boxed<'f, sea_orm::ExecResult>
    where
        'a: 'f,
        Self: 'f,
    {
        self.inner.execute_raw(self.tag.apply(stmt))
    }

    fn execute_unprepared<'a, 's, 'f>(&'a self, sql: &'s str) -> Boxed<'f, sea_orm::ExecResult>
    where
        'a: 'f,
        's: 'f,
        Self: 'f,
    {
        self.inner.execute_unprepared(sql)
    }

    fn query_one_raw<'a, 'f>(&'a self, stmt: Statement) -> Boxed<'f, Option<sea_orm::QueryResult>>
    where
        'a: 'f,
        Self: 'f,
    {
        self.inner.query_one_raw(self.tag.apply(stmt))
    }

    fn query_all_raw<'a, 'f>(&'a self, stmt: Statement) -> Boxed<'f, Vec<sea_orm::QueryResult>>
    where
        'a: 'f,
        Self: 'f,
    {
        self.inner.query_all_raw(self.tag.apply(stmt))
    }

    fn support_returning(&self) -> bool {
        self.inner.support_returning()
    }

    fn is_mock_connection(&self) -> bool {
        self.inner.is_mock_connection()
    }
}
