"""Fixtures of the model tests: no test may reach the network (weights come from local files only)."""

from __future__ import annotations

import socket

import pytest


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any connection attempt fails the test: weights never come from the network."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("network access from an offline test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
