"""pytest fixtures that start each fake for one test.

Enable with ``pytest_plugins = ["tests.fakes.fixtures"]`` in the root
``conftest.py`` (or import the fixtures into a test module).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .line_api import FakeLineAPI
from .ollama import FakeOllama
from .openai_compat import FakeOpenAICompat
from .replicate import FakeReplicate

LINE_ACCESS_TOKEN = "test-channel-access-token"
REPLICATE_TOKEN = "r8_test"


@pytest.fixture
def fake_line_api() -> Iterator[FakeLineAPI]:
    with FakeLineAPI(access_token=LINE_ACCESS_TOKEN) as fake:
        yield fake


@pytest.fixture
def fake_ollama() -> Iterator[FakeOllama]:
    with FakeOllama() as fake:
        yield fake


@pytest.fixture
def fake_replicate() -> Iterator[FakeReplicate]:
    with FakeReplicate(api_token=REPLICATE_TOKEN) as fake:
        yield fake


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAICompat]:
    with FakeOpenAICompat() as fake:
        yield fake
