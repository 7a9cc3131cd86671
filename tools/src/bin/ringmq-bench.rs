//! `ringmq-bench`: produce, consume and end-to-end load against a RocketMQ-protocol broker.
//! See `ringmq-bench --help`; the implementation is `ringmq_tools::bench`.

use std::process::ExitCode;

use anyhow::{Result, bail};
use clap::{CommandFactory, Parser, error::ErrorKind};
use ringmq_tools::bench::{self, Args, Mode, Params};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    // The in-process broker (--local) logs through tracing; RUST_LOG adjusts, warnings by default.
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let params = match Args::parse().validate() {
        Ok(params) => params,
        Err(error) => Args::command()
            .error(ErrorKind::ValueValidation, error)
            .exit(),
    };
    match run(&params) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("ringmq-bench: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(params: &Params) -> Result<()> {
    let summary = bench::run(params)?;
    print!("{summary}");
    if let Some(path) = &params.json {
        bench::write_json(&summary, path)?;
    }
    if summary.messages == 0 {
        bail!(
            "no messages were {}",
            if params.mode == Mode::Produce {
                "acknowledged"
            } else {
                "received"
            }
        );
    }
    Ok(())
}
