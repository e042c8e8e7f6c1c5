"""The weights cache: files named by the manifest, verified by sha256 before any use.

Layout: ``<weights_dir>/<member name>/<filename>``. A file whose sha256 does not match
its manifest entry is never loaded. ``fetch`` downloads from the manifest URL,
``import_dir`` copies matching files from a local folder (offline set-ups).
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from pathlib import Path

from .errors import NoTrainedWeights, Unreachable, WeightsVerificationError
from .hashing import sha256_file as sha256_of
from .manifest import Member

log = logging.getLogger(__name__)

PACKAGE_SCHEME = "package://"
PACKAGE_ROOT = Path(__file__).parent  # package://trained/x -> detector/trained/x


class WeightStore:
    def __init__(self, root: Path):
        self.root = Path(root)

    def path_for(self, member: Member) -> Path:
        if member.weights is None:
            raise NoTrainedWeights(f"{member.name} has no trained weights in the manifest.")
        return self.root / member.name / member.weights.filename

    def _pins(self) -> dict[str, str]:
        """The user's pinned sha256 per member (public files published without one)."""
        try:
            return json.loads((self.root / "pins.json").read_text())
        except (OSError, ValueError):
            return {}

    def expected_sha256(self, member: Member) -> str | None:
        """The manifest's sha256, or for a public file without one, the user's pin."""
        return member.weights.sha256 or self._pins().get(member.name)

    def pin(self, member: Member, sha256: str) -> None:
        pins = {**self._pins(), member.name: sha256}
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "pins.json").write_text(json.dumps(pins, indent=2))

    def status(self, member: Member) -> str:
        """'verified', 'missing', 'mismatch', 'unpinned' or 'untrained'."""
        if member.weights is None:
            return "untrained"
        path = self.path_for(member)
        if not path.is_file():
            return "missing"
        expected = self.expected_sha256(member)
        if expected is None:
            return "unpinned"
        return "verified" if self._verified(path, expected) else "mismatch"

    def verified_path(self, member: Member) -> Path:
        """The path of the member's weights, or raise if absent or not matching."""
        st = self.status(member)
        if st == "untrained":
            raise NoTrainedWeights(f"{member.name} has no trained weights in the manifest.")
        if st == "missing":
            raise NoTrainedWeights(f"{member.name}: weights not in the cache ({self.path_for(member)}).")
        if st == "mismatch":
            raise WeightsVerificationError(
                f"{member.name}: {self.path_for(member)} does not match sha256 {self.expected_sha256(member)}; "
                "delete it and fetch it again.")
        if st == "unpinned":
            raise WeightsVerificationError(
                f"{member.name}: its publisher gives no sha256 and none is pinned; import the file with "
                "`deepfake-weights import-public NAME FILE --sha256 HASH` after checking it.")
        return self.path_for(member)

    def _verified(self, path: Path, expected: str) -> bool:
        # The hash is remembered beside the file, keyed by size and mtime, so that a
        # cached file is hashed once, not on every process start.
        stamp = path.with_name(path.name + ".verified")
        st = path.stat()
        key = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": expected}
        try:
            if json.loads(stamp.read_text()) == key:
                return True
        except (OSError, ValueError):
            pass
        ok = sha256_of(path) == expected
        if ok:
            try:
                stamp.write_text(json.dumps(key))
            except OSError:
                pass
        return ok

    def _install(self, member: Member, src: Path) -> Path:
        got = sha256_of(src)
        expected = self.expected_sha256(member)
        if got != expected:
            raise WeightsVerificationError(
                f"{member.name}: {src} has sha256 {got}, expected {expected or '(nothing pinned)'}.")
        dest = self.path_for(member)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(dest.name + ".part")
        shutil.copyfile(src, tmp)
        tmp.replace(dest)
        self._verified(dest, member.weights.sha256)
        return dest

    def import_file(self, member: Member, src: Path) -> Path:
        return self._install(member, Path(src))

    def import_dir(self, folder: Path, members: list[Member]) -> list[tuple[Member, Path]]:
        """Copy every file of ``folder`` whose sha256 matches a member into the cache."""
        by_sha = {m.weights.sha256: m for m in members if m.weights}
        done = []
        for f in sorted(Path(folder).iterdir()):
            if f.is_file():
                m = by_sha.get(sha256_of(f))
                if m is not None:
                    done.append((m, self._install(m, f)))
        return done

    def fetch(self, member: Member, timeout: float = 60.0) -> Path:
        """Download the member's weights from its manifest URL, verify, install."""
        import requests

        if member.weights is None:
            raise NoTrainedWeights(f"{member.name} has no weights URL in the manifest.")
        if self.status(member) == "verified":
            return self.path_for(member)
        if member.weights.sha256 is None:
            raise NoTrainedWeights(
                f"{member.name}: its publisher gives no checksum, so it is not downloaded automatically. "
                f"Download it from {member.weights.url}, check it, then "
                f"`deepfake-weights import-public {member.name} FILE --sha256 HASH`.")
        if member.weights.url.startswith(PACKAGE_SCHEME):  # shipped in the repository
            src = PACKAGE_ROOT / member.weights.url[len(PACKAGE_SCHEME):]
            if not src.is_file():
                raise NoTrainedWeights(f"{member.name}: {src} is not in this checkout.")
            return self._install(member, src)
        with tempfile.TemporaryDirectory() as tmp:
            part = Path(tmp) / member.weights.filename
            try:
                with requests.get(member.weights.url, stream=True, timeout=timeout) as r:
                    r.raise_for_status()
                    with open(part, "wb") as f:
                        for chunk in r.iter_content(1 << 20):
                            f.write(chunk)
            except requests.RequestException as e:
                raise Unreachable(f"{member.name}: could not download {member.weights.url}: {e}") from e
            return self._install(member, part)


def load_state_dict(member: Member, path: Path, model=None):
    """Read a verified weights file into a PyTorch state dict, by the manifest's format
    (the readers are :data:`detector.models.checkpoints.WEIGHT_FORMATS`, beside the
    architectures; public layouts are key-mapped onto ``model``)."""
    from .models.checkpoints import read_weights

    return read_weights(member.weights.format, path, model, member.architecture)
