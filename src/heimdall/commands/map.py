"""`heimdall map fit` (a radio map fitted on a store, attached to a network model as a new ONNX file) and
`heimdall map update` (new labels refit a map-carrying model's map: a new version); either can also go to a model
store and the registry."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from heimdall.budget import TimeBudget
from heimdall.commands.options import s3_options
from heimdall.commands.progress import staged_progress
from heimdall.errors import ConfigError
from heimdall.radiomap.fit import MapOptions
from heimdall.release.map_attach import fit_and_attach
from heimdall.release.map_update import MapModel, fetched_map_model, read_map_model, update_map
from heimdall.release.publish import PublishOptions, publish_map_model
from heimdall.signing import signing_key


def map_command(args: argparse.Namespace) -> int:
    """Run `heimdall map fit` or `heimdall map update`; 0 on success."""
    console = Console()
    if (args.action == "update") != bool(args.labels):
        raise ConfigError("--labels DIR: `map update` needs it, `map fit` takes none (it fits on the store's labels)")
    if args.action == "fit" and not args.model:
        raise ConfigError("--model: `map fit` needs the network model (model.onnx) to attach the map to")
    signer = signing_key(args.signing_key)
    spacing_m = args.spacing_m
    with staged_progress(console, args.quiet) as (_, on_progress):
        if args.action == "fit":
            grid = MapOptions(spacing_m=spacing_m)
            r = fit_and_attach(Path(args.model), Path(args.data_store), Path(args.out), grid, signer, on_progress)
        else:
            own = None if spacing_m is None else MapOptions(spacing_m=spacing_m)
            parent = read_map_model(Path(args.model), Path(args.out)) if args.model else fetched_parent(args, console)
            r = update_map(parent, Path(args.data_store), Path(args.labels), Path(args.out), own, signer, on_progress)
    f = r.fit
    console.print(
        f"{f['how']}; map version {f['map_version']}; hybrid α {f['alpha']:.3g}, β {f['beta']:.3g}"
        + (f" (temperature {f['temperature']:g})" if f.get("temperature", 1.0) != 1.0 else "")
        + (f" (validation NLL {f['validation_nll']:.2f} on {f['validation_n']})" if "validation_nll" in f else "")
        + f"\nwrote {r.path} ({r.size_bytes / 1e6:.1f} MB) with its manifest\nsha256 {r.sha256}",
        highlight=False,
    )
    if args.store or args.register:
        where = PublishOptions(
            store=args.store,
            s3_options=s3_options(args),
            register=args.register,
            eval_data=args.eval_data,
            tracking_uri=args.tracking_uri,
            signer=signer,
        )
        with staged_progress(console, args.quiet) as (_, on_progress):  # the evaluations' progress
            published = publish_map_model(r, Path(args.data_store), where, TimeBudget(show=on_progress))
        if published.store_version is not None:
            console.print(f"model store: version {published.store_version} in {published.store}", highlight=False)
        if published.registration is not None:
            g = published.registration
            console.print(f"MLflow registry: {g.name} v{g.version} → {g.alias} ({g.reason})", highlight=False)
    return 0


def fetched_parent(args: argparse.Namespace, console: Console) -> MapModel:
    """`map update` without --model: the model to update is --store's latest version (or --version), else the
    registry's --alias (champion) at --tracking-uri; its manifest checked (and its signature, with --verify-key)."""
    from heimdall.manifest import TrustPolicy
    from heimdall.serve.runtime import ModelSource
    from heimdall.signing import verify_key

    source = ModelSource(
        store=args.store,
        version=args.version,
        registry_uri=args.tracking_uri,
        alias=args.alias,
        s3_options=s3_options(args),
        trust=TrustPolicy(verify_key=verify_key(args.verify_key)),
    )
    data, name, version = source.fetch()
    where = f"model store {args.store}" if args.store else f"registry {args.tracking_uri or 'default'} @{args.alias}"
    console.print(f"updating {name} version {version} from the {where}", highlight=False)
    return fetched_map_model(data, f"{where}: {name} version {version}")
