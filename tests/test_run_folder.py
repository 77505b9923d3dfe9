"""Run-folder guards across versions: a checkpoint written before the model config grouped its keys."""
import copy

from zeroi2v.config import Config
from zeroi2v.run_folder import config_changes


def test_a_run_from_before_the_model_groups_resumes_and_a_real_change_is_still_refused():
    new = Config().to_dict()
    old = copy.deepcopy(new)
    m = old["model"]
    t, a = m.pop("temporal"), m.pop("adapter")  # the flat keys an older checkpoint stored
    m.update(offsets=t["offsets"], boundary=t["boundary"], adapter=a["kind"], adapter_placement=a["placement"],
             adapter_ratio=a["ratio"], adapter_scale=a["scale"], adapter_dropout=a["dropout"])
    assert config_changes(old, new) == []
    m["adapter_scale"] = 0.5
    changes = config_changes(old, new)
    assert len(changes) == 1 and changes[0].startswith("model.adapter ") and "0.5" in changes[0]
