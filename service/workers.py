"""The inference threads, and how many cores each forward pass may use.

On a CPU one forward pass spread over every core (one OpenMP team) stalls whenever anything else
needs a core: the event loop parsing requests, a PNG being encoded. The team meets at a barrier
after every layer, so one preempted thread holds up the others, which spin waiting for it. Under
overload the decoder's threads then kept well under all the cores busy (README, Benchmarks).
Passes that each run on one core in threads of their own do not wait for each other, and a
single-threaded convolution is also the more efficient per core.

So there are several inference threads. A pass that starts while no other is running (a lone
request, light load) uses every core, as before; a pass that starts beside others takes its share.
"""

import asyncio
import contextlib
import threading
from concurrent.futures import ThreadPoolExecutor

import torch


# Read at import, on the main thread: a thread's first parallel op copies torch's process-wide
# count, which each pass's setting overwrites, so a thread started later may see a pass's share.
CORES = torch.get_num_threads()


def default_workers(device: torch.device, compiled: bool, threads: int = CORES) -> int:
    """One inference thread per core on a CPU, up to 4 (what was measured is 2); one on a GPU, and
    one for compiled models, whose kernels fix their thread count when they are compiled."""
    return 1 if device.type != "cpu" or compiled else max(1, min(threads, 4))


class InferencePool:
    def __init__(self, workers: int, threads: int | None = None):
        self.workers = workers
        self.threads = threads or CORES  # every core the process may use
        # A thread takes torch's process-wide thread count on its first parallel op, overriding any
        # setting of its own made before; asking for it once first settles that.
        self.executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="inference", initializer=torch.get_num_threads)
        self.busy = 0
        self.lock = threading.Lock()

    def start(self) -> None:
        """Start every thread now: a thread inherits the nice value of the thread that starts it."""
        barrier = threading.Barrier(self.workers)
        for f in [self.executor.submit(barrier.wait) for _ in range(self.workers)]:
            f.result()

    def threads_for_pass(self, running: int) -> int:
        """Intra-op threads for a pass starting while `running` passes (itself included) run."""
        return self.threads if running == 1 else max(1, self.threads // self.workers)

    @contextlib.contextmanager
    def forward_pass(self):
        """Around a forward pass on an inference thread: sets that thread's intra-op threads
        (OpenMP's setting is per thread) for as many passes as are running, itself included."""
        with self.lock:
            self.busy += 1
            running = self.busy
        threads = self.threads_for_pass(running)
        if torch.get_num_threads() != threads:  # each change also rewrites torch's process-wide count
            torch.set_num_threads(threads)
        try:
            yield
        finally:
            with self.lock:
                self.busy -= 1

    async def run(self, fn, *args):
        """fn(*args) on an inference thread, as a pass: other work there (encoding uploads, GAN
        projections) counts as running beside the decoding."""
        def in_pass():
            with self.forward_pass():
                return fn(*args)

        return await asyncio.get_running_loop().run_in_executor(self.executor, in_pass)

    def shutdown(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
