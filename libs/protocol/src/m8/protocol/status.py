"""An upload's status, and the two ideas of "done" (docs/contracts.md).

- FINAL_OUTCOMES: final for the domain. No later event changes such an outcome; a
  `failed` upload is not final, an operator's re-drive may still store it. `superseded`:
  a newer upload to the same path was stored first, so this one is not written over it.
- SETTLED: nothing more for a client to wait for. The final outcomes, plus `failed`
  (the re-drive is an operator's, not the client's, to wait for) and `expired` (its key
  expired before any outcome: put the secret again).
- UploadStage: where a pending upload is, for display only (GET /v1/uploads/{id} `stage`;
  docs/contracts.md says what each one means and where it may be wrong).
"""

from __future__ import annotations

from typing import Literal, get_args

UploadStatus = Literal["pending", "stored", "rejected", "superseded", "failed", "expired"]
UPLOAD_STATUSES: tuple[UploadStatus, ...] = get_args(UploadStatus)

FINAL_OUTCOMES: frozenset[UploadStatus] = frozenset({"stored", "rejected", "superseded"})
SETTLED: frozenset[UploadStatus] = FINAL_OUTCOMES | {"failed", "expired"}

UploadStage = Literal["accepted", "queued", "waiting", "writing"]
UPLOAD_STAGES: tuple[UploadStage, ...] = get_args(UploadStage)
