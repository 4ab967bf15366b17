//! The `shardgrid-bench` binary: parse the command line, run the scenario, print the table on
//! stdout, write the JSON report (to `--json FILE`, or a default path named on stderr). Exit
//! code 0 for a good run, 1 for a run that failed (the table says why), 2 for options it could
//! not run with.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use clap::Parser;
use shardgrid_bench::{command_line, run, Cli};

/// Where the JSON goes without `--json`: beside the build output in a cargo checkout (ignored
/// by git there), else in the current directory.
fn default_json_path(scenario: &str) -> std::io::Result<PathBuf> {
    let seconds = SystemTime::now().duration_since(UNIX_EPOCH).map(|now| now.as_secs()).unwrap_or(0);
    let file = format!("{scenario}-{seconds}.json");
    if Path::new("target").is_dir() {
        let folder = Path::new("target").join("shardgrid-bench");
        std::fs::create_dir_all(&folder)?;
        Ok(folder.join(file))
    } else {
        Ok(PathBuf::from(file))
    }
}

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
    let path = match &cli.scenario.target().json {
        Some(path) => Ok(path.clone()),
        None => default_json_path(cli.scenario.name()),
    };
    let written = path.and_then(|path| std::fs::write(&path, report.to_json() + "\n").map(|()| path));
    match written {
        Ok(path) => eprintln!("JSON report: {}", path.display()),
        Err(error) => {
            eprintln!("shardgrid-bench: cannot write the JSON report: {error}");
            std::process::exit(1);
        }
    }
    if report.failure.is_some() {
        std::process::exit(1);
    }
}
