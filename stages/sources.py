"""DVC stage `sources`: the files params.yaml `ingest` sources read, each with its MD5 -> data/interim/sources.json.

It runs on every `dvc repro` (always_changed) and the ingest stage depends on its manifest, so ingest
reruns when a source's content or file set changes, whatever its path. No MLflow run: ingest's run
records the sources' versions.
"""

import sys

from papersim.atomic import atomic_outputs, dump_json
from papersim.data.ingest import IngestConfig
from papersim.data.manifest import DigestCache, source_manifest
from papersim.stage import Stage, run_stage

PATHS = {"manifest": "output: every file each source reads, with its MD5",
         "hash-cache": "MD5s by file stat, a side store (deleting it costs one re-read of the sources)"}


def execute(stage: Stage) -> str:
    args, cfg = stage.args, stage.cfg
    cache = DigestCache.read(args.hash_cache)
    manifest = source_manifest(cfg.sources, cache.digest)
    with atomic_outputs(args.manifest, args.hash_cache) as (out, cache_out):
        dump_json(manifest, out)
        dump_json(cache.to_dict(), cache_out)
    files = sum(len(source["files"]) for source in manifest["sources"])
    return (f"sources: {files} file(s) of {len(cfg.sources)} source(s) -> {args.manifest} "
            f"({cache.hashed} hashed, {cache.reused} unchanged since hashed)")


def main(argv: list[str] | None = None) -> int:
    return run_stage("sources", IngestConfig, __doc__, PATHS, execute, argv, section="ingest")


if __name__ == "__main__":
    sys.exit(main())
