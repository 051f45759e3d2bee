"""Encrypted inference's core: the model split, the CKKS layout, the server's checks on what
clients send, and the encryption parity gate. Real TenSEAL (SEAL) throughout."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from trustflow.config import (
    CandidateConfig,
    EncryptionConfig,
    OnnxConfig,
    SplitConfig,
    TabularConfig,
)
from trustflow.crypto import ckks
from trustflow.crypto.gate import check_encrypted_parity
from trustflow.crypto.linear import NotLinearHeaded, sigmoid, split_linear
from trustflow.data.split import split_frame
from trustflow.data.validate import validate_frame
from trustflow.export.onnx import convert_pipeline, inference_session, to_feed
from trustflow.models.candidates import train_candidate
from trustflow.models.preprocess import features_and_target, fit_preprocessor
from trustflow.serving.scorer import PayloadError

ts = pytest.importorskip("tenseal", reason="tenseal is in the project's encrypted extra")
SCHEMA = TabularConfig().data.dataset
PARAMS = ckks.DEFAULT_PARAMS


@pytest.fixture(scope="module")
def splits(adult_sample: pd.DataFrame):
    frame, _ = validate_frame(adult_sample, SCHEMA, "impute", "sample")  # keeps missing cells
    return split_frame(frame, "income", SplitConfig())


def _graph(splits, kind: str, **params) -> bytes:
    cfg = CandidateConfig(name=kind, kind=kind, params=params)
    features, target = features_and_target(splits.train, SCHEMA)
    model = train_candidate(fit_preprocessor(splits.train, SCHEMA), features, target, cfg, 0)
    return convert_pipeline(model, SCHEMA, OnnxConfig(), "skl2onnx").SerializeToString()


@pytest.fixture(scope="module")
def logreg(splits) -> bytes:
    return _graph(splits, "logistic_regression")


@pytest.fixture(scope="module")
def client_context():
    return ckks.new_context(PARAMS)


@pytest.fixture(scope="module")
def server_context(client_context) -> ckks.ServerContext:
    return ckks.load_public_context(ckks.public_context(client_context), PARAMS)


def test_the_split_scores_exactly_like_the_served_graph(logreg: bytes, splits) -> None:
    split = split_linear(logreg, "lr.onnx")
    feed = to_feed(splits.test, SCHEMA)
    labels, probabilities = inference_session(logreg).run(None, feed)
    features = inference_session(split.front).run(None, feed)[0]

    assert features.shape == (len(splits.test), split.features)
    logits = split.logits(features)
    assert np.abs(sigmoid(logits) - probabilities[:, 1]).max() < 1e-12
    assert ((logits > 0).astype(int) == labels.reshape(-1)).all()
    assert split.classes == ["<=50K", ">50K"]


def test_a_model_without_a_linear_head_is_refused_naming_what_it_is(splits) -> None:
    graph = _graph(splits, "hist_gradient_boosting", max_iter=10)
    with pytest.raises(NotLinearHeaded, match=r"hgb\.onnx: not a linear-headed.*TreeEnsemble"):
        split_linear(graph, "hgb.onnx")


@pytest.mark.parametrize("layout", ckks.LAYOUTS)
def test_encrypted_logits_match_plaintext(client_context, server_context, layout: str) -> None:
    rng = np.random.default_rng(0)
    features, weights = rng.normal(size=(300, 20)), rng.normal(size=20)
    weights[3] = 0.0  # a zero weight: SEAL refuses a product that would be transparent
    body = ckks.encrypt_features(client_context, features, PARAMS, layout)
    answer, rows = ckks.evaluate(server_context, ckks.unframe(body), weights, 0.25, layout)
    logits = ckks.decrypt_logits(client_context, answer, rows, 20, layout)

    assert rows == 300
    assert np.abs(logits - (features @ weights + 0.25)).max() < 1e-4
    ciphertexts = len(ckks.unframe(body))
    assert ciphertexts == (20 if layout == ckks.FEATURE_MAJOR else 300 // (PARAMS.slots // 32) + 1)


def test_packed_answers_hide_the_products_behind_masks(client_context, server_context) -> None:
    """What the client decrypts besides the logit: each product w_j x_j plus a mask of
    magnitude up to 2^17, the masks summing to zero per row."""
    features, weights = np.ones((1, 4)), np.array([1.0, 2.0, 3.0, 4.0])
    body = ckks.encrypt_features(client_context, features, PARAMS)
    answer, _ = ckks.evaluate(server_context, ckks.unframe(body), weights, 0.0)
    slots = np.array(ts.ckks_vector_from(client_context, ckks.unframe(answer)[0]).decrypt())
    assert abs(slots[:4].sum() - 10.0) < 1e-4
    assert np.abs(slots[:4] - weights).min() > 1.0  # the products themselves are not there
    assert np.abs(slots).max() <= 2 * ckks.MASK_BOUND + 10


def test_the_server_holds_no_secret_key_and_cannot_decrypt(client_context, server_context):
    context = server_context.context
    assert not context.is_private() and not context.has_secret_key()
    body = ckks.encrypt_features(client_context, np.ones((2, 3)), PARAMS)
    answer, _ = ckks.evaluate(server_context, ckks.unframe(body), np.ones(3), 0.0)
    with pytest.raises(ValueError, match="secret"):
        ts.ckks_vector_from(context, ckks.unframe(answer)[0]).decrypt()


def _context(degree: int, moduli: list[int], scale_bits: int):
    context = ts.context(ts.SCHEME_TYPE.CKKS, degree, coeff_mod_bit_sizes=moduli)
    context.global_scale = 2.0**scale_bits
    return context


@pytest.mark.parametrize(
    ("make", "problem"),
    [
        (lambda: ckks.new_context(PARAMS).serialize(save_secret_key=True), "secret key"),
        (lambda: ckks.public_context(_context(8192, [60, 40, 60], 30)), "scale"),
        (lambda: ckks.public_context(_context(8192, [60, 60], 40)), "multiply"),
        (
            lambda: ckks.public_context(_context(4096, [30, 40, 30], 40)),
            r"degree is 4096 \(2048 slots\)",
        ),
        (lambda: b"not a context" * 10, "not a serialized TenSEAL context"),
    ],
    ids=["secret-key", "scale", "no-level", "few-slots", "garbage"],
)
def test_a_context_the_server_cannot_use_is_refused(make, problem: str) -> None:
    with pytest.raises(PayloadError, match=problem) as refused:
        ckks.load_public_context(make(), PARAMS)
    assert refused.value.status == 400


def test_ciphertexts_the_server_cannot_use_are_refused(client_context, server_context) -> None:
    major = ckks.FEATURE_MAJOR
    good = ckks.unframe(ckks.encrypt_features(client_context, np.ones((4, 3)), PARAMS, major))
    weights = np.ones(3)

    def refused(blobs: list[bytes], layout: str = major, weights=weights) -> PayloadError:
        with pytest.raises(PayloadError) as caught:
            ckks.evaluate(server_context, blobs, weights, 0.0, layout)
        return caught.value

    assert "expected 3 ciphertexts" in refused(good[:2]).message
    garbage = refused([good[0], b"\x00" * 500, good[2]])
    assert garbage.status == 400 and "ciphertext 1: not a CKKS vector" in garbage.message
    other = ckks.unframe(ckks.encrypt_features(client_context, np.ones((2, 3)), PARAMS, major))
    assert "ciphertext 1 has 2 rows, ciphertext 0 4" in refused([good[0], *other[1:]]).message
    too_many = ts.ckks_vector(client_context, [1.0] * (PARAMS.slots + 1)).serialize()
    assert refused([too_many], weights=np.ones(1)).status == 413
    alien = ts.ckks_vector(_context(16384, [60, 40, 60], 40), [1.0]).serialize()
    assert refused([alien, good[1], good[2]]).status == 400
    # packed: whole rows of 4 slots (3 features padded to a power of two)
    ragged = ts.ckks_vector(client_context, [1.0] * 6).serialize()
    assert "holds 6 values, not whole rows of 4" in refused([ragged], ckks.PACKED).message
    assert "unknown layout 'diagonal'" in refused(good, "diagonal").message


def test_a_truncated_body_is_refused_naming_the_byte() -> None:
    body = ckks.frame([b"a" * 10, b"b" * 10])
    assert ckks.unframe(body) == [b"a" * 10, b"b" * 10]
    with pytest.raises(PayloadError, match="ciphertext 1 declares 10 bytes, 5 follow"):
        ckks.unframe(body[:-5])
    with pytest.raises(PayloadError, match="length prefix is cut at byte 14"):
        ckks.unframe(body[:16])


def test_contexts_are_evicted_least_recently_used_first() -> None:
    store = ckks.ContextStore(max_contexts=2, max_bytes=250)
    for key, size in (("a", 100), ("b", 100)):
        store.put(key, ckks.ServerContext(context=None, size=size))
    store.get("a")  # now b is the least recently used
    store.put("c", ckks.ServerContext(context=None, size=100))
    assert "a" in store and "c" in store and "b" not in store
    store.put("d", ckks.ServerContext(context=None, size=200))  # over the byte limit
    assert "d" in store and "a" not in store and "c" not in store
    with pytest.raises(PayloadError, match="unknown context id 'b'") as unknown:
        store.get("b")
    assert unknown.value.status == 404


def test_the_parity_gate_passes_logistic_regression_and_can_fail(logreg: bytes, splits) -> None:
    report = check_encrypted_parity(logreg, "lr.onnx", splits.test, SCHEMA, EncryptionConfig())
    print(f"\n{report.reason()} in {report.seconds:.2f} s")
    assert report.rows == len(splits.test) and report.passed
    assert report.max_abs_diff <= 1e-3 and report.label_agreement == 1.0
    assert report.parameters["poly_modulus_degree"] == 8192
    strict = EncryptionConfig(max_abs_diff=1e-12, rows=50)
    failed = check_encrypted_parity(logreg, "lr.onnx", splits.test, SCHEMA, strict)
    assert failed.rows == 50 and not failed.passed  # CKKS is approximate: ~1e-7, not 1e-12
    assert "encryption parity FAILED" in failed.reason()


def test_an_encrypted_release_bundles_tenseal_and_serves_encrypted(logreg: bytes, tmp_path):
    from trustflow.deploy.bundle import Release, build_bundle

    release = Release("adult-income-linear", "1", "champion", "models:/x/1", logreg)
    plain = build_bundle(release, tmp_path / "plain", vendor=False)
    encrypted = build_bundle(
        Release(**{**release.__dict__, "encrypted": True}), tmp_path / "encrypted", vendor=False
    )

    def names(requirements: list[str]) -> set[str]:
        return {line.split("==")[0] for line in requirements}

    assert names(encrypted.requirements) - names(plain.requirements) >= {"tenseal", "onnx"}
    assert "tenseal" not in names(plain.requirements)
    dockerfile = (tmp_path / "encrypted" / "Dockerfile").read_text()
    assert 'ARG ENCRYPTED="1"' in dockerfile and "TRUSTFLOW_ENCRYPTED=${ENCRYPTED}" in dockerfile
    assert (tmp_path / "encrypted" / "app" / "trustflow" / "crypto" / "ckks.py").is_file()


def test_the_image_entry_point_serves_encrypted_when_its_environment_says_so(
    splits, tmp_path, monkeypatch, capsys
) -> None:
    """An encrypted release's image sets TRUSTFLOW_ENCRYPTED=1; a tree model under it is
    refused as the --encrypted option refuses it (so the variable did turn it on)."""
    from trustflow.serving.__main__ import main

    model = tmp_path / "hgb.onnx"
    model.write_bytes(_graph(splits, "hist_gradient_boosting", max_iter=5))
    monkeypatch.setenv("TRUSTFLOW_ENCRYPTED", "1")
    assert main(["--model", str(model), "--port", "0"]) == 1
    assert "--encrypted: " in capsys.readouterr().err
