"""The ``zoo`` plugin (entry point ``zoo`` in group ``mmzoo``).

A light module: it reads each entry's small ``card.json`` (no torch) and
registers the entry as a model preset with its weights folder.
"""

import json
from pathlib import Path

from mmzoo.hookspecs import hookimpl

ENTRIES = Path(__file__).resolve().parent / "entries"


@hookimpl
def mmzoo_register(registry):
    for card_path in sorted(ENTRIES.glob("*/card.json")):
        card = json.loads(card_path.read_text(encoding="utf-8"))
        description = (f"{card.get('description', '')} [{card['task']}: test accuracy "
                       f"{card['test_accuracy']:.4f}, macro-F1 {card['test_macro_f1']:.4f}, seed {card['seed']}]")
        registry.add_model(card_path.parent.name, card["name"], description=description,
                           weights=str(card_path.parent))
