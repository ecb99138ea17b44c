"""The one thread that runs model work on the host: model loading, warm-up and every batch.

Why one thread: torch's CPU operators parallelise with OpenMP, and OpenMP keeps a team of worker
threads *per calling thread*. libgomp counts every team's threads, and once there are more than
CPUs it stops letting idle workers spin and puts them to sleep between parallel regions. A
transformer layer on a batch of one sentence is hundreds of small parallel regions, so each pays a
wake-up: on 2 CPUs, MiniLM went from 5 ms to 10-11 ms per sentence as soon as a second thread had
run it (the loader thread, then the model thread), and stayed there. ``torch.set_num_threads`` is
per thread too, so a thread pool never inherited the configured count.

So every model's loading and execution goes through one :class:`ComputeThread`, created with the
intra-op thread count, and the event-loop thread is kept at one intra-op thread (it only runs models
that take microseconds, where a team would cost more than it saves). Models on one worker share the
device anyway: running their batches one after another on one thread is what the device does.
"""

from __future__ import annotations

import concurrent.futures
import os

from gpupool_worker.engine.device import torch_available

__all__ = ["ComputeThread"]


def _set_torch_threads(threads: int) -> None:
    if torch_available():
        import torch

        torch.set_num_threads(threads)


class ComputeThread:
    """A single-thread executor whose thread runs torch with ``threads`` intra-op threads.

    Without torch (a CPU-only worker on ONNX Runtime) it is the same single thread; ONNX Runtime
    sizes its own thread pool per session (engine.models.ort_encoder)."""

    def __init__(self, threads: int = 0, *, name: str = "gpupool-compute") -> None:
        if threads > 0:
            self.threads = threads
        elif torch_available():
            import torch

            self.threads = torch.get_num_threads()
        else:
            self.threads = len(os.sched_getaffinity(0))
        self.executor = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix=name, initializer=_set_torch_threads, initargs=(self.threads,))

    def keep_caller_single_threaded(self) -> None:
        """One intra-op thread for the calling (event-loop) thread: no second OpenMP team."""
        _set_torch_threads(1)

    def shutdown(self) -> None:
        self.executor.shutdown(wait=True)
