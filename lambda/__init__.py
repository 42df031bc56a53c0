"""AWS Lambda adapter over runtime/ (installed as xlmr_serverless.aws_lambda)."""
