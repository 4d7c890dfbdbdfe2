//! The consumer's request mailboxes: where [`signal`](crate::ShardedConsumer::signal),
//! [`get_or_start`](crate::ShardedConsumer::get_or_start) and
//! [`key_info`](crate::ShardedConsumer::key_info) wait for an executor.
//!
//! Built on [`wharf_core::service`]: one bounded mailbox per executor, whose receiving end
//! belongs to the consumer's [`Life`], not to one run. Each run attaches to the mailboxes
//! (an executor polls its own with [`Inbox::poll_recv`] from its poll loop) and leaves the
//! requests it did not take in them, so that requests sent while a supervisor restarts the
//! consumer are served by its next run, in order.
//!
//! A life lasts as long as something can still run the consumer: a child spec made by
//! [`child_spec`](crate::ShardedConsumer::child_spec) (its supervisor may start it again), or
//! a run in progress. When the last of them goes, the mailboxes close: the requests queued in
//! them and the ones an executor had taken but not started fail with [`Error::Stopped`] at
//! once, and so does every later request, until a new run or child spec begins a new life.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use wharf_core::service::{self, Inbox, Mailbox, ServiceHandle};

use crate::turn::Request;
use crate::{Error, Handler, KeyInfo, ShardKey};

/// A request from a handle, for the executor of `key`.
pub(crate) struct Control<H: Handler> {
    pub(crate) key: ShardKey,
    pub(crate) ask: Ask<H>,
}

/// What a handle asks of a key's executor.
pub(crate) enum Ask<H: Handler> {
    Signal(H::Signal),
    Start,
    Inspect,
}

/// The executor's answer; one variant per [`Ask`].
pub(crate) enum Answer<H: Handler> {
    Signal(Result<H::Reply, Error>),
    Started(Result<(), Error>),
    Info(Option<KeyInfo>),
}

/// The callers' end of one executor's mailbox.
pub(crate) type Line<H> = ServiceHandle<Control<H>, Answer<H>>;
/// One run's view of one executor's mailbox.
pub(crate) type Controls<H> = Inbox<Control<H>, Answer<H>>;
/// A request an executor took from its mailbox.
pub(crate) type Taken<H> = service::Request<Control<H>, Answer<H>>;
/// Answers one request.
pub(crate) type Responder<H> = service::Responder<Answer<H>>;

/// Requests an executor had taken but not started when its run ended, per key in order.
type Carried<H> = VecDeque<(ShardKey, Request<H>)>;

/// The mailboxes of the consumer while something can still run it. Held by every live child
/// spec ([`SpecHold`]) and by the run in progress (its executors included); dropped with
/// the last of them, which closes the mailboxes.
pub(crate) struct Life<H: Handler> {
    consumer: Arc<str>,
    mailboxes: Vec<Mailbox<Control<H>, Answer<H>>>,
    /// Per executor: what a run that ended had taken and not started, served first by the
    /// next run (it was taken before anything still queued).
    carried: Vec<Mutex<Carried<H>>>,
    /// Live child specs: while one lives, a supervisor may start another run.
    specs: AtomicUsize,
}

impl<H: Handler> Life<H> {
    /// A new life with one mailbox of `capacity` per executor, and the callers' ends, whose
    /// calls wait at most `call_timeout`.
    pub(crate) fn new(
        consumer: &Arc<str>,
        executors: usize,
        capacity: usize,
        call_timeout: Duration,
    ) -> (Arc<Self>, Vec<Line<H>>) {
        let (lines, mailboxes) = (0..executors)
            .map(|index| {
                let (line, mailbox) =
                    service::mailbox(format!("{consumer} executor {index}"), capacity);
                (line.with_call_timeout(call_timeout), mailbox)
            })
            .unzip();
        let life = Self {
            consumer: Arc::clone(consumer),
            mailboxes,
            carried: (0..executors).map(|_| Mutex::default()).collect(),
            specs: AtomicUsize::new(0),
        };
        (Arc::new(life), lines)
    }

    /// Whether a child spec lives, so that a supervisor may run the consumer again after
    /// the run in progress: the requests that run does not serve are then kept for the next.
    pub(crate) fn supervised(&self) -> bool {
        self.specs.load(Ordering::Acquire) > 0
    }

    /// Takes every executor's mailbox for a run, in executor order. Waits while a run that
    /// was aborted still holds one (until its executor tasks are dropped).
    pub(crate) async fn attach(&self) -> Vec<Controls<H>> {
        let mut controls = Vec::with_capacity(self.mailboxes.len());
        for mailbox in &self.mailboxes {
            controls.push(mailbox.attach().await);
        }
        controls
    }

    /// Keeps a request that executor `index` had taken and not started, for the next run.
    pub(crate) fn carry(&self, index: usize, key: ShardKey, request: Request<H>) {
        match self.carried.get(index) {
            Some(carried) => lock(carried).push_back((key, request)),
            None => request.fail(self.stopped()),
        }
    }

    /// What executor `index` of a run that ended left to serve first, in order.
    pub(crate) fn take_carried(&self, index: usize) -> Carried<H> {
        self.carried
            .get(index)
            .map(|carried| std::mem::take(&mut *lock(carried)))
            .unwrap_or_default()
    }

    fn stopped(&self) -> Error {
        Error::Stopped {
            consumer: self.consumer.to_string(),
        }
    }
}

impl<H: Handler> Drop for Life<H> {
    /// Nothing can run the consumer any more: what a run left to its successor fails now.
    /// (The mailboxes close with their last [`Mailbox`] and [`Inbox`], which fails what is
    /// queued in them.)
    fn drop(&mut self) {
        for carried in &mut self.carried {
            let carried = carried.get_mut().unwrap_or_else(PoisonError::into_inner);
            for (_, request) in carried.drain(..) {
                request.fail(Error::Stopped {
                    consumer: self.consumer.to_string(),
                });
            }
        }
    }
}

/// Held by a child spec's start function: while one lives, the life (and its mailboxes)
/// lives, and the consumer counts as supervised.
pub(crate) struct SpecHold<H: Handler>(Arc<Life<H>>);

impl<H: Handler> SpecHold<H> {
    pub(crate) fn new(life: Arc<Life<H>>) -> Self {
        life.specs.fetch_add(1, Ordering::AcqRel);
        Self(life)
    }

    pub(crate) fn life(&self) -> &Arc<Life<H>> {
        &self.0
    }
}

impl<H: Handler> Drop for SpecHold<H> {
    fn drop(&mut self) {
        self.0.specs.fetch_sub(1, Ordering::AcqRel);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
