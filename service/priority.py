"""Decoding before the front door: under overload the CPU goes to the inference threads first.

The event loop parses every request, admitted or refused; the inference threads decode the
admitted ones. On a machine with few cores, clients that retry refused requests at once keep the
loop busy enough to take cores from the decoder, and good throughput falls with the load. A
higher nice value for the loop's thread (Linux threads have their own) lets the scheduler give
the decoder the cores it asks for; the loop still runs whenever a core is free.

A thread inherits the nice value of the thread that starts it, so the inference threads (each
of which starts its own OpenMP team) must exist before the loop's priority is lowered.
"""

import logging
import os
import threading

log = logging.getLogger("facegen.service")


def lower_this_thread(nice: int) -> bool:
    """Raise the calling thread's nice value by `nice`; whether it could (Linux, and 0 < nice)."""
    if nice <= 0 or not hasattr(os, "setpriority") or not hasattr(threading, "get_native_id"):
        return False
    tid = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + nice))  # Linux: a thread id
    except OSError as e:
        log.warning("could not lower the event loop's priority: %s", e)
        return False
    return True
