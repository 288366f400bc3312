"""Sans-IO policies: the decisions, with no I/O and no anyio.

Back-off delays, restart intensity, glob matching, name rules, the status machine
and the reconnect policy, and subscription bookkeeping. Each is plain synchronous
code over plain data, table-tested; the async shells in ``supervisors/`` and
``actors/`` follow what these decide. This package imports the standard library
only (a test checks it).
"""
