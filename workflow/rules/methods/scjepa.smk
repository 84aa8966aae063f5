# scJEPA (docs/PROTOCOL.md §2.2): global + 8 masked views, shared encoder/decoder, L = (1-λ) L_sim + λ SIGReg + γ L_recon.
# Its ablations (config entries with family scjepa) run through the same rules.
# Embeddings: results/embeddings/{method}/{dataset}.h5ad (obsm["X_emb"]); model: results/models/{method}/.


use rule pretrain_method as pretrain_scjepa with:
    wildcard_constraints:
        method=names_regex(methods_of_family("scjepa")),


use rule embed_method as embed_scjepa with:
    wildcard_constraints:
        method=names_regex(methods_of_family("scjepa")),
