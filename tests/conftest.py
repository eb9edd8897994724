"""Shared pytest setup: single-threaded torch (fast for tiny nets, stable on 2 cores), and the
broker fixtures (``tansu_binary``, ``tansu``) for every test module."""

from __future__ import annotations

import torch
from kafka_fixtures import tansu_binary_fixture, tansu_fixture  # noqa: F401  (registers them)

torch.set_num_threads(1)
