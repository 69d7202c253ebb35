"""Run a Kopf registry in-process: in the foreground (the CLI) or in a thread (tests, embedding)."""

import asyncio
import contextlib
import threading
from collections.abc import Iterator

import kopf


def run_foreground(
    registry: kopf.OperatorRegistry,
    settings: kopf.OperatorSettings,
    *,
    standalone: bool,
    liveness: str | None,
) -> None:
    kopf.run(
        registry=registry,
        settings=settings,
        standalone=standalone,
        clusterwide=True,
        liveness_endpoint=liveness,
    )


@contextlib.contextmanager
def running_in_thread(
    registry: kopf.OperatorRegistry,
    settings: kopf.OperatorSettings,
    *,
    standalone: bool = True,
    name: str = "kopf-operator",
    ready_timeout: float = 20.0,
) -> Iterator[threading.Thread]:
    """Start the operator in a thread (its own event loop), wait until ready, stop it on exit."""
    stop = threading.Event()
    ready = threading.Event()
    failure: list[BaseException] = []

    def main() -> None:
        try:
            asyncio.run(
                kopf.operator(
                    registry=registry,
                    settings=settings,
                    standalone=standalone,
                    clusterwide=True,
                    stop_flag=stop,
                    ready_flag=ready,
                )
            )
        except BaseException as exc:  # reported to the caller below
            failure.append(exc)
            ready.set()

    thread = threading.Thread(target=main, name=name, daemon=True)
    thread.start()
    try:
        if not ready.wait(ready_timeout) or failure:
            raise RuntimeError(f"operator did not start: {failure[0] if failure else 'timeout'}")
        yield thread
    finally:
        stop.set()
        thread.join(timeout=15)
