"""AWS Lambda adapter over runtime/ (installed as the package xlmr_lambda)."""
