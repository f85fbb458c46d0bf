use std::process::ExitCode;

use gomemlimit_injector::cli::{self, Cli};

/// mimalloc instead of glibc's malloc: a review allocates and frees thousands of small
/// objects, which glibc's malloc spends about a third of the server's time on, and glibc
/// keeps the memory of a large review in per-thread arenas where mimalloc returns it (see
/// the README, Performance).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Options of the `mimalloc.h` (v3) that libmimalloc-sys builds, which names no constants
/// for them (their numbers changed between mimalloc versions; the dependency is pinned to
/// one version): `mi_option_purge_delay` and `mi_option_arena_purge_mult`.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
const MI_OPTION_ARENA_PURGE_MULT: libmimalloc_sys::mi_option_t = 24;

fn main() -> ExitCode {
    // Memory freed goes back to the system a millisecond later, not 100 ms (10 ms times 10
    // for the arenas that hold pages): a large review frees and allocates megabytes within
    // milliseconds, and with mimalloc's delay its peak resident memory was about the sum of
    // them. Not at once either: serving many small reviews, some pages empty and fill again
    // within microseconds, and giving each back and faulting it in again took a quarter of
    // the CPU time of a review over HTTP/2 on one worker (see the README, Performance). What
    // waits after a large review is given back when it ends (`release_memory`).
    // SAFETY: sets options before any thread is started; mimalloc reads them on each purge.
    unsafe {
        libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 1);
        libmimalloc_sys::mi_option_set(MI_OPTION_ARENA_PURGE_MULT, 1);
    }
    gomemlimit_injector::server::set_memory_release(release_memory);
    match cli::run(Cli::parse_invoked()) {
        Ok(code) => code,
        Err(e) => {
            // `{:#}` prints the whole cause chain on one line: "failed to X: failed to Y: ...".
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Gives back to the system now what mimalloc has freed and waits to give back.
fn release_memory() {
    // SAFETY: mi_collect may be called from any thread; forced, it also purges what other
    // threads freed.
    unsafe { libmimalloc_sys::mi_collect(true) };
}
