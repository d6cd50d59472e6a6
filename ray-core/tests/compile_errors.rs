//! The macros' errors on wrong signatures, as a user sees them: each case under `tests/ui`
//! must fail to compile with the message (and the span in the user's code) in its `.stderr`;
//! the `pass` cases must build and run.

#[test]
fn macro_errors_point_at_the_users_code() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/fail_*.rs");
    t.pass("tests/ui/pass_*.rs");
}
