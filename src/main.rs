use std::process::ExitCode;

use gomemlimit_injector::cli::{self, Cli};

/// mimalloc instead of glibc's malloc: a review allocates and frees thousands of small
/// objects, which glibc's malloc spends about a third of the server's time on, and glibc
/// keeps the memory of a large review in per-thread arenas where mimalloc returns it (see
/// the README, Performance).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in the `mimalloc.h` (v3) that libmimalloc-sys builds, which
/// names no constant for it (its number changed between mimalloc versions; the dependency is
/// pinned to one version).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

fn main() -> ExitCode {
    // Memory freed goes back to the system at once, not 10 ms later: a large review frees
    // and allocates megabytes within milliseconds, and with the delay its peak resident
    // memory was about the sum of them (see the README, Performance). Reviews of ordinary
    // pods free no whole pages, and run as fast either way.
    // SAFETY: sets an option before any thread is started; mimalloc reads it on each purge.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
    match cli::run(Cli::parse_invoked()) {
        Ok(code) => code,
        Err(e) => {
            // `{:#}` prints the whole cause chain on one line: "failed to X: failed to Y: ...".
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
