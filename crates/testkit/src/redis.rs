//! Redis: `redis-server` from Debian's `redis-server` package.

use std::ffi::OsString;

use crate::controls::owned_broker_controls;
use crate::error::Result;
use crate::probe::Probe;
use crate::process::{Instance, Spec};
use crate::proxy::FaultProxy;

/// A `redis-server` owned by one test: private port and directory, no persistence (a restart
/// starts empty), killed on drop.
///
/// ```no_run
/// # fn main() -> wharf_testkit::Result<()> {
/// let redis = wharf_testkit::RedisServer::start()?;
/// let url = redis.url(); // redis://127.0.0.1:PORT/
/// redis.kill()?; // clients now see the connection drop
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct RedisServer {
    instance: Instance,
}

impl RedisServer {
    /// Starts `redis-server` on a free loopback port and waits until it answers `PING`.
    pub fn start() -> Result<Self> {
        Ok(RedisServer {
            instance: Instance::start(spec(), None)?,
        })
    }

    /// Starts a [`FaultProxy`] and `redis-server` behind it; [`url`](Self::url) is the proxy's.
    pub fn start_behind_proxy() -> Result<Self> {
        let proxy = FaultProxy::start_unconnected()?;
        Ok(RedisServer {
            instance: Instance::start(spec(), Some(proxy))?,
        })
    }

    /// `redis://127.0.0.1:PORT/`: through the proxy when there is one.
    pub fn url(&self) -> String {
        format!("redis://{}/", self.client_addr())
    }
}

owned_broker_controls!(RedisServer);

pub(crate) fn spec() -> Spec {
    Spec {
        binary: "redis-server",
        probe: Probe::RedisPing,
        args: Box::new(|port, dir| {
            let mut args: Vec<OsString> = [
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--dir",
            ]
            .iter()
            .map(OsString::from)
            .collect();
            args.push(dir.as_os_str().to_owned());
            args
        }),
        config_file: None,
    }
}
