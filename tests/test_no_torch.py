"""runtime/ never imports torch or transformers: a subprocess where both are unimportable
serves every task from its bundle."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT, needs_bundles
from xlmr_serverless.runtime.tasks import names

CALLS = {
    "feature-extraction": ("'héllo wörld'", "pooling='mean', normalize=True"),
    "fill-mask": ("'Paris is the <mask>.'", "top_k=2"),
    "text-classification": ("{'text': 'a', 'text_pair': 'b'}", ""),
    "token-classification": ("'Wolfgang lives in Berlin'", "aggregation_strategy='simple'"),
    "question-answering": ("None", "question='Where?', context='In Berlin.'"),
    "multiple-choice": ("{'prompt': 'p', 'choices': ['a', 'b']}", ""),
    "zero-shot-classification": ("'x'", "candidate_labels=['a', 'b']"),
    "causal-lm": ("'The'", "top_k=2"),
    "sparse-embedding": ("['héllo wörld']", "max_active_dims=8"),
}

SCRIPT = """
import sys, json
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('torch', 'transformers', 'optimum'):
            raise ImportError('blocked: ' + name)
sys.meta_path.insert(0, Block())
sys.path.insert(0, {root!r})
from xlmr_serverless.runtime import load
from xlmr_serverless.runtime.tasks import task_spec
out = {{}}
for task, folder, args, kw in {jobs!r}:
    pipe = load(folder)
    out[task] = type(eval('pipe(' + args + (', ' if kw else '') + kw + ')')).__name__
    sample = task_spec(task).sample  # the spec's own sample request, as /predict sends it
    assert pipe(sample['inputs'], **sample.get('parameters', {{}}))
heavy = [m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers')]
print(json.dumps({{'served': out, 'heavy': heavy}}))
"""


@pytest.mark.serving
@needs_bundles  # built with export/ in this process, or prebuilt (tests/bundles.py)
def test_runtime_serves_every_task_without_torch(bundle_factory):
    jobs = [(task, str(bundle_factory(task)), args, kw) for task, (args, kw) in CALLS.items()]
    res = subprocess.run([sys.executable, "-c", SCRIPT.format(root=str(ROOT), jobs=jobs)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    report = json.loads(res.stdout.strip().splitlines()[-1])
    assert sorted(report["served"]) == sorted(CALLS) == sorted(names())
    assert report["heavy"] == []
