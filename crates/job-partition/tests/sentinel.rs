//! Redis Sentinel: the master is found through a sentinel, and after the master is killed
//! and the sentinel fails over to the replica, calls go on against the new master.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::eventually;
use wharf_job_partition::{Config, Enqueued, Jobs};

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn redis_server(port: u16, args: &[String]) -> Server {
    let local = format!(
        "{}/../../.wharf/bin/redis-server",
        env!("CARGO_MANIFEST_DIR")
    );
    let bin = if Path::new(&local).exists() {
        local
    } else {
        "redis-server".to_owned()
    };
    let child = Command::new(bin)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start redis-server");
    let t = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "redis-server did not start on {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Server(child)
}

fn plain(port: u16, extra: &[&str]) -> Server {
    let mut args: Vec<String> = [
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    redis_server(port, &args)
}

#[tokio::test]
async fn the_master_is_found_through_sentinel_and_found_again_after_a_failover() {
    let (m, r, s) = (free_port(), free_port(), free_port());
    let dir = std::env::temp_dir().join(format!("wharf-jobs-sentinel-{}-{s}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let d = dir.display().to_string();
    let mut master = plain(m, &["--dir", &d, "--repl-diskless-sync-delay", "0"]);
    let _replica = plain(
        r,
        &["--dir", &d, "--replicaof", "127.0.0.1", &m.to_string()],
    );
    let conf = dir.join("sentinel.conf");
    std::fs::write(
        &conf,
        format!(
            "port {s}\nbind 127.0.0.1\ndir {}\nsentinel monitor wharf 127.0.0.1 {m} 1\n\
             sentinel down-after-milliseconds wharf 1000\nsentinel failover-timeout wharf 5000\n",
            dir.display()
        ),
    )
    .unwrap();
    let _sentinel = redis_server(s, &[conf.display().to_string(), "--sentinel".into()]);

    let config = Config::sentinel([format!("redis://127.0.0.1:{s}/")], "wharf")
        .response_timeout(Duration::from_millis(500))
        .connect_timeout(Duration::from_millis(500));
    let jobs = Jobs::connect(config).await.unwrap();
    let first = jobs
        .enqueue("sent", "q", &common::Record::default())
        .await
        .unwrap();
    assert!(matches!(first, Enqueued::Queued(_)));

    // Let the replica catch up and the sentinel learn about it, then kill the master.
    assert!(
        eventually(
            "the sentinel to see the replica",
            Duration::from_secs(20),
            || async {
                let out = Command::new("redis-cli")
                    .args(["-p", &s.to_string(), "sentinel", "replicas", "wharf"])
                    .output()
                    .unwrap();
                String::from_utf8_lossy(&out.stdout).contains(&r.to_string())
            }
        )
        .await
        .is_ok(),
        "the sentinel never saw the replica"
    );
    // Replication is asynchronous: wait until the replica really holds what the master has
    // (a `WAIT` from another connection proves nothing, it has no writes of its own to wait for).
    let dbsize = |port: u16| {
        let out = Command::new("redis-cli")
            .args(["-p", &port.to_string(), "dbsize"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse::<u64>()
            .unwrap_or(0)
    };
    assert!(
        eventually("the replica to sync", Duration::from_secs(20), || async {
            let on_master = dbsize(m);
            on_master > 0 && dbsize(r) == on_master
        })
        .await
        .is_ok(),
        "the replica did not sync"
    );
    master.0.kill().unwrap();
    master.0.wait().unwrap();

    let recovered = eventually(
        "an enqueue to reach the new master",
        Duration::from_secs(40),
        || async {
            jobs.enqueue("sent", "q", &common::Record::default())
                .await
                .is_ok()
        },
    )
    .await
    .is_ok();
    assert!(
        recovered,
        "calls did not reach the new master after the failover"
    );
    let c = jobs.counts("sent", "q").await.unwrap();
    // (a retried enqueue may have been applied before its answer was lost: at least 2)
    assert!(c.queued >= 2, "{c:?}");
    assert!(
        jobs.job("sent", first.id()).await.unwrap().is_some(),
        "the job enqueued before the failover is gone"
    );
}
