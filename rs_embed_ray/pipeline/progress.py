"""The driver's progress bar of one stage (tqdm), shared by both executors."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def progress(total: int, desc: str, enabled: bool) -> Iterator[Any]:
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=desc, unit="item", disable=not enabled or total <= 0, leave=True)
    try:
        yield bar
    finally:
        bar.close()
