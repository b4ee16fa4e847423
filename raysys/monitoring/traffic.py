"""A traffic driver: steady HTTP requests with delayed labels, as production would send them.

A few concurrent clients send the rows of a stream, from a given offset on, to ``/v1/predict``
at a steady rate (an open schedule: a slow answer delays only its own client). Each answer's
request id is kept, and after ``label_delay_s`` the true labels of its records go to
``POST /v1/feedback`` (``{"request_id", "row", "label"}``). Every request is counted once:
a non-2xx answer or a connection error is a failure, never retried. :meth:`TrafficDriver.switch`
moves the traffic to another row source (the stream's drifted part) or phase at a given moment;
the tally keeps the answers' quality per phase and model version, so the effect of drift and
of a new champion is measured on the client's side, from the labels it knows.

The driver runs its own event loop in a background thread, so a caller can watch the monitor
meanwhile. :class:`TrafficTally` is the pure part (counts, latencies, quality).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from raysys.config import SyntheticSource

RowSource = Callable[[int, int], pd.DataFrame]
"""Rows ``[start, stop)`` of a stream (inputs and the label), as one frame."""

MAX_ERRORS = 20  # distinct error messages kept (each with its count)


def synthetic_stream(spec: SyntheticSource, offset: int, drifted: bool = True) -> RowSource:
    """Rows of the synthetic stream ``spec`` from global row ``offset`` on.

    ``drifted=False`` gives the same rows as if the source had no drift: the stream continuing
    as it was before ``drift.start_row``.
    """
    from raysys.data import synthetic

    if not drifted:
        spec = spec.model_copy(update={"drift": spec.drift.model_copy(update={"start_row": None})})

    def rows(start: int, stop: int) -> pd.DataFrame:
        following = spec.model_copy(update={"offset": offset + start, "rows": stop - start})
        return synthetic.generate_rows(following, 0, stop - start)

    return rows


def plain(value: Any) -> Any:
    """A JSON-ready scalar: numpy → Python, NaN/NA/NaT → None, timestamps → ISO text."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value.item() if hasattr(value, "item") else value


@dataclass
class TrafficTally:
    """What the driver saw: requests and labels sent, answered and failed; latency; quality."""

    sent: int = 0
    answered: int = 0
    failed: int = 0
    records: int = 0
    labels_sent: int = 0
    labels_failed: int = 0
    errors: Counter = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)
    quality: dict[tuple[str, int], list[float]] = field(default_factory=dict)  # (phase, version) → [n, hits, |err|]

    def error(self, kind: str, message: str) -> None:
        """Count one failed request or label delivery, keeping a few distinct messages."""
        if kind == "predict":
            self.failed += 1
        else:
            self.labels_failed += 1
        key = f"{kind}: {message}"[:300]
        if key in self.errors or len(self.errors) < MAX_ERRORS:
            self.errors[key] += 1

    def answer(self, phase: str, version: int, predictions: list, labels: list, latency_ms: float) -> None:
        """Count one answered request and score its predictions against the true labels."""
        self.answered += 1
        self.records += len(predictions)
        self.latencies_ms.append(latency_ms)
        n, hits, abs_err = self.quality.get((phase, version), [0, 0, 0.0])
        for predicted, label in zip(predictions, labels):
            n += 1
            hits += str(predicted) == str(label)
            if isinstance(predicted, float) and not isinstance(label, str):
                abs_err += abs(predicted - float(label))
        self.quality[(phase, version)] = [n, hits, abs_err]

    def records_in(self, phase: str) -> dict[int, int]:
        """Answered records per model version in one phase."""
        return {v: int(q[0]) for (p, v), q in self.quality.items() if p == phase}

    def to_dict(self, regression: bool = False) -> dict[str, Any]:
        """JSON form: counts, latency percentiles, and per phase and version the live quality."""
        latency = {}
        if self.latencies_ms:
            p50, p95, p99 = np.percentile(self.latencies_ms, [50, 95, 99])
            latency = {"p50": float(p50), "p95": float(p95), "p99": float(p99)}
        quality: dict[str, dict[str, Any]] = {}
        for (phase, version), (n, hits, abs_err) in sorted(self.quality.items()):
            score = {"mae": abs_err / n} if regression else {"accuracy": hits / n}
            quality.setdefault(phase, {})[str(version)] = {"records": int(n), **score}
        return {"requests": self.sent, "answered": self.answered, "failed": self.failed,
                "records": self.records, "labels_sent": self.labels_sent,
                "labels_failed": self.labels_failed, "latency_ms": latency, "quality": quality,
                "errors": dict(self.errors)}


class TrafficDriver:
    """Sends a stream's rows to a served model at a steady rate and its labels after a delay."""

    def __init__(self, url: str, source: RowSource, columns: list[str], label: str, *,
                 rate: float = 10.0, clients: int = 4, records_per_request: int = 1,
                 label_delay_s: float = 2.0, feedback: bool = True, phase: str = "steady",
                 timeout_s: float = 30.0, block_rows: int = 4096):
        if rate <= 0 or clients < 1 or records_per_request < 1 or label_delay_s < 0:
            raise ValueError("rate must be > 0, clients and records_per_request >= 1, "
                             "label_delay_s >= 0")
        self.url, self.columns, self.label = url.rstrip("/"), list(columns), label
        self.rate, self.clients, self.per_request = rate, clients, records_per_request
        self.label_delay_s, self.feedback, self.timeout_s = label_delay_s, feedback, timeout_s
        self.block_rows = max(block_rows, records_per_request)
        self.tally = TrafficTally()
        self.phases: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._source, self._phase, self._position = source, phase, 0
        self._block: tuple[int, list[dict], list] | None = None  # (start, records, labels)
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._labels_pending: set[asyncio.Task] = set()
        self._drain = True

    # ------------------------------------------------------------------ control (any thread)

    def start(self) -> float:
        """Start sending in a background thread; returns the wall-clock start time."""
        if self._thread is not None:
            raise RuntimeError("the traffic driver is already running")
        started = threading.Event()
        self._thread = threading.Thread(target=asyncio.run, args=(self._main(started),),
                                        name="raysys-traffic", daemon=True)
        self._thread.start()
        started.wait()
        with self._lock:
            self.phases.append({"phase": self._phase, "at": time.time()})
            return self.phases[-1]["at"]

    def switch(self, source: RowSource | None = None, phase: str | None = None) -> float:
        """From the next request on, send rows of ``source`` (from its start) as ``phase``."""
        with self._lock:
            if source is not None:
                self._source, self._position, self._block = source, 0, None
            if phase is not None:
                self._phase = phase
            self.phases.append({"phase": self._phase, "at": time.time()})
            return self.phases[-1]["at"]

    def stats(self, regression: bool = False) -> dict[str, Any]:
        """A snapshot of the tally (JSON-able) and the phases so far."""
        with self._lock:
            return {**self.tally.to_dict(regression), "phases": list(self.phases)}

    def records_in(self, phase: str) -> dict[int, int]:
        """Answered records per model version in ``phase`` so far."""
        with self._lock:
            return self.tally.records_in(phase)

    def stop(self, drain_labels: bool = True) -> dict[str, Any]:
        """Stop sending, wait for the answers in flight (and the labels due, unless told not to)."""
        if self._thread is None:
            return self.stats()
        self._drain = drain_labels
        self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join()
        self._thread = None
        return self.stats()

    # ------------------------------------------------------------------ the event loop

    async def _main(self, started: threading.Event) -> None:
        import httpx

        self._loop, self._stopping = asyncio.get_running_loop(), asyncio.Event()
        limits = httpx.Limits(max_connections=self.clients + 8, max_keepalive_connections=self.clients + 8)
        async with httpx.AsyncClient(timeout=self.timeout_s, limits=limits) as client:
            started.set()
            await asyncio.gather(*(self._client(client, i) for i in range(self.clients)))
            if self._labels_pending:
                if not self._drain:
                    for task in self._labels_pending:
                        task.cancel()
                await asyncio.gather(*self._labels_pending, return_exceptions=True)

    async def _client(self, client, index: int) -> None:
        """One client: a request every ``clients / rate`` seconds, offset by its index."""
        interval = self.clients / self.rate
        next_at = self._loop.time() + index / self.rate
        while not self._stopping.is_set():
            try:
                await asyncio.wait_for(self._stopping.wait(), max(0.0, next_at - self._loop.time()))
                return
            except asyncio.TimeoutError:
                pass
            next_at = max(next_at + interval, self._loop.time())  # behind schedule: no burst
            await self._request(client)

    def _take(self) -> tuple[str, list[dict], list]:
        """The next ``records_per_request`` records of the current source, their labels, the phase."""
        with self._lock:
            phase, start = self._phase, self._position
            self._position += self.per_request
            block = self._block
            if block is None or not block[0] <= start <= block[0] + len(block[1]) - self.per_request:
                frame = self._source(start, start + self.block_rows)
                records = frame[self.columns].astype(object).to_dict("records")
                records = [{k: plain(v) for k, v in r.items()} for r in records]
                self._block = (start, records, [plain(v) for v in frame[self.label]])
            first, records, labels = self._block
            offset = start - first
            self.tally.sent += 1
            return phase, records[offset:offset + self.per_request], labels[offset:offset + self.per_request]

    async def _request(self, client) -> None:
        import httpx

        phase, records, labels = self._take()
        began = time.perf_counter()
        try:
            response = await client.post(f"{self.url}/v1/predict", json={"records": records})
        except httpx.HTTPError as error:
            with self._lock:
                self.tally.error("predict", f"{type(error).__name__}: {error}")
            return
        latency_ms = (time.perf_counter() - began) * 1000
        if not response.is_success:
            with self._lock:
                self.tally.error("predict", f"HTTP {response.status_code}: {response.text[:200]}")
            return
        answer = response.json()
        with self._lock:
            self.tally.answer(phase, int(answer["model_version"]), answer["predictions"], labels, latency_ms)
        if self.feedback:
            task = asyncio.ensure_future(self._label_later(client, answer["request_id"], labels))
            self._labels_pending.add(task)
            task.add_done_callback(self._labels_pending.discard)

    async def _label_later(self, client, request_id: str, labels: list) -> None:
        """After the label delay, send the true labels of one answered request."""
        import httpx

        await asyncio.sleep(self.label_delay_s)
        body = [{"request_id": request_id, "row": row, "label": label} for row, label in enumerate(labels)]
        try:
            response = await client.post(f"{self.url}/v1/feedback", json=body)
        except httpx.HTTPError as error:
            with self._lock:
                self.tally.error("feedback", f"{type(error).__name__}: {error}")
            return
        with self._lock:
            if response.is_success:
                self.tally.labels_sent += len(body)
            else:
                self.tally.error("feedback", f"HTTP {response.status_code}: {response.text[:200]}")
