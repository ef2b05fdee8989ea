"""The playground: the emulated sheet as an editable grid beside the real sidebar (issue 6)."""

from __future__ import annotations

from pathlib import Path


def serve_playground(data_dir: Path, port: int = 8080) -> None:
    raise SystemExit("the playground is not built yet")
