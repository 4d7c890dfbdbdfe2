//! Configuration: the builder, its policies, and queue URL validation.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use wharf_core::Backoff;

use crate::Error;
use crate::emitter::Emitter;
use crate::report::FailedEvent;

/// The largest message SQS accepts today (1 MiB), the default limit.
pub const MAX_MESSAGE_BYTES: usize = 1_048_576;
/// The limit of queues created before SQS raised it (256 KiB): use with
/// [`EmitterBuilder::max_message_bytes`] for such queues.
pub const LEGACY_MAX_MESSAGE_BYTES: usize = 262_144;
/// The environment variable [`EmitterBuilder::from_env`] reads the queue URL from.
pub const QUEUE_URL_ENV: &str = "SQS_QUEUE_URL";

/// What `emit` and `emit_sync` do when the bounded buffer is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FullPolicy {
    /// Return [`Error::BufferFull`] at once (the default: `emit` never waits).
    Error,
    /// Wait for room, at most this long, then return [`Error::BufferFull`]. `emit_sync` also
    /// never waits past its own timeout.
    Wait(Duration),
}

/// Optional compression of the envelope's `data` field. The compressed JSON is sent as a
/// base64 string and the envelope gets `"enc": "gzip"` or `"enc": "zstd"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Compression {
    /// gzip (RFC 1952), default level.
    Gzip,
    /// Zstandard, level 3.
    Zstd,
}

impl Compression {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        }
    }
}

/// Where a FIFO queue's `MessageGroupId` comes from (ordering holds within a group).
/// [`Event::with_group_key`](crate::Event::with_group_key) overrides it per event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum GroupKey {
    /// The event's provider id (the default, as in the original).
    #[default]
    ProviderId,
    /// The event type.
    EventType,
    /// A top-level field of the event's data (a string or a number); an event without it is
    /// rejected with [`Error::InvalidEvent`].
    DataField(String),
}

/// Retries of transient failures (throttling, 5xx, network errors, timeouts): exponential
/// backoff with jitter, per event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub(crate) initial_backoff: Duration,
    pub(crate) max_backoff: Duration,
    pub(crate) give_up_after: Duration,
}

impl RetryPolicy {
    /// Backoff starts at `initial_backoff`, doubles per attempt up to `max_backoff` (each
    /// delay drawn between half and all of that value), and an event given to `emit` is
    /// abandoned (failure hook, counter) once `give_up_after` has passed since it was
    /// accepted. `emit_sync` events are bounded by their own timeout.
    pub fn new(initial_backoff: Duration, max_backoff: Duration, give_up_after: Duration) -> Self {
        RetryPolicy {
            initial_backoff,
            max_backoff,
            give_up_after,
        }
    }

    /// The backoff between attempts: `initial_backoff` doubling up to `max_backoff`, each
    /// delay drawn between half and all of that value (wharf-core's [`Backoff`]).
    pub(crate) fn backoff(&self) -> Backoff {
        Backoff::exponential(self.initial_backoff, self.max_backoff)
    }

    /// The delay before attempt `attempt + 1`, after `attempt` attempts (counted from 1: the
    /// first retry waits about `initial_backoff`).
    pub(crate) fn delay(&self, attempt: u32) -> Duration {
        self.backoff().delay(attempt.saturating_sub(1))
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy::new(
            Duration::from_millis(100),
            Duration::from_secs(10),
            Duration::from_secs(15 * 60),
        )
    }
}

/// Fields removed from an event's data before it is sent, by event type, as the original
/// (`btrz_ex_webhooks_emitter`) offered. A pattern is:
///
/// - `*`: every event;
/// - `prefix.*`: the event named `prefix` and every event below it (`prefix.created`,
///   `prefix.created.v2`, ...). `transaction.*` applies to `transaction` itself, as in the
///   original, whose wildcard rule is "the first segment of the event name, then `.*`";
/// - any other pattern ending in `*`: every event type starting with what precedes the `*`;
/// - anything else: that exact event type.
///
/// Every field the original removes is removed here too; this is stricter in two ways, on
/// purpose: fields are removed wherever they occur in the data (in nested objects and in
/// objects inside arrays too, where the original only looked at the top level), and a
/// wildcard over several segments (`transaction.created.*`) applies to the events below it
/// (the original never matched one).
///
/// ```
/// use wharf_webhooks_emitter::DeniedFields;
/// let denied = DeniedFields::new()
///     .deny("*", ["password", "apiKey"])
///     .deny("transaction.*", ["cardNumber"]);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeniedFields {
    rules: Vec<(String, Vec<String>)>,
}

impl DeniedFields {
    /// No denied fields.
    pub fn new() -> Self {
        DeniedFields::default()
    }

    /// Denies `fields` for the events matching `pattern`.
    pub fn deny<I, S>(mut self, pattern: impl Into<String>, fields: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.rules
            .push((pattern.into(), fields.into_iter().map(Into::into).collect()));
        self
    }

    /// The denied field names for one event type.
    pub(crate) fn for_event(&self, event: &str) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for (pattern, fields) in &self.rules {
            if pattern_matches(pattern, event) {
                out.extend(fields.iter().map(String::as_str));
            }
        }
        out
    }
}

fn pattern_matches(pattern: &str, event: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    if let Some(prefix) = pattern.strip_suffix(".*") {
        // `prefix.*` covers `prefix` itself and everything below it, as in the original.
        return event
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'));
    }
    match pattern.strip_suffix('*') {
        Some(prefix) => event.starts_with(prefix),
        None => pattern == event,
    }
}

/// A validated SQS queue URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct QueueUrl {
    pub(crate) url: String,
    pub(crate) name: String,
    pub(crate) fifo: bool,
}

impl QueueUrl {
    pub(crate) fn parse(url: &str) -> Result<QueueUrl, Error> {
        let bad = |reason: &str| Error::InvalidQueueUrl {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        let rest = url
            .strip_prefix("https://")
            .or_else(|| url.strip_prefix("http://"))
            .ok_or_else(|| bad("it must start with https:// or http://"))?;
        if rest.contains(['?', '#', ' ']) {
            return Err(bad("it must not contain a query, a fragment or spaces"));
        }
        let (host, path) = rest
            .split_once('/')
            .ok_or_else(|| bad("it has no path (/ACCOUNT_ID/QUEUE_NAME)"))?;
        if host.is_empty() || host.contains('@') {
            return Err(bad("the host is empty or carries credentials"));
        }
        let segments: Vec<&str> = path.trim_end_matches('/').split('/').collect();
        let [account, name] = segments.as_slice() else {
            return Err(bad(
                "the path must have exactly two segments, /ACCOUNT_ID/QUEUE_NAME",
            ));
        };
        if account.is_empty() || !account.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(bad(
                "the account id segment must be non-empty and alphanumeric",
            ));
        }
        let valid_name = !name.is_empty()
            && name.len() <= 80
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
        if !valid_name {
            return Err(bad(
                "the queue name must be 1 to 80 characters of A-Z a-z 0-9 - _ (and .fifo)",
            ));
        }
        let fifo = name.ends_with(".fifo");
        if name.contains('.') && !fifo {
            return Err(bad(
                "only FIFO queue names may contain '.', as the suffix .fifo",
            ));
        }
        Ok(QueueUrl {
            url: url.trim_end_matches('/').to_string(),
            name: (*name).to_string(),
            fifo,
        })
    }
}

/// Called with every event given to `emit` that fails permanently (rejected by SQS, retries
/// exhausted, not sent at shutdown, held by a worker that died). Runs on the emitter's task
/// (or on whatever thread fails the event, such as one dropping the supervisor): keep it short
/// and non-blocking (push to a channel, write a counter). A panic in it is caught, logged and
/// counted (`Stats::callback_panics`); the event was already counted as failed.
pub type FailureHook = Arc<dyn Fn(&FailedEvent) + Send + Sync>;

/// Builds an [`Emitter`]. Every setting has a default a user would choose; only the queue
/// is needed (and without one the emitter is disabled, not broken).
pub struct EmitterBuilder {
    pub(crate) queue_url: Option<String>,
    pub(crate) region: Option<String>,
    pub(crate) endpoint_url: Option<String>,
    pub(crate) credentials: Option<aws_sdk_sqs::config::Credentials>,
    pub(crate) sdk_config: Option<aws_config::SdkConfig>,
    pub(crate) client: Option<aws_sdk_sqs::Client>,
    pub(crate) max_message_bytes: usize,
    pub(crate) buffer_capacity: usize,
    pub(crate) buffer_bytes: usize,
    pub(crate) full_policy: FullPolicy,
    pub(crate) linger: Duration,
    pub(crate) max_in_flight: Option<usize>,
    pub(crate) request_timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) sync_timeout: Duration,
    pub(crate) retry: RetryPolicy,
    pub(crate) drain_timeout: Duration,
    pub(crate) compression: Option<Compression>,
    pub(crate) compress_above: usize,
    pub(crate) denied_fields: DeniedFields,
    pub(crate) group_key: GroupKey,
    pub(crate) fifo: Option<bool>,
    pub(crate) on_failure: Option<FailureHook>,
}

impl fmt::Debug for EmitterBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Credentials, the SDK config and the client are never printed.
        f.debug_struct("EmitterBuilder")
            .field("queue_url", &self.queue_url)
            .field("region", &self.region)
            .field("endpoint_url", &self.endpoint_url)
            .field(
                "credentials",
                &self.credentials.as_ref().map(|_| "<redacted>"),
            )
            .field("sdk_config", &self.sdk_config.as_ref().map(|_| "<given>"))
            .field("client", &self.client.as_ref().map(|_| "<given>"))
            .field("max_message_bytes", &self.max_message_bytes)
            .field("buffer_capacity", &self.buffer_capacity)
            .field("buffer_bytes", &self.buffer_bytes)
            .field("full_policy", &self.full_policy)
            .field("linger", &self.linger)
            .field("max_in_flight", &self.max_in_flight)
            .field("request_timeout", &self.request_timeout)
            .field("sync_timeout", &self.sync_timeout)
            .field("retry", &self.retry)
            .field("drain_timeout", &self.drain_timeout)
            .field("compression", &self.compression)
            .field("group_key", &self.group_key)
            .finish_non_exhaustive()
    }
}

impl Default for EmitterBuilder {
    fn default() -> Self {
        EmitterBuilder {
            queue_url: None,
            region: None,
            endpoint_url: None,
            credentials: None,
            sdk_config: None,
            client: None,
            max_message_bytes: MAX_MESSAGE_BYTES,
            buffer_capacity: 10_000,
            buffer_bytes: 64 * 1024 * 1024,
            full_policy: FullPolicy::Error,
            linger: Duration::from_millis(5),
            max_in_flight: None,
            request_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(3),
            sync_timeout: Duration::from_secs(30),
            retry: RetryPolicy::default(),
            drain_timeout: Duration::from_secs(10),
            compression: None,
            compress_above: 0,
            denied_fields: DeniedFields::new(),
            group_key: GroupKey::ProviderId,
            fifo: None,
            on_failure: None,
        }
    }
}

impl EmitterBuilder {
    /// A builder with the defaults and no queue.
    pub fn new() -> Self {
        EmitterBuilder::default()
    }

    /// A builder configured like the original: the queue URL from `SQS_QUEUE_URL` (unset or
    /// empty: the emitter is disabled); region, endpoint (`AWS_ENDPOINT_URL_SQS`,
    /// `AWS_ENDPOINT_URL`) and credentials from the standard AWS chain when it starts.
    pub fn from_env() -> Self {
        let mut b = EmitterBuilder::new();
        if let Ok(url) = std::env::var(QUEUE_URL_ENV) {
            let url = url.trim();
            if !url.is_empty() {
                b.queue_url = Some(url.to_string());
            }
        }
        b
    }

    /// The queue URL (`https://sqs.REGION.amazonaws.com/ACCOUNT/NAME`). A name ending in
    /// `.fifo` makes the emitter send FIFO parameters.
    pub fn queue_url(mut self, url: impl Into<String>) -> Self {
        self.queue_url = Some(url.into());
        self
    }

    /// The AWS region (otherwise from the standard chain).
    pub fn region(mut self, region: impl Into<String>) -> Self {
        self.region = Some(region.into());
        self
    }

    /// A custom endpoint (moto, LocalStack, a VPC endpoint).
    pub fn endpoint_url(mut self, url: impl Into<String>) -> Self {
        self.endpoint_url = Some(url.into());
        self
    }

    /// Static credentials (otherwise from the standard chain). Never logged or printed.
    pub fn credentials(
        mut self,
        access_key_id: impl Into<String>,
        secret_access_key: impl Into<String>,
    ) -> Self {
        self.credentials = Some(aws_sdk_sqs::config::Credentials::new(
            access_key_id,
            secret_access_key,
            None,
            None,
            "wharf-webhooks-emitter",
        ));
        self
    }

    /// Starts from this AWS SDK configuration (TLS, proxies, credentials, ...): settings pass
    /// straight through. Region, endpoint and credentials given to this builder override it.
    pub fn sdk_config(mut self, config: aws_config::SdkConfig) -> Self {
        self.sdk_config = Some(config);
        self
    }

    /// Uses this SQS client as is. The emitter still applies its own timeouts and retries
    /// to every call (per-call configuration override).
    pub fn client(mut self, client: aws_sdk_sqs::Client) -> Self {
        self.client = Some(client);
        self
    }

    /// The queue's message size limit in bytes, body plus attributes (default 1 MiB;
    /// [`LEGACY_MAX_MESSAGE_BYTES`] for queues created with the old 256 KiB limit). Also the
    /// limit of one SendMessageBatch request.
    pub fn max_message_bytes(mut self, bytes: usize) -> Self {
        self.max_message_bytes = bytes;
        self
    }

    /// How many accepted events may wait to be sent, retries included (default 10,000).
    /// This bounds memory whatever the endpoint does.
    pub fn buffer_capacity(mut self, events: usize) -> Self {
        self.buffer_capacity = events;
        self
    }

    /// How many bytes of encoded events may wait to be sent, retries included (default
    /// 64 MiB; at least `max_message_bytes`). With `buffer_capacity`, this bounds memory
    /// whatever the size of the events.
    pub fn buffer_bytes(mut self, bytes: usize) -> Self {
        self.buffer_bytes = bytes;
        self
    }

    /// What to do when the buffer is full (default [`FullPolicy::Error`]).
    pub fn full_policy(mut self, policy: FullPolicy) -> Self {
        self.full_policy = policy;
        self
    }

    /// How long a partly filled batch waits for more events before it is sent (default 5 ms).
    pub fn linger(mut self, linger: Duration) -> Self {
        self.linger = linger;
        self
    }

    /// How many SendMessageBatch requests may be in flight at once (default 4; 1 on FIFO
    /// queues, which keeps order within a group while no entry fails).
    pub fn max_in_flight(mut self, requests: usize) -> Self {
        self.max_in_flight = Some(requests);
        self
    }

    /// Timeout of one SQS request attempt (default 10 s).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Timeout of establishing a connection (default 3 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Default timeout of `emit_sync`, covering buffering, every retry and backoff
    /// (default 30 s).
    pub fn sync_timeout(mut self, timeout: Duration) -> Self {
        self.sync_timeout = timeout;
        self
    }

    /// Retry policy for transient failures.
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// How long a graceful shutdown may spend sending what is buffered (default 10 s).
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = timeout;
        self
    }

    /// Compresses `data` (see [`Compression`]).
    pub fn compression(mut self, compression: Compression) -> Self {
        self.compression = Some(compression);
        self
    }

    /// Compresses only when the encoded data is larger than this many bytes (default 0:
    /// always, once compression is on).
    pub fn compress_above(mut self, bytes: usize) -> Self {
        self.compress_above = bytes;
        self
    }

    /// Fields removed from data before sending.
    pub fn denied_fields(mut self, denied: DeniedFields) -> Self {
        self.denied_fields = denied;
        self
    }

    /// Where a FIFO queue's `MessageGroupId` comes from (default the provider id).
    pub fn group_key(mut self, key: GroupKey) -> Self {
        self.group_key = key;
        self
    }

    /// Forces FIFO mode on or off (default: on when the queue name ends in `.fifo`).
    pub fn fifo(mut self, fifo: bool) -> Self {
        self.fifo = Some(fifo);
        self
    }

    /// Called with each event given to `emit` that fails permanently (see [`FailureHook`]; a
    /// panic in it is caught and counted).
    pub fn on_failure(mut self, hook: impl Fn(&FailedEvent) + Send + Sync + 'static) -> Self {
        self.on_failure = Some(Arc::new(hook));
        self
    }

    /// Validates the configuration and builds the emitter handle. Nothing touches the
    /// network here: the emitter connects when it starts (as a supervised child or with
    /// [`Emitter::start`]).
    pub fn build(self) -> Result<Emitter, Error> {
        let queue = match &self.queue_url {
            Some(url) => Some(QueueUrl::parse(url)?),
            None => None,
        };
        self.check()?;
        Ok(Emitter::from_parts(self, queue))
    }

    fn check(&self) -> Result<(), Error> {
        let bad = |field: &'static str, reason: String| Err(Error::InvalidConfig { field, reason });
        if !(1024..=MAX_MESSAGE_BYTES).contains(&self.max_message_bytes) {
            return bad(
                "max_message_bytes",
                format!(
                    "is {}, must be between 1024 and {MAX_MESSAGE_BYTES} (SQS's limits)",
                    self.max_message_bytes
                ),
            );
        }
        if !(1..=10_000_000).contains(&self.buffer_capacity) {
            return bad(
                "buffer_capacity",
                format!(
                    "is {}, must be between 1 and 10,000,000",
                    self.buffer_capacity
                ),
            );
        }
        if self.buffer_bytes < self.max_message_bytes || self.buffer_bytes > (1 << 40) {
            return bad(
                "buffer_bytes",
                format!(
                    "is {}, must be at least max_message_bytes ({}) and at most 1 TiB",
                    self.buffer_bytes, self.max_message_bytes
                ),
            );
        }
        if let Some(n) = self.max_in_flight
            && !(1..=256).contains(&n)
        {
            return bad(
                "max_in_flight",
                format!("is {n}, must be between 1 and 256"),
            );
        }
        for (field, d) in [
            ("request_timeout", self.request_timeout),
            ("connect_timeout", self.connect_timeout),
            ("sync_timeout", self.sync_timeout),
            ("drain_timeout", self.drain_timeout),
        ] {
            if d.is_zero() {
                return bad(field, "must be greater than zero".to_string());
            }
        }
        if self.retry.initial_backoff.is_zero()
            || self.retry.max_backoff < self.retry.initial_backoff
        {
            return bad(
                "retry",
                "needs 0 < initial_backoff <= max_backoff".to_string(),
            );
        }
        if self.linger > Duration::from_secs(10) {
            return bad("linger", "must be at most 10 s".to_string());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    #[test]
    fn a_standard_queue_url_parses() {
        let q = QueueUrl::parse("https://sqs.us-east-1.amazonaws.com/123456789012/hooks").unwrap();
        assert_eq!(q.name, "hooks");
        assert!(!q.fifo);
    }

    #[test]
    fn a_fifo_queue_url_is_detected() {
        let q = QueueUrl::parse("http://127.0.0.1:4566/000000000000/hooks.fifo").unwrap();
        assert!(q.fifo);
    }

    #[test]
    fn malformed_queue_urls_are_rejected() {
        for url in [
            "",
            "hooks",
            "ftp://host/1/q",
            "https://",
            "https://host",
            "https://host/123",
            "https://host/123/q/extra",
            "https://host//q",
            "https://host/123/bad name",
            "https://host/123/q.txt",
            "https://user:pw@host/123/q",
            "https://host/123/q?x=1",
        ] {
            assert!(
                matches!(QueueUrl::parse(url), Err(Error::InvalidQueueUrl { .. })),
                "{url} should be rejected"
            );
        }
    }

    #[test]
    fn denied_field_patterns_match_exact_prefix_and_star() {
        let d = DeniedFields::new()
            .deny("*", ["a"])
            .deny("transaction.*", ["b"])
            .deny("user.created", ["c"]);
        assert_eq!(d.for_event("transaction.created"), vec!["a", "b"]);
        assert_eq!(d.for_event("user.created"), vec!["a", "c"]);
        assert_eq!(d.for_event("user.deleted"), vec!["a"]);
        assert_eq!(d.for_event("transactions.created"), vec!["a"]);
    }

    #[test]
    fn a_wildcard_rule_applies_to_the_event_named_by_its_first_segment() {
        let d = DeniedFields::new().deny("transaction.*", ["cardNumber"]);
        assert_eq!(d.for_event("transaction"), vec!["cardNumber"]);
        assert_eq!(d.for_event("transaction.created.v2"), vec!["cardNumber"]);
        assert!(d.for_event("transactions").is_empty());
        assert!(d.for_event("transact").is_empty());
    }

    /// The original's rule (lib/btrz_ex_webhooks_emitter.ex, `get_denied_fields`): the fields
    /// under `*`, under `<first segment of the event name>.*` and under the event name.
    fn original_denied_fields(rules: &[(String, Vec<String>)], event: &str) -> BTreeSet<String> {
        let first_segment = event.split('.').next().unwrap_or_default();
        let keys = [
            "*".to_string(),
            format!("{first_segment}.*"),
            event.to_string(),
        ];
        rules
            .iter()
            .filter(|(pattern, _)| keys.contains(pattern))
            .flat_map(|(_, fields)| fields.iter().cloned())
            .collect()
    }

    fn segment() -> impl Strategy<Value = String> {
        prop::sample::select(vec!["transaction", "transactions", "user", "t", "a-b"])
            .prop_map(str::to_string)
    }

    fn event_name() -> impl Strategy<Value = String> {
        prop::collection::vec(segment(), 1..4).prop_map(|segments| segments.join("."))
    }

    /// Patterns the original understands: `*`, `<one segment>.*`, an exact event name.
    fn original_pattern() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("*".to_string()),
            segment().prop_map(|s| format!("{s}.*")),
            event_name(),
        ]
    }

    /// Any pattern, including a wildcard over several segments and a bare prefix.
    fn any_pattern() -> impl Strategy<Value = String> {
        prop_oneof![
            original_pattern(),
            event_name().prop_map(|e| format!("{e}.*")),
            event_name().prop_map(|e| format!("{e}*")),
        ]
    }

    fn rules(
        pattern: impl Strategy<Value = String>,
    ) -> impl Strategy<Value = Vec<(String, Vec<String>)>> {
        prop::collection::vec((pattern, prop::collection::vec("[a-c]", 1..3)), 0..5)
    }

    fn denied(rules: &[(String, Vec<String>)], event: &str) -> BTreeSet<String> {
        let d = rules.iter().fold(DeniedFields::new(), |d, (p, f)| {
            d.deny(p.clone(), f.clone())
        });
        d.for_event(event).into_iter().map(str::to_string).collect()
    }

    proptest! {
        #[test]
        fn with_the_originals_patterns_the_denied_fields_are_the_originals(
            rules in rules(original_pattern()),
            event in event_name(),
        ) {
            prop_assert_eq!(denied(&rules, &event), original_denied_fields(&rules, &event));
        }

        #[test]
        fn whatever_the_patterns_every_field_the_original_denies_is_denied(
            rules in rules(any_pattern()),
            event in event_name(),
        ) {
            let ours = denied(&rules, &event);
            let original = original_denied_fields(&rules, &event);
            prop_assert!(ours.is_superset(&original), "ours {:?}, original {:?}", ours, original);
        }
    }

    #[test]
    fn credentials_never_appear_in_debug_output() {
        let b = EmitterBuilder::new()
            .queue_url("https://sqs.us-east-1.amazonaws.com/123456789012/q")
            .credentials("AKIAEXAMPLEKEYID", "very-secret-access-key");
        let text = format!("{b:?}");
        assert!(!text.contains("very-secret-access-key"), "{text}");
        assert!(!text.contains("AKIAEXAMPLEKEYID"), "{text}");
        let emitter = b.build().unwrap();
        let text = format!("{emitter:?}");
        assert!(
            !text.contains("very-secret") && !text.contains("AKIAEXAMPLE"),
            "{text}"
        );
    }

    #[test]
    fn retries_back_off_from_the_policys_initial_delay_doubling_to_its_maximum() {
        let r = RetryPolicy::new(
            Duration::from_millis(100),
            Duration::from_secs(1),
            Duration::from_secs(60),
        );
        assert_eq!(
            r.backoff(),
            Backoff::exponential(Duration::from_millis(100), Duration::from_secs(1))
        );
        // attempts count from 1: the first retry waits about the initial delay
        let first = r.delay(1);
        assert!(
            first >= Duration::from_millis(50) && first <= Duration::from_millis(100),
            "{first:?}"
        );
        assert!(r.delay(0) <= Duration::from_millis(100), "no attempt yet");
        assert!(r.delay(u32::MAX) <= Duration::from_secs(1));
    }
}
