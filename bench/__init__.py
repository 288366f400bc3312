"""tidings benchmarks: ratios against peers measured in the same run.

``make bench`` (or ``python -m bench``) starts a private redis-server, runs each
scenario with the contenders alternating (A B A B …), and reports medians. Nothing
here is a test: speed is never asserted inside ``make test``.
"""
