"""``scjepa``: the library's pieces on the command line, without the workflow."""

from __future__ import annotations

import argparse
import sys


def _embed(args) -> None:
    from scjepa.io import read_h5ad, write_h5ad
    from scjepa.methods import embed_adata

    adata = read_h5ad(args.input)
    adata.obsm[args.key] = embed_adata(args.model, adata, layer=args.layer)
    write_h5ad(adata, args.output)
    print(f"wrote {args.output}: obsm['{args.key}'] {adata.obsm[args.key].shape}")


def _generate(args) -> None:
    from scjepa.data.synthetic import generate, write_h5ad_chunked

    if args.chunk_size:
        write_h5ad_chunked(args.output, args.kind, args.n_cells, args.chunk_size, n_genes=args.n_genes, seed=args.seed)
    else:
        from scjepa.io import write_h5ad

        write_h5ad(generate(args.kind, args.n_cells, n_genes=args.n_genes, seed=args.seed), args.output)
    print(f"wrote {args.output}")


def _config_doc(args) -> None:
    from scjepa.config import schema_markdown

    print(schema_markdown(), end="")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="scjepa", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("embed", help="embed an h5ad with a trained model (genes aligned, missing zero-filled)")
    e.add_argument("model", help="model directory, e.g. results/models/scjepa")
    e.add_argument("input", help="h5ad with log1p-normalised X (or --layer)")
    e.add_argument("output", help="h5ad to write: the input plus obsm[KEY]")
    e.add_argument("--key", default="X_emb")
    e.add_argument("--layer", default=None)
    e.set_defaults(func=_embed)
    g = sub.add_parser("generate", help="write a synthetic dataset (raw counts)")
    g.add_argument("kind", help="pretrain, in_distribution, out_of_distribution, integration, spatial, timecourse, perturbation")
    g.add_argument("n_cells", type=int)
    g.add_argument("output")
    g.add_argument("--n-genes", type=int, default=2000)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--chunk-size", type=int, default=0, help="write in chunks (bounded memory)")
    g.set_defaults(func=_generate)
    c = sub.add_parser("config-doc", help="print the reference of every config key (Markdown)")
    c.set_defaults(func=_config_doc)
    args = p.parse_args(argv)
    from scjepa.errors import InputError

    try:
        args.func(args)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
