"""Shared plotting plumbing: a headless pyplot, the vital / non-vital colours, PNG output."""
from __future__ import annotations

import base64
import io
import os

from src.context import pyplot  # noqa: F401  (re-exported; the one place that picks the backend)

VITAL_COLOR = "#d62728"      # red: blocks on every input->output path (the hourglass neck)
NONVITAL_COLOR = "#1f77b4"   # blue: blocks that a shortcut can bypass (the bulb)
VITAL_LABEL = "vital (on every input→output path)"
NONVITAL_LABEL = "non-vital (bypassable by a shortcut)"


def vital_handles():
    """Legend handles for the two block colours."""
    from matplotlib.patches import Patch
    return [Patch(color=VITAL_COLOR, label=VITAL_LABEL),
            Patch(color=NONVITAL_COLOR, label=NONVITAL_LABEL)]


def save_png(fig, path: str, dpi: int = 110) -> str:
    """Write ``fig`` to ``path`` (folders created) and close it."""
    from src.checkpoint import atomic_write_bytes
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    pyplot().close(fig)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_write_bytes(path, buf.getvalue())
    return path


def png_data_uri(fig, dpi: int = 100) -> str:
    """``fig`` as a ``data:image/png;base64,...`` URI (the figure is closed)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    pyplot().close(fig)
    return file_data_uri_bytes(buf.getvalue())


def file_data_uri_bytes(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def scale_unit(values) -> tuple[float, str]:
    """(divisor, suffix) that keeps the largest of ``values`` readable: 1e6 'M', 1e3 'K', 1 ''."""
    top = max([abs(float(v)) for v in values] or [0.0])
    if top >= 1e6:
        return 1e6, "M"
    if top >= 1e3:
        return 1e3, "K"
    return 1.0, ""
