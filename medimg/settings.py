"""Everything medimg reads from the environment, read once at an entry point and passed down.

The CLI and the Prefect flow build one :class:`Settings` with :func:`read_settings`; stages and
library functions take the values they need as arguments and never read ``os.environ``.
Every variable is listed, with an example, in ``.env.example``.
"""

from __future__ import annotations

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from medimg.env_names import (
    ACTOR_ENV,
    PSEUDONYM_KEY_ENV,
    RETRAIN_CRON_ENV,
    SESSION_SECRET_ENV,
    USERS_FILE_ENV,
)

# MLflow's set_tracking_uri()/set_registry_uri() export MLFLOW_TRACKING_URI and
# MLFLOW_REGISTRY_URI for child processes. What medimg itself pointed MLflow at is remembered here,
# so a later read tells it apart from a URI the user chose (otherwise a second workspace in one
# process would inherit the first one's store).
_exported: dict[str, str] = {}


class Settings(BaseSettings):
    """Endpoints, secrets and identities from the environment; never from params.yaml."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    pseudonym_key: SecretStr | None = Field(
        None, validation_alias=AliasChoices(PSEUDONYM_KEY_ENV, "pseudonym_key"),
        description="HMAC key for DICOM pseudonyms and date shifts (16+ characters).")
    actor: str | None = Field(
        None, validation_alias=AliasChoices(ACTOR_ENV, "actor"),
        description="Who promotes or rolls back when no person is at the keyboard (a scheduler).")
    mlflow_tracking_uri: str | None = Field(
        None, validation_alias=AliasChoices("MLFLOW_TRACKING_URI", "mlflow_tracking_uri"))
    mlflow_registry_uri: str | None = Field(
        None, validation_alias=AliasChoices("MLFLOW_REGISTRY_URI", "mlflow_registry_uri"))
    prefect_api_url: str | None = Field(
        None, validation_alias=AliasChoices("PREFECT_API_URL", "prefect_api_url"))
    retrain_cron: str | None = Field(
        None, validation_alias=AliasChoices(RETRAIN_CRON_ENV, "retrain_cron"),
        description="When the retrain deployment runs (cron); overrides retrain.schedule.")
    users_file: str | None = Field(
        None, validation_alias=AliasChoices(USERS_FILE_ENV, "users_file"),
        description="The review app's reviewers and token digests (`medimg users add`); "
                    "default .medimg/users.yaml in the workspace.")
    session_secret: SecretStr | None = Field(
        None, validation_alias=AliasChoices(SESSION_SECRET_ENV, "session_secret"),
        description="Signs the review app's session cookies; default a random key kept in "
                    ".medimg/session.key. Set one shared secret for several app processes.")
    tf_config: str | None = Field(
        None, validation_alias=AliasChoices("TF_CONFIG", "tf_config"),
        description="TensorFlow's multi-worker cluster spec, as JSON.")

    def key_bytes(self) -> bytes | None:
        """The pseudonym key, stripped, as UTF-8 bytes; None when unset or blank."""
        if self.pseudonym_key is None:
            return None
        value = self.pseudonym_key.get_secret_value().strip()
        return value.encode("utf-8") if value else None

    def servers(self) -> dict[str, str]:
        """The servers the user configured, by variable name, for error messages."""
        named = {"MLFLOW_TRACKING_URI": self.mlflow_tracking_uri,
                 "PREFECT_API_URL": self.prefect_api_url}
        return {name: value for name, value in named.items() if value}


def read_settings(**overrides: object) -> Settings:
    """Read the environment once (for the CLI and the flow entry); ``overrides`` win."""
    settings = Settings()
    changes: dict[str, object] = {}
    for field, variable in (("mlflow_tracking_uri", "MLFLOW_TRACKING_URI"),
                            ("mlflow_registry_uri", "MLFLOW_REGISTRY_URI")):
        value = getattr(settings, field)
        if value and value == _exported.get(variable):
            changes[field] = None  # medimg exported it for a workspace, the user did not set it
    changes.update(overrides)
    if not changes:
        return settings
    # validated (a key given as text becomes a secret), without reading the environment again
    return Settings.model_validate({**settings.model_dump(), **changes})


def note_exported(variable: str, value: str | None) -> None:
    """Remember (or, with None, forget) a URI that MLflow exported on medimg's behalf."""
    if value is None:
        _exported.pop(variable, None)
    else:
        _exported[variable] = value
