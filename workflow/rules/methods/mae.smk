# scMAE (ssl_in_scg): Bernoulli gene mask p = 0.5, reconstruct, MSE on the masked genes.
# Embeddings: results/embeddings/{method}/{dataset}.h5ad (obsm["X_emb"]); model: results/models/{method}/.


use rule pretrain_method as pretrain_mae with:
    wildcard_constraints:
        method=names_regex(methods_of_family("mae")),


use rule embed_method as embed_mae with:
    wildcard_constraints:
        method=names_regex(methods_of_family("mae")),
