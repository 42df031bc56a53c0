"""The task registry: one module per transformers task id, each holding its `SPEC` (the task's
facts, see spec.py) and its pipeline class. Adding a task is one module plus one line here."""
from __future__ import annotations

import importlib
from functools import cache
from typing import TYPE_CHECKING

from ..errors import UnsupportedTaskError

if TYPE_CHECKING:
    from ..pipeline import Pipeline
    from .spec import TaskSpec

MODULES = (
    "feature_extraction",
    "fill_mask",
    "text_classification",
    "token_classification",
    "question_answering",
    "multiple_choice",
    "zero_shot_classification",
    "causal_lm",
    "sparse_embedding",
)


@cache
def pipelines() -> dict[str, type[Pipeline]]:
    """task name -> pipeline class, in registry order (imported on first use)."""
    classes = {}
    for name in MODULES:
        module = importlib.import_module(f"{__name__}.{name}")
        cls = next(v for v in vars(module).values()
                   if isinstance(v, type) and getattr(v, "spec", None) is module.SPEC)
        classes[module.SPEC.name] = cls
    return classes


def specs() -> dict[str, TaskSpec]:
    """task name -> TaskSpec, in registry order."""
    return {name: cls.spec for name, cls in pipelines().items()}


def names() -> tuple[str, ...]:
    return tuple(pipelines())


def task_spec(task: str) -> TaskSpec:
    return pipeline_class(task).spec


def pipeline_class(task: str) -> type[Pipeline]:
    """The pipeline of `task`, or an UnsupportedTaskError naming the served tasks."""
    classes = pipelines()
    if task not in classes:
        raise UnsupportedTaskError(f"task {task!r} is not served by this runtime; tasks: "
                                   f"{', '.join(classes)}")
    return classes[task]


__all__ = ["MODULES", "pipelines", "specs", "names", "task_spec", "pipeline_class"]
