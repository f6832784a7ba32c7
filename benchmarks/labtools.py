"""What the benchmarks share: shell commands, ovs-ofctl, and start_lab's temp dirs."""
from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path


def sh(*cmd: str, timeout: float = 120, check: bool = True) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): "
                           f"{proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout


def ofctl(*args: str) -> str:
    return sh("ovs-ofctl", "-O", "OpenFlow14", *args)


class TmpFactory:
    """What start_lab needs of pytest's tmp_path_factory."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def mktemp(self, name: str) -> Path:
        return Path(tempfile.mkdtemp(prefix=name + "-", dir=self.root))
