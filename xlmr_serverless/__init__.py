"""xlmr-serverless: XLM-RoBERTa, RoBERTa and XLM-RoBERTa-XL served from ONNX bundles on AWS
Lambda. One namespace, so nothing of ours collides with a user's own modules:

    xlmr_serverless.runtime     serving (onnxruntime, tokenizers, numpy)   folder runtime/
    xlmr_serverless.export      build time (torch, transformers, onnx)     folder export/
    xlmr_serverless.aws_lambda  the Lambda adapter (Powertools)            folder lambda/
    xlmr_serverless.cli         the `xlmr` command

benchmarks/ is not installed: it runs from a checkout (`python -m benchmarks`, `xlmr bench`).
"""

__version__ = "0.2.0"
