"""minimal.env: device choice, seeding, the fast-mode switch, offline and Colab detection."""

import random
import socket
import sys
import time

import numpy as np
import pytest
import torch

from minimal import env


def test_pick_device_defaults_to_an_available_device():
    device = env.pick_device(verbose=False)
    assert device.type in ("cuda", "mps", "cpu")
    if not torch.cuda.is_available():
        assert device.type != "cuda"


def test_pick_device_refuses_an_unavailable_device(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="cuda"):
        env.pick_device("cuda", verbose=False)
    assert env.pick_device("cpu", verbose=False) == torch.device("cpu")


def test_pick_device_prints_its_choice(capsys):
    env.pick_device("cpu")
    assert "device: cpu" in capsys.readouterr().out


def test_same_seed_same_numbers_everywhere():
    def draw():
        env.seed_everything(123)
        return random.random(), np.random.rand(), torch.rand(3).tolist()

    assert draw() == draw()
    env.seed_everything(124)
    assert torch.rand(3).tolist() != draw()[2]


@pytest.mark.parametrize("bad", [-1, 1.5, "3"])
def test_seed_rejects_bad_values(bad):
    with pytest.raises(ValueError, match="seed"):
        env.seed_everything(bad)


@pytest.mark.parametrize(("raw", "fast"), [("", False), ("0", False), ("false", False), ("1", True),
                                           ("true", True), ("YES", True)])
def test_fast_mode_reads_the_switch(monkeypatch, raw, fast):
    monkeypatch.setenv("MINIMAL_FAST", raw)
    assert env.fast_mode() is fast
    assert env.pick(full=600, fast=60) == (60 if fast else 600)


def test_fast_mode_rejects_a_typo(monkeypatch):
    monkeypatch.setenv("MINIMAL_FAST", "ture")
    with pytest.raises(ValueError, match="ture"):
        env.fast_mode()


@pytest.fixture
def fresh_online_cache(monkeypatch):
    monkeypatch.delenv("MINIMAL_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    env.is_online.cache_clear()
    yield
    env.is_online.cache_clear()


def test_offline_switch_answers_without_touching_the_network(monkeypatch, fresh_online_cache):
    def no_network(*args, **kwargs):
        raise AssertionError("the network was touched")

    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setenv("MINIMAL_OFFLINE", "1")
    assert env.is_online() is False


def test_unreachable_network_means_offline(monkeypatch, fresh_online_cache):
    def refused(*args, **kwargs):
        raise OSError("Network is unreachable")

    monkeypatch.setattr(socket, "create_connection", refused)
    assert env.is_online() is False


def test_a_hanging_network_is_answered_within_two_seconds(monkeypatch, fresh_online_cache):
    # A dead resolver or a black-holed route blocks without an error; the probe must still answer in time.
    def hang(*args, **kwargs):
        time.sleep(30)
        raise OSError("timed out")   # what a real connection would do in the end (the probe thread ends quietly)

    monkeypatch.setattr(socket, "create_connection", hang)
    start = time.monotonic()
    assert env.is_online() is False
    # The probe gives up at 1.5 s; the margin only absorbs a loaded CI machine, the hang itself lasts 30 s.
    assert time.monotonic() - start < 5.0


def test_reachable_hub_means_online(monkeypatch, fresh_online_cache):
    class Connection:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: Connection())
    assert env.is_online() is True


def test_colab_detection(monkeypatch):
    assert env.in_colab() is False
    monkeypatch.setitem(sys.modules, "google.colab", object())
    assert env.in_colab() is True
