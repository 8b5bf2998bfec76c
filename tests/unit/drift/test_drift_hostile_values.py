"""Device values in drift reports: never markup in Evidently's HTML, never a broken object key."""

from __future__ import annotations

import pandas as pd
from tests.helpers.hostile import demo_spec

from edgeloop.drift.reports import evidently_frame
from edgeloop.drift.results import report_key
from edgeloop.drift.sample import Stratum

EVIL = "</script><script>document.title='pwned'</script>"


def test_categories_reach_evidently_without_a_less_than_sign() -> None:
    frame = pd.DataFrame({"rpm": [1.0, 2.0, 3.0], "prediction": [EVIL, "normal", None]})
    out = evidently_frame(frame, ["rpm", "prediction"], {"prediction"})
    assert out["prediction"].tolist() == [EVIL.replace("<", "\uff1c"), "normal", None]
    assert out["rpm"].tolist() == [1.0, 2.0, 3.0]


def test_a_model_version_with_no_usable_character_still_gets_a_report_key() -> None:
    spec = demo_spec()
    key = report_key(spec, "run-1", Stratum("model_version", "///"))
    assert key.rsplit("/", 1)[1].startswith("model_version=_") and key.endswith(".html")
    assert report_key(spec, "run-1", Stratum("model_version", "../../x")).endswith("/model_version=x.html")
