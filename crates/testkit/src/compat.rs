//! Which server plays SQS and which plays Redis: the default (moto, `redis-server`) or the
//! second one (LocalStack, Valkey) that `scripts/install --compat` installs, chosen by
//! `WHARF_SQS_SERVER` and `WHARF_REDIS_SERVER`.

use crate::error::{Error, Result};

/// The variable that chooses the SQS server: unset, empty or `moto` for moto,
/// `localstack` for LocalStack.
pub const SQS_SERVER_VAR: &str = "WHARF_SQS_SERVER";
/// The variable that chooses the Redis server: unset, empty or `redis` for `redis-server`,
/// `valkey` for `valkey-server`.
pub const REDIS_SERVER_VAR: &str = "WHARF_REDIS_SERVER";

/// The server the kit starts for SQS ([`Moto`](crate::Moto), [`sqs()`](crate::sqs)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SqsServer {
    /// moto's server mode, `moto_server` (the default).
    Moto,
    /// LocalStack's SQS, `localstack-server` (`scripts/install --compat`): refuses what AWS
    /// refuses where moto does not (characters outside SQS's set, a queue's
    /// `MaximumMessageSize`), but accepts a `DelaySeconds` over 900.
    LocalStack,
}

/// The server the kit starts for Redis ([`RedisServer`](crate::RedisServer), its cluster
/// and sentinel sets, [`redis()`](crate::redis)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RedisServerKind {
    /// `redis-server` and `redis-cli` (Debian's `redis-server` package; the default).
    Redis,
    /// `valkey-server` and `valkey-cli` 8.1 (`scripts/install --compat`). Built without TLS:
    /// [`RedisServer::start_tls`](crate::RedisServer::start_tls) fails with
    /// [`Error::Unsupported`].
    Valkey,
}

impl SqsServer {
    /// The server `WHARF_SQS_SERVER` names; an unknown name is an error that lists the known
    /// ones.
    pub fn from_env() -> Result<Self> {
        parse_sqs(std::env::var(SQS_SERVER_VAR).ok().as_deref())
    }

    /// The executable the kit starts.
    pub fn binary(self) -> &'static str {
        match self {
            SqsServer::Moto => "moto_server",
            SqsServer::LocalStack => "localstack-server",
        }
    }
}

impl RedisServerKind {
    /// The server `WHARF_REDIS_SERVER` names; an unknown name is an error that lists the
    /// known ones.
    pub fn from_env() -> Result<Self> {
        parse_redis(std::env::var(REDIS_SERVER_VAR).ok().as_deref())
    }

    /// The server executable.
    pub fn server_binary(self) -> &'static str {
        match self {
            RedisServerKind::Redis => "redis-server",
            RedisServerKind::Valkey => "valkey-server",
        }
    }

    /// The command-line client, which the kit uses to create a cluster.
    pub fn cli_binary(self) -> &'static str {
        match self {
            RedisServerKind::Redis => "redis-cli",
            RedisServerKind::Valkey => "valkey-cli",
        }
    }
}

fn parse_sqs(value: Option<&str>) -> Result<SqsServer> {
    match value.map(str::trim).unwrap_or("") {
        "" | "moto" => Ok(SqsServer::Moto),
        "localstack" => Ok(SqsServer::LocalStack),
        other => Err(unknown(SQS_SERVER_VAR, other, "moto, localstack")),
    }
}

fn parse_redis(value: Option<&str>) -> Result<RedisServerKind> {
    match value.map(str::trim).unwrap_or("") {
        "" | "redis" => Ok(RedisServerKind::Redis),
        "valkey" => Ok(RedisServerKind::Valkey),
        other => Err(unknown(REDIS_SERVER_VAR, other, "redis, valkey")),
    }
}

fn unknown(var: &str, value: &str, known: &str) -> Error {
    Error::Unsupported(format!(
        "{var}={value:?} names no server the kit knows: use one of {known} (unset means the \
         first); the second ones are installed by scripts/install --compat"
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn unset_or_empty_means_the_default_servers() {
        for value in [None, Some(""), Some("  ")] {
            assert_eq!(parse_sqs(value).unwrap(), SqsServer::Moto);
            assert_eq!(parse_redis(value).unwrap(), RedisServerKind::Redis);
        }
        assert_eq!(parse_sqs(Some("moto")).unwrap(), SqsServer::Moto);
        assert_eq!(parse_redis(Some("redis")).unwrap(), RedisServerKind::Redis);
    }

    #[test]
    fn the_second_servers_are_chosen_by_name() {
        assert_eq!(
            parse_sqs(Some("localstack")).unwrap(),
            SqsServer::LocalStack
        );
        assert_eq!(
            parse_redis(Some("valkey")).unwrap(),
            RedisServerKind::Valkey
        );
        assert_eq!(SqsServer::LocalStack.binary(), "localstack-server");
        assert_eq!(RedisServerKind::Valkey.server_binary(), "valkey-server");
        assert_eq!(RedisServerKind::Valkey.cli_binary(), "valkey-cli");
    }

    #[test]
    fn an_unknown_name_is_refused_with_the_known_ones_and_the_install_command() {
        let message = parse_sqs(Some("elasticmq")).unwrap_err().to_string();
        assert!(
            message.contains("WHARF_SQS_SERVER=\"elasticmq\""),
            "{message}"
        );
        assert!(message.contains("moto, localstack"), "{message}");
        assert!(message.contains("scripts/install --compat"), "{message}");
        let message = parse_redis(Some("keydb")).unwrap_err().to_string();
        assert!(
            message.contains("WHARF_REDIS_SERVER=\"keydb\""),
            "{message}"
        );
        assert!(message.contains("redis, valkey"), "{message}");
    }
}
