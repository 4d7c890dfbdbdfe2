//! What the clients of one generation tell the wrapper about their health.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use rdkafka::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use tokio::sync::Notify;

use crate::log_gate::{LogGate, Verdict};

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
///
/// Warnings and errors, from the log callback and the error callback alike, go through the
/// client's [`LogGate`]: at most one per client per window at its level, the rest at `debug`,
/// counted and summarised (see [`crate::log_gate`]). A fatal error is always logged: it ends
/// the client.
#[derive(Debug, Clone)]
pub(crate) struct HealthContext {
    pub(crate) health: Arc<Health>,
    pub(crate) name: Arc<str>,
    pub(crate) gate: Arc<LogGate>,
}

impl HealthContext {
    pub(crate) fn new(health: Arc<Health>, gate: Arc<LogGate>) -> Self {
        Self {
            health,
            name: Arc::from(gate.name()),
            gate,
        }
    }
}

impl ClientContext for HealthContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        let error = match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => true,
            RDKafkaLogLevel::Warning => false,
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(target: "librdkafka", client = %self.name, fac, "{message}");
                return;
            }
            RDKafkaLogLevel::Debug => {
                tracing::debug!(target: "librdkafka", client = %self.name, fac, "{message}");
                return;
            }
        };
        match (self.gate.admit(message), error) {
            (Verdict::Log { suppressed }, true) => {
                tracing::error!(target: "librdkafka", client = %self.name, fac, suppressed, "{message}")
            }
            (Verdict::Log { suppressed }, false) => {
                tracing::warn!(target: "librdkafka", client = %self.name, fac, suppressed, "{message}")
            }
            (Verdict::Quiet, _) => {
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
            metrics::counter!(crate::metrics::ALL_BROKERS_DOWN, "client" => self.name.to_string())
                .increment(1);
        }
        match self.gate.admit(reason) {
            Verdict::Log { suppressed } => {
                tracing::warn!(client = %self.name, %error, reason, suppressed, "Kafka client error (more warnings and errors of this client within 10 s are logged at debug, then summarised)")
            }
            Verdict::Quiet => {
                tracing::debug!(client = %self.name, %error, reason, "Kafka client error")
            }
        }
    }
}

impl rdkafka::consumer::ConsumerContext for HealthContext {}
