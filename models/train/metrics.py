"""Classification metrics of a fold (scikit-learn): accuracy, balanced accuracy, macro F1,
per-class accuracy (recall), AUC (binary: of class 1; more classes: macro one-vs-rest) and the
confusion matrix (rows: true class, columns: predicted)."""
from __future__ import annotations

import numpy as np
from sklearn.metrics import balanced_accuracy_score, confusion_matrix, f1_score, roc_auc_score

__all__ = ["classification_metrics", "mean_std"]


def classification_metrics(y: np.ndarray, probs: np.ndarray, n_classes: int) -> dict:
    """Metrics of labels ``y`` (n,) int and class probabilities ``probs`` (n, C).

    Returns a dict: ``acc``, ``bacc``, ``f1`` (macro), ``auc`` (NaN when a class is absent from
    ``y``), ``acc_class_{c}`` (NaN for an absent class) and ``confusion`` ((C, C) int64).
    Rows of ``probs`` that do not sum to 1 (per-class sigmoids) are normalised for the AUC.
    """
    y = np.asarray(y, np.int64)
    probs = np.asarray(probs, np.float64).reshape(len(y), n_classes)
    pred = probs.argmax(axis=1)
    labels = list(range(n_classes))
    cm = confusion_matrix(y, pred, labels=labels) if len(y) else np.zeros((n_classes, n_classes), np.int64)
    out: dict = {"acc": float((pred == y).mean()) if len(y) else float("nan")}
    out["bacc"] = float(balanced_accuracy_score(y, pred)) if len(y) else float("nan")
    out["f1"] = float(f1_score(y, pred, labels=labels, average="macro", zero_division=0)) if len(y) else float("nan")
    present = np.unique(y)
    if len(present) < 2:
        out["auc"] = float("nan")
    elif n_classes == 2:
        out["auc"] = float(roc_auc_score(y, probs[:, 1]))
    else:
        p = probs / np.clip(probs.sum(axis=1, keepdims=True), 1e-12, None)
        out["auc"] = float(roc_auc_score(y, p, multi_class="ovr", average="macro", labels=labels)) \
            if len(present) == n_classes else float("nan")
    for c in labels:
        n_c = cm[c].sum()
        out[f"acc_class_{c}"] = float(cm[c, c] / n_c) if n_c else float("nan")
    out["confusion"] = cm.astype(np.int64)
    return out


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof 1; 0 for one value) ignoring NaN."""
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan"), float("nan")
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0
