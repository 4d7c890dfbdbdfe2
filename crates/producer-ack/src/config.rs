//! [`ProducerBuilder`]: every setting of a [`Producer`](crate::Producer), with defaults.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use wharf_core::Backoff;

use crate::Error;
use crate::producer::Producer;

/// What to do with messages sent but not yet acknowledged when the connection drops.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum OnReconnect {
    /// Re-send them, in their original order and before any newer message, once the
    /// producer is connected again (at-least-once: a message the broker stored just before
    /// the drop is stored twice unless broker-side deduplication catches it). The default.
    #[default]
    Resend,
    /// Fail each of them at once with [`Error::ConnectionLost`]; messages not sent yet stay
    /// queued and go out after the reconnect.
    Fail,
}

/// Client-side batching: many messages in one broker entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Batching {
    /// Send a batch once it holds this many messages.
    pub max_messages: u32,
    /// Send a batch once it holds this many payload bytes.
    pub max_bytes: usize,
    /// Send a batch at the latest this long after its first message.
    pub max_delay: Duration,
}

impl Default for Batching {
    fn default() -> Self {
        Batching {
            max_messages: 1000,
            max_bytes: 128 * 1024,
            max_delay: Duration::from_millis(10),
        }
    }
}

/// Compression of payloads (or of whole batches) before they are sent.
///
/// Algorithms other than `None` need this crate's `compression` feature.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Compression {
    /// No compression (the default).
    #[default]
    None,
    /// LZ4 (feature `compression`).
    #[cfg(feature = "compression")]
    #[cfg_attr(docsrs, doc(cfg(feature = "compression")))]
    Lz4,
    /// zlib (feature `compression`).
    #[cfg(feature = "compression")]
    #[cfg_attr(docsrs, doc(cfg(feature = "compression")))]
    Zlib,
    /// Zstandard (feature `compression`).
    #[cfg(feature = "compression")]
    #[cfg_attr(docsrs, doc(cfg(feature = "compression")))]
    Zstd,
    /// Snappy (feature `compression`).
    #[cfg(feature = "compression")]
    #[cfg_attr(docsrs, doc(cfg(feature = "compression")))]
    Snappy,
}

impl Compression {
    pub(crate) fn to_pulsar(self) -> pulsar::compression::Compression {
        use pulsar::compression as c;
        match self {
            Compression::None => c::Compression::None,
            #[cfg(feature = "compression")]
            Compression::Lz4 => c::Compression::Lz4(c::CompressionLz4::default()),
            #[cfg(feature = "compression")]
            Compression::Zlib => c::Compression::Zlib(c::CompressionZlib::default()),
            #[cfg(feature = "compression")]
            Compression::Zstd => c::Compression::Zstd(c::CompressionZstd::default()),
            #[cfg(feature = "compression")]
            Compression::Snappy => c::Compression::Snappy(c::CompressionSnappy::default()),
        }
    }
}

/// TLS settings, used when the service URL starts with `pulsar+ssl://`.
#[derive(Clone, Debug, Default)]
pub struct Tls {
    /// PEM file of the certificate authorities to trust (the system's roots otherwise).
    pub ca_file: Option<PathBuf>,
    /// Accept any server certificate. For tests only.
    pub allow_insecure: bool,
    /// Check that the certificate names the host (on unless set to `Some(false)`).
    pub verify_hostname: Option<bool>,
}

/// A secret string (an auth token) that never shows in `Debug`, logs or errors.
#[derive(Clone)]
pub(crate) struct Secret(pub(crate) String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Settings of a [`Producer`]. Create with [`Producer::builder`] or
/// [`ProducerBuilder::new`], finish with [`start`](Self::start).
///
/// | setting | default |
/// |---|---|
/// | `send_timeout` | 30 s: every `produce` resolves within it |
/// | `window` | 1000 messages awaiting their receipt |
/// | `on_reconnect` | [`OnReconnect::Resend`] |
/// | `reconnect_backoff` | 100 ms doubling to 10 s, with jitter |
/// | `connect_timeout` | 10 s per connection attempt |
/// | batching, compression, auth, TLS | off |
///
/// ```
/// use std::time::Duration;
/// use wharf_producer_ack::Producer;
///
/// let builder = Producer::builder("pulsar://127.0.0.1:6650", "persistent://public/default/orders")
///     .producer_name("orders-api")
///     .auth_token("not-shown-in-debug")
///     .send_timeout(Duration::from_secs(5))
///     .window(500);
/// assert!(!format!("{builder:?}").contains("not-shown-in-debug"));
/// ```
#[derive(Clone, Debug)]
pub struct ProducerBuilder {
    pub(crate) service_url: String,
    pub(crate) topic: String,
    pub(crate) auth_token: Option<Secret>,
    pub(crate) tls: Tls,
    pub(crate) producer_name: Option<String>,
    pub(crate) batching: Option<Batching>,
    pub(crate) compression: Compression,
    pub(crate) send_timeout: Duration,
    pub(crate) window: usize,
    pub(crate) on_reconnect: OnReconnect,
    pub(crate) backoff_min: Duration,
    pub(crate) backoff_max: Duration,
    pub(crate) connect_timeout: Duration,
}

impl ProducerBuilder {
    /// Settings for a producer on `topic` of the Pulsar cluster at `service_url`
    /// (`pulsar://host:6650` or `pulsar+ssl://host:6651`).
    pub fn new(service_url: impl Into<String>, topic: impl Into<String>) -> Self {
        ProducerBuilder {
            service_url: service_url.into(),
            topic: topic.into(),
            auth_token: None,
            tls: Tls::default(),
            producer_name: None,
            batching: None,
            compression: Compression::None,
            send_timeout: Duration::from_secs(30),
            window: 1000,
            on_reconnect: OnReconnect::Resend,
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
        }
    }

    /// Settings from the environment: `WHARF_PULSAR_URL` (default `pulsar://127.0.0.1:6650`)
    /// and, if set, `WHARF_PULSAR_TOKEN`.
    pub fn from_env(topic: impl Into<String>) -> Self {
        let url = std::env::var("WHARF_PULSAR_URL")
            .unwrap_or_else(|_| "pulsar://127.0.0.1:6650".to_owned());
        let builder = Self::new(url, topic);
        match std::env::var("WHARF_PULSAR_TOKEN") {
            Ok(token) if !token.is_empty() => builder.auth_token(token),
            _ => builder,
        }
    }

    /// Authenticates with this token (JWT). It never appears in `Debug` output or logs.
    #[must_use]
    pub fn auth_token(mut self, token: impl Into<String>) -> Self {
        self.auth_token = Some(Secret(token.into()));
        self
    }

    /// TLS settings for `pulsar+ssl://` URLs.
    #[must_use]
    pub fn tls(mut self, tls: Tls) -> Self {
        self.tls = tls;
        self
    }

    /// The producer name the broker sees (and deduplicates by, with the sequence ids).
    /// The broker picks a unique one otherwise.
    #[must_use]
    pub fn producer_name(mut self, name: impl Into<String>) -> Self {
        self.producer_name = Some(name.into());
        self
    }

    /// Groups messages into batches (off by default).
    #[must_use]
    pub fn batching(mut self, batching: Batching) -> Self {
        self.batching = Some(batching);
        self
    }

    /// Compresses payloads.
    #[must_use]
    pub fn compression(mut self, compression: Compression) -> Self {
        self.compression = compression;
        self
    }

    /// The longest a `produce` (waiting for window space included) or an acknowledgement
    /// takes before it resolves with [`Error::Timeout`].
    #[must_use]
    pub fn send_timeout(mut self, timeout: Duration) -> Self {
        self.send_timeout = timeout;
        self
    }

    /// How many messages may await their receipt at once. When the window is full, `produce`
    /// and `produce_with` wait for space (within the send timeout) instead of failing.
    #[must_use]
    pub fn window(mut self, messages: usize) -> Self {
        self.window = messages;
        self
    }

    /// What happens to unacknowledged messages when the connection drops.
    #[must_use]
    pub fn on_reconnect(mut self, policy: OnReconnect) -> Self {
        self.on_reconnect = policy;
        self
    }

    /// Delay between connection attempts: `min`, doubling up to `max`, with jitter.
    #[must_use]
    pub fn reconnect_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.backoff_min = min;
        self.backoff_max = max;
        self
    }

    /// Time limit of one connection attempt (TCP, lookup and producer creation).
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Starts the producer: it returns at once, even if the broker is down, and connects in
    /// the background with backoff. Messages produced meanwhile wait (within the send
    /// timeout) for the connection.
    ///
    /// Must be called inside a tokio runtime. Fails only on settings that cannot work.
    pub fn start(self) -> Result<Producer, Error> {
        self.validate()?;
        Ok(Producer::start(self))
    }

    /// Builds the producer to run under a wharf-core supervisor: returns its handle and the
    /// [`ChildSpec`](wharf_core::supervisor::ChildSpec) to add to a supervisor (with `id`).
    ///
    /// The handle works at once (messages wait in the window, within their send timeout,
    /// until the supervisor starts the child) and stays valid across the child's restarts:
    /// the mailbox belongs to the handle, not to one run of the task. When the supervisor
    /// shuts the child down, the producer stops taking messages and lets the window drain
    /// within the child's shutdown grace; what is left then ends with [`Error::Closed`].
    ///
    /// The producer's task already restarts itself after a panic (up to 5 a minute); past
    /// that, the child exits abnormally and its supervisor decides.
    pub fn supervised(
        self,
        id: impl Into<String>,
    ) -> Result<(Producer, wharf_core::supervisor::ChildSpec), Error> {
        self.validate()?;
        Ok(Producer::supervised(self, id.into()))
    }

    /// The delays between connection attempts: `backoff_min`, doubling up to `backoff_max`,
    /// each drawn between half and all of that value (wharf-core's [`Backoff`]).
    pub(crate) fn reconnect_backoff_policy(&self) -> Backoff {
        Backoff::exponential(self.backoff_min, self.backoff_max)
    }

    fn validate(&self) -> Result<(), Error> {
        let invalid = |what: &str| Err(Error::InvalidConfig(what.to_owned()));
        if !(self.service_url.starts_with("pulsar://")
            || self.service_url.starts_with("pulsar+ssl://"))
        {
            return invalid("the service URL must start with pulsar:// or pulsar+ssl://");
        }
        if self.topic.is_empty() {
            return invalid("the topic is empty");
        }
        if self.window == 0 || self.window > 1_000_000 {
            return invalid("the window must hold between 1 and 1,000,000 messages");
        }
        if self.send_timeout.is_zero() {
            return invalid("the send timeout must be above zero");
        }
        if self.connect_timeout.is_zero()
            || self.backoff_min.is_zero()
            || self.backoff_max < self.backoff_min
        {
            return invalid("connect_timeout and the backoff must be above zero, with min <= max");
        }
        if tokio::runtime::Handle::try_current().is_err() {
            return invalid("start() must be called inside a tokio runtime");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_auth_token_never_shows_in_debug_output() {
        let builder = ProducerBuilder::new("pulsar://127.0.0.1:1", "t").auth_token("s3cr3t-token");
        let debug = format!("{builder:?}");
        assert!(!debug.contains("s3cr3t-token"), "{debug}");
        assert!(debug.contains("<redacted>"));
    }

    #[test]
    fn reconnects_back_off_from_the_configured_min_doubling_to_the_configured_max() {
        let configured = ProducerBuilder::new("pulsar://127.0.0.1:1", "t")
            .reconnect_backoff(Duration::from_millis(100), Duration::from_secs(2))
            .reconnect_backoff_policy();
        assert_eq!(
            configured,
            Backoff::exponential(Duration::from_millis(100), Duration::from_secs(2))
        );
        let default = ProducerBuilder::new("pulsar://127.0.0.1:1", "t").reconnect_backoff_policy();
        assert_eq!(
            default,
            Backoff::exponential(Duration::from_millis(100), Duration::from_secs(10)),
            "the default the builder's docs give"
        );
    }

    #[test]
    fn settings_that_cannot_work_are_refused_with_the_reason() {
        let refused = |b: ProducerBuilder| match b.validate() {
            Err(Error::InvalidConfig(reason)) => reason,
            other => panic!("expected InvalidConfig, got {other:?}"),
        };
        let base = || ProducerBuilder::new("pulsar://127.0.0.1:1", "t");
        assert!(refused(ProducerBuilder::new("http://x", "t")).contains("pulsar://"));
        assert!(refused(base().window(0)).contains("window"));
        assert!(refused(base().send_timeout(Duration::ZERO)).contains("send timeout"));
        // outside a tokio runtime
        assert!(refused(base()).contains("tokio runtime"));
    }
}
