//! A minimal blocking Redis client (RESP2, one command per connection, every step with a
//! timeout) for the kit's own checks: a cluster's state, replication offsets, what sentinels
//! see. Tests talk to Redis with the `redis` crate; the kit does not depend on it.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Each of connect, write and read.
const STEP_TIMEOUT: Duration = Duration::from_secs(2);
/// Replies the kit reads are small; anything larger is a protocol error, not a reply.
const MAX_BULK: usize = 4 << 20;
const MAX_ITEMS: usize = 100_000;
const MAX_DEPTH: usize = 8;

/// One RESP2 reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reply {
    Status(String),
    Error(String),
    Integer(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
}

impl Reply {
    /// A status or bulk reply as text.
    pub(crate) fn text(&self) -> Option<String> {
        match self {
            Reply::Status(s) => Some(s.clone()),
            Reply::Bulk(Some(bytes)) => Some(String::from_utf8_lossy(bytes).into_owned()),
            _ => None,
        }
    }

    /// The items of an array reply; none for anything else.
    pub(crate) fn items(&self) -> &[Reply] {
        match self {
            Reply::Array(Some(items)) => items,
            _ => &[],
        }
    }

    /// A flat `[field, value, field, value, ...]` array (as `SENTINEL REPLICAS` answers for
    /// each server) as a map.
    pub(crate) fn fields(&self) -> HashMap<String, String> {
        self.items()
            .chunks(2)
            .filter_map(|pair| match pair {
                [field, value] => Some((field.text()?, value.text()?)),
                _ => None,
            })
            .collect()
    }
}

/// Sends one command to `addr` and reads its reply. An error reply is `Ok(Reply::Error)`;
/// `Err` says why no reply was read.
pub(crate) fn command(addr: SocketAddr, args: &[&str]) -> Result<Reply, String> {
    let what = || format!("`{}` to {addr}", args.join(" "));
    let mut stream = TcpStream::connect_timeout(&addr, STEP_TIMEOUT)
        .map_err(|e| format!("connect for {}: {e}", what()))?;
    let _ = stream.set_read_timeout(Some(STEP_TIMEOUT));
    let _ = stream.set_write_timeout(Some(STEP_TIMEOUT));
    stream
        .write_all(&encode(args))
        .map_err(|e| format!("send {}: {e}", what()))?;
    read_reply(&mut BufReader::new(stream), 0).map_err(|e| format!("reply to {}: {e}", what()))
}

/// The text of a command's status or bulk reply; an error reply or another kind is `Err`.
pub(crate) fn text(addr: SocketAddr, args: &[&str]) -> Result<String, String> {
    match command(addr, args)? {
        Reply::Error(e) => Err(format!("`{}` to {addr}: {e}", args.join(" "))),
        reply => reply
            .text()
            .ok_or_else(|| format!("`{}` to {addr}: unexpected {reply:?}", args.join(" "))),
    }
}

/// The value of `field` in an `INFO`-style text (`field:value` lines).
pub(crate) fn info_field<'a>(info: &'a str, field: &str) -> Option<&'a str> {
    info.lines()
        .filter_map(|line| line.trim_end().split_once(':'))
        .find(|(name, _)| *name == field)
        .map(|(_, value)| value)
}

fn encode(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn read_reply(reader: &mut impl BufRead, depth: usize) -> Result<Reply, String> {
    if depth > MAX_DEPTH {
        return Err("replies nested too deeply".into());
    }
    let line = read_line(reader)?;
    let (kind, rest) = line.split_at_checked(1).ok_or("an empty reply line")?;
    match kind {
        "+" => Ok(Reply::Status(rest.to_owned())),
        "-" => Ok(Reply::Error(rest.to_owned())),
        ":" => parse_len::<i64>(rest).map(Reply::Integer),
        "$" => read_bulk(reader, rest).map(Reply::Bulk),
        "*" => read_array(reader, rest, depth).map(Reply::Array),
        _ => Err(format!("not a RESP2 reply: {line:?}")),
    }
}

fn read_bulk(reader: &mut impl BufRead, len: &str) -> Result<Option<Vec<u8>>, String> {
    let Ok(len) = usize::try_from(parse_len::<i64>(len)?) else {
        return Ok(None); // $-1: nil
    };
    if len > MAX_BULK {
        return Err(format!("a bulk reply of {len} bytes"));
    }
    let mut bytes = vec![0; len + 2];
    reader
        .read_exact(&mut bytes)
        .map_err(|e| format!("read: {e}"))?;
    bytes.truncate(len);
    Ok(Some(bytes))
}

fn read_array(
    reader: &mut impl BufRead,
    len: &str,
    depth: usize,
) -> Result<Option<Vec<Reply>>, String> {
    let Ok(len) = usize::try_from(parse_len::<i64>(len)?) else {
        return Ok(None); // *-1: nil
    };
    if len > MAX_ITEMS {
        return Err(format!("an array of {len} items"));
    }
    (0..len)
        .map(|_| read_reply(reader, depth + 1))
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

fn read_line(reader: &mut impl BufRead) -> Result<String, String> {
    let mut line = String::new();
    let n = reader
        .read_line(&mut line)
        .map_err(|e| format!("read: {e}"))?;
    if n == 0 {
        return Err("the connection closed".into());
    }
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

fn parse_len<T: std::str::FromStr>(text: &str) -> Result<T, String> {
    text.parse()
        .map_err(|_| format!("not a number in a reply: {text:?}"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn parse(bytes: &[u8]) -> Result<Reply, String> {
        read_reply(&mut &bytes[..], 0)
    }

    #[test]
    fn commands_are_encoded_as_arrays_of_bulk_strings() {
        assert_eq!(
            encode(&["CLUSTER", "INFO"]),
            b"*2\r\n$7\r\nCLUSTER\r\n$4\r\nINFO\r\n".to_vec()
        );
    }

    #[test]
    fn every_reply_kind_is_read() {
        assert_eq!(parse(b"+PONG\r\n"), Ok(Reply::Status("PONG".into())));
        assert_eq!(
            parse(b"-NOAUTH required\r\n"),
            Ok(Reply::Error("NOAUTH required".into()))
        );
        assert_eq!(parse(b":42\r\n"), Ok(Reply::Integer(42)));
        assert_eq!(parse(b"$-1\r\n"), Ok(Reply::Bulk(None)));
        assert_eq!(parse(b"*-1\r\n"), Ok(Reply::Array(None)));
        let nested = parse(b"*2\r\n*2\r\n$4\r\nport\r\n$4\r\n6380\r\n$4\r\na\r\nb\r\n").unwrap();
        assert_eq!(nested.items()[0].fields()["port"], "6380");
        assert_eq!(nested.items()[1].text().unwrap(), "a\r\nb");
    }

    #[test]
    fn truncated_or_unknown_replies_are_errors() {
        assert!(parse(b"").is_err());
        assert!(parse(b"$5\r\nab").is_err());
        assert!(parse(b"?what\r\n").is_err());
        assert!(parse(b"$99999999999\r\n").is_err());
    }

    #[test]
    fn info_fields_are_found_by_name() {
        let info =
            "# Replication\r\nrole:slave\r\nmaster_link_status:up\r\nslave_repl_offset:17\r\n";
        assert_eq!(info_field(info, "master_link_status"), Some("up"));
        assert_eq!(info_field(info, "slave_repl_offset"), Some("17"));
        assert_eq!(info_field(info, "role"), Some("slave"));
        assert_eq!(info_field(info, "master_repl_offset"), None);
    }
}
