"""Incidents: opened by a finding, updated by repeats, resolved after clean windows, once each."""

from __future__ import annotations

from raysys.monitoring.alerts import Finding, Findings
from raysys.monitoring.incidents import IncidentBook, read_book, read_incidents, write_incidents
from raysys.storage import Storage

DRIFT = Finding("drift", "warning", "drift in age", {"features": {"age": {"p_value": 1e-5}}})


def quality(value: float, version: str = "v3") -> Finding:
    return Finding("quality", "critical", f"live accuracy {value}", {"value": value}, version)


def test_open_update_resolve_after_clean_windows():
    book = IncidentBook(resolve_after=2)
    (opened,) = book.observe([DRIFT], 1, 100.0)
    assert opened.kind == "opened" and opened.incident["status"] == "open"
    assert opened.incident["windows"] == [1] and opened.incident["evidence"] == DRIFT.evidence
    (updated,) = book.observe([DRIFT], 2, 160.0)
    assert updated.kind == "updated" and updated.incident["id"] == opened.incident["id"]
    assert updated.incident["windows"] == [1, 2]
    assert updated.incident["first_seen"] != updated.incident["last_seen"]
    assert book.observe([], 3, 200.0) == []  # one clean window of two
    (resolved,) = book.observe([], 4, 260.0)
    assert resolved.kind == "resolved" and resolved.incident["status"] == "resolved"
    assert book.open() == []
    (again,) = book.observe([DRIFT], 5, 300.0)  # fires again: a new incident
    assert again.kind == "opened" and again.incident["id"] != opened.incident["id"]


def test_a_repeat_resets_the_clean_count_and_subjects_are_separate():
    book = IncidentBook(resolve_after=2)
    changes = book.observe([quality(0.6, "v3"), quality(0.5, "v4")], 1, 0.0)
    assert [c.incident["subject"] for c in changes] == ["v3", "v4"]
    book.observe([quality(0.6, "v4")], 2, 1.0)  # v3 clean once
    book.observe([quality(0.6, "v3")], 3, 2.0)  # v3 fires again: the clean count starts over
    changes = book.observe([], 4, 3.0)
    assert [c.incident["subject"] for c in changes if c.kind == "resolved"] == ["v4"]


def test_an_unchecked_rule_neither_updates_nor_resolves():
    book = IncidentBook(resolve_after=1)
    book.observe([quality(0.5)], 1, 0.0)
    assert book.observe(Findings([], unchecked={"quality@v3"}), 2, 1.0) == []
    assert [i.key for i in book.open()] == ["quality@v3"]
    (resolved,) = book.observe(Findings([]), 3, 2.0)
    assert resolved.kind == "resolved"


def test_observing_a_window_again_changes_nothing():
    book = IncidentBook(resolve_after=1)
    book.observe([DRIFT], 5, 0.0)
    saved = book.to_dict()
    assert book.observe([DRIFT], 5, 1.0) == [] and book.observe([], 4, 1.0) == []
    assert book.to_dict() == saved


def test_a_restored_book_gives_the_same_changes_with_the_same_ids(tmp_path):
    storage = Storage.open(str(tmp_path))
    book = IncidentBook(resolve_after=3)
    book.observe([DRIFT], 1, 10.0)
    write_incidents(storage, "app", book)
    first = book.observe([DRIFT, quality(0.4)], 2, 20.0)
    restarted = read_book(storage, "app", resolve_after=3)  # died before persisting window 2
    assert restarted.observe([DRIFT, quality(0.4)], 2, 20.0) == first
    assert len({c.id for c in first}) == 2 and restarted.open()[0].windows == [1, 2]


def test_read_incidents_newest_first_and_open_only(tmp_path):
    storage = Storage.open(str(tmp_path))
    assert read_incidents(storage, "app") == []
    book = IncidentBook(resolve_after=1)
    book.observe([DRIFT], 1, 0.0)
    book.observe([quality(0.3)], 2, 1.0)  # drift resolves
    write_incidents(storage, "app", book)
    assert [(i["rule"], i["status"]) for i in read_incidents(storage, "app")] == [
        ("quality", "open"), ("drift", "resolved")]
    assert [i["rule"] for i in read_incidents(storage, "app", open_only=True)] == ["quality"]


def test_no_traffic_opens_between_windows_once_and_resolves_with_traffic():
    book = IncidentBook(resolve_after=1)
    book.observe([], 4, 0.0)
    idle = Finding("no_traffic", "warning", "no request for 400 s", {"idle_s": 400.0})
    (opened,) = book.observe_idle([idle], 400.0)
    assert opened.kind == "opened" and opened.window_seq == 4
    longer = Finding("no_traffic", "warning", "no request for 600 s", {"idle_s": 600.0})
    assert book.observe_idle([longer], 600.0) == []
    assert book.open()[0].evidence == {"idle_s": 600.0}  # refreshed quietly
    (resolved,) = book.observe([], 5, 700.0)  # traffic again: a clean window
    assert resolved.kind == "resolved" and resolved.incident["id"] == opened.incident["id"]
    assert opened.id < resolved.id  # change ids sort in the order they happened
