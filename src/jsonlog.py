"""JSON-lines logs (train_log.jsonl, search_log.jsonl, per-rank path logs): one reader."""
from __future__ import annotations

import json
import os


def read_jsonl(path: str) -> list[dict]:
    """Records of a JSON-lines file; a line cut by an interruption is skipped; no file: []."""
    if not os.path.exists(path):
        return []
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
    return out
