//! Brokers shared by every test of one test binary.

use std::fmt;
use std::sync::OnceLock;

use crate::error::{Error, Result};
use crate::process::Instance;

/// Which broker an [`Endpoint`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BrokerKind {
    /// Redis (`redis-server`).
    Redis,
    /// Kafka (Tansu).
    Kafka,
    /// Pulsar (pulsar-lite).
    Pulsar,
    /// SQS (moto).
    Sqs,
}

impl BrokerKind {
    /// The environment variable that points tests at an external broker of this kind:
    /// `WHARF_TEST_REDIS_URL`, `WHARF_TEST_KAFKA_BROKERS`, `WHARF_TEST_PULSAR_URL`,
    /// `WHARF_TEST_SQS_ENDPOINT`.
    ///
    /// These are the kit's own names, not the settings the crates' `from_env` read
    /// (`WHARF_REDIS_URL`, `WHARF_KAFKA_BROKERS`, `WHARF_PULSAR_URL`): a shell set up to run an
    /// application against a real broker must not run the tests against it too. A test that
    /// starts another process which should use the same shared broker passes the address
    /// under this name (the child's [`redis()`] and the like then return it).
    pub fn override_var(self) -> &'static str {
        match self {
            BrokerKind::Redis => "WHARF_TEST_REDIS_URL",
            BrokerKind::Kafka => "WHARF_TEST_KAFKA_BROKERS",
            BrokerKind::Pulsar => "WHARF_TEST_PULSAR_URL",
            BrokerKind::Sqs => "WHARF_TEST_SQS_ENDPOINT",
        }
    }
}

/// Where a shared broker answers, and whether the kit started it.
#[derive(Debug)]
pub struct Endpoint {
    kind: BrokerKind,
    address: String,
    /// `None` when the address came from the environment.
    instance: Option<Instance>,
}

impl Endpoint {
    /// The address in the form the broker's client expects:
    ///
    /// | kind | form |
    /// |---|---|
    /// | Redis | `redis://127.0.0.1:PORT/` |
    /// | Kafka | `127.0.0.1:PORT` (`bootstrap.servers`) |
    /// | Pulsar | `pulsar://127.0.0.1:PORT` |
    /// | SQS | `http://127.0.0.1:PORT` (`endpoint_url`) |
    ///
    /// With an environment override, the variable's value as it is.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Which broker this is.
    pub fn kind(&self) -> BrokerKind {
        self.kind
    }

    /// True when the address came from the environment rather than from a process the kit
    /// started.
    pub fn is_external(&self) -> bool {
        self.instance.is_none()
    }

    /// The broker process's id, when the kit started it.
    pub fn pid(&self) -> Option<u32> {
        self.instance.as_ref().and_then(Instance::pid)
    }

    /// The broker's log file, when the kit started it.
    pub fn log_path(&self) -> Option<&std::path::Path> {
        self.instance.as_ref().map(Instance::log_path)
    }
}

impl Endpoint {
    /// The last lines of the broker's log, when the kit started it: for assertion messages.
    pub fn log_tail(&self) -> Option<String> {
        self.log_path().map(crate::process::log_tail)
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.address)
    }
}

/// The Redis shared by this test binary: `$WHARF_TEST_REDIS_URL`, or a `redis-server` started on
/// first use. See the [crate docs](crate) for the lifecycle.
pub fn redis() -> Result<&'static Endpoint> {
    static SHARED: OnceLock<Result<Endpoint>> = OnceLock::new();
    shared(
        &SHARED,
        BrokerKind::Redis,
        || Instance::start(crate::redis::spec(Vec::new())?, None),
        |port| format!("redis://127.0.0.1:{port}/"),
    )
}

/// The Kafka broker shared by this test binary: `$WHARF_TEST_KAFKA_BROKERS`, or Tansu started on
/// first use. Tests share it: give each test its own topics and groups ([`unique_name`](crate::unique_name)).
pub fn kafka() -> Result<&'static Endpoint> {
    static SHARED: OnceLock<Result<Endpoint>> = OnceLock::new();
    shared(
        &SHARED,
        BrokerKind::Kafka,
        || Instance::start(crate::kafka::spec(None), None),
        |port| format!("127.0.0.1:{port}"),
    )
}

/// The Pulsar broker shared by this test binary: `$WHARF_TEST_PULSAR_URL`, or pulsar-lite started
/// on first use.
pub fn pulsar() -> Result<&'static Endpoint> {
    static SHARED: OnceLock<Result<Endpoint>> = OnceLock::new();
    shared(
        &SHARED,
        BrokerKind::Pulsar,
        crate::pulsar::start_instance,
        |port| format!("pulsar://127.0.0.1:{port}"),
    )
}

/// The SQS endpoint shared by this test binary: `$WHARF_TEST_SQS_ENDPOINT`, or moto started on
/// first use.
pub fn sqs() -> Result<&'static Endpoint> {
    static SHARED: OnceLock<Result<Endpoint>> = OnceLock::new();
    shared(
        &SHARED,
        BrokerKind::Sqs,
        || Instance::start(crate::sqs::spec(None)?, None),
        |port| format!("http://127.0.0.1:{port}"),
    )
}

fn shared(
    cell: &'static OnceLock<Result<Endpoint>>,
    kind: BrokerKind,
    start: impl FnOnce() -> Result<Instance>,
    address: impl FnOnce(u16) -> String,
) -> Result<&'static Endpoint> {
    // A failure is kept too: every test of the binary gets the same error at once instead of
    // waiting for its own start-up timeout.
    let result = cell.get_or_init(|| {
        if let Some(external) = std::env::var(kind.override_var())
            .ok()
            .filter(|v| !v.trim().is_empty())
        {
            return Ok(Endpoint {
                kind,
                address: external.trim().to_owned(),
                instance: None,
            });
        }
        let instance = start()?;
        // Clients use the proxy when there is one (pulsar-lite's compatibility proxy).
        let port = instance.proxy().map_or(instance.port(), |p| p.port());
        Ok(Endpoint {
            kind,
            address: address(port),
            instance: Some(instance),
        })
    });
    result.as_ref().map_err(Error::clone)
}
