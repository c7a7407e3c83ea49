"""A progress bar on stderr for long commands (import, key rotation)."""

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from tqdm import tqdm


@contextmanager
def bar(total: int, label: str) -> Iterator[Callable[[int], object]]:
    with tqdm(total=total, desc=label, unit="rows", leave=False, mininterval=0.5) as t:
        yield t.update
