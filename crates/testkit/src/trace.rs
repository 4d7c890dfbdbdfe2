//! A recorder for the tests of trace propagation (feature `otel`): one process-wide
//! subscriber whose OpenTelemetry spans are exported, as each span closes, into memory, and
//! which also keeps every `tracing` event at debug level or above.
//!
//! ```no_run
//! let recorder = wharf_testkit::trace::recorder();
//! // ... run spans; then
//! let _finished = recorder.spans();
//! let _events = recorder.events();
//! ```
//!
//! The subscriber is the global default, installed on first use, so it sees the spans of
//! every thread and runtime of the test binary: a test tells its own spans and events from
//! the others' by a value only it uses (a job id, an event id, a malformed header's text).

use std::fmt::Write as _;
use std::sync::{Arc, Mutex, OnceLock};

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::{Layer, Registry};

/// One `tracing` event as recorded: its target, level and fields (`message` included),
/// written as `name=value` pairs separated by spaces.
#[derive(Debug, Clone)]
pub struct RecordedEvent {
    /// The event's target (its module path, unless set).
    pub target: String,
    /// Its level.
    pub level: tracing::Level,
    /// Its fields, `name=value` separated by spaces, in the order they were recorded.
    pub fields: String,
}

/// The in-memory exporter and the recorded events; see [`recorder`].
#[derive(Debug)]
pub struct Recorder {
    // Kept so it never shuts down (its shutdown would empty the exporter).
    _provider: SdkTracerProvider,
    exporter: InMemorySpanExporter,
    events: Arc<Mutex<Vec<RecordedEvent>>>,
}

impl Recorder {
    /// Every span finished so far (a span is exported when it closes).
    pub fn spans(&self) -> Vec<SpanData> {
        self.exporter.get_finished_spans().unwrap_or_default()
    }

    /// Every event at debug level or above recorded so far.
    pub fn events(&self) -> Vec<RecordedEvent> {
        self.events.lock().map(|e| e.clone()).unwrap_or_default()
    }
}

struct Events(Arc<Mutex<Vec<RecordedEvent>>>);

struct Fields<'a>(&'a mut String);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if !self.0.is_empty() {
            self.0.push(' ');
        }
        let _ = write!(self.0, "{}={value:?}", field.name());
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if !self.0.is_empty() {
            self.0.push(' ');
        }
        let _ = write!(self.0, "{}={value}", field.name());
    }
}

impl<S: tracing::Subscriber> Layer<S> for Events {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        if *meta.level() > tracing::Level::DEBUG {
            return;
        }
        let mut fields = String::new();
        event.record(&mut Fields(&mut fields));
        if let Ok(mut events) = self.0.lock() {
            events.push(RecordedEvent {
                target: meta.target().to_owned(),
                level: *meta.level(),
                fields,
            });
        }
    }
}

/// The recorder, installing on first use the global subscriber: `tracing-opentelemetry`'s
/// layer over an SDK tracer whose spans go to an in-memory exporter as they close (always
/// sampled), and a layer that records events. Panics if another global subscriber was
/// installed first (a test's mistake).
#[allow(clippy::expect_used)] // a test's setup: failing loudly is the point
pub fn recorder() -> &'static Recorder {
    static RECORDER: OnceLock<Recorder> = OnceLock::new();
    RECORDER.get_or_init(|| {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let tracer = provider.tracer("wharf-testkit");
        let events = Arc::new(Mutex::new(Vec::new()));
        let subscriber = Registry::default()
            .with(tracing_opentelemetry::layer().with_tracer(tracer))
            .with(Events(Arc::clone(&events)));
        tracing::subscriber::set_global_default(subscriber)
            .expect("wharf_testkit::trace::recorder: another global subscriber is installed");
        Recorder {
            _provider: provider,
            exporter,
            events,
        }
    })
}
