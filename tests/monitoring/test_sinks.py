"""Alert sinks: a real webhook receiver on 127.0.0.1 (also one that is down), real W&B offline."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from raysys.config import AlertSinksConfig, WebhookConfig, load_config
from raysys.errors import ConfigError
from raysys.monitoring.alerts import Finding
from raysys.monitoring.incidents import IncidentBook
from raysys.monitoring.sinks import AlertSinks
from raysys.storage import Storage
from tests.modeling.test_tracking import finished_records, of_type, wandb_summary

TOKEN = "s3cret-webhook-token-value"


class Receiver:
    """A webhook receiver on 127.0.0.1: records each POST (body and headers); answers ``status``."""

    def __init__(self, port: int = 0, status: int = 200):
        self.received: list[dict] = []
        self.headers: list[dict] = []
        self.status = status
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                code = receiver.status(body) if callable(receiver.status) else receiver.status
                if code == 200:
                    receiver.received.append(body)
                    receiver.headers.append(dict(self.headers))
                self.send_response(code)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def ids(self) -> list[str]:
        return [body["id"] for body in self.received]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (a receiver that is down)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(condition, what=None, timeout_s: float = 60.0) -> None:
    """Poll until ``condition()`` holds (a bound for a hung delivery, not a timing assert)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"waited {timeout_s:.0f} s for {what and what()}"
        time.sleep(0.05)


def webhook_sinks(port: int, storage: Storage, **webhook) -> AlertSinks:
    cfg = WebhookConfig(url=f"http://127.0.0.1:{port}/hook?token={TOKEN}", max_backoff_s=0.2,
                        headers={"Authorization": f"Bearer {TOKEN}"}, **webhook)
    return AlertSinks(AlertSinksConfig(log=True, webhook=cfg), storage, "shop")


def changes(count: int, start: int = 1) -> list:
    """``count`` changes from an incident book: drift opened, then updated."""
    book = IncidentBook(resolve_after=3)
    drift = Finding("drift", "warning", "drift in age", {"features": {"age": {"p_value": 1e-6}}})
    return [book.observe([drift], seq, float(seq))[0] for seq in range(start, start + count)]


@pytest.fixture()
def storage(tmp_path) -> Storage:
    return Storage.open(str(tmp_path / "store"))


def test_each_change_is_posted_once_in_order_with_its_headers(storage):
    receiver = Receiver()
    sinks = webhook_sinks(receiver.port, storage)
    sent = changes(3)
    for change in sent:
        sinks.send(change)
    wait_for(lambda: len(receiver.received) == 3)
    sinks.close()
    receiver.stop()
    assert receiver.ids() == [c.id for c in sent]
    first = receiver.received[0]
    assert (first["app"], first["kind"], first["incident"]["rule"]) == ("shop", "opened", "drift")
    assert receiver.headers[0]["Authorization"] == f"Bearer {TOKEN}"
    assert sinks.pending() == []


def test_a_receiver_that_is_down_then_back_loses_and_repeats_nothing(storage, caplog):
    port = closed_port()
    sinks = webhook_sinks(port, storage)
    sent = changes(4)
    with caplog.at_level(logging.INFO, logger="raysys.monitoring.sinks"):
        for change in sent:
            sinks.send(change)  # returns at once: the receiver is down
        assert sinks.pending() == [c.id for c in sent]  # queued in the outbox, nothing lost
        wait_for(lambda: "unreachable" in caplog.text, lambda: "a failed try")  # it will retry
        receiver = Receiver(port)  # back up on the same port
        wait_for(lambda: len(receiver.received) == 4, lambda: f"{receiver.ids()} {sinks.pending()}")
        sinks.send(sent[1])  # the same change again (a restarted monitor): not delivered twice
        sinks.send(more := changes(1, start=9)[0])
        wait_for(lambda: len(receiver.received) == 5, lambda: f"{receiver.ids()} {sinks.pending()}")
        sinks.close()
    receiver.stop()
    assert receiver.ids() == [c.id for c in sent] + [more.id]
    assert TOKEN not in caplog.text and "drift in age" in caplog.text  # the log sink, masked


def test_a_new_sinks_delivers_what_the_last_one_left_in_the_outbox(storage):
    port = closed_port()
    first = webhook_sinks(port, storage)
    sent = changes(3)
    for change in sent:
        first.send(change)
    first.close()  # the monitor stops (or dies) while the receiver is down
    assert len(list(Path(storage.path("monitor", "shop", "outbox")).glob("*.json"))) == 3
    receiver = Receiver(port)
    second = webhook_sinks(port, storage)  # the restarted monitor
    wait_for(lambda: len(receiver.received) == 3)
    second.send(sent[0])
    second.close()
    receiver.stop()
    assert receiver.ids() == [c.id for c in sent]
    assert second.pending() == []


def test_a_change_the_receiver_rejects_is_set_aside_and_the_rest_go_on(storage):
    sent = changes(3)
    receiver = Receiver(status=lambda body: 400 if body["id"] == sent[1].id else 200)
    sinks = webhook_sinks(receiver.port, storage)
    for change in sent:
        sinks.send(change)
    wait_for(lambda: len(receiver.received) == 2)
    sinks.close()
    receiver.stop()
    assert receiver.ids() == [sent[0].id, sent[2].id]
    rejected = Path(storage.path("monitor", "shop", "outbox", "rejected"))
    assert [p.stem for p in rejected.glob("*.json")] == [sent[1].id]


def test_wandb_alert_recorded_offline(storage, monkeypatch, tmp_path):
    import wandb

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    for name in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(name, str(tmp_path / name.lower()))
    run = wandb.init(project="alerts-test", group="production", dir=str(tmp_path), mode="offline",
                     settings=wandb.Settings(reinit="create_new"))
    sinks = AlertSinks(AlertSinksConfig(log=False, wandb=True), storage, "shop", wandb_run=run)
    book = IncidentBook(resolve_after=1)
    quality = Finding("quality", "critical", "live accuracy 0.61 is below the floor 0.7",
                      {"value": 0.61}, "v3")
    sent = [*book.observe([quality], 1, 0.0), *book.observe([quality], 2, 1.0),
            *book.observe([], 3, 2.0)]
    assert [c.kind for c in sent] == ["opened", "updated", "resolved"]
    for change in sent:
        sinks.send(change)
    sinks.close()
    run.finish()
    (wandb_file,) = Path(tmp_path, "wandb").glob("offline-run-*/run-*.wandb")
    records = finished_records(wandb_file)
    alerts = of_type(records, "alert")
    assert [(a.title, a.level) for a in alerts] == [  # an update pages nobody
        ("quality opened: inc-0001", "ERROR"), ("quality resolved: inc-0001", "INFO")]
    assert "below the floor" in alerts[0].text
    assert wandb_summary(records)["alerts/inc-0001"]["status"] == "resolved"


def test_a_webhook_url_that_is_not_http_is_a_config_error(tmp_path):
    config = tmp_path / "raysys.yaml"
    hook = f"{{webhook: {{url: 'hooks.local/x?token={TOKEN}'}}}}"
    config.write_text("data: {name: churn, source: {kind: synthetic, rows: 100}, label: churned, "
                      "task: binary}\n"
                      f"monitor: {{alerts: {{sinks: {hook}}}}}\n")
    field = "monitor.alerts.sinks.webhook.url: string should match"
    with pytest.raises(ConfigError, match=field) as error:
        load_config(config)
    assert TOKEN not in str(error.value)
