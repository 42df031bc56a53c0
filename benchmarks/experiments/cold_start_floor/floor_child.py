"""The libraries' part of a cold start, with no code of this project but the session's
build itself (runtime/session.py's create_session, so it is the handler's to the option): run by
benchmarks/experiments/cold_start_floor/run.py as `python -c` in the image's interpreter and layout, never
imported. argv: bundle folder, model file, request text, steps (comma-separated, from
client, libraries, session, tokenizer, powertools, run). In the handler's order: the runtime
client's import, then numpy, onnxruntime and tokenizers, the session built on a thread and,
once it is in native code (create_session signals it), the tokenizer and
Powertools' imports (app.py's) beside it, then one run of the graph. Prints "ready" at the end.
"""
import sys
import threading

folder, model_file, text, steps = sys.argv[1], sys.argv[2], sys.argv[3], set(sys.argv[4].split(","))
if "client" in steps:
    import awslambdaric.bootstrap  # noqa: F401  (what `python -m awslambdaric` imports first)
if "libraries" in steps:
    import numpy as np
    import onnxruntime  # noqa: F401
    import tokenizers
built: dict = {}
native = threading.Event()


def _session():
    from pathlib import Path

    from xlmr_serverless.runtime.session import create_session  # the handler's own options

    try:
        built["session"], _ = create_session(Path(folder, model_file), "cpu", None, False, native)
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
