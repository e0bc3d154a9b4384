"""Built-in plugin ``tasks``: benchmark tasks on real, offline data.

Light module: the tasks live in :mod:`mmzoo.builtin.tasks`, imported only
when a task is built.
"""

from mmzoo.hookspecs import hookimpl

_MOD = "mmzoo.builtin.tasks"
_REAL = "mmzoo.builtin.real_tasks"


@hookimpl
def mmzoo_register(registry):
    registry.add_task("digits-sum", f"{_MOD}:DigitsSum",
                      description="both inputs needed: digit image + 'plus n' text -> (d + n) mod 10 "
                                  "(scikit-learn digits, offline)")
    registry.add_task("digits-pair", f"{_MOD}:DigitsPair",
                      description="redundant inputs: digit image + a phrase naming the digit -> d "
                                  "(either input alone suffices)")
    registry.add_task("csv", f"{_MOD}:CsvTask",
                      description="your data: CSV/JSONL with image path, text, numeric/categorical, "
                                  "label (and group) columns; pass data=PATH")
    registry.add_task("icons", f"{_REAL}:IconsTask",
                      description="real image+text: tabler icon (48x48) + its name -> 41 categories, "
                                  "split grouped by the name's first word (vendored)")
    registry.add_task("reviews", f"{_REAL}:ReviewsTask",
                      description="real text+tabular: clothing review title/text + age, feedback, "
                                  "division/department/class -> Rating 1-5 (vendored)")
    registry.add_task("reviews-recommended", f"{_REAL}:ReviewsRecommendedTask",
                      description="real text+tabular: the same reviews -> Recommended IND 0/1 (vendored)")
    registry.add_task("hf-dataset", "mmzoo.builtin.hf_dataset:HfDatasetTask",
                      description="Hugging Face datasets: local csv/json/parquet/imagefolder/webdataset "
                                  "shards or a hub id, map-style or streaming=True; pass path=")
