"""Run one pass from a config file and die by SIGKILL after Meta answered, before the sheet is
written: what a crash, an OOM kill or a pulled plug does to a real process.

    python kill_before_write_back.py bridge.toml   (the Meta token in the variable it names)
"""

from __future__ import annotations

import os
import signal
import sys

from sheet_bridge.config import load_config
from sheet_bridge.sync.run import Bridge


def main(path: str) -> None:
    bridge = Bridge.from_config(
        load_config(path), before_write_back=lambda: os.kill(os.getpid(), signal.SIGKILL)
    )
    bridge.sync(trigger="crash-test")
    sys.exit("the pass reached its end: the kill did not happen")


if __name__ == "__main__":
    main(sys.argv[1])
