//! What goes out (`Record`), what comes back (`Delivered`), and what comes in (`ConsumedMessage`).

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use rdkafka::Message as _;
use rdkafka::bindings as rdsys;
use rdkafka::consumer::BaseConsumer;
use rdkafka::message::{BorrowedMessage, Header, OwnedHeaders};

/// A message to produce.
///
/// ```
/// use wharf_kafka_wrapper::Record;
/// let r = Record::new("orders", "payload").key("customer-7").header("trace-id", "abc");
/// assert_eq!(r.topic(), "orders");
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Record {
    pub(crate) topic: String,
    pub(crate) key: Option<Bytes>,
    pub(crate) payload: Bytes,
    pub(crate) headers: Vec<(String, Bytes)>,
    pub(crate) partition: Option<i32>,
    pub(crate) timestamp_ms: Option<i64>,
}

impl Record {
    /// A record for `topic` with `payload`, no key: librdkafka picks a partition at random.
    pub fn new(topic: impl Into<String>, payload: impl Into<Bytes>) -> Self {
        Self {
            topic: topic.into(),
            key: None,
            payload: payload.into(),
            headers: Vec::new(),
            partition: None,
            timestamp_ms: None,
        }
    }

    /// Sets the key: the partition is then the Java client's `murmur2(key) % partitions`.
    pub fn key(mut self, key: impl Into<Bytes>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Adds a header (headers may repeat).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<Bytes>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sends to this partition instead of the partitioner's choice.
    pub fn partition(mut self, partition: i32) -> Self {
        self.partition = Some(partition);
        self
    }

    /// Sets the message timestamp (milliseconds since the Unix epoch).
    pub fn timestamp_ms(mut self, ms: i64) -> Self {
        self.timestamp_ms = Some(ms);
        self
    }

    /// The target topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The payload.
    pub fn payload(&self) -> &Bytes {
        &self.payload
    }

    /// The key, if any.
    pub fn key_bytes(&self) -> Option<&Bytes> {
        self.key.as_ref()
    }

    pub(crate) fn owned_headers(&self) -> Option<OwnedHeaders> {
        if self.headers.is_empty() {
            return None;
        }
        let mut h = OwnedHeaders::new_with_capacity(self.headers.len());
        for (k, v) in &self.headers {
            h = h.insert(Header {
                key: k,
                value: Some(v.as_ref()),
            });
        }
        Some(h)
    }
}

impl fmt::Debug for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Record")
            .field("topic", &self.topic)
            .field("key_len", &self.key.as_ref().map(Bytes::len))
            .field("payload_len", &self.payload.len())
            .field(
                "headers",
                &self.headers.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .field("partition", &self.partition)
            .finish()
    }
}

/// Where the broker stored a message: its receipt.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Delivered {
    /// The topic (shared among the receipts of one batch).
    pub topic: Arc<str>,
    /// The partition the message landed on.
    pub partition: i32,
    /// Its offset in that partition, when the broker named one. A batch retried after a
    /// lost answer that the broker calls a duplicate (`DUPLICATE_SEQUENCE_NUMBER`: it had
    /// stored it already) names none: librdkafka numbers that batch from -1, so its first
    /// record reads -1 and the others 0, 1, 2, ..., which are not where they are (seen on
    /// Tansu under the nemesis, `tests/nemesis.rs`, about 1 receipt in 300 under link
    /// faults). On Tansu 0.6 such a batch may not be stored at all after the broker crashed:
    /// see the guide's "Known limits".
    pub offset: i64,
}

impl fmt::Display for Delivered {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}@{}", self.topic, self.partition, self.offset)
    }
}

/// A message read from Kafka.
///
/// Read in place: the payload, key and headers are views of librdkafka's fetch buffer, so a
/// consumer copies nothing and parses headers only when a handler asks for them. Cheap to
/// clone (the clones share the buffer).
///
/// Keep it only while handling it: a message alive keeps the memory of the fetch it came
/// from alive (up to librdkafka's `max.partition.fetch.bytes`), and its consumer's client.
/// To keep a message longer, [`detach`](Self::detach) it: an owned copy that holds nothing
/// of librdkafka's.
#[derive(Clone)]
pub struct ConsumedMessage {
    pub(crate) partition: i32,
    pub(crate) offset: i64,
    pub(crate) timestamp_ms: Option<i64>,
    pub(crate) attempt: u32,
    data: Data,
}

#[derive(Clone)]
enum Data {
    /// Message `index` of a batch taken from librdkafka together.
    InPlace {
        fetched: Arc<Fetched>,
        index: usize,
    },
    Owned(Arc<Owned>),
}

/// A message's contents, copied out of librdkafka.
struct Owned {
    topic: Arc<str>,
    key: Option<Bytes>,
    payload: Bytes,
    headers: Vec<(String, Bytes)>,
}

/// A message consumed from librdkafka with `rd_kafka_consume_batch_queue`: ours until we
/// destroy it, valid while its client is alive.
pub(crate) struct RawMessage(std::ptr::NonNull<rdsys::rd_kafka_message_t>);

// SAFETY: a consumed librdkafka message is not tied to a thread; it is only read (and the
// headers parse on first access is serialised by `Fetched::parsing`) and destroyed once.
unsafe impl Send for RawMessage {}
unsafe impl Sync for RawMessage {}

impl RawMessage {
    /// Takes ownership of a consumed message.
    ///
    /// # Safety
    ///
    /// `ptr` is a message returned by `rd_kafka_consume_batch_queue`, not destroyed and not
    /// owned by anything else, whose client outlives the returned value.
    pub(crate) unsafe fn from_ptr(ptr: *mut rdsys::rd_kafka_message_t) -> Option<Self> {
        std::ptr::NonNull::new(ptr).map(Self)
    }

    fn get(&self) -> &rdsys::rd_kafka_message_t {
        // SAFETY: valid until dropped (see `from_ptr`).
        unsafe { self.0.as_ref() }
    }

    /// librdkafka's error for this "message" (an error event, not a message), if any.
    pub(crate) fn error(&self) -> Option<rdkafka::types::RDKafkaErrorCode> {
        let err = self.get().err;
        (err != rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR).then(|| err.into())
    }

    fn partition(&self) -> i32 {
        self.get().partition
    }

    fn offset(&self) -> i64 {
        self.get().offset
    }

    fn payload(&self) -> &[u8] {
        let m = self.get();
        if m.payload.is_null() {
            return &[];
        }
        // SAFETY: librdkafka's payload pointer and length, valid as long as the message.
        unsafe { std::slice::from_raw_parts(m.payload.cast::<u8>(), m.len) }
    }

    fn key(&self) -> Option<&[u8]> {
        let m = self.get();
        if m.key.is_null() {
            return None;
        }
        // SAFETY: as for the payload.
        Some(unsafe { std::slice::from_raw_parts(m.key.cast::<u8>(), m.key_len) })
    }

    fn timestamp_ms(&self) -> Option<i64> {
        let mut kind = rdsys::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE;
        // SAFETY: a live message.
        let ms = unsafe { rdsys::rd_kafka_message_timestamp(self.0.as_ptr(), &mut kind) };
        let known = kind != rdsys::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE;
        (known && ms >= 0).then_some(ms)
    }
}

impl Drop for RawMessage {
    fn drop(&mut self) {
        // SAFETY: ours, destroyed once, while its client is alive (see `from_ptr`).
        unsafe { rdsys::rd_kafka_message_destroy(self.0.as_ptr()) }
    }
}

/// Messages taken from librdkafka together, and the client they came from, which must
/// outlive them. (Fields drop in order: the messages first.)
pub(crate) struct Fetched {
    messages: Vec<RawMessage>,
    topic: Arc<str>,
    /// Held while librdkafka parses a message's headers (on first access it stores them in
    /// the message), since clones of a message may ask from several threads at once.
    parsing: std::sync::Mutex<()>,
    _client: KeepAlive,
}

/// Keeps a librdkafka client alive; the last one lets it go on a thread of its own,
/// since closing a consumer blocks and this may run on an async runtime's thread.
pub(crate) struct KeepAlive(Option<Arc<dyn Release>>);

/// A client that [`KeepAlive`] can hold.
pub(crate) trait Release: Send + Sync {
    /// Drops this reference; if it is the last one, closes the client off this thread.
    fn release(self: Arc<Self>);
}

impl<C: rdkafka::consumer::ConsumerContext + 'static> Release for BaseConsumer<C> {
    fn release(self: Arc<Self>) {
        if let Some(consumer) = Arc::into_inner(self) {
            // If no thread can be started, the closure (and the consumer) drops here.
            let _ = std::thread::Builder::new()
                .name("wharf-kafka-close".to_owned())
                .spawn(move || drop(consumer));
        }
    }
}

impl KeepAlive {
    pub(crate) fn new(client: Arc<dyn Release>) -> Self {
        Self(Some(client))
    }

    /// Another reference to the client (for the messages taken from it).
    pub(crate) fn share(&self) -> Option<Arc<dyn Release>> {
        self.0.clone()
    }
}

impl Drop for KeepAlive {
    fn drop(&mut self) {
        if let Some(client) = self.0.take() {
            client.release();
        }
    }
}

impl fmt::Debug for KeepAlive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeepAlive")
    }
}

impl Fetched {
    /// Wraps messages consumed from `client` (all of `topic`) as [`ConsumedMessage`]s that
    /// share them; `client` stays alive until the last of them is dropped.
    pub(crate) fn wrap(
        messages: Vec<RawMessage>,
        topic: Arc<str>,
        client: Arc<dyn Release>,
    ) -> Vec<ConsumedMessage> {
        let fetched = Arc::new(Fetched {
            messages,
            topic,
            parsing: std::sync::Mutex::new(()),
            _client: KeepAlive::new(client),
        });
        fetched
            .messages
            .iter()
            .enumerate()
            .map(|(index, m)| ConsumedMessage {
                partition: m.partition(),
                offset: m.offset(),
                timestamp_ms: m.timestamp_ms(),
                attempt: 1,
                data: Data::InPlace {
                    fetched: fetched.clone(),
                    index,
                },
            })
            .collect()
    }
}

impl ConsumedMessage {
    /// A copy of `m` (payload, key, headers) that holds nothing of librdkafka's.
    pub(crate) fn copied(m: &BorrowedMessage<'_>, topic: Arc<str>) -> Self {
        // SAFETY: `m` is a live message, borrowed here (so no other thread parses it).
        let headers = match unsafe { native_headers(m.ptr()) } {
            Some(h) => (0..h.len())
                .filter_map(|i| h.get(i))
                .map(|(k, v)| (k.into_owned(), Bytes::copy_from_slice(v)))
                .collect(),
            None => Vec::new(),
        };
        let owned = Owned {
            topic,
            key: m.key().map(Bytes::copy_from_slice),
            payload: m.payload().map(Bytes::copy_from_slice).unwrap_or_default(),
            headers,
        };
        ConsumedMessage {
            partition: m.partition(),
            offset: m.offset(),
            timestamp_ms: m.timestamp().to_millis(),
            attempt: 1,
            data: Data::Owned(Arc::new(owned)),
        }
    }

    /// A message not taken from Kafka, for unit tests.
    #[cfg(test)]
    pub(crate) fn for_test(
        topic: &str,
        partition: i32,
        offset: i64,
        payload: &'static [u8],
    ) -> Self {
        ConsumedMessage {
            partition,
            offset,
            timestamp_ms: None,
            attempt: 1,
            data: Data::Owned(Arc::new(Owned {
                topic: Arc::from(topic),
                key: None,
                payload: Bytes::from_static(payload),
                headers: Vec::new(),
            })),
        }
    }

    fn raw(&self) -> Option<&RawMessage> {
        match &self.data {
            Data::InPlace { fetched, index } => fetched.messages.get(*index),
            Data::Owned(_) => None,
        }
    }

    fn native_headers(&self) -> Option<NativeHeaders<'_>> {
        let Data::InPlace { fetched, index } = &self.data else {
            return None;
        };
        let message = fetched.messages.get(*index)?;
        let _parsing = fetched
            .parsing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // SAFETY: a live message, for as long as `self` borrows it; parsed under the lock.
        unsafe { native_headers(message.0.as_ptr()) }
    }

    /// The topic.
    pub fn topic(&self) -> &str {
        match &self.data {
            Data::InPlace { fetched, .. } => &fetched.topic,
            Data::Owned(o) => &o.topic,
        }
    }
    /// The partition.
    pub fn partition(&self) -> i32 {
        self.partition
    }
    /// The offset in the partition.
    pub fn offset(&self) -> i64 {
        self.offset
    }
    /// The key, if any.
    pub fn key(&self) -> Option<&[u8]> {
        match &self.data {
            Data::InPlace { .. } => self.raw().and_then(|m| m.key()),
            Data::Owned(o) => o.key.as_deref(),
        }
    }
    /// The payload (empty for a tombstone).
    pub fn payload(&self) -> &[u8] {
        match &self.data {
            Data::InPlace { .. } => self.raw().map(RawMessage::payload).unwrap_or_default(),
            Data::Owned(o) => &o.payload,
        }
    }
    /// The headers, in order (names may repeat). Parsed from the fetch buffer when asked.
    pub fn headers(&self) -> MessageHeaders<'_> {
        match &self.data {
            Data::InPlace { .. } => MessageHeaders(match self.native_headers() {
                Some(h) => HeadersRepr::Native(h),
                None => HeadersRepr::Owned(&[]),
            }),
            Data::Owned(o) => MessageHeaders(HeadersRepr::Owned(&o.headers)),
        }
    }
    /// The value of the first header named `name`.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers().get(name)
    }
    /// The message timestamp in milliseconds since the Unix epoch, if the broker gave one.
    pub fn timestamp_ms(&self) -> Option<i64> {
        self.timestamp_ms
    }
    /// Which attempt at handling this is: 1 the first time, 2 after one retry, ...
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// An owned copy: payload, key and headers copied out of librdkafka's buffer, so that
    /// keeping it keeps nothing of the consumer's alive.
    pub fn detach(&self) -> ConsumedMessage {
        if let Data::Owned(_) = self.data {
            return self.clone();
        }
        let owned = Owned {
            topic: Arc::from(self.topic()),
            key: self.key().map(Bytes::copy_from_slice),
            payload: Bytes::copy_from_slice(self.payload()),
            headers: self
                .headers()
                .iter()
                .map(|(k, v)| (k.into_owned(), Bytes::copy_from_slice(v)))
                .collect(),
        };
        ConsumedMessage {
            data: Data::Owned(Arc::new(owned)),
            ..self.clone()
        }
    }
}

/// The parsed headers of a message, if it has any (librdkafka parses them on first access
/// and keeps them with the message).
///
/// # Safety
///
/// `m` is a live consumed message that outlives `'a`, and no other thread asks for its
/// headers at the same time.
unsafe fn native_headers<'a>(m: *mut rdsys::rd_kafka_message_t) -> Option<NativeHeaders<'a>> {
    let mut headers = std::ptr::null_mut();
    // SAFETY: see above; librdkafka writes a pointer to headers owned by the message.
    let err = unsafe { rdsys::rd_kafka_message_headers(m, &mut headers) };
    if err != rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR || headers.is_null() {
        return None;
    }
    Some(NativeHeaders {
        ptr: headers,
        _message: std::marker::PhantomData,
    })
}

/// Headers owned by a librdkafka message.
#[derive(Clone, Copy)]
struct NativeHeaders<'a> {
    ptr: *mut rdsys::rd_kafka_headers_t,
    _message: std::marker::PhantomData<&'a ()>,
}

// SAFETY: once parsed, librdkafka's headers of a consumed message are only read (count,
// get), which is safe from any thread; they live as long as the message.
unsafe impl Send for NativeHeaders<'_> {}
unsafe impl Sync for NativeHeaders<'_> {}

impl<'a> NativeHeaders<'a> {
    fn len(&self) -> usize {
        // SAFETY: `ptr` is valid while the message ('a) is.
        unsafe { rdsys::rd_kafka_header_cnt(self.ptr) }
    }

    fn get(&self, index: usize) -> Option<(std::borrow::Cow<'a, str>, &'a [u8])> {
        let mut name = std::ptr::null();
        let mut value = std::ptr::null();
        let mut size = 0usize;
        // SAFETY: `ptr` is valid while the message ('a) is; librdkafka points `name` at a
        // NUL-terminated string and `value` at `size` bytes, both owned by the headers.
        unsafe {
            let err =
                rdsys::rd_kafka_header_get_all(self.ptr, index, &mut name, &mut value, &mut size);
            if err != rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR || name.is_null() {
                return None;
            }
            // A name that is not UTF-8 is shown lossily rather than failing the message
            // (rdkafka's own accessor panics on it).
            let name = std::ffi::CStr::from_ptr(name).to_string_lossy();
            let value: &'a [u8] = if value.is_null() {
                &[]
            } else {
                std::slice::from_raw_parts(value.cast::<u8>(), size)
            };
            Some((name, value))
        }
    }
}

/// The headers of a [`ConsumedMessage`], in order (names may repeat). A header without a
/// value reads as empty.
#[derive(Clone, Copy)]
pub struct MessageHeaders<'a>(HeadersRepr<'a>);

#[derive(Clone, Copy)]
enum HeadersRepr<'a> {
    Native(NativeHeaders<'a>),
    Owned(&'a [(String, Bytes)]),
}

impl<'a> MessageHeaders<'a> {
    /// How many headers there are.
    pub fn len(&self) -> usize {
        match self.0 {
            HeadersRepr::Native(h) => h.len(),
            HeadersRepr::Owned(h) => h.len(),
        }
    }

    /// No headers at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// (name, value) pairs, in order.
    pub fn iter(&self) -> impl Iterator<Item = (std::borrow::Cow<'a, str>, &'a [u8])> + 'a {
        let this = *self;
        (0..self.len()).filter_map(move |i| match this.0 {
            HeadersRepr::Native(h) => h.get(i),
            HeadersRepr::Owned(h) => h
                .get(i)
                .map(|(k, v)| (std::borrow::Cow::Borrowed(k.as_str()), v.as_ref())),
        })
    }

    /// The value of the first header named `name`.
    pub fn get(&self, name: &str) -> Option<&'a [u8]> {
        self.iter().find(|(k, _)| k == name).map(|(_, v)| v)
    }
}

impl fmt::Debug for MessageHeaders<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Names only: values may be anything, including secrets.
        f.debug_list().entries(self.iter().map(|(k, _)| k)).finish()
    }
}

impl PartialEq for ConsumedMessage {
    fn eq(&self, other: &Self) -> bool {
        self.topic() == other.topic()
            && self.partition == other.partition
            && self.offset == other.offset
            && self.timestamp_ms == other.timestamp_ms
            && self.attempt == other.attempt
            && self.key() == other.key()
            && self.payload() == other.payload()
            && self.headers().iter().eq(other.headers().iter())
    }
}

impl Eq for ConsumedMessage {}

impl fmt::Debug for ConsumedMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConsumedMessage")
            .field("topic", &self.topic())
            .field("partition", &self.partition)
            .field("offset", &self.offset)
            .field("key_len", &self.key().map(<[u8]>::len))
            .field("payload_len", &self.payload().len())
            .field("attempt", &self.attempt)
            .finish()
    }
}
