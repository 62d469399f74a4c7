//! Compile-time tests of `#[derive(NetworkBehaviour)]`: what must compile (and run), and what
//! must not, with the expected errors checked in beside each case as `.stderr`.
//!
//! After an intended change of the messages, regenerate them with
//! `TRYBUILD=overwrite cargo test -p meshwire-swarm --test derive_ui` and review the diff.

// The derive is behind the default feature `macros`.
#![cfg(feature = "macros")]

#[test]
fn derive_ui() {
    let t = trybuild::TestCases::new();
    t.pass("tests/ui/pass/*.rs");
    t.compile_fail("tests/ui/fail/*.rs");
}
