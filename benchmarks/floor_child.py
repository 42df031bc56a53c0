"""The libraries' part of a cold start, with no code of this project: run by
benchmarks/cold_start_floor.py as `python -c` in the image's interpreter and layout, never
imported. argv: bundle folder, model file, request text, steps (comma-separated, from
client, libraries, session, tokenizer, powertools, run). In the handler's order: the runtime
client's import, then numpy, onnxruntime and tokenizers, the session built on a thread (its
options as runtime/session.py sets them) and, once it is in native code, the tokenizer and
Powertools' imports (app.py's) beside it, then one run of the graph. Prints "ready" at the end.
"""
import sys
import threading

folder, model_file, text, steps = sys.argv[1], sys.argv[2], sys.argv[3], set(sys.argv[4].split(","))
if "client" in steps:
    import awslambdaric.bootstrap  # noqa: F401  (what `python -m awslambdaric` imports first)
if "libraries" in steps:
    import numpy as np
    import onnxruntime as ort
    import tokenizers
built: dict = {}
native = threading.Event()


def _hook(frame, what, arg):  # the session's build lets the GIL go in this call
    if what == "c_call" and getattr(arg, "__name__", None) == "initialize_session":
        native.set()
        sys.setprofile(None)


def _session():
    import os

    sys.setprofile(_hook)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = len(os.sched_getaffinity(0))
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    try:
        built["session"] = ort.InferenceSession(f"{folder}/{model_file}", opts,
                                                providers=["CPUExecutionProvider"])
    finally:  # a session that fails still lets the main thread go on (and fail at the join)
        native.set()


worker = threading.Thread(target=_session) if "session" in steps else None
if worker is not None:
    worker.start()
    native.wait()
if "tokenizer" in steps:
    built["tokenizer"] = tokenizers.Tokenizer.from_file(f"{folder}/tokenizer.json")
if "powertools" in steps:
    from aws_lambda_powertools import Logger, Metrics  # noqa: F401
    from aws_lambda_powertools.event_handler import APIGatewayRestResolver  # noqa: F401
if worker is not None:
    worker.join()
    if "session" not in built:
        sys.exit(1)  # its error is on stderr
if "run" in steps:
    session = built["session"]
    ids = np.array([built["tokenizer"].encode(text).ids], dtype=np.int64)
    feed = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    feed.update({i.name: np.zeros_like(ids) for i in session.get_inputs() if i.name not in feed})
    session.run(None, feed)
sys.stdout.write("ready\n")
sys.stdout.flush()
