//! The console in a real headless Chromium (Debian's `chromium` and `chromium-driver`,
//! through chromedriver and fantoccini): over a seeded Redis, a running worker and a
//! supervision tree, it navigates every page, runs every action through its confirmation
//! page, checks what the page shows afterwards, and saves screenshots under
//! `target/console-screenshots/` for review.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::*;
use fantoccini::{Client, ClientBuilder, Locator};
use wharf_console::Console;
use wharf_job_partition::{CancellationToken, JobState, Jobs, Registry, Worker};
use wharf_testkit::Chromedriver;

fn shots_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let dir = target.join("console-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn shot(c: &Client, name: &str) {
    let png = c.screenshot().await.unwrap();
    std::fs::write(shots_dir().join(format!("{name}.png")), png).unwrap();
}

async fn text(c: &Client) -> String {
    // A page loading after a form's POST can replace its body between the find and the read
    // (a stale element): read it again, a bounded number of times.
    let mut tries = 0;
    loop {
        let body = c.find(Locator::Css("body")).await.unwrap();
        match body.text().await {
            Ok(t) => return t,
            Err(e) if e.is_stale_element_reference() && tries < 20 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("reading the page's text failed: {e}"),
        }
    }
}

/// Whether the page's text holds `needle`, ignoring case (labels are styled uppercase).
fn has(text: &str, needle: &str) -> bool {
    text.to_lowercase().contains(&needle.to_lowercase())
}

/// Waits until the browser left `before` and the new page has a body.
async fn navigated(c: &Client, before: String) {
    eventually(
        "the browser loaded the next page",
        Duration::from_secs(15),
        || {
            let c = c.clone();
            let before = before.clone();
            async move {
                let Ok(now) = c.current_url().await else {
                    return false;
                };
                now.as_str() != before && c.find(Locator::Css("body main")).await.is_ok()
            }
        },
    )
    .await
    .unwrap();
}

async fn click_link(c: &Client, text: &str) {
    let before = c.current_url().await.unwrap().to_string();
    c.find(Locator::LinkText(text))
        .await
        .unwrap_or_else(|e| panic!("no link {text:?}: {e}"))
        .click()
        .await
        .unwrap();
    navigated(c, before).await;
}

async fn submit(c: &Client) {
    let before = c.current_url().await.unwrap().to_string();
    c.find(Locator::Css("form[method=post] button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    navigated(c, before).await;
}

async fn browser(driver: &Chromedriver) -> Client {
    ClientBuilder::rustls()
        .unwrap()
        .capabilities(driver.headless_capabilities(1280, 1000))
        .connect(&driver.url())
        .await
        .unwrap_or_else(|e| panic!("chromedriver at {} refused a session: {e}", driver.url()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_browses_every_page_and_runs_every_action_in_chromium() {
    let driver = Chromedriver::start().expect("chromedriver (run scripts/install)");
    let jobs = jobs().await;
    let s = seed(&jobs, "browser").await;
    let p = s.partition.clone();
    let console = Console::builder()
        .jobs(jobs.clone())
        .supervisor(tree().await)
        .sample_every(Duration::from_secs(1))
        .title("acme")
        .build();
    let served = wharf_console::serve(console, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let base = format!("http://{}", served.local_addr());

    // A real worker completes a batch on a new queue, so the throughput chart has data;
    // it starts once the console has its first sample (the baseline).
    let c = browser(&driver).await;
    eventually(
        "the console took its first sample",
        Duration::from_secs(10),
        || {
            let c = c.clone();
            let url = format!("{base}/jobs");
            async move {
                c.goto(&url).await.unwrap();
                let t = text(&c).await;
                has(&t, "samples held") && !has(&t, " 0 samples held")
            }
        },
    )
    .await
    .unwrap();
    let stop = CancellationToken::new();
    for i in 0..40 {
        jobs.enqueue(&p, "reports", &email(&format!("r{i}@example.com")))
            .await
            .unwrap();
    }
    let worker = Worker::builder(jobs.clone(), Registry::new().register::<Email>())
        .queue(&p, "reports", 4)
        .build()
        .unwrap();
    let run = tokio::spawn(worker.run(stop.clone()));
    let j = jobs.clone();
    let pp = p.clone();
    eventually(
        "the worker completed the batch",
        Duration::from_secs(20),
        || {
            let j = j.clone();
            let pp = pp.clone();
            async move {
                j.counts(&pp, "reports")
                    .await
                    .map(|c| c.completed_total == 40)
                    .unwrap_or(false)
            }
        },
    )
    .await
    .unwrap();
    // Wait for a sample after the batch: the chart then counts it.
    eventually("the chart shows the batch", Duration::from_secs(10), || {
        let c = c.clone();
        let url = format!("{base}/p/{p}/q/reports");
        async move {
            c.goto(&url).await.unwrap();
            has(&text(&c).await, "completed: 40")
        }
    })
    .await
    .unwrap();
    shot(&c, "queue-throughput").await;

    // Overview, then the jobs index through the navigation.
    c.goto(&base).await.unwrap();
    let t = text(&c).await;
    assert!(
        has(&t, "Overview") && has(&t, "root supervisor") && has(&t, &p),
        "{t}"
    );
    shot(&c, "overview").await;
    click_link(&c, "Jobs").await;
    assert!(has(&text(&c).await, "Queues"));
    shot(&c, "jobs").await;

    // The partition, then the queue.
    c.goto(&format!("{base}/p/{p}")).await.unwrap();
    shot(&c, "partition").await;
    click_link(&c, "mail").await;
    let t = text(&c).await;
    assert!(has(&t, "Queue mail") && has(&t, "Retry all dead"), "{t}");
    shot(&c, "queue").await;

    // Each list through its tab.
    for (tab, id, name) in [
        ("queued (1)", &s.queued, "list-queued"),
        ("scheduled (1)", &s.scheduled, "list-scheduled"),
        ("parked (1)", &s.parked, "list-parked"),
        ("running (1)", &s.running, "list-running"),
        ("finished (1)", &s.completed, "list-finished"),
        ("dead (1)", &s.dead, "list-dead"),
    ] {
        c.goto(&format!("{base}/p/{p}/q/mail")).await.unwrap();
        click_link(&c, tab).await;
        assert!(
            has(&text(&c).await, id.as_str()),
            "{tab} does not show {id}"
        );
        shot(&c, name).await;
    }

    // A search in arguments.
    c.goto(&format!("{base}/p/{p}/q/mail/list/queued"))
        .await
        .unwrap();
    c.find(Locator::Css("input[name=q]"))
        .await
        .unwrap()
        .send_keys("queued@example")
        .await
        .unwrap();
    let before = c.current_url().await.unwrap().to_string();
    c.find(Locator::Css("form.filters button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    navigated(&c, before).await;
    let t = text(&c).await;
    assert!(has(&t, "1 found among 1") && has(&t, &s.queued), "{t}");
    shot(&c, "search").await;

    // The dead job's page, then retry it through its confirmation.
    c.goto(&format!("{base}/p/{p}/q/mail/list/dead"))
        .await
        .unwrap();
    click_link(&c, &s.dead).await;
    let t = text(&c).await;
    assert!(has(&t, "test failure") && has(&t, "Timeline"), "{t}");
    shot(&c, "job-dead").await;
    click_link(&c, "Retry").await;
    shot(&c, "confirm-retry").await;
    submit(&c).await;
    let t = text(&c).await;
    assert!(has(&t, "back in its queue with fresh attempts"), "{t}");
    assert_eq!(
        jobs.job(&p, &s.dead).await.unwrap().unwrap().state,
        JobState::Queued
    );

    // The running job's page: worker and lease.
    c.goto(&format!("{base}/p/{p}/j/{}", s.running))
        .await
        .unwrap();
    let t = text(&c).await;
    assert!(has(&t, "w-console") && has(&t, "Lease expires"), "{t}");
    shot(&c, "job-running").await;

    // Run the scheduled job now.
    c.goto(&format!("{base}/p/{p}/j/{}", s.scheduled))
        .await
        .unwrap();
    click_link(&c, "Run now").await;
    submit(&c).await;
    assert!(has(&text(&c).await, "moved to the end of its queue"));
    assert_eq!(
        jobs.job(&p, &s.scheduled).await.unwrap().unwrap().state,
        JobState::Queued
    );

    // Cancel the queued job.
    c.goto(&format!("{base}/p/{p}/j/{}", s.queued))
        .await
        .unwrap();
    click_link(&c, "Cancel").await;
    submit(&c).await;
    let t = text(&c).await;
    assert!(has(&t, "Cancel asked") && has(&t, "cancelled"), "{t}");

    // Delete the completed job: back on the queue page.
    c.goto(&format!("{base}/p/{p}/j/{}", s.completed))
        .await
        .unwrap();
    click_link(&c, "Delete").await;
    submit(&c).await;
    assert!(has(&text(&c).await, "The job was deleted."));
    assert!(jobs.job(&p, &s.completed).await.unwrap().is_none());

    // Pause, set a limit, resume.
    c.goto(&format!("{base}/p/{p}/q/mail")).await.unwrap();
    click_link(&c, "Pause").await;
    shot(&c, "confirm-pause").await;
    submit(&c).await;
    assert!(has(&text(&c).await, "The queue is paused"));
    shot(&c, "queue-paused").await;
    click_link(&c, "Set limit").await;
    let limit = c.find(Locator::Css("input[name=limit]")).await.unwrap();
    limit.clear().await.unwrap();
    limit.send_keys("4").await.unwrap();
    shot(&c, "confirm-limit").await;
    submit(&c).await;
    assert!(has(&text(&c).await, "limit is set"));
    assert_eq!(jobs.counts(&p, "mail").await.unwrap().limit, Some(4));
    click_link(&c, "Resume").await;
    submit(&c).await;
    assert!(!jobs.counts(&p, "mail").await.unwrap().paused);

    // Retry all dead, then delete all dead, on another seeded partition.
    let t2 = seed(&jobs, "browser-bulk").await;
    let t3 = seed(&jobs, "browser-bulk").await;
    c.goto(&format!("{base}/p/{}/q/mail", t2.partition))
        .await
        .unwrap();
    click_link(&c, "Retry all dead").await;
    submit(&c).await;
    assert!(has(&text(&c).await, "1 dead jobs are back in the queue"));
    c.goto(&format!("{base}/p/{}/q/mail", t3.partition))
        .await
        .unwrap();
    click_link(&c, "Delete all dead").await;
    shot(&c, "confirm-delete-dead").await;
    submit(&c).await;
    assert!(has(&text(&c).await, "1 dead jobs were deleted"));
    assert_eq!(jobs.counts(&t3.partition, "mail").await.unwrap().dead, 0);

    // Workers, execution keys, the supervision tree, a 404.
    c.goto(&format!("{base}/p/{p}/workers")).await.unwrap();
    assert!(has(&text(&c).await, "w-console"));
    shot(&c, "workers").await;
    c.goto(&format!("{base}/p/{p}/keys")).await.unwrap();
    let t = text(&c).await;
    assert!(has(&t, "account:42") && has(&t, &s.parked), "{t}");
    shot(&c, "keys").await;
    c.goto(&base).await.unwrap();
    click_link(&c, "Supervision").await;
    let t = text(&c).await;
    assert!(
        has(&t, "flaky") && has(&t, "connection refused by upstream"),
        "{t}"
    );
    shot(&c, "supervision").await;
    // A flow: the waiting parent lists its children (one in another partition); a child's
    // page links back to its parent.
    let other = partition("browser-flow");
    let flow = wharf_job_partition::Flow::new(&email("digest@example.com"))
        .child(&p, "mail", &email("a@example.com"))
        .child(&other, "mail", &email("b@example.com"));
    let f = jobs.enqueue_flow(&p, "digest", flow).await.unwrap();
    c.goto(&format!("{base}/p/{p}/j/{}", f.parent))
        .await
        .unwrap();
    let t = text(&c).await;
    assert!(
        has(&t, "waiting") && has(&t, "Children (0/2 settled") && has(&t, &other),
        "{t}"
    );
    shot(&c, "job-flow-parent").await;
    click_link(&c, &f.children[1].id).await;
    let t = text(&c).await;
    assert!(has(&t, "Flow parent"), "{t}");
    shot(&c, "job-flow-child").await;
    click_link(&c, &f.parent).await;
    assert!(has(&text(&c).await, "Children (0/2 settled"));

    c.goto(&format!("{base}/p/{p}/j/no-such-job"))
        .await
        .unwrap();
    assert!(has(&text(&c).await, "Not found"));
    shot(&c, "not-found").await;

    c.close().await.unwrap();
    stop.cancel();
    run.await.unwrap().unwrap();
    served.shutdown().await.unwrap();
}

async fn click_css(c: &Client, css: &str) {
    let before = c.current_url().await.unwrap().to_string();
    c.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("nothing matches {css:?}: {e}"))
        .click()
        .await
        .unwrap();
    navigated(c, before).await;
}

async fn fill(c: &Client, name: &str, value: &str) {
    let input = c
        .find(Locator::Css(&format!("input[name={name}]")))
        .await
        .unwrap();
    input.clear().await.unwrap();
    input.send_keys(value).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_pauses_a_schedule_and_sets_a_rate_limit_in_chromium() {
    use wharf_job_partition::{RateLimit, Schedule, Scheduler};
    let driver = Chromedriver::start().expect("chromedriver (run scripts/install)");
    let jobs = jobs().await;
    let p = partition("browser-sched");
    let every = Schedule::every(Duration::from_secs(1)).unwrap();
    let cron = Schedule::cron_in("0 30 9 * * MON-FRI", "Europe/Berlin").unwrap();
    jobs.schedule(
        &p,
        "ticks",
        "every-second",
        &every,
        &email("tick@example.com"),
    )
    .await
    .unwrap();
    jobs.schedule(
        &p,
        "mail",
        "weekday-morning",
        &cron,
        &email("am@example.com"),
    )
    .await
    .unwrap();
    let stop = CancellationToken::new();
    let scheduler = Scheduler::new(jobs.clone(), [p.clone()]).unwrap();
    let sched = tokio::spawn(scheduler.run(stop.clone()));
    let fired = |jobs: Jobs, p: String| async move {
        jobs.schedules(&p)
            .await
            .map(|s| s.iter().map(|s| s.fired).sum::<u64>())
            .unwrap_or(0)
    };
    eventually("the scheduler fired twice", Duration::from_secs(15), || {
        let f = fired(jobs.clone(), p.clone());
        async move { f.await >= 2 }
    })
    .await
    .unwrap();
    let console = Console::builder().jobs(jobs.clone()).title("acme").build();
    let served = wharf_console::serve(console, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let base = format!("http://{}", served.local_addr());
    let c = browser(&driver).await;

    // The schedules page, from the partition's page.
    c.goto(&format!("{base}/p/{p}")).await.unwrap();
    click_link(&c, "Schedules").await;
    let t = text(&c).await;
    assert!(
        has(&t, "every-second") && has(&t, "weekday-morning") && has(&t, "Europe/Berlin"),
        "{t}"
    );
    shot(&c, "schedules").await;

    // Pause the weekday schedule through its confirmation, then resume it.
    click_css(&c, "a[href$='/schedules/weekday-morning/do/pause']").await;
    shot(&c, "confirm-schedule-pause").await;
    submit(&c).await;
    assert!(has(&text(&c).await, "The schedule is paused"));
    let paused = |jobs: Jobs, p: String| async move {
        jobs.schedules(&p)
            .await
            .unwrap()
            .into_iter()
            .find(|s| s.name == "weekday-morning")
            .map(|s| s.paused)
    };
    assert_eq!(paused(jobs.clone(), p.clone()).await, Some(true));
    shot(&c, "schedules-paused").await;
    click_css(&c, "a[href$='/schedules/weekday-morning/do/resume']").await;
    submit(&c).await;
    assert!(has(&text(&c).await, "The schedule is resumed"));
    assert_eq!(paused(jobs.clone(), p.clone()).await, Some(false));

    // A rate limit of 1 per hour on a queue, then a worker: one job starts, the others wait.
    for i in 0..3 {
        jobs.enqueue(&p, "api", &email(&format!("api{i}@example.com")))
            .await
            .unwrap();
    }
    c.goto(&format!("{base}/p/{p}/q/api")).await.unwrap();
    click_link(&c, "Set rate limit").await;
    // The browser checks the number itself; the window is the server's to refuse.
    fill(&c, "max", "5").await;
    fill(&c, "window", "1 week").await;
    // The answer comes at the same address: wait for its text.
    c.find(Locator::Css("form[method=post] button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    eventually("the 400 page shows", Duration::from_secs(15), || {
        let c = c.clone();
        async move { has(&text(&c).await, "Bad request") }
    })
    .await
    .unwrap();
    let t = text(&c).await;
    assert!(
        has(&t, "the window must be a whole number with a unit"),
        "{t}"
    );
    shot(&c, "rate-bad-request").await;
    c.goto(&format!("{base}/p/{p}/q/api/do/rate"))
        .await
        .unwrap();
    fill(&c, "max", "1").await;
    fill(&c, "window", "1h").await;
    shot(&c, "confirm-rate").await;
    submit(&c).await;
    let t = text(&c).await;
    assert!(
        has(&t, "rate limit is changed") && has(&t, "1 start per 1h"),
        "{t}"
    );
    assert_eq!(
        jobs.counts(&p, "api").await.unwrap().rate_limit,
        Some(RateLimit::new(1, Duration::from_secs(3600)).unwrap())
    );
    let worker = Worker::builder(jobs.clone(), Registry::new().register::<Email>())
        .queue(&p, "api", 4)
        .build()
        .unwrap();
    let run = tokio::spawn(worker.run(stop.clone()));
    let (j, pp) = (jobs.clone(), p.clone());
    eventually(
        "one job ran and the others are rate-limited",
        Duration::from_secs(20),
        || {
            let (j, pp) = (j.clone(), pp.clone());
            async move {
                j.counts(&pp, "api")
                    .await
                    .map(|c| c.completed_total == 1 && c.rate_limited >= 1)
                    .unwrap_or(false)
            }
        },
    )
    .await
    .unwrap();
    c.goto(&format!("{base}/p/{p}/q/api")).await.unwrap();
    let t = text(&c).await;
    assert!(has(&t, "rate-limited") && has(&t, "1 start per 1h"), "{t}");
    shot(&c, "queue-rate-limited").await;
    click_css(&c, "a[href$='/list/ratelimited']").await;
    let t = text(&c).await;
    assert!(
        has(&t, "api1@example.com") || has(&t, "api2@example.com"),
        "{t}"
    );
    shot(&c, "list-ratelimited").await;

    c.close().await.unwrap();
    stop.cancel();
    run.await.unwrap().unwrap();
    sched.await.unwrap();
    served.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_console_shows_no_action_in_chromium() {
    let driver = Chromedriver::start().expect("chromedriver (run scripts/install)");
    let jobs = jobs().await;
    let s = seed(&jobs, "browser-ro").await;
    let p = s.partition.clone();
    jobs.schedule(
        &p,
        "mail",
        "hourly",
        &wharf_job_partition::Schedule::every(Duration::from_secs(3600)).unwrap(),
        &email("h@example.com"),
    )
    .await
    .unwrap();
    let console = Console::builder()
        .jobs(jobs.clone())
        .read_only(true)
        .build();
    let served = wharf_console::serve(console, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let base = format!("http://{}", served.local_addr());
    let c = browser(&driver).await;

    for (path, name) in [
        (format!("/p/{p}/q/mail"), "read-only-queue"),
        (format!("/p/{p}/schedules"), "read-only-schedules"),
        (format!("/p/{p}/j/{}", s.dead), "read-only-job"),
    ] {
        c.goto(&format!("{base}{path}")).await.unwrap();
        let t = text(&c).await;
        assert!(has(&t, "read-only"), "{path}: {t}");
        let actions = c
            .find_all(Locator::Css("a[href*='/do/'], form[method=post]"))
            .await
            .unwrap();
        assert!(actions.is_empty(), "{path} shows {} actions", actions.len());
        shot(&c, name).await;
    }
    c.goto(&format!("{base}/p/{p}/schedules/hourly/do/pause"))
        .await
        .unwrap();
    let t = text(&c).await;
    assert!(has(&t, "Not allowed") && has(&t, "read-only"), "{t}");
    // A form made by hand (the page offers none) is refused too.
    let before = c.current_url().await.unwrap().to_string();
    c.execute(
        "const f = document.createElement('form'); f.method = 'post'; f.action = arguments[0]; \
         const i = document.createElement('input'); i.name = 'csrf'; i.value = 'forged'; \
         f.appendChild(i); document.body.appendChild(f); f.submit();",
        vec![serde_json::json!(format!("{base}/p/{p}/q/mail/do/pause"))],
    )
    .await
    .unwrap();
    navigated(&c, before).await;
    let t = text(&c).await;
    assert!(has(&t, "Not allowed") && has(&t, "read-only"), "{t}");
    shot(&c, "read-only-post-refused").await;
    assert!(jobs.schedules(&p).await.unwrap().iter().all(|s| !s.paused));
    assert!(!jobs.counts(&p, "mail").await.unwrap().paused);

    c.close().await.unwrap();
    served.shutdown().await.unwrap();
}
