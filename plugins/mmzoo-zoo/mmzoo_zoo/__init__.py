"""mmzoo-zoo: named models with trained weights, registered as ``zoo:NAME``.

Each folder under ``entries/`` is a model saved with ``save_pretrained``
plus its ``card.json`` (written by ``build_zoo.py``).
"""

__version__ = "0.1.0"
