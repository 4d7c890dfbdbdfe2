//! The message: the JSON envelope compatible with the original, its attributes, and every
//! check that can be made before anything is sent.

use std::borrow::Cow;
use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use serde::Serialize;

use crate::config::{Compression, DeniedFields, GroupKey};
use crate::error::Cause;
use crate::{Error, Event, EventId};

/// Name of the message attribute carrying the event type.
pub const ATTR_EVENT: &str = "event";
/// Name of the message attribute carrying the event id.
pub const ATTR_ID: &str = "id";
/// Name of the message attribute carrying the emitting span's W3C `traceparent` (feature
/// `otel`; absent when the event was emitted outside a traced span).
pub const ATTR_TRACEPARENT: &str = "traceparent";
/// Name of the message attribute carrying the emitting span's W3C `tracestate` (feature
/// `otel`; absent when there is none).
pub const ATTR_TRACESTATE: &str = "tracestate";
const STRING_TYPE: &str = "String";
/// A message attribute name SQS reserves (prefix `AWS.`): see
/// [`Event::rejected_by_sqs_for_tests`].
const REJECTED_ATTR_FOR_TESTS: &str = "AWS.wharf-rejected-for-tests";
/// Over SQS's longest delay: see [`Event::rejected_by_sqs_for_tests`].
const REJECTED_DELAY_FOR_TESTS: i32 = 901;
/// SQS's longest per-message delay.
const MAX_DELAY: Duration = Duration::from_secs(900);

/// What encoding needs from the configuration.
#[derive(Debug, Clone)]
pub(crate) struct EncodeOptions {
    pub(crate) max_message_bytes: usize,
    pub(crate) compression: Option<Compression>,
    pub(crate) compress_above: usize,
    pub(crate) denied_fields: DeniedFields,
    pub(crate) group_key: GroupKey,
    pub(crate) fifo: bool,
}

/// An event encoded, checked and ready to send: immutable, so every retry sends the same bytes.
#[derive(Debug)]
pub(crate) struct Prepared {
    pub(crate) id: EventId,
    pub(crate) event: String,
    pub(crate) provider_id: String,
    pub(crate) body: String,
    pub(crate) group_id: Option<String>,
    pub(crate) delay_seconds: Option<i32>,
    /// Test-only ([`Event::rejected_by_sqs_for_tests`]): the entry also carries a message
    /// attribute with a reserved name.
    pub(crate) rejected_for_tests: bool,
    /// The emitting span's trace context, sent as two more attributes (4 of SQS's 10).
    /// Boxed: an event without one stays as small as before.
    #[cfg(feature = "otel")]
    pub(crate) trace: Option<Box<wharf_core::trace::TraceContext>>,
    /// Bytes SQS counts against its limit: body plus attribute names, types and values.
    pub(crate) size: usize,
}

impl Prepared {
    /// Its size in whole KiB (rounded up), the unit of the buffer's byte budget.
    pub(crate) fn kib(&self) -> u32 {
        u32::try_from(self.size.div_ceil(1024)).unwrap_or(u32::MAX)
    }

    /// The batch entry for this event. Fails only if the SDK's builder finds a required
    /// field missing, which the fields set here rule out.
    pub(crate) fn entry(
        &self,
        batch_id: &str,
    ) -> Result<aws_sdk_sqs::types::SendMessageBatchRequestEntry, aws_sdk_sqs::error::BuildError>
    {
        use aws_sdk_sqs::types::{MessageAttributeValue, SendMessageBatchRequestEntry};
        let attr = |v: &str| {
            MessageAttributeValue::builder()
                .data_type(STRING_TYPE)
                .string_value(v)
                .build()
        };
        let mut b = SendMessageBatchRequestEntry::builder()
            .id(batch_id)
            .message_body(self.body.clone())
            .set_delay_seconds(self.delay_seconds)
            .message_attributes(ATTR_EVENT, attr(&self.event)?)
            .message_attributes(ATTR_ID, attr(&self.id.to_string())?);
        #[cfg(feature = "otel")]
        if let Some(trace) = &self.trace {
            b = b.message_attributes(ATTR_TRACEPARENT, attr(trace.traceparent())?);
            if let Some(state) = trace.tracestate() {
                b = b.message_attributes(ATTR_TRACESTATE, attr(state)?);
            }
        }
        if self.rejected_for_tests {
            b = b.message_attributes(REJECTED_ATTR_FOR_TESTS, attr("refused")?);
        }
        if let Some(group) = &self.group_id {
            b = b
                .message_group_id(group)
                .message_deduplication_id(self.id.to_string());
        }
        b.build()
    }
}

#[derive(Serialize)]
struct Envelope<'a> {
    id: String,
    ts: u64,
    #[serde(rename = "providerId")]
    provider_id: &'a str,
    event: &'a str,
    data: &'a serde_json::Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    url: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    enc: Option<&'static str>,
}

/// Encodes and checks an event, leaving it as it was (a full buffer hands it back). Errors
/// here mean nothing was sent.
pub(crate) fn prepare(event: &Event, opts: &EncodeOptions) -> Result<Prepared, Error> {
    let Event {
        provider_id,
        event: event_type,
        data,
        url,
        group_key,
        delay,
        rejected_for_tests,
    } = event;
    check_text(event_type, "event", event_type, 256)?;
    check_text(event_type, "providerId", provider_id, 1024)?;
    if let Some(url) = url {
        check_text(event_type, "url", url, 8192)?;
    }
    let denied = opts.denied_fields.for_event(event_type);
    let data = if denied.is_empty() {
        Cow::Borrowed(data)
    } else {
        let mut kept = data.clone();
        remove_fields(&mut kept, &denied);
        Cow::Owned(kept)
    };
    let group_id = if opts.fifo {
        Some(group_id(
            event_type,
            provider_id,
            &data,
            group_key.as_deref(),
            &opts.group_key,
        )?)
    } else {
        None
    };
    let delay_seconds = match (*rejected_for_tests, *delay) {
        (true, _) => Some(REJECTED_DELAY_FOR_TESTS),
        (false, Some(d)) => Some(delay_seconds(event_type, d, opts.fifo)?),
        (false, None) => None,
    };

    let (data, enc) = encode_data(event_type, data, opts)?;
    let id = EventId::new_random();
    let envelope = Envelope {
        id: id.to_string(),
        ts: unix_millis(),
        provider_id,
        event: event_type,
        data: &data,
        url: url.as_deref(),
        enc,
    };
    let mut body = serde_json::to_string(&envelope).map_err(|e| Error::Unencodable {
        event: event_type.clone(),
        reason: e.to_string(),
        source: Some(Cause::new(e)),
    })?;
    // The body is kept until the event is sent, possibly for long with SQS down: trim the
    // writer's slack (its buffer doubles from 128 bytes, so a 300-byte body sat in 512).
    body.shrink_to_fit();
    // serde_json escapes control characters; U+FFFE and U+FFFF pass through and SQS
    // rejects them.
    check_sqs_chars(event_type, "data", &body)?;

    let id_text = envelope.id;
    // Read here, in the caller's span (emit, try_emit and emit_sync all prepare first).
    #[cfg(feature = "otel")]
    let trace = wharf_core::trace::TraceContext::current().map(Box::new);
    #[cfg(feature = "otel")]
    let trace_size = trace.as_ref().map_or(0, |t| {
        ATTR_TRACEPARENT.len()
            + STRING_TYPE.len()
            + t.traceparent().len()
            + t.tracestate()
                .map_or(0, |s| ATTR_TRACESTATE.len() + STRING_TYPE.len() + s.len())
    });
    #[cfg(not(feature = "otel"))]
    let trace_size = 0;
    let size = trace_size
        + body.len()
        + ATTR_EVENT.len()
        + STRING_TYPE.len()
        + event_type.len()
        + ATTR_ID.len()
        + STRING_TYPE.len()
        + id_text.len();
    if size > opts.max_message_bytes {
        return Err(Error::TooLarge {
            event: event_type.clone(),
            size,
            limit: opts.max_message_bytes,
        });
    }
    Ok(Prepared {
        id,
        event: event_type.clone(),
        provider_id: provider_id.clone(),
        body,
        group_id,
        delay_seconds,
        rejected_for_tests: *rejected_for_tests,
        #[cfg(feature = "otel")]
        trace,
        size,
    })
}

fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis().min(u128::from(u64::MAX)) as u64)
        .unwrap_or(0)
}

/// Whether SQS accepts this character in a body or attribute value.
pub(crate) fn is_sqs_char(c: char) -> bool {
    matches!(c as u32,
        0x9 | 0xA | 0xD | 0x20..=0xD7FF | 0xE000..=0xFFFD | 0x10000..=0x10FFFF)
}

fn check_sqs_chars(event: &str, field: &'static str, text: &str) -> Result<(), Error> {
    match text.char_indices().find(|(_, c)| !is_sqs_char(*c)) {
        None => Ok(()),
        Some((offset, c)) => Err(Error::InvalidCharacter {
            event: event.to_string(),
            field,
            code_point: c as u32,
            offset,
        }),
    }
}

/// A plain-text field: non-empty, bounded, only characters SQS accepts (they also go into
/// message attributes, which are not JSON-escaped).
fn check_text(event: &str, field: &'static str, value: &str, max: usize) -> Result<(), Error> {
    if value.is_empty() {
        return Err(Error::InvalidEvent {
            field,
            reason: "must not be empty".to_string(),
        });
    }
    if value.len() > max {
        return Err(Error::InvalidEvent {
            field,
            reason: format!("is {} bytes long, at most {max} allowed", value.len()),
        });
    }
    check_sqs_chars(event, field, value)
}

fn remove_fields(value: &mut serde_json::Value, denied: &[&str]) {
    match value {
        serde_json::Value::Object(map) => {
            map.retain(|k, _| !denied.contains(&k.as_str()));
            for v in map.values_mut() {
                remove_fields(v, denied);
            }
        }
        serde_json::Value::Array(items) => {
            for v in items {
                remove_fields(v, denied);
            }
        }
        _ => {}
    }
}

fn group_id(
    event: &str,
    provider_id: &str,
    data: &serde_json::Value,
    per_event: Option<&str>,
    key: &GroupKey,
) -> Result<String, Error> {
    let group = match (per_event, key) {
        (Some(g), _) => g.to_string(),
        (None, GroupKey::ProviderId) => provider_id.to_string(),
        (None, GroupKey::EventType) => event.to_string(),
        (None, GroupKey::DataField(field)) => match data.get(field) {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(serde_json::Value::Number(n)) => n.to_string(),
            _ => {
                return Err(Error::InvalidEvent {
                    field: "groupKey",
                    reason: format!(
                        "the FIFO group key is the data field `{field}`, which this event lacks \
                         (or is not a string or number); add it or use Event::with_group_key"
                    ),
                });
            }
        },
    };
    // MessageGroupId: 1 to 128 characters, alphanumeric and ASCII punctuation.
    let valid =
        !group.is_empty() && group.len() <= 128 && group.chars().all(|c| c.is_ascii_graphic());
    if !valid {
        return Err(Error::InvalidEvent {
            field: "groupKey",
            reason: format!(
                "`{}` cannot be a MessageGroupId: it needs 1 to 128 characters among \
                 a-z A-Z 0-9 and ASCII punctuation",
                group.escape_debug()
            ),
        });
    }
    Ok(group)
}

fn delay_seconds(event: &str, delay: Duration, fifo: bool) -> Result<i32, Error> {
    if fifo {
        return Err(Error::InvalidEvent {
            field: "delay",
            reason: format!(
                "event `{event}`: per-message delays are not supported on FIFO queues; set the \
                 queue's DelaySeconds instead"
            ),
        });
    }
    if delay > MAX_DELAY {
        return Err(Error::InvalidEvent {
            field: "delay",
            reason: format!("is {delay:?}, SQS allows at most 15 minutes"),
        });
    }
    Ok(delay.as_secs() as i32)
}

fn encode_data<'a>(
    event: &str,
    data: Cow<'a, serde_json::Value>,
    opts: &EncodeOptions,
) -> Result<(Cow<'a, serde_json::Value>, Option<&'static str>), Error> {
    let Some(compression) = opts.compression else {
        return Ok((data, None));
    };
    let json = serde_json::to_vec(&data).map_err(|e| Error::Unencodable {
        event: event.to_string(),
        reason: e.to_string(),
        source: Some(Cause::new(e)),
    })?;
    if json.len() <= opts.compress_above {
        return Ok((data, None));
    }
    let compressed = compress(compression, &json).map_err(|e| Error::Unencodable {
        event: event.to_string(),
        reason: format!("{} compression failed: {e}", compression.label()),
        source: Some(Cause::new(e)),
    })?;
    let text = base64::engine::general_purpose::STANDARD.encode(compressed);
    Ok((
        Cow::Owned(serde_json::Value::String(text)),
        Some(compression.label()),
    ))
}

fn compress(compression: Compression, bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    match compression {
        Compression::Gzip => {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            enc.write_all(bytes)?;
            enc.finish()
        }
        Compression::Zstd => zstd::stream::encode_all(bytes, 3),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use serde_json::json;

    fn opts() -> EncodeOptions {
        EncodeOptions {
            max_message_bytes: crate::MAX_MESSAGE_BYTES,
            compression: None,
            compress_above: 0,
            denied_fields: DeniedFields::new(),
            group_key: GroupKey::ProviderId,
            fifo: false,
        }
    }

    #[test]
    fn the_envelope_has_the_original_fields() {
        let e =
            Event::from_json("p1", "transaction.created", json!({"a": 1})).with_url("https://x");
        let p = prepare(&e, &opts()).unwrap();
        let v: serde_json::Value = serde_json::from_str(&p.body).unwrap();
        assert_eq!(v["id"], json!(p.id.to_string()));
        assert!(v["ts"].as_u64().unwrap() > 1_600_000_000_000);
        assert_eq!(v["providerId"], json!("p1"));
        assert_eq!(v["event"], json!("transaction.created"));
        assert_eq!(v["data"], json!({"a": 1}));
        assert_eq!(v["url"], json!("https://x"));
        assert!(v.get("enc").is_none());
    }

    #[test]
    fn denied_fields_are_removed_at_any_depth() {
        let o = EncodeOptions {
            denied_fields: DeniedFields::new().deny("*", ["password"]),
            ..opts()
        };
        let e = Event::from_json(
            "p",
            "user.created",
            json!({"password": 1, "user": {"password": 2, "name": "n"}, "list": [{"password": 3}]}),
        );
        let v: serde_json::Value = serde_json::from_str(&prepare(&e, &o).unwrap().body).unwrap();
        assert_eq!(v["data"], json!({"user": {"name": "n"}, "list": [{}]}));
    }

    #[test]
    fn gzip_and_zstd_round_trip_with_an_enc_field() {
        for (c, label) in [(Compression::Gzip, "gzip"), (Compression::Zstd, "zstd")] {
            let o = EncodeOptions {
                compression: Some(c),
                ..opts()
            };
            let data = json!({"text": "hello ".repeat(100)});
            let p = prepare(&Event::from_json("p", "e", data.clone()), &o).unwrap();
            let v: serde_json::Value = serde_json::from_str(&p.body).unwrap();
            assert_eq!(v["enc"], json!(label));
            let raw = base64::engine::general_purpose::STANDARD
                .decode(v["data"].as_str().unwrap())
                .unwrap();
            let json_bytes = match c {
                Compression::Gzip => {
                    let mut out = Vec::new();
                    std::io::Read::read_to_end(
                        &mut flate2::read::GzDecoder::new(&raw[..]),
                        &mut out,
                    )
                    .unwrap();
                    out
                }
                Compression::Zstd => zstd::stream::decode_all(&raw[..]).unwrap(),
            };
            assert_eq!(
                serde_json::from_slice::<serde_json::Value>(&json_bytes).unwrap(),
                data
            );
        }
    }

    #[test]
    fn noncharacters_in_data_are_rejected() {
        let e = Event::from_json("p", "e", json!({"x": "bad\u{FFFF}"}));
        assert!(matches!(
            prepare(&e, &opts()),
            Err(Error::InvalidCharacter {
                code_point: 0xFFFF,
                field: "data",
                ..
            })
        ));
    }

    #[test]
    fn control_characters_in_the_event_type_are_rejected() {
        let e = Event::from_json("p", "bad\u{1}type", json!({}));
        assert!(matches!(
            prepare(&e, &opts()),
            Err(Error::InvalidCharacter {
                code_point: 1,
                field: "event",
                ..
            })
        ));
    }

    #[test]
    fn the_size_limit_counts_body_and_attributes() {
        let o = EncodeOptions {
            max_message_bytes: 2048,
            ..opts()
        };
        let e = Event::from_json("p", "e", json!({"x": "y".repeat(2048)}));
        assert!(matches!(
            prepare(&e, &o),
            Err(Error::TooLarge { limit: 2048, .. })
        ));
    }

    #[test]
    fn fifo_group_comes_from_the_configured_key() {
        let o = EncodeOptions {
            fifo: true,
            group_key: GroupKey::DataField("tenant".into()),
            ..opts()
        };
        let p = prepare(&Event::from_json("p", "e", json!({"tenant": "t9"})), &o).unwrap();
        assert_eq!(p.group_id.as_deref(), Some("t9"));
        assert!(matches!(
            prepare(&Event::from_json("p", "e", json!({})), &o),
            Err(Error::InvalidEvent {
                field: "groupKey",
                ..
            })
        ));
    }
}
