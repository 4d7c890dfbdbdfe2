//! What the clients of one generation tell the wrapper about their health.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use tokio::sync::Notify;

/// Shared by every client of one generation; read by the wrapper's monitor.
#[derive(Debug, Default)]
pub(crate) struct Health {
    fatal: Mutex<Option<String>>,
    failed: AtomicBool,
    pub(crate) wake: Notify,
}

impl Health {
    /// A fatal error: the generation must be rebuilt.
    pub(crate) fn fail(&self, reason: String) {
        if let Ok(mut f) = self.fatal.lock() {
            f.get_or_insert(reason);
        }
        self.failed.store(true, Ordering::Release);
        self.wake.notify_one();
    }

    /// The reason of the first fatal error, if any.
    pub(crate) fn failure(&self) -> Option<String> {
        if !self.failed.load(Ordering::Acquire) {
            return None;
        }
        self.fatal.lock().ok().and_then(|f| f.clone())
    }
}

/// The librdkafka context of every client the wrapper builds: errors go to tracing and
/// fatal ones to [`Health`]. librdkafka's log lines go to tracing under target `librdkafka`.
#[derive(Debug, Clone)]
pub(crate) struct HealthContext {
    pub(crate) health: Arc<Health>,
    pub(crate) name: Arc<str>,
    /// When a connection error was last logged at `warn`: librdkafka repeats them at every
    /// reconnect attempt, so repeats within [`QUIET`] go to `debug`.
    last_warn: Arc<Mutex<Option<Instant>>>,
}

/// At most one connection warning per client per this period.
const QUIET: Duration = Duration::from_secs(10);

impl HealthContext {
    pub(crate) fn new(health: Arc<Health>, name: &str) -> Self {
        Self {
            health,
            name: Arc::from(name),
            last_warn: Arc::new(Mutex::new(None)),
        }
    }

    fn warn_now(&self) -> bool {
        let Ok(mut last) = self.last_warn.lock() else {
            return true;
        };
        if last.is_some_and(|t| t.elapsed() < QUIET) {
            return false;
        }
        *last = Some(Instant::now());
        true
    }
}

impl ClientContext for HealthContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => {
                tracing::error!(target: "librdkafka", client = %self.name, fac, "{message}")
            }
            RDKafkaLogLevel::Warning => {
                tracing::warn!(target: "librdkafka", client = %self.name, fac, "{message}")
            }
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(target: "librdkafka", client = %self.name, fac, "{message}")
            }
            RDKafkaLogLevel::Debug => {
                tracing::debug!(target: "librdkafka", client = %self.name, fac, "{message}")
            }
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        let code = error.rdkafka_error_code();
        if code == Some(RDKafkaErrorCode::Fatal) {
            tracing::error!(client = %self.name, %error, reason, "fatal Kafka client error; the wrapper will rebuild");
            self.health
                .fail(format!("{}: fatal error: {error} ({reason})", self.name));
            return;
        }
        if code == Some(RDKafkaErrorCode::AllBrokersDown) {
            metrics::counter!("wharf_kafka_all_brokers_down_total", "client" => self.name.to_string()).increment(1);
        }
        if self.warn_now() {
            tracing::warn!(client = %self.name, %error, reason, "Kafka client error (repeats within 10 s are logged at debug)");
        } else {
            tracing::debug!(client = %self.name, %error, reason, "Kafka client error");
        }
    }
}

impl rdkafka::consumer::ConsumerContext for HealthContext {}
