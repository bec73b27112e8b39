"""``gnnseg gnn ...``: the graph commands. Each handler imports what it runs, so building the parser imports no
torch."""

from __future__ import annotations

import argparse

from gnnseg.cli.arguments import LazyChoices, depths, int_list, names, node_dataset, node_split

SAMPLERS = ("neighbor", "fastgcn", "ladies")


def _gnn_train(args: argparse.Namespace) -> dict:
    overrides = {key: value for key, value in (("epochs", args.epochs), ("lr", args.lr),
                                               ("hidden", args.hidden), ("compile", args.compile))
                 if value is not None}
    minibatch = {key: value for key, value in (("fanouts", args.fanouts), ("num_samples", args.num_samples),
                                               ("batch_size", args.batch_size), ("num_workers", args.num_workers),
                                               ("patience", args.patience), ("eval_every", args.eval_every),
                                               ("reuse_samples", args.reuse_samples),
                                               ("sampler_backend", args.sampler_backend))
                 if value is not None}
    if args.partitions is not None:                          # one rank per partition (gnn partition)
        given = [flag for flag, value in (("--split", args.split), ("--save-predictions", args.save_predictions))
                 if value is not None]
        if given:
            raise ValueError(f"{', '.join(given)} cannot be used with --partitions: the partitions carry the split "
                             f"they were cut with (score the saved model with gnnseg gnn eval on one machine)")
        from gnnseg.gnn.distributed.runs import run_partitioned_classification

        return run_partitioned_classification(args.partitions, args.model, args.sampler, seeds=args.seeds,
                                              first_seed=args.seed, runs_root=args.runs_dir,
                                              overrides={**overrides, **minibatch}, resume_run=args.resume,
                                              timeout_s=args.timeout, transport=args.transport,
                                              rpc_port=args.rpc_port, show_progress=False if args.json else None)
    if args.model == "sage" or args.sampler is not None:     # mini-batch training on sampled blocks
        from gnnseg.gnn.tasks.minibatch_runs import run_minibatch_classification

        return run_minibatch_classification(args.model, args.sampler, args.dataset, args.root, seeds=args.seeds,
                                            first_seed=args.seed, runs_root=args.runs_dir,
                                            overrides={**overrides, **minibatch}, resume_run=args.resume,
                                            split=args.split, split_seed=args.split_seed,
                                            save_predictions=args.save_predictions,
                                            show_progress=False if args.json else None)
    if minibatch or args.resume:
        given = ", ".join(f"--{key.replace('_', '-')}" for key in minibatch) or "--resume"
        raise ValueError(f"{given} apply to mini-batch training: add --sampler neighbor|fastgcn|ladies "
                         f"(or --model sage)")
    from gnnseg.gnn.tasks.node_runs import run_node_classification

    return run_node_classification(args.model or "gcn", args.dataset, args.root, seeds=args.seeds,
                                   first_seed=args.seed, runs_root=args.runs_dir, overrides=overrides,
                                   split=args.split, split_seed=args.split_seed,
                                   save_predictions=args.save_predictions,
                                   show_progress=False if args.json else None)


def _gnn_partition(args: argparse.Namespace) -> dict:
    from gnnseg.gnn.distributed.partition import partition_graph

    return partition_graph(args.dataset, args.root, args.parts, args.out, seed=args.seed,
                           show_progress=False if args.json else None)


def _gnn_synth(args: argparse.Namespace) -> dict:
    from gnnseg.gnn.datasets.synthetic import SyntheticConfig, write_synthetic

    config = SyntheticConfig(num_nodes=args.nodes, avg_degree=args.avg_degree, num_classes=args.classes,
                             num_features=args.features, degree_exponent=args.degree_exponent,
                             homophily=args.homophily, feature_noise=args.feature_noise,
                             label_noise=args.label_noise, train_fraction=args.train_fraction,
                             val_fraction=args.val_fraction, seed=args.seed)
    return write_synthetic(config, args.out)


def _gnn_linkpred(args: argparse.Namespace) -> dict:
    from gnnseg.gnn.tasks.link_runs import run_link_prediction

    return run_link_prediction(args.dataset, args.root, seeds=args.seeds, first_seed=args.seed,
                               variational=args.variational, objective=args.objective, epochs=args.epochs,
                               runs_root=args.runs_dir)


def _gnn_graphclass(args: argparse.Namespace) -> dict:
    from gnnseg.gnn.tasks.graph_classification import GraphConfig, cross_validate

    config = GraphConfig(folds=args.folds, epochs=args.epochs, hidden=args.hidden, train_eps=args.train_eps,
                         readout=args.readout)
    if args.dataset.startswith("pyg:"):
        from gnnseg.gnn.datasets.pyg_files import load_pyg_graphs

        graphs = load_pyg_graphs(args.dataset[len("pyg:"):])
    else:
        if args.root is None:
            raise ValueError(f"--root is needed for the TU dataset {args.dataset}: the folder holding "
                             f"{args.dataset}/{args.dataset}_A.txt")
        from gnnseg.gnn.datasets.tu import load_tu

        graphs = load_tu(args.dataset, args.root)
    result = cross_validate(graphs, config, seed=args.seed, show_progress=False if args.json else None)
    result.pop("curves")
    return {"dataset": args.dataset, "model": "gin-eps" if args.train_eps else "gin-0", **result}


def _gnn_molecules(args: argparse.Namespace) -> dict:
    from gnnseg.gnn.tasks.molecule_runs import run_molecule_property

    overrides = {key: value for key, value in (("epochs", args.epochs), ("hidden", args.hidden),
                                               ("num_layers", args.layers), ("batch_size", args.batch_size),
                                               ("lr", args.lr), ("patience", args.patience),
                                               ("dropout", args.dropout)) if value is not None}
    if args.no_bond_features:
        overrides["bond_features"] = False
    common = {"seeds": args.seeds, "first_seed": args.seed, "runs_root": args.runs_dir, "overrides": overrides,
              "show_progress": False if args.json else None}
    if args.ogb:
        given = [f"--{name.replace('_', '-')}" for name in ("targets", "task") if getattr(args, name) is not None]
        if args.featurizer == "gnnseg":
            given.append("--featurizer gnnseg")
        if given:
            raise ValueError(f"{', '.join(given)} do not apply to --ogb: an OGB folder brings its targets, task "
                             f"and OGB's atom and bond codes")
        from gnnseg.gnn.datasets.ogb_molecules import load_ogb_molecules

        dataset = load_ogb_molecules(args.ogb)
        return run_molecule_property(args.ogb, dataset.target_names, task=dataset.task, dataset=dataset,
                                     split=args.split or "official", **common)
    if not args.targets:
        raise ValueError("--csv needs --targets: the column(s) to learn")
    return run_molecule_property(args.csv, args.targets, smiles_column=args.smiles_column,
                                 task=args.task or "classification", split=args.split or "scaffold",
                                 featurizer=args.featurizer or "gnnseg", **common)


def _gnn_screen(args: argparse.Namespace) -> dict:
    from gnnseg.gnn.tasks.molecule_runs import screen_library

    return screen_library(args.model, args.csv, args.out, smiles_column=args.smiles_column, top=args.top,
                          target=args.target, ascending=args.ascending)


def _gnn_oversmooth(args: argparse.Namespace) -> dict:
    from gnnseg.gnn.tasks.depth_sweeps import run_oversmoothing

    return run_oversmoothing(args.dataset, args.root, model=args.model, depths=args.depths, remedies=args.remedies,
                             seeds=args.seeds, first_seed=args.seed, epochs=args.epochs, runs_root=args.runs_dir,
                             karate=not args.no_karate, show_progress=False if args.json else None)


def _gnn_eval(args: argparse.Namespace) -> dict:
    from gnnseg.gnn.tasks.saved_models import evaluate_saved_classifier

    return evaluate_saved_classifier(args.checkpoint, args.root, args.dataset)


def add_gnn_commands(halves: argparse._SubParsersAction) -> None:
    gnn = halves.add_parser("gnn", help="graph neural networks").add_subparsers(dest="gnn_command", required=True)
    train = gnn.add_parser("train", help="node classification over several seeds: full-batch, or on sampled "
                                         "mini-batches with --sampler (or --model sage)")
    train.add_argument("--model", choices=LazyChoices("gnnseg.gnn.tasks.node", "MODELS", "sage"), default=None,
                       metavar="MODEL",
                       help="gcn (default), sgc, gin, gat full-batch; sage trains on sampled mini-batches, and "
                            "with --sampler gcn/gat/gin do too (fastgcn/ladies: gcn by default)")
    train.add_argument("--dataset", type=node_dataset, default="cora",
                       help="cora, citeseer, pubmed, karate, synth:PATH (gnnseg gnn synth), ogb:PATH (an OGB "
                            "node-property folder such as dataset/ogbn_products), pyg:PATH (a PyG dataset folder "
                            "or a torch.save'd Data) or files:DIR (edges.csv, features.npy, labels.csv; docs/gnn.md)")
    train.add_argument("--root", help="folder holding the raw Planetoid files (ind.<name>.*), flat or in PyG's "
                                      "layout (ROOT/Cora/raw)")
    train.add_argument("--split", type=node_split, metavar="random:TRAIN,VAL,TEST",
                       help="a random split with these fractions (e.g. random:0.6,0.2,0.2) instead of the dataset's "
                            "masks; a dataset without train or test masks gets random:0.6,0.2,0.2 anyway, with a "
                            "warning")
    train.add_argument("--split-seed", type=int, default=0, help="seed of the random split (default 0)")
    train.add_argument("--save-predictions", metavar="PATH",
                       help="write the saved model's class for every node, in the dataset's node order, as a tensor "
                            "(torch.load(PATH, weights_only=True)); an existing file is never overwritten")
    train.add_argument("--sampler", choices=SAMPLERS, help="mini-batch training with uniform neighbour "
                                                           "(GraphSAGE), FastGCN or LADIES sampling")
    train.add_argument("--fanouts", type=int_list, help="neighbours per hop from the seeds (default 25,10)")
    train.add_argument("--reuse-samples", action="store_const", const=True,
                       help="neighbour sampling: draw each node's neighbours once and share them with every layer "
                            "(PyG's NeighborLoader) instead of afresh per layer (GraphSAGE)")
    train.add_argument("--sampler-backend", choices=("auto", "numba", "torch"),
                       help="neighbour sampling: the code that draws (default auto: numba where it is installed, "
                            "else torch; the same distribution, different draws)")
    train.add_argument("--compile", action="store_const", const=True,
                       help="train through torch.compile (seconds to compile; off by default: on CPU it pays "
                            "only for full-graph GAT; see benchmarks/gnn_compile.py)")
    train.add_argument("--num-samples", type=int_list,
                       help="fastgcn/ladies: nodes sampled per layer (defaults: fastgcn 400,400; ladies 64 x 5)")
    train.add_argument("--batch-size", type=int, help="seed nodes per mini-batch (default 512)")
    train.add_argument("--num-workers", type=int, help="DataLoader processes that sample ahead (default 0: "
                                                       "sample in the training process)")
    train.add_argument("--patience", type=int, help="mini-batch: epochs without a better validation accuracy "
                                                    "before stopping")
    train.add_argument("--eval-every", type=int, help="mini-batch: evaluate (exactly, over whole neighbourhoods) "
                                                      "every N epochs and after the last (default 1)")
    train.add_argument("--resume", metavar="RUN_DIR", help="mini-batch: continue the run in RUN_DIR from its "
                                                          "checkpoints (same arguments)")
    train.add_argument("--partitions", metavar="DIR",
                       help="mini-batch training over the partitions in DIR (gnnseg gnn partition), one torchrun "
                            "process per partition; neighbours and features of other partitions are fetched from "
                            "their ranks (--dataset is taken from the partitions)")
    train.add_argument("--timeout", type=float, default=600.0,
                       help="--partitions: seconds a collective or a request waits for a stalled rank before every "
                            "rank stops (default 600); ranks still starting get at least 120 s to arrive")
    train.add_argument("--transport", choices=("rpc", "collectives"), default="rpc",
                       help="--partitions: how requests reach other partitions: torch RPC, each owner answering as "
                            "requests arrive (default, the faster), or all-to-all collectives in lock-step")
    train.add_argument("--rpc-port", type=int, help="--partitions with RPC, ranks started without torchrun: the port "
                                                     "the RPC agents meet at on MASTER_ADDR (default MASTER_PORT, the "
                                                     "process group's store; under torchrun always torchrun's store)")
    train.add_argument("--seeds", type=int, default=1, help="number of seeds to train (default 1)")
    train.add_argument("--seed", type=int, default=0, help="first seed (default 0)")
    train.add_argument("--epochs", type=int, help="override the preset's maximum epochs")
    train.add_argument("--lr", type=float, help="override the preset's learning rate")
    train.add_argument("--hidden", type=int, help="override the preset's hidden width")
    train.add_argument("--runs-dir", default="runs", help="where run directories are created (default runs/)")
    train.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    train.set_defaults(handler=_gnn_train)

    synth = gnn.add_parser("synth", help="write a large synthetic node-classification graph (degree-corrected "
                                         "SBM with power-law degrees) to a folder of .npy files")
    synth.add_argument("--nodes", type=int, required=True)
    synth.add_argument("--avg-degree", type=float, default=50.0, help="mean neighbours per node (default 50)")
    synth.add_argument("--classes", type=int, default=47, help="communities = classes (default 47)")
    synth.add_argument("--features", type=int, default=100, help="feature dimensions (default 100)")
    synth.add_argument("--degree-exponent", type=float, default=2.5, help="power-law tail P(k) ~ k^-g (default 2.5)")
    synth.add_argument("--homophily", type=float, default=0.5, help="share of a node's edges inside its community")
    synth.add_argument("--feature-noise", type=float, default=4.0, help="noise std around the class means")
    synth.add_argument("--label-noise", type=float, default=0.1, help="share of labels flipped to another class")
    synth.add_argument("--train-fraction", type=float, default=0.08)
    synth.add_argument("--val-fraction", type=float, default=0.02)
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--out", required=True, help="new folder to write (never overwritten)")
    synth.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    synth.set_defaults(handler=_gnn_synth)

    partition = gnn.add_parser("partition", help="METIS edge-cut partitions of a node dataset for training on "
                                                 "several machines (gnn train --partitions)")
    partition.add_argument("--dataset", type=node_dataset, required=True,
                           help="cora, citeseer, pubmed, synth:PATH, ogb:PATH, pyg:PATH or files:DIR (as gnn train)")
    partition.add_argument("--root", help="folder holding the raw Planetoid files (ind.<name>.*)")
    partition.add_argument("--parts", type=int, required=True, help="number of partitions (= training processes)")
    partition.add_argument("--out", required=True, help="new folder to write (never overwritten)")
    partition.add_argument("--seed", type=int, default=0, help="METIS seed (default 0)")
    partition.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    partition.set_defaults(handler=_gnn_partition)

    link = gnn.add_parser("linkpred", help="link prediction with a graph auto-encoder (GAE / VGAE)")
    link.add_argument("--dataset", type=node_dataset, default="cora",
                      help="cora, citeseer, pubmed, karate, pyg:PATH or files:DIR (as gnn train)")
    link.add_argument("--root", help="folder holding the raw Planetoid files (ind.<name>.*)")
    link.add_argument("--seeds", type=int, default=1)
    link.add_argument("--seed", type=int, default=0, help="first seed")
    link.add_argument("--variational", action="store_true", help="VGAE instead of GAE")
    link.add_argument("--objective", choices=("full", "sampled"), default="full",
                      help="full: all node pairs (GAE paper); sampled: one sampled non-edge per edge")
    link.add_argument("--epochs", type=int, default=200)
    link.add_argument("--runs-dir", default="runs")
    link.add_argument("--json", action="store_true")
    link.set_defaults(handler=_gnn_linkpred)

    graphclass = gnn.add_parser("graphclass", help="graph classification with GIN, 10-fold cross-validation")
    graphclass.add_argument("--dataset", required=True, help="TU dataset name, e.g. MUTAG, PROTEINS, NCI1, or "
                                                              "pyg:PATH (a PyG dataset folder such as TUDataset's "
                                                              "root/MUTAG, or a saved list of Data)")
    graphclass.add_argument("--root", help="TU datasets: the folder holding <NAME>/<NAME>_A.txt and friends")
    graphclass.add_argument("--folds", type=int, default=10)
    graphclass.add_argument("--epochs", type=int, default=350)
    graphclass.add_argument("--hidden", type=int, default=32)
    graphclass.add_argument("--readout", choices=("sum", "mean", "max"), default="sum")
    graphclass.add_argument("--train-eps", action="store_true", help="GIN-eps instead of GIN-0")
    graphclass.add_argument("--seed", type=int, default=0)
    graphclass.add_argument("--json", action="store_true")
    graphclass.set_defaults(handler=_gnn_graphclass)

    molecules = gnn.add_parser("molecules", help="molecular property prediction from a SMILES table or an OGB "
                                                 "molecule folder (GIN with bond features; needs RDKit)")
    source = molecules.add_mutually_exclusive_group(required=True)
    source.add_argument("--csv", help="a CSV with a SMILES column and target columns")
    source.add_argument("--ogb", metavar="DIR", help="an OGB molecule dataset folder as OGB lays it out (e.g. "
                                                     "dataset/ogbg_molhiv): its graphs, labels and official split")
    molecules.add_argument("--smiles-column", default="smiles")
    molecules.add_argument("--targets", nargs="+", help="--csv: target column(s); blank cells = missing")
    molecules.add_argument("--task", choices=("classification", "regression"),
                           help="--csv: classification (0/1 labels, ROC-AUC; the default) or regression (RMSE)")
    molecules.add_argument("--split", choices=("scaffold", "scaffold_balanced", "random", "official"),
                           help="80/10/10 by Bemis-Murcko scaffold (deterministic, MoleculeNet/OGB; the default for "
                                "--csv), by scaffold shuffled per seed (chemprop's balanced split), at random (per "
                                "seed), or the dataset's own (the default for --ogb)")
    molecules.add_argument("--seeds", type=int, default=1, help="number of seeds to train (default 1)")
    molecules.add_argument("--seed", type=int, default=0, help="first seed (default 0)")
    molecules.add_argument("--epochs", type=int, help="maximum epochs (default 100)")
    molecules.add_argument("--patience", type=int, help="epochs without validation gain before stopping (default 20)")
    molecules.add_argument("--hidden", type=int, help="hidden width (default 128)")
    molecules.add_argument("--layers", type=int, help="GIN layers (default 5)")
    molecules.add_argument("--batch-size", type=int, help="molecules per batch (default 32)")
    molecules.add_argument("--lr", type=float, help="Adam learning rate (default 1e-3)")
    molecules.add_argument("--dropout", type=float, help="dropout after every layer (default 0.5)")
    molecules.add_argument("--no-bond-features", action="store_true", help="plain GIN: bonds give edges only")
    molecules.add_argument("--featurizer", choices=("gnnseg", "ogb"),
                           help="--csv: atom and bond features, gnnseg's one-hot (default) or OGB's smiles2graph "
                                "codes, comparable with OGB's leaderboard (needs the ogb package)")
    molecules.add_argument("--runs-dir", default="runs", help="where run directories are created (default runs/)")
    molecules.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    molecules.set_defaults(handler=_gnn_molecules)

    screen = gnn.add_parser("screen", help="rank a library of SMILES with a model from `gnnseg gnn molecules`")
    screen.add_argument("--model", required=True, help="model.pt from a molecules run directory")
    screen.add_argument("--csv", required=True, help="the library: a CSV with a SMILES column")
    screen.add_argument("--smiles-column", default="smiles")
    screen.add_argument("--top", type=int, default=100, help="rows to write (default 100)")
    screen.add_argument("--target", help="which of the model's tasks to rank by (default: its first)")
    screen.add_argument("--ascending", action="store_true", help="lowest score first (e.g. a regression target)")
    screen.add_argument("--out", required=True, help="ranked CSV to write; an existing file is never overwritten")
    screen.add_argument("--json", action="store_true")
    screen.set_defaults(handler=_gnn_screen)

    smooth = gnn.add_parser("oversmooth", help="depth sweep: accuracy, MAD, MADGap and Dirichlet energy of GCN "
                                               "and its over-smoothing remedies")
    smooth.add_argument("--dataset", type=node_dataset, default="cora",
                        help="cora, citeseer, pubmed, karate, pyg:PATH or files:DIR (as gnn train)")
    smooth.add_argument("--root", help="folder holding the raw Planetoid files (ind.<name>.*)")
    smooth.add_argument("--model", choices=("gcn",), default="gcn", help="the base model (default gcn)")
    smooth.add_argument("--depths", type=depths, default=[1, 2, 4, 8, 16, 32],
                        help="comma-separated layer counts (default 1,2,4,8,16,32)")
    smooth.add_argument("--remedies", type=names, default=["pairnorm", "gcnii"],
                        help="comma-separated: pairnorm, gcnii, or none (default pairnorm,gcnii)")
    smooth.add_argument("--seeds", type=int, default=1, help="seeds per point (default 1)")
    smooth.add_argument("--seed", type=int, default=0, help="first seed (default 0)")
    smooth.add_argument("--epochs", type=int, help="cap the maximum epochs (default: each variant's own, 1500)")
    smooth.add_argument("--no-karate", action="store_true", help="skip the karate-club embedding figure")
    smooth.add_argument("--runs-dir", default="runs", help="where run directories are created (default runs/)")
    smooth.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    smooth.set_defaults(handler=_gnn_oversmooth)

    evaluate = gnn.add_parser("eval", help="re-evaluate a saved node classifier")
    evaluate.add_argument("--checkpoint", required=True)
    evaluate.add_argument("--root", help="folder holding the raw Planetoid files")
    evaluate.add_argument("--dataset", type=node_dataset, help="default: the checkpoint's dataset")
    evaluate.add_argument("--json", action="store_true")
    evaluate.set_defaults(handler=_gnn_eval)
