"""Peer figure for the pulsar-async benchmark: the official C++-based Python client
(`pulsar-client` on PyPI) sends COUNT messages of SIZE bytes asynchronously (send_async with a
callback, up to WINDOW pending, batching off like wharf's default) and waits for every receipt.
Prints one JSON object: {"messages_per_second": ..., "failed": ...}.

usage: pulsar_client_peer.py SERVICE_URL TOPIC COUNT SIZE WINDOW
"""
import json
import sys
import threading
import time

import pulsar


def main() -> None:
    url, topic = sys.argv[1], sys.argv[2]
    count, size, window = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    client = pulsar.Client(url, operation_timeout_seconds=30, logger=pulsar.ConsoleLogger(pulsar.LoggerLevel.Error))
    producer = client.create_producer(
        topic,
        batching_enabled=False,
        block_if_queue_full=True,
        max_pending_messages=window,
        send_timeout_millis=30000,
    )
    producer.send(b"warm-up")
    payload = b"x" * size
    done = threading.Event()
    state = {"acked": 0, "failed": 0}
    lock = threading.Lock()

    def on_sent(result, _message_id):
        with lock:
            state["acked"] += 1
            if result != pulsar.Result.Ok:
                state["failed"] += 1
            if state["acked"] == count:
                done.set()

    started = time.perf_counter()
    for _ in range(count):
        producer.send_async(payload, on_sent)
    done.wait(120)
    elapsed = time.perf_counter() - started
    print(json.dumps({"messages_per_second": state["acked"] / elapsed, "failed": state["failed"]}))
    producer.close()
    client.close()


if __name__ == "__main__":
    main()
