"""The typed schema of every experiment's ``metrics.json``: written by the experiments, read by
:mod:`vislab.reporting.findings` and by whoever loads a run folder.

One TypedDict per document (and per nested record). A key marked ``NotRequired`` is written only
in some runs (say when); every other key is always written. :func:`check_metrics` validates a
metrics dict against its schema and names the first missing, unknown or ill-typed key, so a
renamed key fails loudly instead of being read as 0. Every document may also carry the key
``non_finite`` that :func:`vislab.io.write_json` adds: the paths of the numbers that were NaN or
infinite, written as null; those nulls pass where a float is expected.

Documents, by experiment name (the ``experiment`` of the run's manifest):
``inspect``, ``saliency``, ``fool``, ``classviz``, ``transfer``, ``adapt`` (one mode, or several
under ``modes``), ``adapt-summary``, ``gan``, ``gan-sample``, ``gan-interpolate`` and
``gan-compare``.
"""
# No ``from __future__ import annotations``: TypedDict must see NotRequired[...] as an object,
# not as a string, to leave the key out of __required_keys__ (Python 3.10 and 3.11).
import numbers
import sys
import types
from functools import lru_cache
from typing import Any, Literal, Mapping, Union, get_args, get_origin, overload

from .io import NON_FINITE_KEY

if sys.version_info >= (3, 11):
    from typing import NotRequired, TypedDict, get_type_hints, is_typeddict
else:  # Python 3.10: typing_extensions (a dependency of torch) knows NotRequired
    from typing_extensions import NotRequired, TypedDict, get_type_hints, is_typeddict

Precision = Literal["fp32", "bf16"]
Space = Literal["normalized", "pixel"]


# --- part A: inspect ---------------------------------------------------------------------------

TopClass = TypedDict("TopClass", {"index": int, "class": str, "prob": float})


class Prediction(TypedDict):
    image: str  # the file's path, or the sample photo's name (--samples)
    top: list[TopClass]  # the top-k classes, most probable first
    # written by every run since --samples (absent in older runs):
    label: NotRequired[int | None]  # ImageNet class of a labelled sample photo; None for --images files
    prob_sum: NotRequired[float]  # sum of the softmax over all classes (1 up to rounding)
    top1_correct: NotRequired[bool | None]  # the label is the most probable class (None without a label)
    top5_correct: NotRequired[bool | None]  # the label is among the 5 most probable, whatever --top-k


class ImageFailure(TypedDict):
    image: str
    error: str


class FilterMatchRow(TypedDict):
    map: int  # channel of the first conv layer
    reference: str  # best-matching reference response by |r| (methods.filter_match.REFERENCES)
    r: float  # its Pearson r over the map's pixels (the sign is the polarity)


class FirstConvMatch(TypedDict):
    """Every first-conv activation map of one image against edge / colour references
    (:func:`vislab.methods.filter_match.match_filters`)."""

    image: str
    maps: list[FilterMatchRow]  # one per map, in channel order
    # a map is an edge (colour) detector when its best reference is an oriented-edge (colour-opponent)
    # response with |r| >= 0.5 (experiments.inspection.DETECTOR_MIN_R)
    edge_maps: list[int]
    colour_maps: list[int]


class InspectMetrics(TypedDict):
    model: str
    weights: str
    params_total: int
    params_linear: int
    params_conv: int
    params_by_type: dict[str, int]  # layer type -> parameters, largest first
    num_layers: int
    output_size: int | None
    # with --images and/or --samples only:
    predictions: NotRequired[list[Prediction]]
    errors: NotRequired[list[ImageFailure]]
    images_failed: NotRequired[int]
    labelled_images: NotRequired[int]  # predictions with a label
    top1_accuracy: NotRequired[float | None]  # over the labelled images; None when there are none
    top5_accuracy: NotRequired[float | None]
    first_conv_match: NotRequired[list[FirstConvMatch]]  # one per prediction, same order


# --- part A: transfer --------------------------------------------------------------------------

class Extraction(TypedDict):
    model: str
    resize: str
    split: str
    layers: list[str]
    images: int
    seconds: float
    images_per_s: float | None
    cache_hit: bool
    precision: str


class TransferVariant(TypedDict):
    model: str  # "small_cnn" for the scratch row
    layer: str
    resize: str
    dim: int  # feature size (the scratch CNN's pooled width)
    head: str  # svm, "svm (C by CV)", pca<k>+svm, linear, finetune, scratch
    test_accuracy: float
    # What the row cost in this run, in seconds. Rows on cached features: the extraction share of their
    # feature variant (the train + test extraction of its (model, resize), or the cache load on a hit,
    # divided by the layers read in that pass) plus the classifier's fit and prediction. finetune and
    # scratch rows: training plus per-epoch evaluation, summed over the sessions of a resumed run.
    seconds: float
    C: NotRequired[float]  # the SVM rows
    fit_seconds: NotRequired[float]  # svm and pca rows
    cv_accuracy: NotRequired[float]  # the C-by-CV row
    explained_variance: NotRequired[float]  # pca rows
    train_accuracy: NotRequired[float]  # linear, finetune and scratch rows (last epoch)
    epochs: NotRequired[int]  # linear, finetune and scratch rows
    params: NotRequired[int]  # finetune and scratch rows: parameters of the trained network
    input_size: NotRequired[int]  # the scratch row: its square input size in pixels


class ConfusionPair(TypedDict):
    true: str
    predicted: str
    count: int  # test images of class `true` predicted as `predicted`
    rate: float  # count / test images of class `true`


class CSweep(TypedDict):
    C: list[float]
    cv_accuracy: list[float]
    cv_std: list[float]
    folds: int
    test_accuracy: list[float]
    best_C: float
    test_accuracy_at_best_C: float


class TrainingCurves(TypedDict):
    train_loss: list[float]
    train_accuracy: list[float]
    test_accuracy: list[float]


class TransferMetrics(TypedDict):
    data: str
    classes: list[str]
    n_train: int
    n_test: int
    bad_images: int
    bad_files: list[str]
    C: float
    l2: bool
    pool: str
    cache_hit: bool
    extracted_images: int
    extraction: list[Extraction]
    variants: list[TransferVariant]
    test_accuracy: float  # of the first variant
    best_variant: TransferVariant
    per_class_accuracy: NotRequired[dict[str, float]]  # with an SVM on the first variant
    c_sweep: NotRequired[dict[str, CSweep]]  # with --c-grid, per variant
    linear_head: NotRequired[dict[str, TrainingCurves]]  # with --head linear, per variant
    finetune: NotRequired[dict[str, TrainingCurves]]  # with --head finetune, per variant
    scratch: NotRequired[TrainingCurves]  # with --head scratch: the small CNN trained from scratch
    # the 5 most frequent (true, predicted) mistakes of the first variant, most frequent first (ties: the
    # higher rate, then class order); fewer when it makes fewer kinds of mistake
    confusion_pairs: list[ConfusionPair]


# --- part B: saliency, fool, classviz ----------------------------------------------------------

SaliencyImage = TypedDict("SaliencyImage", {
    "image": str, "label": Union[int, None], "label_name": Union[str, None],
    "class": int, "class_name": Union[str, None],  # the class whose logit was differentiated
    "class_source": Literal["target", "label", "predicted"],
    "predicted": int, "predicted_name": Union[str, None],
    "probability": float,  # of "class"
    "map_max": float,
})


DeletionImage = TypedDict("DeletionImage", {"image": str, "saliency_auc": float, "random_auc": float})


class SaliencyDeletion(TypedDict):
    """Deletion test (RISE): the class probability as a share k/steps of the pixels, most salient
    first (or in a random order seeded by --seed), is replaced by the blurred image; AUCs are
    trapezoids over the share removed, in [0, 1], means over the images."""
    steps: int
    baseline: Literal["blur"]
    saliency_auc: float
    random_auc: float
    faithfulness: float  # random_auc - saliency_auc: > 0 when the maps beat a random order
    per_image: list[DeletionImage]


class SaliencySmoothGrad(TypedDict):
    """Mean total variation of the maps scaled to max 1 (per pixel; 0 = constant map)."""
    samples: int
    sigma: float  # noise std as a share of the pixel range
    tv_vanilla: float
    tv_smooth: float


class SaliencySanity(TypedDict):
    """Spearman rank correlation between the trained network's maps and those of a copy with its
    weight layers re-initialised (NaN, written null, where a map is constant)."""
    randomized: str  # "all layers"
    spearman_mean: float  # over the images with a finite correlation
    spearman_per_image: list[float]


LocalizedBox = TypedDict("LocalizedBox", {
    "image": str,
    "box": list[int],  # x0, y0, x1, y1 in pixels of the model's input, x1 and y1 exclusive
    "area_fraction": float,  # box area / image area
})


class SaliencyLocalization(TypedDict):
    """Box of the largest 8-connected region of each map (Gaussian-smoothed by smooth_sigma
    pixels) >= threshold x its max."""
    threshold: float
    smooth_sigma: float
    box_area_fraction_mean: float
    boxes: list[LocalizedBox]
    iou_mean: float | None  # None: no known boxes (the sample sets have labels only)


class SaliencyMetrics(TypedDict):
    model: str
    space: Space
    num_images: int
    seconds: float
    top1_accuracy: float | None  # None when no image has a label
    results: list[SaliencyImage]
    deletion: NotRequired[SaliencyDeletion]  # with --deletion-steps
    smoothgrad: NotRequired[SaliencySmoothGrad]  # with --smoothgrad-samples
    sanity: NotRequired[SaliencySanity]  # with --sanity-check
    localization: NotRequired[SaliencyLocalization]  # with --localize-threshold


class FoolImage(TypedDict):
    image: str
    label: int | None
    label_name: str | None
    original_prediction: int
    original_prediction_name: str | None
    original_target_probability: float
    success: bool
    iterations: int
    target_probability: float
    l2: float
    l2_255: float
    linf: float
    linf_255: float
    success_after_uint8: bool  # the saved 8-bit PNG, read back, is still classified as the target
    target_probability_after_uint8: float
    linf_255_after_uint8: float


class FoolRobustness(TypedDict):
    """Do the fooled images, as saved (8-bit PNG), still say the target elsewhere (B6)? Rates are
    shares of the ``fooled_images`` (those whose saved version fools the source model); null
    when there are none or the check is off."""
    fooled_images: int
    transfer: dict[str, float | None]  # per --check-models backbone, shown the images as they are
    jpeg: float | None  # the source model, after JPEG at jpeg_quality (0 = off)
    jpeg_quality: int
    resize: float | None  # the source model, after a resize by resize_scale and back (0 = off)
    resize_scale: float


class FoolMetrics(TypedDict):
    model: str
    # naive = the course's ascent; fgsm / pgd: targeted, at an L-inf budget. Absent in runs made before
    # --attack existed (naive), which `vislab report` still reads
    attack: NotRequired[Literal["naive", "fgsm", "pgd"]]
    eps_255: NotRequired[float]  # fgsm and pgd: the L-inf budget in 0-255 units
    pgd_steps: NotRequired[int]  # pgd only
    pgd_alpha_255: NotRequired[float]  # pgd only: the step size in 0-255 units
    target: int
    target_name: str
    learning_rate: float
    max_iterations: int
    step_space: Space
    margin: float
    uint8_stop: bool
    precision: Precision
    num_images: int
    seconds: float
    success_rate: float
    success_after_uint8_rate: float
    median_iterations: float
    max_iterations_taken: int
    median_linf_255: float
    median_l2_255: float
    median_target_probability: float
    median_iterations_successful: float | None  # None when no image was fooled
    results: list[FoolImage]
    robustness: NotRequired[FoolRobustness]  # with --check-models, --jpeg-quality or --resize-scale


class ClassVizImage(TypedDict):
    target: int
    target_name: str
    probability: float
    predicted: int
    predicted_name: str
    # steps done (as text) -> target probability at each snapshot (absent in runs before it was written)
    probability_by_iterations: NotRequired[dict[str, float]]


class SweepSetting(TypedDict):
    learning_rate: float
    l2_reg: float
    probability_by_iterations: dict[str, float]  # steps done (as text) -> target probability


class ClassVizSweep(TypedDict):
    target: int
    seconds: float
    results: list[SweepSetting]


class ClassVizMetrics(TypedDict):
    model: str
    iterations: int
    learning_rate: float
    l2_reg: float
    init: Literal["image", "noise"]
    image_size: int
    precision: Precision
    seconds: float
    seconds_per_iteration: float
    results: list[ClassVizImage]
    sweep: NotRequired[ClassVizSweep]  # with --sweep


# --- part C: adapt -----------------------------------------------------------------------------

class PseudoLabelRound(TypedDict):
    round: int
    epoch: int
    fraction: float | None  # None unless --pl-select top
    count: int
    accuracy: float  # share of correct pseudo-labels (NaN when none was chosen)


class AdaptModeResult(TypedDict):
    mode: str
    upper_bound_uses_target_labels: bool
    target_accuracy: float
    source_accuracy: float
    domain_accuracy: float
    epochs: int
    steps_per_epoch: int
    batch_size: int
    min_source_accuracy: float
    train_seconds_this_session: float
    steps_per_second: float
    # per epoch: epoch, source/target/domain_accuracy, train_<statistic> (by algorithm), lr,
    # lambda, train_steps_per_second, seconds
    history: list[dict[str, float]]
    pseudo_label_rounds: NotRequired[list[PseudoLabelRound]]  # mode dann+pl


class AdaptCommon(TypedDict):
    hparams: dict[str, Any]
    backgrounds: str
    mnistm_sha256: dict[str, str]  # split -> content hash


class AdaptModeMetrics(AdaptModeResult, AdaptCommon):
    """``vislab adapt`` with one mode."""


class AdaptModesMetrics(AdaptCommon):
    """``vislab adapt`` with several modes; the top-level accuracies are the last mode's."""

    modes: dict[str, AdaptModeResult]
    comparison_markdown: str
    target_accuracy: float
    source_accuracy: float


AdaptMetrics = Union[AdaptModeMetrics, AdaptModesMetrics]


class AdaptSummaryMode(TypedDict):
    n: int
    seeds: list[int | None]
    target_mean: float
    target_std: float | None  # None for one run
    source_mean: float
    source_std: float | None
    min_source_accuracy: float
    target_accuracies: list[float]
    runs: list[str]


class AdaptSummaryMetrics(TypedDict):
    modes: dict[str, AdaptSummaryMode]
    comparison_markdown: str


# --- part D: gan -------------------------------------------------------------------------------

class GanLosses(TypedDict):
    loss_d: float
    loss_g: float
    d_x: float  # D(x): mean probability D gives the real batch
    d_g_z: float  # D(G(z)) before G's update
    d_g_z_after: float  # D(G(z)) after it
    g_grad_norm: NotRequired[float]  # total norm of G's gradient before its step (absent in older runs)


class GanClassHistogram(TypedDict):
    counts: list[int]  # eval samples the MNIST classifier assigns to each digit 0-9
    max_share: float
    min_share: float
    kl_to_uniform: float  # nats


class GanFidPoint(TypedDict):
    batch: int
    fid: float


class GanMetrics(TypedDict):
    fid: float
    kid: float
    kid_std: float
    fid_real_baseline: float
    kid_real_baseline: float
    eval_samples: int
    eval_reference: str
    real_baseline: str
    classifier_test_accuracy: float
    conditional_accuracy: NotRequired[float]  # cdcgan
    batches: int
    images_seen: int
    train_seconds: float
    eval_seconds: float
    batches_per_second: float
    last_epoch_mean: GanLosses  # means over the last epoch's batches
    nonfinite_losses: int
    # the next three are written by every run since the study options (absent in older runs)
    class_histogram: NotRequired[GanClassHistogram]
    g_grad_norm_first_100_mean: NotRequired[float]
    fid_curve: NotRequired[list[GanFidPoint]]  # with --fid-every only


class GanSampleMetrics(TypedDict):
    images: int
    model: str
    layout: str


class GanInterpolateMetrics(TypedDict):
    pairs: int
    steps: int
    layout: str


# Read back from each variant's metrics.json, where a non-finite number was written as null.
GanComparisonRow = TypedDict("GanComparisonRow", {
    "variant": str, "g_loss": str, "nz": int, "ngf/ndf": str, "lr_d/lr_g": str, "init": str, "size": int,
    "epochs": int, "fid": Union[float, None], "fid_real_baseline": Union[float, None], "kid": Union[float, None],
    "conditional_accuracy": Union[float, None], "loss_d": Union[float, None], "loss_g": Union[float, None],
    "d_x": Union[float, None], "d_g_z": Union[float, None], "train_seconds": Union[float, None],
})


class GanCompareMetrics(TypedDict):
    variants: list[GanComparisonRow]  # also written as comparison.json


SCHEMAS: dict[str, Any] = {
    "inspect": InspectMetrics,
    "transfer": TransferMetrics,
    "saliency": SaliencyMetrics,
    "fool": FoolMetrics,
    "classviz": ClassVizMetrics,
    "adapt": AdaptMetrics,
    "adapt-summary": AdaptSummaryMetrics,
    "gan": GanMetrics,
    "gan-sample": GanSampleMetrics,
    "gan-interpolate": GanInterpolateMetrics,
    "gan-compare": GanCompareMetrics,
}


# --- validation --------------------------------------------------------------------------------

class NonFinite(TypedDict):
    """What :func:`vislab.io.write_json` adds under ``non_finite`` when a number was NaN or infinite."""

    reason: str
    values: dict[str, str]  # path in the document (``results[3].l2``) -> "nan", "inf" or "-inf"


class MetricsSchemaError(ValueError):
    """Metrics that do not match their schema: a key missing, unknown, or of the wrong type.
    Raised where vislab writes or reads them; the message names the key."""


@overload
def check_metrics(kind: Literal["inspect"], metrics: Any) -> InspectMetrics: ...
@overload
def check_metrics(kind: Literal["transfer"], metrics: Any) -> TransferMetrics: ...
@overload
def check_metrics(kind: Literal["saliency"], metrics: Any) -> SaliencyMetrics: ...
@overload
def check_metrics(kind: Literal["fool"], metrics: Any) -> FoolMetrics: ...
@overload
def check_metrics(kind: Literal["classviz"], metrics: Any) -> ClassVizMetrics: ...
@overload
def check_metrics(kind: Literal["adapt"], metrics: Any) -> AdaptMetrics: ...
@overload
def check_metrics(kind: Literal["adapt-summary"], metrics: Any) -> AdaptSummaryMetrics: ...
@overload
def check_metrics(kind: Literal["gan"], metrics: Any) -> GanMetrics: ...
@overload
def check_metrics(kind: Literal["gan-sample"], metrics: Any) -> GanSampleMetrics: ...
@overload
def check_metrics(kind: Literal["gan-interpolate"], metrics: Any) -> GanInterpolateMetrics: ...
@overload
def check_metrics(kind: Literal["gan-compare"], metrics: Any) -> GanCompareMetrics: ...
@overload
def check_metrics(kind: str, metrics: Any) -> Any: ...


def check_metrics(kind: str, metrics: Any) -> Any:
    """``metrics`` itself, once checked against the schema of experiment ``kind``; else a
    :class:`MetricsSchemaError` naming the missing, unknown or ill-typed key and its path
    (``fool metrics: results[3]: missing key 'linf_255' (float)``). Integers pass as floats
    (a float field may hold a whole number, e.g. the median of integers); bools are not numbers."""
    if kind not in SCHEMAS:
        raise MetricsSchemaError(f"no metrics schema for experiment {kind!r}; known: {', '.join(SCHEMAS)}")
    schema, nulls = SCHEMAS[kind], frozenset()
    if isinstance(metrics, Mapping) and NON_FINITE_KEY in metrics:
        problem = _problem(metrics[NON_FINITE_KEY], NonFinite, NON_FINITE_KEY, nulls)
        if problem:
            raise MetricsSchemaError(f"{kind} metrics: {problem}")
        nulls = frozenset(metrics[NON_FINITE_KEY]["values"])
        metrics_only = {k: v for k, v in metrics.items() if k != NON_FINITE_KEY}
    else:
        metrics_only = metrics
    problem = _problem(metrics_only, schema, "", nulls)
    if problem:
        raise MetricsSchemaError(f"{kind} metrics: {problem}")
    return metrics


def _problem(value: Any, tp: Any, where: str, nulls: frozenset[str]) -> str | None:
    """What is wrong with ``value`` as a ``tp`` (None: nothing), prefixed with its path;
    ``nulls``: the paths where a null stands for a non-finite float."""
    at = f"{where}: " if where else ""
    if tp is Any:
        return None
    if is_typeddict(tp):
        return _typeddict_problem(value, tp, where, nulls)
    origin, args = get_origin(tp), get_args(tp)
    if origin in (Union, types.UnionType):
        return _union_problem(value, args, where, nulls)
    if origin is Literal:
        return None if value in args else f"{at}expected one of {', '.join(map(repr, args))}, got {value!r}"
    if origin is list:
        if not isinstance(value, (list, tuple)):
            return f"{at}expected a list, got {_describe(value)}"
        return next((p for i, v in enumerate(value) if (p := _problem(v, args[0], f"{where}[{i}]", nulls))), None)
    if origin is dict:
        if not isinstance(value, Mapping):
            return f"{at}expected a mapping, got {_describe(value)}"
        return next((p for k, v in value.items() if (p := _problem(k, args[0], f"{where} key {k!r}", nulls)
                                                     or _problem(v, args[1], _join(where, k), nulls))), None)
    if _is_instance(value, tp) or (tp is float and value is None and where in nulls):
        return None
    return f"{at}expected {_type_name(tp)}, got {_describe(value)}"


def _typeddict_problem(value: Any, tp: Any, where: str, nulls: frozenset[str]) -> str | None:
    at = f"{where}: " if where else ""
    if not isinstance(value, Mapping):
        return f"{at}expected a mapping ({tp.__name__}), got {_describe(value)}"
    hints = _hints(tp)
    for key in sorted(tp.__required_keys__ - value.keys(), key=list(hints).index):
        return f"{at}missing key {key!r} ({_type_name(hints[key])})"
    for key in value:
        if key not in hints:
            return f"{at}unknown key {key!r} (not in {tp.__name__}; add it to vislab.schemas)"
    return next((p for key, v in value.items() if (p := _problem(v, hints[key], _join(where, key), nulls))), None)


def _union_problem(value: Any, members: tuple, where: str, nulls: frozenset[str]) -> str | None:
    """None if ``value`` fits one member; else the problem with the member it fits best (the
    TypedDict with the most of its required keys present)."""
    problems = []
    for tp in members:
        problem = _problem(value, tp, where, nulls)
        if problem is None:
            return None
        fit = (len(tp.__required_keys__ & value.keys())
               if is_typeddict(tp) and isinstance(value, Mapping) else -1)
        problems.append((fit, problem))
    if all(fit < 0 for fit, _ in problems):  # plain values: say what was allowed
        at = f"{where}: " if where else ""
        return f"{at}expected {' or '.join(_type_name(tp) for tp in members)}, got {_describe(value)}"
    return max(problems, key=lambda fp: fp[0])[1]


@lru_cache(maxsize=None)
def _hints(tp: Any) -> dict[str, Any]:
    return get_type_hints(tp)


def _is_instance(value: Any, tp: Any) -> bool:
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:  # numbers.Integral: numpy integers too, in metrics not yet written to JSON
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, numbers.Real) and not isinstance(value, bool)
    return isinstance(value, tp)


def _type_name(tp: Any) -> str:
    origin, args = get_origin(tp), get_args(tp)
    if tp is type(None):
        return "None"
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in args)
    if origin is Literal:
        return " | ".join(map(repr, args))
    if origin is not None:
        return f"{origin.__name__}[{', '.join(_type_name(a) for a in args)}]"
    return getattr(tp, "__name__", repr(tp))


def _describe(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 40 else text[:37] + '...'}"


def _join(where: str, key: Any) -> str:
    return f"{where}.{key}" if where else str(key)
