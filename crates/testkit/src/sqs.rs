//! SQS: moto's server mode (`.wharf/bin/moto_server`), or LocalStack's SQS
//! (`.wharf/bin/localstack-server`) with `WHARF_SQS_SERVER=localstack`.

use std::ffi::OsString;

use crate::compat::SqsServer;
use crate::controls::owned_broker_controls;
use crate::error::Result;
use crate::probe::Probe;
use crate::process::{Instance, Spec};
use crate::proxy::FaultProxy;

/// A moto server owned by one test. State is in memory: a restart loses every queue. Any
/// access key and secret work; use region `us-east-1`. Startup takes about 1.5 s (Python).
///
/// With `WHARF_SQS_SERVER=localstack` ([`SqsServer`](crate::SqsServer)) the process is
/// LocalStack's SQS instead, with the same controls: queue URLs name account `000000000000`
/// (moto's name `123456789012`) and the proxy's port when there is one; startup takes about
/// 10 s, a first request included.
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
    /// Starts `moto_server` (or LocalStack) on a free loopback port and waits until it
    /// answers HTTP.
    pub fn start() -> Result<Self> {
        Ok(Moto {
            instance: Instance::start(spec(None)?, None)?,
        })
    }

    /// Starts a [`FaultProxy`] and moto behind it; [`endpoint`](Self::endpoint) is the
    /// proxy's.
    pub fn start_behind_proxy() -> Result<Self> {
        let proxy = FaultProxy::start_unconnected()?;
        Ok(Moto {
            instance: Instance::start(spec(Some(proxy.port()))?, Some(proxy))?,
        })
    }

    /// The endpoint URL for the AWS SDK, `http://127.0.0.1:PORT`: the proxy's when there is
    /// one.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.client_addr())
    }
}

owned_broker_controls!(Moto);

/// The SQS server [`SqsServer::from_env`] names; with LocalStack, queue URLs name
/// `127.0.0.1:advertised` (the proxy's port) or its own port.
pub(crate) fn spec(advertised: Option<u16>) -> Result<Spec> {
    Ok(match SqsServer::from_env()? {
        SqsServer::Moto => moto_spec(),
        SqsServer::LocalStack => localstack_spec(advertised),
    })
}

pub(crate) fn moto_spec() -> Spec {
    Spec {
        binary: SqsServer::Moto.binary(),
        probe: Probe::Http,
        args: Box::new(|port, _dir| {
            ["-H", "127.0.0.1", "-p", &port.to_string()]
                .iter()
                .map(OsString::from)
                .collect()
        }),
        config_file: None,
        prepare: None,
        env: None,
    }
}

/// LocalStack in host mode (`python -m localstack.runtime.main`, which `localstack-server`
/// runs), serving only SQS on loopback, keeping nothing, reaching for nothing outside:
/// no container runtime, no certificate download, no analytics, no DNS server.
fn localstack_spec(advertised: Option<u16>) -> Spec {
    Spec {
        binary: SqsServer::LocalStack.binary(),
        // It listens before SQS is loaded, and its first SQS request takes seconds of CPU
        // (parsers and specs load on first use): ready once a ListQueues (query protocol; any
        // credentials, unchecked) is answered, so that a test's first request is not the slow
        // one.
        probe: Probe::HttpBodyContains {
            path: "/?Action=ListQueues",
            headers: "Authorization: AWS4-HMAC-SHA256 \
                      Credential=testing/20260101/us-east-1/sqs/aws4_request, \
                      SignedHeaders=host, Signature=0\r\n",
            needle: "ListQueuesResponse",
        },
        args: Box::new(|_port, _dir| Vec::new()),
        config_file: None,
        prepare: None,
        env: Some(Box::new(move |port, dir| {
            let listen = format!("127.0.0.1:{port}");
            let host = format!("127.0.0.1:{}", advertised.unwrap_or(port));
            let root = dir.join("localstack").into_os_string();
            let vars: [(&str, OsString); 12] = [
                ("GATEWAY_LISTEN", listen.into()),
                // Queue URLs are http://LOCALSTACK_HOST/ACCOUNT/NAME.
                ("LOCALSTACK_HOST", host.into()),
                ("SQS_ENDPOINT_STRATEGY", "off".into()),
                ("SERVICES", "sqs".into()),
                ("EAGER_SERVICE_LOADING", "1".into()),
                ("PERSISTENCE", "0".into()),
                // Host mode: its files under the private directory, not /var/lib/localstack.
                ("OVERRIDE_IN_DOCKER", "0".into()),
                ("FILESYSTEM_ROOT", root),
                // Twisted needs service_identity, which localstack-core does not depend on.
                ("GATEWAY_SERVER", "hypercorn".into()),
                ("SKIP_SSL_CERT_DOWNLOAD", "1".into()),
                ("DISABLE_EVENTS", "1".into()),
                ("DNS_ADDRESS", "0".into()),
            ];
            vars.into_iter()
                .map(|(k, v)| (OsString::from(k), v))
                .collect()
        })),
    }
}
