"""The hostile suite: every way issue 16's hostile test broke sdclip's promises, as the contract once fixed.

A package (with this file) so that its test module names never collide with ``tests/test_*.py``.
"""
