"""Typed, user-facing errors. Each message names the file, column, value or threshold at fault."""


class TrustflowError(Exception):
    """Base class: the CLI prints the message as one line and exits non-zero."""


class ConfigError(TrustflowError):
    """The configuration is invalid (unknown key, bad value, unreadable file)."""


class DataSourceError(TrustflowError):
    """A data source could not be read (unknown scheme, missing file, download failed)."""


class DataValidationError(TrustflowError):
    """The data breaks the dataset schema (missing column, unknown category, ...)."""


class GateFailed(TrustflowError):
    """A model failed a gate (ONNX parity, ...); it is recorded but never promoted."""


class NoCandidateTrained(TrustflowError):
    """Every candidate failed to fit; the message gives each one's reason."""


class PrivacyBudgetExceeded(TrustflowError):
    """A differentially private release would spend more ε than the data set's budget allows."""


class PrivacyLedgerError(TrustflowError):
    """The privacy ledger cannot be read or written; it is never reset silently."""


class TrackingUnavailable(TrustflowError):
    """The MLflow tracking server does not answer; nothing is read, trained or registered."""


class StoreDamaged(TrustflowError):
    """The workspace's SQLite MLflow store is damaged; it is never replaced by a new one."""


class WorkspaceError(TrustflowError):
    """The workspace cannot be written (read-only, missing permission)."""


class StorageFull(TrustflowError):
    """The disk holding the workspace (or a store) filled up during a run."""


class DeployError(TrustflowError):
    """A model could not be deployed: bundle, image, container or manifests."""


class IncompleteModel(TrustflowError):
    """A logged model is not whole (pending, failed, or its files differ from their recorded
    hash); it is never registered or reused."""


class PromotionConflict(TrustflowError):
    """Other runs kept moving the serving alias while this run decided; it was left alone."""


class AnnounceError(TrustflowError):
    """A champion change could not be announced (the alias has moved all the same)."""


class SynthesizerError(TrustflowError):
    """The synthetic-data synthesizer (SmartNoise MST, in its own environment) failed; nothing
    was recorded or spent."""
