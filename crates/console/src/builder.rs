//! `Console::builder()`: what the service hands the console, and how it is secured.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;

use crate::security::{Auth, Security};
use crate::state::State;

/// The console: build one with [`Console::builder`], mount its [`Router`] where you like.
#[derive(Debug)]
pub struct Console;

impl Console {
    /// A builder with nothing to show yet; add what the service has.
    pub fn builder() -> ConsoleBuilder {
        ConsoleBuilder::default()
    }
}

/// Collects what the console shows and how it is secured; [`build`](Self::build) returns
/// the [`Router`].
#[derive(Default)]
pub struct ConsoleBuilder {
    #[cfg(feature = "jobs")]
    jobs: Option<wharf_job_partition::Jobs>,
    #[cfg(feature = "jobs")]
    sample_every: Option<Duration>,
    #[cfg(feature = "supervision")]
    supervisor: Option<wharf_core::supervisor::SupervisorHandle>,
    panels: Vec<crate::clients::Panel>,
    read_only: bool,
    auth: Vec<Auth>,
    title: Option<String>,
}

impl fmt::Debug for ConsoleBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the credentials.
        f.debug_struct("ConsoleBuilder")
            .field("read_only", &self.read_only)
            .field("auth_schemes", &self.auth.len())
            .finish_non_exhaustive()
    }
}

impl ConsoleBuilder {
    /// Shows the jobs pages over this handle (feature `jobs`).
    #[cfg(feature = "jobs")]
    #[cfg_attr(docsrs, doc(cfg(feature = "jobs")))]
    pub fn jobs(mut self, jobs: wharf_job_partition::Jobs) -> Self {
        self.jobs = Some(jobs);
        self
    }

    /// How often the console samples every queue's counters for its throughput charts
    /// (default 10 s; at least 1 s). The samples of the last hour are kept in memory
    /// (at most 3,600 samples of at most 1,000 queues), so the charts start empty when the
    /// process starts.
    #[cfg(feature = "jobs")]
    #[cfg_attr(docsrs, doc(cfg(feature = "jobs")))]
    pub fn sample_every(mut self, every: Duration) -> Self {
        self.sample_every = Some(every.max(Duration::from_secs(1)));
        self
    }

    /// Shows this supervision tree (feature `supervision`).
    #[cfg(feature = "supervision")]
    #[cfg_attr(docsrs, doc(cfg(feature = "supervision")))]
    pub fn supervisor(mut self, supervisor: wharf_core::supervisor::SupervisorHandle) -> Self {
        self.supervisor = Some(supervisor);
        self
    }

    /// Shows a webhooks emitter's buffer and failures (feature `webhooks`).
    #[cfg(feature = "webhooks")]
    #[cfg_attr(docsrs, doc(cfg(feature = "webhooks")))]
    pub fn emitter(
        mut self,
        name: impl Into<String>,
        emitter: wharf_webhooks_emitter::Emitter,
    ) -> Self {
        self.panels
            .push(crate::clients::emitter(name.into(), emitter));
        self
    }

    /// Shows a Pulsar producer's connection and ack window (feature `pulsar`).
    #[cfg(feature = "pulsar")]
    #[cfg_attr(docsrs, doc(cfg(feature = "pulsar")))]
    pub fn producer(
        mut self,
        name: impl Into<String>,
        producer: wharf_producer_ack::Producer,
    ) -> Self {
        self.panels
            .push(crate::clients::producer(name.into(), producer));
        self
    }

    /// Shows a sharded consumer's key counts, retries and dead letters (feature `sharded`).
    #[cfg(feature = "sharded")]
    #[cfg_attr(docsrs, doc(cfg(feature = "sharded")))]
    pub fn sharded_consumer<H: wharf_sharded_consumer::Handler>(
        mut self,
        consumer: wharf_sharded_consumer::ShardedConsumer<H>,
    ) -> Self {
        self.panels.push(crate::clients::sharded(consumer));
        self
    }

    /// Shows a Kafka wrapper's state and rebuilds (feature `kafka`); add its consumers with
    /// [`kafka_consumer`](Self::kafka_consumer) for their lag.
    #[cfg(feature = "kafka")]
    #[cfg_attr(docsrs, doc(cfg(feature = "kafka")))]
    pub fn kafka(
        mut self,
        name: impl Into<String>,
        wrapper: wharf_kafka_wrapper::KafkaWrapper,
    ) -> Self {
        self.panels
            .push(crate::clients::kafka(name.into(), wrapper));
        self
    }

    /// Shows a Kafka consumer's per-partition lag and handled count (feature `kafka`).
    #[cfg(feature = "kafka")]
    #[cfg_attr(docsrs, doc(cfg(feature = "kafka")))]
    pub fn kafka_consumer(mut self, consumer: wharf_kafka_wrapper::ConsumerHandle) -> Self {
        self.panels.push(crate::clients::kafka_consumer(consumer));
        self
    }

    /// Read-only mode: no action is rendered and every POST is refused with 403.
    pub fn read_only(mut self, read_only: bool) -> Self {
        self.read_only = read_only;
        self
    }

    /// Accepts requests carrying `Authorization: Bearer <token>` (scripts, proxies). With
    /// any credential set, a request without a matching one gets 401.
    pub fn bearer_token(mut self, token: impl Into<String>) -> Self {
        self.auth.push(Auth::Bearer(token.into()));
        self
    }

    /// Accepts HTTP basic authentication with this user and password (browsers ask for
    /// them). Serve the console over TLS (a reverse proxy) when it leaves the machine.
    pub fn basic_auth(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.auth.push(Auth::Basic {
            user: user.into(),
            password: password.into(),
        });
        self
    }

    /// The name in every page's header (default `wharf`).
    pub fn title(mut self, title: impl Into<String>) -> Self {
        self.title = Some(title.into());
        self
    }

    /// The console's router. Mount it at the root or under a path
    /// (`Router::new().nest("/console", router)`): links follow the mount point.
    ///
    /// With jobs, building inside a tokio runtime starts the throughput sampler; it stops
    /// when the router (every clone of it) is dropped.
    pub fn build(self) -> Router {
        let security = Security::new(self.auth, self.read_only);
        let state = Arc::new(State {
            #[cfg(feature = "jobs")]
            jobs: self.jobs.clone().map(|jobs| {
                crate::jobs::JobsState::new(
                    jobs,
                    self.sample_every.unwrap_or(Duration::from_secs(10)),
                )
            }),
            #[cfg(feature = "supervision")]
            supervisor: self.supervisor,
            panels: self.panels,
            security,
            title: self.title.unwrap_or_else(|| "wharf".to_owned()),
        });
        #[cfg(feature = "jobs")]
        if let Some(jobs) = &state.jobs {
            jobs.start_sampler(Arc::downgrade(&state));
        }
        crate::routes::router(state)
    }
}
