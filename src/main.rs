//! The `shardgrid` server binary: parse the command line, set up logging on stderr, run.

use clap::Parser;

/// mimalloc instead of the system allocator (the default `mimalloc` feature): shards free, on
/// their own thread, routed ops and replies that other shards allocated, which glibc malloc
/// serves under the owning arena's lock. Measured in tuning.md, Allocator.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: shardgrid::allocator::Mimalloc = shardgrid::allocator::Mimalloc;

fn main() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = shardgrid::cli::Args::parse();
    let config = match args.into_config() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("shardgrid: {error}");
            std::process::exit(2);
        }
    };
    if let Err(error) = shardgrid::server::run(config) {
        eprintln!("shardgrid: {error}");
        std::process::exit(1);
    }
}
