# The libvirt-python side of bench/binding.ts: the same calls on the same domain through
# libvirt's own Python binding, so both sides are measured in one run on one machine.
# Run by bench/binding.ts with /usr/bin/python3 (Debian's python3-libvirt):
#   /usr/bin/python3 bench/libvirt-python.py URI UUID CASE THREADS CALLS
# CASE is lookup, lookup-info or xml. Prints one JSON object: {"calls": N, "seconds": S,
# "cpuSeconds": C} (this process's user + system CPU time while the calls ran).
# Threads share one connection, as an agent's calls share one: libvirt-python releases the
# GIL for the duration of each call, and libvirt's remote driver pipelines the requests of
# all threads over the connection's socket.
import json
import resource
import sys
import threading
import time

import libvirt


def main():
    uri, uuid, case, threads, calls = sys.argv[1:6]
    threads = int(threads)
    calls = int(calls)
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    conn = libvirt.open(uri)
    target = conn.lookupByUUIDString(uuid)

    def one():
        if case == "lookup":
            conn.lookupByUUIDString(uuid)
        elif case == "lookup-info":
            conn.lookupByUUIDString(uuid).info()
        elif case == "xml":
            target.XMLDesc(0)
        else:
            raise SystemExit("unknown case " + case)

    for _ in range(min(calls // 10, 2000)):  # warm-up: the connection's buffers, the daemon's
        one()

    per_thread = calls // threads
    start = threading.Barrier(threads + 1)

    def worker():
        start.wait()
        for _ in range(per_thread):
            one()

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for t in pool:
        t.start()
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    start.wait()
    t0 = time.perf_counter()
    for t in pool:
        t.join()
    seconds = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    conn.close()
    print(json.dumps({"calls": per_thread * threads, "seconds": seconds, "cpuSeconds": cpu}))


main()
