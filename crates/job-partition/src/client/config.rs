//! `Config`: how to reach Redis (one server, a Cluster or a Sentinel set; TLS).

use std::fmt;
use std::time::Duration;

/// How to reach Redis.
///
/// The URL may be `redis://[user:password@]host:port[/db]`, `rediss://...` (TLS, with the
/// crate feature `tls`) or `unix:///path`. Its password never appears in `Debug` output,
/// logs or errors.
#[derive(Clone)]
pub struct Config {
    pub(super) url: String,
    pub(super) cluster: Vec<String>,
    pub(super) sentinel: Option<(Vec<String>, String)>,
    #[cfg(feature = "tls")]
    pub(super) tls_root: Option<Vec<u8>>,
    #[cfg(feature = "tls")]
    pub(super) tls_client: Option<(Vec<u8>, Vec<u8>)>,
    pub(super) response_timeout: Duration,
    pub(super) connect_timeout: Duration,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("url", &redact(&self.url))
            .field(
                "sentinel",
                &self
                    .sentinel
                    .as_ref()
                    .map(|(n, m)| (n.iter().map(|u| redact(u)).collect::<Vec<_>>(), m.clone())),
            )
            .field(
                "cluster",
                &self.cluster.iter().map(|u| redact(u)).collect::<Vec<_>>(),
            )
            .field("response_timeout", &self.response_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}

/// The URL with any `user:password@` replaced by `***@`.
pub(crate) fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***@{}", &url[..s], &url[at + 1..]),
        _ => url.to_owned(),
    }
}

impl Config {
    /// Redis at `url`, with a 5 s response timeout and a 5 s connect timeout.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            cluster: Vec::new(),
            sentinel: None,
            #[cfg(feature = "tls")]
            tls_root: None,
            #[cfg(feature = "tls")]
            tls_client: None,
            response_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
        }
    }

    /// From `WHARF_REDIS_URL`, or `redis://127.0.0.1:6379` when it is not set.
    pub fn from_env() -> Self {
        Self::new(
            std::env::var("WHARF_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into()),
        )
    }

    /// A Redis Cluster, reached through any of these seed nodes (`redis://` or `rediss://`
    /// URLs; the password of the first one is used for all). Each partition lives on the
    /// shard of its hash tag `{wharf:<partition>}`.
    pub fn cluster<I, S>(nodes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let cluster: Vec<String> = nodes.into_iter().map(Into::into).collect();
        let mut c = Self::new(cluster.first().cloned().unwrap_or_default());
        c.cluster = cluster;
        c
    }

    /// Trust this CA (PEM) for `rediss://` instead of the webpki roots (feature `tls`):
    /// for a Redis whose certificate comes from a private CA.
    #[cfg(feature = "tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    pub fn tls_root_certificate(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.tls_root = Some(pem.into());
        self
    }

    /// Present this client certificate and key (PEM) for mutual TLS (feature `tls`).
    #[cfg(feature = "tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    pub fn tls_client_certificate(
        mut self,
        cert_pem: impl Into<Vec<u8>>,
        key_pem: impl Into<Vec<u8>>,
    ) -> Self {
        self.tls_client = Some((cert_pem.into(), key_pem.into()));
        self
    }

    /// The master `master_name` found through these Redis Sentinel nodes (`redis://` URLs of
    /// the sentinels; a password in the first URL is used for the master too). After a
    /// failover the next failing call looks the master up again.
    pub fn sentinel<I, S>(sentinels: I, master_name: impl Into<String>) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let nodes: Vec<String> = sentinels.into_iter().map(Into::into).collect();
        let mut c = Self::new(nodes.first().cloned().unwrap_or_default());
        c.sentinel = Some((nodes, master_name.into()));
        c
    }

    /// How long any one Redis call may take before it fails with [`Error::Timeout`](crate::Error::Timeout).
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = timeout;
        self
    }

    /// How long a (re)connection may take.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn passwords_never_appear_in_debug_output() {
        let c = Config::new("redis://app:s3cret@redis.internal:6379/2");
        let shown = format!("{c:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(
            shown.contains("redis://***@redis.internal:6379/2"),
            "{shown}"
        );
        let cluster = Config::cluster(["rediss://:hunter2@a:7000", "rediss://:hunter2@b:7000"]);
        assert!(!format!("{cluster:?}").contains("hunter2"));
    }
}
