//! The `shardgrid-bench` binary: parse the command line, run the scenario, print the table on
//! stdout, write the JSON report if asked. Exit code 0 for a good run, 1 for a run that failed
//! (the table says why), 2 for options it could not run with.

use clap::Parser;
use shardgrid_bench::{command_line, run, Cli};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let cli = Cli::parse();
    let report = match run(&cli.scenario, command_line(&args)) {
        Ok(report) => report,
        Err(error) => {
            eprintln!("shardgrid-bench: {error}");
            std::process::exit(2);
        }
    };
    print!("{}", report.table());
    if let Some(path) = &cli.scenario.target().json {
        if let Err(error) = std::fs::write(path, report.to_json() + "\n") {
            eprintln!("shardgrid-bench: cannot write {}: {error}", path.display());
            std::process::exit(1);
        }
    }
    if report.failure.is_some() {
        std::process::exit(1);
    }
}
