"""The hostile suite: every way the hostile test of issue 16 broke sdclip's promises, written as the
contract that must hold once fixed. Most of it fails until the fixes land; that is its purpose.

A package (this file) so that its module names never collide with ``tests/test_*.py``. It uses only the
public API (``import sdclip``) and the CLI (``sdclip.cli.main`` in-process, ``python -m sdclip.cli`` in a
child process where a test needs one). The one reach into internals, the prompt caches, is the
``cached_tensors`` fixture in ``conftest.py``.

| issue item | file |
| --- | --- |
| 1 threads | test_threads.py |
| 2 silent loss (locking, out == input, earlier results, resume keys) | test_silent_loss.py |
| 3 non-finite weights, outputs, JSON, checkpoints, embeddings | test_nonfinite.py |
| 4 cache memory | test_memory.py |
| 5 FIFOs as images | test_hangs.py |
| 6 parsing time | test_parsing_scale.py |
| 7 unwritable outputs | test_unwritable_outputs.py |
| 8 devices that are not there | test_devices.py |
| 9 well-formed but wrong model files | test_model_files.py |
| 10, 11 bytes that are not UTF-8, line separators, cut characters | test_bytes.py |
| 12 plot-scores on hostile score files | test_plot_scores.py |
| 13 malicious pickles | test_pickles.py |
| 14 raw exceptions from the API | test_api_errors.py |
| 15 EXIF orientation | test_exif.py |
| 16 first contact without network | test_first_contact.py |
| README "Guarantees" | test_guarantees_documented.py |

Tests that take over ~3 s (today or once fixed) are marked ``slow``; they still run in CI.
"""
