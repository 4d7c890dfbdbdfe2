//! Readiness probes: cheap checks that a broker answers on its port.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

const STEP_TIMEOUT: Duration = Duration::from_millis(500);
/// How long [`Probe::HttpBodyContains`] waits for its answer.
const SLOW_ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// How to tell that a broker is ready.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Probe {
    /// A TCP connection is accepted.
    Tcp,
    /// Redis answers `PING` with `+PONG`, or with `-NOAUTH` when it requires a password
    /// (it then answers commands, which is what the probe asks).
    RedisPing,
    /// A Kafka broker answers an ApiVersions (v0) request.
    KafkaApiVersions,
    /// An HTTP server answers `GET /` with any status.
    Http,
    /// An HTTP server answers `GET path` (with `headers`, whole `Name: value\r\n` lines)
    /// with a body that contains `needle`: for a server that listens before its services are
    /// loaded, or answers its first real request only after seconds of warming up (LocalStack).
    HttpBodyContains {
        /// The path asked for.
        path: &'static str,
        /// Extra request header lines, each ending in `\r\n`.
        headers: &'static str,
        /// What the answer must contain.
        needle: &'static str,
    },
}

impl Probe {
    /// One attempt; `Err` says why the broker is not ready yet.
    pub(crate) fn check(self, addr: SocketAddr) -> Result<(), String> {
        let mut stream = TcpStream::connect_timeout(&addr, STEP_TIMEOUT)
            .map_err(|e| format!("connect to {addr}: {e}"))?;
        let _ = stream.set_read_timeout(Some(STEP_TIMEOUT));
        let _ = stream.set_write_timeout(Some(STEP_TIMEOUT));
        match self {
            Probe::Tcp => Ok(()),
            Probe::RedisPing => {
                let reply = exchange(&mut stream, b"*1\r\n$4\r\nPING\r\n", 7)?;
                expect_prefix(&reply, b"+PONG").or_else(|_| expect_prefix(&reply, b"-NOAUTH"))
            }
            Probe::Http => {
                let request = format!("GET / HTTP/1.0\r\nHost: {addr}\r\n\r\n");
                let reply = exchange(&mut stream, request.as_bytes(), 7)?;
                expect_prefix(&reply, b"HTTP/1.")
            }
            Probe::HttpBodyContains {
                path,
                headers,
                needle,
            } => {
                // A warming-up server answers slowly: wait longer than for a handshake, rather
                // than pile up abandoned requests on it.
                let _ = stream.set_read_timeout(Some(SLOW_ANSWER_TIMEOUT));
                let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n{headers}\r\n");
                stream
                    .write_all(request.as_bytes())
                    .map_err(|e| format!("write probe: {e}"))?;
                // HTTP/1.0: the server closes the connection after the answer. Bounded: each
                // read waits at most SLOW_ANSWER_TIMEOUT, and at most MAX_HTTP_REPLY bytes are
                // read.
                let mut reply = Vec::new();
                (&mut stream)
                    .take(MAX_HTTP_REPLY)
                    .read_to_end(&mut reply)
                    .map_err(|e| format!("read probe reply: {e}"))?;
                let text = String::from_utf8_lossy(&reply);
                if text.starts_with("HTTP/1.") && text.contains(needle) {
                    Ok(())
                } else {
                    let start: String = text.chars().take(300).collect();
                    Err(format!("GET {path} answered without {needle:?}: {start}"))
                }
            }
            Probe::KafkaApiVersions => {
                let reply = exchange(&mut stream, &api_versions_request(), 10)?;
                // size (4) | correlation id (4) | error code (2)
                if reply[4..8] != CORRELATION_ID.to_be_bytes() {
                    return Err(format!("unexpected ApiVersions reply {reply:?}"));
                }
                match i16::from_be_bytes([reply[8], reply[9]]) {
                    0 => Ok(()),
                    code => Err(format!("ApiVersions error code {code}")),
                }
            }
        }
    }
}

/// The most of an HTTP answer a probe reads.
const MAX_HTTP_REPLY: u64 = 64 * 1024;

const CORRELATION_ID: i32 = 0x7761_7266; // "warf"

fn api_versions_request() -> Vec<u8> {
    let client_id = b"wharf-testkit";
    let mut body = Vec::with_capacity(32);
    body.extend_from_slice(&18i16.to_be_bytes()); // api key: ApiVersions
    body.extend_from_slice(&0i16.to_be_bytes()); // api version 0
    body.extend_from_slice(&CORRELATION_ID.to_be_bytes());
    body.extend_from_slice(&(client_id.len() as i16).to_be_bytes());
    body.extend_from_slice(client_id);
    let mut frame = (body.len() as i32).to_be_bytes().to_vec();
    frame.extend_from_slice(&body);
    frame
}

/// Writes `request` and reads at least `min` bytes of the reply.
fn exchange(stream: &mut TcpStream, request: &[u8], min: usize) -> Result<Vec<u8>, String> {
    stream
        .write_all(request)
        .map_err(|e| format!("write probe: {e}"))?;
    let mut reply = vec![0u8; min];
    stream
        .read_exact(&mut reply)
        .map_err(|e| format!("read probe reply: {e}"))?;
    Ok(reply)
}

fn expect_prefix(reply: &[u8], prefix: &[u8]) -> Result<(), String> {
    if reply.starts_with(prefix) {
        Ok(())
    } else {
        Err(format!(
            "unexpected reply {:?}",
            String::from_utf8_lossy(reply)
        ))
    }
}
