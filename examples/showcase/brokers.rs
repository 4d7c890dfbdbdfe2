//! The brokers: started locally through wharf-testkit (in parallel), or the addresses the
//! command line gave; and the SQS client for either.

use std::sync::Arc;

use wharf::webhooks_emitter::aws_sdk_sqs;

use crate::BoxError;
use crate::cli::Args;

pub(crate) struct Brokers {
    pub(crate) kafka: String,
    pub(crate) pulsar: String,
    pub(crate) sqs: String,
    pub(crate) redis: String,
    pub(crate) tansu: Option<Arc<wharf_testkit::Tansu>>,
    pub(crate) pulsar_lite: Option<Arc<wharf_testkit::PulsarLite>>,
    pub(crate) moto: Option<Arc<wharf_testkit::Moto>>,
    pub(crate) _redis_server: Option<wharf_testkit::RedisServer>,
}

pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> wharf_testkit::Result<T> + Send + 'static,
) -> Result<T, BoxError> {
    Ok(tokio::task::spawn_blocking(f).await??)
}

pub(crate) async fn start_brokers(args: &Args) -> Result<Brokers, BoxError> {
    // Started in parallel; each is None when an address was given.
    // With --chaos the broker is killed and restarted: it keeps its data in S3 (on moto).
    let start_tansu: fn() -> wharf_testkit::Result<wharf_testkit::Tansu> = if args.chaos {
        wharf_testkit::Tansu::start_durable_behind_proxy
    } else {
        wharf_testkit::Tansu::start_behind_proxy
    };
    let tansu = args.kafka.is_none().then(|| blocking(start_tansu));
    let pulsar = args
        .pulsar
        .is_none()
        .then(|| blocking(wharf_testkit::PulsarLite::start));
    let moto = args
        .sqs
        .is_none()
        .then(|| blocking(wharf_testkit::Moto::start_behind_proxy));
    let redis = args
        .redis
        .is_none()
        .then(|| blocking(wharf_testkit::RedisServer::start));
    let (tansu, pulsar, moto, redis) = tokio::join!(
        async move {
            match tansu {
                Some(f) => f.await.map(Some),
                None => Ok(None),
            }
        },
        async move {
            match pulsar {
                Some(f) => f.await.map(Some),
                None => Ok(None),
            }
        },
        async move {
            match moto {
                Some(f) => f.await.map(Some),
                None => Ok(None),
            }
        },
        async move {
            match redis {
                Some(f) => f.await.map(Some),
                None => Ok(None),
            }
        },
    );
    let hint = "(run scripts/install, or give its address: see --help)";
    let tansu = tansu.map_err(|e| format!("could not start Tansu (Kafka): {e} {hint}"))?;
    let pulsar = pulsar.map_err(|e| format!("could not start pulsar-lite: {e} {hint}"))?;
    let moto = moto.map_err(|e| format!("could not start moto (SQS): {e} {hint}"))?;
    let redis = redis.map_err(|e| format!("could not start redis-server: {e} {hint}"))?;
    let (tansu, pulsar, moto) = (
        tansu.map(Arc::new),
        pulsar.map(Arc::new),
        moto.map(Arc::new),
    );
    Ok(Brokers {
        kafka: args
            .kafka
            .clone()
            .or_else(|| tansu.as_ref().map(|t| t.bootstrap_servers()))
            .unwrap_or_default(),
        pulsar: args
            .pulsar
            .clone()
            .or_else(|| pulsar.as_ref().map(|p| p.url()))
            .unwrap_or_default(),
        sqs: args
            .sqs
            .clone()
            .or_else(|| moto.as_ref().map(|m| m.endpoint()))
            .unwrap_or_default(),
        redis: args
            .redis
            .clone()
            .or_else(|| redis.as_ref().map(|r| r.url()))
            .unwrap_or_default(),
        tansu,
        pulsar_lite: pulsar,
        moto,
        _redis_server: redis,
    })
}

pub(crate) fn sqs_client(endpoint: &str, external: bool) -> aws_sdk_sqs::Client {
    let env = |k: &str, d: &str| {
        if external {
            std::env::var(k).unwrap_or_else(|_| d.to_owned())
        } else {
            d.to_owned()
        }
    };
    aws_sdk_sqs::Client::from_conf(
        aws_sdk_sqs::config::Builder::new()
            .behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest())
            .region(aws_sdk_sqs::config::Region::new(env(
                "AWS_REGION",
                "us-east-1",
            )))
            .endpoint_url(endpoint)
            .credentials_provider(aws_sdk_sqs::config::Credentials::new(
                env("AWS_ACCESS_KEY_ID", "test"),
                env("AWS_SECRET_ACCESS_KEY", "test"),
                None,
                None,
                "showcase",
            ))
            .build(),
    )
}
