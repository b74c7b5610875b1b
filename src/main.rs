use std::process::ExitCode;

use clap::Parser;
use harbor_iam_webhook::config::{Cli, Command};
use harbor_iam_webhook::{cli, telemetry};

/// mimalloc instead of glibc's malloc: a review makes and frees a few hundred small allocations
/// (the typed pod), which mimalloc serves with less work per call, about a tenth of a loaded
/// server's CPU (benches/README.md). Without transparent huge pages: with them a quiet webhook
/// holds several MiB it does not use.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    match Cli::parse().command {
        Command::Serve(args) => {
            let _log = telemetry::init(args.log_format, &args.log);
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(rt) => rt,
                Err(err) => {
                    eprintln!("error: cannot start the async runtime: {err}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(harbor_iam_webhook::serve(args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    tracing::error!("{err:#}");
                    eprintln!("error: {err:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Audit(args) => run_report(cli::audit(&args, &mut std::io::stdout().lock())),
        Command::Check(args) => run_report(cli::check(&args, &mut std::io::stdout().lock())),
        Command::Mutate(args) => match cli::run(&args, &mut std::io::stdout().lock()) {
            Ok(cli::Finished::Printed) => ExitCode::SUCCESS,
            Ok(cli::Finished::Denied(message)) => {
                eprintln!("denied: {message}");
                ExitCode::from(1)
            }
            Err(err) => {
                eprintln!("error: {err}");
                ExitCode::from(2)
            }
        },
    }
}

/// `audit` and `check`: exit 0 when all is well, 1 when something needs attention, 2 when they
/// could not run.
fn run_report<E: std::fmt::Display>(
    report: impl std::future::Future<Output = Result<bool, E>>,
) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(report) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::from(2)
        }
    }
}
