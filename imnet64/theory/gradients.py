"""Closed-form gradients derived in docs/gradients.md, as small numpy functions.

They exist to be checked against TensorFlow's autodiff (tests/test_gradients.py), so the
derivations in the doc are executable rather than only written down.

Conventions (the same as in the doc):
- Vectors are 1-D arrays and stand for *column* vectors: x has shape (K,).
- "de/dx" is the *gradient* of the scalar e with respect to x: an array of x's own shape
  ((K,) for a vector, (K, K) for the matrix H), i.e. what ``tape.gradient(e, x)`` returns.
- A Jacobian dy/dx is the (K, K) matrix J with J[i, j] = dy_i / dx_j, so the chain rule for
  a gradient reads de/dx = J^T de/dy.
"""

from __future__ import annotations

from imnet64.theory.activation_memory import activation_memory_bytes  # noqa: F401  (re-export)

import numpy as np


def softmax(x: np.ndarray) -> np.ndarray:
    """softMax(x)_i = exp(x_i) / sum_j exp(x_j), computed after subtracting max(x).

    Subtracting the max changes nothing mathematically (it cancels between numerator and
    denominator) but keeps every exp() in (0, 1], so logits like 1000 do not overflow.
    """
    x = np.asarray(x, dtype=np.float64)
    z = np.exp(x - np.max(x))
    return z / np.sum(z)


def log_softmax(x: np.ndarray) -> np.ndarray:
    """log softMax(x) = x - logsumexp(x), finite for any finite logits."""
    x = np.asarray(x, dtype=np.float64)
    m = np.max(x)
    return x - (m + np.log(np.sum(np.exp(x - m))))


def softmax_xent(x: np.ndarray, k: int) -> float:
    """e = crossEntropy(onehot(k), softMax(x)) = -log softMax(x)_k = logsumexp(x) - x_k."""
    return float(-log_softmax(x)[k])


def onehot(k: int, num_classes: int) -> np.ndarray:
    p = np.zeros(num_classes, dtype=np.float64)
    p[k] = 1.0
    return p


def softmax_xent_grad(x: np.ndarray, k: int) -> np.ndarray:
    """de/dx for e = crossEntropy(p*, softMax(x)), p* one-hot at k: softMax(x) - p*."""
    s = softmax(x)
    return s - onehot(k, s.shape[0])


def soft_xent(x: np.ndarray, q: np.ndarray, T: float = 1.0, scaled: bool = False) -> float:
    """e = crossEntropy(q, softMax(x / T)) = -sum_i q_i log softMax(x / T)_i, for a target
    distribution q; times T^2 when `scaled` (Hinton et al., and the trainer's soft loss)."""
    e = -float(np.dot(np.asarray(q, dtype=np.float64), log_softmax(np.asarray(x) / T)))
    return e * T * T if scaled else e


def soft_xent_grad(x: np.ndarray, q: np.ndarray, T: float = 1.0,
                   scaled: bool = False) -> np.ndarray:
    """de/dx for `soft_xent`: (softMax(x / T) - q) / T, or T (softMax(x / T) - q) scaled."""
    g = (softmax(np.asarray(x) / T) - np.asarray(q, dtype=np.float64)) / T
    return g * T * T if scaled else g


def softmax_jacobian(x: np.ndarray) -> np.ndarray:
    """J[i, j] = d softMax_i / d x_j = s_i (1[i = j] - s_j), i.e. diag(s) - s s^T.

    Symmetric, so the row/column convention does not matter for this one.
    """
    s = softmax(x)
    return np.diag(s) - np.outer(s, s)


def relu_mask(x: np.ndarray, H: np.ndarray, v: np.ndarray) -> np.ndarray:
    """The diagonal of D = diag(1[Hx + v > 0]): ReLU's Jacobian at the pre-activation."""
    return (H @ x + v > 0).astype(np.float64)


def residual_block_grads(
    x: np.ndarray, H: np.ndarray, v: np.ndarray, de_dy: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients of e through y = x + ReLU(Hx + v), given g = de/dy (shape (K,)).

    Returns (de/dx, de/dv, de/dH):
      de/dx = (I + D H)^T g = g + H^T (D g)        shape (K,)
      de/dv = D g                                  shape (K,)
      de/dH = (D g) x^T   (outer product)          shape (K, K)
    with D = diag(1[Hx + v > 0]). Only x and the mask D (equivalently the pre- or
    post-activation) from the forward pass are needed; y itself is not.
    """
    x = np.asarray(x, dtype=np.float64)
    H = np.asarray(H, dtype=np.float64)
    g = np.asarray(de_dy, dtype=np.float64)
    dg = relu_mask(x, H, v) * g  # D g, without building the K x K diagonal matrix
    de_dx = g + H.T @ dg
    de_dv = dg
    de_dH = np.outer(dg, x)
    return de_dx, de_dv, de_dH
