//! A commit that waits for its answer no longer than a bound of our own.
//!
//! librdkafka's synchronous commit (`rd_kafka_commit` with `async = 0`) waits for the group
//! coordinator without a limit of its own: a commit with no coordinator known waits for one
//! up to `session.timeout.ms`, and one sent on a connection that holds bytes silently (a
//! network partition, no reset) waits for librdkafka's `socket.timeout.ms` (60 s), longer
//! still when the request never left librdkafka's queue. Seen on Tansu behind a fault
//! proxy's `hold()`: the commit of a revoke blocked the polling thread for over 70 s, and a
//! rebuild waiting for that consumer to stop waited as long.
//!
//! Here the commit is sent with a reply queue of its own (`rd_kafka_commit_queue`), and the
//! polling thread waits on that queue up to the bound. A commit whose answer has not come by
//! then is left to librdkafka: it may still land, or fail. Either way nothing is lost: the
//! offsets not committed are those of messages handled since the last commit, which are
//! delivered again to whoever gets the partition next (at least once).

use std::time::Duration;

use rdkafka::bindings as rdsys;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::error::KafkaError;
use rdkafka::topic_partition_list::TopicPartitionList;
use rdkafka::types::RDKafkaErrorCode;

use super::instance::GroupCtx;

/// How a bounded commit ended.
#[derive(Debug)]
pub(crate) enum Committed {
    /// The coordinator stored the offsets.
    Done,
    /// The commit failed (librdkafka's or the coordinator's error).
    Failed(KafkaError),
    /// No answer within the bound; the commit may still land later.
    TimedOut,
}

/// Commits `offsets` and waits at most `within` for the coordinator's answer.
pub(crate) fn commit_within(
    consumer: &BaseConsumer<GroupCtx>,
    offsets: &TopicPartitionList,
    within: Duration,
) -> Committed {
    let rk = consumer.client().native_ptr();
    // SAFETY: a live client; the queue is ours and destroyed below, once.
    let queue = unsafe { rdsys::rd_kafka_queue_new(rk) };
    if queue.is_null() {
        return Committed::Failed(KafkaError::ConsumerCommit(RDKafkaErrorCode::Fail));
    }
    let ms = i32::try_from(within.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: librdkafka copies `offsets`; with a queue given, the call returns at once and
    // the answer is posted to that queue as an offset-commit event (no callback set).
    let err = unsafe {
        rdsys::rd_kafka_commit_queue(rk, offsets.ptr(), queue, None, std::ptr::null_mut())
    };
    let outcome = if err != rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
        Committed::Failed(KafkaError::ConsumerCommit(err.into()))
    } else {
        // SAFETY: our queue; the event, if any, is ours and destroyed once.
        unsafe {
            let event = rdsys::rd_kafka_queue_poll(queue, ms);
            if event.is_null() {
                Committed::TimedOut
            } else {
                let err = rdsys::rd_kafka_event_error(event);
                rdsys::rd_kafka_event_destroy(event);
                if err == rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
                    Committed::Done
                } else {
                    Committed::Failed(KafkaError::ConsumerCommit(err.into()))
                }
            }
        }
    };
    // SAFETY: ours, destroyed once. An answer that comes later finds the queue disabled and
    // is dropped by librdkafka.
    unsafe { rdsys::rd_kafka_queue_destroy(queue) };
    outcome
}
