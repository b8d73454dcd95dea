//! The compile-time guarantees, pinned: every misuse of the derives and of the tenant
//! handle is a compile error whose message and span are kept in `ui/fail/*.stderr`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failure is a panic

#[test]
fn ui() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("ui/fail/*.rs");
    cases.pass("ui/pass/*.rs");
}
