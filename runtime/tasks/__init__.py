"""One module per transformers task id; TASKS maps a bundle's task to its pipeline class."""
from __future__ import annotations

from ..pipeline import Pipeline
from .causal_lm import CausalLMPipeline
from .feature_extraction import FeatureExtractionPipeline
from .fill_mask import FillMaskPipeline
from .multiple_choice import MultipleChoicePipeline
from .question_answering import QuestionAnsweringPipeline
from .text_classification import TextClassificationPipeline
from .token_classification import TokenClassificationPipeline
from .zero_shot_classification import ZeroShotClassificationPipeline

TASKS: dict[str, type[Pipeline]] = {p.task: p for p in (
    FeatureExtractionPipeline, FillMaskPipeline, TextClassificationPipeline,
    TokenClassificationPipeline, QuestionAnsweringPipeline, MultipleChoicePipeline,
    ZeroShotClassificationPipeline, CausalLMPipeline)}

__all__ = ["TASKS"]
