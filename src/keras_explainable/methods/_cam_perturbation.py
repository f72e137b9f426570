"""Score-CAM and Ablation-CAM: CAM methods whose weights come from extra forward passes.

Public through :mod:`.cams`; see its docstring for the chunking scheme.
"""

from __future__ import annotations

from keras import ops

from .. import backend, inspection
from .._axes import SPATIAL_AXIS
from .._branches import branch_leaf
from .._head import head_after
from .._inputs import is_structure, leaves, pack
from .._taps import tapped
from ..resizing import resize
from ._cam_path import _class_activation_map, _safe_divide
from ._common import (
    is_default_target,
    positive_axes,
    repeat_target,
    unit_selector,
    widen,
)


def _check_count(name, value, allow_none=False):
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer; got {value!r}.")


def _select_repeated(signal, outputs, repeats, transform=None):
    """The explained units of outputs computed on ``repeats`` copies of each sample.

    ``outputs`` come from a batch ordered sample-major (``batch * repeats``
    rows); the result is ``(batch, repeats, units)``, float32 for a
    mixed-precision model (a ``transform`` such as a softmax over the classes
    sees float32 logits).
    """
    chosen = signal.indices
    if chosen is not None and signal.indices_batch_dims != 0:
        chosen = ops.repeat(chosen, repeats, axis=0)
    axis, batch_dims = signal.indices_axis, signal.indices_batch_dims
    if is_default_target(signal.target):
        logits = inspection.first_output(outputs)
        if transform is not None:
            logits = transform(widen(logits))
        units = inspection.gather_units(logits, chosen, axis, batch_dims)
    else:
        target = repeat_target(signal.target, repeats)
        if transform is None:
            units = unit_selector(chosen, axis, batch_dims, target)(outputs, ())
        elif not target.scores_classes:
            raise ValueError(
                f"softmax='classes' takes a softmax over the classes of the explained output; "
                f"the target {target!r} scores no class vector. Use softmax='channels' or None."
            )
        else:  # every class of the picked output, softmaxed, then the explained ones
            every = unit_selector(None, axis, batch_dims, target)(outputs, ())
            units = inspection.gather_units(transform(every), chosen, axis, batch_dims)
    return ops.reshape(widen(units), (-1, repeats, signal.units))


def _in_chunks(run, num_chunks: int, chunk: int, like):
    """Stack ``run(i)`` (each ``(batch, chunk, units)``) for ``i < num_chunks``.

    The chunks run inside ``keras.ops.fori_loop`` (one traced copy of the
    model, static shapes); the result is ``(batch, num_chunks * chunk, units)``.
    """
    if num_chunks == 1:
        return run(0)
    buffer = ops.expand_dims(ops.expand_dims(ops.zeros_like(like), 0), 2)  # (1, batch, 1, units)
    buffer = buffer + ops.zeros((num_chunks, 1, chunk, 1), dtype=like.dtype)
    slots = ops.reshape(ops.arange(num_chunks, dtype="int32"), (num_chunks, 1, 1, 1))

    def body(i, stacked):
        values = ops.cast(run(i), stacked.dtype)
        return ops.where(ops.equal(slots, i), ops.expand_dims(values, 0), stacked)

    stacked = ops.fori_loop(0, num_chunks, body, buffer)
    stacked = ops.transpose(stacked, (1, 0, 2, 3))
    return ops.reshape(stacked, (-1, num_chunks * chunk, stacked.shape[-1]))


def _chunking(channels: int, chunk_size: int):
    chunk = min(chunk_size, channels)
    num_chunks = -(-channels // chunk)
    return chunk, num_chunks


def _channel_chunks(activations, chunk, num_chunks):
    """``(batch, *s, K)`` -> ``(num_chunks, batch, *s, chunk)``, K zero-padded."""
    channels = activations.shape[-1]
    rank = len(activations.shape)
    padding = num_chunks * chunk - channels
    if padding:
        activations = ops.pad(activations, [[0, 0]] * (rank - 1) + [[0, padding]])
    shape = ops.shape(activations)
    split = ops.reshape(activations, tuple(shape[:-1]) + (num_chunks, chunk))
    return ops.transpose(split, (rank - 1,) + tuple(range(rank - 1)) + (rank,))


def _masked_input(signal, rank):
    """``(x, full)``: the input Score-CAM masks and ``full(masked, copies)``, the model's inputs.

    A model of several inputs: ``x`` is the input of ``rank`` axes that the
    explained layer's branch reads; the others are repeated to match the
    ``copies`` masked versions of every sample (sample-major).
    """
    inputs = signal.inputs
    if not is_structure(inputs):
        return inputs, lambda masked, copies: masked
    position = branch_leaf(signal.explained, signal.taps[0], inputs, rank)
    items = leaves(inputs)
    if position is None:
        shapes = ", ".join(str(tuple(item.shape)) for item in items)
        raise ValueError(
            f"Score-CAM masks the input the explained layer reads with its {rank - 2}-D "
            f"activations, but no single input of the model ({shapes}) has {rank - 2} spatial "
            "axes on that layer's branch. Explain a layer of an image branch, or use Grad-CAM "
            "(it needs no input masking)."
        )

    def full(masked, copies):
        return pack(
            inputs,
            [masked if i == position else ops.repeat(v, copies, 0) for i, v in enumerate(items)],
        )

    return items[position], full


def repeat_inputs(inputs, copies):
    """Every input repeated ``copies`` times, sample-major (a structure: every leaf)."""
    if is_structure(inputs):
        return pack(inputs, [ops.repeat(item, copies, axis=0) for item in leaves(inputs)])
    return ops.repeat(inputs, copies, axis=0)


def _masked_softmax(values, valid, axis):
    """Softmax of ``values`` over ``axis`` among the ``valid`` entries (others: 0)."""
    lowest = ops.min(values, axis=axis, keepdims=True)
    peak = ops.max(ops.where(valid, values, lowest), axis=axis, keepdims=True)
    exponentials = ops.where(valid, ops.exp(values - peak), ops.zeros_like(values))
    total = ops.sum(exponentials, axis=axis, keepdims=True)
    return _safe_divide(exponentials, total)


def _top_variance_channels(activations, axes, top_n):
    """The ``top_n`` channels of highest spatial variance, per sample."""
    channels = activations.shape[-1]
    if top_n > channels:
        raise ValueError(
            f"top_n={top_n} exceeds the {channels} channels of the explained activation; "
            f"pass top_n <= {channels} (or None for every channel)."
        )
    variance = ops.var(activations, axis=axes)  # (batch, K)
    _, chosen = ops.top_k(variance, top_n, sorted=True)
    rank = len(activations.shape)
    chosen = ops.reshape(chosen, (-1,) + (1,) * (rank - 2) + (top_n,))
    chosen = ops.broadcast_to(chosen, tuple(ops.shape(activations)[:-1]) + (top_n,))
    return ops.take_along_axis(activations, chosen, axis=-1)


_SOFTMAX_MODES = ("channels", "classes", None)


def scorecam(
    model,
    inputs,
    indices=None,
    indices_axis: int = -1,
    indices_batch_dims: int = -1,
    spatial_axis=SPATIAL_AXIS,
    chunk_size: int = 8,
    top_n: int | None = None,
    softmax: str | None = "channels",
    target=None,
):
    """Score-CAM: channels weighted by the score of the input masked with them.

    For every channel ``k`` of the activations ``A`` (per sample):

    1. ``H_k``: ``A^k`` upsampled (bilinear, half-pixel centres, like
       ``keras.ops.image.resize``) to the input's spatial size, then min-max
       normalized to ``[0, 1]``;
    2. ``s_k``: the explained unit's score (the model's first output, e.g. its
       logit) on the masked input ``x * H_k`` (every input channel masked);
    3. the channel weight, by ``softmax``:

       - ``"channels"`` (default): ``w = softmax_k(s_k - s_b)`` over the
         channels, ``s_b`` the score of the baseline. This is the paper's
         "increase of confidence" followed by a softmax over channels, as in
         pytorch-grad-cam's ``ScoreCAM``. Since ``s_b`` is the same for every
         channel it cancels in the softmax, so the baseline is never run and
         its choice does not matter.
       - ``"classes"``: ``w_k = softmax(logits(x * H_k))[u]``, the unit's
         probability among the outputs on the masked input, without a baseline
         (the official code, haofanwang/Score-CAM). Meant for logit outputs.
       - ``None``: ``w_k = s_k - s_b``, the raw increase over the baseline
         ``x_b = 0`` (an all-zero input, one extra forward pass).
    4. ``map = sum_k w_k A^k`` at the activation's resolution (bilinear
       upsampling is linear, so this is the paper's map before resizing).

    A channel that is constant over space (e.g. a dead ReLU channel) has no
    mask: it gets ``w_k = 0`` and is left out of the softmax, like the official
    code skips it.

    The ``K`` masked inputs of each sample are evaluated ``chunk_size`` at a
    time: each forward pass runs ``batch * chunk_size`` inputs, and the
    ``ceil(K / chunk_size)`` passes run in a ``keras.ops.fori_loop`` (``K``
    padded to a multiple of the chunk; no gradient is recorded).

    Faster Score-CAM: ``top_n`` keeps, per sample, only the ``top_n`` channels
    of highest spatial variance (the criterion of Faster Score-CAM,
    tabayashi0117/Score-CAM); the others get no mask and no weight, so the
    cost drops to ``top_n`` forward passes. ``top_n = K`` gives Score-CAM.

    Args:
        {args}
        chunk_size: masked inputs per sample in one forward pass; lower it if
            memory runs short (each pass holds ``batch * chunk_size`` inputs).
        top_n: ``None`` (every channel), or the number of channels to keep
            (Faster Score-CAM).
        softmax: ``"channels"``, ``"classes"`` or ``None``, see above.

    Returns:
        ``(scores, maps)``: ``(batch, units)`` and ``(batch, *activation_spatial, units)``.

    Example:
        >>> scores, cams = ke.methods.cams.scorecam(model, x, np.array([3, 1]), chunk_size=16)

    References:
        Wang, Wang, Du, Yang, Zhang, Ding, Mardziel & Hu (2020). Score-CAM:
        Score-Weighted Visual Explanations for Convolutional Neural Networks.
        CVPR Workshops. arXiv:1910.01279.
    """
    _check_count("chunk_size", chunk_size)
    _check_count("top_n", top_n, allow_none=True)
    if softmax not in _SOFTMAX_MODES:
        raise ValueError(f"softmax must be one of {_SOFTMAX_MODES}; got {softmax!r}.")

    def weigh(signal):
        activations = signal.activations
        if top_n is not None:
            activations = _top_variance_channels(activations, signal.axes, top_n)
        inputs, full = _masked_input(signal, len(activations.shape))
        if len(inputs.shape) != len(activations.shape):
            raise ValueError(
                f"Score-CAM masks the inputs {tuple(inputs.shape)} with the activations "
                f"{tuple(activations.shape)}: they need the same number of spatial axes."
            )
        input_axes = positive_axes(signal.spatial_axis, len(inputs.shape))
        size = [inputs.shape[a] for a in input_axes]
        channels = activations.shape[-1]
        chunk, num_chunks = _chunking(channels, chunk_size)
        chunks = _channel_chunks(activations, chunk, num_chunks)
        axes = signal.axes
        classes = ops.softmax if softmax == "classes" else None

        def run(i):
            block = ops.take(chunks, i, axis=0)  # (batch, *s, chunk)
            up = resize(block, size, signal.spatial_axis)  # (batch, *S, chunk)
            low = ops.min(up, axis=axes, keepdims=True)
            high = ops.max(up, axis=axes, keepdims=True)
            masks = _safe_divide(up - low, high - low)
            masks = ops.cast(ops.moveaxis(masks, -1, 1), inputs.dtype)  # (batch, chunk, *S)
            masked = ops.expand_dims(inputs, 1) * ops.expand_dims(masks, -1)
            masked = ops.reshape(masked, (-1,) + tuple(inputs.shape[1:]))
            outputs, _ = backend.forward(signal.model, full(masked, chunk))
            return _select_repeated(signal, outputs, chunk, classes)

        scores = _in_chunks(run, num_chunks, chunk, signal.scores)[:, :channels]
        spread = ops.max(activations, axis=axes) - ops.min(activations, axis=axes)
        valid = ops.expand_dims(spread > 0, -1)  # (batch, K, 1)
        if softmax == "channels":
            weights = _masked_softmax(scores, valid, axis=1)
        else:
            if softmax is None:
                outputs, _ = backend.forward(signal.model, full(ops.zeros_like(inputs), 1))
                baseline = _select_repeated(signal, outputs, 1)  # (batch, 1, units)
                scores = scores - baseline
            weights = ops.where(valid, scores, ops.zeros_like(scores))
        return weights, activations

    return _class_activation_map(
        model, inputs, indices, indices_axis, indices_batch_dims, spatial_axis, weigh,
        gradients=False, target=target,
    )  # fmt: skip


def ablationcam(
    model,
    inputs,
    indices=None,
    indices_axis: int = -1,
    indices_batch_dims: int = -1,
    spatial_axis=SPATIAL_AXIS,
    chunk_size: int = 8,
    target=None,
):
    """Ablation-CAM: channels weighted by the score lost when they are removed.

    ``w_k = (y - y_k) / y`` with ``y`` the unit's score and ``y_k`` its score
    when channel ``k`` of the explained activation is set to zero; ``map =
    sum_k w_k A^k``. Where ``y`` is exactly 0 the drop ``y - y_k`` is kept
    undivided. (Note the division flips the sign of every weight when
    ``y < 0``, as in the paper's formula.)

    How the ablated scores are computed: when the model is a functional graph
    in which everything after the explained layer depends on its output alone
    (the usual case: the last convolution, then pooling and the classifier),
    only those layers run on the ablated activations (the model's *head*,
    built from the graph and sharing its weights). Otherwise (subclassed
    models, a skip connection crossing the layer, a layer inside a nested
    model) the whole model runs again on copies of the input while the
    explained layer's output is replaced by the ablated activations (a tap,
    see ``ke.inspection``): the layers after the tap see the ablated channel,
    everything else the original values, which is what zeroing the channel
    inside the model means; the price is ``K`` full forward passes. Either way
    the ``K`` ablations of each sample run ``chunk_size`` at a time in a
    ``keras.ops.fori_loop``, without gradients. A ``target`` other than the
    default always reruns the whole model (the head computes the first output).

    Args:
        {args}
        chunk_size: ablations per sample in one forward pass (each pass runs
            ``batch * chunk_size`` inputs); lower it if memory runs short.

    Returns:
        ``(scores, maps)``: ``(batch, units)`` and ``(batch, *activation_spatial, units)``.

    Example:
        >>> scores, cams = ke.methods.cams.ablationcam(model, x, np.array([3, 1]))

    References:
        Desai & Ramaswamy (2020). Ablation-CAM: Visual Explanations for Deep
        Convolutional Network via Gradient-free Localization. WACV, 983-991.
    """
    _check_count("chunk_size", chunk_size)

    def weigh(signal):
        activations = signal.recorded  # as the layer returned it (tokens: every token)
        channels = activations.shape[-1]
        rank = len(activations.shape)
        chunk, num_chunks = _chunking(channels, chunk_size)
        every = ops.expand_dims(ops.arange(channels, dtype="int32"), 0)  # (1, K)
        head = (
            head_after(signal.model, signal.taps[0]) if is_default_target(signal.target) else None
        )
        if head is None:  # rerun the whole model on copies, the tap replaced
            copies = repeat_inputs(signal.inputs, chunk)  # sample-major

            def scores_of(ablated):
                def replace(position, value):
                    del position
                    return ops.cast(ablated, value.dtype)

                with tapped(signal.taps, replace):
                    return backend.forward(signal.model, copies)[0]
        else:  # only the layers after the explained one

            def scores_of(ablated):
                return backend.forward(head, ops.cast(ablated, head.input_dtype))[0]

        def run(i):
            ablated_ids = i * chunk + ops.arange(chunk, dtype="int32")  # (chunk,)
            keep = ops.not_equal(every, ops.expand_dims(ablated_ids, -1))  # (chunk, K)
            keep = ops.reshape(
                ops.cast(keep, activations.dtype), (1, chunk) + (1,) * (rank - 2) + (channels,)
            )
            ablated = ops.expand_dims(activations, 1) * keep  # (batch, chunk, *s, K)
            ablated = ops.reshape(ablated, (-1,) + tuple(activations.shape[1:]))
            return _select_repeated(signal, scores_of(ablated), chunk)

        ablated_scores = _in_chunks(run, num_chunks, chunk, signal.scores)[:, :channels]
        scores = ops.expand_dims(signal.scores, 1)
        drop = scores - ops.cast(ablated_scores, scores.dtype)
        return _safe_divide(drop, scores, drop)

    return _class_activation_map(
        model, inputs, indices, indices_axis, indices_batch_dims, spatial_axis, weigh,
        gradients=False, target=target,
    )  # fmt: skip
