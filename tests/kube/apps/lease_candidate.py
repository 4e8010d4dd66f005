"""A leader-election candidate as its own process, for the failover test (it is killed with SIGKILL).

Usage: ``python -m tests.kube.apps.lease_candidate KUBECONFIG NAMESPACE LEASE IDENTITY DURATION DEADLINE
RETRY``. It prints ``LEADING <monotonic>`` when it gains leadership and ``STOPPED <monotonic> <reason>``
when it loses it, and runs until killed (SIGTERM: a clean stop that releases the Lease).
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from pathlib import Path

from lazystream.kube.client import api_client
from lazystream.kube.leader import LeaderElector, LeaseSettings


async def main(argv: list[str]) -> None:
    kubeconfig, namespace, lease, identity, duration, deadline, retry = argv
    settings = LeaseSettings(namespace, lease, float(duration), float(deadline), float(retry))

    def report(leading: bool) -> None:
        if leading:
            print(f"LEADING {time.monotonic():.6f}", flush=True)
        else:
            print(f"STOPPED {time.monotonic():.6f} {elector.terms[-1].reason}", flush=True)

    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    with api_client(Path(kubeconfig)) as api:
        elector = LeaderElector(api, settings, identity=identity, on_change=report)
        await elector.start()
        print("STARTED", flush=True)
        await stop.wait()
        await elector.stop()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
