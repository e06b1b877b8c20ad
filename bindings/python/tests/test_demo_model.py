"""The bundled demo model (models/demo, issue 6) through libdiffuse: a slice
of the held-out evaluation prompts of scripts/demo_model/dataset.py, drawn at
the library's defaults and scored by scripts/demo_model/evaluate_reference.py
(the colour and shape of the object at each named position, the background).
The full evaluation (360 prompts) is scripts/demo_model/evaluate.py; its
scores are in docs/demo-model.md. The thresholds here sit below those scores
so that a change that breaks what the model draws fails, while the slice's
exact score (deterministic for the seeds) is printed.

Skipped when models/demo is not in this checkout.
"""

from __future__ import annotations

import sys
from typing import Any, List

import numpy as np
import pytest
from conftest import REPO

import diffuse

DEMO = REPO / "models" / "demo"
pytestmark = pytest.mark.skipif(not (DEMO / "model_index.json").exists(), reason="models/demo is not in this checkout")

sys.path.insert(0, str(REPO / "scripts" / "demo_model"))


@pytest.fixture(scope="module")
def demo() -> Any:
    import dataset
    import evaluate
    import evaluate_reference

    with diffuse.Model(str(DEMO)) as m, diffuse.Context(m) as ctx:
        yield ctx, dataset, evaluate, evaluate_reference


def _draw(ctx: diffuse.Context, specs: List[dict]) -> List[np.ndarray]:
    return [ctx.generate(s["caption"], seed=i, return_numpy=True)[0] for i, s in enumerate(specs)]


def test_demo_model_draws_the_prompt(demo: Any) -> None:
    ctx, D, _, R = demo
    specs = D.eval_specs(0)
    single = [s for s in specs if s["split"] == "single"][:16]
    double = [s for s in specs if s["split"] == "double"][:8]
    res = R.score_batch(_draw(ctx, single + double), single + double)["summary"]
    print("demo model on 16 single / 8 two-object held-out prompts:", res["single"]["correct"], res["double"]["correct"])
    assert res["single"]["correct"] >= 0.75, res
    assert res["double"]["correct"] >= 0.5, res


def test_demo_model_edit_and_variation(demo: Any) -> None:
    ctx, D, E, R = demo
    specs = [s for s in D.eval_specs(0) if s["split"] == "single"][:6]
    images = _draw(ctx, specs)

    class Settings:
        steps, guidance, seed = 30, 7.5, 0

    import tempfile

    with tempfile.TemporaryDirectory() as out:
        res = E.edits_and_variations(ctx, images, specs, len(specs), Settings, out)
    print("demo model edit / variation on 6 prompts:", res["edit"]["correct"], res["variation"]["correct"])
    assert res["edit"]["unmasked_pixels_unchanged"] == 1.0, res
    assert res["edit"]["correct"] >= 0.5, res  # the repainted object has the new colour and its shape
    assert res["variation"]["correct"] >= 0.5, res
