//! Rewrites pulsar-lite's frames, on their way to the client, into what the `pulsar` crate
//! (6.9) accepts. Two differences from a full Pulsar broker break that client:
//!
//! 1. pulsar-lite delivers `MESSAGE` payloads without the optional `0x0e01` magic number and
//!    CRC32-C checksum; the crate always expects them and fails to decode the frame, so a
//!    consumer reconnects forever and its stream ends. We insert the checksum.
//! 2. pulsar-lite answers topic lookups with its own listening address, so a client would
//!    bypass any proxy in front of it after the lookup. We set `proxy_through_service_url`, as
//!    a real Pulsar proxy does, so the client keeps using the address it was given.
//!
//! Frames are parsed only as far as needed: `[u32 total size][u32 command size][BaseCommand]
//! [payload]`, the command's `type` (field 1) and, for lookups, field 24.

/// Frames larger than this are not parsed: the rest of the connection passes through as is.
const MAX_FRAME: usize = 16 * 1024 * 1024;

const TYPE_MESSAGE: u64 = 9;
const TYPE_LOOKUP_RESPONSE: u64 = 24;
const FIELD_TYPE: u64 = 1;
const FIELD_LOOKUP_RESPONSE: u64 = 24;
const FIELD_PROXY_THROUGH_SERVICE_URL: u64 = 8;
const MAGIC_CRC32C: [u8; 2] = [0x0e, 0x01];
const MAGIC_BROKER_ENTRY_METADATA: [u8; 2] = [0x0e, 0x02];

/// Turns a byte stream from pulsar-lite into a byte stream the `pulsar` crate accepts.
#[derive(Debug, Default)]
pub(crate) struct FrameRewriter {
    pending: Vec<u8>,
    passthrough: bool,
}

impl FrameRewriter {
    /// Consumes `data`; appends every complete (rewritten) frame to `out`.
    pub(crate) fn push(&mut self, data: &[u8], out: &mut Vec<u8>) {
        if self.passthrough {
            out.extend_from_slice(data);
            return;
        }
        self.pending.extend_from_slice(data);
        let mut start = 0;
        while self.pending.len() - start >= 4 {
            let size = be_u32(&self.pending[start..]) as usize;
            if size > MAX_FRAME {
                self.passthrough = true;
                out.extend_from_slice(&self.pending[start..]);
                self.pending.clear();
                return;
            }
            let end = start + 4 + size;
            if self.pending.len() < end {
                break;
            }
            rewrite_frame(&self.pending[start..end], out);
            start = end;
        }
        self.pending.drain(..start);
    }

    /// Bytes of an incomplete frame still held back.
    pub(crate) fn pending(&self) -> &[u8] {
        &self.pending
    }
}

/// Appends `frame` (one whole frame, size prefix included) to `out`, rewritten if needed.
fn rewrite_frame(frame: &[u8], out: &mut Vec<u8>) {
    let rewritten = try_rewrite(frame);
    out.extend_from_slice(rewritten.as_deref().unwrap_or(frame));
}

fn try_rewrite(frame: &[u8]) -> Option<Vec<u8>> {
    let command_size = be_u32(frame.get(4..8)?) as usize;
    let command = frame.get(8..8 + command_size)?;
    let payload = &frame[8 + command_size..];
    match command_type(command)? {
        TYPE_MESSAGE if !payload.is_empty() => {
            let payload = with_checksum(payload)?;
            Some(assemble(command, &payload))
        }
        TYPE_LOOKUP_RESPONSE => {
            let command = lookup_through_proxy(command)?;
            Some(assemble(&command, payload))
        }
        _ => None,
    }
}

fn assemble(command: &[u8], payload: &[u8]) -> Vec<u8> {
    let total = 4 + command.len() + payload.len();
    let mut frame = Vec::with_capacity(4 + total);
    frame.extend_from_slice(&(total as u32).to_be_bytes());
    frame.extend_from_slice(&(command.len() as u32).to_be_bytes());
    frame.extend_from_slice(command);
    frame.extend_from_slice(payload);
    frame
}

/// The payload with broker-entry metadata dropped and a checksum in front; `None` when it
/// already has one.
fn with_checksum(payload: &[u8]) -> Option<Vec<u8>> {
    let mut rest = payload;
    if rest.starts_with(&MAGIC_BROKER_ENTRY_METADATA) {
        let size = be_u32(rest.get(2..6)?) as usize;
        rest = rest.get(6 + size..)?;
    }
    if rest.starts_with(&MAGIC_CRC32C) {
        return (rest.len() != payload.len()).then(|| rest.to_vec());
    }
    let mut out = Vec::with_capacity(rest.len() + 6);
    out.extend_from_slice(&MAGIC_CRC32C);
    out.extend_from_slice(&crc32c(rest).to_be_bytes());
    out.extend_from_slice(rest);
    Some(out)
}

fn command_type(command: &[u8]) -> Option<u64> {
    fields(command).find_map(|f| match f {
        Ok(Field {
            number: FIELD_TYPE,
            value: Value::Varint(v),
            ..
        }) => Some(Some(v)),
        Err(()) => Some(None),
        _ => None,
    })?
}

/// The command with `lookupTopicResponse.proxy_through_service_url = true`.
fn lookup_through_proxy(command: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(command.len() + 4);
    for field in fields(command) {
        let field = field.ok()?;
        match field.value {
            Value::Bytes(inner) if field.number == FIELD_LOOKUP_RESPONSE => {
                let mut response = Vec::with_capacity(inner.len() + 2);
                for inner_field in fields(inner) {
                    let inner_field = inner_field.ok()?;
                    if inner_field.number != FIELD_PROXY_THROUGH_SERVICE_URL {
                        response.extend_from_slice(inner_field.raw);
                    }
                }
                put_varint(&mut response, FIELD_PROXY_THROUGH_SERVICE_URL << 3);
                put_varint(&mut response, 1);
                put_varint(&mut out, (FIELD_LOOKUP_RESPONSE << 3) | 2);
                put_varint(&mut out, response.len() as u64);
                out.extend_from_slice(&response);
            }
            _ => out.extend_from_slice(field.raw),
        }
    }
    Some(out)
}

struct Field<'a> {
    number: u64,
    value: Value<'a>,
    /// The whole field, tag included, as it was encoded.
    raw: &'a [u8],
}

enum Value<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

/// The top-level fields of a protobuf message; `Err` on malformed input, then nothing more.
fn fields(mut buf: &[u8]) -> impl Iterator<Item = Result<Field<'_>, ()>> {
    let mut failed = false;
    std::iter::from_fn(move || {
        if buf.is_empty() || failed {
            return None;
        }
        let field = next_field(buf);
        match field {
            Some((field, rest)) => {
                buf = rest;
                Some(Ok(field))
            }
            None => {
                failed = true;
                Some(Err(()))
            }
        }
    })
}

fn next_field(buf: &[u8]) -> Option<(Field<'_>, &[u8])> {
    let (tag, mut rest) = varint(buf)?;
    let value = match tag & 7 {
        0 => {
            let (v, r) = varint(rest)?;
            rest = r;
            Value::Varint(v)
        }
        1 => {
            rest = rest.get(8..)?;
            Value::Fixed
        }
        2 => {
            let (len, r) = varint(rest)?;
            let len = usize::try_from(len).ok()?;
            let bytes = r.get(..len)?;
            rest = &r[len..];
            Value::Bytes(bytes)
        }
        5 => {
            rest = rest.get(4..)?;
            Value::Fixed
        }
        _ => return None,
    };
    let used = buf.len() - rest.len();
    Some((
        Field {
            number: tag >> 3,
            value,
            raw: &buf[..used],
        },
        rest,
    ))
}

fn varint(buf: &[u8]) -> Option<(u64, &[u8])> {
    let mut value = 0u64;
    for (i, byte) in buf.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, &buf[i + 1..]));
        }
    }
    None
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn be_u32(bytes: &[u8]) -> u32 {
    u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
}

/// CRC-32C (Castagnoli), as Pulsar checksums payloads.
fn crc32c(data: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut crc = i as u32;
            let mut bit = 0;
            while bit < 8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0x82F6_3B78
                } else {
                    crc >> 1
                };
                bit += 1;
            }
            table[i] = crc;
            i += 1;
        }
        table
    };
    let mut crc = !0u32;
    for &byte in data {
        crc = TABLE[((crc ^ u32::from(byte)) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn frame(command: &[u8], payload: &[u8]) -> Vec<u8> {
        assemble(command, payload)
    }

    /// BaseCommand { type: t, <extra> }
    fn command(t: u64, extra: &[u8]) -> Vec<u8> {
        let mut c = vec![0x08];
        put_varint(&mut c, t);
        c.extend_from_slice(extra);
        c
    }

    #[test]
    fn crc32c_matches_the_standard_check_value() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn a_message_without_checksum_gets_one() {
        let payload = [0, 0, 0, 2, 0x0a, 0x00, b'h', b'i'];
        let mut out = Vec::new();
        FrameRewriter::default().push(&frame(&command(TYPE_MESSAGE, &[]), &payload), &mut out);

        let command_size = be_u32(&out[4..8]) as usize;
        let rewritten = &out[8 + command_size..];
        assert_eq!(be_u32(&out[0..4]) as usize, out.len() - 4);
        assert_eq!(&rewritten[0..2], &MAGIC_CRC32C);
        assert_eq!(be_u32(&rewritten[2..6]), crc32c(&payload));
        assert_eq!(&rewritten[6..], &payload);
    }

    #[test]
    fn a_message_with_checksum_and_other_commands_pass_unchanged() {
        let mut payload = vec![0x0e, 0x01, 1, 2, 3, 4];
        payload.extend_from_slice(&[0, 0, 0, 0]);
        let mut input = frame(&command(TYPE_MESSAGE, &[]), &payload);
        input.extend_from_slice(&frame(&command(3, &[0x1a, 0x01, b'x']), &[]));
        let mut out = Vec::new();
        FrameRewriter::default().push(&input, &mut out);
        assert_eq!(out, input);
    }

    #[test]
    fn a_lookup_response_asks_the_client_to_keep_its_service_url() {
        // lookupTopicResponse { broker_service_url: "pulsar://x", proxy_through_service_url: false }
        let mut inner = vec![0x0a, 10];
        inner.extend_from_slice(b"pulsar://x");
        inner.extend_from_slice(&[0x40, 0x00]); // field 8 = false
        let mut extra = vec![0xc2, 0x01, inner.len() as u8];
        extra.extend_from_slice(&inner);
        let mut out = Vec::new();
        FrameRewriter::default().push(
            &frame(&command(TYPE_LOOKUP_RESPONSE, &extra), &[]),
            &mut out,
        );

        let command_size = be_u32(&out[4..8]) as usize;
        let rewritten = &out[8..8 + command_size];
        let response = fields(rewritten)
            .find_map(|f| match f.unwrap() {
                Field {
                    number: FIELD_LOOKUP_RESPONSE,
                    value: Value::Bytes(b),
                    ..
                } => Some(b.to_vec()),
                _ => None,
            })
            .unwrap();
        let flags: Vec<u64> = fields(&response)
            .filter_map(|f| match f.unwrap() {
                Field {
                    number: FIELD_PROXY_THROUGH_SERVICE_URL,
                    value: Value::Varint(v),
                    ..
                } => Some(v),
                _ => None,
            })
            .collect();
        assert_eq!(flags, vec![1]);
        assert!(response.windows(10).any(|w| w == b"pulsar://x"));
    }

    #[test]
    fn frames_split_across_reads_are_reassembled() {
        let payload = [0, 0, 0, 0, b'x'];
        let input = frame(&command(TYPE_MESSAGE, &[]), &payload);
        let mut whole = Vec::new();
        FrameRewriter::default().push(&input, &mut whole);

        let mut rewriter = FrameRewriter::default();
        let mut pieces = Vec::new();
        for byte in &input {
            rewriter.push(std::slice::from_ref(byte), &mut pieces);
        }
        assert_eq!(pieces, whole);
        assert!(rewriter.pending().is_empty());
    }
}
