//! One client configuration for every producer and consumer of a wrapper.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use rdkafka::ClientConfig;
use wharf_core::Backoff;

use crate::error::{Error, Result};

/// The environment variable read by [`KafkaConfig::from_env`] for the bootstrap servers.
pub const BROKERS_ENV: &str = "WHARF_KAFKA_BROKERS";

/// Substrings of librdkafka property names whose values are secrets: never printed.
const SECRET_MARKERS: &[&str] = &[
    "password",
    "secret",
    "token",
    "oauthbearer.config",
    "ssl.key.pem",
    "credential",
];

/// Is this librdkafka property a secret that must not appear in `Debug` output or logs?
pub(crate) fn is_secret(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    SECRET_MARKERS.iter().any(|m| key.contains(m))
}

/// librdkafka settings (passed straight through) plus the wrapper's supervision settings.
///
/// Every producer and consumer of a [`KafkaWrapper`](crate::KafkaWrapper) is built from
/// this configuration merged with its own spec's overrides. Any librdkafka property
/// (`security.protocol`, `sasl.mechanisms`, `ssl.ca.location`, `linger.ms`, ...) is set with
/// [`set`](Self::set). Values of secret properties (passwords, tokens, keys) never appear in
/// `Debug` output.
///
/// ```
/// use std::time::Duration;
/// use wharf_kafka_wrapper::KafkaConfig;
///
/// let config = KafkaConfig::new("127.0.0.1:9092")
///     .set("security.protocol", "SASL_SSL")
///     .set("sasl.mechanisms", "SCRAM-SHA-512")
///     .set("sasl.username", "app")
///     .set("sasl.password", "hunter2")
///     .unreachable_after(Duration::from_secs(30));
/// assert!(!format!("{config:?}").contains("hunter2"));
/// ```
#[derive(Clone)]
pub struct KafkaConfig {
    pub(crate) settings: BTreeMap<String, String>,
    pub(crate) unreachable_after: Duration,
    pub(crate) stall_after: Duration,
    pub(crate) health_interval: Duration,
    pub(crate) request_timeout: Duration,
    pub(crate) rebuild_backoff: Backoff,
    pub(crate) max_rebuilds: Option<u32>,
    pub(crate) shutdown_grace: Duration,
}

impl KafkaConfig {
    /// A configuration for the given bootstrap servers (`host:port[,host:port...]`).
    pub fn new(bootstrap_servers: impl Into<String>) -> Self {
        let mut settings = BTreeMap::new();
        settings.insert("bootstrap.servers".to_owned(), bootstrap_servers.into());
        Self {
            settings,
            unreachable_after: Duration::from_secs(30),
            stall_after: Duration::from_secs(60),
            health_interval: Duration::from_secs(1),
            request_timeout: Duration::from_secs(5),
            rebuild_backoff: Backoff::exponential(
                Duration::from_millis(500),
                Duration::from_secs(30),
            ),
            max_rebuilds: None,
            shutdown_grace: Duration::from_secs(10),
        }
    }

    /// Bootstrap servers from `WHARF_KAFKA_BROKERS`, else `127.0.0.1:9092`.
    pub fn from_env() -> Self {
        let brokers = std::env::var(BROKERS_ENV).unwrap_or_else(|_| "127.0.0.1:9092".to_owned());
        Self::new(brokers)
    }

    /// Sets any librdkafka property; it is passed straight through to every client.
    pub fn set(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.settings.insert(key.into(), value.into());
        self
    }

    /// The value of a librdkafka property, if set here.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.settings.get(key).map(String::as_str)
    }

    /// The bootstrap servers.
    pub fn bootstrap_servers(&self) -> &str {
        self.get("bootstrap.servers").unwrap_or_default()
    }

    /// Rebuild everything when no broker answered for this long (default 30 s).
    ///
    /// The wrapper probes the brokers with a metadata request every
    /// [`health_interval`](Self::health_interval), one probe at a time, and judges them on
    /// its own clock: they are unreachable once no probe has succeeded for `after`, counted
    /// from the moment the last successful probe *began*. A probe waiting for its answer does
    /// not delay that judgement (a silent partition, which answers nothing and resets
    /// nothing, is judged like a refused connection): no probe waits longer than what is left
    /// of `after`. So the rebuild begins at most `after` past the start of the last probe
    /// that succeeded, which is at most one `health_interval` before the outage began (plus
    /// scheduling delays).
    ///
    /// A broker that answers every probe within `after / 2` is never judged unreachable.
    /// `after` must be at least twice `health_interval` ([`KafkaWrapper::start`] refuses
    /// less): with probes `health_interval` apart, a shorter budget would take a broker that
    /// answers for unreachable.
    ///
    /// [`KafkaWrapper::start`]: crate::KafkaWrapper::start
    pub fn unreachable_after(mut self, after: Duration) -> Self {
        self.unreachable_after = after;
        self
    }

    /// Rebuild everything when a consumer's partition has looked stalled for this long
    /// (default 60 s): its handler waits for messages and holds none, the broker's high
    /// watermark is above what the consumer received, and nothing arrives.
    ///
    /// What the consumer received counts, not only the broker's watermark: a broker that
    /// under-reports it (Tansu 0.6 reports one past the *first* record of a batch) cannot
    /// make a consumer look behind. A partition whose handler is busy, however long, is never
    /// taken for stalled: a call that never returns is ended by the handler deadline
    /// ([`ConsumerSpec::handler_timeout`](crate::ConsumerSpec::handler_timeout)), not by a
    /// rebuild that would deliver the same message again.
    pub fn stall_after(mut self, after: Duration) -> Self {
        self.stall_after = after;
        self
    }

    /// How often the wrapper checks the brokers and the consumers (default 1 s). At most half
    /// of [`unreachable_after`](Self::unreachable_after), and above zero.
    pub fn health_interval(mut self, every: Duration) -> Self {
        self.health_interval = every;
        self
    }

    /// Timeout of watermark and admin requests, and how long a consumer's commit on a
    /// revoke or at shutdown waits for the coordinator's answer (default 5 s; above zero).
    ///
    /// A commit not answered within it is left to librdkafka (it may still land); the
    /// messages it covered are delivered again if it does not (at least once). The
    /// reachability probes do not use it: each waits for what is left of
    /// [`unreachable_after`](Self::unreachable_after).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Backoff between rebuilds (default 500 ms to 30 s): wharf-core's
    /// [`Backoff::exponential`], doubling from `min` to `max` over consecutive rebuilds, each
    /// delay drawn between half of it and all of it, so that many services that failed
    /// together do not rebuild together.
    pub fn rebuild_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.rebuild_backoff = Backoff::exponential(min, max);
        self
    }

    /// Give up after this many consecutive rebuilds (default: never give up).
    pub fn max_rebuilds(mut self, attempts: Option<u32>) -> Self {
        self.max_rebuilds = attempts;
        self
    }

    /// How long producers flush and consumers drain in-flight work at a rebuild, a removal or
    /// shutdown (default 10 s).
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.shutdown_grace = grace;
        self
    }

    /// Checks the wrapper's own settings against each other (librdkafka checks its
    /// properties when a client is built).
    pub(crate) fn validate(&self) -> Result<()> {
        if self.health_interval.is_zero() {
            return Err(Error::Setting {
                setting: "health_interval",
                reason: "it must be above zero: it is how often the brokers are probed".into(),
            });
        }
        if self.request_timeout.is_zero() {
            return Err(Error::Setting {
                setting: "request_timeout",
                reason:
                    "it must be above zero: a request given no time to be answered always fails"
                        .into(),
            });
        }
        if self.unreachable_after < self.health_interval * 2 {
            return Err(Error::Setting {
                setting: "unreachable_after",
                reason: format!(
                    "{:?} is less than twice health_interval ({:?}): the brokers are probed every health_interval and judged unreachable when no probe succeeded for unreachable_after, so a broker that answers would be taken for unreachable; raise unreachable_after to at least {:?} or lower health_interval",
                    self.unreachable_after,
                    self.health_interval,
                    self.health_interval * 2
                ),
            });
        }
        Ok(())
    }

    /// The librdkafka configuration: these settings, then `defaults` where unset, then
    /// `overrides` on top.
    pub(crate) fn client_config(
        &self,
        defaults: &[(&str, &str)],
        overrides: &BTreeMap<String, String>,
    ) -> ClientConfig {
        let mut cc = ClientConfig::new();
        for (k, v) in defaults {
            cc.set(*k, *v);
        }
        for (k, v) in self.settings.iter().chain(overrides) {
            cc.set(k, v);
        }
        // rdkafka takes librdkafka's log level from the `log` crate, which a tracing-only
        // application leaves off: ask tracing instead, so enabling target `librdkafka`
        // (with `debug` set for the contexts wanted) shows librdkafka's own lines.
        cc.set_log_level(librdkafka_log_level());
        cc
    }
}

/// The most verbose librdkafka level the current tracing subscriber would record.
fn librdkafka_log_level() -> rdkafka::config::RDKafkaLogLevel {
    use rdkafka::config::RDKafkaLogLevel;
    if tracing::enabled!(target: "librdkafka", tracing::Level::DEBUG) {
        RDKafkaLogLevel::Debug
    } else if tracing::enabled!(target: "librdkafka", tracing::Level::INFO) {
        RDKafkaLogLevel::Info
    } else if tracing::enabled!(target: "librdkafka", tracing::Level::WARN) {
        RDKafkaLogLevel::Warning
    } else {
        RDKafkaLogLevel::Error
    }
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self::from_env()
    }
}

/// Prints settings with secret values replaced by `***`.
pub(crate) struct Redacted<'a>(pub(crate) &'a BTreeMap<String, String>);

impl fmt::Debug for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut map = f.debug_map();
        for (k, v) in self.0 {
            if is_secret(k) {
                map.entry(k, &"***");
            } else {
                map.entry(k, v);
            }
        }
        map.finish()
    }
}

impl fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaConfig")
            .field("settings", &Redacted(&self.settings))
            .field("unreachable_after", &self.unreachable_after)
            .field("stall_after", &self.stall_after)
            .field("health_interval", &self.health_interval)
            .field("request_timeout", &self.request_timeout)
            .field("rebuild_backoff", &self.rebuild_backoff)
            .field("max_rebuilds", &self.max_rebuilds)
            .field("shutdown_grace", &self.shutdown_grace)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used)]

    use super::*;

    #[test]
    fn a_budget_below_two_probe_intervals_is_refused_with_the_bound() {
        let c = KafkaConfig::new("h:1")
            .health_interval(Duration::from_millis(600))
            .unreachable_after(Duration::from_secs(1));
        let e = c.validate().expect_err("1 s is below two probes of 600 ms");
        let text = e.to_string();
        assert!(
            text.contains("unreachable_after") && text.contains("1.2s"),
            "{text}"
        );
        assert!(
            c.unreachable_after(Duration::from_millis(1200))
                .validate()
                .is_ok()
        );
        assert!(
            KafkaConfig::new("h:1").validate().is_ok(),
            "the defaults hold"
        );
    }

    #[test]
    fn zero_probe_interval_or_request_timeout_is_refused() {
        let zero = KafkaConfig::new("h:1").health_interval(Duration::ZERO);
        assert!(matches!(
            zero.validate(),
            Err(Error::Setting {
                setting: "health_interval",
                ..
            })
        ));
        let zero = KafkaConfig::new("h:1").request_timeout(Duration::ZERO);
        assert!(matches!(
            zero.validate(),
            Err(Error::Setting {
                setting: "request_timeout",
                ..
            })
        ));
    }

    #[test]
    fn secrets_never_appear_in_debug_output() {
        let c = KafkaConfig::new("h:1")
            .set("sasl.password", "p4ss")
            .set("ssl.key.password", "k3y")
            .set("sasl.oauthbearer.config", "principal=x t0ken")
            .set("sasl.username", "alice");
        let s = format!("{c:?}");
        assert!(
            !s.contains("p4ss") && !s.contains("k3y") && !s.contains("t0ken"),
            "{s}"
        );
        assert!(s.contains("alice"));
    }
}
