//! [`ShardKey`], the sharding key, and [`KeyDecoder`], how it is read from a message.

use std::borrow::Borrow;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use bytes::Bytes;
use wharf_core::transport::Message;

use wharf_core::supervisor::panic_message;

/// The key that picks a message's actor: messages with equal keys are handled by one actor,
/// one at a time, in order.
///
/// It is opaque bytes (cheap to clone: reference-counted).
///
/// `Display` shows the key as it is (`customer-42`), so that logs and error messages read
/// naturally. It stays safe to log: bytes that are not UTF-8 show as `\xNN`, control
/// characters and invisible formatting ones (bidirectional overrides, zero-width
/// characters) as Rust escapes (`\n`, `\u{202e}`), and a key longer than 64 characters is
/// cut, ending in `...`. `Debug` quotes it: `ShardKey("customer-42")`.
///
/// ```
/// use wharf_sharded_consumer::ShardKey;
///
/// let key = ShardKey::from("customer-42");
/// assert_eq!(key.as_str(), Some("customer-42"));
/// assert_eq!(key.to_string(), "customer-42");
/// assert_eq!(format!("{key:?}"), r#"ShardKey("customer-42")"#);
/// assert_eq!(ShardKey::from("line\nbreak").to_string(), r"line\nbreak");
/// assert_eq!(ShardKey::from(vec![b'k', 0xff, 0x00]).to_string(), r"k\xff\u{0}");
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ShardKey(Bytes);

impl ShardKey {
    /// A key of these bytes.
    pub fn new(bytes: impl Into<Bytes>) -> Self {
        Self(bytes.into())
    }

    /// The key's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The key as text, if it is UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }

    /// The key's bytes, shared.
    pub fn to_bytes(&self) -> Bytes {
        self.0.clone()
    }

    /// A copy that owns exactly its bytes, so that a registry entry does not keep a whole
    /// message buffer alive.
    pub(crate) fn compact(&self) -> Self {
        Self(Bytes::copy_from_slice(&self.0))
    }
}

impl Hash for ShardKey {
    fn hash<S: Hasher>(&self, state: &mut S) {
        // Must hash exactly as `[u8]` does: the registry is looked up by `&[u8]`.
        self.as_bytes().hash(state);
    }
}

impl Borrow<[u8]> for ShardKey {
    fn borrow(&self) -> &[u8] {
        &self.0
    }
}

impl From<&str> for ShardKey {
    fn from(key: &str) -> Self {
        Self(Bytes::copy_from_slice(key.as_bytes()))
    }
}

impl From<String> for ShardKey {
    fn from(key: String) -> Self {
        Self(Bytes::from(key))
    }
}

impl From<Vec<u8>> for ShardKey {
    fn from(key: Vec<u8>) -> Self {
        Self(Bytes::from(key))
    }
}

impl From<&[u8]> for ShardKey {
    fn from(key: &[u8]) -> Self {
        Self(Bytes::copy_from_slice(key))
    }
}

impl From<Bytes> for ShardKey {
    fn from(key: Bytes) -> Self {
        Self(key)
    }
}

impl fmt::Display for ShardKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use fmt::Write;
        /// Characters (or undecodable bytes) shown before the key is cut.
        const MAX: usize = 64;
        let mut shown = 0;
        for chunk in self.0.utf8_chunks() {
            for c in chunk.valid().chars() {
                if shown == MAX {
                    return f.write_str("...");
                }
                shown += 1;
                if needs_escape(c) {
                    write!(f, "{}", c.escape_default())?;
                } else {
                    f.write_char(c)?;
                }
            }
            for byte in chunk.invalid() {
                if shown == MAX {
                    return f.write_str("...");
                }
                shown += 1;
                write!(f, "\\x{byte:02x}")?;
            }
        }
        Ok(())
    }
}

/// Characters a log line must not carry raw: controls (newlines could forge log lines,
/// escapes could drive a terminal) and invisible formatting (zero-width characters,
/// bidirectional overrides, the byte-order mark) that make a key look like another.
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2069}' | '\u{feff}')
}

impl fmt::Debug for ShardKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ShardKey(\"{self}\")")
    }
}

type CustomFn = dyn Fn(&Message) -> Result<Bytes, String> + Send + Sync;

#[derive(Clone)]
enum Origin {
    MessageKey,
    Header(String),
    Custom(Arc<CustomFn>),
}

/// Where a message's [`ShardKey`] comes from, and what makes a key acceptable.
///
/// Decoding never panics: a message whose key cannot be read (no key, a missing header, an
/// empty or over-long key, bytes that are not UTF-8 when UTF-8 is required, a custom
/// function that fails or panics) is **rejected with a reason** and dead-lettered by the
/// consumer (see [`ShardedConsumerBuilder::dead_letter`](crate::ShardedConsumerBuilder::dead_letter)),
/// never handled under a made-up key and never retried forever.
///
/// | Decoder | Key |
/// |---|---|
/// | [`message_key()`](Self::message_key) (default) | the message key ([`Message::key`]; the Kafka record key) |
/// | [`header(name)`](Self::header) | the first value of header `name` |
/// | [`custom(f)`](Self::custom) | what `f` returns; `Err(reason)` rejects the message |
///
/// ```
/// use wharf_core::transport::Message;
/// use wharf_sharded_consumer::KeyDecoder;
///
/// let decoder = KeyDecoder::header("tenant").require_utf8().max_len(64);
/// let key = decoder.decode(&Message::new("x").with_header("tenant", "acme")).unwrap();
/// assert_eq!(key.as_str(), Some("acme"));
///
/// let rejected = decoder.decode(&Message::new("x")).unwrap_err();
/// assert_eq!(rejected.reason(), "the message has no `tenant` header");
/// let rejected = decoder.decode(&Message::new("x").with_header("tenant", vec![0xc3])).unwrap_err();
/// assert!(rejected.reason().contains("not valid UTF-8"));
/// ```
#[derive(Clone)]
pub struct KeyDecoder {
    from: Origin,
    max_len: usize,
    require_utf8: bool,
}

impl KeyDecoder {
    /// The default bound on a key's length, in bytes.
    pub const DEFAULT_MAX_LEN: usize = 1024;

    /// Keys from [`Message::key`] (the default).
    pub fn message_key() -> Self {
        Self::with(Origin::MessageKey)
    }

    /// Keys from the first value of header `name`.
    pub fn header(name: impl Into<String>) -> Self {
        Self::with(Origin::Header(name.into()))
    }

    /// Keys computed by `f`; `Err(reason)` rejects the message with that reason. A panic in
    /// `f` is caught and rejects the message too.
    pub fn custom<F>(f: F) -> Self
    where
        F: Fn(&Message) -> Result<Bytes, String> + Send + Sync + 'static,
    {
        Self::with(Origin::Custom(Arc::new(f)))
    }

    fn with(from: Origin) -> Self {
        Self {
            from,
            max_len: Self::DEFAULT_MAX_LEN,
            require_utf8: false,
        }
    }

    /// Rejects keys longer than `bytes` (default [`DEFAULT_MAX_LEN`](Self::DEFAULT_MAX_LEN)).
    #[must_use]
    pub fn max_len(mut self, bytes: usize) -> Self {
        self.max_len = bytes.max(1);
        self
    }

    /// Rejects keys that are not valid UTF-8.
    #[must_use]
    pub fn require_utf8(mut self) -> Self {
        self.require_utf8 = true;
        self
    }

    /// The key of `message`, or why it has none.
    ///
    /// # Errors
    ///
    /// [`KeyRejected`] with the reason: the message is dead-lettered with it.
    pub fn decode(&self, message: &Message) -> Result<ShardKey, KeyRejected> {
        let bytes =
            match &self.from {
                Origin::MessageKey => message
                    .key()
                    .cloned()
                    .ok_or_else(|| KeyRejected::new("the message has no key".to_owned()))?,
                Origin::Header(name) => message.headers().get(name).cloned().ok_or_else(|| {
                    KeyRejected::new(format!("the message has no `{name}` header"))
                })?,
                Origin::Custom(f) => match catch_unwind(AssertUnwindSafe(|| f(message))) {
                    Ok(Ok(bytes)) => bytes,
                    Ok(Err(reason)) => return Err(KeyRejected::new(reason)),
                    Err(panic) => {
                        return Err(KeyRejected::new(format!(
                            "the key function panicked: {}",
                            panic_message(panic.as_ref())
                        )));
                    }
                },
            };
        self.check(ShardKey(bytes))
    }

    /// Checks a key given directly (to `signal`, `get_or_start`) against the same limits.
    pub(crate) fn check(&self, key: ShardKey) -> Result<ShardKey, KeyRejected> {
        if key.0.is_empty() {
            return Err(KeyRejected::new("the key is empty".to_owned()));
        }
        if key.0.len() > self.max_len {
            return Err(KeyRejected::new(format!(
                "the key is {} bytes long, more than the limit of {} (raise it with `KeyDecoder::max_len`)",
                key.0.len(),
                self.max_len
            )));
        }
        if self.require_utf8
            && let Err(e) = std::str::from_utf8(&key.0)
        {
            return Err(KeyRejected::new(format!(
                "the key is not valid UTF-8 (invalid byte at position {})",
                e.valid_up_to()
            )));
        }
        Ok(key)
    }
}

impl Default for KeyDecoder {
    fn default() -> Self {
        Self::message_key()
    }
}

impl fmt::Debug for KeyDecoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let from = match &self.from {
            Origin::MessageKey => "message key".to_owned(),
            Origin::Header(name) => format!("header `{name}`"),
            Origin::Custom(_) => "custom function".to_owned(),
        };
        f.debug_struct("KeyDecoder")
            .field("from", &from)
            .field("max_len", &self.max_len)
            .field("require_utf8", &self.require_utf8)
            .finish()
    }
}

/// Why a message's key could not be decoded; the message is dead-lettered with this reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRejected {
    reason: String,
}

impl KeyRejected {
    fn new(reason: String) -> Self {
        Self { reason }
    }

    /// Why, in words.
    pub fn reason(&self) -> &str {
        &self.reason
    }

    pub(crate) fn into_reason(self) -> String {
        self.reason
    }
}

impl fmt::Display for KeyRejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "undecodable sharding key: {}", self.reason)
    }
}

impl std::error::Error for KeyRejected {}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn a_message_without_a_key_is_rejected_not_panicked_on() {
        let rejected = KeyDecoder::message_key()
            .decode(&Message::new("x"))
            .unwrap_err();
        assert_eq!(rejected.reason(), "the message has no key");
    }

    #[test]
    fn empty_and_over_long_keys_are_rejected() {
        let decoder = KeyDecoder::message_key().max_len(4);
        assert!(decoder.decode(&Message::new("x").with_key("")).is_err());
        let long = decoder
            .decode(&Message::new("x").with_key("12345"))
            .unwrap_err();
        assert!(long.reason().contains("5 bytes"), "{long}");
        assert!(decoder.decode(&Message::new("x").with_key("1234")).is_ok());
    }

    #[test]
    fn a_panicking_key_function_rejects_the_message() {
        let decoder = KeyDecoder::custom(|_| panic!("boom"));
        let rejected = decoder.decode(&Message::new("x")).unwrap_err();
        assert!(rejected.reason().contains("boom"), "{rejected}");
    }

    #[test]
    fn a_printable_key_displays_as_it_is_without_quotes() {
        assert_eq!(ShardKey::from("customer-42").to_string(), "customer-42");
        assert_eq!(ShardKey::from("café 東京").to_string(), "café 東京");
        assert_eq!(
            format!("{:?}", ShardKey::from("customer-42")),
            "ShardKey(\"customer-42\")"
        );
    }

    #[test]
    fn control_characters_and_invisible_formatting_are_escaped() {
        assert_eq!(
            ShardKey::from("a\nb\tc\u{1b}[31m").to_string(),
            "a\\nb\\tc\\u{1b}[31m"
        );
        // A right-to-left override would make "admin\u{202e}txt" read as another key.
        assert_eq!(
            ShardKey::from("admin\u{202e}txt").to_string(),
            "admin\\u{202e}txt"
        );
        assert_eq!(
            ShardKey::from("zero\u{200b}width").to_string(),
            "zero\\u{200b}width"
        );
    }

    #[test]
    fn bytes_that_are_not_utf8_are_escaped_and_the_rest_shown() {
        assert_eq!(ShardKey::from(vec![1u8, 0xab]).to_string(), "\\u{1}\\xab");
        assert_eq!(
            ShardKey::from(b"order-\xff\xfe-7".to_vec()).to_string(),
            "order-\\xff\\xfe-7"
        );
    }

    #[test]
    fn long_keys_are_cut_after_64_characters() {
        let long = ShardKey::from("k".repeat(100)).to_string();
        assert_eq!(long, format!("{}...", "k".repeat(64)));
        assert_eq!(ShardKey::from("k".repeat(64)).to_string(), "k".repeat(64));
        let binary = ShardKey::from(vec![0xffu8; 100]).to_string();
        assert_eq!(binary, format!("{}...", "\\xff".repeat(64)));
    }

    #[test]
    fn keys_hash_like_their_bytes_so_the_registry_can_look_up_by_slice() {
        use std::hash::BuildHasher;
        let state = foldhash::fast::FixedState::with_seed(7);
        let key = ShardKey::from("abc");
        assert_eq!(state.hash_one(&key), state.hash_one(&b"abc"[..]));
    }
}
