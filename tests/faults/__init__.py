"""The fault suite: real processes and private servers, faults played under bounded load.

``make faults`` (``python -m tests.faults``) plays every scenario and prints the table;
``tests/faults/test_faults.py`` plays the short version inside ``make test``.
"""
