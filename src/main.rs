use std::io::IsTerminal;

use clap::Parser;
use roster::args::{Cli, Command, LogArgs, LogFormat};

/// jemalloc instead of glibc's malloc: see "Memory" in the README's Failure behaviour.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn init_logging(log: &LogArgs) {
    let filter = tracing_subscriber::EnvFilter::try_new(&log.log_level).unwrap_or_else(|err| {
        eprintln!("invalid --log-level '{}': {err}; using info", log.log_level);
        tracing_subscriber::EnvFilter::new("info")
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match log.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Plain => builder.init(),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Run(args) => {
            init_logging(&args.log);
            let client = roster::run::client(args.kubeconfig.as_deref()).await?;
            roster::run::run(client, args, roster::run::shutdown_signal(), None).await
        }
        #[cfg(feature = "dev")]
        Command::Dev(args) => {
            init_logging(&args.log);
            roster::dev::run(args).await
        }
    }
}
