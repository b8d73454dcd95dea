//! The current tenant: a thread-local slot, set by [`InTenant`] for the length of each
//! poll of the future it wraps and restored afterwards.

use std::any::Any;
use std::cell::RefCell;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// A tenant id of any type, shared by the futures that carry it.
type Carried = Arc<dyn Any + Send + Sync>;

thread_local! {
    /// The tenant of the future being polled on this thread, if any.
    static CURRENT: RefCell<Option<Carried>> = const { RefCell::new(None) };
}

/// The current tenant, if one of type `T` is set: inside a future wrapped by
/// [`in_tenant`] (or started by [`spawn`](super::spawn) from one), or in a handler behind
/// the web layer.
///
/// A tenant of another type counts as none.
pub fn current_tenant<T: Clone + 'static>() -> Option<T> {
    CURRENT.with(|slot| {
        slot.borrow()
            .as_ref()
            .and_then(|tenant| tenant.downcast_ref::<T>().cloned())
    })
}

/// Runs `future` with `tenant` as the current tenant: each time it is polled, the tenant is
/// set, and the one before it (an outer tenant, or none) is put back afterwards, also when
/// the poll panics.
///
/// The id is not validated here; [`Tenancy::current`](crate::Tenancy::current) validates
/// it as [`Tenancy::tenant`](crate::Tenancy::tenant) does.
pub fn in_tenant<T, F>(tenant: T, future: F) -> InTenant<F>
where
    T: Send + Sync + 'static,
    F: Future,
{
    InTenant {
        tenant: Some(Arc::new(tenant)),
        future,
    }
}

/// Wraps `future` so that it runs with the current tenant of the caller (none, if the
/// caller has none): for handing work to a task, a queue or an executor of your own.
pub fn with_current_tenant<F: Future>(future: F) -> InTenant<F> {
    InTenant {
        tenant: CURRENT.with(|slot| slot.borrow().clone()),
        future,
    }
}

pin_project_lite::pin_project! {
    /// A future that runs with a current tenant (or explicitly none): made by
    /// [`in_tenant`] and [`with_current_tenant`].
    #[must_use = "futures do nothing unless polled"]
    pub struct InTenant<F> {
        tenant: Option<Carried>,
        #[pin]
        future: F,
    }
}

impl<F> std::fmt::Debug for InTenant<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InTenant")
            .field("has_tenant", &self.tenant.is_some())
            .finish_non_exhaustive()
    }
}

/// Puts the slot back as it was when dropped, so a panicking poll restores it too.
struct Restore<'a> {
    carried: &'a mut Option<Carried>,
    before: Option<Carried>,
}

impl Drop for Restore<'_> {
    fn drop(&mut self) {
        let before = self.before.take();
        // The future's tenant goes back into the future; the outer one, into the slot.
        *self.carried = CURRENT.with(|slot| std::mem::replace(&mut *slot.borrow_mut(), before));
    }
}

impl<F: Future> Future for InTenant<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        // Moved in and out, not cloned: no reference count changes per poll.
        let mine = this.tenant.take();
        let before = CURRENT.with(|slot| std::mem::replace(&mut *slot.borrow_mut(), mine));
        let _restore = Restore {
            carried: this.tenant,
            before,
        };
        this.future.poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tenant_is_set_only_while_polled_and_nests() {
        let outer = in_tenant(1_i64, async {
            let before = current_tenant::<i64>();
            let inner = in_tenant(String::from("acme"), async {
                (current_tenant::<i64>(), current_tenant::<String>())
            })
            .await;
            (before, inner, current_tenant::<i64>())
        });
        let got = futures_util::FutureExt::now_or_never(outer);
        assert_eq!(
            got,
            Some((Some(1), (None, Some("acme".to_owned())), Some(1)))
        );
        assert_eq!(current_tenant::<i64>(), None);
    }

    #[test]
    fn a_panicking_poll_restores_the_outer_tenant() {
        let outer = in_tenant(1_i64, async {
            let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                futures_util::FutureExt::now_or_never(in_tenant(2_i64, async {
                    #[allow(clippy::panic)]
                    if current_tenant::<i64>() == Some(2) {
                        panic!("boom");
                    }
                }))
            }));
            (caught.is_err(), current_tenant::<i64>())
        });
        assert_eq!(
            futures_util::FutureExt::now_or_never(outer),
            Some((true, Some(1)))
        );
    }

    #[test]
    #[allow(clippy::async_yields_async)] // the captured future is the point: polled later
    fn with_current_tenant_captures_the_caller_s_tenant_or_none() {
        let captured = futures_util::FutureExt::now_or_never(in_tenant(5_i64, async {
            with_current_tenant(async { current_tenant::<i64>() })
        }));
        let Some(captured) = captured else {
            unreachable!("a ready future")
        };
        // Polled later, outside the tenant, it still runs in tenant 5.
        assert_eq!(
            futures_util::FutureExt::now_or_never(captured),
            Some(Some(5))
        );
        // Captured with none, it runs with none, even inside another tenant.
        let none = with_current_tenant(async { current_tenant::<i64>() });
        let inside = in_tenant(6_i64, none);
        assert_eq!(futures_util::FutureExt::now_or_never(inside), Some(None));
    }
}
