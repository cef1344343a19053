"""The names of the environment variables medimg reads, for messages that tell users what to set.

Kept apart from :mod:`medimg.settings`, which reads them, so code that only names a variable
(the served model's DICOM path, via :mod:`medimg.data.pseudonyms`) does not pull in
pydantic-settings.
"""

PSEUDONYM_KEY_ENV = "MEDIMG_PSEUDONYM_KEY"
ACTOR_ENV = "MEDIMG_ACTOR"
RETRAIN_CRON_ENV = "MEDIMG_RETRAIN_CRON"
USERS_FILE_ENV = "MEDIMG_USERS_FILE"
SESSION_SECRET_ENV = "MEDIMG_SESSION_SECRET"
