"""What every benchmark section shares: inputs, timing, memory, collectives, tables.

The scripts put benchmarks/ on sys.path (run.py does, being there), so these import as
``common.<module>``. Torch and the Python standard library only.
"""
