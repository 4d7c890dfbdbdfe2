//! [`Message`] and its [`Headers`]: what every transport carries.

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;

/// One message as every transport sees it: an optional key, a payload, headers, and an
/// optional event time.
///
/// - The **key** is the broker's routing and ordering key where it has one: the Kafka record
///   key (it picks the partition), the Pulsar partition key, the SQS FIFO message group id,
///   the sharding key of the sharded consumer. `None` lets the broker choose.
/// - The **payload** is opaque bytes; wharf never decodes it.
/// - The **headers** are ordered name/value pairs (Kafka record headers, Pulsar properties,
///   SQS message attributes). See [`Headers`].
/// - The **event time** is when the event happened, as opposed to when it was published;
///   transports map it to the broker's field for it (Kafka timestamp, Pulsar event time) or
///   leave it out.
///
/// Cloning is cheap: the payload and key are reference-counted [`Bytes`], and the headers
/// are shared until one clone changes them. Retrying, dead-lettering and redelivering a
/// message therefore never copy its payload.
///
/// ```
/// use std::time::SystemTime;
/// use wharf_core::transport::Message;
///
/// let message = Message::new("order 42 shipped")
///     .with_key("order-42")
///     .with_header("content-type", "text/plain")
///     .with_event_time(SystemTime::now());
///
/// assert_eq!(message.payload().as_ref(), b"order 42 shipped");
/// assert_eq!(message.key().map(|k| k.as_ref()), Some(&b"order-42"[..]));
/// assert_eq!(message.headers().get("content-type").map(|v| v.as_ref()), Some(&b"text/plain"[..]));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Message {
    key: Option<Bytes>,
    payload: Bytes,
    headers: Headers,
    event_time: Option<SystemTime>,
}

impl Message {
    /// A message with this payload, no key, no headers and no event time.
    pub fn new(payload: impl Into<Bytes>) -> Self {
        Self {
            payload: payload.into(),
            ..Self::default()
        }
    }

    /// Sets the key (see the type's docs for what brokers do with it).
    #[must_use]
    pub fn with_key(mut self, key: impl Into<Bytes>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Sets header `name` to `value`, replacing an earlier value of that name
    /// (see [`Headers::insert`]).
    #[must_use]
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<Bytes>) -> Self {
        self.headers.insert(name, value);
        self
    }

    /// Replaces all headers.
    #[must_use]
    pub fn with_headers(mut self, headers: Headers) -> Self {
        self.headers = headers;
        self
    }

    /// Sets the time the event happened.
    #[must_use]
    pub fn with_event_time(mut self, event_time: SystemTime) -> Self {
        self.event_time = Some(event_time);
        self
    }

    /// The key, if the message has one.
    pub fn key(&self) -> Option<&Bytes> {
        self.key.as_ref()
    }

    /// The payload.
    pub fn payload(&self) -> &Bytes {
        &self.payload
    }

    /// The headers.
    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    /// The headers, to change them in place.
    pub fn headers_mut(&mut self) -> &mut Headers {
        &mut self.headers
    }

    /// The time the event happened, if the publisher said.
    pub fn event_time(&self) -> Option<SystemTime> {
        self.event_time
    }
}

/// Ordered message headers: names (case-sensitive strings) with byte values.
///
/// Order is kept as inserted, because Kafka keeps it and some consumers rely on it. Kafka also
/// allows a name to repeat; [`append`](Self::append) adds such a repeat, while
/// [`insert`](Self::insert) keeps one value per name. Transports whose brokers hold a map
/// (Pulsar properties, SQS attributes) document what they do with repeats.
///
/// Clones share one allocation until one of them changes (copy on write), so cloning a
/// [`Message`] stays cheap.
///
/// ```
/// use wharf_core::transport::Headers;
///
/// let mut headers = Headers::new();
/// headers.insert("trace-id", "abc");
/// headers.append("hop", "a");
/// headers.append("hop", "b");
/// headers.insert("trace-id", "def");
///
/// assert_eq!(headers.get("trace-id").map(|v| v.as_ref()), Some(&b"def"[..]));
/// assert_eq!(headers.get_all("hop").count(), 2);
/// let names: Vec<&str> = headers.iter().map(|(name, _)| name).collect();
/// assert_eq!(names, ["trace-id", "hop", "hop"]);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Headers {
    entries: Arc<Vec<(String, Bytes)>>,
}

impl Headers {
    /// No headers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `name` to `value`. If `name` is present, its first occurrence takes the new value
    /// in place (keeping its position) and later repeats are removed; otherwise the header is
    /// appended.
    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<Bytes>) {
        let name = name.into();
        let value = value.into();
        let entries = Arc::make_mut(&mut self.entries);
        match entries.iter().position(|(n, _)| *n == name) {
            Some(first) => {
                entries[first].1 = value;
                let mut index = 0;
                entries.retain(|(n, _)| {
                    let keep = index <= first || *n != name;
                    index += 1;
                    keep
                });
            }
            None => entries.push((name, value)),
        }
    }

    /// Appends `name` with `value`, even if `name` is already present.
    pub fn append(&mut self, name: impl Into<String>, value: impl Into<Bytes>) {
        Arc::make_mut(&mut self.entries).push((name.into(), value.into()));
    }

    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&Bytes> {
        self.entries.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    /// Every value of `name`, in order.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Bytes> + 'a {
        self.entries
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, v)| v)
    }

    /// Removes every value of `name` and returns the first one.
    pub fn remove(&mut self, name: &str) -> Option<Bytes> {
        let position = self.entries.iter().position(|(n, _)| n == name)?;
        let entries = Arc::make_mut(&mut self.entries);
        let (_, first) = entries.remove(position);
        entries.retain(|(n, _)| n != name);
        Some(first)
    }

    /// All headers, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Bytes)> {
        self.entries.iter().map(|(n, v)| (n.as_str(), v))
    }

    /// Number of headers, counting repeats.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no headers.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl<N: Into<String>, V: Into<Bytes>> FromIterator<(N, V)> for Headers {
    /// Collects pairs in order, keeping repeats (like [`Headers::append`]).
    fn from_iter<I: IntoIterator<Item = (N, V)>>(iter: I) -> Self {
        let entries = iter
            .into_iter()
            .map(|(n, v)| (n.into(), v.into()))
            .collect();
        Self {
            entries: Arc::new(entries),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_replaces_in_place_and_drops_repeats() {
        let mut headers: Headers = [("a", "1"), ("b", "2"), ("a", "3")].into_iter().collect();
        headers.insert("a", "new");
        let all: Vec<(&str, &[u8])> = headers.iter().map(|(n, v)| (n, v.as_ref())).collect();
        assert_eq!(all, [("a", &b"new"[..]), ("b", &b"2"[..])]);
    }

    #[test]
    fn remove_takes_every_repeat_and_returns_the_first() {
        let mut headers: Headers = [("a", "1"), ("b", "2"), ("a", "3")].into_iter().collect();
        assert_eq!(headers.remove("a"), Some(Bytes::from_static(b"1")));
        assert_eq!(headers.len(), 1);
        assert_eq!(headers.remove("a"), None);
    }

    #[test]
    fn names_are_case_sensitive() {
        let headers: Headers = [("Trace", "1")].into_iter().collect();
        assert!(headers.get("trace").is_none());
    }

    #[test]
    fn cloned_messages_share_payload_and_headers_until_changed() {
        let original = Message::new(vec![7u8; 1024]).with_header("h", "v");
        let mut copy = original.clone();
        assert_eq!(
            original.payload().as_ptr(),
            copy.payload().as_ptr(),
            "the payload must not be copied"
        );
        assert!(Arc::ptr_eq(
            &original.headers().entries,
            &copy.headers().entries
        ));

        copy.headers_mut().insert("h", "changed");
        assert_eq!(original.headers().get("h"), Some(&Bytes::from_static(b"v")));
    }
}
