"""The evaluation farm: chunks of sample indices run as Ray tasks (one CPU, or one GPU, each).

At most `workers` chunks are in flight; results come back as they finish (a progress bar counts
them) and are returned in chunk order, so the driver's float64 sums are the same for any number
of workers. `on_result(i, result)` is called as each one lands (the sweep writes a cell to
disk as soon as its last chunk is in). Without Ray (`runtime=inprocess`) the same chunks run
in a loop in this process.
"""
from __future__ import annotations

from typing import Callable

from tqdm.auto import tqdm

from treediff.eval.chunks import Chunk, ChunkResult, run_chunk

from .loop import StageFailed


def _remote(num_cpus: int, num_gpus: int):
    import ray

    # max_calls=0 (no limit): Ray's default for GPU tasks is 1, a fresh process per chunk, which
    # would load torch, CUDA and every model again for each chunk; the process's model cache
    # (treediff.eval.chunks) serves every later chunk instead
    @ray.remote(num_cpus=num_cpus, num_gpus=num_gpus, max_retries=1, max_calls=0)
    def chunk_task(chunk: Chunk) -> ChunkResult:
        import torch
        torch.set_num_threads(max(1, num_cpus))
        return run_chunk(chunk)
    return chunk_task


def run_farm(chunks: list[Chunk], workers: int, runtime: str = "ray", cpus_per_worker: int = 1,
             use_gpu: bool = False, desc: str = "eval",
             on_result: Callable[[int, ChunkResult], None] | None = None) -> list[ChunkResult]:
    if workers < 1:
        raise ValueError(f"eval.workers: must be >= 1, got {workers}")
    results: list[ChunkResult | None] = [None] * len(chunks)
    bar = tqdm(total=len(chunks), desc=desc, unit="chunk", disable=None)
    try:
        if runtime != "ray":
            for i, chunk in enumerate(chunks):
                results[i] = run_chunk(chunk)
                if on_result:
                    on_result(i, results[i])
                bar.update()
            return results  # type: ignore[return-value]
        import ray

        task = _remote(cpus_per_worker, 1 if use_gpu else 0)
        pending: dict = {}
        todo = iter(enumerate(chunks))
        while True:
            while len(pending) < workers:
                nxt = next(todo, None)
                if nxt is None:
                    break
                pending[task.remote(nxt[1])] = nxt[0]
            if not pending:
                break
            done, _ = ray.wait(list(pending), num_returns=1)
            i = pending.pop(done[0])
            try:
                results[i] = ray.get(done[0])
            except ray.exceptions.RayTaskError as e:
                cause = e.cause if isinstance(e.cause, Exception) else e
                raise StageFailed(f"{desc}: chunk {chunks[i].key} [{chunks[i].indices[0]}..{chunks[i].indices[-1]}] "
                                  f"failed: {cause}") from e
            if on_result:
                on_result(i, results[i])
            bar.update()
        return results  # type: ignore[return-value]
    finally:
        bar.close()
