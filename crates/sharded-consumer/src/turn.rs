//! Turns: the futures an executor runs for a key, one at a time per key. Each owns what it
//! needs (the state, the delivery) and hands it back in [`Done`], so that a panic in the
//! handler loses the state but never the delivery.

use std::fmt;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use wharf_core::transport::{Delivery, Message};

use crate::config::{Config, DeadLetter, DeadLetterTarget};
use crate::deadline::within;
use crate::mailbox::{Answer, Responder};
use crate::{Error, Handler, Incoming, Outcome, ShardKey, StopReason};
use wharf_core::supervisor::panic_message;

/// What one executor's turns share: the handler and the configuration. One per executor, so
/// that cloning it for a turn bumps a reference count no other core touches.
pub(crate) struct ShardCtx<H> {
    pub(crate) handler: Arc<H>,
    pub(crate) config: Arc<Config>,
}

impl<H> fmt::Debug for ShardCtx<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShardCtx")
            .field("consumer", &self.config.name)
            .finish_non_exhaustive()
    }
}

/// Why a try failed.
#[derive(Debug, Clone)]
pub(crate) struct Failure {
    pub(crate) what: &'static str,
    pub(crate) text: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.what, self.text)
    }
}

/// A request from outside for one key's actor.
pub(crate) enum Request<H: Handler> {
    Signal {
        signal: H::Signal,
        reply: Responder<H>,
    },
    Start {
        reply: Responder<H>,
    },
}

impl<H: Handler> Request<H> {
    pub(crate) fn fail(self, error: Error) {
        match self {
            Request::Signal { reply, .. } => {
                let _ = reply.send(Answer::Signal(Err(error)));
            }
            Request::Start { reply } => {
                let _ = reply.send(Answer::Started(Err(error)));
            }
        }
    }

    /// The caller no longer waits (it timed out): the request may be skipped.
    pub(crate) fn is_abandoned(&self) -> bool {
        match self {
            Request::Signal { reply, .. } | Request::Start { reply } => reply.is_closed(),
        }
    }
}

/// What a finished turn hands back to its executor.
pub(crate) enum Done<H: Handler> {
    Message {
        key: ShardKey,
        delivery: Delivery,
        attempt: u32,
        state: Option<H::State>,
        started: bool,
        result: Result<Outcome, Failure>,
    },
    Request {
        key: ShardKey,
        state: Option<H::State>,
        started: bool,
        failed: bool,
    },
    Terminated {
        key: ShardKey,
        reason: StopReason,
    },
    DeadLettered {
        key: Option<ShardKey>,
        delivery: Delivery,
        result: Result<(), Error>,
    },
}

async fn init<H: Handler>(ctx: &ShardCtx<H>, key: &ShardKey) -> Result<H::State, Failure> {
    let call = AssertUnwindSafe(ctx.handler.init(key)).catch_unwind();
    match within(ctx.config.handler_timeout, call).await {
        Ok(Ok(Ok(state))) => {
            tracing::debug!(consumer = %ctx.config.name, %key, "actor started");
            Ok(state)
        }
        Ok(Ok(Err(e))) => Err(Failure {
            what: "init failed",
            text: e.to_string(),
        }),
        Ok(Err(panic)) => Err(Failure {
            what: "init panicked",
            text: panic_message(panic.as_ref()),
        }),
        Err(late) => Err(Failure {
            what: "init timed out",
            text: late.to_string(),
        }),
    }
}

async fn terminate<H: Handler>(
    ctx: &ShardCtx<H>,
    key: &ShardKey,
    state: H::State,
    reason: StopReason,
) {
    let call = AssertUnwindSafe(ctx.handler.terminate(key, state, reason)).catch_unwind();
    match within(ctx.config.handler_timeout, call).await {
        Ok(Ok(())) => {}
        Ok(Err(panic)) => tracing::error!(
            consumer = %ctx.config.name, %key, ?reason,
            panic = %panic_message(panic.as_ref()),
            "terminate panicked; the actor is stopped anyway"
        ),
        Err(late) => tracing::error!(
            consumer = %ctx.config.name, %key, ?reason, %late,
            "terminate timed out; the actor is stopped anyway"
        ),
    }
}

/// Builds the state if needed: `(state, started now)`.
async fn ensure_state<H: Handler>(
    ctx: &ShardCtx<H>,
    key: &ShardKey,
    state: Option<H::State>,
) -> Result<(H::State, bool), Failure> {
    match state {
        Some(state) => Ok((state, false)),
        None => init(ctx, key).await.map(|state| (state, true)),
    }
}

/// One try of one message.
pub(crate) async fn message<H: Handler>(
    ctx: Arc<ShardCtx<H>>,
    key: ShardKey,
    state: Option<H::State>,
    delivery: Delivery,
    attempt: u32,
) -> Done<H> {
    let (state, started, result) = handle(&ctx, &key, state, &delivery, attempt).await;
    Done::Message {
        key,
        delivery,
        attempt,
        state,
        started,
        result,
    }
}

async fn handle<H: Handler>(
    ctx: &ShardCtx<H>,
    key: &ShardKey,
    state: Option<H::State>,
    delivery: &Delivery,
    attempt: u32,
) -> (Option<H::State>, bool, Result<Outcome, Failure>) {
    let (mut state, started) = match ensure_state(ctx, key, state).await {
        Ok(built) => built,
        Err(failure) => return (None, false, Err(failure)),
    };
    let incoming = Incoming::new(key, delivery, attempt);
    let call = AssertUnwindSafe(ctx.handler.handle_message(&mut state, &incoming)).catch_unwind();
    let answer = within(ctx.config.handler_timeout, call).await;
    match answer {
        Ok(Ok(Ok(Outcome::Stop))) => {
            terminate(ctx, key, state, StopReason::Requested).await;
            (None, started, Ok(Outcome::Stop))
        }
        Ok(Ok(Ok(outcome))) => (Some(state), started, Ok(outcome)),
        Ok(Ok(Err(e))) => {
            let failure = Failure {
                what: "handle_message failed",
                text: e.to_string(),
            };
            terminate(ctx, key, state, StopReason::Failed).await;
            (None, started, Err(failure))
        }
        // The state may be half-changed: it is dropped, and `init` builds a new one.
        Ok(Err(panic)) => (
            None,
            started,
            Err(Failure {
                what: "handle_message panicked",
                text: panic_message(panic.as_ref()),
            }),
        ),
        // Cut off mid-way: the state may be half-changed too.
        Err(late) => (
            None,
            started,
            Err(Failure {
                what: "handle_message timed out",
                text: late.to_string(),
            }),
        ),
    }
}

/// A signal or a start request.
pub(crate) async fn request<H: Handler>(
    ctx: Arc<ShardCtx<H>>,
    key: ShardKey,
    state: Option<H::State>,
    request: Request<H>,
) -> Done<H> {
    let (mut state, started) = match ensure_state(&ctx, &key, state).await {
        Ok(built) => built,
        Err(failure) => {
            request.fail(Error::ActorFailed {
                key: key.to_string(),
                reason: failure.to_string(),
            });
            return Done::Request {
                key,
                state: None,
                started: false,
                failed: true,
            };
        }
    };
    let (signal, reply) = match request {
        Request::Start { reply } => {
            let _ = reply.send(Answer::Started(Ok(())));
            return Done::Request {
                key,
                state: Some(state),
                started,
                failed: false,
            };
        }
        Request::Signal { signal, reply } => (signal, reply),
    };
    let call = AssertUnwindSafe(ctx.handler.handle_signal(&mut state, signal)).catch_unwind();
    let answer = within(ctx.config.handler_timeout, call).await;
    let (state, failed) = match answer {
        Ok(Ok(Ok(answer))) => {
            let _ = reply.send(Answer::Signal(Ok(answer)));
            (Some(state), false)
        }
        Err(late) => {
            let reason = format!("handle_signal timed out: {late}");
            tracing::warn!(consumer = %ctx.config.name, %key, %late, "handle_signal timed out; restarting the actor with a fresh state");
            let _ = reply.send(Answer::Signal(Err(Error::ActorFailed {
                key: key.to_string(),
                reason,
            })));
            (None, true)
        }
        Ok(Ok(Err(e))) => {
            let reason = format!("handle_signal failed: {e}");
            terminate(&ctx, &key, state, StopReason::Failed).await;
            let _ = reply.send(Answer::Signal(Err(Error::ActorFailed {
                key: key.to_string(),
                reason,
            })));
            (None, true)
        }
        Ok(Err(panic)) => {
            let reason = format!("handle_signal panicked: {}", panic_message(panic.as_ref()));
            let _ = reply.send(Answer::Signal(Err(Error::ActorFailed {
                key: key.to_string(),
                reason,
            })));
            (None, true)
        }
    };
    Done::Request {
        key,
        state,
        started,
        failed,
    }
}

/// Stops an actor whose state is intact.
pub(crate) async fn stop<H: Handler>(
    ctx: Arc<ShardCtx<H>>,
    key: ShardKey,
    state: H::State,
    reason: StopReason,
) -> Done<H> {
    terminate(&ctx, &key, state, reason).await;
    tracing::debug!(consumer = %ctx.config.name, %key, ?reason, "actor stopped");
    Done::Terminated { key, reason }
}

/// Hands a message that cannot be handled to the dead-letter target.
pub(crate) async fn dead_letter<H: Handler>(
    ctx: Arc<ShardCtx<H>>,
    key: Option<ShardKey>,
    delivery: Delivery,
    reason: String,
    attempts: u32,
) -> Done<H> {
    let origin = describe(&delivery);
    let result = match &ctx.config.dead_letter {
        DeadLetter::Discard => {
            tracing::error!(
                consumer = %ctx.config.name, key = %key_text(key.as_ref()),
                %origin, attempts, %reason,
                "message cannot be handled; discarded (no dead-letter target configured)"
            );
            Ok(())
        }
        DeadLetter::Publish(target) => {
            let message =
                dead_letter_message(&ctx.config.name, key.as_ref(), &delivery, &reason, attempts);
            let published = publish(target, message, &origin).await;
            if published.is_ok() {
                tracing::warn!(
                    consumer = %ctx.config.name, key = %key_text(key.as_ref()),
                    %origin, attempts, %reason, "message dead-lettered"
                );
            }
            published
        }
    };
    Done::DeadLettered {
        key,
        delivery,
        result,
    }
}

/// The header names of a dead-lettered message, on top of the original's headers.
pub(crate) mod headers {
    /// Why it was dead-lettered.
    pub(crate) const REASON: &str = "wharf-dead-letter-reason";
    /// The consumer that gave up on it.
    pub(crate) const CONSUMER: &str = "wharf-dead-letter-consumer";
    /// Its sharding key, when it had one.
    pub(crate) const KEY: &str = "wharf-dead-letter-key";
    /// How many times the handler tried it.
    pub(crate) const ATTEMPTS: &str = "wharf-dead-letter-attempts";
    /// Its id at the source (a receipt such as `3@1042`).
    pub(crate) const ORIGIN: &str = "wharf-dead-letter-origin";
}

fn dead_letter_message(
    consumer: &str,
    key: Option<&ShardKey>,
    delivery: &Delivery,
    reason: &str,
    attempts: u32,
) -> Message {
    let mut message = delivery
        .message()
        .clone()
        .with_header(headers::REASON, reason.to_owned())
        .with_header(headers::CONSUMER, consumer.to_owned())
        .with_header(headers::ATTEMPTS, attempts.to_string());
    if let Some(key) = key {
        message = message.with_header(headers::KEY, key.to_bytes());
    }
    if let Some(id) = &delivery.info().id {
        message = message.with_header(headers::ORIGIN, id.to_string());
    }
    message
}

async fn publish(target: &DeadLetterTarget, message: Message, origin: &str) -> Result<(), Error> {
    let mut failures = 0;
    let cause = loop {
        let attempt = failures + 1;
        let sent = tokio::time::timeout(
            target.timeout,
            target.publisher.publish_boxed(message.clone()),
        )
        .await;
        let cause = match sent {
            Ok(Ok(_receipt)) => return Ok(()),
            Ok(Err(e)) => {
                tracing::warn!(%origin, attempt, error = %e, "dead-letter publish failed");
                e
            }
            Err(_elapsed) => {
                tracing::warn!(%origin, attempt, timeout = ?target.timeout, "dead-letter publish timed out");
                format!("no answer within {:?}", target.timeout).into()
            }
        };
        failures = attempt;
        match target.retry.delay_after(failures) {
            Some(delay) => tokio::time::sleep(delay).await,
            None => break cause,
        }
    };
    Err(Error::DeadLetterFailed {
        message: origin.to_owned(),
        attempts: failures,
        cause,
    })
}

fn key_text(key: Option<&ShardKey>) -> String {
    key.map_or_else(|| "none (undecodable)".to_owned(), ToString::to_string)
}

/// A message's id for logs: its receipt, else its offset, else "without an id".
pub(crate) fn describe(delivery: &Delivery) -> String {
    let info = delivery.info();
    match (&info.id, info.partition, info.offset) {
        (Some(id), _, _) => id.to_string(),
        (None, Some(p), Some(o)) => format!("{p}@{o}"),
        (None, None, Some(o)) => format!("offset {o}"),
        _ => "without an id".to_owned(),
    }
}

/// The wait before try `attempt + 1` after try `attempt` failed.
pub(crate) fn failure_delay(config: &Config, attempt: u32) -> Duration {
    config.retry.backoff().delay(attempt.saturating_sub(1))
}
