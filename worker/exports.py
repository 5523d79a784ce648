"""Models exported for serving (core.export): `models export-onnx` and the Models page's button."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from core.export import INFO_FILE, export_onnx
from core.folder_kinds import is_onnx_folder
from db import settings
from worker.catalogue import check_made, ensure_model, export_name, model_path


def onnx_path(out: str | Path | None, name: str, precision: str) -> Path:
    """Where an ONNX export goes: `<name>-onnx-<precision>/` in the data folder's exports/, or in the
    folder `out` names when it ends in / or exists (and is not an export itself), else the new
    folder `out`."""
    folder = f"{name}-onnx-{precision}"
    if out is None:
        return settings.home() / "exports" / folder
    path = Path(str(out)).expanduser()
    if is_onnx_folder(path):  # an export already: refused as it is, never written inside
        return path
    return path / folder if str(out).endswith("/") or path.is_dir() else path


def export_onnx_model(sessions: sessionmaker[Session], spec: str, out: str | Path | None = None,
                      precision: str = "fp32", reuse: bool = False) -> dict:
    """Export a model the product knows (bundled, run:ID, a folder) as ONNX; export.json's content
    with the folder written ("path"). With reuse, an export already at that place is returned."""
    with sessions.begin() as session:
        record = ensure_model(session, spec)
        check_made(record)
        path, key = model_path(session, record), record.spec
    target = onnx_path(out, export_name(key), precision)
    if reuse and is_onnx_folder(target) and (target / INFO_FILE).is_file():
        return {**json.loads((target / INFO_FILE).read_text()), "path": str(target), "model": key}
    target.parent.mkdir(parents=True, exist_ok=True)
    return {**export_onnx(path, target, precision), "path": str(target), "model": key}
