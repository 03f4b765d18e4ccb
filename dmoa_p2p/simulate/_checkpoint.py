"""Finished sweep points kept on disk, so that a stopped sweep resumes where it was."""

from __future__ import annotations

import collections
import hashlib
import json
import logging
from pathlib import Path

import cattrs

from dmoa_p2p.simulate._metrics import RunResult
from dmoa_p2p.simulate._model import RunConfig

FORMAT = "dmoa-p2p-simulate-point/1"

log = logging.getLogger(__name__)
_converter = cattrs.Converter()
_converter.register_structure_hook(
    collections.Counter, lambda value, _type: collections.Counter(value)
)


class PointStore:
    """One JSON file per finished point, named by a digest of its whole configuration
    (seed included): a point is taken back only for the very run that made it."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)

    def path(self, config: RunConfig) -> Path:
        text = json.dumps(_converter.unstructure(config), sort_keys=True)
        return self.directory / f"point-{hashlib.sha256(text.encode()).hexdigest()[:16]}.json"

    def get(self, config: RunConfig, real: bool) -> RunResult | None:
        """The point's result if kept; a file that cannot be read is run again."""
        path = self.path(config)
        if not path.exists():
            return None
        try:
            data = json.loads(path.read_text("utf-8"))
            if data.get("format") != FORMAT:
                raise ValueError(f"format {data.get('format')!r}")
            result = _converter.structure(data["result"], RunResult)
        except (OSError, ValueError, KeyError, TypeError, cattrs.BaseValidationError) as exc:
            log.warning("%s cannot be read (%s): that point runs again", path, exc)
            return None
        return result if result.config == config and result.real == real else None

    def put(self, result: RunResult) -> None:
        """Write a point, whole or not at all (a stopped write leaves no half file)."""
        path = self.path(result.config)
        data = {"format": FORMAT, "result": _converter.unstructure(result)}
        partial = path.with_suffix(".part")
        partial.write_text(json.dumps(data), "utf-8")
        partial.replace(path)
