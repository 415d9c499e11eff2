"""``vipann demo``: the whole method on the embedded default (generated audio, the shipped demo zoo).

* :mod:`~vipann.demo.run`: :func:`run_demo` (corpus, zoo evaluation, transfer, the checks);
* :mod:`~vipann.demo.claims`: the VI-PANN statements the run tests, each decided by a paired interval;
* :mod:`~vipann.demo.report`: the report's tables, captions and its HTML page.
"""

from vipann.demo.run import METHODS, TABLE1, run_demo, table1_rows

__all__ = ["METHODS", "TABLE1", "run_demo", "table1_rows"]
