//! `ringmq-admin`: RingMQ / RocketMQ cluster administration (see `ringmq_tools::admin`).
//!
//! Prints the result as text (or one JSON document with `--json`) on stdout, errors on stderr
//! (with `--json`, also as a JSON document on stdout), and exits with 0 (success), 1 (operation
//! failed), 2 (usage error) or 3 (no server reachable, or timeout).

use std::io::Write as _;
use std::process::ExitCode;

use clap::Parser;
use ringmq_tools::admin::{self, Cli, EXIT_FAILED};

fn main() -> ExitCode {
    // Usage errors exit with 2, --help and --version with 0 (clap's codes).
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
        )
        .with_writer(std::io::stderr)
        .init();
    let outcome = admin::run(&cli);
    let mut stdout = std::io::stdout().lock();
    let (printed, code) = match &outcome {
        Ok(rendered) if cli.json => (writeln!(stdout, "{}", rendered.json), 0),
        Ok(rendered) => (write!(stdout, "{}", rendered.text), 0),
        Err(failure) => {
            eprintln!("ringmq-admin: {}", failure.message);
            let printed = if cli.json {
                writeln!(stdout, "{}", failure.json())
            } else {
                Ok(())
            };
            (printed, failure.exit_code)
        }
    };
    if printed.and_then(|()| stdout.flush()).is_err() {
        // stdout is gone (a closed pipe): the result was not delivered.
        return ExitCode::from(EXIT_FAILED);
    }
    ExitCode::from(code)
}
