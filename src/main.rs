use std::process::ExitCode;

use gomemlimit_injector::cli::{self, Cli};

/// mimalloc instead of glibc's malloc: a review allocates and frees thousands of small
/// objects, which glibc's malloc spends about a third of the server's time on, and glibc
/// keeps the memory of a large review in per-thread arenas where mimalloc returns it (see
/// the README, Performance).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    match cli::run(Cli::parse_invoked()) {
        Ok(code) => code,
        Err(e) => {
            // `{:#}` prints the whole cause chain on one line: "failed to X: failed to Y: ...".
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
