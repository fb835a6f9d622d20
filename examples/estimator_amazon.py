"""transferkit as a scikit-learn estimator: Amazon reviews books -> dvd on the 5,000-d count features.

Source-only and DANN `TransferClassifier`s, then `GridSearchCV` choosing DANN's λ with a label-free scorer (DEV on
the held-out source folds and the unlabelled dvd reviews). The dvd *test* labels are read once, in the last cell,
to report accuracy; nothing before it can see them.

Run (about 3 minutes on a busy 2-core CPU; a notebook runs it cell by cell, `# %%`):

    TRANSFERKIT_DATA=/path/to/data python examples/estimator_amazon.py

The data root must hold amazon_svmlight/ (`transferkit datasets` lists what is where).
"""

# %% Data: labelled books reviews, unlabelled dvd reviews
import time

import numpy as np
from sklearn.model_selection import GridSearchCV, StratifiedKFold

from transferkit import TransferClassifier, load_data
from transferkit.measure.selection import domain_scorer

start = time.perf_counter()
books = load_data("amazon-books", "train")  # 2,000 labelled reviews, 5,000-d unigram/bigram counts
Xs = books.inputs
ys = np.asarray(books.classes)[books.labels]  # "negative" / "positive": any labels work, as in scikit-learn
Xt = load_data("amazon-dvd", "train").unlabelled().inputs  # 2,000 dvd reviews, labels dropped
print(f"source {Xs.shape}, target {Xt.shape}, classes {books.classes}")

# The DANN paper's network (benchmarks/amazon.py): one hidden layer of 50 ReLUs, no dropout, whose 50-d output
# the adaptation aligns. Few epochs keep the example short; threads=1 suits a small shared CPU.
common = {"hidden": 50, "depth": 1, "dropout": 0.0, "epochs": 5, "lr": 1e-3, "batch_size": 64, "threads": 1}

# %% Source only, and DANN with its default λ = 1
source_only = TransferClassifier(method="none", **common).fit(Xs, ys)
dann = TransferClassifier(method="dann", **common).fit(Xs, ys, X_target=Xt)
print(f"DANN kept epoch {dann.best_epoch_ + 1} of {len(dann.history_)} (best source-validation accuracy); "
      f"last epoch's domain loss {dann.history_[-1]['loss/dann']:.3f}")

# %% Choose λ without target labels: 3-fold CV on the source, scored by DEV (label-free)
# Each fold's model is scored on its held-out source fold (with those source labels) and on the unlabelled dvd
# reviews. Xt has as many rows as Xs, so GridSearchCV hands each fold model the same share of it as of the source
# (its rule for fit parameters as long as X); the final refit sees all of it.
search = GridSearchCV(
    TransferClassifier(method="dann", **common),
    {"lam": [0.1, 0.3, 1.0, 3.0]},
    scoring=domain_scorer(Xt, "dev"),
    cv=StratifiedKFold(3, shuffle=True, random_state=0),
)
search.fit(Xs, ys, X_target=Xt)
for lam, score in zip(search.cv_results_["param_lam"], search.cv_results_["mean_test_score"], strict=True):
    print(f"  lam {lam:<4} DEV score {score:.4f}")
print(f"chosen: lam = {search.best_params_['lam']}")

# %% Only now: the dvd test labels, to report (they chose nothing above)
dvd_test = load_data("amazon-dvd", "test")
X_test, y_test = dvd_test.inputs, np.asarray(dvd_test.classes)[dvd_test.labels]
print(f"dvd test accuracy ({len(y_test)} reviews):")
for name, model in (("source only", source_only), ("DANN, lam = 1", dann),
                    (f"DANN, lam = {search.best_params_['lam']} (GridSearchCV + DEV)", search.best_estimator_)):
    print(f"  {name:<38} {model.score(X_test, y_test):.4f}")
print(f"wall time {time.perf_counter() - start:.0f} s")
