//! AUTH and TLS to a real `redis-server`; passwords never show in errors.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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

fn redis_server(port: u16, extra: &[&str]) -> Server {
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
        .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start redis-server");
    let t = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "redis-server did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Server(child)
}

#[tokio::test]
async fn a_password_protected_redis_works_and_a_wrong_password_fails_without_showing_it() {
    let port = free_port();
    let _server = redis_server(
        port,
        &["--port", &port.to_string(), "--requirepass", "s3cret-pw"],
    );
    let jobs = Jobs::connect(Config::new(format!("redis://:s3cret-pw@127.0.0.1:{port}/")))
        .await
        .unwrap();
    let out = jobs
        .enqueue("auth", "q", &common::Record::default())
        .await
        .unwrap();
    assert!(matches!(out, Enqueued::Queued(_)));

    let err = Jobs::connect(Config::new(format!("redis://:wrong-pw@127.0.0.1:{port}/")))
        .await
        .unwrap_err();
    let text = format!("{err} {err:?}");
    assert!(!text.contains("wrong-pw"), "{text}");
    assert!(
        text.to_lowercase().contains("auth") || text.contains("WRONGPASS"),
        "{text}"
    );
}

#[cfg(feature = "tls")]
#[tokio::test]
async fn rediss_urls_connect_over_tls_to_a_server_of_a_private_ca() {
    let dir = std::env::temp_dir().join(format!("wharf-jobs-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sh = |script: &str| {
        let ok = Command::new("sh")
            .arg("-c")
            .arg(script)
            .current_dir(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success();
        assert!(ok, "openssl failed: {script}");
    };
    sh(
        "openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 1 -subj /CN=wharf-test-ca",
    );
    sh(
        "openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj /CN=127.0.0.1",
    );
    sh(
        "printf 'subjectAltName=IP:127.0.0.1\\n' > ext.cnf && openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt -days 1 -extfile ext.cnf",
    );
    let port = free_port();
    let d = |f: &str| dir.join(f).display().to_string();
    let _server = redis_server(
        port,
        &[
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--tls-cert-file",
            &d("server.crt"),
            "--tls-key-file",
            &d("server.key"),
            "--tls-ca-cert-file",
            &d("ca.crt"),
            "--tls-auth-clients",
            "no",
        ],
    );
    let ca = std::fs::read(dir.join("ca.crt")).unwrap();
    let config = Config::new(format!("rediss://127.0.0.1:{port}/")).tls_root_certificate(ca);
    let jobs = Jobs::connect(config).await.unwrap();
    let out = jobs
        .enqueue("tls", "q", &common::Record::default())
        .await
        .unwrap();
    assert!(matches!(out, Enqueued::Queued(_)));
    assert_eq!(jobs.counts("tls", "q").await.unwrap().queued, 1);

    // Without the CA the server's certificate is not trusted.
    let untrusted = Jobs::connect(Config::new(format!("rediss://127.0.0.1:{port}/"))).await;
    assert!(untrusted.is_err(), "connected to a server of an unknown CA");
}
