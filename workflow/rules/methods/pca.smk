# PCA baseline: 64 components fitted incrementally on the pretraining store (IncrementalPCA).
# Embeddings: results/embeddings/{method}/{dataset}.h5ad (obsm["X_emb"]); model: results/models/{method}/.


use rule pretrain_method as pretrain_pca with:
    wildcard_constraints:
        method=names_regex(methods_of_family("pca")),


use rule embed_method as embed_pca with:
    wildcard_constraints:
        method=names_regex(methods_of_family("pca")),
