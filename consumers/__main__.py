"""``streamdas consume`` / ``python -m consumers``: run the consumer service.

Examples
--------
>>> main(["--source", "river:SEA", "--limit", "3", "--model", "linear",
...       "--log-level", "WARNING", "--output", "/dev/null"])
0
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from consumers.config import ConfigError, check_config, configure_logging, load_config
from streamdas.params import usage_error

__all__ = ["main"]

log = logging.getLogger("consumers")


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the configuration, install SIGTERM/SIGINT handlers and run; returns the status."""
    try:
        cfg = load_config(argv)
        check_config(cfg)
    except ConfigError as exc:
        usage_error("streamdas consume", str(exc))
    configure_logging(cfg)

    stop = threading.Event()
    service = None

    def on_signal(signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if stop.is_set():  # one line per shutdown, however many signals arrive
            log.debug("received %s again: already stopping", name)
        else:
            log.info("received %s: finishing the batch in hand", name)
        stop.set()
        if service is not None:
            service.request_stop()

    # Installed before the heavy imports: a SIGTERM during start-up is a clean exit too.
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, on_signal)
    telemetry = None
    try:
        from consumers.telemetry import Telemetry
        from streamdas.threads import limit_threads

        try:
            telemetry = Telemetry(cfg)
        except OSError as exc:  # the metrics port is taken, or the address is not this host's
            usage_error(
                "streamdas consume",
                f"argument --metrics-port: cannot serve metrics on "
                f"{cfg.metrics_address}:{cfg.metrics_port}: {exc.strerror or exc}",
            )
        with limit_threads(max(1, cfg.torch_threads)):  # torch and BLAS: see streamdas.threads
            if cfg.source is not None:
                from consumers.embedded import run_embedded

                return run_embedded(cfg, telemetry, stop)
            from consumers.service import KafkaService

            service = KafkaService(cfg, telemetry)
            if stop.is_set():
                service.request_stop()
            return service.run()
    finally:
        if telemetry is not None:
            telemetry.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


if __name__ == "__main__":
    sys.exit(main())
