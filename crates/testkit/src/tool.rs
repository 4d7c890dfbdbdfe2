//! Short-lived helper commands the kit runs while it sets brokers up (`redis-cli --cluster
//! create`, `openssl`): found like the brokers, spawned like them (they die with the test
//! binary), logged into the broker's directory, and bounded in time.

use std::ffi::OsStr;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::binary;
use crate::error::{Error, Result};
use crate::process::log_tail;
use crate::spawner;

const POLL: Duration = Duration::from_millis(20);

/// Runs `binary args` in `dir` with its output appended to `dir/<binary>.log`, and waits up
/// to `timeout` for it to exit successfully; a command still running then is killed.
pub(crate) fn run<S: AsRef<OsStr>>(
    binary: &'static str,
    args: &[S],
    dir: &Path,
    timeout: Duration,
) -> Result<()> {
    let program = binary::find(binary)?;
    let log_path = dir.join(format!("{binary}.log"));
    let shown: Vec<String> = args
        .iter()
        .map(|a| a.as_ref().to_string_lossy().into_owned())
        .collect();
    let shown = shown.join(" ");
    let mut log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| Error::io(format!("opening log file {}", log_path.display()), e))?;
    let _ = writeln!(log, "=== wharf-testkit: {} {shown}", program.display());
    let stderr = log
        .try_clone()
        .map_err(|e| Error::io(format!("duplicating log file {}", log_path.display()), e))?;
    let mut command = Command::new(&program);
    command
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(stderr));
    let mut child = spawner::spawn(command).map_err(|e| Error::Spawn {
        binary: binary.to_owned(),
        path: program.clone(),
        source: e.into(),
    })?;
    let failed = |outcome: String| Error::ToolFailed {
        command: format!("{binary} {shown}"),
        outcome,
        log: log_path.clone(),
        tail: log_tail(&log_path),
    };
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => return Err(failed(format!("failed ({status})"))),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(failed(format!(
                    "did not finish within {timeout:?} and was killed"
                )));
            }
            Ok(None) => std::thread::sleep(POLL),
            Err(e) => return Err(Error::io(format!("waiting for {binary}"), e)),
        }
    }
}
