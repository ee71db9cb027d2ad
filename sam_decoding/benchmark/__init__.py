"""End-to-end benchmarks: suites of questions, the methods compared, the runner and its reports.

``sam-decoding bench`` drives it.
"""
