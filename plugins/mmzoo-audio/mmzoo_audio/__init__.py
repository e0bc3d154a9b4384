"""mmzoo-audio: the ``audio`` input for mmzoo.

Importing this package (or its plugin module) imports no torch: encoders,
the processor and the task load when a model or task using them is built.
"""

__version__ = "0.1.0"
