# Data: fetch every source to resources/datasets/{dataset}/raw.h5ad, define the gene space,
# preprocess each dataset, and build the pretraining store.


rule download_source_h5ad:
    """CELLxGENE Census source h5ad by dataset id, at the pinned Census version."""
    output:
        raw="resources/datasets/{dataset}/raw.h5ad",
        provenance="resources/datasets/{dataset}/provenance.json",
    wildcard_constraints:
        dataset=names_regex(datasets_with_source("census")),
    params:
        spec=dataset_spec,
    log:
        "logs/download/{dataset}.log",
    threads: 1
    resources:
        mem_mb=mem(2000),
        runtime=runtime(240),
    conda:
        CENSUS_ENV
    script:
        "../scripts/download.py"


rule query_census_corpus:
    """A corpus queried from the Census with scTab's filters (source census_query), streamed in chunks."""
    input:
        unpack(census_query_inputs),
    output:
        raw="resources/datasets/{dataset}/raw.h5ad",
        provenance="resources/datasets/{dataset}/provenance.json",
    wildcard_constraints:
        dataset=names_regex(datasets_with_source("census_query")),
    params:
        spec=dataset_spec,
    log:
        "logs/download/{dataset}.log",
    threads: 1
    resources:
        mem_mb=mem(64000),
        runtime=runtime(24 * 60),
    conda:
        CENSUS_ENV
    script:
        "../scripts/download.py"


rule download_url:
    """An h5ad from a pinned URL, verified by sha256 (a mismatch or cut download never lands)."""
    output:
        raw="resources/datasets/{dataset}/raw.h5ad",
        provenance="resources/datasets/{dataset}/provenance.json",
    wildcard_constraints:
        dataset=names_regex(datasets_with_source("url")),
    params:
        spec=dataset_spec,
    log:
        "logs/download/{dataset}.log",
    threads: 1
    resources:
        mem_mb=mem(2000),
        runtime=runtime(240),
    conda:
        ENV
    script:
        "../scripts/download.py"


rule link_local_h5ad:
    """A user's local h5ad, copied in (and checksummed)."""
    output:
        raw="resources/datasets/{dataset}/raw.h5ad",
        provenance="resources/datasets/{dataset}/provenance.json",
    wildcard_constraints:
        dataset=names_regex(datasets_with_source("local")),
    params:
        spec=dataset_spec,
    log:
        "logs/download/{dataset}.log",
    threads: 1
    resources:
        mem_mb=mem(2000),
        runtime=runtime(60),
    conda:
        ENV
    script:
        "../scripts/download.py"


rule extract_bundled_h5ad:
    """Small data shipped inside installed packages (scanpy's pbmc68k_reduced)."""
    output:
        raw="resources/datasets/{dataset}/raw.h5ad",
        provenance="resources/datasets/{dataset}/provenance.json",
    wildcard_constraints:
        dataset=names_regex(datasets_with_source("bundled")),
    params:
        spec=dataset_spec,
    log:
        "logs/download/{dataset}.log",
    threads: 1
    resources:
        mem_mb=mem(2000),
        runtime=runtime(10),
    conda:
        ENV
    script:
        "../scripts/download.py"


rule generate_synthetic:
    """The embedded corpus: scjepa.data.synthetic, deterministic by seed."""
    output:
        raw="resources/datasets/{dataset}/raw.h5ad",
        provenance="resources/datasets/{dataset}/provenance.json",
    wildcard_constraints:
        dataset=names_regex(datasets_with_source("synthetic")),
    params:
        spec=dataset_spec,
    log:
        "logs/download/{dataset}.log",
    threads: 1
    resources:
        mem_mb=mem(4000),
        runtime=runtime(30),
    conda:
        ENV
    script:
        "../scripts/download.py"


rule define_gene_space:
    """The run's gene space: the corpus genes (or a gene list file such as scTab's 19,331)."""
    input:
        source=gene_space_input,
    output:
        genes="results/gene_space.tsv",
    params:
        gene_ids_column=DATASETS[config["gene_space"].get("from_dataset") or CORPUS]["columns"].get("gene_ids"),
    log:
        "logs/define_gene_space.log",
    threads: 1
    resources:
        mem_mb=mem(2000),
        runtime=runtime(10),
    conda:
        ENV
    script:
        "../scripts/define_gene_space.py"


rule preprocess:
    """Checks, normalise to 1e4 + log1p (counts kept), align to the gene space, donor split."""
    input:
        unpack(split_from_inputs),
        raw="resources/datasets/{dataset}/raw.h5ad",
        provenance="resources/datasets/{dataset}/provenance.json",
        genes=rules.define_gene_space.output.genes,
    output:
        processed="results/data/{dataset}/processed.h5ad",
    params:
        spec=dataset_spec,
        preprocess=config["preprocess"],
    log:
        "logs/preprocess/{dataset}.log",
    benchmark:
        "results/benchmarks/preprocess/{dataset}.tsv"
    threads: 1
    resources:
        mem_mb=mem(4000),
        runtime=runtime(120),
    conda:
        ENV
    script:
        "../scripts/preprocess.py"


rule build_store:
    """The pretraining corpus as shuffled CSR shards, streamed by the training loader."""
    input:
        processed=processed_path(CORPUS),
    output:
        store=directory(f"results/store/{CORPUS}"),
    params:
        store=config["store"],
        seed=config["seed"],
    log:
        f"logs/build_store/{CORPUS}.log",
    benchmark:
        f"results/benchmarks/build_store/{CORPUS}.tsv"
    threads: 1
    resources:
        mem_mb=mem(4000),
        runtime=runtime(240),
    conda:
        ENV
    script:
        "../scripts/build_store.py"


rule fetch_cell_ontology:
    """The pinned Cell Ontology release (cl.obo) for hierarchy-corrected F1 (tasks.zero_shot.hierarchy)."""
    output:
        obo="resources/ontology/cl_{version}.obo",
        provenance="resources/ontology/cl_{version}.provenance.json",
    wildcard_constraints:
        version=r"[0-9]{4}-[0-9]{2}-[0-9]{2}",
    params:
        kind="cell_ontology",
    log:
        "logs/ontology/cl_{version}.log",
    threads: 1
    resources:
        mem_mb=mem(1000),
        runtime=runtime(30),
    conda:
        ENV
    script:
        "../scripts/ontology.py"


rule write_synthetic_ontology:
    """The embedded world's cell-type lineage as OBO, for hierarchy-corrected F1 on the default data."""
    output:
        obo="resources/ontology/synthetic.obo",
        provenance="resources/ontology/synthetic.provenance.json",
    params:
        kind="synthetic",
        n_types=((DATASETS[CORPUS].get("synthetic") or {}).get("options") or {}).get("n_types", 16),
    log:
        "logs/ontology/synthetic.log",
    threads: 1
    resources:
        mem_mb=mem(1000),
        runtime=runtime(10),
    conda:
        ENV
    script:
        "../scripts/ontology.py"


rule check_leakage:
    """No test donor of an annotation dataset is a train/val donor of the corpus (leakage.check);
    the annotation score rules take its report as input, so a leak fails the run before any score."""
    input:
        corpus=processed_path(CORPUS),
        datasets=[processed_path(d) for d in leakage_datasets()],
    output:
        report=LEAKAGE_REPORT,
    params:
        corpus=CORPUS,
        names=leakage_datasets(),
        by=LEAKAGE["by"],
    log:
        "logs/check_leakage.log",
    threads: 1
    resources:
        mem_mb=mem(4000),
        runtime=runtime(30),
    conda:
        ENV
    script:
        "../scripts/check_leakage.py"
