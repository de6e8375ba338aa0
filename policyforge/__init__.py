"""policyforge: reinforcement-learning post-training of language-model policies.

The command line is `policyforge` (`policyforge --help`); from Python, `policyforge.api` has the same runs
(`from policyforge.api import Config, train`).
"""
