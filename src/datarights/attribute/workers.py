"""The per-training-set work spread over Ray workers (the optional extra: pip install 'datarights[ray]').

`store.sync` asks for the rows of the works a store lacks, batch by batch. `ray_featurize` returns a
drop-in for the method's own featurizer that splits every batch into one shard per worker and runs
each shard as a Ray task on a copy of the model and the training set (put into Ray's object store
once). A row depends only on its work's content and its content-seeded draws, never on which batch
or worker computed it, so the store's rows are the single-process path's, up to float rounding of
batched matrix products. The driver writes them into the store, so a crash of a worker loses no
store row that was already written.

Without `address` a local Ray is started with `workers` CPUs (one torch thread per task, so the
tasks never oversubscribe the cores); with `address` the same code runs against a running cluster,
and tasks ask for one GPU each when `gpus` is set (the model is moved to the task's GPU).
"""

from __future__ import annotations

from typing import Callable

import torch

from ..errors import DatarightsError

INSTALL = "pip install 'datarights[ray]'"


def ray_module():
    try:
        import ray
    except ImportError:
        raise DatarightsError(f"workers run on Ray, which is not installed: {INSTALL}") from None
    return ray


def _on(model, train, device: torch.device):
    """The model and the training set's tensors on `device` (copies when they live elsewhere)."""
    import copy
    from dataclasses import replace

    if model.device != device:
        model = copy.deepcopy(model).to(device)
    if train is None:
        return model, None
    return model, replace(train, x0=train.x0.to(device), states=train.states.to(device),
                          caption=train.caption.to(device))


def _rows_task(model, train, method: str, cfg, idx: list[int], seeds: list[int], gpu: bool) -> torch.Tensor:
    from .store import ROWS

    torch.set_num_threads(1)
    if gpu:
        model, train = _on(model, train, torch.device("cuda"))
    rows = ROWS[method].featurize(model, train, cfg, torch.tensor(idx, device=model.device), seeds)
    return rows.detach().float().cpu()


def ray_featurize(model, method: str, cfg, workers: int, address: str | None = None,
                  gpus: bool = False) -> tuple[Callable, Callable]:
    """(featurize, shutdown): a featurizer for `store.sync` that computes each batch's rows as `workers` Ray tasks."""
    ray = ray_module()
    if workers < 1:
        raise DatarightsError(f"workers must be at least 1, got {workers}")
    started = not ray.is_initialized()
    if started:
        try:
            if address:
                ray.init(address=address, log_to_driver=False)
            else:
                ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise DatarightsError(f"cannot start or reach Ray{f' at {address}' if address else ''}: "
                                  f"{str(e).splitlines()[0][:200]}") from None
    if gpus and not ray.cluster_resources().get("GPU"):
        raise DatarightsError("the Ray cluster has no GPUs; leave out the GPU option to run the workers on CPUs")
    remote = ray.remote(num_cpus=1, num_gpus=1 if gpus else 0)(_rows_task)
    cpu_model = _on(model, None, torch.device("cpu"))[0]
    model_ref, put = ray.put(cpu_model), {}        # workers unpickle on their own device

    def featurize(t, idx: torch.Tensor, seeds: list[int]) -> torch.Tensor:
        if id(t) not in put:                       # the whole set once, or each streamed batch
            put.clear()
            put[id(t)] = ray.put(_on(cpu_model, t, torch.device("cpu"))[1])
        idx = idx.tolist()
        size = -(-len(idx) // workers)
        parts = [(idx[s:s + size], seeds[s:s + size]) for s in range(0, len(idx), size)]
        futures = [remote.remote(model_ref, put[id(t)], method, cfg, i, sd, gpus) for i, sd in parts]
        return torch.cat(ray.get(futures)).to(model.device)

    def shutdown() -> None:
        if started:
            ray.shutdown()

    return featurize, shutdown
