"""Adding a method = one rule file + its name in `methods:`; it reaches the score tables."""

import textwrap

import pytest

from wfhelpers import TINY, copy_workflow, snakemake

pytestmark = pytest.mark.slow

RULE = '''
rule embed_my_nmf:
    input:
        data=processed_input,
    output:
        emb="results/embeddings/my_nmf/{dataset}.h5ad",
    log:
        "logs/embed/my_nmf/{dataset}.log",
    threads: 1
    resources:
        mem_mb=mem(4000),
        runtime=runtime(30),
    script:
        "my_nmf.py"
'''

SCRIPT = '''
import anndata as ad
from sklearn.decomposition import NMF
from scjepa.io import write_h5ad

adata = ad.read_h5ad(snakemake.input.data)
emb = NMF(n_components=8, init="nndsvda", max_iter=200, random_state=0).fit_transform(adata.X)
write_h5ad(ad.AnnData(obs=adata.obs, obsm={"X_emb": emb.astype("float32")}), snakemake.output.emb)
'''


def test_new_method_file_reaches_the_tables(tmp_path):
    wf = copy_workflow(tmp_path / "wf")
    (wf / "workflow" / "rules" / "methods" / "my_nmf.smk").write_text(textwrap.dedent(RULE))
    (wf / "workflow" / "rules" / "methods" / "my_nmf.py").write_text(textwrap.dedent(SCRIPT))
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(TINY.read_text() + "\n")
    snakemake("--configfile", cfg, "--config", "methods=[pca,my_nmf]", "--cores", "2",
              "results/tables/table1_in_distribution.md", "results/tables/table_integration.md",
              cwd=wf, snakefile=wf / "Snakefile")
    md = (wf / "results" / "tables" / "table1_in_distribution.md").read_text()
    row = next(line for line in md.splitlines() if line.startswith("| my_nmf |"))
    cells = [c.strip() for c in row.strip("|").split("|")[1:]]
    assert any(c.replace("*", "").replace(".", "").isdigit() for c in cells), row  # real kNN scores
    assert "n/a" in row  # no encoder to fine-tune
    assert "| my_nmf |" in (wf / "results" / "tables" / "table_integration.md").read_text()
