"""scikit-learn references for the ``icons`` task.

    PYTHONPATH=. python benchmarks/reference_icons.py [--data FOLDER] [--seed 0]

Text alone: TF-IDF character 1-5-grams of the icon name + logistic
regression; image alone: logistic regression on the 48x48 pixels reduced by
PCA; both: the two feature sets side by side. Same split as the task
(grouped by the name's first word, seeded 60/20/20 by group; the references
fit on train + val, score on test).
"""

from __future__ import annotations

import numpy as np
from _reference import arguments, report, train_and_test
from scipy import sparse
from sklearn.decomposition import PCA
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

import mmzoo


def main() -> None:
    args = arguments(__doc__.splitlines()[0])
    task = mmzoo.get_task("icons", seed=args.seed, **({"data": args.data} if args.data else {}))
    train, y_train, test, y_test = train_and_test(task.splits())
    chars = TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 5), sublinear_tf=True)
    text_train, text_test = chars.fit_transform(train["text"]), chars.transform(test["text"])
    pixels = lambda images: (255 - np.stack(images).reshape(len(images), -1)) / 255.0  # noqa: E731
    pca = PCA(n_components=128, random_state=0).fit(pixels(train["image"]))
    scale = StandardScaler()
    image_train = scale.fit_transform(pca.transform(pixels(train["image"])))
    image_test = scale.transform(pca.transform(pixels(test["image"])))

    def predict(x_train, x_test, c=4.0):
        return LogisticRegression(max_iter=3000, C=c).fit(x_train, y_train).predict(x_test)

    both_train = sparse.hstack([text_train, sparse.csr_matrix(image_train) * 0.1]).tocsr()
    both_test = sparse.hstack([text_test, sparse.csr_matrix(image_test) * 0.1]).tocsr()
    report("icons", [
        ("majority class", np.full_like(y_test, np.bincount(y_train).argmax())),
        ("tfidf char 1-5 + logreg (text)", predict(text_train, text_test, c=10.0)),
        ("pca128 + logreg (image)", predict(image_train, image_test, c=0.1)),
        ("both + logreg (image+text)", predict(both_train, both_test, c=10.0)),
    ], y_test, args.json)


if __name__ == "__main__":
    main()
