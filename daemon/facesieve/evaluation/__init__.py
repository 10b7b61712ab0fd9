"""Measuring the models: `evaluate` on labelled folders, `human_eval` against reviewers'
verdicts, and `learn`, which fits the gender head with k-fold figures."""
