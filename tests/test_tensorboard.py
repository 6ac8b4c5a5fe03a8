"""rnnlm/tensorboard.py: event files that match the JSON log, read back by an independent reader; resume purges."""

import json
import pathlib
import struct

import pytest

from rnnlm.workdir import MetricLog


def read_events(path) -> list:
    """The events of one TFRecord file, checking every record's CRC (an independent reader)."""
    from tensorboardX.proto.event_pb2 import Event
    from tensorboardX.record_writer import masked_crc32c
    data, events, offset = pathlib.Path(path).read_bytes(), [], 0
    while offset < len(data):
        header = data[offset:offset + 8]
        (length,) = struct.unpack("<Q", header)
        (header_crc,) = struct.unpack("<I", data[offset + 8:offset + 12])
        payload = data[offset + 12:offset + 12 + length]
        (payload_crc,) = struct.unpack("<I", data[offset + 12 + length:offset + 16 + length])
        if header_crc != masked_crc32c(header) or payload_crc != masked_crc32c(payload):
            raise ValueError(f"{path}: bad CRC at byte {offset}")
        events.append(Event.FromString(payload))
        offset += 16 + length
    return events


@pytest.mark.slow
def test_tensorboard_events_match_the_json_log(char_run):
    files = sorted(char_run.glob("events.out.tfevents.*"))
    assert len(files) == 1
    events = read_events(files[0])
    assert events[0].file_version == "brain.Event:2"
    scalars = {(e.step, v.tag): v.simple_value for e in events[1:] for v in e.summary.value}
    records = [json.loads(line) for line in (char_run / "metrics.jsonl").read_text().splitlines()]
    for record in records:
        assert scalars[(record["step"], f"{record['split']}/loss")] == pytest.approx(record["loss"], rel=1e-6)
    assert {tag for _, tag in scalars} >= {"train/loss", "train/grad_norm", "train/learning_rate", "test/perplexity"}


def test_tensorboard_resume_purges_the_dropped_steps(tmp_path):
    log = MetricLog(tmp_path / "metrics.jsonl")
    for step in (1, 2, 3):
        log.write({"step": step, "split": "train", "loss": float(step)})
    resumed = MetricLog(tmp_path / "metrics.jsonl")
    resumed.truncate_after(2)
    resumed.write({"step": 3, "split": "train", "loss": 30.0})
    log.events.close()
    resumed.events.close()
    first, second = sorted(tmp_path.glob("events.out.tfevents.*"), key=lambda p: p.name.rsplit(".", 1)[-1])
    assert [e.step for e in read_events(first) if e.summary.value] == [1, 2, 3]
    events = read_events(second)
    starts = [e.step for e in events if e.session_log.status == e.session_log.START]
    assert starts == [3]  # TensorBoard hides the first file's events from step 3 on
    assert events[-1].summary.value[0].simple_value == 30.0
    assert [json.loads(line)["loss"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [1, 2, 30]
    with pytest.raises(ValueError, match="bad CRC"):
        data = bytearray(first.read_bytes())
        data[20] ^= 0xFF
        first.write_bytes(bytes(data))
        read_events(first)
