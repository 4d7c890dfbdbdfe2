//! A broker running as a child process: start, readiness, kill, stop, restart, logs, temp dirs.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard, Once};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::binary;
use crate::error::{Error, Result};
use crate::probe::Probe;
use crate::proxy::FaultProxy;
use crate::spawner;

/// How long a broker may take to answer its readiness probe.
pub(crate) const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `stop()` waits after SIGTERM before it sends SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// Initial starts retry on a fresh port when the child exits early (another process may have
/// taken the free port between our probe and the broker's bind).
const START_ATTEMPTS: u32 = 3;
const POLL: Duration = Duration::from_millis(25);
const LOG_TAIL_LINES: usize = 30;
const LOG_TAIL_BYTES: u64 = 8 * 1024;

/// Builds the arguments that make a broker listen on `127.0.0.1:port`, given its private
/// directory.
pub(crate) type ArgsFn = Box<dyn Fn(u16, &Path) -> Vec<OsString> + Send + Sync>;

/// Prepares the private directory before the first start (certificates, say).
pub(crate) type PrepareFn = Box<dyn Fn(&Path) -> Result<()> + Send + Sync>;

/// Builds the environment variables a broker needs besides the kit's own, given its port and
/// private directory.
pub(crate) type EnvFn = Box<dyn Fn(u16, &Path) -> Vec<(OsString, OsString)> + Send + Sync>;

/// The command line of one broker kind.
pub(crate) struct Spec {
    pub(crate) binary: &'static str,
    pub(crate) probe: Probe,
    pub(crate) args: ArgsFn,
    /// A file (name, contents) written into the private directory before the first start.
    pub(crate) config_file: Option<(&'static str, String)>,
    /// Run in the private directory before the first start, after `config_file` is written.
    pub(crate) prepare: Option<PrepareFn>,
    /// Environment variables set for the broker (on top of the test binary's).
    pub(crate) env: Option<EnvFn>,
}

/// One broker process and everything it owns. Killed when dropped.
pub(crate) struct Instance {
    spec: Spec,
    program: PathBuf,
    dir: TempDir,
    log_path: PathBuf,
    port: u16,
    child: Mutex<Option<Child>>,
    proxy: Option<Arc<FaultProxy>>,
}

impl std::fmt::Debug for Instance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instance")
            .field("binary", &self.spec.binary)
            .field("port", &self.port)
            .field("pid", &self.pid())
            .field("dir", &self.dir.path())
            .field("proxy", &self.proxy)
            .finish()
    }
}

impl Instance {
    /// Finds the binary, makes a private directory, starts the broker on a free port and waits
    /// until it answers. With a proxy, points the proxy at the broker once its port is known.
    pub(crate) fn start(spec: Spec, proxy: Option<FaultProxy>) -> Result<Self> {
        let program = binary::find(spec.binary)?;
        let dir = instance_dir(spec.binary)?;
        let log_path = dir.path().join(format!("{}.log", spec.binary));
        if let Some((name, contents)) = &spec.config_file {
            let path = dir.path().join(name);
            std::fs::write(&path, contents)
                .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
        }
        if let Some(prepare) = &spec.prepare {
            prepare(dir.path())?;
        }
        let mut attempt = 1;
        let (port, child) = loop {
            let port = free_port()?;
            match launch(&spec, &program, dir.path(), &log_path, port) {
                Ok(child) => break (port, child),
                Err(Error::ExitedEarly { .. }) if attempt < START_ATTEMPTS => {
                    tracing::debug!(
                        binary = spec.binary,
                        port,
                        "exited early, retrying on another port"
                    );
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        };
        if let Some(proxy) = &proxy {
            proxy.set_upstream(SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
        }
        tracing::debug!(
            binary = spec.binary,
            port,
            pid = child.id(),
            "broker started"
        );
        Ok(Instance {
            spec,
            program,
            dir,
            log_path,
            port,
            child: Mutex::new(Some(child)),
            proxy: proxy.map(Arc::new),
        })
    }

    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    pub(crate) fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub(crate) fn log_path(&self) -> &Path {
        &self.log_path
    }

    pub(crate) fn proxy(&self) -> Option<&FaultProxy> {
        self.proxy.as_deref()
    }

    pub(crate) fn proxy_handle(&self) -> Option<Arc<FaultProxy>> {
        self.proxy.clone()
    }

    pub(crate) fn pid(&self) -> Option<u32> {
        self.lock().as_ref().map(Child::id)
    }

    pub(crate) fn is_running(&self) -> bool {
        let mut guard = self.lock();
        match guard.as_mut().map(Child::try_wait) {
            Some(Ok(None)) => true,
            Some(Ok(Some(_))) | Some(Err(_)) => {
                *guard = None;
                false
            }
            None => false,
        }
    }

    /// SIGKILL, then reap. A no-op when not running.
    pub(crate) fn kill(&self) -> Result<()> {
        let child = self.lock().take();
        match child {
            Some(child) => kill_and_reap(child, self.spec.binary),
            None => Ok(()),
        }
    }

    /// SIGTERM, wait up to a grace period, then SIGKILL. A no-op when not running.
    pub(crate) fn stop(&self) -> Result<()> {
        let Some(mut child) = self.lock().take() else {
            return Ok(());
        };
        // SAFETY: plain syscall on the pid of a child we have not reaped yet.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline {
            match child.try_wait() {
                Ok(Some(_)) => return Ok(()),
                Ok(None) => std::thread::sleep(POLL),
                Err(e) => {
                    return Err(Error::io(
                        format!("waiting for {} to stop", self.spec.binary),
                        e,
                    ));
                }
            }
        }
        kill_and_reap(child, self.spec.binary)
    }

    /// Stops the broker if it runs, then starts it again on the same port with the same
    /// directory, and waits until it answers.
    pub(crate) fn restart(&self) -> Result<()> {
        self.stop()?;
        let child = launch(
            &self.spec,
            &self.program,
            self.dir.path(),
            &self.log_path,
            self.port,
        )?;
        *self.lock() = Some(child);
        Ok(())
    }

    fn lock(&self) -> MutexGuard<'_, Option<Child>> {
        self.child
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

fn kill_and_reap(mut child: Child, binary: &str) -> Result<()> {
    // kill() fails only when the child was already reaped, which wait() then reports.
    let _ = child.kill();
    child
        .wait()
        .map(|_| ())
        .map_err(|e| Error::io(format!("waiting for {binary} to die"), e))
}

/// Spawns the broker on `port` and waits until it answers its probe.
fn launch(spec: &Spec, program: &Path, dir: &Path, log_path: &Path, port: u16) -> Result<Child> {
    let args = (spec.args)(port, dir);
    let mut log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path)
        .map_err(|e| Error::io(format!("opening log file {}", log_path.display()), e))?;
    let shown: Vec<String> = args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let _ = writeln!(
        log,
        "=== wharf-testkit: {} {}",
        program.display(),
        shown.join(" ")
    );
    let stderr = log
        .try_clone()
        .map_err(|e| Error::io(format!("duplicating log file {}", log_path.display()), e))?;
    let mut command = Command::new(program);
    if let Some(env) = &spec.env {
        command.envs(env(port, dir));
    }
    command
        .args(&args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(stderr));
    let child = spawner::spawn(command).map_err(|e| Error::Spawn {
        binary: spec.binary.to_owned(),
        path: program.to_path_buf(),
        source: e.into(),
    })?;
    wait_ready(
        spec,
        child,
        SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        log_path,
    )
}

fn wait_ready(spec: &Spec, mut child: Child, addr: SocketAddr, log_path: &Path) -> Result<Child> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        let exited = child
            .try_wait()
            .map_err(|e| Error::io(format!("checking on {}", spec.binary), e))?;
        if let Some(status) = exited {
            return Err(Error::ExitedEarly {
                binary: spec.binary.to_owned(),
                status: status.to_string(),
                log: log_path.to_path_buf(),
                tail: log_tail(log_path),
            });
        }
        let last_probe = match spec.probe.check(addr) {
            Ok(()) => return Ok(child),
            Err(why) => why,
        };
        if Instant::now() >= deadline {
            let _ = kill_and_reap(child, spec.binary);
            return Err(Error::NotReady {
                binary: spec.binary.to_owned(),
                timeout: START_TIMEOUT,
                last_probe,
                log: log_path.to_path_buf(),
                tail: log_tail(log_path),
            });
        }
        std::thread::sleep(POLL);
    }
}

/// The last lines of a log file, for error messages.
pub(crate) fn log_tail(path: &Path) -> String {
    let read = || -> std::io::Result<String> {
        let mut file = File::open(path)?;
        let len = file.metadata()?.len();
        file.seek(SeekFrom::Start(len.saturating_sub(LOG_TAIL_BYTES)))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    match read() {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
        }
        Err(e) => format!("(log unreadable: {e})"),
    }
}

/// A loopback port that was free a moment ago.
pub(crate) fn free_port() -> Result<u16> {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| Error::io("finding a free loopback port", e))
}

/// `$TMPDIR/wharf-testkit`, holding one directory per broker process.
fn base_dir() -> PathBuf {
    std::env::temp_dir().join("wharf-testkit")
}

/// A fresh private directory for one broker, named `p<pid>-<binary>-<random>`, removed on
/// drop. Directories left by dead test processes (shared brokers are never dropped) are removed
/// the first time this runs in a process.
fn instance_dir(binary: &str) -> Result<TempDir> {
    static CLEANUP: Once = Once::new();
    let base = base_dir();
    std::fs::create_dir_all(&base)
        .map_err(|e| Error::io(format!("creating {}", base.display()), e))?;
    CLEANUP.call_once(|| remove_stale_dirs(&base));
    tempfile::Builder::new()
        .prefix(&format!("p{}-{binary}-", std::process::id()))
        .tempdir_in(&base)
        .map_err(|e| {
            Error::io(
                format!(
                    "creating a temporary directory for {binary} in {}",
                    base.display()
                ),
                e,
            )
        })
}

fn remove_stale_dirs(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let pid = name
            .to_str()
            .and_then(|n| n.strip_prefix('p'))
            .and_then(|n| n.split_once('-'))
            .and_then(|(pid, _)| pid.parse::<libc::pid_t>().ok());
        if let Some(pid) = pid
            && !process_alive(pid)
        {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn process_alive(pid: libc::pid_t) -> bool {
    // SAFETY: signal 0 only checks for existence and permission.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}
