"""Evaluation with the real HELM: scenario data, prod_env config, helm-run / helm-summarize, stats parsing."""
