"""The derivations of docs/gradients.md checked against TensorFlow's autodiff.

Every closed form in imnet64.theory.gradients is compared with tf.GradientTape in float64 to 1e-6
on random inputs (several sizes K, several seeds). A deliberately wrong formula (the seed
notebook's de/dH) is run through the same check and must fail it.
"""

from __future__ import annotations

import imnet64  # noqa: F401  (Keras 2 before TensorFlow)
from imnet64.theory import gradients as G

import numpy as np
import pytest
import tensorflow as tf

TOL = 1e-6
SIZES = (2, 5, 10, 1001)
SEEDS = (0, 1, 2)
CASES = [(k, s) for k in SIZES for s in SEEDS]


def _rng(K: int, seed: int) -> np.random.Generator:
    return np.random.default_rng(1000 * seed + K)


def _tape_xent(x: np.ndarray, k: int) -> tuple[float, np.ndarray]:
    """Loss and gradient from TF's fused softmax cross-entropy on logits."""
    xt = tf.constant(x, dtype=tf.float64)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        e = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.constant(k), logits=xt)
    return float(e.numpy()), tape.gradient(e, xt).numpy()


def _tape_residual(x, H, v, g):
    """de/dx, de/dv, de/dH from the tape, with e = g . y so that de/dy = g exactly."""
    xt, Ht, vt = (tf.Variable(a, dtype=tf.float64) for a in (x, H, v))
    with tf.GradientTape() as tape:
        pre = tf.linalg.matvec(Ht, xt) + vt
        y = xt + tf.nn.relu(pre)
        e = tf.reduce_sum(tf.constant(g) * y)
    dx, dv, dH = tape.gradient(e, [xt, vt, Ht])
    return dx.numpy(), dv.numpy(), dH.numpy()


def _residual_inputs(K: int, seed: int):
    rng = _rng(K, seed)
    x = rng.normal(size=K)
    H = rng.normal(size=(K, K)) / np.sqrt(K)
    v = rng.normal(size=K)
    g = rng.normal(size=K)
    # Keep pre-activations away from ReLU's kink at 0, where the derivative is undefined.
    pre = H @ x + v
    v = v + np.where(np.abs(pre) < 1e-3, 1e-2, 0.0)
    return x, H, v, g


@pytest.mark.parametrize("K,seed", CASES)
def test_softmax_xent_gradient_matches_tape(K: int, seed: int) -> None:
    rng = _rng(K, seed)
    x = rng.normal(scale=3.0, size=K)
    k = int(rng.integers(K))
    e_tf, grad_tf = _tape_xent(x, k)
    np.testing.assert_allclose(G.softmax_xent(x, k), e_tf, atol=TOL, rtol=0)
    np.testing.assert_allclose(G.softmax_xent_grad(x, k), grad_tf, atol=TOL, rtol=0)
    # The gradient sums to zero: softmax sums to 1, and so does the one-hot target.
    assert abs(grad_tf.sum()) < TOL


@pytest.mark.parametrize("K,seed", [c for c in CASES if c[0] <= 10])
def test_softmax_jacobian_gradient_matches_tape(K: int, seed: int) -> None:
    x = tf.constant(_rng(K, seed).normal(scale=2.0, size=K), dtype=tf.float64)
    with tf.GradientTape() as tape:
        tape.watch(x)
        s = tf.nn.softmax(x)
    J_tf = tape.jacobian(s, x).numpy()  # J[i, j] = d s_i / d x_j
    J = G.softmax_jacobian(x.numpy())
    np.testing.assert_allclose(J, J_tf, atol=TOL, rtol=0)
    # The two cases of the derivation, entry by entry.
    sv = G.softmax(x.numpy())
    i, j = 0, K - 1
    assert abs(J_tf[i, i] - sv[i] * (1 - sv[i])) < TOL
    assert abs(J_tf[i, j] - (-sv[i] * sv[j])) < TOL


@pytest.mark.parametrize("K,seed", [c for c in CASES if c[0] <= 10])
def test_chain_rule_jacobian_times_xent_gradient(K: int, seed: int) -> None:
    """de/dx = J^T de/dsoftMax, with de/dsoftMax = -1/s_k at k and 0 elsewhere."""
    rng = _rng(K, seed)
    x = rng.normal(size=K)
    k = int(rng.integers(K))
    de_ds = np.zeros(K)
    de_ds[k] = -1.0 / G.softmax(x)[k]
    np.testing.assert_allclose(G.softmax_jacobian(x).T @ de_ds, _tape_xent(x, k)[1], atol=TOL)


@pytest.mark.parametrize("K,seed", CASES[:9])
def test_residual_block_gradients_match_tape(K: int, seed: int) -> None:
    x, H, v, g = _residual_inputs(K, seed)
    dx_tf, dv_tf, dH_tf = _tape_residual(x, H, v, g)
    dx, dv, dH = G.residual_block_grads(x, H, v, g)
    assert dx.shape == (K,) and dv.shape == (K,) and dH.shape == (K, K)
    np.testing.assert_allclose(dx, dx_tf, atol=TOL, rtol=0)
    np.testing.assert_allclose(dv, dv_tf, atol=TOL, rtol=0)
    np.testing.assert_allclose(dH, dH_tf, atol=TOL, rtol=0)
    # The Jacobian dy/dx is I + D H (rows = outputs), seen through tape.jacobian.
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        y = xt + tf.nn.relu(tf.linalg.matvec(tf.constant(H), xt) + tf.constant(v))
    J_tf = tape.jacobian(y, xt).numpy()
    D = np.diag(G.relu_mask(x, H, v))
    np.testing.assert_allclose(np.eye(K) + D @ H, J_tf, atol=TOL, rtol=0)


def test_residual_identity_path_keeps_gradient_when_relu_is_off() -> None:
    """With every unit switched off (D = 0) the plain branch passes no gradient, the
    residual block still passes de/dx = de/dy through its identity path."""
    K = 6
    x, H, _, g = _residual_inputs(K, 0)
    v = np.full(K, -1e3)  # every pre-activation negative
    dx_tf, dv_tf, dH_tf = _tape_residual(x, H, v, g)
    np.testing.assert_allclose(dx_tf, g, atol=TOL)
    assert not dv_tf.any() and not dH_tf.any()


def _seed_dH(x, H, v, g) -> np.ndarray:
    """The seed notebook's answer, de/dH = de/dy I(0,1) H, read as the K x K matrix
    diag(D g) H (the only reading that even has H's shape)."""
    return np.diag(G.relu_mask(x, H, v) * g) @ H


@pytest.mark.parametrize("K,seed", [(5, 0), (5, 1), (10, 2)])
def test_seed_wrong_dH_gradient_differs_from_tape(K: int, seed: int) -> None:
    x, H, v, g = _residual_inputs(K, seed)
    _, _, dH_tf = _tape_residual(x, H, v, g)
    wrong = _seed_dH(x, H, v, g)
    # Same shape as the true gradient, yet far outside the tolerance the right form meets.
    assert np.max(np.abs(wrong - dH_tf)) > 100 * TOL
    # Read literally (row vector de/dy times diag times H) it is a K-vector, not K x K.
    assert (g @ np.diag(G.relu_mask(x, H, v)) @ H).shape != dH_tf.shape
    # And it cannot be right in general: it ignores x, while the true de/dH scales with x.
    x2 = 2.0 * x
    v2 = v - H @ x  # keeps H x2 + v2 = Hx + v, so D and the seed's answer are unchanged
    _, _, dH_tf2 = _tape_residual(x2, H, v2, g)
    np.testing.assert_allclose(_seed_dH(x2, H, v2, g), wrong, atol=TOL)
    np.testing.assert_allclose(dH_tf2, 2.0 * dH_tf, atol=TOL)


@pytest.mark.parametrize("K", (2, 10, 1001))
def test_extreme_logits_gradient_fused_is_finite_separate_is_not(K: int) -> None:
    """Logits of +-1000: softmax then log gives -inf (loss inf, gradient nan); the fused op
    and the closed form stay finite and agree."""
    x_np = np.full(K, -1000.0)
    x_np[0] = 1000.0
    k = K - 1  # the true class has the tiny logit: its softmax underflows to exactly 0
    x = tf.constant(x_np, dtype=tf.float64)

    with tf.GradientTape() as tape:
        tape.watch(x)
        e_sep = -tf.math.log(tf.nn.softmax(x))[k]
    g_sep = tape.gradient(e_sep, x).numpy()
    assert np.isinf(e_sep.numpy())
    assert np.isnan(g_sep).any()

    # Without the max-subtraction trick softmax itself is already inf / inf = nan.
    naive = tf.exp(x) / tf.reduce_sum(tf.exp(x))
    assert np.isnan(naive.numpy()[0])

    e_fused, g_fused = _tape_xent(x_np, k)
    assert np.isfinite(e_fused) and np.isfinite(g_fused).all()
    np.testing.assert_allclose(e_fused, 2000.0, atol=TOL)
    np.testing.assert_allclose(G.softmax_xent(x_np, k), e_fused, atol=TOL)
    np.testing.assert_allclose(G.softmax_xent_grad(x_np, k), g_fused, atol=TOL, rtol=0)
    expected = np.zeros(K)
    expected[0], expected[k] = 1.0, -1.0
    np.testing.assert_allclose(g_fused, expected, atol=TOL)


# ---- soft targets and temperature (docs/gradients.md, "Soft targets and temperature") ----

TEMPERATURES = (0.5, 1.0, 2.0, 8.0)


def _tape_soft_xent(x: np.ndarray, q: np.ndarray, T: float) -> tuple[float, np.ndarray]:
    """Unscaled loss and gradient from TF's fused dense softmax cross-entropy at T."""
    xt = tf.constant(x, dtype=tf.float64)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        e = tf.nn.softmax_cross_entropy_with_logits(labels=tf.constant(q), logits=xt / T)
    return float(e.numpy()), tape.gradient(e, xt).numpy()


@pytest.mark.parametrize("T", TEMPERATURES)
@pytest.mark.parametrize("K,seed", CASES)
def test_soft_xent_temperature_gradient_matches_tape(K: int, seed: int, T: float) -> None:
    rng = _rng(K, seed)
    x = rng.normal(scale=3.0, size=K)
    q = G.softmax(rng.normal(scale=2.0, size=K))
    e_tf, grad_tf = _tape_soft_xent(x, q, T)
    np.testing.assert_allclose(G.soft_xent(x, q, T), e_tf, atol=TOL, rtol=0)
    np.testing.assert_allclose(G.soft_xent_grad(x, q, T), grad_tf, atol=TOL, rtol=0)
    # scaled by T^2: the loss and the gradient both T^2 times the unscaled ones
    np.testing.assert_allclose(G.soft_xent(x, q, T, scaled=True), T * T * e_tf, atol=TOL * T * T)
    np.testing.assert_allclose(G.soft_xent_grad(x, q, T, scaled=True), T * T * grad_tf,
                               atol=TOL, rtol=0)
    assert abs(grad_tf.sum()) < TOL  # softMax and q both sum to 1


def test_soft_xent_one_hot_target_at_t1_is_the_hard_gradient() -> None:
    x = _rng(10, 0).normal(size=10)
    np.testing.assert_allclose(G.soft_xent_grad(x, G.onehot(3, 10)), G.softmax_xent_grad(x, 3),
                               atol=TOL, rtol=0)
    assert G.soft_xent(x, G.onehot(3, 10)) == pytest.approx(G.softmax_xent(x, 3), abs=TOL)


def test_soft_xent_temperature_shrinks_gradient_and_t2_scaling_matches_logits() -> None:
    """Unscaled, the gradient is bounded by 1/T; T^2-scaled, with the teacher's softmax at the
    same T as target, it tends to ((x - mean x) - (v - mean v)) / K for large T."""
    K = 10
    rng = _rng(K, 4)
    x, v = rng.normal(scale=2.0, size=K), rng.normal(scale=2.0, size=K)
    for T in TEMPERATURES:
        q = G.softmax(v / T)
        g = G.soft_xent_grad(x, q, T)
        assert np.abs(g).max() <= 1.0 / T
        np.testing.assert_allclose(g, _tape_soft_xent(x, q, T)[1], atol=TOL, rtol=0)
    T = 1e4  # the gap shrinks like 1/T (second-order terms of exp(x / T))
    scaled = G.soft_xent_grad(x, G.softmax(v / T), T, scaled=True)
    matching = ((x - x.mean()) - (v - v.mean())) / K
    np.testing.assert_allclose(scaled, matching, atol=1e-3 * np.abs(matching).max())


# ---- which feature maps the backward pass keeps (docs/gradients.md, section 3) ----------

MEM_CASES = [("plain", False), ("plain", True), ("residual", False), ("residual", True)]


def _graph_layer(tensor_name: str, layers: set[str]) -> str:
    """The calculator's layer name for a tensor of the traced training graph."""
    if tensor_name.startswith("SparseSoftmaxCrossEntropyWithLogits"):
        return "xent"
    parts = tensor_name.split("/")
    hits = [p for p in parts if p in layers]
    assert hits, f"{tensor_name} belongs to none of {sorted(layers)}"
    return hits[0]  # the outermost layer (a recomputed level wraps its inner layers)


@pytest.mark.parametrize("arch,recompute", MEM_CASES)
def test_activation_memory_gradient_calculator_matches_saved_tensors(arch, recompute) -> None:
    """The calculator names exactly the feature maps that the real training step of
    imnet64.train.model reads in its backward pass, with their shapes and bytes."""
    from imnet64.formats.image64 import SIZE
    from imnet64.theory.activation_memory import (
        activation_memory_bytes,
        recompute_checkpoints,
        saved_for_backward,
        saved_tensors,
    )
    from imnet64.train.model import build_model

    batch, classes, repeats, widths = 2, 7, (2, 1, 2), (8, 16, 24)
    model = build_model(classes, image_size=SIZE, arch=arch, repeats=repeats, widths=widths,
                        recompute=recompute)
    measured = saved_for_backward(model, batch)
    pick = recompute_checkpoints if recompute else saved_tensors
    computed = pick(batch, arch, repeats, widths, num_classes=classes)

    names = {t.layer for t in computed}
    from_graph = {_graph_layer(name, names): shape for name, shape, _ in measured}
    assert len(from_graph) == len(measured), "two graph tensors mapped to one layer"
    assert from_graph == {t.layer: t.shape for t in computed}
    assert sum(b for *_, b in measured) == sum(t.nbytes for t in computed)
    if not recompute:
        assert activation_memory_bytes(
            batch, arch, repeats, widths, num_classes=classes
        ) == sum(b for *_, b in measured)
        # ... and every map is the output of the model layer of that name.
        for t in computed:
            if t.layer != "xent":
                assert tuple(model.get_layer(t.layer).output_shape[1:]) == t.shape[1:]


def test_activation_memory_gradient_figures_for_the_default_encoder() -> None:
    """Worked figures quoted in docs/gradients.md (batch 32, float32, 1001 classes)."""
    from imnet64.theory.activation_memory import activation_memory_bytes

    def mib(arch: str, recompute: bool = False) -> float:
        b = activation_memory_bytes(32, arch, (3, 3, 3), (32, 64, 128), recompute=recompute)
        return b / 2**20

    # plain: per level 6 maps (conv, relu x 3): 6*16 + 6*8 + 6*4 MiB; pools 4 + 2 MiB;
    # the scaled image 1.5 MiB; head 32*(128 + 1001)*4 bytes.
    head = 32 * (128 + 1001) * 4 / 2**20
    assert mib("plain") == pytest.approx(96 + 48 + 24 + 6 + 1.5 + head)
    # residual: + one add output per block except the very last: 3*16 + 3*8 + 2*4 MiB more.
    assert mib("residual") == pytest.approx(mib("plain") + 48 + 24 + 8)
    # recompute: the peak is while level 0 is rebuilt (its 6 maps of 16 MiB; residual: 8, its
    # output excepted), when of all checkpoints only the scaled image is still needed.
    assert mib("plain", True) == pytest.approx(1.5 + 6 * 16)
    assert mib("residual", True) == pytest.approx(1.5 + 8 * 16)


def test_activation_memory_gradient_doc_table_matches_calculator() -> None:
    """The table of computed MiB in docs/gradients.md is the calculator's output."""
    import re
    from pathlib import Path

    from imnet64.theory.activation_memory import activation_memory_bytes

    doc = (Path(__file__).resolve().parents[1] / "docs" / "gradients.md").read_text()
    rows = re.findall(r"^\| (\d+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \|$", doc, re.M)
    assert [int(r[0]) for r in rows] == [32, 64, 128, 256]
    for batch, *cells in rows:
        expected = [
            activation_memory_bytes(int(batch), arch, (3, 3, 3), (32, 64, 128), recompute=rc)
            / 2**20
            for arch in ("plain", "residual")
            for rc in (False, True)
        ]
        assert [float(c) for c in cells] == [round(e, 1) for e in expected]


def test_activation_memory_gradient_measured_step_peak() -> None:
    """bench/memory.py's measurement, in worker processes as the benchmark runs it: a
    training step's allocator peak covers the computed feature maps (the backward pass adds
    gradient buffers on top), and recompute lowers it. It must work with oneDNN on or off
    (the workers inherit TF_ENABLE_ONEDNN_OPTS; `make test` runs this tier with 0 too):
    without oneDNN, TensorFlow's default CPU allocator keeps no statistics."""
    import argparse
    import importlib.util
    from pathlib import Path

    from imnet64.theory.activation_memory import activation_memory_bytes

    path = Path(__file__).resolve().parents[1] / "bench" / "memory.py"
    spec = importlib.util.spec_from_file_location("bench_memory", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)

    # Batch 32, not smaller: without oneDNN, TensorFlow's Eigen convolution gradients take
    # temporaries of a size that does not scale with the batch (measured at batch 8: a step
    # peak of 100.6 MiB for 43.9 MiB of feature maps, 52.2 MiB with oneDNN); at 32 the maps
    # dominate either way (200 vs 196 MiB for 176 MiB computed).
    args = argparse.Namespace(batch=32, steps=1, classes=10)
    peaks = {}
    for mode in ("train", "train+recompute"):
        r = bench._measure(mode, "plain", args)
        computed = activation_memory_bytes(args.batch, "plain", (3, 3, 3), (32, 64, 128),
                                           recompute=mode != "train", num_classes=args.classes)
        assert computed <= r["allocator_step_peak_bytes"] <= 2 * computed, (mode, r, computed)
        peaks[mode] = r["allocator_step_peak_bytes"]
    assert peaks["train+recompute"] < 0.85 * peaks["train"], peaks
