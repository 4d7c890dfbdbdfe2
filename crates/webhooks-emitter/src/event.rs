//! A webhook event as the caller describes it, and its id.

use std::fmt;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use serde::Serialize;
use wharf_core::supervisor::panic_message;

use crate::Error;
use crate::error::Cause;

/// The id of an emitted event: a random (v4) UUID, fixed when the event is accepted and sent
/// unchanged on every retry, in the body (`id`), as the `id` message attribute and, on FIFO
/// queues, as the `MessageDeduplicationId`. Consumers dedupe on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventId(uuid::Uuid);

impl EventId {
    pub(crate) fn new_random() -> Self {
        EventId(uuid::Uuid::new_v4())
    }

    /// The UUID.
    pub fn as_uuid(&self) -> uuid::Uuid {
        self.0
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

/// One webhook event: who it is for (`provider_id`), what happened (`event`, for example
/// `transaction.created`), the data, and optionally the URL to call.
///
/// ```
/// use wharf_webhooks_emitter::Event;
/// let event = Event::new("provider-123", "transaction.created", serde_json::json!({"amount": 42}))?
///     .with_url("https://example.com/hooks");
/// # Ok::<(), wharf_webhooks_emitter::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Event {
    pub(crate) provider_id: String,
    pub(crate) event: String,
    pub(crate) data: serde_json::Value,
    pub(crate) url: Option<String>,
    pub(crate) group_key: Option<String>,
    pub(crate) delay: Option<Duration>,
    pub(crate) rejected_for_tests: bool,
}

impl Event {
    /// An event whose data is anything `serde` can encode as JSON.
    ///
    /// Fails with [`Error::Unencodable`] when the data cannot be encoded (a map with
    /// non-string keys, a `Serialize` implementation that returns an error or panics: the
    /// panic is caught and reported, not propagated).
    pub fn new(
        provider_id: impl Into<String>,
        event: impl Into<String>,
        data: impl Serialize,
    ) -> Result<Self, Error> {
        let event = event.into();
        let encoded = std::panic::catch_unwind(AssertUnwindSafe(|| serde_json::to_value(data)))
            .map_err(|panic| Error::Unencodable {
                event: event.clone(),
                reason: format!(
                    "its Serialize implementation panicked: {}",
                    panic_message(panic.as_ref())
                ),
                source: None,
            })?;
        let data = encoded.map_err(|e| Error::Unencodable {
            event: event.clone(),
            reason: e.to_string(),
            source: Some(Cause::new(e)),
        })?;
        Ok(Self::from_json(provider_id, event, data))
    }

    /// An event whose data is already a JSON value (cannot fail).
    pub fn from_json(
        provider_id: impl Into<String>,
        event: impl Into<String>,
        data: serde_json::Value,
    ) -> Self {
        Event {
            provider_id: provider_id.into(),
            event: event.into(),
            data,
            url: None,
            group_key: None,
            delay: None,
            rejected_for_tests: false,
        }
    }

    /// Sets the envelope's optional `url` field (the endpoint the delivery service calls).
    pub fn with_url(mut self, url: impl Into<String>) -> Self {
        self.url = Some(url.into());
        self
    }

    /// On a FIFO queue, uses this value as the `MessageGroupId` instead of the one the
    /// emitter's [`GroupKey`](crate::GroupKey) derives.
    pub fn with_group_key(mut self, key: impl Into<String>) -> Self {
        self.group_key = Some(key.into());
        self
    }

    /// Delays delivery by SQS (`DelaySeconds`, whole seconds, at most 15 minutes; standard
    /// queues only).
    pub fn with_delay(mut self, delay: Duration) -> Self {
        self.delay = Some(delay);
        self
    }

    /// Test-only: sends the event with two faults the emitter's own checks would refuse, so
    /// that a test can make a real SQS server reject one entry of a batch
    /// (`InvalidParameterValue`): `DelaySeconds` 901 (over SQS's 900), which moto refuses
    /// and LocalStack accepts, and a message attribute named with the reserved prefix `AWS.`,
    /// which LocalStack refuses and moto accepts. AWS refuses both. Not for production use.
    #[doc(hidden)]
    pub fn rejected_by_sqs_for_tests(mut self) -> Self {
        self.rejected_for_tests = true;
        self
    }

    /// The provider id.
    pub fn provider_id(&self) -> &str {
        &self.provider_id
    }

    /// The event type.
    pub fn event_type(&self) -> &str {
        &self.event
    }

    /// The data.
    pub fn data(&self) -> &serde_json::Value {
        &self.data
    }

    /// The optional URL.
    pub fn url(&self) -> Option<&str> {
        self.url.as_deref()
    }
}
