//! Waiting for a job's outcome, from any process: [`Jobs::wait_for`].

use std::time::Duration;

use serde::de::DeserializeOwned;

use super::Jobs;
use super::connection::Conn;
use crate::error::{Error, Result};
use crate::keys::{self, check_name};
use crate::scripts::scripts;

/// How a job ended, as [`Jobs::wait_for`] saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum JobOutcome {
    /// It completed; `result` is what it set with
    /// [`JobContext::set_result`](crate::JobContext::set_result) (JSON), if anything.
    Completed {
        /// The result as JSON (decode it with [`JobOutcome::result`]).
        result: Option<String>,
    },
    /// It failed for good (its last attempt failed, or it could not run).
    Dead {
        /// Why.
        error: String,
    },
    /// It was cancelled.
    Cancelled,
    /// It had not finished when the timeout passed (it may still finish later).
    TimedOut,
}

impl JobOutcome {
    /// A completed job's result decoded as `T`: `Ok(None)` when the job set none or did not
    /// complete, [`Error::Decode`] when the stored JSON is not a `T`.
    pub fn result<T: DeserializeOwned>(&self) -> Result<Option<T>> {
        match self {
            JobOutcome::Completed { result: Some(json) } => serde_json::from_str(json)
                .map(Some)
                .map_err(|source| Error::Decode {
                    what: "job's result",
                    source,
                }),
            _ => Ok(None),
        }
    }

    fn finished(state: &str, result: String, error: String) -> Option<Self> {
        Some(match state {
            "completed" => JobOutcome::Completed {
                result: (!result.is_empty()).then_some(result),
            },
            "dead" => JobOutcome::Dead { error },
            "cancelled" => JobOutcome::Cancelled,
            _ => return None,
        })
    }
}

/// What one look at a job found.
enum Seen {
    Unknown,
    Pending,
    Finished(JobOutcome),
}

impl Jobs {
    /// Waits until job `id` of `partition` finishes, at most `timeout`, and says how it
    /// ended: [`JobOutcome::Completed`] with its result, [`JobOutcome::Dead`] with its
    /// error, [`JobOutcome::Cancelled`], or [`JobOutcome::TimedOut`]. Works from any
    /// process, for a job run by any worker; a job that already finished answers at once
    /// (while retention keeps it).
    ///
    /// No outcome is missed: the check of the job's state and the registration as a waiter
    /// are one atomic script, and the script that finishes a job pushes its outcome for each
    /// registered waiter to a list that expires by itself after 5 minutes (so a waiter that
    /// gave up leaves nothing behind for long). The wait is a blocking pop on a connection of
    /// its own, opened for the call (a blocking command would hold up the handle's shared
    /// connection); a last look at the job's state after the timeout catches what a lost
    /// connection could have hidden.
    ///
    /// Errors: [`Error::UnknownJob`] when no such job is stored (never enqueued in this
    /// partition, or trimmed by retention, or purged), a Redis error or timeout otherwise.
    /// The call takes at most `timeout` plus twice the response timeout, plus the
    /// connect timeout.
    pub async fn wait_for(
        &self,
        partition: &str,
        id: &str,
        timeout: Duration,
    ) -> Result<JobOutcome> {
        check_name("partition", partition)?;
        match self.watch(partition, id, true).await? {
            Seen::Unknown => return Err(unknown(partition, id)),
            Seen::Finished(o) => return Ok(o),
            Seen::Pending => {}
        }
        if !timeout.is_zero()
            && let Some(o) = self.pop_outcome(partition, id, timeout).await?
        {
            return Ok(o);
        }
        match self.watch(partition, id, false).await? {
            Seen::Unknown => Err(unknown(partition, id)),
            Seen::Finished(o) => Ok(o),
            Seen::Pending => Ok(JobOutcome::TimedOut),
        }
    }

    /// Looks at a job's state; with `register`, a pending job gets this caller as a waiter.
    async fn watch(&self, partition: &str, id: &str, register: bool) -> Result<Seen> {
        let args = vec![id.to_owned(), if register { "1" } else { "0" }.to_owned()];
        let v: Vec<String> = self
            .script("wait for job", &scripts().watch, partition, args)
            .await?;
        let mut it = v.into_iter();
        let state = it.next().unwrap_or_default();
        Ok(match state.as_str() {
            "unknown" => Seen::Unknown,
            "pending" => Seen::Pending,
            s => {
                let result = it.next().unwrap_or_default();
                let error = it.next().unwrap_or_default();
                JobOutcome::finished(s, result, error).map_or(Seen::Pending, Seen::Finished)
            }
        })
    }

    /// Blocks on the job's outcome list for at most `timeout`, on a connection of its own.
    async fn pop_outcome(
        &self,
        partition: &str,
        id: &str,
        timeout: Duration,
    ) -> Result<Option<JobOutcome>> {
        let config = (*self.config)
            .clone()
            .response_timeout(timeout.saturating_add(self.timeout));
        let connect = config.connect_timeout.saturating_mul(2);
        let mut conn = match tokio::time::timeout(connect, Conn::open(&config)).await {
            Ok(c) => c?,
            Err(_) => {
                return Err(Error::Timeout {
                    op: "connect to wait for a job",
                    timeout_ms: connect.as_millis() as u64,
                });
            }
        };
        let key = format!("{}outcome:{id}", keys::prefix(partition));
        // BLPOP takes seconds with decimals (Redis 6); 0 would mean forever.
        let secs = format!("{:.3}", timeout.as_secs_f64().max(0.001));
        let mut cmd = redis::cmd("BLPOP");
        cmd.arg(&key).arg(secs);
        let limit = timeout.saturating_add(self.timeout.saturating_mul(2));
        let popped: Option<(String, String)> =
            match tokio::time::timeout(limit, cmd.query_async(&mut conn)).await {
                Ok(Ok(v)) => v,
                Ok(Err(source)) => {
                    return Err(Error::Redis {
                        op: "wait for job",
                        source,
                    });
                }
                Err(_) => return Ok(None),
            };
        let Some((_, msg)) = popped else {
            return Ok(None);
        };
        let parsed: (String, String, String) =
            serde_json::from_str(&msg).map_err(|e| Error::Protocol {
                op: "wait for job",
                detail: format!("the outcome `{msg}` is not [state, result, error]: {e}"),
            })?;
        Ok(JobOutcome::finished(&parsed.0, parsed.1, parsed.2))
    }
}

fn unknown(partition: &str, id: &str) -> Error {
    Error::UnknownJob {
        partition: partition.to_owned(),
        id: id.to_owned(),
    }
}
