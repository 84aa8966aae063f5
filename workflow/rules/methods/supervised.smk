# Supervised baseline: the same MLP encoder trained from scratch with a classification head on the corpus labels.
# Embeddings: results/embeddings/{method}/{dataset}.h5ad (obsm["X_emb"]); model: results/models/{method}/.


use rule pretrain_method as pretrain_supervised with:
    wildcard_constraints:
        method=names_regex(methods_of_family("supervised")),


use rule embed_method as embed_supervised with:
    wildcard_constraints:
        method=names_regex(methods_of_family("supervised")),
