//! `runnel`: parse flags, set up logging, run the server until SIGINT or SIGTERM.

use anyhow::Context;

/// The server allocates and frees large buffers at a high rate (query batches, COPY input,
/// frames); mimalloc keeps freed memory for reuse instead of returning it page by page.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use clap::Parser;
use runnel::config::{Cli, Command};

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = cli.server;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&config.log).context("invalid --log filter")?,
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    config.validate().map_err(anyhow::Error::msg)?;
    runnel::panics::install_hook();
    match cli.command.unwrap_or(Command::Server) {
        Command::Server => {
            runnel::storage::disk::raise_open_files_limit();
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .thread_name("runnel")
                // Statements nest up to sql::depth::MAX_EXPR_DEPTH; not every recursion over
                // them can grow the stack, so every thread that plans or runs one gets room
                // for a statement at that limit (only the pages used are ever touched).
                .thread_stack_size(runnel::sql::depth::THREAD_STACK_BYTES)
                .build()
                .context("starting the async runtime")?;
            let data_dir = config.data_dir.clone();
            runtime
                .block_on(runnel::server::run(
                    config,
                    |addr| {
                        tracing::info!(
                            "Runnel {} listening for Postgres clients on {addr}, data in {}",
                            env!("CARGO_PKG_VERSION"),
                            data_dir.display()
                        )
                    },
                    shutdown_signal(),
                ))
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        Command::Health => {
            runnel::http::check_health(&config.http_addr).map_err(anyhow::Error::msg)?;
        }
    }
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}
