//! Topic administration and reading a range of messages from a partition.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::error::KafkaError;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tokio::sync::watch;

use crate::config::KafkaConfig;
use crate::error::{Error, Result};
use crate::health::{Health, HealthContext};
use crate::log_gate::{LogGate, WINDOW};
use crate::message::ConsumedMessage;

pub(crate) type AdminSlot = watch::Sender<Option<Arc<AdminClient<HealthContext>>>>;

/// A topic to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    /// The topic name.
    pub name: String,
    /// Number of partitions.
    pub partitions: i32,
    /// Replication factor.
    pub replication: i32,
    /// Topic configuration (`retention.ms`, `cleanup.policy`, ...).
    pub configs: BTreeMap<String, String>,
}

impl TopicSpec {
    /// A topic with `partitions` partitions and replication factor 1.
    pub fn new(name: impl Into<String>, partitions: i32) -> Self {
        Self {
            name: name.into(),
            partitions,
            replication: 1,
            configs: BTreeMap::new(),
        }
    }
    /// Sets the replication factor.
    pub fn replication(mut self, replication: i32) -> Self {
        self.replication = replication;
        self
    }
    /// Sets a topic configuration entry.
    pub fn config(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.configs.insert(key.into(), value.into());
        self
    }
}

/// One partition of a described topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionInfo {
    /// Partition id.
    pub id: i32,
    /// Broker id of the leader.
    pub leader: i32,
    /// Broker ids of the replicas.
    pub replicas: Vec<i32>,
    /// Broker ids of the in-sync replicas.
    pub isr: Vec<i32>,
}

/// A topic as the brokers describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    /// The topic name.
    pub name: String,
    /// Its partitions.
    pub partitions: Vec<PartitionInfo>,
}

/// Topic administration through the wrapper's client. Cloneable; it follows rebuilds.
#[derive(Clone)]
pub struct Admin {
    pub(crate) slot: Arc<AdminSlot>,
    pub(crate) config: KafkaConfig,
}

impl fmt::Debug for Admin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Admin")
            .field("bootstrap_servers", &self.config.bootstrap_servers())
            .finish()
    }
}

impl Admin {
    async fn client(&self) -> Result<Arc<AdminClient<HealthContext>>> {
        let timeout = self.config.request_timeout;
        let mut rx = self.slot.subscribe();
        match tokio::time::timeout(timeout, rx.wait_for(Option::is_some)).await {
            Ok(Ok(c)) => c.clone().ok_or_else(|| Error::Stopped("admin".to_owned())),
            Ok(Err(_)) => Err(Error::Stopped("admin".to_owned())),
            Err(_) => Err(Error::Unavailable {
                what: "admin client".to_owned(),
                after: timeout,
            }),
        }
    }

    fn options(&self) -> AdminOptions {
        AdminOptions::new()
            .request_timeout(Some(self.config.request_timeout))
            .operation_timeout(Some(self.config.request_timeout))
    }

    /// Creates topics. A topic that already exists is an error for that topic only;
    /// [`ensure_topics`](Self::ensure_topics) ignores it.
    pub async fn create_topics(&self, topics: &[TopicSpec]) -> Result<()> {
        self.create(topics, false).await
    }

    /// Creates the topics that do not exist yet.
    pub async fn ensure_topics(&self, topics: &[TopicSpec]) -> Result<()> {
        self.create(topics, true).await
    }

    async fn create(&self, topics: &[TopicSpec], ignore_existing: bool) -> Result<()> {
        let client = self.client().await?;
        let new: Vec<NewTopic<'_>> = topics
            .iter()
            .map(|t| {
                t.configs.iter().fold(
                    NewTopic::new(
                        &t.name,
                        t.partitions,
                        TopicReplication::Fixed(t.replication),
                    ),
                    |n, (k, v)| n.set(k, v),
                )
            })
            .collect();
        let results = client
            .create_topics(new.iter(), &self.options())
            .await
            .map_err(|e| Error::Admin {
                topic: "*".to_owned(),
                reason: "the request to create topics failed".to_owned(),
                source: Some(Box::new(e)),
            })?;
        for r in results {
            if let Err((topic, code)) = r {
                if ignore_existing && code == rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists {
                    continue;
                }
                return Err(Error::Admin {
                    topic,
                    reason: "the brokers did not create it".to_owned(),
                    source: Some(Box::new(KafkaError::AdminOp(code))),
                });
            }
        }
        Ok(())
    }

    /// Deletes topics.
    pub async fn delete_topics(&self, names: &[&str]) -> Result<()> {
        let client = self.client().await?;
        let results = client
            .delete_topics(names, &self.options())
            .await
            .map_err(|e| Error::Admin {
                topic: "*".to_owned(),
                reason: "the request to delete topics failed".to_owned(),
                source: Some(Box::new(e)),
            })?;
        for r in results {
            if let Err((topic, code)) = r {
                return Err(Error::Admin {
                    topic,
                    reason: "the brokers did not delete it".to_owned(),
                    source: Some(Box::new(KafkaError::AdminOp(code))),
                });
            }
        }
        Ok(())
    }

    async fn metadata(&self, topic: Option<String>) -> Result<Vec<TopicInfo>> {
        let client = self.client().await?;
        let timeout = self.config.request_timeout;
        let md = tokio::task::spawn_blocking(move || {
            client.inner().fetch_metadata(topic.as_deref(), timeout)
        })
        .await
        .map_err(|e| Error::Admin {
            topic: "*".to_owned(),
            reason: format!("the metadata request's thread failed: {e}"),
            source: None,
        })?
        .map_err(|source| Error::Kafka {
            what: "metadata".to_owned(),
            source,
        })?;
        Ok(md
            .topics()
            .iter()
            .filter(|t| t.error().is_none())
            .map(|t| TopicInfo {
                name: t.name().to_owned(),
                partitions: t
                    .partitions()
                    .iter()
                    .map(|p| PartitionInfo {
                        id: p.id(),
                        leader: p.leader(),
                        replicas: p.replicas().to_vec(),
                        isr: p.isr().to_vec(),
                    })
                    .collect(),
            })
            .collect())
    }

    /// Names of all topics.
    pub async fn list_topics(&self) -> Result<Vec<String>> {
        let mut names: Vec<String> = self
            .metadata(None)
            .await?
            .into_iter()
            .map(|t| t.name)
            .collect();
        names.sort();
        Ok(names)
    }

    /// Partitions, leaders and replicas of one topic.
    pub async fn describe_topic(&self, name: &str) -> Result<TopicInfo> {
        self.metadata(Some(name.to_owned()))
            .await?
            .into_iter()
            .find(|t| t.name == name)
            .ok_or_else(|| Error::Admin {
                topic: name.to_owned(),
                reason: "no such topic".to_owned(),
                source: None,
            })
    }

    /// The topic's configuration entries as the brokers report them.
    pub async fn topic_configs(&self, name: &str) -> Result<BTreeMap<String, String>> {
        let client = self.client().await?;
        let res = client
            .describe_configs([&ResourceSpecifier::Topic(name)], &self.options())
            .await
            .map_err(|e| Error::Admin {
                topic: name.to_owned(),
                reason: "the request to describe its configuration failed".to_owned(),
                source: Some(Box::new(e)),
            })?;
        let mut out = BTreeMap::new();
        for r in res {
            let r = r.map_err(|code| Error::Admin {
                topic: name.to_owned(),
                reason: "the brokers did not describe its configuration".to_owned(),
                source: Some(Box::new(KafkaError::AdminOp(code))),
            })?;
            for e in r.entries {
                if let Some(v) = e.value {
                    out.insert(e.name, v);
                }
            }
        }
        Ok(out)
    }

    /// Low and high watermarks of a partition.
    pub async fn watermarks(&self, topic: &str, partition: i32) -> Result<(i64, i64)> {
        let client = self.client().await?;
        let timeout = self.config.request_timeout;
        let topic = topic.to_owned();
        tokio::task::spawn_blocking(move || {
            client.inner().fetch_watermarks(&topic, partition, timeout)
        })
        .await
        .map_err(|e| Error::Admin {
            topic: "*".to_owned(),
            reason: format!("the watermarks request's thread failed: {e}"),
            source: None,
        })?
        .map_err(|source| Error::Kafka {
            what: "watermarks".to_owned(),
            source,
        })
    }

    /// Reads messages with offsets in `from..to` from one partition (stopping early at the
    /// end of the partition or at `timeout`). Uses a short-lived consumer outside any group.
    pub async fn fetch_range(
        &self,
        topic: &str,
        partition: i32,
        from: i64,
        to: i64,
        timeout: Duration,
    ) -> Result<Vec<ConsumedMessage>> {
        let (_, high) = self.watermarks(topic, partition).await?;
        let to = to.min(high);
        if from >= to {
            return Ok(Vec::new());
        }
        let mut cc = self.config.client_config(&[], &BTreeMap::new());
        cc.set("group.id", "wharf-fetch-range")
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false");
        let ctx = HealthContext::new(
            Arc::new(Health::default()),
            Arc::new(LogGate::new("fetch-range", WINDOW)),
        );
        let consumer: BaseConsumer<HealthContext> =
            cc.create_with_context(ctx).map_err(Error::Config)?;
        let topic = topic.to_owned();
        tokio::task::spawn_blocking(move || {
            read_range(&consumer, &topic, partition, from, to, timeout)
        })
        .await
        .map_err(|e| Error::Admin {
            topic: "*".to_owned(),
            reason: format!("the thread reading the range failed: {e}"),
            source: None,
        })?
    }
}

fn read_range(
    consumer: &BaseConsumer<HealthContext>,
    topic: &str,
    partition: i32,
    from: i64,
    to: i64,
    timeout: Duration,
) -> Result<Vec<ConsumedMessage>> {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(from))
        .map_err(Error::Config)?;
    consumer.assign(&tpl).map_err(Error::Config)?;
    let topic_arc: Arc<str> = Arc::from(topic);
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    while Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                let m = ConsumedMessage::copied(&m, topic_arc.clone());
                let last = m.offset >= to - 1;
                if m.offset >= from && m.offset < to {
                    out.push(m);
                }
                if last {
                    return Ok(out);
                }
            }
            Some(Err(source)) => {
                return Err(Error::Kafka {
                    what: "fetch".to_owned(),
                    source,
                });
            }
            None => {}
        }
    }
    if out.is_empty() {
        return Err(Error::Timeout {
            what: format!("fetch of {topic}/{partition} {from}..{to}"),
            after: timeout,
        });
    }
    Ok(out)
}
