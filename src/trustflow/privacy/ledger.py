"""The privacy ledger: every differentially private release, recorded against the data set
version it was measured on, and the budget check that guards new ones.

One JSON file (``<workspace>/.trustflow/privacy-ledger.json`` by default). Every read-check-write
happens under an exclusive ``flock`` on a lock file next to it, and the file is replaced
atomically, so two runs started at the same moment cannot both spend the last of a budget: the
second waits, sees the first one's entry, and is refused. A ledger that cannot be read or parsed
stops the run with its path and the problem; it is never reset.

A release is reused, at no cost, when the same training rows (their md5) meet the same privacy
settings and the same public schema: its statistics are stored in the ledger, and computing
anything from them again is post-processing.
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import hashlib
import json
import os
import socket
import tempfile
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple

from pydantic import BaseModel, ConfigDict, ValidationError

from trustflow.config import CandidateConfig, DatasetSchema, PrivacyConfig
from trustflow.errors import PrivacyBudgetExceeded, PrivacyLedgerError
from trustflow.failpoints import failpoint
from trustflow.privacy.dpsgd import DpSgdPlan
from trustflow.privacy.mechanisms import PrivateRelease
from trustflow.privacy.synthetic import SyntheticRelease

Measured = PrivateRelease | DpSgdPlan | SyntheticRelease

LEDGER_FORMAT = 1
TOLERANCE = 1e-9  # float slack when comparing sums of ε against the budget


class LedgerEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    release_id: str
    dataset: str
    dataset_md5: str  # the data set version the budget belongs to
    source_digest: str | None  # md5 of the source file(s), for the check before ingest
    missing: str  # the validation policy that turned the source into this version
    settings: str  # digest of the privacy settings and the public schema
    key: str  # training rows + settings: equal keys, same release
    epsilon: float
    delta: float
    accounting: str
    who: str
    what: str
    when: str
    # One of: the preprocessing statistics (reusable), a DP-SGD training plan (a model), or a
    # synthetic copy of the training rows (reusable while its file is kept).
    release: PrivateRelease | None = None
    training: DpSgdPlan | None = None
    synthetic: SyntheticRelease | None = None


class Spend(NamedTuple):
    """What a release costs, when it is not the preprocessing release of ``PrivacyConfig``."""

    epsilon: float
    delta: float
    accounting: str


class Planned(NamedTuple):
    """A release a run will make: its settings digest and its ε."""

    settings: str
    epsilon: float


class LedgerFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: int = LEDGER_FORMAT
    entries: list[LedgerEntry] = []


def settings_digest(schema: DatasetSchema, cfg: PrivacyConfig) -> str:
    """What, besides the rows, decides a release: the privacy settings and the public schema
    (bounds, categories). The budget and the ledger's location do not."""
    settings = cfg.model_dump(
        mode="json",
        exclude={"ledger", "budget", "mode", "utility_report", "training", "synthetic"},
    )
    text = json.dumps(
        {"privacy": settings, "schema": schema.model_dump(mode="json")}, sort_keys=True
    )
    return hashlib.sha256(text.encode()).hexdigest()


def synthetic_settings_digest(schema: DatasetSchema, cfg: PrivacyConfig) -> str:
    """What decides a synthetic copy besides the rows: the synthesizer's settings (not where its
    environment is), the release label and the public schema."""
    text = json.dumps(
        {
            "synthetic": cfg.synthetic.model_dump(mode="json", exclude={"python", "max_seconds"}),
            "release": cfg.release,
            "schema": schema.model_dump(mode="json"),
        },
        sort_keys=True,
    )
    return hashlib.sha256(text.encode()).hexdigest()


def training_settings_digest(
    schema: DatasetSchema, cfg: PrivacyConfig, candidate: CandidateConfig, seed: int
) -> str:
    """What decides a DP-SGD release besides the rows: the training privacy settings, the
    candidate and its seed, and the schema."""
    text = json.dumps(
        {
            "training": cfg.training.model_dump(mode="json"),
            "candidate": candidate.model_dump(mode="json"),
            "seed": seed,
            "schema": schema.model_dump(mode="json"),
        },
        sort_keys=True,
    )
    return hashlib.sha256(text.encode()).hexdigest()


def release_key(train_md5: str, settings: str) -> str:
    return hashlib.sha256(f"{train_md5}:{settings}".encode()).hexdigest()


def _spent(entries: list[LedgerEntry], dataset_md5: str) -> float:
    return sum(e.epsilon for e in entries if e.dataset_md5 == dataset_md5)


class PrivacyLedger:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock_path = path.with_name(path.name + ".lock")

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            handle = open(self.lock_path, "a+")  # noqa: SIM115  (held for the whole block)
        except OSError as exc:
            raise PrivacyLedgerError(
                f"privacy ledger {self.path}: cannot lock ({exc.strerror})"
            ) from exc
        with handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _read(self) -> LedgerFile:
        if not self.path.exists():
            return LedgerFile()
        try:
            text = self.path.read_text(encoding="utf-8")
        except OSError as exc:
            raise PrivacyLedgerError(
                f"privacy ledger {self.path} is unreadable ({exc.strerror}); fix or restore it "
                "(it is never reset)"
            ) from exc
        try:
            ledger = LedgerFile.model_validate_json(text)
        except ValidationError as exc:
            raise PrivacyLedgerError(
                f"privacy ledger {self.path} is corrupt ({exc.errors()[0]['msg']}); fix or "
                "restore it (it is never reset)"
            ) from exc
        if ledger.format != LEDGER_FORMAT:
            raise PrivacyLedgerError(
                f"privacy ledger {self.path} has format {ledger.format}; this version reads "
                f"format {LEDGER_FORMAT}"
            )
        return ledger

    def _write(self, ledger: LedgerFile) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".privacy-ledger.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(ledger.model_dump_json(indent=2))
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
        finally:
            Path(tmp).unlink(missing_ok=True)

    def entries(self) -> list[LedgerEntry]:
        with self._locked():
            return list(self._read().entries)

    @staticmethod
    def _refuse(dataset: str, spent: float, epsilon: float, budget: float, path: Path) -> None:
        if spent + epsilon > budget + TOLERANCE:
            raise PrivacyBudgetExceeded(
                f"privacy budget exceeded for data set {dataset}: spent ε = {spent:g}, "
                f"requested ε = {epsilon:g}, budget ε = {budget:g} (ledger {path})"
            )

    def check_before_reading(
        self,
        source_digest: str | None,
        missing: str,
        planned: Sequence[Planned],
        budget: float,
        label: str,
    ) -> None:
        """Refuse a run before it reads any row when the releases already recorded for this very
        source (same file bytes, same validation policy) exceed the budget, or leave too little
        for the ``planned`` releases; a planned release whose settings were recorded before is
        counted as reused (the preprocessing release is; a trained model is when Prefect's cache
        returns it). The check at release time, on the data set's md5, is the binding one."""
        if source_digest is None:
            return
        with self._locked():
            mine = [
                e
                for e in self._read().entries
                if e.source_digest == source_digest and e.missing == missing
            ]
        if not mine:
            return
        version = mine[-1].dataset_md5
        spent = _spent(mine, version)
        if spent > budget + TOLERANCE:
            raise PrivacyBudgetExceeded(
                f"privacy budget exceeded for data set {label} (md5 {version}): its recorded "
                f"releases already spent ε = {spent:g}, over the budget ε = {budget:g} "
                f"(ledger {self.path})"
            )
        recorded = {e.settings for e in mine}
        wanted = sum(p.epsilon for p in planned if p.settings not in recorded)
        self._refuse(f"{label} (md5 {version})", spent, wanted, budget, self.path)

    def release(
        self,
        *,
        dataset: str,
        dataset_md5: str,
        source_digest: str | None,
        missing: str,
        settings: str,
        key: str,
        cfg: PrivacyConfig,
        what: str,
        measure: Callable[[], Measured],
        spend: Spend | None = None,
    ) -> tuple[LedgerEntry, bool, float]:
        """The release for ``key``: the recorded one (reused, nothing spent) or a new one
        measured now, if the budget allows. Returns (entry, reused, ε spent before this run).
        ``spend``: its cost when it is not ``cfg``'s preprocessing release (a DP-SGD model,
        whose ``measure`` is its plan, recorded before it trains)."""
        cost = spend or Spend(cfg.epsilon, cfg.delta, cfg.accounting)
        with self._locked():
            ledger = self._read()
            spent = _spent(ledger.entries, dataset_md5)
            for entry in ledger.entries:
                if entry.key == key and entry.dataset_md5 == dataset_md5:
                    return entry, True, spent
            self._refuse(f"{dataset} (md5 {dataset_md5})", spent, cost.epsilon, cfg.budget,
                         self.path)  # fmt: skip
            measured = measure()
            entry = LedgerEntry(
                release_id=uuid.uuid4().hex,
                dataset=dataset,
                dataset_md5=dataset_md5,
                source_digest=source_digest,
                missing=missing,
                settings=settings,
                key=key,
                epsilon=cost.epsilon,
                delta=cost.delta,
                accounting=cost.accounting,
                who=f"{getpass.getuser()}@{socket.gethostname()}",
                what=what,
                when=datetime.now(UTC).isoformat(timespec="seconds"),
                release=measured if isinstance(measured, PrivateRelease) else None,
                training=measured if isinstance(measured, DpSgdPlan) else None,
                synthetic=measured if isinstance(measured, SyntheticRelease) else None,
            )
            failpoint("ledger.measured")
            ledger.entries.append(entry)
            self._write(ledger)
            failpoint("ledger.written")
            return entry, False, spent

    def spent(self, dataset_md5: str) -> float:
        return _spent(self.entries(), dataset_md5)
