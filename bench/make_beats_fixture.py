"""Write tests/fixtures/beats_state_dict_shapes.json from avex's BEATs module (run with avex's Python).

    /work/avex-venv/bin/python bench/make_beats_fixture.py

For each variant (encoder only, NatureLM, fine-tuned with a head) it records every state_dict name and shape,
which tests/test_beats.py compares against rl_core's module.
"""

from __future__ import annotations

import json

from beats_avex_reference import REPO_ROOT, VARIANTS, build_avex_beats

if __name__ == "__main__":
    out = {}
    for variant, (yaml_key, num_classes) in VARIANTS.items():
        model = build_avex_beats(yaml_key, num_classes)
        out[variant] = {
            "avex_yaml": yaml_key,
            "num_classes": num_classes,
            "shapes": {k: list(v.shape) for k, v in model.state_dict().items()},
        }
        print(f"{variant}: {len(out[variant]['shapes'])} tensors")
    path = REPO_ROOT / "tests" / "fixtures" / "beats_state_dict_shapes.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {path}")
