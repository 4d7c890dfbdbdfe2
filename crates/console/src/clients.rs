//! The service's clients (features `webhooks`, `pulsar`, `sharded`, `kafka`): each handed
//! to the builder becomes a panel that reads the client's own counters when the page is
//! rendered (no Redis, no broker call: these are in-process figures).

use axum::response::{IntoResponse, Response};
use maud::{Markup, html};

use crate::error::PageError;
use crate::layout::Ctx;

/// What a panel shows: label/value rows, and an optional table.
#[derive(Debug, Default)]
pub(crate) struct View {
    pub(crate) rows: Vec<(&'static str, String)>,
    pub(crate) table: Option<(Vec<&'static str>, Vec<Vec<String>>)>,
}

type Read = Box<dyn Fn() -> View + Send + Sync>;

/// One client of the service.
pub(crate) struct Panel {
    pub(crate) kind: &'static str,
    pub(crate) name: String,
    pub(crate) read: Read,
}

impl std::fmt::Debug for Panel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Panel")
            .field("kind", &self.kind)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Panel {
    // Every client feature makes panels; with none on (jobs pages only) nothing does.
    #[cfg_attr(
        not(any(
            feature = "webhooks",
            feature = "pulsar",
            feature = "sharded",
            feature = "kafka"
        )),
        allow(dead_code)
    )]
    pub(crate) fn new(
        kind: &'static str,
        name: impl Into<String>,
        read: impl Fn() -> View + Send + Sync + 'static,
    ) -> Self {
        Self {
            kind,
            name: name.into(),
            read: Box::new(read),
        }
    }
}

fn render(p: &Panel) -> Markup {
    let v = (p.read)();
    html! {
        section.panel {
            h2 { (p.kind) ": " (p.name) }
            table.kv {
                @for (k, val) in &v.rows { tr { th { (k) } td { (val) } } }
            }
            @if let Some((head, rows)) = &v.table {
                table {
                    thead { tr { @for h in head { th { (h) } } } }
                    tbody {
                        @for r in rows { tr { @for c in r { td { (c) } } } }
                        @if rows.is_empty() { tr { td colspan=(head.len()) .muted { "none" } } }
                    }
                }
            }
        }
    }
}

/// `/service/clients`: every panel.
pub(crate) async fn page(ctx: Ctx) -> Response {
    if ctx.state.panels.is_empty() {
        return ctx.answer(Err(PageError::NotFound(
            "this console was given no client of the service".into(),
        )));
    }
    ctx.page(
        "Clients",
        html! {
            h1 { "The service's clients" }
            p.muted { "Each client's own counters, read when this page was rendered." }
            @for p in &ctx.state.panels { (render(p)) }
        },
    )
    .into_response()
}

#[cfg(feature = "webhooks")]
pub(crate) fn emitter(name: String, e: wharf_webhooks_emitter::Emitter) -> Panel {
    Panel::new("Webhooks emitter", name, move || {
        let s = e.stats();
        View {
            rows: vec![
                ("Enabled", e.is_enabled().to_string()),
                ("Queue", e.queue_name().to_owned()),
                ("FIFO", e.is_fifo().to_string()),
                (
                    "Buffered (accepted, not yet sent or failed)",
                    s.buffered.to_string(),
                ),
                ("Emitted", s.emitted.to_string()),
                ("Sent (confirmed by SQS)", s.sent.to_string()),
                ("Retried", s.retried.to_string()),
                ("Failed", s.failed.to_string()),
                ("SendMessageBatch requests", s.requests.to_string()),
                ("Panics caught in callbacks", s.callback_panics.to_string()),
            ],
            table: None,
        }
    })
}

#[cfg(feature = "pulsar")]
pub(crate) fn producer(name: String, p: wharf_producer_ack::Producer) -> Panel {
    Panel::new("Pulsar producer", name, move || View {
        rows: vec![
            ("Topic", p.topic().to_owned()),
            ("Connected", p.is_connected().to_string()),
            (
                "Ack window (sent, receipt pending)",
                p.pending().to_string(),
            ),
            ("Reconnects", p.reconnects().to_string()),
        ],
        table: None,
    })
}

#[cfg(feature = "sharded")]
pub(crate) fn sharded<H: wharf_sharded_consumer::Handler>(
    c: wharf_sharded_consumer::ShardedConsumer<H>,
) -> Panel {
    let name = c.name().to_owned();
    Panel::new("Sharded consumer", name, move || {
        let s = c.stats();
        View {
            rows: vec![
                ("Running", c.is_running().to_string()),
                ("Active keys", s.active_keys.to_string()),
                ("In flight", s.in_flight.to_string()),
                ("Queued behind their key", s.queued.to_string()),
                ("Acked", s.acked.to_string()),
                ("Retries", s.retries.to_string()),
                ("Dead-lettered", s.dead_lettered.to_string()),
                ("Rejected keys", s.rejected_keys.to_string()),
                (
                    "Actors started / evicted / stopped / restarted",
                    format!(
                        "{} / {} / {} / {}",
                        s.started, s.evicted, s.stopped, s.restarts
                    ),
                ),
            ],
            table: None,
        }
    })
}

#[cfg(feature = "kafka")]
pub(crate) fn kafka(name: String, w: wharf_kafka_wrapper::KafkaWrapper) -> Panel {
    Panel::new("Kafka clients", name, move || {
        let state = match w.state() {
            wharf_kafka_wrapper::WrapperState::Running(g) => format!("running (generation {g})"),
            wharf_kafka_wrapper::WrapperState::Rebuilding(why) => format!("rebuilding: {why}"),
            wharf_kafka_wrapper::WrapperState::Stopped => "stopped".to_owned(),
            _ => "unknown".to_owned(),
        };
        View {
            rows: vec![("State", state), ("Rebuilds", w.rebuilds().to_string())],
            table: None,
        }
    })
}

#[cfg(feature = "kafka")]
pub(crate) fn kafka_consumer(c: wharf_kafka_wrapper::ConsumerHandle) -> Panel {
    let name = c.name().to_owned();
    Panel::new("Kafka consumer", name, move || {
        let lag = c.lag();
        View {
            rows: vec![
                ("Handled", c.handled().to_string()),
                ("Total lag", c.total_lag().to_string()),
                ("Assigned partitions", c.assignment().len().to_string()),
            ],
            table: Some((
                vec!["Topic", "Partition", "High watermark", "Position", "Lag"],
                lag.into_iter()
                    .map(|l| {
                        vec![
                            l.topic,
                            l.partition.to_string(),
                            l.high_watermark.to_string(),
                            l.position.to_string(),
                            l.lag.to_string(),
                        ]
                    })
                    .collect(),
            )),
        }
    })
}
