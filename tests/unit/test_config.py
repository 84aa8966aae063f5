"""Config validation: defaults, typos naming the key, cross-key checks."""

import copy
from pathlib import Path

import pytest
import yaml

from scjepa.config import method_entry, validate
from scjepa.errors import InputError

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def base():
    return yaml.safe_load((ROOT / "config" / "config.yaml").read_text())


def test_default_and_paper_configs_validate(base):
    cfg = validate(base)
    assert cfg["tasks"]["zero_shot"]["k"] == 5
    assert cfg["preprocess"]["target_sum"] == 10000
    paper = yaml.safe_load((ROOT / "config" / "paper.yaml").read_text())
    validate(paper)


@pytest.mark.parametrize(
    "edit, key",
    [
        (lambda c: c.update(sede=1), "'sede' was unexpected"),
        (lambda c: c["preprocess"].update(chunksize=5), "preprocess"),
        (lambda c: c["datasets"]["corpus"].update(source="ftp"), "datasets.corpus.source"),
        (lambda c: c["datasets"]["corpus"]["columns"].update(celltype="x"), "datasets.corpus.columns"),
        (lambda c: c.update(corpus="nope"), "key 'corpus'"),
        (lambda c: c["datasets"]["spatial_layers"]["columns"].pop("x"), "datasets.spatial_layers.columns.x"),
        (lambda c: c["method_params"]["pca"].update(serves=["finetune"]), "method_params.pca.serves"),
        (lambda c: c["datasets"]["corpus"].update(source="url"), "datasets.corpus.url"),
    ],
)
def test_errors_name_the_key(base, edit, key):
    cfg = copy.deepcopy(base)
    edit(cfg)
    with pytest.raises(InputError, match=key.replace(".", r"\.").replace("(", r"\(")):
        validate(cfg)


def test_method_defaults(base):
    cfg = validate(base)
    assert "finetune" not in method_entry(cfg, "pca")["serves"]
    assert "finetune" in method_entry(cfg, "scjepa")["serves"]
    assert method_entry(cfg, "user_method")["family"] == "user_method"


def test_config_readme_documents_every_key():
    from scjepa.config import schema_markdown

    readme = (ROOT / "config" / "README.md").read_text()
    assert schema_markdown() in readme, "regenerate: (cat config/README.intro.md; python -m scjepa.config) > config/README.md"


def test_an_ablation_inherits_its_base_methods_hparams():
    import yaml as _yaml

    raw = _yaml.safe_load((Path(__file__).resolve().parents[2] / "config" / "config.yaml").read_text())
    raw["methods"] = ["scjepa", "no_recon"]
    raw["method_params"]["scjepa"]["hparams"] = {"lambda_sigreg": 0.3, "gamma_recon": 0.01}
    raw["method_params"]["no_recon"] = {"family": "scjepa", "ablation_of": "scjepa", "hparams": {"gamma_recon": 0.0}}
    c = validate(raw)
    assert method_entry(c, "no_recon")["hparams"] == {"lambda_sigreg": 0.3, "gamma_recon": 0.0}
    assert method_entry(c, "scjepa")["hparams"] == {"lambda_sigreg": 0.3, "gamma_recon": 0.01}
