"""Typed errors for every failure a user can cause, with a sentence a person can read.

Each error carries a stable ``code`` (used by the API's problem+json ``type`` and by
the bots to choose their wording), an HTTP-ish ``status`` and ``transient``: whether
trying again later may succeed (only network trouble is transient).
"""

from __future__ import annotations


class DetectorError(Exception):
    code = "detector-error"
    title = "The check failed"
    status = 500
    transient = False

    def __init__(self, detail: str | None = None):
        self.detail = detail or self.title
        super().__init__(self.detail)

    def to_dict(self) -> dict:
        return {"code": self.code, "title": self.title, "detail": self.detail,
                "status": self.status, "transient": self.transient}


class UnsupportedURL(DetectorError):
    code = "unsupported-url"
    title = "This link is not supported"
    status = 422


class PrivateAddress(DetectorError):
    code = "private-address"
    title = "This link points to a private or local network address"
    status = 422


class Unreachable(DetectorError):
    code = "unreachable"
    title = "The link could not be reached"
    status = 422
    transient = True


class NotFound(DetectorError):
    code = "not-found"
    title = "Nothing was found at this link"
    status = 422


class TooLarge(DetectorError):
    code = "too-large"
    title = "The file is too large"
    status = 413


class TooLong(DetectorError):
    code = "too-long"
    title = "The video is too long"
    status = 422


class TooManyPixels(DetectorError):
    code = "too-many-pixels"
    title = "The image or video is too large in pixels"
    status = 413


class TooSmall(DetectorError):
    code = "too-small"
    title = "The image or video is too small to contain a face"
    status = 422


class NotAMedium(DetectorError):
    code = "not-a-medium"
    title = "No image or video was found at this link"
    status = 422


class CorruptMedia(DetectorError):
    code = "corrupt-media"
    title = "The file could not be decoded as an image or video"
    status = 422


class NoTrainedWeights(DetectorError):
    code = "no-trained-weights"
    title = "No detector with verified trained weights is installed"
    status = 503


class WeightsVerificationError(DetectorError):
    code = "weights-unverified"
    title = "A weights file failed its sha256 check"
    status = 503


class BadSetting(DetectorError):
    code = "bad-setting"
    title = "A setting names something that does not exist"
    status = 503


class DeviceUnavailable(DetectorError):
    code = "device-unavailable"
    title = "The requested compute device is not available"
    status = 503
