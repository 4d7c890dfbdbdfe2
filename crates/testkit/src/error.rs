//! The crate's one error type.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Everything that can go wrong while finding, starting, probing or controlling a broker or a
/// [`FaultProxy`](crate::FaultProxy).
///
/// The type is `Clone` (I/O errors are shared behind an [`Arc`]) so that the shared brokers can
/// hand the same start-up failure to every test of a binary instead of retrying it in each one.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A broker executable is not installed where the kit looks for it.
    #[error(
        "broker binary `{binary}` not found (looked in: {searched}); run `scripts/install` from \
         the workspace root to install it, or set WHARF_BIN_DIR to a directory that holds it"
    )]
    BinaryNotFound {
        /// The executable's file name, for example `tansu`.
        binary: String,
        /// The places searched, in order, joined for display.
        searched: String,
    },

    /// The operating system refused to start the broker process.
    #[error(
        "could not start `{binary}` ({path}): {source}; check that it is executable, or re-run `scripts/install`"
    )]
    Spawn {
        /// The executable's file name.
        binary: String,
        /// The full path that was executed.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: Arc<io::Error>,
    },

    /// The broker process exited before it answered its readiness check.
    #[error("`{binary}` exited before it was ready ({status}); last lines of {log}:\n{tail}")]
    ExitedEarly {
        /// The executable's file name.
        binary: String,
        /// How it exited.
        status: String,
        /// Its log file (stdout and stderr).
        log: PathBuf,
        /// The last lines of that log.
        tail: String,
    },

    /// The broker process kept running but did not answer its readiness check in time; it has
    /// been killed.
    #[error(
        "`{binary}` did not answer within {timeout:?} (last probe: {last_probe}); it was \
         killed; last lines of {log}:\n{tail}"
    )]
    NotReady {
        /// The executable's file name.
        binary: String,
        /// How long the kit waited.
        timeout: Duration,
        /// Why the last readiness probe failed (it names the address probed).
        last_probe: String,
        /// Its log file (stdout and stderr).
        log: PathBuf,
        /// The last lines of that log.
        tail: String,
    },

    /// A file-system or socket operation of the kit itself failed.
    #[error("{what}: {source}")]
    Io {
        /// What the kit was doing, for example "creating the temporary directory for redis-server".
        what: String,
        /// The underlying error.
        #[source]
        source: Arc<io::Error>,
    },

    /// A [`FaultProxy`](crate::FaultProxy) could not carry out a control.
    #[error("fault proxy {listen} -> {upstream}: {reason}")]
    Proxy {
        /// The proxy's own address.
        listen: String,
        /// The address it forwards to.
        upstream: String,
        /// What failed and what to do.
        reason: String,
    },

    /// A helper command the kit runs while it sets brokers up (`redis-cli --cluster create`,
    /// `openssl`) failed, or did not finish in time and was killed.
    #[error("`{command}` {outcome}; last lines of {log}:\n{tail}")]
    ToolFailed {
        /// The command line.
        command: String,
        /// How it ended.
        outcome: String,
        /// Its log file (stdout and stderr).
        log: PathBuf,
        /// The last lines of that log.
        tail: String,
    },

    /// A set of brokers (a Redis Cluster, a Sentinel set) started, but did not reach the
    /// state it needs in time; its processes have been killed.
    #[error(
        "{what} was not ready within {timeout:?} (last check: {last_check}); its processes \
         were killed; last lines of their logs:\n{logs}"
    )]
    SetNotReady {
        /// Which set, for example "a Redis Cluster of 3 masters".
        what: String,
        /// How long the kit waited.
        timeout: Duration,
        /// What the last check saw.
        last_check: String,
        /// The last lines of each process's log, each under its address (the logs themselves
        /// are removed with the processes' directories).
        logs: String,
    },

    /// A question the kit asked running brokers (what the sentinels name as master, whether
    /// a replica caught up) got no usable answer, or a change it waited for (a failover) did
    /// not come in time.
    #[error("{what}: {reason}")]
    Query {
        /// What the kit asked or waited for.
        what: String,
        /// What it got instead.
        reason: String,
    },

    /// A broker or set of brokers was asked for something it cannot be (for example a Redis
    /// Cluster of fewer than 3 masters, which `redis-cli --cluster create` refuses).
    #[error("{0}")]
    Unsupported(String),

    /// An operation needs a broker process started by this test, but it has none (it was
    /// killed or stopped and not restarted).
    #[error("`{binary}` is not running: call restart() first")]
    NotRunning {
        /// The executable's file name.
        binary: String,
    },
}

impl Error {
    pub(crate) fn io(what: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            what: what.into(),
            source: Arc::new(source),
        }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
