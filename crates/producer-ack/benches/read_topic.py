"""Reads a Pulsar topic from its earliest message with the official client (pulsar-client)
and prints one JSON object per message: message_id (ledger_id, entry_id, partition,
batch_index; -1 for none), payload (hex), key, ordering_key (hex), properties, event_time. Used by wharf-producer-ack's tests to read back what was produced (the `pulsar`
crate's consumer cannot decode pulsar-lite's message frames).

usage: read_topic.py SERVICE_URL TOPIC EXPECTED_COUNT QUIET_SECONDS
Stops after EXPECTED_COUNT messages, or when none arrived for QUIET_SECONDS.
"""
import json
import sys
import uuid

import pulsar


def main() -> None:
    url, topic, expected, quiet = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    client = pulsar.Client(url, operation_timeout_seconds=10, logger=pulsar.ConsoleLogger(pulsar.LoggerLevel.Error))
    consumer = client.subscribe(
        topic,
        subscription_name=f"readback-{uuid.uuid4().hex}",
        consumer_type=pulsar.ConsumerType.Exclusive,
        initial_position=pulsar.InitialPosition.Earliest,
    )
    count = 0
    while count < expected:
        try:
            message = consumer.receive(timeout_millis=int(quiet * 1000))
        except pulsar.Timeout:
            break
        ordering_key = message.ordering_key() if hasattr(message, "ordering_key") else None
        message_id = message.message_id()
        print(json.dumps({
            "message_id": {
                "ledger_id": message_id.ledger_id(),
                "entry_id": message_id.entry_id(),
                "partition": message_id.partition(),
                "batch_index": message_id.batch_index(),
            },
            "payload": message.data().hex(),
            "key": message.partition_key() or None,
            "ordering_key": ordering_key.hex() if isinstance(ordering_key, bytes) and ordering_key else None,
            "properties": message.properties(),
            "event_time": message.event_timestamp() or None,
        }), flush=True)
        consumer.acknowledge(message)
        count += 1
    consumer.close()
    client.close()


if __name__ == "__main__":
    main()
