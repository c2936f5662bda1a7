"""A progress line for management commands, shown only on a terminal."""
import sys
import time


class Progress:
    def __init__(self, label: str, *, total: int | None = None, stream=None) -> None:
        self.label, self.total = label, total
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
        if self.total:
            filled = int(30 * min(self.done / self.total, 1))
            bar = "#" * filled + "-" * (30 - filled)
            text = f"\r{self.label} [{bar}] {self.done:,}/{self.total:,}"
        else:
            text = f"\r{self.label} {self.done:,}"
        self.stream.write(text)
        self.stream.flush()
