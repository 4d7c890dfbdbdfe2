//! A Redis Sentinel set: a master, a replica, and sentinels that monitor them.

use std::ffi::OsString;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use crate::compat::RedisServerKind;
use crate::error::{Error, Result};
use crate::probe::Probe;
use crate::process::{START_TIMEOUT, Spec};
use crate::redis::{RedisServer, log_tails, spec, wait_for};
use crate::resp;

/// How long the master may not answer before a sentinel deems it down.
const DOWN_AFTER_MS: u64 = 1_000;
/// How long a failover may take before the sentinels try again.
const FAILOVER_TIMEOUT_MS: u64 = 5_000;
const CONFIG_FILE: &str = "sentinel.conf";

/// A Redis Sentinel set owned by one test: a master, one replica of it, and `n` sentinels
/// that monitor it under the name [`MASTER_NAME`](Self::MASTER_NAME), with a quorum of a
/// majority of them. A sentinel deems the master down after 1 s without an answer, then
/// promotes the replica. Every process is a [`RedisServer`] (private port and directory, no
/// persistence, logs, killed with the test binary).
///
/// Failovers, two ways: crash the master (`set.current_master()?.kill()`) and let the
/// sentinels notice, or ask for one ([`failover`](Self::failover)).
///
/// ```no_run
/// # fn main() -> wharf_testkit::Result<()> {
/// use std::time::Duration;
///
/// let set = wharf_testkit::RedisSentinel::start(1)?; // replica in sync, sentinels ready
/// let sentinels = set.sentinel_urls(); // for a Sentinel client, with RedisSentinel::MASTER_NAME
/// let before = set.master_addr()?;
/// let after = set.failover(Duration::from_secs(30))?; // the replica is the master now
/// assert_ne!(before, after);
/// # let _ = sentinels;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct RedisSentinel {
    master: RedisServer,
    replica: RedisServer,
    sentinels: Vec<RedisServer>,
}

impl RedisSentinel {
    /// The name the sentinels monitor the master under.
    pub const MASTER_NAME: &'static str = "wharf";

    /// Starts the master, then the replica, waits until the replica is linked, starts
    /// `sentinels` sentinels (at least 1) and returns once each of them knows the replica
    /// and the other sentinels and can reach its quorum (up to 30 s for each wait).
    pub fn start(sentinels: usize) -> Result<Self> {
        if sentinels == 0 {
            return Err(Error::Unsupported(
                "a Sentinel set needs at least one sentinel".into(),
            ));
        }
        let master = RedisServer::start_spec(server_spec(&[])?, None)?;
        let of_master = ["--replicaof", "127.0.0.1", &master.port().to_string()].map(String::from);
        let replica = RedisServer::start_spec(server_spec(&of_master)?, None)?;
        let pair = [("master", &master), ("replica", &replica)];
        wait_for(START_TIMEOUT, || linked(&replica, &master)).map_err(|last_check| {
            Error::SetNotReady {
                what: "a Redis replica".into(),
                timeout: START_TIMEOUT,
                last_check,
                logs: log_tails(pair),
            }
        })?;
        let quorum = sentinels / 2 + 1;
        let sentinels = (0..sentinels)
            .map(|_| RedisServer::start_spec(sentinel_spec(master.port(), quorum)?, None))
            .collect::<Result<Vec<_>>>()?;
        let set = RedisSentinel {
            master,
            replica,
            sentinels,
        };
        wait_for(START_TIMEOUT, || set.check_sentinels()).map_err(|last_check| {
            Error::SetNotReady {
                what: format!("a Sentinel set of {} sentinels", set.sentinels.len()),
                timeout: START_TIMEOUT,
                last_check,
                logs: log_tails(set.processes()),
            }
        })?;
        Ok(set)
    }

    /// The name the sentinels monitor the master under: [`MASTER_NAME`](Self::MASTER_NAME).
    pub fn master_name(&self) -> &'static str {
        Self::MASTER_NAME
    }

    /// `redis://127.0.0.1:PORT/` of every sentinel: what a Sentinel client starts from.
    pub fn sentinel_urls(&self) -> Vec<String> {
        self.sentinels.iter().map(RedisServer::url).collect()
    }

    /// The sentinels.
    pub fn sentinels(&self) -> &[RedisServer] {
        &self.sentinels
    }

    /// The two data servers: the one started as master, then the one started as its replica
    /// (after a failover, their roles are swapped).
    pub fn servers(&self) -> [&RedisServer; 2] {
        [&self.master, &self.replica]
    }

    /// The master's address as the first sentinel that answers names it.
    pub fn master_addr(&self) -> Result<SocketAddr> {
        let mut last = String::from("no sentinel");
        for sentinel in &self.sentinels {
            match master_addr_of(sentinel) {
                Ok(addr) => return Ok(addr),
                Err(reason) => last = reason,
            }
        }
        Err(Error::Query {
            what: format!("the address of master `{}`", Self::MASTER_NAME),
            reason: last,
        })
    }

    /// The server the sentinels name as master now.
    pub fn current_master(&self) -> Result<&RedisServer> {
        let addr = self.master_addr()?;
        self.server_at(addr).ok_or_else(|| Error::Query {
            what: format!("the server of master `{}`", Self::MASTER_NAME),
            reason: format!("the sentinels name {addr}, which is none of this set's servers"),
        })
    }

    /// Whether the server that is not the master now has everything the master had written
    /// when this was called: linked to it, at or past its replication offset. Wait on it
    /// before a failover that must not lose writes (replication is asynchronous).
    pub fn replica_caught_up(&self) -> Result<bool> {
        let master = self.current_master()?;
        let [a, b] = self.servers();
        let replica = if std::ptr::eq(master, a) { b } else { a };
        let query = |reason: String| Error::Query {
            what: format!(
                "whether {} caught up with {}",
                replica.direct_addr(),
                master.direct_addr()
            ),
            reason,
        };
        let written = replication(master)
            .and_then(|info| offset(&info, "master_repl_offset"))
            .map_err(query)?;
        if linked(replica, master).is_err() {
            return Ok(false);
        }
        let info = replication(replica).map_err(query)?;
        Ok(offset(&info, "slave_repl_offset").map_err(query)? >= written)
    }

    /// Asks the sentinels for a failover (`SENTINEL FAILOVER`: no agreement needed, the
    /// master may be healthy) and waits up to `within` until they name another master and it
    /// answers as one. Returns its address.
    pub fn failover(&self, within: Duration) -> Result<SocketAddr> {
        let before = self.master_addr()?;
        let first = self.sentinels.first().map(RedisServer::direct_addr);
        let asked = first
            .ok_or_else(|| "no sentinel".to_owned())
            .and_then(|addr| resp::text(addr, &["SENTINEL", "FAILOVER", Self::MASTER_NAME]));
        let failed = |reason: String| Error::Query {
            what: format!("a failover of master `{}` from {before}", Self::MASTER_NAME),
            reason,
        };
        asked.map_err(failed)?;
        let mut after = before;
        wait_for(within, || {
            after = self.master_addr().map_err(|e| e.to_string())?;
            let server = self.server_at(after).filter(|_| after != before);
            match server.map(replication) {
                Some(Ok(info)) if resp::info_field(&info, "role") == Some("master") => Ok(()),
                _ => Err(format!("the sentinels name {after} as master")),
            }
        })
        .map_err(|last| failed(format!("not done within {within:?}: {last}")))?;
        Ok(after)
    }

    fn server_at(&self, addr: SocketAddr) -> Option<&RedisServer> {
        self.servers()
            .into_iter()
            .find(|s| s.direct_addr().port() == addr.port())
    }

    fn processes(&self) -> Vec<(&'static str, &RedisServer)> {
        let mut all = vec![("master", &self.master), ("replica", &self.replica)];
        all.extend(self.sentinels.iter().map(|s| ("sentinel", s)));
        all
    }

    /// `Err` names the first sentinel that does not yet know the replica or its peers, or
    /// cannot reach its quorum.
    fn check_sentinels(&self) -> std::result::Result<(), String> {
        let replica_port = self.replica.port().to_string();
        let peers = self.sentinels.len() - 1;
        for sentinel in &self.sentinels {
            let addr = sentinel.direct_addr();
            let ask = |what: &str| resp::command(addr, &["SENTINEL", what, Self::MASTER_NAME]);
            let replicas = ask("REPLICAS")?;
            let knows_replica = replicas
                .items()
                .iter()
                .any(|r| r.fields().get("port") == Some(&replica_port));
            let known_peers = ask("SENTINELS")?.items().len();
            let quorum = ask("CKQUORUM")?;
            if !knows_replica || known_peers < peers || !matches!(quorum, resp::Reply::Status(_)) {
                return Err(format!(
                    "sentinel {addr}: knows the replica: {knows_replica}, knows {known_peers} of \
                     {peers} other sentinels, quorum check: {quorum:?}"
                ));
            }
        }
        Ok(())
    }
}

/// A data server of the set: the kit's options, an immediate diskless full sync (instead of
/// a 5 s delay), then `extra`.
fn server_spec(extra: &[String]) -> Result<Spec> {
    let mut args: Vec<OsString> = ["--repl-diskless-sync-delay", "0"]
        .iter()
        .map(OsString::from)
        .collect();
    args.extend(extra.iter().map(OsString::from));
    spec(args)
}

/// A sentinel monitoring the master on `master_port`. Its configuration is a file in its
/// directory (a sentinel rewrites it as it learns), written once: a restarted sentinel keeps
/// what it learnt.
fn sentinel_spec(master_port: u16, quorum: usize) -> Result<Spec> {
    let name = RedisSentinel::MASTER_NAME;
    let config = format!(
        "sentinel monitor {name} 127.0.0.1 {master_port} {quorum}\n\
         sentinel down-after-milliseconds {name} {DOWN_AFTER_MS}\n\
         sentinel failover-timeout {name} {FAILOVER_TIMEOUT_MS}\n"
    );
    Ok(Spec {
        binary: RedisServerKind::from_env()?.server_binary(),
        probe: Probe::RedisPing,
        args: Box::new(|port, dir| {
            let mut args = vec![
                dir.join(CONFIG_FILE).into_os_string(),
                OsString::from("--sentinel"),
                "--port".into(),
                port.to_string().into(),
            ];
            args.extend(["--bind", "127.0.0.1", "--daemonize", "no", "--dir"].map(OsString::from));
            args.push(dir.as_os_str().to_owned());
            args
        }),
        config_file: Some((CONFIG_FILE, config)),
        prepare: None,
        env: None,
    })
}

/// `Ok` once `replica` reports itself a replica of `master` with the link up.
fn linked(replica: &RedisServer, master: &RedisServer) -> std::result::Result<(), String> {
    let info = replication(replica)?;
    let field = |name| resp::info_field(&info, name).unwrap_or("?");
    let master_port = master.port().to_string();
    if field("role") == "slave"
        && field("master_port") == master_port
        && field("master_link_status") == "up"
    {
        Ok(())
    } else {
        Err(format!(
            "{}: role {}, master port {} (want {master_port}), link {}",
            replica.direct_addr(),
            field("role"),
            field("master_port"),
            field("master_link_status"),
        ))
    }
}

fn replication(server: &RedisServer) -> std::result::Result<String, String> {
    resp::text(server.direct_addr(), &["INFO", "replication"])
}

fn offset(info: &str, field: &str) -> std::result::Result<u64, String> {
    resp::info_field(info, field)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("no {field} in INFO replication"))
}

/// What one sentinel names as the master's address.
fn master_addr_of(sentinel: &RedisServer) -> std::result::Result<SocketAddr, String> {
    let addr = sentinel.direct_addr();
    let args = [
        "SENTINEL",
        "GET-MASTER-ADDR-BY-NAME",
        RedisSentinel::MASTER_NAME,
    ];
    let reply = resp::command(addr, &args)?;
    let texts: Vec<String> = reply.items().iter().filter_map(resp::Reply::text).collect();
    let parsed = match texts.as_slice() {
        [ip, port] => ip
            .parse::<Ipv4Addr>()
            .ok()
            .zip(port.parse::<u16>().ok())
            .map(SocketAddr::from),
        _ => None,
    };
    parsed.ok_or_else(|| format!("sentinel {addr} answered {reply:?}"))
}
