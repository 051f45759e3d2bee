"""CKKS (approximate homomorphic encryption) for a linear head, with TenSEAL.

Two layouts, neither needing rotations, so the client's public context carries no Galois keys
(about 360 KB instead of ~35 MB) and every evaluation uses one multiplicative level:

- **packed** (the default): each row's features, padded to a power of two (``width``: 128 for
  Adult's 105), fill one block of slots; ``slots // width`` rows per ciphertext. The server
  multiplies by the weights (one plaintext-vector multiply per ciphertext) and adds the bias
  plus random masks that sum to zero in each row's block. The client decrypts and sums each
  block: the logit. A one-row request is one ciphertext: milliseconds of server time. What the
  client sees besides the logit are the products ``w_j * x_j`` hidden by uniform masks of
  magnitude up to 2^17 (statistical hiding; the logits alone give a linear model away in
  ``features + 1`` queries anyway).
- **feature-major**: one ciphertext per feature; slot ``r`` of ciphertext ``j`` holds feature
  ``j`` of row ``r``. The server computes ``sum_j w_j * ct_j + b`` (scalar multiplies) and the
  answer holds the logits and nothing else. A request costs ``features`` ciphertexts however
  few rows it carries: for full batches of ``slots`` rows.

The server never holds a secret key: a context that contains one is refused, and what the
server computes it cannot decrypt.
"""

from __future__ import annotations

import hashlib
import struct
import threading
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from trustflow.crypto.linear import sigmoid
from trustflow.serving.scorer import PayloadError

PACKED, FEATURE_MAJOR = "packed", "feature-major"
LAYOUTS = (PACKED, FEATURE_MAJOR)
MASK_BOUND = 2.0**16  # masks are u_j - u_{j+1}, u uniform on [-bound, bound]: |mask| <= 2^17
_FRAME = struct.Struct(">I")  # each ciphertext on the wire: a 4-byte big-endian length, then it


@dataclass(frozen=True)
class EncryptionParams:
    """CKKS parameters the server accepts. The defaults give 128-bit security (the homomorphic
    encryption standard's bound for N=8192 is 218 modulus bits; these use 160), one level for
    the scalar multiply, and 2^40 scale, so a logit is exact to about 1e-6."""

    poly_modulus_degree: int = 8192
    coeff_mod_bit_sizes: tuple[int, ...] = (60, 40, 60)
    scale_bits: int = 40
    security_bits: int = field(default=128, compare=False)

    @property
    def slots(self) -> int:
        return self.poly_modulus_degree // 2

    @property
    def depth(self) -> int:
        return len(self.coeff_mod_bit_sizes) - 2

    def describe(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "coeff_mod_bit_sizes": list(self.coeff_mod_bit_sizes),
            "slots": self.slots,
            "depth": self.depth,
            "layouts": list(LAYOUTS),
        }


DEFAULT_PARAMS = EncryptionParams()


def _tenseal() -> Any:
    import tenseal

    return tenseal


# -- the client's side -------------------------------------------------------------------------


def new_context(params: EncryptionParams = DEFAULT_PARAMS) -> Any:
    """A fresh context with its secret key: it never leaves the client."""
    ts = _tenseal()
    context = ts.context(
        ts.SCHEME_TYPE.CKKS,
        params.poly_modulus_degree,
        coeff_mod_bit_sizes=list(params.coeff_mod_bit_sizes),
    )
    context.global_scale = 2.0**params.scale_bits
    return context


def public_context(context: Any) -> bytes:
    """What the server gets: the public key only (no secret, relinearisation or Galois keys:
    the layout needs none)."""
    return bytes(
        context.serialize(
            save_public_key=True,
            save_secret_key=False,
            save_galois_keys=False,
            save_relin_keys=False,
        )
    )


def block_width(features: int) -> int:
    """The slots one row takes in the packed layout: ``features`` up to a power of two."""
    return 1 << max(0, (features - 1).bit_length())


def encrypt_features(
    context: Any, features: np.ndarray, params: EncryptionParams, layout: str = PACKED
) -> bytes:
    """(rows, features) -> the request body, framed ciphertexts in ``layout``."""
    ts = _tenseal()
    rows, count = features.shape
    if not 0 < rows <= params.slots:
        raise ValueError(f"{rows} rows: one request carries 1 to {params.slots} rows")
    values = np.asarray(features, dtype=np.float64)
    if layout == FEATURE_MAJOR:
        vectors = [column.tolist() for column in values.T]
    else:
        width = block_width(count)
        per = params.slots // width
        padded = np.zeros((rows, width))
        padded[:, :count] = values
        vectors = [padded[first : first + per].ravel().tolist() for first in range(0, rows, per)]
    return frame([ts.ckks_vector(context, vector).serialize() for vector in vectors])


def decrypt_logits(
    context: Any, answer: bytes, rows: int, features: int, layout: str
) -> np.ndarray:
    """The server's framed answer -> one logit per row."""
    ts = _tenseal()
    parts = [np.asarray(ts.ckks_vector_from(context, blob).decrypt()) for blob in unframe(answer)]
    if layout == FEATURE_MAJOR:
        return np.asarray(parts[0][:rows], dtype=np.float64)
    width = block_width(features)
    sums = [part.reshape(-1, width).sum(axis=1) for part in parts]  # each row's block
    return np.concatenate(sums)[:rows].astype(np.float64)


# -- the wire ----------------------------------------------------------------------------------


def frame(blobs: list[bytes]) -> bytes:
    return b"".join(_FRAME.pack(len(blob)) + blob for blob in blobs)


def unframe(body: bytes) -> list[bytes]:
    blobs: list[bytes] = []
    at = 0
    while at < len(body):
        if at + _FRAME.size > len(body):
            raise PayloadError(400, f"truncated body: a length prefix is cut at byte {at}")
        (size,) = _FRAME.unpack_from(body, at)
        at += _FRAME.size
        if at + size > len(body):
            raise PayloadError(
                400,
                f"truncated body: ciphertext {len(blobs)} declares {size} bytes, "
                f"{len(body) - at} follow",
            )
        blobs.append(body[at : at + size])
        at += size
    return blobs


# -- the server's side -------------------------------------------------------------------------


@dataclass
class ServerContext:
    context: Any
    size: int


def load_public_context(data: bytes, params: EncryptionParams) -> ServerContext:
    """A client's context, checked: no secret key, the server's scale, enough slots and one
    multiplicative level. Each problem is a 400 naming it."""
    ts = _tenseal()
    try:
        context = ts.context_from(data)
    except Exception as exc:  # TenSEAL raises ValueError or RuntimeError on bad bytes
        raise PayloadError(400, f"not a serialized TenSEAL context ({exc})") from exc
    if context.is_private() or context.has_secret_key():
        raise PayloadError(
            400,
            "the context holds a secret key; refused: serialize it with save_secret_key=False "
            "(the server must never be able to decrypt)",
        )
    try:
        has_public_key = context.has_public_key()
    except ValueError:  # a symmetric-encryption context
        has_public_key = False
    if not has_public_key:
        raise PayloadError(400, "the context has no public key (use asymmetric CKKS)")
    want = 2.0**params.scale_bits
    if context.global_scale != want:
        raise PayloadError(
            400,
            f"the context's scale is {context.global_scale:g}; this server needs "
            f"2^{params.scale_bits} (see GET /v1/encrypted/model)",
        )
    # Probe what the evaluation needs, with the client's own public key.
    probe = ts.ckks_vector(context, [0.0])
    degree = probe.data.ciphertext()[0].poly_modulus_degree()
    if degree != params.poly_modulus_degree:
        raise PayloadError(
            400,
            f"the context's poly_modulus_degree is {degree} ({degree // 2} slots); this server "
            f"needs {params.poly_modulus_degree} ({params.slots} slots)",
        )
    try:
        probe * 0.5 + 1.0
    except ValueError as exc:  # "scale out of bounds": no level left to rescale into
        raise PayloadError(
            400,
            f"the context cannot take one scalar multiply ({exc}); this server needs "
            f"coeff_mod_bit_sizes {list(params.coeff_mod_bit_sizes)} (depth {params.depth})",
        ) from exc
    return ServerContext(context, len(data))


def _vector(context: Any, blob: bytes, index: int) -> Any:
    """One of the client's ciphertexts, loaded and checked."""
    ts = _tenseal()
    try:
        vector = ts.ckks_vector_from(context, blob)
        pieces = len(vector.data.ciphertext())
    except Exception as exc:
        raise PayloadError(
            400, f"ciphertext {index}: not a CKKS vector under this context ({exc})"
        ) from exc
    if pieces != 1:
        raise PayloadError(
            413, f"ciphertext {index} spans {pieces} ciphertexts: more values than slots"
        )
    scale = vector.data.ciphertext()[0].scale
    if scale != context.global_scale:
        raise PayloadError(400, f"ciphertext {index}: scale {scale:g}, not the context's")
    return vector


def evaluate(
    server_context: ServerContext,
    blobs: list[bytes],
    weights: np.ndarray,
    bias: float,
    layout: str = PACKED,
) -> tuple[bytes, int]:
    """The linear head on the client's ciphertexts: (the framed answer, rows)."""
    if layout == FEATURE_MAJOR:
        return _feature_major(server_context, blobs, weights, bias)
    if layout != PACKED:
        raise PayloadError(400, f"unknown layout '{layout[:40]}'; layouts: {', '.join(LAYOUTS)}")
    context, width = server_context.context, block_width(len(weights))
    if not blobs:
        raise PayloadError(400, "the request has no ciphertexts")
    tiled = np.zeros(width)
    tiled[: len(weights)] = weights
    if not tiled.any():  # SEAL refuses a product that would be transparent (all zero)
        tiled[0] = 1e-300
    rng = np.random.default_rng()  # fresh OS entropy: masks are never reused
    answers, rows = [], 0
    for index, blob in enumerate(blobs):
        vector = _vector(context, blob, index)
        size = vector.size()
        if size % width:
            raise PayloadError(
                400,
                f"ciphertext {index} holds {size} values, not whole rows of {width} (the model's "
                f"{len(weights)} features padded to a power of two)",
            )
        blocks = size // width
        # Per row: bias in the first slot, and masks u_j - u_{j+1} (cyclic), which sum to zero.
        u = rng.uniform(-MASK_BOUND, MASK_BOUND, size=(blocks, width))
        masks = u - np.roll(u, -1, axis=1)
        masks[:, 0] += bias
        product = vector * np.tile(tiled, blocks).tolist()
        answers.append(bytes((product + masks.ravel().tolist()).serialize()))
        rows += blocks
    return frame(answers), rows


def _feature_major(
    server_context: ServerContext, blobs: list[bytes], weights: np.ndarray, bias: float
) -> tuple[bytes, int]:
    """``sum_j w_j * ct_j + b``: one ciphertext holding the logits."""
    ts = _tenseal()
    context = server_context.context
    if len(blobs) != len(weights):
        raise PayloadError(
            400, f"expected {len(weights)} ciphertexts (one per feature), got {len(blobs)}"
        )
    vectors, rows = [], None
    for index, blob in enumerate(blobs):
        vector = _vector(context, blob, index)
        size = vector.size()
        if rows is None:
            rows = size
        elif size != rows:
            raise PayloadError(400, f"ciphertext {index} has {size} rows, ciphertext 0 {rows}")
        vectors.append(vector)
    assert rows is not None
    total = None
    for vector, weight in zip(vectors, weights.tolist(), strict=True):
        if weight == 0.0:  # SEAL refuses a product that would be transparent (all zero)
            continue
        term = vector * weight
        total = term if total is None else total + term
    if total is None:
        total = ts.ckks_vector(context, [0.0] * rows)
    total = total + float(bias)
    return frame([bytes(total.serialize())]), rows


class ContextStore:
    """The clients' public contexts by id (the sha256 of their bytes), least recently used
    first out once there are more than ``max_contexts`` or more than ``max_bytes`` in all."""

    def __init__(self, max_contexts: int, max_bytes: int) -> None:
        self.max_contexts = max_contexts
        self.max_bytes = max_bytes
        self._contexts: OrderedDict[str, ServerContext] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def key(data: bytes) -> str:
        return hashlib.sha256(data).hexdigest()[:32]

    def put(self, key: str, context: ServerContext) -> None:
        with self._lock:
            self._contexts[key] = context
            self._contexts.move_to_end(key)
            while len(self._contexts) > self.max_contexts or (
                len(self._contexts) > 1 and self.bytes() > self.max_bytes
            ):
                self._contexts.popitem(last=False)

    def get(self, key: str) -> ServerContext:
        with self._lock:
            context = self._contexts.get(key)
            if context is None:
                raise PayloadError(
                    404,
                    f"unknown context id '{key[:64]}' (evicted or never sent): POST the "
                    "public context to /v1/encrypted/context again",
                )
            self._contexts.move_to_end(key)
            return context

    def __contains__(self, key: str) -> bool:
        with self._lock:
            return key in self._contexts

    def bytes(self) -> int:
        return sum(context.size for context in self._contexts.values())


# -- the encryption parity gate ----------------------------------------------------------------


@dataclass(frozen=True)
class EncryptedParity:
    rows: int
    max_abs_diff: float  # max |p_encrypted - p_plain| over the rows
    max_logit_diff: float
    label_agreement: float
    seconds: float  # encrypt + evaluate + decrypt, all rows


def encrypted_parity(
    features: np.ndarray,
    weights: np.ndarray,
    bias: float,
    plain_probabilities: np.ndarray,
    plain_labels: np.ndarray,
    params: EncryptionParams = DEFAULT_PARAMS,
) -> EncryptedParity:
    """``features`` (the front's output) scored as a client and the server would: encrypted
    with a fresh key, evaluated under the public context only, decrypted. Compared with the
    served graph's own probabilities of class 1 and labels (0 or 1)."""
    import time

    started = time.perf_counter()
    context = new_context(params)
    server = load_public_context(public_context(context), params)
    count = features.shape[1]
    by_layout = {}
    for layout in LAYOUTS:  # the server answers in both: each must pass
        parts = []
        for first in range(0, len(features), params.slots):
            batch = features[first : first + params.slots]
            body = encrypt_features(context, batch, params, layout)
            answer, rows = evaluate(server, unframe(body), weights, bias, layout)
            parts.append(decrypt_logits(context, answer, rows, count, layout))
        by_layout[layout] = np.concatenate(parts)
    plain = np.asarray(plain_probabilities, dtype=np.float64)
    plain_logit = np.asarray(features, dtype=np.float64) @ weights + bias
    labels = np.asarray(plain_labels)
    return EncryptedParity(
        rows=len(features),
        max_abs_diff=max(float(np.max(np.abs(sigmoid(z) - plain))) for z in by_layout.values()),
        max_logit_diff=max(float(np.max(np.abs(z - plain_logit))) for z in by_layout.values()),
        label_agreement=min(
            float(np.mean((z > 0).astype(int) == labels)) for z in by_layout.values()
        ),
        seconds=time.perf_counter() - started,
    )
