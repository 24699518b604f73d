"""Usage samples (usage.py) as JSON (jobrund's D-Bus `Usage`, `top --once --json`) and as
jobrun.v1 messages (the gRPC `Usage`), both directions."""

from __future__ import annotations

import dataclasses
import json
from typing import TYPE_CHECKING, Any

from ..usage import Rates, Sample

if TYPE_CHECKING:
    from ..v1 import jobrun_pb2 as pb

_FIELDS = tuple(f.name for f in dataclasses.fields(Sample))
_OPTIONAL = (
    "cpu_seconds",
    "memory_bytes",
    "memory_max",
    "tasks",
    "io_read_bytes",
    "io_write_bytes",
)


def samples_json(samples: list[Sample]) -> str:
    # Not dataclasses.asdict: it deep-copies, and cost 2.7 ms of 200 samples (bench P7).
    return json.dumps([{k: getattr(s, k) for k in _FIELDS} for s in samples], separators=(",", ":"))


def samples_from_json(text: str) -> list[Sample]:
    return [Sample(*(d.get(k) for k in _FIELDS)) for d in json.loads(text)]


def sample_to_proto(s: Sample) -> pb.UsageSample:
    from ..v1 import jobrun_pb2 as pb

    values = {k: getattr(s, k) for k in _OPTIONAL if getattr(s, k) is not None}
    return pb.UsageSample(id=s.id, user=s.user, state=s.state, at=s.at, group=s.group, **values)


def sample_from_proto(m: pb.UsageSample) -> Sample:
    values: dict[str, Any] = {k: getattr(m, k) if m.HasField(k) else None for k in _OPTIONAL}
    return Sample(id=m.id, user=m.user, state=m.state, at=m.at, group=m.group, **values)


def top_dict(s: Sample, r: Rates) -> dict[str, Any]:
    """A row of `jobrun top --once --json`: the sample's counters and the rates over the
    interval; null where the host cannot tell."""
    d = dataclasses.asdict(s)
    del d["at"]
    d.update(dataclasses.asdict(r))
    return d
