//! Test support: a real Redis (wharf-testkit), seeded jobs in every state, a running
//! supervision tree, and requests to the console's router without a socket.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use serde::{Deserialize, Serialize};
use tower::ServiceExt;
use wharf_core::Backoff;
use wharf_core::supervisor::{ChildSpec, Supervisor, SupervisorHandle};
use wharf_job_partition::{Config, Job, JobContext, JobError, Jobs, testing};

pub use wharf_testkit::eventually;

pub const LEASE: Duration = Duration::from_secs(60);

/// A job that does nothing (the tests move jobs between states by hand).
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct Email {
    pub to: String,
    pub key: Option<String>,
}

impl Job for Email {
    const NAME: &'static str = "email";

    async fn perform(self, _ctx: JobContext) -> Result<(), JobError> {
        Ok(())
    }

    fn execution_key(&self) -> Option<String> {
        self.key.clone()
    }
}

pub fn email(to: &str) -> Email {
    Email {
        to: to.to_owned(),
        key: None,
    }
}

pub fn redis_url() -> String {
    wharf_testkit::redis()
        .expect("start redis-server (run scripts/install)")
        .address()
        .to_owned()
}

pub async fn jobs() -> Jobs {
    Jobs::connect(Config::new(redis_url()).response_timeout(Duration::from_secs(2)))
        .await
        .unwrap()
}

pub fn partition(tag: &str) -> String {
    format!("{tag}-{:08x}", rand::random::<u32>())
}

/// Ids of the jobs a seeded partition holds, one per state.
#[derive(Debug, Clone)]
pub struct Seeded {
    pub partition: String,
    pub queued: String,
    pub scheduled: String,
    pub running: String,
    pub parked: String,
    pub dead: String,
    pub completed: String,
}

/// A partition with a queue `mail` holding a job in every state: queued, scheduled,
/// running (worker `w-console`), parked behind the running one's execution key, dead,
/// completed.
pub async fn seed(jobs: &Jobs, tag: &str) -> Seeded {
    let p = partition(tag);
    let id = |e: wharf_job_partition::Enqueued| e.id().to_owned();
    let keyed = |to: &str| Email {
        to: to.to_owned(),
        key: Some("account:42".into()),
    };
    // Claimed in enqueue order: running (holds the key), then completed and dead.
    let running = id(jobs
        .enqueue(&p, "mail", &keyed("running@example.com"))
        .await
        .unwrap());
    let completed = id(jobs
        .enqueue(&p, "mail", &email("completed@example.com"))
        .await
        .unwrap());
    let dead = id(jobs
        .enqueue(&p, "mail", &email("dead@example.com"))
        .await
        .unwrap());
    let claimed = testing::claim(jobs, &p, "mail", 3, LEASE, "w-console")
        .await
        .unwrap();
    assert_eq!(claimed.len(), 3);
    assert!(
        testing::complete(jobs, &p, &claimed[1].0, &claimed[1].1)
            .await
            .unwrap()
    );
    assert_eq!(
        testing::fail(jobs, &p, &claimed[2].0, &claimed[2].1)
            .await
            .unwrap(),
        2
    );
    let parked = id(jobs
        .enqueue(&p, "mail", &keyed("parked@example.com"))
        .await
        .unwrap());
    // A claim parks it behind the running holder of its key (and takes nothing else).
    assert!(
        testing::claim(jobs, &p, "mail", 1, LEASE, "w-console")
            .await
            .unwrap()
            .is_empty()
    );
    let queued = id(jobs
        .enqueue(&p, "mail", &email("queued@example.com"))
        .await
        .unwrap());
    let scheduled = id(jobs
        .enqueue_in(
            &p,
            "mail",
            &email("scheduled@example.com"),
            Duration::from_secs(3600),
        )
        .await
        .unwrap());
    Seeded {
        partition: p,
        queued,
        scheduled,
        running,
        parked,
        dead,
        completed,
    }
}

/// A running tree: root with `api` (runs), `flaky` (fails its first two incarnations) and a
/// nested supervisor `brokers` with `kafka`.
pub async fn tree() -> SupervisorHandle {
    let forever = |id: &str| {
        ChildSpec::from_task(id.to_owned(), |ctx| async move {
            ctx.cancelled().await;
            Ok::<(), std::io::Error>(())
        })
    };
    let flaky = ChildSpec::from_task("flaky", |ctx| async move {
        if ctx.incarnation() < 2 {
            return Err(std::io::Error::other("connection refused by upstream"));
        }
        ctx.cancelled().await;
        Ok(())
    });
    let (brokers, _) = Supervisor::builder("brokers")
        .child(forever("kafka"))
        .into_child();
    let sup = Supervisor::builder("root")
        .backoff(Backoff::constant(Duration::from_millis(20)))
        .intensity(10, Duration::from_secs(60))
        .child(forever("api"))
        .child(flaky)
        .child(brokers)
        .start()
        .await
        .unwrap();
    let s = sup.clone();
    eventually("flaky restarted twice", Duration::from_secs(10), || {
        let s = s.clone();
        async move {
            s.snapshot()
                .await
                .ok()
                .and_then(|t| t.find(&["flaky"]).map(|c| c.restarts >= 2))
                .unwrap_or(false)
        }
    })
    .await
    .unwrap();
    sup
}

/// An answer: status, Location header, body.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub location: Option<String>,
    pub body: String,
}

pub async fn send(app: &axum::Router, req: Request<Body>) -> Answer {
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let location = resp
        .headers()
        .get(header::LOCATION)
        .map(|v| v.to_str().unwrap().to_owned());
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        location,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

pub async fn get(app: &axum::Router, path: &str) -> Answer {
    send(app, Request::get(path).body(Body::empty()).unwrap()).await
}

pub async fn post(app: &axum::Router, path: &str, form: &str) -> Answer {
    send(
        app,
        Request::post(path)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(form.to_owned()))
            .unwrap(),
    )
    .await
}

/// The CSRF token a page's form carries.
pub fn csrf(body: &str) -> String {
    let at = body
        .find("name=\"csrf\" value=\"")
        .expect("a form with a CSRF token");
    let rest = &body[at + "name=\"csrf\" value=\"".len()..];
    rest[..rest.find('"').unwrap()].to_owned()
}
