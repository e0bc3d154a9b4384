"""The built-in fusions, one module each.

This package imports no torch: the registry imports a fusion's module only
when a model using it is built (``mmzoo.builtin.fusions.concat:ConcatFusion``).
Shared masking and attention helpers live in :mod:`._common`.
"""
