# scBT (Barlow Twins, ssl_in_scg): two augmented views, wide projector, off-diagonal weight 0.0051.
# Embeddings: results/embeddings/{method}/{dataset}.h5ad (obsm["X_emb"]); model: results/models/{method}/.


use rule pretrain_method as pretrain_barlow_twins with:
    wildcard_constraints:
        method=names_regex(methods_of_family("barlow_twins")),


use rule embed_method as embed_barlow_twins with:
    wildcard_constraints:
        method=names_regex(methods_of_family("barlow_twins")),
