"""Alert sinks: where incident changes go (``monitor.alerts.sinks``), never blocking the monitor.

- **log**: one line per change on the ``raysys.monitoring.sinks`` logger (WARNING when an
  incident opens, INFO when it is updated or resolves).
- **webhook**: an HTTP POST of the change as JSON (``{"app", "id", "kind", "window_seq",
  "incident"}``) to ``webhook.url`` with ``webhook.headers``. :meth:`AlertSinks.send` only writes
  the change to ``monitor/<app>/outbox/<change id>.json`` (atomic, exclusive) and returns; a
  background thread delivers the outbox oldest first (change ids sort in window order), one at
  a time, retrying a failure with exponential backoff (1 s, 2 s, 4 s, … up to
  ``webhook.max_backoff_s``). A delivered change's id goes to ``outbox/delivered.json`` before
  its file is removed, so each change is delivered once and in order, also across restarts: a
  new :class:`AlertSinks` delivers what the last one left, and a change sent again (a restarted
  monitor re-observing a window) is not delivered twice. A receiver that rejects a change
  outright (a 4xx other than 408/429) does not hold up the rest: the change is moved to
  ``outbox/rejected/`` and logged. Header values and URL secrets never appear in logs. A crash
  between a POST and its record can repeat that one POST: receivers can drop repeats by ``id``.
- **wandb**: ``run.alert`` on the monitor's W&B run when an incident opens (level WARN, ERROR
  if critical) or resolves (INFO); not on updates, which would page every window. In offline
  mode (wandb 0.31) an alert is kept only in the run's transaction log (``run-<id>.wandb``,
  sent by ``wandb sync``), so every change also sets the run's summary key
  ``alerts/<incident id>`` (rule, subject, severity, status, last change, message).
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Any

import pyarrow.fs as pafs

from raysys.config import AlertSinksConfig, WebhookConfig
from raysys.monitoring.incidents import MONITOR_DIR, Change, incident_key
from raysys.secrets import mask_text
from raysys.storage import Storage

logger = logging.getLogger(__name__)

OUTBOX_DIR = "outbox"
DELIVERED_FILE = "delivered.json"
REJECTED_DIR = "rejected"
DELIVERED_KEPT = 1000  # ids remembered to drop a change sent again after delivery
FIRST_BACKOFF_S = 1.0
WANDB_LEVELS = {"opened": "WARN", "resolved": "INFO"}  # updates set the summary only


def change_payload(app: str, change: Change) -> dict[str, Any]:
    """What every sink is given for a change: the change as JSON, with its app."""
    return {"app": app, **change.to_dict()}


def describe(payload: dict[str, Any]) -> str:
    """A change in one line: ``app: incident inc-0003 opened (critical, quality@v3): message``."""
    incident = payload["incident"]
    return (f"{payload['app']}: incident {incident['id']} {payload['kind']} "
            f"({incident['severity']}, {incident_key(incident)}): {incident['message']}")


class AlertSinks:
    """The configured sinks of one app: :meth:`send` returns at once, :meth:`close` stops."""

    def __init__(self, cfg: AlertSinksConfig, storage: Storage, app: str, wandb_run: Any = None):
        self.cfg, self.storage, self.app, self.wandb_run = cfg, storage, app, wandb_run
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if cfg.wandb and wandb_run is None:
            logger.warning("alerts: sinks.wandb is on but the monitor has no W&B run: no W&B "
                           "alerts")
        if cfg.webhook is not None:
            self._outbox = WebhookOutbox(cfg.webhook, storage, app)
            self._thread = threading.Thread(target=self._deliver_forever, daemon=True,
                                            name=f"raysys-alerts-{app}")
            self._thread.start()

    def send(self, change: Change) -> None:
        """Hand a change to every sink; never raises and never waits on the network."""
        payload = change_payload(self.app, change)
        if self.cfg.log:
            level = logging.WARNING if change.kind == "opened" else logging.INFO
            logger.log(level, "alert: %s", describe(payload))
        if self.cfg.webhook is not None:
            try:
                self._outbox.put(payload)
                self._wake.set()
            except OSError as error:  # storage down: the change is still in the monitor's state
                logger.error("alerts: could not queue %s for the webhook: %s", change.id, error)
        if self.cfg.wandb and self.wandb_run is not None:
            self._to_wandb(payload)

    def _to_wandb(self, payload: dict[str, Any]) -> None:
        incident, kind = payload["incident"], payload["kind"]
        critical = incident["severity"] == "critical" and kind != "resolved"
        title = f"{incident['rule']} {kind}: {incident['id']}"[:63]  # W&B: under 64 characters
        try:
            if kind in WANDB_LEVELS:
                self.wandb_run.alert(title=title, text=describe(payload), wait_duration=0.001,
                                     level="ERROR" if critical else WANDB_LEVELS[kind])
            self.wandb_run.summary[f"alerts/{incident['id']}"] = {
                "rule": incident["rule"], "subject": incident["subject"],
                "severity": incident["severity"], "status": incident["status"], "change": kind,
                "message": incident["message"], "window_seq": payload["window_seq"]}
        except Exception as error:  # noqa: BLE001 - W&B trouble must never stop the monitor
            logger.warning("alerts: W&B alert failed: %s", mask_text(str(error)))

    def _deliver_forever(self) -> None:
        first = min(FIRST_BACKOFF_S, self._outbox.cfg.max_backoff_s)
        backoff = first
        while not self._stop.is_set():
            try:
                delivered = self._outbox.deliver_next()
                failed = not delivered and bool(self._outbox.pending())
            except Exception as error:  # noqa: BLE001 - the thread must outlive any one failure
                logger.error("alerts: webhook delivery failed (will retry): %s",
                             mask_text(f"{type(error).__name__}: {error}", self._outbox.secrets))
                delivered, failed = False, True
            if delivered:
                backoff = first
                continue
            if failed:  # wait, then retry (a send or close wakes it sooner)
                self._wake.wait(backoff)
                backoff = min(backoff * 2, self._outbox.cfg.max_backoff_s)
            else:
                self._wake.wait()
            self._wake.clear()

    def pending(self) -> list[str]:
        """Ids of the changes not yet delivered to the webhook, oldest first."""
        return self._outbox.pending() if self.cfg.webhook is not None else []

    def close(self, timeout: float = 5.0) -> None:
        """Stop the delivery thread (waiting up to ``timeout`` for a POST in flight).

        What is undelivered stays in the outbox for the next :class:`AlertSinks` of the app.
        """
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)


class WebhookOutbox:
    """The webhook's undelivered changes under ``monitor/<app>/outbox/``, and their delivery."""

    def __init__(self, cfg: WebhookConfig, storage: Storage, app: str):
        self.cfg, self.storage, self.app = cfg, storage, app
        self.where = (MONITOR_DIR, app, OUTBOX_DIR)
        self.secrets = [v for v in cfg.headers.values() if v]
        self._failures = 0

    def put(self, payload: dict[str, Any]) -> None:
        """Queue a change (once: a change already queued or delivered is not queued again)."""
        if payload["id"] in self._delivered():
            return
        self.storage.create_json(payload, *self.where, f"{payload['id']}.json")

    def pending(self) -> list[str]:
        """Ids of the queued changes, oldest first."""
        selector = pafs.FileSelector(self.storage.path(*self.where), allow_not_found=True)
        names = [i.base_name for i in self.storage.fs.get_file_info(selector)
                 if i.type == pafs.FileType.File and i.base_name.endswith(".json")
                 and i.base_name != DELIVERED_FILE]
        return sorted(name[: -len(".json")] for name in names)

    def _delivered(self) -> list[str]:
        if not self.storage.exists(*self.where, DELIVERED_FILE):
            return []
        return self.storage.read_json(*self.where, DELIVERED_FILE)["ids"]

    def deliver_next(self) -> bool:
        """POST the oldest queued change; True if one was delivered or set aside, else False."""
        try:
            queued = self.pending()
            if not queued:
                return False
            change_id = queued[0]
            delivered = self._delivered()
            if change_id not in delivered:
                payload = self.storage.read_json(*self.where, f"{change_id}.json")
                status = self._post(payload)
                if status is None:
                    return False
                if not 200 <= status < 300:
                    self._reject(change_id, status)
                    return True
                delivered = [*delivered, change_id][-DELIVERED_KEPT:]
                self.storage.write_json({"ids": delivered}, *self.where, DELIVERED_FILE)
            self.storage.delete_file(*self.where, f"{change_id}.json")
            return True
        except (OSError, ValueError) as error:  # storage trouble: retried with the backoff
            logger.warning("alerts: webhook outbox of %s: %s", self.app,
                           mask_text(str(error), self.secrets))
            return False

    def _post(self, payload: dict[str, Any]) -> int | None:
        """The receiver's status, or None to retry (unreachable, a 5xx, 408 or 429)."""
        import httpx

        try:
            response = httpx.post(self.cfg.url, content=json.dumps(payload, default=str).encode(),
                                  headers={"content-type": "application/json", **self.cfg.headers},
                                  timeout=self.cfg.timeout_s)
        except httpx.HTTPError as error:
            self._failures += 1
            if self._failures == 1 or self._failures % 10 == 0:
                logger.warning("alerts: webhook %s unreachable (%d tries, will retry): %s",
                               mask_text(self.cfg.url, self.secrets), self._failures,
                               mask_text(f"{type(error).__name__}: {error}", self.secrets))
            return None
        if response.status_code >= 500 or response.status_code in (408, 429):
            self._failures += 1
            logger.warning("alerts: webhook %s answered %d (will retry)",
                           mask_text(self.cfg.url, self.secrets), response.status_code)
            return None
        self._failures = 0
        return response.status_code

    def _reject(self, change_id: str, status: int) -> None:
        logger.error("alerts: webhook %s rejected %s with %d; kept in %s/%s",
                     mask_text(self.cfg.url, self.secrets), change_id, status,
                     "/".join(self.where), REJECTED_DIR)
        self.storage.move("/".join([*self.where, f"{change_id}.json"]),
                          "/".join([*self.where, REJECTED_DIR, f"{change_id}.json"]))
