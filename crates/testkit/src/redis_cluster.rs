//! A Redis Cluster: masters on free loopback ports, joined by `redis-cli --cluster create`.

use std::ffi::OsString;
use std::time::Duration;

use crate::compat::RedisServerKind;
use crate::error::{Error, Result};
use crate::process::START_TIMEOUT;
use crate::redis::{RedisServer, log_tails, spec, wait_for};
use crate::resp;
use crate::tool;

/// How long `redis-cli --cluster create` may take (it waits for the nodes to agree).
const CREATE_TIMEOUT: Duration = Duration::from_secs(30);
/// `cluster-node-timeout`: how long a node may be unreachable before the others mark it
/// failed. Short, so that tests of a lost node do not wait long.
const NODE_TIMEOUT_MS: &str = "2000";

/// A Redis Cluster owned by one test: `masters` `redis-server --cluster-enabled yes` nodes,
/// without replicas, each owning an equal share of the 16,384 slots. Each node is a
/// [`RedisServer`] (private port and directory, no persistence, logs, killed with the test
/// binary), so a test can kill, stop or restart one; a restarted node keeps its cluster
/// identity (its `nodes.conf` stays in its directory) but not its data.
///
/// ```no_run
/// # fn main() -> wharf_testkit::Result<()> {
/// let cluster = wharf_testkit::RedisCluster::start(3)?; // returns once every node agrees
/// let urls = cluster.urls(); // redis://127.0.0.1:PORT/ of each node, for a cluster client
/// cluster.nodes()[1].kill()?; // one shard gone
/// # let _ = urls;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts `masters` nodes (at least 3: `redis-cli --cluster create` refuses fewer), joins
    /// them, and returns once every node reports `cluster_state:ok` and knows every other
    /// node (up to 30 s).
    pub fn start(masters: usize) -> Result<Self> {
        if masters < 3 {
            return Err(Error::Unsupported(format!(
                "a Redis Cluster needs at least 3 masters (redis-cli --cluster create refuses \
                 fewer); {masters} were asked for"
            )));
        }
        let nodes = (0..masters)
            .map(|_| RedisServer::start_spec(node_spec()?, None))
            .collect::<Result<Vec<_>>>()?;
        let mut args: Vec<String> = vec!["--cluster".into(), "create".into()];
        args.extend(nodes.iter().map(|n| n.direct_addr().to_string()));
        args.extend(["--cluster-replicas", "0", "--cluster-yes"].map(String::from));
        let cli = RedisServerKind::from_env()?.cli_binary();
        tool::run(cli, &args, nodes[0].dir(), CREATE_TIMEOUT)?;
        let cluster = RedisCluster { nodes };
        wait_for(START_TIMEOUT, || cluster.check()).map_err(|last_check| Error::SetNotReady {
            what: format!("a Redis Cluster of {masters} masters"),
            timeout: START_TIMEOUT,
            last_check,
            logs: log_tails(cluster.nodes.iter().map(|n| ("node", n))),
        })?;
        Ok(cluster)
    }

    /// `redis://127.0.0.1:PORT/` of every node: what a cluster client starts from.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// The nodes, in the order their slots were assigned.
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// Whether every node answers, reports `cluster_state:ok` and knows every other node
    /// (after a node was restarted, say). Blocks for at most 2 s per node.
    pub fn is_ok(&self) -> bool {
        self.check().is_ok()
    }

    /// `Err` says which node is not ready, and why.
    fn check(&self) -> std::result::Result<(), String> {
        let want = self.nodes.len().to_string();
        for node in &self.nodes {
            let info = resp::text(node.direct_addr(), &["CLUSTER", "INFO"])?;
            let state = resp::info_field(&info, "cluster_state");
            let known = resp::info_field(&info, "cluster_known_nodes");
            if state != Some("ok") || known != Some(want.as_str()) {
                return Err(format!(
                    "node {}: cluster_state {}, knows {} of {want} nodes",
                    node.direct_addr(),
                    state.unwrap_or("?"),
                    known.unwrap_or("?"),
                ));
            }
        }
        Ok(())
    }
}

/// A cluster node: the kit's options, cluster mode, its cluster state in its directory.
fn node_spec() -> Result<crate::process::Spec> {
    spec(
        [
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            NODE_TIMEOUT_MS,
        ]
        .iter()
        .map(OsString::from)
        .collect(),
    )
}
