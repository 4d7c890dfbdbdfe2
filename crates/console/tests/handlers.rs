//! Every page and action of the console, through its router, over a real Redis and a
//! running supervision tree.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use common::*;
use wharf_console::Console;
use wharf_job_partition::{JobState, Jobs};

async fn console(jobs: &Jobs) -> axum::Router {
    Console::builder().jobs(jobs.clone()).build()
}

// ---- pages ---------------------------------------------------------------------------

#[tokio::test]
async fn the_overview_shows_queue_counts_and_the_supervision_tree() {
    let jobs = jobs().await;
    let s = seed(&jobs, "ov").await;
    let app = Console::builder()
        .jobs(jobs.clone())
        .supervisor(tree().await)
        .build();

    let a = get(&app, "/").await;

    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert!(a.body.contains(&s.partition), "{}", a.body);
    assert!(a.body.contains("Throughput, last hour"));
    assert!(a.body.contains("root supervisor"));
}

#[tokio::test]
async fn the_jobs_and_partition_pages_list_the_queue_with_its_counts() {
    let jobs = jobs().await;
    let s = seed(&jobs, "part").await;
    let app = console(&jobs).await;

    let index = get(&app, "/jobs").await;
    let part = get(&app, &format!("/p/{}", s.partition)).await;

    assert_eq!(
        (index.status, part.status),
        (StatusCode::OK, StatusCode::OK)
    );
    assert!(index.body.contains(&format!("/p/{}/q/mail", s.partition)));
    // One each of queued, scheduled, parked, running, dead; one completed in total.
    let row = "<td class=\"num\">1</td><td class=\"num\">1</td><td class=\"num\">1</td><td class=\"num\">1</td><td class=\"num\">1</td><td class=\"num\">1</td>";
    assert!(part.body.contains(row), "{}", part.body);
}

#[tokio::test]
async fn the_queue_page_shows_counts_settings_actions_chart_and_latency() {
    let jobs = jobs().await;
    let s = seed(&jobs, "queue").await;
    let app = console(&jobs).await;

    let a = get(&app, &format!("/p/{}/q/mail", s.partition)).await;

    assert_eq!(a.status, StatusCode::OK);
    for text in [
        "Queue mail",
        "Retry all dead",
        "Delete all dead",
        "Pause",
        "<svg",
        "Latency (newest 1 finished jobs)",
    ] {
        assert!(a.body.contains(text), "no {text:?} in {}", a.body);
    }
}

#[tokio::test]
async fn each_list_shows_the_job_in_that_state() {
    let jobs = jobs().await;
    let s = seed(&jobs, "lists").await;
    let app = console(&jobs).await;
    let cases = [
        ("queued", &s.queued),
        ("scheduled", &s.scheduled),
        ("parked", &s.parked),
        ("running", &s.running),
        ("finished", &s.completed),
        ("dead", &s.dead),
    ];
    for (list, id) in cases {
        let a = get(&app, &format!("/p/{}/q/mail/list/{list}", s.partition)).await;
        assert_eq!(a.status, StatusCode::OK, "{list}: {}", a.body);
        assert!(a.body.contains(id.as_str()), "{list} does not show {id}");
        assert!(a.body.contains("1–1 of 1"), "{list}: {}", a.body);
    }
}

#[tokio::test]
async fn a_list_pages_with_offset_and_limit() {
    let jobs = jobs().await;
    let p = partition("paging");
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            jobs.enqueue(&p, "q", &email(&format!("u{i}@x")))
                .await
                .unwrap()
                .id()
                .to_owned(),
        );
    }
    let app = console(&jobs).await;

    let a = get(&app, &format!("/p/{p}/q/q/list/queued?offset=2&limit=2")).await;

    assert!(a.body.contains("3–4 of 5"), "{}", a.body);
    assert!(a.body.contains(&ids[2]) && a.body.contains(&ids[3]));
    assert!(!a.body.contains(&ids[1]) && !a.body.contains(&ids[4]));
    assert!(a.body.contains("offset=0&amp;limit=2") && a.body.contains("offset=4&amp;limit=2"));
}

#[tokio::test]
async fn a_list_searches_arguments_and_execution_keys() {
    let jobs = jobs().await;
    let s = seed(&jobs, "search").await;
    let app = console(&jobs).await;

    let by_text = get(
        &app,
        &format!("/p/{}/q/mail/list/queued?q=queued%40example", s.partition),
    )
    .await;
    let by_key = get(
        &app,
        &format!("/p/{}/q/mail/list/running?xkey=account%3A42", s.partition),
    )
    .await;
    let none = get(
        &app,
        &format!("/p/{}/q/mail/list/queued?q=nobody", s.partition),
    )
    .await;

    assert!(
        by_text.body.contains(&s.queued) && by_text.body.contains("1 found among 1"),
        "{}",
        by_text.body
    );
    assert!(by_key.body.contains(&s.running), "{}", by_key.body);
    assert!(none.body.contains("0 found among 1") && none.body.contains("No job here."));
}

#[tokio::test]
async fn a_job_page_tells_its_story() {
    let jobs = jobs().await;
    let s = seed(&jobs, "job").await;
    let app = console(&jobs).await;

    let dead = get(&app, &format!("/p/{}/j/{}", s.partition, s.dead)).await;
    let running = get(&app, &format!("/p/{}/j/{}", s.partition, s.running)).await;

    assert_eq!(dead.status, StatusCode::OK);
    for text in [
        "dead@example.com",
        "test failure",
        "Timeline",
        "Enqueued",
        "Finished",
        "Retry",
        "Delete",
    ] {
        assert!(dead.body.contains(text), "no {text:?} in {}", dead.body);
    }
    for text in ["w-console", "Lease expires", "account:42", "Cancel"] {
        assert!(
            running.body.contains(text),
            "no {text:?} in {}",
            running.body
        );
    }
    assert!(
        !running.body.contains("/do/delete"),
        "a running job offers no delete"
    );
}

#[tokio::test]
async fn a_job_page_shows_a_flows_children_and_a_childs_parent() {
    let jobs = jobs().await;
    let (p, other) = (partition("flowpage"), partition("flowpage2"));
    let flow = wharf_job_partition::Flow::new(&email("parent@example.com"))
        .child(&p, "mail", &email("a@example.com"))
        .child(&other, "mail", &email("b@example.com"));
    let f = jobs.enqueue_flow(&p, "digest", flow).await.unwrap();
    let app = console(&jobs).await;

    let parent = get(&app, &format!("/p/{p}/j/{}", f.parent)).await;
    assert_eq!(parent.status, StatusCode::OK);
    for text in [
        "waiting",
        "Children (0/2 settled, 0 failed)",
        f.children[0].id.as_str(),
        f.children[1].id.as_str(),
        other.as_str(),
        "pending",
    ] {
        assert!(parent.body.contains(text), "no {text:?} in {}", parent.body);
    }
    let child = get(&app, &format!("/p/{other}/j/{}", f.children[1].id)).await;
    assert_eq!(child.status, StatusCode::OK);
    assert!(child.body.contains("Flow parent"), "{}", child.body);
    assert!(
        child.body.contains(&format!("/p/{p}/j/{}", f.parent)),
        "no link to the parent in {}",
        child.body
    );
}

#[tokio::test]
async fn the_workers_page_shows_each_worker_and_its_jobs() {
    let jobs = jobs().await;
    let s = seed(&jobs, "workers").await;
    let app = console(&jobs).await;

    let a = get(&app, &format!("/p/{}/workers", s.partition)).await;

    assert_eq!(a.status, StatusCode::OK);
    assert!(
        a.body.contains("w-console") && a.body.contains(&s.running) && a.body.contains("alive"),
        "{}",
        a.body
    );
}

#[tokio::test]
async fn the_keys_page_shows_the_holder_and_the_waiters() {
    let jobs = jobs().await;
    let s = seed(&jobs, "keys").await;
    let app = console(&jobs).await;

    let all = get(&app, &format!("/p/{}/keys", s.partition)).await;
    let one = get(&app, &format!("/p/{}/keys?key=account%3A42", s.partition)).await;

    for a in [&all, &one] {
        assert_eq!(a.status, StatusCode::OK);
        assert!(
            a.body.contains("account:42")
                && a.body.contains(&s.running)
                && a.body.contains(&s.parked),
            "{}",
            a.body
        );
    }
}

#[tokio::test]
async fn the_supervision_page_shows_states_restarts_and_last_exits() {
    let jobs = jobs().await;
    let app = Console::builder()
        .jobs(jobs)
        .supervisor(tree().await)
        .build();

    let a = get(&app, "/service/tree").await;

    assert_eq!(a.status, StatusCode::OK);
    for text in [
        "api",
        "flaky",
        "brokers",
        "kafka",
        "Running",
        "restarts 2",
        "connection refused by upstream",
    ] {
        assert!(a.body.contains(text), "no {text:?} in {}", a.body);
    }
}

// ---- validation ----------------------------------------------------------------------

#[tokio::test]
async fn unknown_partitions_queues_jobs_and_pages_are_404_pages() {
    let jobs = jobs().await;
    let s = seed(&jobs, "404").await;
    let app = console(&jobs).await;
    let p = &s.partition;
    for path in [
        "/p/no-such-partition".to_owned(),
        format!("/p/{p}/q/nope"),
        format!("/p/{p}/q/nope/list/queued"),
        format!("/p/{p}/q/mail/list/sideways"),
        format!("/p/{p}/j/no-such-job"),
        format!("/p/{p}/j/no-such-job/do/cancel"),
        format!("/p/{p}/q/mail/do/explode"),
        "/nowhere".to_owned(),
    ] {
        let a = get(&app, &path).await;
        assert_eq!(a.status, StatusCode::NOT_FOUND, "{path}: {}", a.body);
        assert!(
            a.body.contains("Not found") && a.body.contains("Back to the overview"),
            "{path}"
        );
    }
}

#[tokio::test]
async fn bad_parameters_are_400_pages_that_say_what_is_wrong() {
    let jobs = jobs().await;
    let s = seed(&jobs, "400").await;
    let app = console(&jobs).await;
    let p = &s.partition;

    let offset = get(&app, &format!("/p/{p}/q/mail/list/queued?offset=minus")).await;
    let limit = get(&app, &format!("/p/{p}/q/mail/list/queued?limit=100000")).await;
    let name = get(&app, "/p/bad%7Bname%7D").await;

    assert_eq!(offset.status, StatusCode::BAD_REQUEST);
    assert!(
        offset
            .body
            .contains("parameter `offset` must be a whole number"),
        "{}",
        offset.body
    );
    assert_eq!(limit.status, StatusCode::BAD_REQUEST);
    assert_eq!(name.status, StatusCode::BAD_REQUEST, "{}", name.body);
    assert!(name.body.contains("is not valid"));
}

// ---- actions -------------------------------------------------------------------------

/// Opens an action's confirmation page, then submits its form.
async fn confirm_and_post(app: &axum::Router, path: &str, extra: &str) -> Answer {
    let page = get(app, path).await;
    assert_eq!(page.status, StatusCode::OK, "{path}: {}", page.body);
    assert!(page.body.contains("method=\"post\""), "{}", page.body);
    post(app, path, &format!("csrf={}{extra}", csrf(&page.body))).await
}

#[tokio::test]
async fn cancel_removes_a_waiting_job_and_flags_a_running_one() {
    let jobs = jobs().await;
    let s = seed(&jobs, "cancel").await;
    let app = console(&jobs).await;
    let p = &s.partition;

    let a = confirm_and_post(&app, &format!("/p/{p}/j/{}/do/cancel", s.queued), "").await;
    let b = confirm_and_post(&app, &format!("/p/{p}/j/{}/do/cancel", s.running), "").await;

    assert_eq!(a.status, StatusCode::SEE_OTHER);
    assert_eq!(
        a.location.unwrap(),
        format!("/p/{p}/j/{}?done=cancel", s.queued)
    );
    assert_eq!(
        jobs.job(p, &s.queued).await.unwrap().unwrap().state,
        JobState::Cancelled
    );
    assert_eq!(b.status, StatusCode::SEE_OTHER);
    assert!(
        jobs.job(p, &s.running)
            .await
            .unwrap()
            .unwrap()
            .cancel_requested
    );
    let shown = get(&app, &format!("/p/{p}/j/{}?done=cancel", s.queued)).await;
    assert!(shown.body.contains("Cancel asked"), "{}", shown.body);
}

#[tokio::test]
async fn retry_puts_a_dead_job_back_in_its_queue() {
    let jobs = jobs().await;
    let s = seed(&jobs, "retry").await;
    let app = console(&jobs).await;

    let a = confirm_and_post(
        &app,
        &format!("/p/{}/j/{}/do/retry", s.partition, s.dead),
        "",
    )
    .await;

    assert_eq!(a.status, StatusCode::SEE_OTHER);
    assert_eq!(
        jobs.job(&s.partition, &s.dead)
            .await
            .unwrap()
            .unwrap()
            .state,
        JobState::Queued
    );
}

#[tokio::test]
async fn delete_removes_a_job_and_returns_to_its_queue() {
    let jobs = jobs().await;
    let s = seed(&jobs, "delete").await;
    let app = console(&jobs).await;

    let a = confirm_and_post(
        &app,
        &format!("/p/{}/j/{}/do/delete", s.partition, s.completed),
        "",
    )
    .await;

    assert_eq!(
        a.location.unwrap(),
        format!("/p/{}/q/mail?done=deleted", s.partition)
    );
    assert!(
        jobs.job(&s.partition, &s.completed)
            .await
            .unwrap()
            .is_none()
    );
    let gone = get(&app, &format!("/p/{}/j/{}", s.partition, s.completed)).await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn run_now_moves_a_scheduled_job_to_the_ready_list() {
    let jobs = jobs().await;
    let s = seed(&jobs, "runnow").await;
    let app = console(&jobs).await;

    let a = confirm_and_post(
        &app,
        &format!("/p/{}/j/{}/do/run-now", s.partition, s.scheduled),
        "",
    )
    .await;

    assert_eq!(a.status, StatusCode::SEE_OTHER);
    assert_eq!(
        jobs.job(&s.partition, &s.scheduled)
            .await
            .unwrap()
            .unwrap()
            .state,
        JobState::Queued
    );
}

#[tokio::test]
async fn an_action_that_does_not_fit_the_jobs_state_is_a_400() {
    let jobs = jobs().await;
    let s = seed(&jobs, "misfit").await;
    let app = console(&jobs).await;
    let page = get(&app, &format!("/p/{}/j/{}", s.partition, s.queued)).await;

    let a = post(
        &app,
        &format!("/p/{}/j/{}/do/retry", s.partition, s.queued),
        &format!("csrf={}", csrf_of(&app).await),
    )
    .await;

    assert!(!page.body.contains("/do/retry"));
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(
        a.body.contains("only a dead job can be retried"),
        "{}",
        a.body
    );
}

async fn csrf_of(app: &axum::Router) -> String {
    let p = jobs().await;
    let s = seed(&p, "csrf").await;
    csrf(
        &get(app, &format!("/p/{}/q/mail/do/pause", s.partition))
            .await
            .body,
    )
}

#[tokio::test]
async fn pause_resume_and_limit_change_the_queue_settings() {
    let jobs = jobs().await;
    let s = seed(&jobs, "settings").await;
    let app = console(&jobs).await;
    let q = format!("/p/{}/q/mail", s.partition);

    confirm_and_post(&app, &format!("{q}/do/pause"), "").await;
    let paused = jobs.counts(&s.partition, "mail").await.unwrap().paused;
    let limit = confirm_and_post(&app, &format!("{q}/do/limit"), "&limit=3").await;
    let after_limit = jobs.counts(&s.partition, "mail").await.unwrap().limit;
    confirm_and_post(&app, &format!("{q}/do/resume"), "").await;
    let unlimit = confirm_and_post(&app, &format!("{q}/do/limit"), "&limit=").await;
    let c = jobs.counts(&s.partition, "mail").await.unwrap();

    assert!(paused);
    assert_eq!(limit.location.unwrap(), format!("{q}?done=limit"));
    assert_eq!(after_limit, Some(3));
    assert_eq!(unlimit.status, StatusCode::SEE_OTHER);
    assert_eq!((c.paused, c.limit), (false, None));
}

#[tokio::test]
async fn a_limit_that_is_not_a_number_is_a_400() {
    let jobs = jobs().await;
    let s = seed(&jobs, "badlimit").await;
    let app = console(&jobs).await;

    let a = confirm_and_post(
        &app,
        &format!("/p/{}/q/mail/do/limit", s.partition),
        "&limit=lots",
    )
    .await;

    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(a.body.contains("the limit must be empty"), "{}", a.body);
    assert_eq!(jobs.counts(&s.partition, "mail").await.unwrap().limit, None);
}

#[tokio::test]
async fn retry_all_and_delete_all_dead_empty_the_dead_set() {
    let jobs = jobs().await;
    let s = seed(&jobs, "bulk").await;
    let t = seed(&jobs, "bulk2").await;
    let app = console(&jobs).await;

    let r = confirm_and_post(
        &app,
        &format!("/p/{}/q/mail/do/retry-dead", s.partition),
        "",
    )
    .await;
    let d = confirm_and_post(
        &app,
        &format!("/p/{}/q/mail/do/delete-dead", t.partition),
        "",
    )
    .await;

    assert_eq!(
        r.location.unwrap(),
        format!("/p/{}/q/mail?done=retry-dead&n=1&dup=0", s.partition)
    );
    assert_eq!(
        d.location.unwrap(),
        format!("/p/{}/q/mail?done=delete-dead&n=1", t.partition)
    );
    assert_eq!(jobs.counts(&s.partition, "mail").await.unwrap().dead, 0);
    assert_eq!(jobs.counts(&t.partition, "mail").await.unwrap().dead, 0);
    assert!(jobs.job(&t.partition, &t.dead).await.unwrap().is_none());
    let shown = get(
        &app,
        &format!("/p/{}/q/mail?done=retry-dead&n=1&dup=0", s.partition),
    )
    .await;
    assert!(shown.body.contains("1 dead jobs are back in the queue"));
}

// ---- security ------------------------------------------------------------------------

#[tokio::test]
async fn a_post_without_the_csrf_token_is_refused_and_changes_nothing() {
    let jobs = jobs().await;
    let s = seed(&jobs, "nocsrf").await;
    let app = console(&jobs).await;

    let none = post(&app, &format!("/p/{}/q/mail/do/pause", s.partition), "").await;
    let wrong = post(
        &app,
        &format!("/p/{}/q/mail/do/pause", s.partition),
        "csrf=0000",
    )
    .await;

    assert_eq!(
        (none.status, wrong.status),
        (StatusCode::FORBIDDEN, StatusCode::FORBIDDEN)
    );
    assert!(wrong.body.contains("CSRF token"));
    assert!(!jobs.counts(&s.partition, "mail").await.unwrap().paused);
}

#[tokio::test]
async fn read_only_renders_no_action_and_refuses_every_post() {
    let jobs = jobs().await;
    let s = seed(&jobs, "ro").await;
    let rw = console(&jobs).await;
    let token = csrf(
        &get(&rw, &format!("/p/{}/q/mail/do/pause", s.partition))
            .await
            .body,
    );
    let app = Console::builder()
        .jobs(jobs.clone())
        .read_only(true)
        .build();
    let p = &s.partition;

    let queue = get(&app, &format!("/p/{p}/q/mail")).await;
    let job = get(&app, &format!("/p/{p}/j/{}", s.dead)).await;
    let confirm = get(&app, &format!("/p/{p}/q/mail/do/pause")).await;
    let act = post(
        &app,
        &format!("/p/{p}/q/mail/do/pause"),
        &format!("csrf={token}"),
    )
    .await;

    assert!(queue.body.contains("read-only"));
    assert!(
        !queue.body.contains("/do/") && !job.body.contains("/do/"),
        "{}",
        job.body
    );
    assert_eq!(confirm.status, StatusCode::FORBIDDEN);
    assert_eq!(act.status, StatusCode::FORBIDDEN);
    assert!(!jobs.counts(p, "mail").await.unwrap().paused);
}

#[tokio::test]
async fn with_credentials_set_a_request_needs_the_bearer_token_or_basic_auth() {
    let jobs = jobs().await;
    let app = Console::builder()
        .jobs(jobs)
        .bearer_token("t0ken")
        .basic_auth("ops", "pa55")
        .build();
    let with = |v: &str| {
        Request::get("/")
            .header(header::AUTHORIZATION, v)
            .body(Body::empty())
            .unwrap()
    };

    let anonymous = send(&app, Request::get("/").body(Body::empty()).unwrap()).await;
    let bearer = send(&app, with("Bearer t0ken")).await;
    let basic = send(&app, with("Basic b3BzOnBhNTU=")).await;
    let wrong = send(&app, with("Basic b3BzOndyb25n")).await;

    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        (bearer.status, basic.status),
        (StatusCode::OK, StatusCode::OK)
    );
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn no_page_shows_the_redis_password() {
    let server =
        wharf_testkit::RedisServer::start_with_args(&["--requirepass", "s3cret-pw"]).unwrap();
    let url = server.url().replace("redis://", "redis://:s3cret-pw@");
    let jobs = Jobs::connect(wharf_job_partition::Config::new(url))
        .await
        .unwrap();
    let s = seed(&jobs, "secret").await;
    let app = Console::builder().jobs(jobs.clone()).build();
    let p = &s.partition;

    for path in [
        "/".to_owned(),
        "/jobs".to_owned(),
        format!("/p/{p}"),
        format!("/p/{p}/q/mail"),
        format!("/p/{p}/q/mail/list/dead"),
        format!("/p/{p}/j/{}", s.dead),
        format!("/p/{p}/workers"),
        format!("/p/{p}/keys"),
    ] {
        let a = get(&app, &path).await;
        assert_eq!(a.status, StatusCode::OK, "{path}");
        assert!(!a.body.contains("s3cret"), "{path} shows the password");
    }
}

#[tokio::test]
async fn mounted_under_a_path_every_link_follows_the_mount_point() {
    let jobs = jobs().await;
    let s = seed(&jobs, "mount").await;
    let app = axum::Router::new().nest("/ops/console", console(&jobs).await);

    let home = get(&app, "/ops/console").await;
    let queue = get(&app, &format!("/ops/console/p/{}/q/mail", s.partition)).await;

    assert_eq!(home.status, StatusCode::OK, "{}", home.body);
    assert!(
        home.body
            .contains("href=\"/ops/console/assets/console.css\"")
    );
    assert!(
        queue.body.contains(&format!(
            "href=\"/ops/console/p/{}/q/mail/list/dead\"",
            s.partition
        )),
        "{}",
        queue.body
    );
}

#[tokio::test]
async fn every_answer_carries_a_content_security_policy_without_scripts() {
    let jobs = jobs().await;
    let app = console(&jobs).await;

    let resp = tower::ServiceExt::oneshot(app, Request::get("/").body(Body::empty()).unwrap())
        .await
        .unwrap();

    let csp = resp
        .headers()
        .get(header::CONTENT_SECURITY_POLICY)
        .unwrap()
        .to_str()
        .unwrap();
    assert!(
        csp.starts_with("default-src 'none'") && !csp.contains("script-src"),
        "{csp}"
    );
}

#[tokio::test]
async fn a_job_page_shows_its_priority_progress_and_result() {
    #[derive(serde::Serialize, serde::Deserialize, Debug)]
    struct Report;
    impl wharf_job_partition::Job for Report {
        const NAME: &'static str = "report";
        async fn perform(
            self,
            ctx: wharf_job_partition::JobContext,
        ) -> Result<(), wharf_job_partition::JobError> {
            ctx.set_progress(&serde_json::json!({ "step": 3, "of": 4 }))
                .await?;
            ctx.set_result(&serde_json::json!({ "invoices": 17 }))?;
            Ok(())
        }
        fn priority(&self) -> u8 {
            2
        }
    }
    let jobs = jobs().await;
    let p = partition("progress");
    let w = wharf_job_partition::Worker::builder(
        jobs.clone(),
        wharf_job_partition::Registry::new().register::<Report>(),
    )
    .queue(&p, "reports", 1)
    .build()
    .unwrap()
    .start();
    let id = jobs.enqueue(&p, "reports", &Report).await.unwrap();
    jobs.wait_for(&p, id.id(), std::time::Duration::from_secs(20))
        .await
        .unwrap();
    w.shutdown().await;
    let app = console(&jobs).await;

    let page = get(&app, &format!("/p/{p}/j/{}", id.id())).await;

    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    for text in [
        "Priority",
        "Progress",
        "&quot;step&quot;: 3",
        "Result",
        "&quot;invoices&quot;: 17",
    ] {
        assert!(page.body.contains(text), "no {text:?} in {}", page.body);
    }
}

// ---- schedules and rate limits -------------------------------------------------------

/// A partition with two schedules: `every-minute` (interval) and `morning` (cron in a time
/// zone), both enqueueing `Email` into `mail`.
async fn with_schedules(jobs: &Jobs, tag: &str) -> String {
    use std::time::Duration;
    use wharf_job_partition::Schedule;
    let p = partition(tag);
    let every = Schedule::every(Duration::from_secs(60)).unwrap();
    let cron = Schedule::cron_in("0 30 9 * * *", "Europe/Berlin").unwrap();
    jobs.schedule(&p, "mail", "every-minute", &every, &email("a@x"))
        .await
        .unwrap();
    jobs.schedule(&p, "mail", "morning", &cron, &email("b@x"))
        .await
        .unwrap();
    p
}

#[tokio::test]
async fn the_schedules_page_lists_each_schedule_and_the_partition_links_to_it() {
    let jobs = jobs().await;
    let p = with_schedules(&jobs, "sched").await;
    let app = console(&jobs).await;

    let part = get(&app, &format!("/p/{p}")).await;
    let a = get(&app, &format!("/p/{p}/schedules")).await;

    assert!(
        part.body.contains(&format!("/p/{p}/schedules")),
        "{}",
        part.body
    );
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    for text in [
        "every-minute",
        "morning",
        "Europe/Berlin",
        "0 30 9 * * *",
        &format!("/p/{p}/q/mail"),
        "in ",
        &format!("/p/{p}/schedules/morning/do/pause"),
        &format!("/p/{p}/schedules/morning/do/remove"),
    ] {
        assert!(a.body.contains(text), "no {text:?} in {}", a.body);
    }
}

#[tokio::test]
async fn pause_resume_and_remove_change_a_schedule() {
    let jobs = jobs().await;
    let p = with_schedules(&jobs, "schedact").await;
    let app = console(&jobs).await;
    let paused = |jobs: Jobs, p: String| async move {
        jobs.schedules(&p)
            .await
            .unwrap()
            .into_iter()
            .find(|s| s.name == "morning")
            .map(|s| s.paused)
    };
    let s = format!("/p/{p}/schedules/morning/do");

    let pause = confirm_and_post(&app, &format!("{s}/pause"), "").await;
    let after_pause = paused(jobs.clone(), p.clone()).await;
    let page = get(&app, pause.location.as_deref().unwrap()).await;
    let resume = confirm_and_post(&app, &format!("{s}/resume"), "").await;
    let after_resume = paused(jobs.clone(), p.clone()).await;
    let remove = confirm_and_post(&app, &format!("{s}/remove"), "").await;
    let after_remove = paused(jobs.clone(), p.clone()).await;

    assert_eq!(
        pause.location.unwrap(),
        format!("/p/{p}/schedules?done=pause")
    );
    assert_eq!(after_pause, Some(true));
    assert!(
        page.body.contains("The schedule is paused"),
        "{}",
        page.body
    );
    assert!(page.body.contains(&format!("{s}/resume")), "{}", page.body);
    assert_eq!(resume.status, StatusCode::SEE_OTHER);
    assert_eq!(after_resume, Some(false));
    assert_eq!(remove.status, StatusCode::SEE_OTHER);
    assert_eq!(after_remove, None);
    assert_eq!(jobs.schedules(&p).await.unwrap().len(), 1);
}

#[tokio::test]
async fn unknown_schedules_and_schedule_actions_are_404_pages() {
    let jobs = jobs().await;
    let p = with_schedules(&jobs, "sched404").await;
    let app = console(&jobs).await;
    let token = csrf(
        &get(&app, &format!("/p/{p}/schedules/morning/do/pause"))
            .await
            .body,
    );

    let confirm = get(&app, &format!("/p/{p}/schedules/nope/do/pause")).await;
    let act = post(
        &app,
        &format!("/p/{p}/schedules/nope/do/pause"),
        &format!("csrf={token}"),
    )
    .await;
    let verb = get(&app, &format!("/p/{p}/schedules/morning/do/explode")).await;
    let part = get(&app, "/p/no-such-partition/schedules").await;

    assert_eq!(confirm.status, StatusCode::NOT_FOUND, "{}", confirm.body);
    assert_eq!(act.status, StatusCode::NOT_FOUND, "{}", act.body);
    assert!(verb.body.contains("no schedule action"), "{}", verb.body);
    assert_eq!(part.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_queue_page_shows_the_rate_limit_and_the_rate_limited_list() {
    use std::time::Duration;
    let jobs = jobs().await;
    let s = seed(&jobs, "rateshow").await;
    let limit = wharf_job_partition::RateLimit::new(10, Duration::from_secs(60)).unwrap();
    jobs.set_rate_limit(&s.partition, "mail", Some(limit))
        .await
        .unwrap();
    let app = console(&jobs).await;
    let q = format!("/p/{}/q/mail", s.partition);

    let a = get(&app, &q).await;
    let list = get(&app, &format!("{q}/list/ratelimited")).await;
    let part = get(&app, &format!("/p/{}", s.partition)).await;

    for text in [
        "at most 10 starts per 1m, for each rate group",
        "rate-limited",
        "Set rate limit",
        &format!("{q}/list/ratelimited"),
    ] {
        assert!(a.body.contains(text), "no {text:?} in {}", a.body);
    }
    assert_eq!(list.status, StatusCode::OK, "{}", list.body);
    assert!(list.body.contains("ratelimited (0)"), "{}", list.body);
    assert!(list.body.contains("none"), "{}", list.body);
    assert!(part.body.contains("rate 10 starts per 1m"), "{}", part.body);
}

#[tokio::test]
async fn set_rate_limit_sets_and_removes_it() {
    use std::time::Duration;
    let jobs = jobs().await;
    let s = seed(&jobs, "rateset").await;
    let app = console(&jobs).await;
    let q = format!("/p/{}/q/mail", s.partition);

    let set = confirm_and_post(&app, &format!("{q}/do/rate"), "&max=5&window=2s").await;
    let after_set = jobs.counts(&s.partition, "mail").await.unwrap().rate_limit;
    let form = get(&app, &format!("{q}/do/rate")).await;
    let shown = get(&app, set.location.as_deref().unwrap()).await;
    let unset = confirm_and_post(&app, &format!("{q}/do/rate"), "&max=&window=").await;
    let after_unset = jobs.counts(&s.partition, "mail").await.unwrap().rate_limit;

    assert_eq!(set.location.clone().unwrap(), format!("{q}?done=rate"));
    let l = after_set.unwrap();
    assert_eq!((l.max(), l.window()), (5, Duration::from_secs(2)));
    assert!(form.body.contains("value=\"5\"") && form.body.contains("value=\"2s\""));
    assert!(
        shown.body.contains("rate limit is changed"),
        "{}",
        shown.body
    );
    assert_eq!(unset.status, StatusCode::SEE_OTHER);
    assert_eq!(after_unset, None);
}

#[tokio::test]
async fn a_bad_rate_limit_is_a_400_that_says_what_is_wrong() {
    let jobs = jobs().await;
    let s = seed(&jobs, "ratebad").await;
    let app = console(&jobs).await;
    let path = format!("/p/{}/q/mail/do/rate", s.partition);

    let max = confirm_and_post(&app, &path, "&max=lots&window=1s").await;
    let window = confirm_and_post(&app, &path, "&max=5&window=1week").await;
    let zero = confirm_and_post(&app, &path, "&max=0&window=1s").await;
    let long = confirm_and_post(&app, &path, "&max=5&window=30d").await;

    for (a, text) in [
        (&max, "starts per window must be a whole number"),
        (&window, "the window must be a whole number with a unit"),
        (&zero, "allow 1 to 100000"),
        (&long, "a window of"),
    ] {
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.body);
        assert!(a.body.contains(text), "no {text:?} in {}", a.body);
    }
    assert_eq!(
        jobs.counts(&s.partition, "mail").await.unwrap().rate_limit,
        None
    );
}

#[tokio::test]
async fn read_only_shows_schedules_without_actions_and_refuses_their_posts() {
    let jobs = jobs().await;
    let p = with_schedules(&jobs, "schedro").await;
    let rw = console(&jobs).await;
    let token = csrf(
        &get(&rw, &format!("/p/{p}/schedules/morning/do/pause"))
            .await
            .body,
    );
    let app = Console::builder()
        .jobs(jobs.clone())
        .read_only(true)
        .build();

    let page = get(&app, &format!("/p/{p}/schedules")).await;
    let confirm = get(&app, &format!("/p/{p}/schedules/morning/do/pause")).await;
    let act = post(
        &app,
        &format!("/p/{p}/schedules/morning/do/pause"),
        &format!("csrf={token}"),
    )
    .await;
    let rate = post(
        &app,
        &format!("/p/{p}/q/mail/do/rate"),
        &format!("csrf={token}&max=1&window=1s"),
    )
    .await;

    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("morning") && !page.body.contains("/do/"));
    assert_eq!(confirm.status, StatusCode::FORBIDDEN, "{}", confirm.body);
    assert_eq!(
        (act.status, rate.status),
        (StatusCode::FORBIDDEN, StatusCode::FORBIDDEN)
    );
    assert!(jobs.schedules(&p).await.unwrap().iter().all(|s| !s.paused));
}
