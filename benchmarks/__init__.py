"""streamdas benchmark suite: ``python -m benchmarks [--quick] [--only NAME] [--out FILE.md]``.

One module per benchmark (throughput, sizing, scaling, memory, minibatch, gpu, accuracy), each
with ``run(sizes) -> list[Section]``; see :mod:`benchmarks.__main__` and ``docs/benchmarks.md``.
Separate, not part of the suite: ``benchmarks.kafka_load`` (consumer-service load test, needs a
broker), ``benchmarks.drift_reaction`` and ``benchmarks.pruning_rule``.
"""
