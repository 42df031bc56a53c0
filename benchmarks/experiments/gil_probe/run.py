"""Which of a cold start's slow loads let the GIL go (measured, not assumed): while one runs on
the main thread, a second thread counts in pure Python; the share of its usual rate it keeps
says how much of the load ran without the GIL. This is why runtime/bundle.py starts the
tokenizer only once onnxruntime's session build is in native code.

    python -m benchmarks.experiments.gil_probe.run BUNDLE [--rounds 3]
"""
from __future__ import annotations

import argparse
import threading
import time
from pathlib import Path
from typing import Callable

from xlmr_serverless.runtime.cpu import isa


def free_share(job: Callable[[], object]) -> tuple[float, float]:
    """(seconds the job took, share of that time a Python thread could run beside it)."""
    stop = threading.Event()
    count = [0]

    def spin() -> None:
        while not stop.is_set():
            count[0] += 1

    t = threading.Thread(target=spin)
    t.start()
    time.sleep(0.2)
    rate = count[0] / 0.2  # counts per second with the GIL to itself (the main thread sleeps)
    count[0] = 0
    t0 = time.perf_counter()
    job()
    took = time.perf_counter() - t0
    stop.set()
    t.join()
    return took, min(1.0, count[0] / rate / took)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args(argv)
    import onnxruntime as ort
    from tokenizers import Tokenizer

    from xlmr_serverless.runtime.manifest import read_manifest
    from xlmr_serverless.runtime.session import create_session

    m = read_manifest(a.bundle)
    model = a.bundle / m.file_for(m.precisions[0]).path
    jobs = {"tokenizer (Tokenizer.from_file)":
            lambda: Tokenizer.from_file(str(a.bundle / m.tokenizer["file"])),
            f"onnxruntime {ort.__version__} session ({model.name})":
            lambda: create_session(model, "cpu", None)}
    print(f"ISA {isa()}; {a.bundle.name}; {a.rounds} rounds\n\n| load | ms | share of it "
          f"another Python thread ran |\n|---|---:|---:|")
    for name, job in jobs.items():
        runs = [free_share(job) for _ in range(a.rounds)]
        ms = sorted(r[0] * 1000 for r in runs)[len(runs) // 2]
        share = sorted(r[1] for r in runs)[len(runs) // 2]
        print(f"| {name} | {ms:.0f} | {share:.0%} |")


if __name__ == "__main__":
    main()
