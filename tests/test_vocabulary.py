"""The job vocabulary (detector/vocabulary.py) is the only place stage, state and problem
names are declared, and every channel has a sentence for each of them."""

import ast
import inspect
import re

import pytest

from detector import errors
from detector.vocabulary import STAGE_ORDER, TERMINAL, Event, Problem, Stage, State, as_problem, problem_code

from .conftest import ROOT

JS_API = (ROOT / "browser_extension" / "api.js").read_text()


def _js_object_keys(source: str, name: str) -> set[str]:
    start = source.index(f"export const {name} = {{")
    body = source[start:source.index("};", start)]
    return set(re.findall(r'^\s*"?([a-z_-]+)"?:', body, re.M)) | set(re.findall(r'[{,]\s*([a-z_]+):', body))


def test_every_problem_has_a_bot_sentence_and_an_extension_sentence():
    from bots.core import FRIENDLY, friendly

    assert set(FRIENDLY) == set(Problem)
    for code in Problem:
        assert friendly({"code": code.value, "detail": "the service's words"}) == FRIENDLY[code]
        assert friendly({"type": f"https://deepfake-check.org/problems/{code.value}"}) == FRIENDLY[code]
    # a code a newer service names: its own detail, not a wrong sentence
    assert friendly({"code": "something-new", "detail": "the service's words"}) == "the service's words"
    missing = {p.value for p in Problem} - _js_object_keys(JS_API, "MESSAGES")
    assert not missing, f"browser_extension/api.js MESSAGES lacks {sorted(missing)}"


def test_every_stage_has_a_sentence_in_the_order_the_extension_shows():
    from bots.core import STAGE_TEXT, stage_text

    assert set(STAGE_TEXT) == set(Stage)
    assert stage_text({"stage": "downloading"}) == STAGE_TEXT[Stage.DOWNLOADING]
    assert stage_text({"stage": "a-new-stage", "message": "Doing it"}) == "Doing it"
    running = {s.value for s in Stage if s not in (Stage.DONE, Stage.FAILED)}
    assert _js_object_keys(JS_API, "STAGES") == running
    order = re.search(r"const STAGE_ORDER = \[([^\]]*)\]", JS_API).group(1)
    assert re.findall(r'"([a-z_]+)"', order) == ["submitting"] + [s.value for s in STAGE_ORDER if s is not Stage.DONE]
    assert all(s.label for s in Stage)


def test_every_error_class_has_a_declared_code():
    classes = [c for _, c in inspect.getmembers(errors, inspect.isclass) if issubclass(c, errors.DetectorError)]
    assert len(classes) > 15
    for cls in classes:
        assert isinstance(cls.code, Problem), cls
        d = cls().to_dict()
        assert d["code"] == cls.code.value and d["title"] and d["detail"] and 400 <= d["status"] < 600


@pytest.mark.parametrize("path", sorted(p.relative_to(ROOT).as_posix() for d in ("extension_api", "worker", "bots")
                                        for p in (ROOT / d).glob("*.py")))
def test_no_module_spells_a_problem_code_or_a_stage_itself(path):
    """API problems, job events and states name their codes through the vocabulary."""
    tree = ast.parse((ROOT / path).read_text())
    codes = {p.value for p in Problem}
    bad = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            fn = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
            args = list(node.args)
            if fn in ("ApiProblem", "problem_response") and len(args) > 1:
                arg = args[1]
            elif fn == "event" and len(args) > 1:
                arg = args[1]
            else:
                continue
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                bad.append(f"line {node.lineno}: {fn}(..., {arg.value!r})")
        if isinstance(node, ast.Dict):  # a problem written as a dict literal
            for k, v in zip(node.keys, node.values):
                if (isinstance(k, ast.Constant) and k.value == "code" and isinstance(v, ast.Constant)
                        and v.value in codes):
                    bad.append(f"line {node.lineno}: {{'code': {v.value!r}}}")
    assert not bad, bad


def test_an_event_reads_back_as_it_was_written():
    ev = Event(Stage.DETECTING_FACES, "3 face(s) so far", ts=1.5, done=2, total=8, counts={"shots": 1, "faces": 3})
    assert Event.from_fields(ev.to_fields()) == ev and Event.from_json(ev.to_json()) == ev
    assert all(isinstance(v, str) for v in ev.to_fields().values())  # what a Redis stream holds
    assert ev.to_json()["done"] == 2 and "score" not in ev.to_json() and not ev.terminal
    done = Event(Stage.DONE, "Likely authentic", state=State.DONE, ts=2.0, score=0.12, verdict="likely_authentic")
    assert Event.from_fields(done.to_fields()) == done and done.terminal
    inconclusive = Event(Stage.DONE, "Inconclusive", state=State.DONE, ts=2.0, score=None, verdict="inconclusive")
    assert inconclusive.to_json()["score"] is None and Event.from_fields(inconclusive.to_fields()) == inconclusive
    failed = Event(Stage.FAILED, "The file is too large", state=State.FAILED, ts=3.0, code=Problem.TOO_LARGE)
    assert failed.to_json()["code"] == "too-large" and Event.from_json(failed.to_json()) == failed
    # a code this version does not know is kept as the general one
    assert Event.from_json({**failed.to_json(), "code": "brand-new"}).code is Problem.DETECTOR_ERROR
    assert as_problem(None) is None and problem_code({"type": "x/problems/too-long"}) == "too-long"
    assert TERMINAL == {State.DONE, State.FAILED} and "done" in TERMINAL


def test_the_score_is_named_the_same_way_in_every_channel():
    """'probability that the faces were manipulated': the bots, the gallery and the report page
    use detector.report.SCORE_MEANS; the extension's popup spells it in JS, checked here."""
    from detector.report import SCORE_MEANS

    popup = (ROOT / "browser_extension" / "popup.js").read_text()
    assert "probability that the faces were manipulated" == SCORE_MEANS and SCORE_MEANS in popup
    for path in ("bots/core.py", "detector/gallery.py", "extension_api/pages.py"):
        src = (ROOT / path).read_text()
        assert "SCORE_MEANS" in src and "% fake" not in src, path
