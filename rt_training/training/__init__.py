"""Training: Delta training sets to tensors, the model, the loop, checkpoints, the registry and the gate.

Modules, in the order data flows through them: ``data`` (Delta version → tensors, sharded batches), ``models``,
``loop`` (``train``), ``metrics``, ``checkpoints`` (atomic, sha256-verified, with lineage), ``gate`` (promote or
not), ``registry`` (champion history in Delta) and ``entrypoint`` (one process or torchrun, Dagster Pipes).
Nothing is imported here, so importing the package does not import torch.
"""
