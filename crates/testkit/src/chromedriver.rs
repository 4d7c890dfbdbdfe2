//! `chromedriver` (Debian's `chromium-driver`) for browser tests: started on a free
//! loopback port, killed on drop.

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::process::{free_port, log_tail};

/// Where Debian's `chromium-driver` installs the driver (`scripts/install` installs it).
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// Where Debian's `chromium` installs the browser.
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// How long the driver may take to listen.
const READY_WITHIN: Duration = Duration::from_secs(20);

/// A running `chromedriver`; point a WebDriver client (fantoccini) at [`url`](Self::url) and
/// ask for Chromium at [`CHROMIUM`], headless. Killed on drop.
#[derive(Debug)]
pub struct Chromedriver {
    child: Child,
    port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Chromedriver {
    /// Starts `/usr/bin/chromedriver` on a free loopback port and waits until it listens.
    /// Fails (it never skips) when the driver or the browser is not installed: run
    /// `scripts/install`.
    pub fn start() -> Result<Self> {
        for bin in [CHROMEDRIVER, CHROMIUM] {
            if !Path::new(bin).exists() {
                return Err(Error::BinaryNotFound {
                    binary: bin.rsplit('/').next().unwrap_or(bin).to_owned(),
                    searched: bin.to_owned(),
                });
            }
        }
        let dir = tempfile::Builder::new()
            .prefix("wharf-chromedriver-")
            .tempdir()
            .map_err(|e| Error::io("creating a directory for chromedriver", e))?;
        let log = dir.path().join("chromedriver.log");
        let out = File::create(&log).map_err(|e| Error::io("creating chromedriver's log", e))?;
        let err = out
            .try_clone()
            .map_err(|e| Error::io("creating chromedriver's log", e))?;
        let port = free_port()?;
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|source| Error::Spawn {
                binary: "chromedriver".into(),
                path: CHROMEDRIVER.into(),
                source: Arc::new(source),
            })?;
        let mut me = Self {
            child,
            port,
            log,
            _dir: dir,
        };
        me.wait_ready()?;
        Ok(me)
    }

    fn wait_ready(&mut self) -> Result<()> {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            let last = match TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
                Ok(_) => return Ok(()),
                Err(e) => e.to_string(),
            };
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(Error::ExitedEarly {
                    binary: "chromedriver".into(),
                    status: status.to_string(),
                    log: self.log.clone(),
                    tail: log_tail(&self.log),
                });
            }
            if Instant::now() >= deadline {
                return Err(Error::NotReady {
                    binary: "chromedriver".into(),
                    timeout: READY_WITHIN,
                    last_probe: format!("connect to {addr}: {last}"),
                    log: self.log.clone(),
                    tail: log_tail(&self.log),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The WebDriver endpoint, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The driver's log (its output).
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The capabilities that ask chromedriver for a headless Chromium without sandbox (tests
    /// run as root in containers), a fixed window size and a private profile.
    pub fn headless_capabilities(
        &self,
        width: u32,
        height: u32,
    ) -> serde_json::Map<String, serde_json::Value> {
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": CHROMIUM,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--no-first-run",
                    "--disable-extensions",
                    "--disable-background-networking",
                    "--hide-scrollbars",
                    format!("--window-size={width},{height}"),
                ],
            }),
        );
        caps
    }
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
