//! Tests that read or set the process environment, run one at a time: figment's `Jail` holds a
//! process-wide lock and restores the environment afterwards, so the configuration layering
//! tests (which set `ZONAL_*` variables) never leak into the tests that load a file.

/// Runs `f` inside figment's Jail (one at a time, environment restored afterwards); `f` sets
/// variables through the jail it is given.
#[allow(clippy::result_large_err)] // figment's Jail fixes the closure's error type.
pub fn isolated(f: impl FnOnce(&mut figment::Jail)) {
    figment::Jail::expect_with(|jail| {
        f(jail);
        Ok(())
    });
}
