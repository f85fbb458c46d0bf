use std::process::ExitCode;

use gomemlimit_injector::cli::{self, Cli};

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
