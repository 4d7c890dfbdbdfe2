//! The state the `Emitter` handles and the worker share: settings, the buffer's channel, the
//! gate that decides whether an event is accepted, and what a crashed worker left behind.

use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::Error;
use crate::accounting::Accounting;
use crate::config::{FullPolicy, QueueUrl, RetryPolicy};
use crate::envelope::EncodeOptions;
use crate::pending::Pending;
use crate::report::ShutdownReport;

/// Whether `emit` may put events into the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Gate {
    /// Accepting, as long as a worker runs or can be started (see [`Life::admit`]).
    Open,
    /// Drained by its supervisor; a restart reopens it.
    Paused,
    /// Shut down for good by `Emitter::shutdown`.
    Closed,
}

/// The gate and whether a worker runs or may run: what decides if an event is accepted.
/// Changed under the write lock; `enqueue` holds the read lock while it checks and queues, so
/// an event is either queued before a change (and taken care of by it) or refused after it.
#[derive(Debug)]
pub(crate) struct Life {
    pub(crate) gate: Gate,
    /// A worker is set up and has not ended.
    pub(crate) running: bool,
    /// A worker was set up at least once.
    pub(crate) started: bool,
    /// Live child specs: a supervisor holding one may start or restart the worker, which
    /// takes over what is buffered.
    pub(crate) specs: usize,
    /// Why no worker will run again (set when an unsupervised worker died, or when the last
    /// child spec went away while no worker ran); cleared by the next start.
    pub(crate) died: Option<String>,
}

impl Life {
    /// Whether a new event may be queued now, and if not, why.
    pub(crate) fn admit(&self, queue: &str) -> Result<(), Error> {
        let queue = queue.to_string();
        match self.gate {
            Gate::Paused | Gate::Closed => return Err(Error::Stopped { queue }),
            Gate::Open => {}
        }
        if self.running {
            return Ok(());
        }
        if let Some(reason) = &self.died {
            return Err(Error::WorkerDied {
                queue,
                reason: reason.clone(),
            });
        }
        if self.specs > 0 {
            // Between a crash and the restart, or before the supervisor's first start: the
            // next worker takes the event over.
            return Ok(());
        }
        if !self.started {
            return Err(Error::NotStarted { queue });
        }
        Err(Error::WorkerDied {
            queue,
            reason: "no worker runs and none will be started".to_string(),
        })
    }
}

/// Held by every child spec's start function: while one lives, a supervisor may (re)start the
/// worker. When the last one goes (the supervisor stopped for good, or the spec was never
/// used) and no worker runs, whatever is still buffered can never be sent and is failed.
pub(crate) struct SpecGuard(pub(crate) Arc<Shared>);

impl SpecGuard {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        if let Ok(mut life) = shared.life.write() {
            life.specs += 1;
        }
        SpecGuard(shared)
    }
}

impl Drop for SpecGuard {
    fn drop(&mut self) {
        let orphaned = match self.0.life.write() {
            Ok(mut life) => {
                life.specs = life.specs.saturating_sub(1);
                let orphaned = life.specs == 0 && !life.running;
                if orphaned && life.gate == Gate::Open {
                    life.died = Some(if life.started {
                        "its supervisor stopped without restarting it".to_string()
                    } else {
                        "its child spec was dropped before a supervisor started it".to_string()
                    });
                }
                orphaned
            }
            Err(_) => false,
        };
        if orphaned {
            self.0.fail_parked(
                "no worker runs and none will: the emitter's child spec is gone (its supervisor \
                 stopped)",
            );
        }
    }
}

/// Resolved settings the worker needs.
pub(crate) struct Settings {
    pub(crate) queue: QueueUrl,
    pub(crate) max_message_bytes: usize,
    pub(crate) linger: Duration,
    pub(crate) max_in_flight: usize,
    pub(crate) request_timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) retry: RetryPolicy,
    pub(crate) drain_timeout: Duration,
    pub(crate) region: Option<String>,
    pub(crate) endpoint_url: Option<String>,
    pub(crate) credentials: Option<aws_sdk_sqs::config::Credentials>,
    pub(crate) sdk_config: Option<aws_config::SdkConfig>,
    pub(crate) client: Option<aws_sdk_sqs::Client>,
}

pub(crate) struct Shared {
    pub(crate) settings: Option<Settings>,
    pub(crate) encode: EncodeOptions,
    pub(crate) full_policy: FullPolicy,
    pub(crate) sync_timeout: Duration,
    pub(crate) acct: Arc<Accounting>,
    pub(crate) tx: mpsc::UnboundedSender<Pending>,
    /// The receiving end, parked here while no worker runs, so events queued during a
    /// restart are served by the next incarnation.
    //
    // The shape of `wharf_core::service::mailbox`, which does not fit: its handles only
    // `call`, while `emit` returns once the event is buffered and its outcome travels with
    // it (`Pending`); its bound counts requests, while the buffer is bounded in events and
    // in bytes (the semaphores in `Accounting`, taken before the event is queued); and a
    // request taken by a crashed service fails with `ServiceCrashed`, while a crashed
    // worker's events (batched, retrying, in flight) go to `salvage` and are sent by the
    // next one. Unbounded here because every event in it holds a place in the buffer.
    pub(crate) rx: Mutex<Option<mpsc::UnboundedReceiver<Pending>>>,
    /// Events a crashed worker held (in batches, retries, requests in flight).
    pub(crate) salvage: Mutex<Vec<Pending>>,
    pub(crate) life: RwLock<Life>,
    pub(crate) closing: CancellationToken,
    pub(crate) report: watch::Sender<Option<ShutdownReport>>,
    pub(crate) client: tokio::sync::OnceCell<aws_sdk_sqs::Client>,
    /// Test-only fault injection: a bump makes the running worker panic.
    pub(crate) crash: watch::Sender<u64>,
}

impl Shared {
    pub(crate) fn set_gate(&self, gate: Gate) {
        if let Ok(mut life) = self.life.write() {
            // Closed is final.
            if life.gate != Gate::Closed {
                life.gate = gate;
            }
        }
    }

    pub(crate) fn is_running(&self) -> bool {
        self.life.read().map(|l| l.running).unwrap_or(false)
    }

    /// A worker finished its setup: it takes the buffer over.
    pub(crate) fn worker_started(&self) {
        if let Ok(mut life) = self.life.write() {
            if life.gate != Gate::Closed {
                life.gate = Gate::Open;
            }
            life.running = true;
            life.started = true;
            life.died = None;
        }
    }

    /// A worker ended (its `Drop`): what it held is in `salvage` by now.
    pub(crate) fn worker_ended(&self) {
        if let Ok(mut life) = self.life.write() {
            life.running = false;
        }
    }

    /// A worker that nothing restarts died: refuse new events from now on and fail every
    /// event still buffered, so none waits forever.
    pub(crate) fn worker_died(&self, reason: &str) {
        if let Ok(mut life) = self.life.write() {
            if life.running {
                return; // a new worker took over meanwhile
            }
            if life.gate == Gate::Open {
                life.died = Some(reason.to_string());
            }
        }
        tracing::error!(
            queue = %self.acct.queue,
            reason,
            "the webhooks emitter's worker died and nothing restarts it; its buffered events are \
             failed and new events are refused (use Emitter::child_spec under a supervisor to \
             have it restarted)"
        );
        self.fail_parked(&format!(
            "the emitter's worker died ({reason}) and nothing restarts it"
        ));
    }

    /// Fails every event waiting for a worker (in the channel or salvaged from a crashed
    /// worker); returns how many.
    pub(crate) fn fail_parked(&self, reason: &str) -> u64 {
        let mut parked: Vec<Pending> = self
            .salvage
            .lock()
            .map(|mut s| std::mem::take(&mut *s))
            .unwrap_or_default();
        if let Ok(mut slot) = self.rx.lock()
            && let Some(rx) = slot.as_mut()
        {
            while let Ok(p) = rx.try_recv() {
                parked.push(p);
            }
        }
        let unsent = parked.len() as u64;
        for p in parked {
            let event_id = p.msg.id;
            let maybe_sent = p.maybe_sent();
            p.fail(Error::NotSent {
                event_id,
                reason: reason.to_string(),
                maybe_sent,
            });
        }
        if unsent > 0 {
            tracing::warn!(unsent, queue = %self.acct.queue, reason, "webhooks emitter failed events no worker will send");
        }
        self.acct.update_gauge();
        unsent
    }
}
