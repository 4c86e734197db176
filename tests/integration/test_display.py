"""consumer_display reading a real Kafka-protocol broker, without joining any consumer group."""

from __future__ import annotations

import subprocess
import sys

from kafka import KafkaProducer

from tests.harness import Pipeline
from twinpipe.envelope import Envelope, decode, encode


def test_json_and_text_views(pipeline: Pipeline) -> None:
    producer = KafkaProducer(bootstrap_servers=[pipeline.stack.kafka.bootstrap])
    envelopes = [
        Envelope(
            f"d{seq % 4}",
            "b",
            seq,
            1_700_000_000_000_000_000 + seq,
            {"t": 20.5},
            {"publish": 1_700_000_000_000_100_000 + seq, "bridge": 1_700_000_000_000_200_000 + seq},
        )
        for seq in range(40)
    ]
    # Same key as d0, so it precedes d0's records in their partition and is read before --count is reached.
    producer.send(pipeline.telemetry_topic, key=b"d0", value=b"not an envelope")
    redelivered = envelopes[1]  # an at-least-once redelivery: the same reading twice in Kafka
    for envelope in [*envelopes[:2], redelivered, *envelopes[2:]]:
        producer.send(pipeline.telemetry_topic, key=envelope.device.encode(), value=encode(envelope))
    producer.flush()
    config = pipeline.write_config()

    def display(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "consumer_display", "--config", str(config), "--from-beginning", *args],
            capture_output=True,
            text=True,
            timeout=60,
        )

    as_json = display("--json", "--count", "40")
    assert as_json.returncode == 0, as_json.stderr
    assert sorted(decode(line.encode()).seq for line in as_json.stdout.splitlines()) == list(range(40))
    assert "not JSON" in as_json.stderr
    assert "1 reading(s) delivered more than once were shown once" in as_json.stderr

    cut_short = display("--json", "--count", "25")  # records of several partitions arrive in one poll
    assert len(cut_short.stdout.splitlines()) == 25

    as_text = display("--device", "d1", "--count", "5")
    lines = as_text.stdout.splitlines()
    assert len(lines) == 5 and all(" d1 #" in line for line in lines)
    assert [int(line.split("#")[1].split()[0]) for line in lines] == [1, 5, 9, 13, 17]
    assert "t=20.50 | read→publish 0.1ms publish→bridge 0.1ms" in lines[0]
