"""Built-in plugin ``tasks``: benchmark tasks on real, offline data.

Light module: the tasks live in :mod:`mmzoo.builtin.tasks`, imported only
when a task is built.
"""

from mmzoo.hookspecs import hookimpl

_MOD = "mmzoo.builtin.tasks"


@hookimpl
def mmzoo_register(registry):
    registry.add_task("digits-sum", f"{_MOD}:DigitsSum",
                      description="both inputs needed: digit image + 'plus n' text -> (d + n) mod 10 "
                                  "(scikit-learn digits, offline)")
    registry.add_task("digits-pair", f"{_MOD}:DigitsPair",
                      description="redundant inputs: digit image + a phrase naming the digit -> d "
                                  "(either input alone suffices)")
    registry.add_task("csv", f"{_MOD}:CsvTask",
                      description="your data: CSV/JSONL with image path, text, label (and group) "
                                  "columns; pass data=PATH")
