"""The clinician review service: ``medimg serve`` (a web page and a JSON API) and ``medimg
predict``. Reviewers see what the champion model sees, and confirm or correct it; each answer
goes through :mod:`medimg.feedback` into the retraining loop."""
