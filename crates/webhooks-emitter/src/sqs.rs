//! The SQS side: building the client and one SendMessageBatch call, bounded in time, with
//! its errors sorted into transient and permanent.

use std::time::Duration;

use aws_sdk_sqs::config::retry::RetryConfig;
use aws_sdk_sqs::config::timeout::TimeoutConfig;
use aws_sdk_sqs::config::{BehaviorVersion, Region};
use aws_sdk_sqs::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_sqs::types::SendMessageBatchRequestEntry;

use crate::Error;
use crate::error::Cause;
use crate::shared::Settings;

/// Bound on loading the AWS configuration chain.
const CONFIG_LOAD_TIMEOUT: Duration = Duration::from_secs(10);

/// What one call needs; cheap to clone into each request's future.
#[derive(Debug, Clone)]
pub(crate) struct SendConfig {
    queue_url: String,
    request_timeout: Duration,
    connect_timeout: Duration,
}

impl SendConfig {
    pub(crate) fn new(s: &Settings) -> Self {
        SendConfig {
            queue_url: s.queue.url.clone(),
            request_timeout: s.request_timeout,
            connect_timeout: s.connect_timeout,
        }
    }

    fn timeouts(&self) -> TimeoutConfig {
        TimeoutConfig::builder()
            .connect_timeout(self.connect_timeout)
            .operation_attempt_timeout(self.request_timeout)
            .operation_timeout(self.request_timeout)
            .build()
    }

    /// A last-resort bound over the SDK's own timeouts.
    fn hard_limit(&self) -> Duration {
        self.request_timeout + self.connect_timeout + Duration::from_secs(1)
    }
}

/// Builds the client: the caller's client or SDK config if given, else the standard AWS
/// chain; region, endpoint and credentials from the builder on top. The SDK's own retries
/// are off (the emitter retries per entry) and its timeouts are the emitter's.
pub(crate) async fn client(s: &Settings) -> Result<aws_sdk_sqs::Client, Error> {
    if let Some(client) = &s.client {
        return Ok(client.clone());
    }
    let base = match &s.sdk_config {
        Some(config) => config.clone(),
        None => {
            let mut loader = aws_config::defaults(BehaviorVersion::latest());
            if let Some(region) = &s.region {
                loader = loader.region(Region::new(region.clone()));
            }
            if let Some(endpoint) = &s.endpoint_url {
                loader = loader.endpoint_url(endpoint.clone());
            }
            if let Some(credentials) = &s.credentials {
                loader = loader.credentials_provider(credentials.clone());
            }
            // The chain may probe the instance metadata service: bounded.
            tokio::time::timeout(CONFIG_LOAD_TIMEOUT, loader.load())
                .await
                .map_err(|_| Error::InvalidConfig {
                    field: "aws configuration",
                    reason: format!(
                        "could not be loaded from the standard AWS chain within \
                         {CONFIG_LOAD_TIMEOUT:?}; set the region and credentials explicitly \
                         (builder or AWS_REGION / AWS_ACCESS_KEY_ID)"
                    ),
                })?
        }
    };
    let send = SendConfig::new(s);
    let mut b = aws_sdk_sqs::config::Builder::from(&base)
        .timeout_config(send.timeouts())
        .retry_config(RetryConfig::disabled());
    if let Some(region) = &s.region {
        b = b.region(Region::new(region.clone()));
    }
    if let Some(endpoint) = &s.endpoint_url {
        b = b.endpoint_url(endpoint.clone());
    }
    if let Some(credentials) = &s.credentials {
        b = b.credentials_provider(credentials.clone());
    }
    Ok(aws_sdk_sqs::Client::from_conf(b.build()))
}

/// One entry SQS accepted.
#[derive(Debug)]
pub(crate) struct OkEntry {
    pub(crate) id: String,
    pub(crate) message_id: String,
    pub(crate) sequence_number: Option<String>,
}

/// One entry SQS reported as failed in an otherwise answered batch.
#[derive(Debug)]
pub(crate) struct FailedEntry {
    pub(crate) id: String,
    pub(crate) sender_fault: bool,
    pub(crate) code: String,
    pub(crate) message: String,
}

impl FailedEntry {
    /// Server faults and throttling are worth retrying; other sender faults are not.
    pub(crate) fn retryable(&self) -> bool {
        !self.sender_fault || is_throttling(&self.code)
    }
}

/// What SQS answered to one SendMessageBatch.
#[derive(Debug, Default)]
pub(crate) struct BatchOutcome {
    pub(crate) successful: Vec<OkEntry>,
    pub(crate) failed: Vec<FailedEntry>,
}

/// A whole request that failed.
#[derive(Debug, Clone)]
pub(crate) struct RequestFailure {
    pub(crate) retryable: bool,
    /// Whether the request may have reached SQS and taken effect: false only when the error
    /// proves it never left (or SQS refused it as a whole with a client error).
    pub(crate) maybe_reached: bool,
    pub(crate) code: String,
    pub(crate) message: String,
    /// The SDK's error, when the SDK reported one.
    pub(crate) cause: Option<Cause>,
}

impl RequestFailure {
    /// A panic inside the SDK call (in an interceptor, credentials provider or HTTP client
    /// the application passed in): the request may have been written before it.
    pub(crate) fn panicked(message: String) -> Self {
        RequestFailure {
            retryable: true,
            maybe_reached: true,
            code: "Panic".to_string(),
            message: format!("the SQS client panicked during the request: {message}"),
            cause: None,
        }
    }
}

/// Sends one batch; resolves within the request timeout (plus connect time), always.
pub(crate) async fn send_batch(
    client: aws_sdk_sqs::Client,
    cfg: SendConfig,
    entries: Vec<SendMessageBatchRequestEntry>,
) -> Result<BatchOutcome, RequestFailure> {
    let per_call = aws_sdk_sqs::config::Builder::default()
        .timeout_config(cfg.timeouts())
        .retry_config(RetryConfig::disabled());
    let call = client
        .send_message_batch()
        .queue_url(&cfg.queue_url)
        .set_entries(Some(entries))
        .customize()
        .config_override(per_call)
        .send();
    let output = match tokio::time::timeout(cfg.hard_limit(), call).await {
        Err(_) => {
            return Err(RequestFailure {
                retryable: true,
                maybe_reached: true,
                code: "Timeout".to_string(),
                message: format!("no answer within {:?}", cfg.hard_limit()),
                cause: None,
            });
        }
        Ok(Err(e)) => return Err(classify(e)),
        Ok(Ok(output)) => output,
    };
    Ok(BatchOutcome {
        successful: output
            .successful()
            .iter()
            .map(|s| OkEntry {
                id: s.id().to_string(),
                message_id: s.message_id().to_string(),
                sequence_number: s.sequence_number().map(str::to_string),
            })
            .collect(),
        failed: output
            .failed()
            .iter()
            .map(|f| FailedEntry {
                id: f.id().to_string(),
                sender_fault: f.sender_fault(),
                code: f.code().to_string(),
                message: f.message().unwrap_or_default().to_string(),
            })
            .collect(),
    })
}

fn classify<E, R>(err: SdkError<E, R>) -> RequestFailure
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + HasStatus + Send + Sync + 'static,
{
    let message = DisplayErrorContext(&err).to_string();
    let failure = match &err {
        SdkError::ServiceError(se) => {
            let code = se.err().code().unwrap_or("Unknown").to_string();
            let status = se.raw().status_code();
            let retryable = status >= 500 || status == 429 || is_throttling(&code);
            RequestFailure {
                retryable,
                // A client error (4xx) refuses the request as a whole; after a server error
                // SQS may have stored some entries.
                maybe_reached: status >= 500,
                code,
                message,
                cause: None,
            }
        }
        SdkError::ConstructionFailure(_) => RequestFailure {
            retryable: false,
            maybe_reached: false,
            code: "ConstructionFailure".to_string(),
            message,
            cause: None,
        },
        // Timeouts, network errors, unreadable responses: the request may have been written
        // and carried out, unless the error shows the connection was never made.
        _ => RequestFailure {
            retryable: true,
            maybe_reached: !never_connected(&err),
            code: "Transport".to_string(),
            message,
            cause: None,
        },
    };
    RequestFailure {
        cause: Some(Cause::new(err)),
        ..failure
    }
}

/// Whether an error proves that no byte of the request left: the connection to SQS could not
/// be made (DNS, refused, connect timeout, TLS handshake). Only these: the SDK's own retries
/// are off for every call, so no earlier attempt hides behind the error.
fn never_connected(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(client_error) = e.downcast_ref::<hyper_util::client::legacy::Error>()
            && client_error.is_connect()
        {
            return true;
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::ConnectionRefused {
                return true;
            }
            // An io::Error's `source` skips its payload: look at the payload itself.
            if let Some(inner) = io.get_ref() {
                next = Some(inner);
                continue;
            }
        }
        next = e.source();
    }
    false
}

/// The HTTP status of a raw response.
pub(crate) trait HasStatus {
    fn status_code(&self) -> u16;
}

impl HasStatus for aws_sdk_sqs::config::http::HttpResponse {
    fn status_code(&self) -> u16 {
        self.status().as_u16()
    }
}

/// Throttling error codes (SQS's and the AWS-wide ones).
pub(crate) fn is_throttling(code: &str) -> bool {
    code.contains("Throttl")
        || matches!(
            code,
            "RequestLimitExceeded"
                | "TooManyRequestsException"
                | "SlowDown"
                | "KmsThrottled"
                | "ServiceUnavailable"
                | "InternalError"
                | "InternalFailure"
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_errors_from_making_the_connection_prove_a_request_never_left() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert!(never_connected(&refused));
        let wrapped =
            std::io::Error::other(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(never_connected(&wrapped));
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert!(
            !never_connected(&reset),
            "a reset may follow a written request"
        );
        let timed_out = std::io::Error::from(std::io::ErrorKind::TimedOut);
        assert!(!never_connected(&timed_out));
    }

    #[test]
    fn server_faults_and_throttling_are_retried_sender_faults_are_not() {
        let entry = |sender_fault, code: &str| FailedEntry {
            id: "0".into(),
            sender_fault,
            code: code.into(),
            message: String::new(),
        };
        assert!(entry(false, "InternalError").retryable());
        assert!(entry(true, "ThrottlingException").retryable());
        assert!(entry(true, "RequestThrottled").retryable());
        assert!(!entry(true, "InvalidParameterValue").retryable());
    }
}
