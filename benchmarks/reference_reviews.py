"""scikit-learn references for the ``reviews`` and ``reviews-recommended`` tasks.

    PYTHONPATH=. python benchmarks/reference_reviews.py [--data FOLDER] [--seed 0]

TF-IDF (word 1-2 grams) + logistic regression on the task's text input
(title + review text), the table alone (standardised numbers with a missing
indicator, one-hot categories; the missing cell its own category), and both
side by side; each also with ``class_weight="balanced"`` (the loss weighted by
n / (k * count) per class, as ``mmzoo train --class-weight balanced`` does),
the fair reference for a class-weighted mmzoo model's macro-F1. Same split as the tasks (seeded 60/20/20 by row; the
references fit on train + val, score on test).
"""

from __future__ import annotations

import numpy as np
from _reference import arguments, report, train_and_test
from scipy import sparse
from sklearn.compose import ColumnTransformer
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

import mmzoo
from mmzoo.builtin.real_tasks import REVIEW_CATEGORICAL, REVIEW_NUMERIC


def table(rows):
    numeric = np.array([[np.nan if r[c] is None else r[c] for c in REVIEW_NUMERIC] for r in rows], dtype=float)
    categorical = np.array([[r[c] or "<missing>" for c in REVIEW_CATEGORICAL] for r in rows], dtype=object)
    return numeric, categorical


def main() -> None:
    args = arguments(__doc__.splitlines()[0])
    for name in ("reviews", "reviews-recommended"):
        task = mmzoo.get_task(name, seed=args.seed, **({"data": args.data} if args.data else {}))
        train, y_train, test, y_test = train_and_test(task.splits())
        words = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
        text_train, text_test = words.fit_transform(train["text"]), words.transform(test["text"])
        columns = ColumnTransformer([
            ("numeric", make_pipeline(SimpleImputer(add_indicator=True), StandardScaler()),
             list(range(len(REVIEW_NUMERIC)))),
            ("categorical", OneHotEncoder(handle_unknown="ignore"),
             list(range(len(REVIEW_NUMERIC), len(REVIEW_NUMERIC) + len(REVIEW_CATEGORICAL)))),
        ])
        as_frame = lambda rows: np.concatenate(table(rows), axis=1)  # noqa: E731
        tab_train = sparse.csr_matrix(columns.fit_transform(as_frame(train["tabular"])))
        tab_test = sparse.csr_matrix(columns.transform(as_frame(test["tabular"])))

        def predict(x_train, x_test, class_weight=None):
            model = LogisticRegression(max_iter=2000, C=4.0, class_weight=class_weight)
            return model.fit(x_train, y_train).predict(x_test)

        both_train = sparse.hstack([text_train, tab_train]).tocsr()
        both_test = sparse.hstack([text_test, tab_test]).tocsr()
        rows = [("majority class", np.full_like(y_test, np.bincount(y_train).argmax()))]
        for weighting, suffix in ((None, ""), ("balanced", ", balanced")):
            rows += [(f"tfidf+logreg (text{suffix})", predict(text_train, text_test, weighting)),
                     (f"logreg (tabular{suffix})", predict(tab_train, tab_test, weighting)),
                     (f"tfidf+logreg (text+tabular{suffix})", predict(both_train, both_test, weighting))]
        report(name, rows, y_test, args.json)


if __name__ == "__main__":
    main()
