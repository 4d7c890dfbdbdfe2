//! Kafka: Tansu, an Apache-Kafka-compatible broker (`.wharf/bin/tansu`).

use std::ffi::OsString;

use crate::controls::owned_broker_controls;
use crate::error::Result;
use crate::probe::Probe;
use crate::process::{Instance, Spec};
use crate::proxy::FaultProxy;

/// A Tansu broker owned by one test, with in-memory storage: a restart loses every topic and
/// offset, so test connection loss with [`start_behind_proxy`](Self::start_behind_proxy) and
/// the proxy's controls rather than with a restart.
///
/// ```no_run
/// # fn main() -> wharf_testkit::Result<()> {
/// let kafka = wharf_testkit::Tansu::start_behind_proxy()?;
/// let brokers = kafka.bootstrap_servers(); // the proxy: 127.0.0.1:PORT
/// let proxy = kafka.proxy().expect("started behind a proxy");
/// proxy.down()?; // clients lose the broker
/// proxy.restore()?; // and get it back
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Tansu {
    instance: Instance,
}

impl Tansu {
    /// Starts Tansu on a free loopback port, advertising that port, and waits until it answers
    /// an ApiVersions request.
    pub fn start() -> Result<Self> {
        Ok(Tansu {
            instance: Instance::start(spec(None), None)?,
        })
    }

    /// Starts a [`FaultProxy`] first, then Tansu on another port advertising the *proxy's*
    /// address, so that every connection a Kafka client makes (bootstrap and the broker
    /// connections it learns from metadata) goes through the proxy.
    pub fn start_behind_proxy() -> Result<Self> {
        let proxy = FaultProxy::start_unconnected()?;
        let advertised = proxy.port();
        Ok(Tansu {
            instance: Instance::start(spec(Some(advertised)), Some(proxy))?,
        })
    }

    /// Starts Tansu on another port advertising `proxy`'s address, and points `proxy` at it:
    /// [`start_behind_proxy`](Self::start_behind_proxy) for a proxy the caller owns and
    /// shares (a nemesis's [`Targets`](crate::nemesis::Targets) take an `Arc<FaultProxy>`).
    /// Start the proxy with any upstream (`FaultProxy::start("127.0.0.1:0".parse()?)`):
    /// connections made before this returns are closed at once.
    pub fn start_behind(proxy: &FaultProxy) -> Result<Self> {
        let tansu = Tansu {
            instance: Instance::start(spec(Some(proxy.port())), None)?,
        };
        proxy.set_upstream(tansu.direct_addr());
        Ok(tansu)
    }

    /// The `bootstrap.servers` value, `127.0.0.1:PORT`: the proxy's when there is one.
    pub fn bootstrap_servers(&self) -> String {
        self.client_addr().to_string()
    }
}

owned_broker_controls!(Tansu);

/// Tansu listening on the given port, advertising `advertised` (or its own port).
pub(crate) fn spec(advertised: Option<u16>) -> Spec {
    Spec {
        binary: "tansu",
        probe: Probe::KafkaApiVersions,
        args: Box::new(move |port, _dir| {
            let advertised = advertised.unwrap_or(port);
            [
                "broker".to_owned(),
                "--listener-url".to_owned(),
                format!("tcp://127.0.0.1:{port}"),
                "--advertised-listener-url".to_owned(),
                format!("tcp://127.0.0.1:{advertised}"),
                "--storage-engine".to_owned(),
                "memory://tansu/".to_owned(),
            ]
            .into_iter()
            .map(OsString::from)
            .collect()
        }),
        config_file: None,
        prepare: None,
        env: None,
    }
}
