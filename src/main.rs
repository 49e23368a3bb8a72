use std::io::IsTerminal;
use std::process::ExitCode;

use roster::args::{Cli, Command, LogArgs, LogFormat};

/// jemalloc instead of glibc's malloc: see "Memory" in the README's Failure behaviour.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Logging to stderr with the filter of [`LogArgs::filter`]; a filter that does not parse stops roster
/// rather than logging at some other level than asked.
fn init_logging(log: &LogArgs) -> anyhow::Result<()> {
    let (source, text) = log.filter();
    let filter = tracing_subscriber::EnvFilter::builder()
        .parse(&text)
        .map_err(|err| anyhow::anyhow!("invalid log filter {text:?} from {source}: {err}"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match log.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Plain => builder.init(),
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    match Cli::parse_invoked().command {
        Command::Run(args) => {
            init_logging(&args.log)?;
            let config = roster::client::config(args.kubeconfig.as_deref()).await?;
            roster::run::run(config, args, roster::run::shutdown_signal(), None).await?;
        }
        #[cfg(feature = "dev")]
        Command::Dev(args) => {
            init_logging(&args.log)?;
            roster::dev::run(args).await?;
        }
        Command::Explain(args) => return roster::explain::run(args).await,
    }
    Ok(ExitCode::SUCCESS)
}
