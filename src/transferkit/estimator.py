"""A scikit-learn classifier that trains through transferkit's one engine: ``fit(X, y, X_target=...)``.

:class:`TransferClassifier` is a real scikit-learn estimator (``get_params``/``set_params``/``clone``,
``Pipeline``, ``GridSearchCV``, ``cross_val_score``) whose ``fit`` builds a backbone + head
(:class:`~transferkit.models.heads.TransferModel`) and trains it with :class:`~transferkit.train.engine.Engine`
on the source cross-entropy plus the adaptation method's loss terms (:func:`~transferkit.adapt.methods.build_method`),
exactly as ``transferkit fit`` does. It writes nothing to disk.

What ``fit``, ``predict`` and the other methods accept:

- a 2-D float array ``(n_samples, n_features)`` (NumPy, pandas, a list of lists), read by the ``mlp`` backbone (or any
  backbone that reads feature vectors); checked with scikit-learn's validation (NaN and Inf are refused);
- a :class:`~transferkit.data.domain.DomainDataset` (images, texts, audio, vectors: any backbone's input), whose
  labels and class names are used when it is the source;
- any other ``torch.utils.data.Dataset`` whose items are ``(x, y)`` / ``(x,)`` tuples, ``{"x": ..., "y": ...}``
  dicts, or bare ``x``; it is read once into memory. 1-D items are feature vectors (checked like an array);
  larger items must already be what the backbone reads (preprocessed tensors).

Labels may be anything :func:`numpy.unique` can sort (strings, integers): ``classes_`` holds them, and ``predict``
returns them, as in scikit-learn (a DomainDataset source: its class names, in its order). The target's labels are
never asked for.

In a :class:`sklearn.pipeline.Pipeline`, ``X_target`` is a fit parameter: ``pipe.fit(Xs, ys, clf__X_target=Xt)``.
Passed that way it reaches the classifier *as it is*: the steps before it do not transform it. When an earlier step
changes the features (a scaler), let the pipeline transform the target too with scikit-learn's metadata routing::

    sklearn.set_config(enable_metadata_routing=True)
    pipe = Pipeline([("scale", StandardScaler()), ("clf", TransferClassifier(method="dann").set_fit_request(
        X_target=True))], transform_input=["X_target"])
    pipe.fit(Xs, ys, X_target=Xt)  # Xt is scaled by the scaler fitted on Xs before the classifier sees it

For hyper-parameter search without target labels, score with
:func:`transferkit.measure.selection.domain_scorer` (label-free validators). Note that ``GridSearchCV`` (like
``cross_validate``) cuts every fit parameter with as many rows as ``X`` to the training fold: a target exactly as
long as the source is sub-sampled in the same proportion for the fold models (still unlabelled target items), and
the final refit sees all of it.

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> Xs = rng.normal(size=(80, 5)).astype("float32")
    >>> ys = np.where(Xs[:, 0] > 0, "pos", "neg")
    >>> Xt = Xs + 0.5  # the same task, shifted
    >>> clf = TransferClassifier(method="dann", epochs=2, hidden=16, depth=1).fit(Xs, ys, X_target=Xt)
    >>> clf.classes_.tolist(), clf.predict_proba(Xt).shape, clf.transform(Xt).shape
    (['neg', 'pos'], (80, 2), (80, 16))

Over 500 lines as one module: one class whose methods the scikit-learn contract couples (parameters, input
validation, fit, predict, scoring).
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator
from typing import Any, Literal

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data

from transferkit.adapt.auto import SOURCE_ONLY, choose, warm_start
from transferkit.adapt.methods import build_method, list_methods
from transferkit.config import AdaptConfig, TrainConfig, default_bottleneck, format_validation_error
from transferkit.data.domain import DomainDataset
from transferkit.errors import ConfigError, DataError
from transferkit.evaluate.predict import predict_outputs
from transferkit.measure.guard import guard_decision
from transferkit.models.backbones import backbone_for, check_input_kind
from transferkit.models.heads import TransferModel
from transferkit.train.engine import Engine, source_cross_entropy

_UNSET = object()


class _AsIs:
    """The transform of a dataset whose items already are what the backbone reads (tensors from a torch Dataset)."""

    def __call__(self, x: Any) -> torch.Tensor:
        return x

    def __repr__(self) -> str:
        return "_AsIs()"


class TransferClassifier(ClassifierMixin, BaseEstimator):
    """A transfer-learning classifier: backbone (+ bottleneck) + linear head, trained by transferkit's engine on
    ``L = L_source + λ(p) · L_method`` with unlabelled target batches.

    Every argument is stored unchanged (scikit-learn's rule), so ``clone`` and ``GridSearchCV`` work; they are
    checked when ``fit`` runs.

    Args:
        backbone: a backbone spec (``transferkit backbones``): ``mlp`` for feature vectors, or ``lenet``,
            ``timm:NAME``, ``file:PATH``, ... for what a :class:`~transferkit.data.domain.DomainDataset` holds.
        method: ``"none"`` (source only), an adaptation method (``transferkit methods``: ``dann``, ``dan``,
            ``coral``, ``cdan``, ``mcc``, ...) or ``"auto"`` (source-only, then DAN and MCC started from it, the
            guarded label-free choice kept: :mod:`transferkit.adapt.auto`); every method except ``none`` needs
            ``X_target`` in ``fit``.
        lam: λ, the weight of the method's loss; None: the method's own default.
        schedule: ``constant`` or ``ramp`` (``λ · (2/(1+exp(-10p)) - 1)`` over training progress ``p``).
        method_options: the method's options (e.g. ``{"hidden": 256}`` for DANN's discriminator).
        epochs, lr, batch_size, weight_decay, optimizer, scheduler, label_smoothing, early_stopping_patience:
            the engine's training settings (:class:`~transferkit.config.TrainConfig`); ``batch_size`` items of
            each domain per step.
        hidden, depth, dropout: the ``mlp`` backbone's width, number of hidden layers and dropout (ignored by
            other backbones; give those ``backbone_kwargs``).
        bottleneck_dim: a Linear-BatchNorm-ReLU layer between backbone and head, where domains are aligned;
            ``"auto"``: the method's own default (256 for MCC on ``mlp`` with at least 200 labelled training
            items, none otherwise; docs/defaults.md).
        head_dropout: dropout before the linear head.
        backbone_kwargs: more keyword options for :func:`~transferkit.models.backbones.create_backbone` (they
            override ``hidden``/``depth``/``dropout`` for ``mlp``).
        val_fraction: share of the source held out (stratified, drawn by ``seed``) to keep the epoch with the best
            source accuracy; 0 keeps the last epoch. Target labels choose nothing.
        seed: model initialisation, shuffling and dropout: the same seed gives the same predictions (on CPU).
        device: ``cpu``, ``cuda`` or ``auto``.
        threads: torch intra-op threads while fitting and predicting (None: leave torch's setting).
        progress: show the engine's progress bars.

    Attributes:
        classes_: the class labels, in the column order of ``predict_proba``.
        n_features_in_: the width of the source ``X`` (feature vectors only).
        model_: the trained :class:`~transferkit.models.heads.TransferModel` (``model_.save(path)`` writes it as a
            safetensors file that ``transferkit predict`` reads).
        history_: one record per epoch (losses of each term, source train/validation accuracy).
        best_epoch_: the epoch whose weights were kept.
        auto_: with ``method="auto"``, the choice: ``chosen``, every candidate's ``scores``, the ``rejected`` ones
            with the guard's reasons, and ``why``.
    """

    def __init__(
        self,
        backbone: str = "mlp",
        method: str = "none",
        lam: float | None = None,
        schedule: str = "constant",
        method_options: dict[str, Any] | None = None,
        epochs: int = 10,
        lr: float = 1e-3,
        batch_size: int = 64,
        hidden: int = 256,
        depth: int = 1,
        dropout: float = 0.1,
        bottleneck_dim: int | Literal["auto"] | None = "auto",
        head_dropout: float = 0.0,
        backbone_kwargs: dict[str, Any] | None = None,
        weight_decay: float = 1e-4,
        optimizer: str = "adamw",
        scheduler: str = "cosine",
        label_smoothing: float = 0.0,
        early_stopping_patience: int | None = None,
        val_fraction: float = 0.1,
        seed: int = 0,
        device: str = "cpu",
        threads: int | None = None,
        progress: bool = False,
    ) -> None:
        self.backbone = backbone
        self.method = method
        self.lam = lam
        self.schedule = schedule
        self.method_options = method_options
        self.epochs = epochs
        self.lr = lr
        self.batch_size = batch_size
        self.hidden = hidden
        self.depth = depth
        self.dropout = dropout
        self.bottleneck_dim = bottleneck_dim
        self.head_dropout = head_dropout
        self.backbone_kwargs = backbone_kwargs
        self.weight_decay = weight_decay
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.label_smoothing = label_smoothing
        self.early_stopping_patience = early_stopping_patience
        self.val_fraction = val_fraction
        self.seed = seed
        self.device = device
        self.threads = threads
        self.progress = progress

    # -- scikit-learn ------------------------------------------------------------------------------
    def __sklearn_tags__(self) -> Any:
        from sklearn.utils import TransformerTags

        tags = super().__sklearn_tags__()
        tags.non_deterministic = False  # a fixed seed gives the same model
        tags.transformer_tags = TransformerTags(preserves_dtype=[])  # it has `transform` (the aligned features)
        return tags

    # -- fit -----------------------------------------------------------------------------------------
    def fit(self, X: Any, y: Any = None, X_target: Any = None) -> TransferClassifier:
        """Train on the labelled source ``X``/``y`` and, for an adaptation method, the unlabelled ``X_target``.

        ``X``/``y`` keep scikit-learn's names (metadata routing and the estimator checks rely on them): they are the
        source inputs and labels. ``y`` may be None only when ``X`` is a dataset that carries its labels.
        ``X_target`` is checked against the source (same width) also when ``method="none"``, which then does not
        use it.

        Raises:
            ConfigError: a bad hyper-parameter, or an adaptation method without ``X_target``.
            DataError: NaN/Inf, fewer than 2 samples or classes, inputs of different widths.
        """
        cfg = self._train_config()
        self._check_params()
        for attr in ("classes_", "n_features_in_", "feature_names_in_", "model_", "history_", "best_epoch_", "auto_"):
            if attr in self.__dict__:  # a refit starts clean: nothing of an earlier fit may survive a failure
                delattr(self, attr)
        source, classes = self._source(X, y)
        target = None
        if X_target is not None:
            target = self._dataset(X_target, "X_target", reset=False, like=source)[0].unlabelled()
            if target.kind != source.kind:
                raise DataError(f"X_target holds {target.kind} data, the source {source.kind} data: one model reads "
                                "both, so give both domains the same kind of input")
        if self.method != "none" and target is None:
            raise ConfigError(
                f"method {self.method!r} adapts to a target domain: pass its unlabelled inputs, "
                "fit(X, y, X_target=...); or use method='none'"
            )
        adapting = self.method != "none"
        needs_pairs = adapting or self._bottleneck(self.method) is not None
        for what, ds in (("X", source), ("X_target", target if adapting else None)):
            if needs_pairs and ds is not None and len(ds) < 2:
                raise DataError(f"{what} has {len(ds)} sample(s); an adaptation method or a bottleneck needs at "
                                "least 2 per domain (batch statistics)")
        train, val = source, None
        if self.val_fraction > 0:
            try:
                train, val = source.split(self.val_fraction, seed=self.seed)
            except DataError as exc:
                raise DataError(f"X (source): {exc}; lower val_fraction or set it to 0 (keep the last epoch)") from exc

        def train_one(method: str, steps: int | None = None, init: Any = None) -> tuple[Any, Any]:
            torch.manual_seed(self.seed)  # the model's initial weights (and the method's modules) follow the seed
            model = self._build_model(source, classes, method, len(train))
            if init is not None:  # auto's warm start: from the trained source-only model

                warm_start(model, init)
            terms = build_method(method, model.feature_dim, len(classes), weight=self.lam,
                                 schedule=self.schedule, options=self.method_options)
            engine = Engine(model, cfg, loss_terms=[source_cross_entropy(self.label_smoothing), *terms],
                            run=None, seed=self.seed, batch_size=self.batch_size, progress=self.progress)
            return model, engine.fit(train, val, target if method != "none" else None, steps=steps)

        with _scoped_torch_state(self.threads):
            if self.method == "auto":
                model, result = self._fit_auto(train_one, train, val, target)
            else:
                model, result = train_one(self.method)
        self.model_ = model.eval()
        self.history_ = result.history
        self.best_epoch_ = result.best_epoch
        return self

    def _fit_auto(self, train_one: Any, train: DomainDataset, val: DomainDataset | None,
                  target: DomainDataset) -> tuple[Any, Any]:
        """``method="auto"`` (:mod:`transferkit.adapt.auto`): source-only, then each default candidate started from it
        for half its steps (the CLI's ``adapt.auto_warm_start``), each guarded against source-only, the label-free
        validator's choice kept; ``auto_`` records every candidate's verdict and score."""
        # lazy: the pipeline imports the report's plots (matplotlib), which the estimator never draws
        from transferkit.experiment import candidate_of

        defaults = AdaptConfig()
        base, base_result = train_one("none")
        kw = {"batch_size": 256, "num_workers": 0, "device": self.device}
        scored_val = val if val is not None else train
        so = candidate_of(SOURCE_ONLY, base, scored_val, target, train, kw)
        models, adapted, rejections, results = {SOURCE_ONLY: base}, {}, {}, {SOURCE_ONLY: base_result}
        warm = defaults.auto_warm_start
        steps = max(1, base_result.steps // 2) if warm else base_result.steps
        for method in defaults.auto_methods:  # the CLI's defaults (adapt.auto_methods, adapt.auto_validator, ...)
            models[method], results[method] = train_one(method, steps=steps, init=base if warm else None)
            adapted[method] = candidate_of("adapted", models[method], scored_val, target, train, kw)
            rejections[method] = guard_decision(so, adapted[method]).reasons
        choice = choose(so, adapted, rejections, defaults.auto_validator)
        self.auto_ = choice.to_dict()
        return models[choice.chosen], results[choice.chosen]

    def fit_transform(self, X: Any, y: Any = None, **fit_params: Any) -> np.ndarray:
        """:meth:`fit`, then :meth:`transform` of the source ``X``: the learnt features, for a pipeline step that
        embeds rather than classifies."""
        return self.fit(X, y, **fit_params).transform(X)

    # -- predict -------------------------------------------------------------------------------------
    def predict(self, X: Any) -> np.ndarray:
        """The most probable class of each sample, as a label of ``classes_``."""
        logits = self._outputs(X)[1]  # first: it raises NotFittedError before `classes_` is looked up
        return self.classes_[logits.argmax(1)]

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities ``(n_samples, n_classes)`` (softmax of the logits), columns in ``classes_`` order."""
        return _softmax(self._outputs(X)[1])

    def predict_log_proba(self, X: Any) -> np.ndarray:
        """Log of :meth:`predict_proba`, computed stably from the logits."""
        z = self._outputs(X)[1].astype(np.float64)
        z = z - z.max(1, keepdims=True)
        return z - np.log(np.exp(z).sum(1, keepdims=True))

    def decision_function(self, X: Any) -> np.ndarray:
        """The logits ``(n_samples, n_classes)``; for two classes, scikit-learn's 1-D score of ``classes_[1]`` (the
        logit difference, i.e. the log-odds of :meth:`predict_proba`'s second column)."""
        logits = self._outputs(X)[1].astype(np.float64)
        return logits[:, 1] - logits[:, 0] if logits.shape[1] == 2 else logits

    def transform(self, X: Any) -> np.ndarray:
        """The features the head reads ``(n_samples, feature_dim)``: the backbone's output, or the bottleneck's when
        ``bottleneck_dim`` is set; what an adaptation method aligns across domains."""
        return self._outputs(X)[0]

    # -- internals -----------------------------------------------------------------------------------
    def _outputs(self, X: Any) -> tuple[np.ndarray, np.ndarray]:
        """(features, logits) of ``X`` as float32 arrays, batch by batch in inference mode."""
        check_is_fitted(self, "model_")
        ds, as_is = self._dataset(X, "X", reset=False)
        with _scoped_torch_state(self.threads):
            feats, logits, _ = predict_outputs(self.model_, ds, device=self.device,
                                               preprocessed=as_is or self.model_.transform is None)
        return feats.numpy(), logits.numpy()

    def _train_config(self) -> Any:
        from pydantic import ValidationError

        try:
            return TrainConfig(
                epochs=self.epochs, lr=self.lr, weight_decay=self.weight_decay, optimizer=self.optimizer,
                scheduler=self.scheduler, label_smoothing=self.label_smoothing, device=self.device,
                threads=self.threads, early_stopping_patience=self.early_stopping_patience,
                checkpoint_every_minutes=None,
            )
        except ValidationError as exc:
            raise ConfigError(format_validation_error(exc, type(self).__name__)) from None

    def _check_params(self) -> None:
        if self.method not in ("none", "auto") and self.method not in list_methods():
            raise ConfigError(f"method: unknown method {self.method!r}; known: none, auto, {', '.join(list_methods())}")
        if self.method == "auto" and (self.lam is not None or self.method_options):
            raise ConfigError("method='auto' trains each candidate at its own default λ and options: leave lam and "
                              "method_options unset")
        if not isinstance(self.batch_size, (int, np.integer)) or self.batch_size < 1:
            raise ConfigError(f"batch_size must be an integer >= 1, got {self.batch_size!r}")
        b = self.bottleneck_dim
        if b is not None and b != "auto" and (isinstance(b, bool) or not isinstance(b, (int, np.integer)) or b < 1):
            raise ConfigError(f"bottleneck_dim must be an integer >= 1, 'auto' or None, got {b!r}")
        if (self.method != "none" or self._bottleneck(self.method) is not None) and self.batch_size < 2:
            raise ConfigError("batch_size must be >= 2 with an adaptation method or a bottleneck (batch statistics)")
        if not 0.0 <= self.val_fraction < 0.9:
            raise ConfigError(f"val_fraction must be in [0, 0.9), got {self.val_fraction!r}")
        if not 0.0 <= self.head_dropout < 1.0:
            raise ConfigError(f"head_dropout must be in [0, 1), got {self.head_dropout!r}")
        if self.lam is not None and not self.lam >= 0:
            raise ConfigError(f"lam (the weight of the method's loss) must be >= 0 or None, got {self.lam!r}")

    def _bottleneck(self, method: str, source_items: int | None = None) -> int | None:
        """The bottleneck width ``method``'s model trains with: ``bottleneck_dim``, or the method's default for
        ``source_items`` labelled training items."""
        if self.bottleneck_dim == "auto":
            return default_bottleneck(method, self.backbone, "full", source_items)
        return None if self.bottleneck_dim is None else int(self.bottleneck_dim)

    def _build_model(self, source: DomainDataset, classes: list[str], method: str = "none",
                     source_items: int | None = None) -> Any:
        kwargs = dict(self.backbone_kwargs or {})
        if self.backbone == "mlp":
            kwargs = {"hidden": self.hidden, "depth": self.depth, "dropout": self.dropout, **kwargs}
        backbone = backbone_for(self.backbone, source, **kwargs)
        if source.transform is None or not isinstance(source.transform, _AsIs):
            check_input_kind(backbone, source)
        return TransferModel(backbone, classes, head_dropout=self.head_dropout,
                             bottleneck_dim=self._bottleneck(method, source_items))

    def _source(self, X: Any, y: Any) -> tuple[DomainDataset, list[str]]:
        """The labelled source as a DomainDataset with labels 0..C-1, and ``classes_`` set."""
        ds, _ = self._dataset(X, "X", reset=True, y=y)
        if ds.labels is None:
            raise DataError(f"{type(self).__name__} requires y to be passed, but the target y is None: pass the "
                            "source labels, fit(X, y, ...)")
        n = len(ds)
        if n < 2:
            raise DataError(f"X (source) has 1 sample; a classifier needs at least 2 samples (n_samples = {n})")
        present = np.unique(ds.labels)
        if len(present) < 2:
            only = ds.classes[int(present[0])]
            raise DataError(f"y holds one class only ({only!r}); a classifier needs at least 2 classes")
        return ds, list(ds.classes)

    def _dataset(self, X: Any, what: str, *, reset: bool, y: Any = _UNSET,
                 like: DomainDataset | None = None) -> tuple[DomainDataset, bool]:
        """``X`` (and, for the source, ``y``) as a DomainDataset; True when its items are already backbone inputs.

        Arrays are validated with scikit-learn (``reset=True`` records ``n_features_in_``, else checks against it).
        """
        labelled = y is not _UNSET
        if isinstance(X, DomainDataset):
            if labelled:
                if y is not None:
                    raise DataError(f"{what} is a DomainDataset that carries its labels: pass y=None")
                if X.labels is None:
                    raise DataError(f"{what} ({X.domain!r}) has no labels; the source must be labelled")
                self.classes_ = np.asarray(X.classes)
            if X.kind == "vector" and isinstance(X.inputs, np.ndarray):
                self._check_width(X.inputs.shape[1], what, reset)
            elif reset:
                self.__dict__.pop("n_features_in_", None)
            return X, False
        if isinstance(X, torch.utils.data.Dataset):
            xs, ys = _read_torch_dataset(X, what)
            if labelled and ys is not None:
                if y is not None:
                    raise DataError(f"{what}'s items carry labels: pass y=None")
                y = ys
            if xs.ndim > 2:  # preprocessed tensors (images, ...): the backbone reads them as they are
                if not torch.isfinite(xs.float()).all():
                    raise DataError(f"{what} contains NaN or Inf")
                if reset:
                    self.__dict__.pop("n_features_in_", None)
                elif like is not None and like.cache is not None and like.cache.shape[1:] != xs.shape[1:]:
                    raise DataError(f"{what} items have shape {tuple(xs.shape[1:])}, the source's "
                                    f"{tuple(like.cache.shape[1:])}")
                labels, classes = self._encode(y, what) if labelled else (None, [str(c) for c in self._classes()])
                kind = like.kind if like is not None else "image"
                return DomainDataset(xs.numpy(), labels, what, classes, kind, transform=_AsIs(), cache=xs), True
            X = xs.numpy()
        X = self._validated(X, y if labelled else _UNSET, what, reset)
        if labelled:
            X, y = X
            labels, classes = self._encode(y, what)
        else:
            labels, classes = None, [str(c) for c in self._classes()]
        X = np.ascontiguousarray(X, dtype=np.float32)
        if not np.isfinite(X).all():
            raise DataError(f"{what} holds values too large for float32 (the model computes in float32)")
        ds = DomainDataset(X, labels, "source" if labelled else what, classes, "vector", cache=torch.from_numpy(X))
        return ds, False

    def _classes(self) -> np.ndarray:
        return self.classes_ if hasattr(self, "classes_") else np.asarray(["?", "?"])

    def _validated(self, X: Any, y: Any, what: str, reset: bool) -> Any:
        """scikit-learn's checks (2-D, numeric, width = ``n_features_in_``) and a finiteness check that says where,
        as DataErrors naming ``what``."""
        kw = {"reset": reset, "dtype": [np.float32, np.float64], "ensure_all_finite": False}
        try:
            if y is _UNSET:
                out = validate_data(self, X, **kw)
            elif y is None:
                raise DataError(f"{type(self).__name__} requires y to be passed, but the target y is None: pass "
                                "the source labels, fit(X, y, ...)")
            else:
                out = validate_data(self, X, y, **kw)
        except ValueError as exc:
            if isinstance(exc, DataError):
                raise
            msg = str(exc)
            if not reset and "features, but" in msg:
                msg += f" (n_features_in_ = {self.n_features_in_}, the width of X at fit)"
            raise DataError(f"{what}: {msg}") from exc
        _check_finite(out if y is _UNSET else out[0], what)
        return out

    def _check_width(self, width: int, what: str, reset: bool) -> None:
        if reset:
            self.n_features_in_ = int(width)
        elif hasattr(self, "n_features_in_") and width != self.n_features_in_:
            raise DataError(f"{what} has {width} features, but {type(self).__name__} is expecting "
                            f"{self.n_features_in_} features as input (n_features_in_, the width of X at fit)")

    def _encode(self, y: Any, what: str) -> tuple[np.ndarray, list[str]]:
        """Labels -> indices 0..C-1 into ``classes_`` (sorted, as scikit-learn's LabelEncoder does)."""
        y = column_or_1d(np.asarray(y), warn=True)
        try:
            check_classification_targets(y)
        except ValueError as exc:
            raise DataError(f"y: {exc} (a classifier needs class labels, not continuous values)") from exc
        if (y.dtype.kind == "f" and np.isnan(y).any()) or (y.dtype == object and any(v is None for v in y)):
            raise DataError(f"y (labels of {what}) contains NaN or None")
        self.classes_, labels = np.unique(y, return_inverse=True)
        return labels.astype(np.int64), [str(c) for c in self.classes_]


def _check_finite(X: np.ndarray, what: str) -> None:
    """Refuse NaN and infinity, naming the first bad cell: a single NaN would turn every loss and weight into NaN."""
    bad = ~np.isfinite(X)
    if bad.any():
        row, col = (int(i) for i in np.argwhere(bad)[0])
        kind = "NaN" if np.isnan(X[row, col]) else "infinity"
        more = f" (and {int(bad.sum()) - 1} more cells)" if bad.sum() > 1 else ""
        raise DataError(f"{what} contains {kind} at row {row}, column {col}{more}; impute or drop those values "
                        "first (e.g. sklearn.impute.SimpleImputer in the pipeline)")


def _read_torch_dataset(dataset: Any, what: str) -> tuple[torch.Tensor, list[Any] | None]:
    """Every item's ``x`` stacked into one tensor, and the ``y`` of each when the items carry one."""
    xs, ys = [], []
    for i in range(len(dataset)):
        item = dataset[i]
        if isinstance(item, dict):
            if "x" not in item:
                raise DataError(f"{what}: item {i} is a dict without an 'x' key (keys: {sorted(item)})")
            x, y = item["x"], item.get("y")
        elif isinstance(item, (tuple, list)):
            x, y = item[0], item[1] if len(item) > 1 else None
        else:
            x, y = item, None
        try:
            xs.append(torch.as_tensor(np.asarray(x, dtype=np.float32)))
        except (TypeError, ValueError) as exc:
            raise DataError(f"{what}: item {i}'s input is not numeric ({exc}); preprocess it into a tensor first") \
                from exc
        ys.append(y.item() if isinstance(y, torch.Tensor) else y)
    if not xs:
        raise DataError(f"{what} is empty")
    shapes = {tuple(x.shape) for x in xs}
    if len(shapes) > 1:
        raise DataError(f"{what}: items have different shapes {sorted(shapes)[:3]}; the model reads one shape")
    labels = None if any(y is None for y in ys) else ys
    return torch.stack(xs), labels


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64)
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


@contextlib.contextmanager
def _scoped_torch_state(threads: int | None) -> Iterator[None]:
    """Fitting seeds the global RNGs (the engine reseeds Python, NumPy and torch) and may set torch's thread count:
    put back what the caller had, as a scikit-learn estimator leaves global state alone."""
    py, npy, tch = random.getstate(), np.random.get_state(), torch.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)
        random.setstate(py)
        np.random.set_state(npy)
        torch.set_rng_state(tch)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)
