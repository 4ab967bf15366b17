//! The command line (clap derive): one subcommand per scenario, each with the options that
//! mean something for it. Checking what clap cannot (the URL, the core list, the auth source)
//! happens in `runner::Plan::new`, so the library's callers get the same checks as the binary.

use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use serde::Serialize;

#[derive(Parser, Debug, Clone)]
#[command(
    name = "shardgrid-bench",
    version,
    about = "Load generator for servers speaking the TopGun client protocol",
    long_about = "Load generator for servers speaking the TopGun client protocol (shardgrid or any other). \
                  Closed loop (--inflight requests per connection) or open loop (--rate ops/s in total, \
                  latency measured from the intended send time), HDR latency histograms, a table on stdout \
                  and JSON with --json."
)]
pub struct Cli {
    #[command(subcommand)]
    pub scenario: Scenario,
}

#[derive(Subcommand, Debug, Clone, Serialize)]
#[serde(tag = "scenario", rename_all = "kebab-case")]
pub enum Scenario {
    /// Writes: OP_BATCH of PUTs, acknowledged by OP_ACK.
    Put(PutArgs),
    /// Writes and reads (QUERY_SUB one-shot: QUERY_RESP, then QUERY_UNSUB) mixed per request.
    Mixed(MixedArgs),
    /// Live-query fan-out: subscribers hold a QUERY_SUB on a map, writers write to it; latency
    /// from the write's send time to its SERVER_EVENT / QUERY_UPDATE at every subscriber.
    Fanout(FanoutArgs),
    /// Topic pub/sub: subscribers send TOPIC_SUB, publishers TOPIC_PUB; latency from publish to
    /// TOPIC_MESSAGE at every subscriber.
    Pubsub(PubsubArgs),
    /// Opens N connections as fast as possible (with auth), measures connect+auth, closes them.
    ConnectStorm(ConnectStormArgs),
}

impl Scenario {
    pub fn name(&self) -> &'static str {
        match self {
            Scenario::Put(_) => "put",
            Scenario::Mixed(_) => "mixed",
            Scenario::Fanout(_) => "fanout",
            Scenario::Pubsub(_) => "pubsub",
            Scenario::ConnectStorm(_) => "connect-storm",
        }
    }

    pub fn target(&self) -> &TargetArgs {
        match self {
            Scenario::Put(args) => &args.target,
            Scenario::Mixed(args) => &args.put.target,
            Scenario::Fanout(args) => &args.target,
            Scenario::Pubsub(args) => &args.target,
            Scenario::ConnectStorm(args) => &args.target,
        }
    }
}

/// Where to connect, how to authenticate, where the generator runs and where results go.
#[derive(Args, Debug, Clone, Serialize)]
pub struct TargetArgs {
    /// WebSocket URL of the server (ws:// only).
    #[arg(long, default_value = "ws://127.0.0.1:8080/ws")]
    pub url: String,

    /// CPUs to run the generator's threads on, one pinned thread per CPU, like `1` or `2-3`.
    /// Default: one unpinned thread.
    #[arg(long)]
    pub cores: Option<String>,

    /// A JWT sent in AUTH by every connection.
    #[arg(long, conflicts_with = "jwt_secret")]
    #[serde(skip)]
    pub token: Option<String>,

    /// HS256 secret to mint one token per connection with (sub = bench-<n>).
    #[arg(long)]
    #[serde(skip)]
    pub jwt_secret: Option<String>,

    /// Write the results as JSON to this file. Default: `target/shardgrid-bench/<scenario>-<unix
    /// time>.json` when `./target` exists (a cargo checkout), else `./<scenario>-<unix time>.json`.
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,

    /// No progress line on stderr.
    #[arg(long)]
    pub quiet: bool,
}

/// How long the run lasts.
#[derive(Args, Debug, Clone, Serialize)]
pub struct TimingArgs {
    /// Measured time, after the warmup: seconds (`10`, `2.5`) or with a unit (`500ms`, `10s`).
    #[arg(long, default_value = "10", value_parser = parse_duration)]
    #[serde(serialize_with = "serialize_secs")]
    pub duration: Duration,

    /// Load before measuring starts, not recorded.
    #[arg(long, default_value = "1", value_parser = parse_duration)]
    #[serde(serialize_with = "serialize_secs")]
    pub warmup: Duration,
}

/// How requests are paced.
#[derive(Args, Debug, Clone, Serialize)]
pub struct LoadArgs {
    /// Closed loop: requests (batches) in flight per connection. With --rate: the most in
    /// flight per connection before sending waits (default 1024).
    #[arg(long)]
    pub inflight: Option<usize>,

    /// Open loop: operations per second in total, spread evenly over the connections; latency
    /// counts from each request's intended send time (coordinated omission corrected).
    #[arg(long)]
    pub rate: Option<f64>,
}

/// What the writes look like.
#[derive(Args, Debug, Clone, Serialize)]
pub struct WriteArgs {
    /// PUT ops per OP_BATCH.
    #[arg(long, default_value_t = 10)]
    pub batch: u32,

    /// Distinct keys written (and read).
    #[arg(long, default_value_t = 10_000)]
    pub keys: u64,

    /// Bytes of padding in each value.
    #[arg(long, default_value_t = 100)]
    pub value_bytes: usize,

    /// Write concern asked for on each op (PROTOCOL.md §6.10).
    #[arg(long, ignore_case = true)]
    pub write_concern: Option<WriteConcern>,

    /// Map name; with --maps N > 1, connection c uses `<map>-<c % N>`.
    #[arg(long, default_value = "bench")]
    pub map: String,

    /// Maps to spread connections over. Every writer of a map is interested in it, so with
    /// one map each write also goes out as a SERVER_EVENT to every other connection.
    #[arg(long, default_value_t = 1)]
    pub maps: u32,
}

#[derive(Args, Debug, Clone, Serialize)]
pub struct PutArgs {
    #[command(flatten)]
    #[serde(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    #[serde(flatten)]
    pub timing: TimingArgs,
    #[command(flatten)]
    #[serde(flatten)]
    pub load: LoadArgs,
    #[command(flatten)]
    #[serde(flatten)]
    pub write: WriteArgs,

    /// Connections.
    #[arg(long, default_value_t = 10)]
    pub conns: usize,
}

#[derive(Args, Debug, Clone, Serialize)]
pub struct MixedArgs {
    #[command(flatten)]
    #[serde(flatten)]
    pub put: PutArgs,

    /// Fraction of requests that are reads (0.0–1.0); the rest are write batches.
    #[arg(long, default_value_t = 0.5)]
    pub read_ratio: f64,
}

#[derive(Args, Debug, Clone, Serialize)]
pub struct FanoutArgs {
    #[command(flatten)]
    #[serde(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    #[serde(flatten)]
    pub timing: TimingArgs,
    #[command(flatten)]
    #[serde(flatten)]
    pub load: LoadArgs,

    /// Subscriber connections, each holding a QUERY_SUB on the whole map.
    #[arg(long, default_value_t = 10)]
    pub subscribers: usize,

    /// Writer connections.
    #[arg(long, default_value_t = 1)]
    pub writers: usize,

    /// PUT ops per OP_BATCH.
    #[arg(long, default_value_t = 1)]
    pub batch: u32,

    /// Distinct keys per writer.
    #[arg(long, default_value_t = 1_000)]
    pub keys: u64,

    /// Bytes of padding in each value.
    #[arg(long, default_value_t = 100)]
    pub value_bytes: usize,

    #[arg(long, default_value = "bench-fanout")]
    pub map: String,
}

#[derive(Args, Debug, Clone, Serialize)]
pub struct PubsubArgs {
    #[command(flatten)]
    #[serde(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    #[serde(flatten)]
    pub timing: TimingArgs,
    #[command(flatten)]
    #[serde(flatten)]
    pub load: LoadArgs,

    /// Subscriber connections (TOPIC_SUB).
    #[arg(long, default_value_t = 10)]
    pub subscribers: usize,

    /// Publisher connections. Topics have no acknowledgement, so each TOPIC_PUB is followed by
    /// a PING and the PONG stands for the publish in the closed loop.
    #[arg(long, default_value_t = 1)]
    pub publishers: usize,

    /// Bytes of padding in each message.
    #[arg(long, default_value_t = 100)]
    pub value_bytes: usize,

    #[arg(long, default_value = "bench-topic")]
    pub topic: String,
}

#[derive(Args, Debug, Clone, Serialize)]
pub struct ConnectStormArgs {
    #[command(flatten)]
    #[serde(flatten)]
    pub target: TargetArgs,

    /// Connections opened at once.
    #[arg(long, default_value_t = 1_000)]
    pub conns: usize,

    /// Times to open and close all of them.
    #[arg(long, default_value_t = 1)]
    pub rounds: u32,
}

/// Write-concern levels (PROTOCOL.md §6.10), named as on the wire.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum WriteConcern {
    #[value(name = "FIRE_AND_FORGET")]
    FireAndForget,
    #[value(name = "MEMORY")]
    Memory,
    #[value(name = "APPLIED")]
    Applied,
    #[value(name = "REPLICATED")]
    Replicated,
    #[value(name = "PERSISTED")]
    Persisted,
}

impl WriteConcern {
    pub fn as_wire(self) -> &'static str {
        match self {
            WriteConcern::FireAndForget => "FIRE_AND_FORGET",
            WriteConcern::Memory => "MEMORY",
            WriteConcern::Applied => "APPLIED",
            WriteConcern::Replicated => "REPLICATED",
            WriteConcern::Persisted => "PERSISTED",
        }
    }
}

/// Durations go into the JSON report as seconds.
fn serialize_secs<S: serde::Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_f64(duration.as_secs_f64())
}

/// `10`, `2.5`, `500ms`, `10s`, `2m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, scale) = if let Some(number) = text.strip_suffix("ms") {
        (number, 1e-3)
    } else if let Some(number) = text.strip_suffix('s') {
        (number, 1.0)
    } else if let Some(number) = text.strip_suffix('m') {
        (number, 60.0)
    } else {
        (text, 1.0)
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("cannot parse duration {text:?}: expected e.g. 10, 2.5, 500ms, 10s"))?;
    if !value.is_finite() || value < 0.0 {
        return Err(format!("duration {text:?} must be a non-negative number"));
    }
    Ok(Duration::from_secs_f64(value * scale))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_durations() {
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("2.5"), Ok(Duration::from_millis(2_500)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("3s"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("-1").is_err());
    }

    // Goal: the example command line parses, with the defaults it relies on.
    #[test]
    fn parses_the_documented_command_line() {
        let cli =
            Cli::try_parse_from(["shardgrid-bench", "put", "--url", "ws://127.0.0.1:8080/ws", "--duration", "10"])
                .unwrap();
        let Scenario::Put(args) = cli.scenario else { panic!("put") };
        assert_eq!(args.timing.duration, Duration::from_secs(10));
        assert_eq!(args.write.batch, 10);
        assert!(args.load.rate.is_none());
        assert!(Cli::try_parse_from(["shardgrid-bench", "put", "--token", "a", "--jwt-secret", "b"]).is_err());
        let cli = Cli::try_parse_from(["shardgrid-bench", "put", "--write-concern", "persisted"]).unwrap();
        let Scenario::Put(args) = cli.scenario else { panic!("put") };
        assert_eq!(
            args.write.write_concern.map(WriteConcern::as_wire),
            Some("PERSISTED"),
            "normalised to the wire text"
        );
    }
}
