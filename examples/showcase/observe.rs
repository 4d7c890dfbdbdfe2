//! What an operator sees of the run: logs (`RUST_LOG`), Prometheus metrics at `/metrics`
//! (every wharf crate's `metrics`, through `metrics-exporter-prometheus`), and with
//! `--trace` OpenTelemetry spans recorded in memory, checked at the end: every accepted
//! order's spans must form one connected trace, from the Kafka produce to the SQS event and
//! the Pulsar audit record.
//!
//! The trace crosses four brokers without a shared process: each wharf crate writes the
//! current span's W3C context into what it sends (Kafka record headers, the job's stored
//! fields, SQS message attributes, Pulsar properties) and continues it on receipt (feature
//! `otel`). The showcase adds only the spans of its own steps: `order_produce` (the load
//! generator), `customer_actor` (the per-customer actor) and `sqs_emit` / `pulsar_produce`
//! (the ticket job).

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use opentelemetry::trace::{SpanId, TraceId, TracerProvider as _};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

use crate::BoxError;
use crate::app::lock;
use crate::readback::Carried;

/// The most spans `--trace` keeps; later ones are counted, not kept.
pub(crate) const MAX_SPANS: usize = 200_000;

/// The spans every accepted order's trace must hold, in causal order.
pub(crate) const STAGES: [&str; 6] = [
    "order_produce",
    "sharded_message",
    "customer_actor",
    "wharf_job",
    "sqs_emit",
    "pulsar_produce",
];

/// The tracing subscriber (logs, and spans with `--trace`) and the Prometheus recorder.
pub(crate) struct Telemetry {
    /// The spans `--trace` recorded; `None` without `--trace`.
    pub(crate) spans: Option<SpanStore>,
    // Kept alive: dropping the provider would stop the export.
    _provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Installs the global subscriber: a log layer filtered by `RUST_LOG` and, with `trace`,
    /// `tracing-opentelemetry`'s layer over an always-sampling tracer that keeps the spans
    /// of wharf and of the showcase in a [`SpanStore`].
    pub(crate) fn install(trace: bool) -> Result<Self, BoxError> {
        let logs = tracing_subscriber::fmt::layer().with_filter(EnvFilter::new(
            std::env::var("RUST_LOG").unwrap_or_else(|_| "error,librdkafka=off,pulsar=off".into()),
        ));
        let (otel, spans, provider) = if trace {
            let store = SpanStore::default();
            let provider = SdkTracerProvider::builder()
                .with_simple_exporter(store.clone())
                .build();
            let layer = tracing_opentelemetry::layer()
                .with_tracer(provider.tracer("wharf-showcase"))
                // Spans only (no log events become span events), of wharf's crates and the
                // showcase, at info level and above, plus sharded-consumer's per-message
                // span (trace level, so that it costs nothing unless a layer asks for it).
                .with_filter(tracing_subscriber::filter::filter_fn(|meta| {
                    let target = meta.target();
                    meta.is_span()
                        && (target.starts_with("wharf") || target.starts_with("showcase"))
                        && (*meta.level() <= tracing::Level::INFO
                            || meta.name() == "sharded_message")
                }));
            (Some(layer), Some(store), Some(provider))
        } else {
            (None, None, None)
        };
        tracing_subscriber::registry()
            .with(logs)
            .with(otel)
            .try_init()
            .map_err(|e| format!("could not install the tracing subscriber: {e}"))?;
        Ok(Telemetry {
            spans,
            _provider: provider,
        })
    }
}

/// Installs the Prometheus recorder for the `metrics` facade and serves its text at
/// `http://ADDR/metrics`; answers the address bound (the port is free when `addr`'s is 0).
pub(crate) async fn serve_metrics(addr: SocketAddr) -> Result<SocketAddr, BoxError> {
    let handle = PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| format!("could not install the Prometheus recorder: {e}"))?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("could not bind {addr} for /metrics: {e}"))?;
    let bound = listener.local_addr()?;
    // Histograms' summaries are kept bounded by an upkeep the recorder leaves to its user.
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(5));
        loop {
            every.tick().await;
            upkeep.run_upkeep();
        }
    });
    let router = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || render(handle.clone())),
    );
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::error!(error = %e, "the /metrics server stopped");
        }
    });
    Ok(bound)
}

async fn render(handle: PrometheusHandle) -> String {
    handle.render()
}

/// One finished span, as much of it as the check and the tree need.
#[derive(Debug, Clone)]
pub(crate) struct Recorded {
    trace: TraceId,
    id: SpanId,
    parent: SpanId,
    name: Cow<'static, str>,
    /// The `order` attribute (the showcase's spans carry it).
    order: Option<i64>,
    start: SystemTime,
    end: SystemTime,
}

#[derive(Debug, Default)]
struct Store {
    spans: Vec<Recorded>,
    dropped: u64,
}

/// An OpenTelemetry exporter that keeps finished spans in memory, at most [`MAX_SPANS`].
#[derive(Debug, Clone, Default)]
pub(crate) struct SpanStore {
    inner: Arc<Mutex<Store>>,
}

impl SpanExporter for SpanStore {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let mut store = lock(&self.inner);
        for span in batch {
            if store.spans.len() >= MAX_SPANS {
                store.dropped += 1;
                continue;
            }
            let order = span
                .attributes
                .iter()
                .find(|kv| kv.key.as_str() == "order")
                .and_then(|kv| match &kv.value {
                    opentelemetry::Value::I64(n) => Some(*n),
                    other => other.as_str().parse().ok(),
                });
            store.spans.push(Recorded {
                trace: span.span_context.trace_id(),
                id: span.span_context.span_id(),
                parent: span.parent_span_id,
                name: span.name,
                order,
                start: span.start_time,
                end: span.end_time,
            });
        }
        Ok(())
    }
}

/// What the check of the recorded traces found.
#[derive(Debug, Default)]
pub(crate) struct TraceReport {
    /// Accepted orders whose spans form one connected trace holding every stage.
    pub(crate) connected: usize,
    /// Accepted orders checked.
    pub(crate) checked: usize,
    /// Orders whose trace misses a stage, with the stages missing (at most 10 kept).
    pub(crate) incomplete: Vec<(u64, Vec<&'static str>)>,
    /// How many orders' traces miss a stage.
    pub(crate) incomplete_count: usize,
    /// Orders with a span whose parent is not in the trace (at most 10 kept).
    pub(crate) disconnected: Vec<(u64, String)>,
    /// How many orders' traces have a span whose parent is not in it.
    pub(crate) disconnected_count: usize,
    /// Connected orders whose SQS event and Pulsar record, read back, carry the context of
    /// their sending span (`sqs_emit`, `pulsar_produce`) in that same trace.
    pub(crate) carried: usize,
    /// Orders whose read-back messages do not (at most 10 kept, with why).
    pub(crate) not_carried: Vec<(u64, String)>,
    /// How many orders' read-back messages do not.
    pub(crate) not_carried_count: usize,
    /// Spans recorded, and spans over [`MAX_SPANS`] not kept.
    pub(crate) spans: usize,
    pub(crate) dropped: u64,
    /// One complete order's trace, drawn as a tree.
    pub(crate) sample: Option<String>,
}

impl TraceReport {
    /// Broken traces (0 when every accepted order's trace is whole). With spans dropped over
    /// the cap, orders are not judged: their spans may simply not have been kept.
    pub(crate) fn broken(&self) -> usize {
        if self.dropped > 0 {
            0
        } else {
            self.incomplete_count + self.disconnected_count + self.not_carried_count
        }
    }

    /// The report's lines.
    pub(crate) fn print(&self) {
        println!(
            "trace: {} of {} accepted orders form one connected trace (order_produce → \
             sharded_message → customer_actor → wharf_job → sqs_emit + pulsar_produce); {} spans recorded",
            self.connected, self.checked, self.spans
        );
        if self.dropped > 0 {
            println!(
                "trace: {} spans over the {MAX_SPANS} kept were not recorded: orders were not judged (run shorter)",
                self.dropped
            );
        }
        for (order, missing) in &self.incomplete {
            println!(
                "trace: order {order}: no {} span in its trace",
                missing.join(", no ")
            );
        }
        if self.incomplete_count > self.incomplete.len() {
            println!(
                "trace: ... and {} more incomplete",
                self.incomplete_count - self.incomplete.len()
            );
        }
        for (order, why) in &self.disconnected {
            println!("trace: order {order}: {why}");
        }
        if self.disconnected_count > self.disconnected.len() {
            println!(
                "trace: ... and {} more disconnected",
                self.disconnected_count - self.disconnected.len()
            );
        }
        println!(
            "trace: {} of {} connected orders' SQS event and Pulsar record, read back, carry their sending span's context",
            self.carried, self.connected
        );
        for (order, why) in &self.not_carried {
            println!("trace: order {order}: {why}");
        }
        if self.not_carried_count > self.not_carried.len() {
            println!(
                "trace: ... and {} more without their context",
                self.not_carried_count - self.not_carried.len()
            );
        }
        if let Some(tree) = &self.sample {
            print!("{tree}");
        }
    }
}

impl SpanStore {
    /// Checks the traces of `accepted` orders (the ones Kafka acknowledged): each must be
    /// one trace, rooted at its `order_produce` span, holding every one of [`STAGES`], every
    /// span's parent in the same trace. `carried` holds, per sending stage, the
    /// `traceparent` each order's message carried when read back from its broker: it must
    /// name that stage's span in the order's trace.
    pub(crate) fn check(
        &self,
        accepted: &BTreeSet<u64>,
        carried: &[(&'static str, &Carried)],
    ) -> TraceReport {
        let store = lock(&self.inner);
        let mut by_trace: HashMap<TraceId, Vec<&Recorded>> = HashMap::new();
        let mut root_of: HashMap<u64, TraceId> = HashMap::new();
        for span in &store.spans {
            by_trace.entry(span.trace).or_default().push(span);
            if span.name == STAGES[0]
                && span.parent == SpanId::INVALID
                && let Some(order) = span.order.and_then(|o| u64::try_from(o).ok())
            {
                root_of.insert(order, span.trace);
            }
        }
        let mut report = TraceReport {
            spans: store.spans.len(),
            dropped: store.dropped,
            checked: accepted.len(),
            ..TraceReport::default()
        };
        for &order in accepted {
            let spans = root_of
                .get(&order)
                .and_then(|t| by_trace.get(t))
                .map(Vec::as_slice)
                .unwrap_or_default();
            let names: HashSet<&str> = spans.iter().map(|s| s.name.as_ref()).collect();
            let missing: Vec<&'static str> = STAGES
                .iter()
                .copied()
                .filter(|stage| !names.contains(stage))
                .collect();
            if !missing.is_empty() {
                report.incomplete_count += 1;
                if report.incomplete.len() < 10 {
                    report.incomplete.push((order, missing));
                }
                continue;
            }
            let ids: HashSet<SpanId> = spans.iter().map(|s| s.id).collect();
            let orphan = spans
                .iter()
                .find(|s| s.parent != SpanId::INVALID && !ids.contains(&s.parent));
            let roots = spans.iter().filter(|s| s.parent == SpanId::INVALID).count();
            if let Some(orphan) = orphan {
                report.disconnected_count += 1;
                if report.disconnected.len() < 10 {
                    report.disconnected.push((
                        order,
                        format!(
                            "span {} has parent {} not recorded in the trace",
                            orphan.name, orphan.parent
                        ),
                    ));
                }
                continue;
            }
            if roots != 1 {
                report.disconnected_count += 1;
                if report.disconnected.len() < 10 {
                    report
                        .disconnected
                        .push((order, format!("{roots} root spans in one trace")));
                }
                continue;
            }
            report.connected += 1;
            let mut why = None;
            for (stage, by_order) in carried {
                let Some(tp) = by_order.get(&order) else {
                    why = Some(format!(
                        "its {stage} message was read back without a traceparent"
                    ));
                    break;
                };
                let sent_from = spans.iter().any(|s| {
                    s.name == *stage && tp.starts_with(&format!("00-{}-{}-", s.trace, s.id))
                });
                if !sent_from {
                    why = Some(format!(
                        "its {stage} message carries traceparent {tp}, not its {stage} span's"
                    ));
                    break;
                }
            }
            match why {
                None => report.carried += 1,
                Some(why) => {
                    report.not_carried_count += 1;
                    if report.not_carried.len() < 10 {
                        report.not_carried.push((order, why));
                    }
                }
            }
            if report.sample.is_none() {
                report.sample = Some(draw(order, spans));
            }
        }
        report
    }
}

/// The trace of `order` as an indented tree, children in start order, each span with its
/// start (from the root's) and its duration.
fn draw(order: u64, spans: &[&Recorded]) -> String {
    let mut children: HashMap<SpanId, Vec<&Recorded>> = HashMap::new();
    let mut root = None;
    for span in spans {
        if span.parent == SpanId::INVALID {
            root = Some(*span);
        } else {
            children.entry(span.parent).or_default().push(span);
        }
    }
    let mut out = String::new();
    let Some(root) = root else {
        return out;
    };
    let _ = writeln!(
        out,
        "trace of order {order} (trace id {}), one sampled order:",
        root.trace
    );
    let ms = |from: SystemTime, to: SystemTime| {
        to.duration_since(from).unwrap_or_default().as_secs_f64() * 1000.0
    };
    // Depth-first, iteratively (bounded by the trace's size).
    let mut stack: Vec<(&Recorded, String, bool, bool)> = vec![(root, String::new(), true, true)];
    while let Some((span, prefix, last, is_root)) = stack.pop() {
        let branch = if is_root {
            ""
        } else if last {
            "└── "
        } else {
            "├── "
        };
        let label = format!("{prefix}{branch}{}", span.name);
        let _ = writeln!(
            out,
            "  {label:<44} at {:>8.1} ms, took {:>7.1} ms",
            ms(root.start, span.start),
            ms(span.start, span.end)
        );
        let child_prefix = if is_root {
            String::new()
        } else if last {
            format!("{prefix}    ")
        } else {
            format!("{prefix}│   ")
        };
        let mut kids = children.get(&span.id).cloned().unwrap_or_default();
        kids.sort_by_key(|s| s.start);
        let n = kids.len();
        for (i, kid) in kids.into_iter().enumerate().rev() {
            stack.push((kid, child_prefix.clone(), i + 1 == n, false));
        }
    }
    out
}
