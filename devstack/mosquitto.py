"""Mosquitto from Debian, configured so that it never drops queued QoS 1 messages silently."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from devstack.process import ServerProcess, free_port

ACL_TEMPLATE = Path(__file__).resolve().parents[1] / "mosquitto" / "acl.template"


def shipped_acl(bridge_user: str, stage_user: str) -> str:
    """mosquitto/acl.template for these users, as compose's mosquitto-passwd service writes it."""
    text = ACL_TEMPLATE.read_text()
    return text.replace("@BRIDGE_USER@", bridge_user).replace("@STAGE_USER@", stage_user)


# Mosquitto's default max_queued_messages (1000) silently drops QoS 1 messages for slow or offline
# persistent subscribers. These limits are chosen deliberately; the byte bound keeps memory finite.
QUEUE_LIMITS = """\
max_queued_messages 1000000
max_queued_bytes 536870912
max_inflight_messages 0
"""
# As in mosquitto/common/twinpipe.conf: Nagle off on every client socket (commands wait for no delayed ACK).
TCP = "set_tcp_nodelay true\n"


class Mosquitto(ServerProcess):
    name = "mosquitto"

    def __init__(
        self, workdir: Path, port: int | None = None, extra_config: str = "", anonymous: bool = True
    ) -> None:
        super().__init__(workdir)
        self.port = port or free_port()
        self.extra_config = extra_config
        self.anonymous = anonymous
        self.credentials: tuple[str, str] | None = None  # for the readiness check when not anonymous
        self.config_path = workdir / "mosquitto.conf"
        (workdir / "data").mkdir(exist_ok=True)

    def command(self) -> list[str]:
        self.config_path.write_text(
            "user root\n"  # as root, mosquitto otherwise drops to 'mosquitto' and cannot write its data dir
            f"listener {self.port} 127.0.0.1\n"
            f"allow_anonymous {'true' if self.anonymous else 'false'}\n"
            "persistence true\n"
            f"persistence_location {self.workdir / 'data'}/\n"
            "autosave_interval 1\n"
            "log_dest stderr\n"
            "log_type error\nlog_type warning\nlog_type notice\n" + QUEUE_LIMITS + TCP + self.extra_config
        )
        return [shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-c", str(self.config_path)]

    def reconfigure(self, extra_config: str) -> None:
        """Restart on the same port and data with `extra_config` lines instead of the current ones
        (e.g. "max_packet_size 2048\n"); later lines override earlier ones, so "autosave_interval 5"
        replaces the default. "" restores the standard configuration."""
        self.stop()
        self.extra_config = extra_config
        self.start()

    def ready(self) -> bool:
        login = ["-u", self.credentials[0], "-P", self.credentials[1]] if self.credentials else []
        command = ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(self.port), *login]
        result = subprocess.run(
            [*command, "-t", "$SYS/broker/version", "-C", "1", "-W", "1"], capture_output=True, timeout=3
        )
        return result.returncode == 0
