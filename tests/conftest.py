"""Shared pytest setup: single-threaded torch (fast for tiny nets, stable on 2 cores)."""

from __future__ import annotations

import torch

torch.set_num_threads(1)
