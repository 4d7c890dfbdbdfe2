//! The command line: `--help`'s text and the parsed options.

use std::time::Duration;

pub(crate) const HELP: &str = "\
wharf showcase: a ticketing back end composing every wharf crate under one supervision tree.

Orders go to Kafka (keyed by customer), a sharded consumer keeps per-customer state in order
and enqueues a job per order in Redis (job-partition); job workers issue the ticket, emit a
webhook event to SQS and an acknowledged audit record to Pulsar. At the end the SQS queue and
the Pulsar topic are read back: every order must have become exactly one ticket, one event
and one audit record. The last line is `lost: N`; the exit status is 1 when N > 0 (or, with
--trace, when an accepted order's trace is not whole).

USAGE: showcase [OPTIONS]        (scripts/demo [OPTIONS] installs the brokers and runs this)

OPTIONS:
  --duration SECS    how long the load generator runs (default 30)
  --rate N           orders per second (default 50)
  --customers N      distinct customers, the sharding and execution key (default 50)
  --chaos            during the run: cut the Kafka connection, kill and restart the Kafka
                     broker (Tansu keeps its data in S3 on moto then), restart the Pulsar
                     broker, make SQS unreachable for a while, kill a job worker; the
                     summary shows each fault and its recovery time
  --drain SECS       after the load stops, how long to wait for the last tickets (default 60)
  --kafka HOST:PORT  use this Kafka instead of starting Tansu (no Kafka fault with --chaos)
  --pulsar URL       use this Pulsar (pulsar://host:port) instead of starting pulsar-lite
  --sqs URL          use this SQS endpoint (http://host:port) instead of starting moto
                     (credentials and region from the standard AWS variables, else test/us-east-1)
  --redis URL        use this Redis (redis://host:port/) instead of starting redis-server
  --quiet            no live progress lines
  --trace            record every span with OpenTelemetry (in memory): at the end, check that
                     each accepted order's spans form one connected trace (Kafka produce →
                     consume → actor → job → SQS emit + Pulsar produce) and print one order's
                     tree; at most 200,000 spans are kept (the rest are counted, not checked)
  --console ADDR     serve the operator's web console (jobs, supervision tree, clients) at
                     http://ADDR/ while it runs (default 127.0.0.1:0, a free loopback port;
                     the address is printed once the tree runs; `off`: none)
  --metrics ADDR     serve Prometheus metrics at http://ADDR/metrics (default 127.0.0.1:0,
                     a free loopback port; the address is printed at start; `off`: none)
  -h, --help         this text

Local brokers are started by the program (wharf-testkit, binaries from scripts/install) on
free loopback ports and stopped at its end. RUST_LOG=info shows the crates' own logs.";

#[derive(Debug, Clone)]
pub(crate) struct Args {
    pub(crate) duration: Duration,
    pub(crate) rate: u64,
    pub(crate) customers: u64,
    pub(crate) chaos: bool,
    pub(crate) drain: Duration,
    pub(crate) kafka: Option<String>,
    pub(crate) pulsar: Option<String>,
    pub(crate) sqs: Option<String>,
    pub(crate) redis: Option<String>,
    pub(crate) quiet: bool,
    pub(crate) trace: bool,
    /// Where `/metrics` is served; `None`: not at all.
    pub(crate) metrics: Option<std::net::SocketAddr>,
    /// Where the web console is served; `None`: not at all.
    pub(crate) console: Option<std::net::SocketAddr>,
}

pub(crate) fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        duration: Duration::from_secs(30),
        rate: 50,
        customers: 50,
        chaos: false,
        drain: Duration::from_secs(60),
        kafka: None,
        pulsar: None,
        sqs: None,
        redis: None,
        quiet: false,
        trace: false,
        metrics: Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0))),
        console: Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0))),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .ok_or_else(|| format!("{name} needs a value (see --help)"))
        };
        let number = |name: &str, v: String| {
            v.parse::<f64>()
                .ok()
                .filter(|n| n.is_finite() && *n > 0.0)
                .ok_or_else(|| format!("{name} wants a positive number, not {v:?}"))
        };
        match flag.as_str() {
            "-h" | "--help" => {
                use std::io::Write as _;
                let _ = writeln!(std::io::stdout(), "{HELP}"); // a closed pipe (| head) is fine
                std::process::exit(0);
            }
            "--duration" => {
                args.duration = Duration::from_secs_f64(number("--duration", value("--duration")?)?)
            }
            "--drain" => {
                args.drain = Duration::from_secs_f64(number("--drain", value("--drain")?)?)
            }
            "--rate" => args.rate = number("--rate", value("--rate")?)?.round().max(1.0) as u64,
            "--customers" => {
                args.customers = number("--customers", value("--customers")?)?
                    .round()
                    .max(1.0) as u64
            }
            "--chaos" => args.chaos = true,
            "--quiet" => args.quiet = true,
            "--trace" => args.trace = true,
            "--console" => {
                let v = value("--console")?;
                args.console = match v.as_str() {
                    "off" => None,
                    addr => Some(addr.parse().map_err(|e| {
                        format!("--console wants HOST:PORT (e.g. 127.0.0.1:8080) or off, not {addr:?}: {e}")
                    })?),
                };
            }
            "--metrics" => {
                let v = value("--metrics")?;
                args.metrics = match v.as_str() {
                    "off" => None,
                    addr => Some(addr.parse().map_err(|e| {
                        format!("--metrics wants HOST:PORT (e.g. 127.0.0.1:9100) or off, not {addr:?}: {e}")
                    })?),
                };
            }
            "--kafka" => args.kafka = Some(value("--kafka")?),
            "--pulsar" => args.pulsar = Some(value("--pulsar")?),
            "--sqs" => args.sqs = Some(value("--sqs")?),
            "--redis" => args.redis = Some(value("--redis")?),
            other => return Err(format!("unknown argument {other:?} (see --help)")),
        }
    }
    // Bounded: the generator keeps a counter per customer and the ledgers an entry per order.
    if args.customers > 1_000_000 || args.rate > 100_000 {
        return Err("--customers is limited to 1,000,000 and --rate to 100,000".into());
    }
    Ok(args)
}
