"""``raysys demo``: the closed loop end to end on local Ray (see :mod:`raysys.demo`)."""

from __future__ import annotations

from typing import Annotated

import typer

from raysys.cli.common import JsonOption, emit, handle_errors


@handle_errors
def demo(
    config: Annotated[str, typer.Option("--config", "-c", help="Config YAML.")] = "configs/quickstart.yaml",
    as_json: JsonOption = False,
) -> None:
    """Train and serve a champion, drift the traffic, watch the monitor retrain and promote on its own.

    Prints a timeline, requests sent and failed, and the live quality of the old and the new
    champion; exit code 1 if the loop did not close, a request failed or quality did not recover.
    """
    from raysys import demo as loop

    result = loop.run(config, as_json)
    emit(result, as_json, lambda _: None)  # the text summary was printed as the demo ran
    if loop.problems(result):
        raise typer.Exit(1)
