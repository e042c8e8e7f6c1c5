"""Typed errors for every failure a user can cause, with a sentence a person can read.

Each error carries a stable ``code`` (used by the API's problem+json ``type`` and by
the bots to choose their wording), an HTTP-ish ``status`` and ``transient``: whether
trying again later may succeed (only network trouble is transient).
"""

from __future__ import annotations

from .vocabulary import Problem


class DetectorError(Exception):
    code = Problem.DETECTOR_ERROR
    title = "The check failed"
    status = 500
    transient = False

    default_detail: str | None = None  # the sentence when none is given (else the title)

    def __init__(self, detail: str | None = None):
        self.detail = detail or self.default_detail or self.title
        super().__init__(self.detail)

    def to_dict(self) -> dict:
        return {"code": str(self.code), "title": self.title, "detail": self.detail,
                "status": self.status, "transient": self.transient}


class UnsupportedURL(DetectorError):
    code = Problem.UNSUPPORTED_URL
    title = "This link is not supported"
    status = 422


class PrivateAddress(DetectorError):
    code = Problem.PRIVATE_ADDRESS
    title = "This link points to a private or local network address"
    status = 422


class Unreachable(DetectorError):
    code = Problem.UNREACHABLE
    title = "The link could not be reached"
    status = 422
    transient = True


class NotFound(DetectorError):
    code = Problem.NOT_FOUND
    title = "Nothing was found at this link"
    status = 422


class TooLarge(DetectorError):
    code = Problem.TOO_LARGE
    title = "The file is too large"
    status = 413


class TooLong(DetectorError):
    code = Problem.TOO_LONG
    title = "The video is too long"
    status = 422


class TooManyPixels(DetectorError):
    code = Problem.TOO_MANY_PIXELS
    title = "The image or video is too large in pixels"
    status = 413


class TooSmall(DetectorError):
    code = Problem.TOO_SMALL
    title = "The image or video is too small to contain a face"
    status = 422


class NotAMedium(DetectorError):
    code = Problem.NOT_A_MEDIUM
    title = "No image or video was found at this link"
    status = 422


class CorruptMedia(DetectorError):
    code = Problem.CORRUPT_MEDIA
    title = "The file could not be decoded as an image or video"
    status = 422


class NoTrainedWeights(DetectorError):
    code = Problem.NO_TRAINED_WEIGHTS
    title = "No detector with verified trained weights is installed"
    status = 503


class WeightsVerificationError(DetectorError):
    code = Problem.WEIGHTS_UNVERIFIED
    title = "A weights file failed its sha256 check"
    status = 503


class BadSetting(DetectorError):
    code = Problem.BAD_SETTING
    title = "A setting names something that does not exist"
    status = 503


class DeviceUnavailable(DetectorError):
    code = Problem.DEVICE_UNAVAILABLE
    title = "The requested compute device is not available"
    status = 503


# -- how a check's run can end without its input being at fault (raised nowhere: the worker
#    fails a check with their ``to_dict()`` when a time limit, a crash or a lost worker ends it)

class AnalysisTimeout(DetectorError):
    code = Problem.TIMEOUT
    title = "The check took too long"
    status = 504
    default_detail = "The analysis did not finish in time; a shorter clip may work."


class DownloadTimeout(DetectorError):
    code = Problem.TIMEOUT
    title = "The download took too long"
    status = 504
    default_detail = "The medium did not download in time; the site may be slow, or the file too big."


class WorkerCrashed(DetectorError):
    code = Problem.WORKER_CRASHED
    title = "The analysis crashed"
    status = 500
    default_detail = "The analysis stopped unexpectedly several times on this medium."


class WorkerLost(DetectorError):
    code = Problem.WORKER_LOST
    title = "The check stopped"
    status = 503
    transient = True
    default_detail = ("The worker checking this stopped answering and the check could not be resumed. "
                      "Please send it again.")


class InternalError(DetectorError):
    code = Problem.INTERNAL_ERROR
    title = "Internal error"
    status = 500
    default_detail = "Something went wrong on our side; the team has the details."
