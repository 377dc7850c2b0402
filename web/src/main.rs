use clap::Parser;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = onpyrunner::cli::Cli::parse();
    let code = match onpyrunner::cli::main(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("onpyrunner: {e:#}");
            onpyrunner::cli::EXIT_SANDBOX_ERROR
        }
    };
    std::process::exit(code);
}
