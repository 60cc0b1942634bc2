"""One input row as the curator sees it: position, id, question, trace, and every field carried through."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Sample:
    index: int  # position in the input (output order)
    id: str
    question: str
    trace: str
    row: dict[str, Any]  # every input field, carried through

    @property
    def digest(self) -> str:
        """A short hash of the row's content: a journaled sample whose row changed is curated again."""
        text = json.dumps(self.row, sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
