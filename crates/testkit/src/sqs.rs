//! SQS: moto's server mode (`.wharf/bin/moto_server`).

use std::ffi::OsString;

use crate::controls::owned_broker_controls;
use crate::error::Result;
use crate::probe::Probe;
use crate::process::{Instance, Spec};
use crate::proxy::FaultProxy;

/// A moto server owned by one test. State is in memory: a restart loses every queue. Any
/// access key and secret work; use region `us-east-1`. Startup takes about 1.5 s (Python).
///
/// ```no_run
/// # fn main() -> wharf_testkit::Result<()> {
/// let sqs = wharf_testkit::Moto::start_behind_proxy()?;
/// let endpoint = sqs.endpoint(); // http://127.0.0.1:PORT, the proxy's
/// sqs.proxy().expect("behind a proxy").set_latency(std::time::Duration::from_millis(200));
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Moto {
    instance: Instance,
}

impl Moto {
    /// Starts `moto_server` on a free loopback port and waits until it answers HTTP.
    pub fn start() -> Result<Self> {
        Ok(Moto {
            instance: Instance::start(spec(), None)?,
        })
    }

    /// Starts a [`FaultProxy`] and moto behind it; [`endpoint`](Self::endpoint) is the
    /// proxy's.
    pub fn start_behind_proxy() -> Result<Self> {
        let proxy = FaultProxy::start_unconnected()?;
        Ok(Moto {
            instance: Instance::start(spec(), Some(proxy))?,
        })
    }

    /// The endpoint URL for the AWS SDK, `http://127.0.0.1:PORT`: the proxy's when there is
    /// one.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.client_addr())
    }
}

owned_broker_controls!(Moto);

pub(crate) fn spec() -> Spec {
    Spec {
        binary: "moto_server",
        probe: Probe::Http,
        args: Box::new(|port, _dir| {
            ["-H", "127.0.0.1", "-p", &port.to_string()]
                .iter()
                .map(OsString::from)
                .collect()
        }),
        config_file: None,
        prepare: None,
    }
}
