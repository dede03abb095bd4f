"""m8's protocol as clients and services share it (no server library): upload statuses."""

from m8.protocol.status import FINAL_OUTCOMES, SETTLED, UPLOAD_STATUSES, UploadStatus

__all__ = ["FINAL_OUTCOMES", "SETTLED", "UPLOAD_STATUSES", "UploadStatus"]
