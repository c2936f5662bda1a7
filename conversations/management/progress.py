"""A progress line for management commands, shown only on a terminal."""
import sys
import time


class Progress:
    def __init__(self, label: str, *, stream=None) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self.enabled = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.done, self._shown_at = 0, 0.0

    def advance(self, count: int) -> None:
        self.set(self.done + count)

    def set(self, done: int) -> None:
        self.done = done
        now = time.monotonic()
        if self.enabled and now - self._shown_at > 0.1:
            self._shown_at = now
            self._draw()

    def close(self) -> None:
        if self.enabled:
            self._draw()
            self.stream.write("\n")
            self.stream.flush()

    def _draw(self) -> None:
        self.stream.write(f"\r{self.label} {self.done:,}")
        self.stream.flush()
