"""The software environment a run ran in, as plain data, and the difference between two.

``capture_env`` must be deterministic: the same interpreter, packages, files and variables
give an equal dict (it is hashed into an ``Env`` object shared by every run that had it), so
nothing here may depend on time, process ids or listing order. It is also cheap (tens of
milliseconds): distributions are found by reading their metadata headers directly rather
than through ``importlib.metadata``, and torch is never imported.
"""

from __future__ import annotations

import fnmatch
import json
import os
import platform
import re
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .git import strip_credentials

DEFAULT_VARIABLES = (
    "PYTHONHASHSEED",
    "CUDA_VISIBLE_DEVICES",
    "CUBLAS_WORKSPACE_CONFIG",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "TF_DETERMINISTIC_OPS",
    "TF_CUDNN_DETERMINISTIC",
    "PYTORCH_CUDA_ALLOC_CONF",
    "LANG",
    "LC_ALL",
    "TZ",
)
REQUIREMENT_FILES = (
    "pyproject.toml",
    "setup.cfg",
    "environment.yml",
    "environment.yaml",
    "Pipfile",
    "Pipfile.lock",
    "poetry.lock",
    "uv.lock",
    "conda-lock.yml",
    "python_env.yaml",  # MLflow project environments
    "conda.yaml",
)
MAX_REQUIREMENT_BYTES = 1 << 20
NVIDIA_SMI_TIMEOUT = 5.0

_GLOB = re.compile(r"[*?[]")
_URL_USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)[^/@\s]*@")
_SECRET_WORDS = ("TOKEN", "SECRET", "PASSWORD", "PASSWD", "PASSPHRASE", "CREDENTIAL", "AUTH")
_SECRET_PARTS = ("PWD", "PRIVATE", "CREDS", "COOKIE")


def capture_env(
    root: Path,
    variables: Iterable[str] | None = None,
    files: Iterable[str] = (),
    environ: Mapping[str, str] | None = None,
    cache: Path | None = None,
    tmp: Path | None = None,
) -> dict:
    """The environment of this process, for a project at root, as a nested plain dict.

    Keys: ``python``, ``platform``, ``packages`` (normalized name -> version),
    ``package_sources`` (editable, VCS and local installs), ``installers`` (name -> the
    tool that installed it), ``requirements`` (root-level
    requirement and lock files, path -> text), ``requirements_skipped`` (path -> why),
    ``variables``, ``hardware`` and ``mlvc`` (its version).

    ``variables`` adds names or glob patterns (``"MYAPP_*"``) to DEFAULT_VARIABLES; unset
    ones are left out. A variable whose name looks secret is never captured, even when asked
    for: one containing TOKEN, SECRET, PASSWORD, PASSWD, PASSPHRASE, CREDENTIAL or AUTH
    anywhere (so also GIT_AUTHOR_NAME), or with an ``_``-separated part that starts or ends
    with KEY (API_KEY, AWS_SECRET_ACCESS_KEY, APIKEY, KEYFILE) or is PWD, PRIVATE, CREDS or
    COOKIE. Credentials inside URL values (``user:pass@``) are stripped too.

    ``files`` names more requirement files (project-relative, e.g. from ``[environment]``)
    to capture besides the root-level ones; ``environ`` is the environment the run's process
    gets (default: this process's).

    ``cache`` is a file where what was read of each distribution is kept with the stat data
    of what it was read from (``DistCache``; ``tmp`` is where its temp file is written,
    default its folder): the result is the same as without it.
    """
    from .._version import __version__

    packages, sources, installers, site_of = _distributions(
        DistCache(cache, tmp) if cache is not None else None
    )
    requirements, skipped = _requirements(Path(root), files)
    return {
        "python": _python(),
        "platform": _platform(),
        "packages": packages,
        "package_sources": sources,
        "installers": installers,
        "requirements": requirements,
        "requirements_skipped": skipped,
        "variables": _variables(variables, os.environ if environ is None else environ),
        "hardware": _hardware(site_of.get("torch")),
        "mlvc": __version__,
    }


def _python() -> dict:
    return {
        "version": platform.python_version(),
        "implementation": platform.python_implementation(),
        "executable": sys.executable,
        "prefix": sys.prefix,
        "base_prefix": sys.base_prefix,
        "is_venv": sys.prefix != sys.base_prefix,
    }


def _platform() -> dict:
    libc, libc_version = platform.libc_ver()
    facts = {
        "system": platform.system(),
        "release": platform.release(),
        "machine": platform.machine(),
        "libc": f"{libc} {libc_version}".strip(),
        "os_id": "",
        "os_name": "",
        "os_version": "",
    }
    try:
        release = platform.freedesktop_os_release()
    except (OSError, AttributeError):
        return facts
    facts["os_id"] = release.get("ID", "")
    facts["os_name"] = release.get("NAME", "")
    facts["os_version"] = release.get("VERSION_ID", "")
    return facts


# -- packages --------------------------------------------------------------------------------


def normalize_name(name: str) -> str:
    """PEP 503: lowercase, runs of ``-_.`` become one ``-``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _distributions(cache: DistCache | None = None) -> tuple[dict, dict, dict, dict]:
    """Every installed distribution on sys.path, first one wins as for imports.

    Returns (name -> version, name -> install source, name -> installer, name -> folder
    it was found in). The installer is what the INSTALLER file says (pip, uv, conda...),
    "" when there is none (eggs, hand-copied folders). With a ``cache``, folders and
    distributions whose stat data did not change since it was written are not read again.
    """
    packages: dict[str, str] = {}
    sources: dict[str, dict] = {}
    installers: dict[str, str] = {}
    site_of: dict[str, str] = {}
    if cache is not None:
        cache.load()
    try:
        _scan(cache, packages, sources, installers, site_of)
    except BaseException:
        if cache is not None:
            cache.discard()
        raise
    if cache is not None:
        cache.save()
    return (
        dict(sorted(packages.items())),
        dict(sorted(sources.items())),
        dict(sorted(installers.items())),
        site_of,
    )


def _scan(cache: DistCache | None, packages, sources, installers, site_of) -> None:
    for entry in sys.path:
        folder = entry or "."
        listing = _metadata_dirs(folder) if cache is None else cache.listing(folder)
        for meta_dir, header in listing:
            if cache is None:
                name, version, installer, source = _read_dist(meta_dir, header, packages)
            else:
                name, version, installer, source = cache.dist(meta_dir, header, packages)
            if not name:
                continue
            packages[name] = version
            site_of[name] = folder
            installers[name] = installer
            if source:
                sources[name] = source


def _metadata_dirs(folder: str) -> list[tuple[str, str]]:
    """(metadata folder, metadata header file) of the distributions in one sys.path folder."""
    try:
        with os.scandir(folder) as it:
            names = sorted(e.name for e in it)
    except OSError:
        return []  # missing, or a zip: zipped distributions are not captured
    found = []
    for name in names:
        path = os.path.join(folder, name)
        if name.endswith(".dist-info"):
            found.append((path, os.path.join(path, "METADATA")))
        elif name.endswith(".egg-info"):
            header = os.path.join(path, "PKG-INFO") if os.path.isdir(path) else path
            found.append((path, header))
    return found


def _read_dist(meta_dir: str, header: str, seen: Mapping | None = None) -> tuple:
    """(normalized name, version, installer, install source or None) of one distribution;
    the name is "" when there is none or it is in ``seen`` (an earlier folder won)."""
    name, version = _name_version(header)
    if not name or normalize_name(name) in (seen or {}):
        return "", "", "", None
    installer = _installer(meta_dir)
    return normalize_name(name), version, installer, _source(meta_dir, installer)


class DistCache:
    """What ``_distributions`` read, kept in a file between captures and trusted only where
    the stat data of everything it was read from is unchanged.

    The file (JSON, replaced by temp file + rename; a cache, so not fsynced) holds the
    filesystem clock of its writing and, per sys.path folder, the folder's stat data with
    its list of metadata folders, and per distribution the stat data of the files read
    (metadata header, INSTALLER, direct_url.json; absent ones as null) with what was read:
    (name, version, installer, source). Stat data is (size, mtime_ns, inode, ctime_ns).
    Racy entries (git's "racy clean"): one whose mtime or ctime is not older than the clock
    of the cache it came from could have changed again within the same tick, so it is read
    again. A file that is unreadable or not well formed is ignored whole."""

    VERSION = 1

    def __init__(self, path: Path, tmp: Path | None = None):
        self.path = Path(path)
        self.tmp = Path(tmp) if tmp is not None else self.path.parent
        self.clock = 0  # the loaded cache's clock: entries at or after it are not trusted
        self.folders: dict[str, list] = {}
        self.dists: dict[str, list] = {}
        self.new_folders: dict[str, list] = {}
        self.new_dists: dict[str, list] = {}
        self.changed = False
        self.fd: int | None = None  # the temp file, made before the first read (its clock)
        self.tmp_name: Path | None = None
        self.new_clock = 0

    def load(self) -> None:
        try:
            with open(self.path, "rb") as f:
                doc = json.loads(f.read())
            if not isinstance(doc, dict) or doc.get("version") != self.VERSION:
                raise ValueError("another version")
            clock, folders, dists = doc["clock"], doc["folders"], doc["dists"]
            if not isinstance(clock, int) or not isinstance(folders, dict):
                raise ValueError("not well formed")
            if not isinstance(dists, dict):
                raise ValueError("not well formed")
        except (OSError, ValueError, KeyError, TypeError, RecursionError):
            self.changed = True
            return
        self.clock, self.folders, self.dists = clock, folders, dists

    def _stat(self, path: str) -> list | None:
        try:
            st = os.stat(path)
        except OSError:
            return None
        return [st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns]

    def _trusted(self, old: Any, now: list) -> bool:
        """Whether stat data ``now`` (each a list or None) matches the cached ``old`` and
        was not racy when it was cached."""
        if old != now:
            return False
        clock = self.clock
        return all(s is None or (s[1] < clock and s[3] < clock) for s in now)

    def _reading(self) -> None:
        """Before the first read: the temp file whose mtime is the new cache's clock."""
        if self.new_clock:
            return
        self.changed = True
        try:
            self.tmp.mkdir(parents=True, exist_ok=True)
            name = self.tmp / f"dists.{os.getpid()}.{os.urandom(6).hex()}.tmp"
            self.fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            self.tmp_name = name
            self.new_clock = os.fstat(self.fd).st_mtime_ns
        except OSError:
            self.fd = None
            self.new_clock = -1  # nothing can be saved

    def listing(self, folder: str) -> list[tuple[str, str]]:
        key = os.path.abspath(folder)
        now = [self._stat(folder)]
        old = self.folders.get(key)
        if isinstance(old, list) and len(old) == 2 and self._trusted(old[0], now):
            listing = old[1]
            if isinstance(listing, list) and all(
                isinstance(x, list) and len(x) == 2 and all(isinstance(y, str) for y in x)
                for x in listing
            ):
                self.new_folders[key] = old
                return [(a, b) for a, b in listing]
        self._reading()
        found = _metadata_dirs(folder)
        self.new_folders[key] = [now, [list(x) for x in found]]
        return found

    def dist(self, meta_dir: str, header: str, seen: Mapping) -> tuple:
        key = os.path.abspath(meta_dir)
        paths = (header, os.path.join(meta_dir, "INSTALLER"))
        paths += (os.path.join(meta_dir, "direct_url.json"),)
        now = [self._stat(p) for p in paths]
        old = self.dists.get(key)
        fits = isinstance(old, list) and len(old) == 3 and old[0] == header
        if fits and self._trusted(old[1], now) and _well_formed(old[2]):
            self.new_dists[key] = old
            name, version, installer, source = old[2]
            if not name or name in seen:
                return "", "", "", None
            return name, version, installer, source
        self._reading()
        # read whatever the name says (seen or not): the entry holds for the next capture
        read = _read_dist(meta_dir, header)
        self.new_dists[key] = [header, now, list(read)]
        if not read[0] or read[0] in seen:
            return "", "", "", None
        return read

    def save(self) -> None:
        """Write the cache if anything was read (temp file + rename); never raises."""
        if not self.changed and self.new_folders.keys() == self.folders.keys():
            return
        self._reading()
        if self.fd is None:
            return
        doc = {
            "version": self.VERSION,
            "clock": self.new_clock,
            "folders": self.new_folders,
            "dists": self.new_dists,
        }
        try:
            with os.fdopen(self.fd, "wb") as f:
                self.fd = None
                f.write(json.dumps(doc, sort_keys=True).encode())
            self.path.parent.mkdir(parents=True, exist_ok=True)
            os.replace(self.tmp_name, self.path)
        except OSError:
            self.discard()

    def discard(self) -> None:
        """Remove the temp file, if one was made (a failed scan saves nothing)."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        if self.tmp_name is not None:
            try:
                os.unlink(self.tmp_name)
            except OSError:
                pass


def _well_formed(read: Any) -> bool:
    if not isinstance(read, list) or len(read) != 4:
        return False
    name, version, installer, source = read
    strings = all(isinstance(x, str) for x in (name, version, installer))
    return strings and (source is None or isinstance(source, dict))


def _name_version(header: str) -> tuple[str, str]:
    """Name and Version from a METADATA/PKG-INFO file, reading only its header."""
    name = version = ""
    try:
        with open(header, encoding="utf-8", errors="replace") as f:
            for line in f:
                if not line.strip():
                    break
                if line.startswith("Name:"):
                    name = line[5:].strip()
                elif line.startswith("Version:"):
                    version = line[8:].strip()
                if name and version:
                    break
    except OSError:
        pass
    return name, version


def _installer(meta_dir: str) -> str:
    try:
        with open(os.path.join(meta_dir, "INSTALLER"), encoding="utf-8") as f:
            return f.read().strip()
    except OSError:
        return ""


def _source(meta_dir: str, installer: str) -> dict | None:
    """Where an editable, VCS or local install came from (PEP 610 direct_url.json)."""
    try:
        with open(os.path.join(meta_dir, "direct_url.json"), encoding="utf-8") as f:
            direct = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(direct, dict):
        return None
    vcs = direct.get("vcs_info") if isinstance(direct.get("vcs_info"), dict) else {}
    dir_info = direct.get("dir_info") if isinstance(direct.get("dir_info"), dict) else {}
    return {
        "installer": installer,
        "url": strip_credentials(str(direct.get("url", ""))),
        "editable": bool(dir_info.get("editable", False)),
        "vcs": str(vcs.get("vcs", "")),
        "commit": str(vcs.get("commit_id", "")),
    }


# -- files and variables ---------------------------------------------------------------------


def _requirements(root: Path, files: Iterable[str] = ()) -> tuple[dict[str, str], dict[str, str]]:
    contents: dict[str, str] = {}
    skipped: dict[str, str] = {}
    try:
        with os.scandir(root) as it:
            names = [e.name for e in it if e.is_file()]
    except OSError:
        return contents, skipped
    names = [
        n for n in names if n in REQUIREMENT_FILES or fnmatch.fnmatchcase(n, "requirements*.txt")
    ]
    for name in sorted({*names, *(os.path.normpath(f) for f in files)}):
        if name.startswith(("..", "/")):
            skipped[name] = "outside the project"
            continue
        if not os.path.isfile(root / name):
            skipped[name] = "missing"
            continue
        try:
            with open(root / name, "rb") as f:
                data = f.read(MAX_REQUIREMENT_BYTES + 1)
        except OSError as e:
            skipped[name] = f"unreadable: {e.strerror}"
            continue
        if len(data) > MAX_REQUIREMENT_BYTES:
            size = os.path.getsize(root / name)
            skipped[name] = f"{size} bytes is over the {MAX_REQUIREMENT_BYTES} byte limit"
            continue
        contents[name] = data.decode("utf-8", "replace")
    return contents, skipped


def is_captured_variable(name: str, extra: Iterable[str] | None = None) -> bool:
    """Whether variable ``name`` is one capture_env records (secret or not)."""
    for w in (*DEFAULT_VARIABLES, *(extra or ())):
        if name == w or (_GLOB.search(w) and fnmatch.fnmatchcase(name, w)):
            return True
    return False


def is_secret_name(name: str) -> bool:
    """Whether an environment variable's name suggests it holds a secret (see capture_env)."""
    upper = name.upper()
    if any(word in upper for word in _SECRET_WORDS):
        return True
    parts = re.split(r"[^A-Z0-9]+", upper)
    return any(p.startswith("KEY") or p.endswith("KEY") or p in _SECRET_PARTS for p in parts)


def _variables(extra: Iterable[str] | None, environ: Mapping[str, str]) -> dict[str, str]:
    chosen = {}
    for name, value in environ.items():
        if not is_captured_variable(name, extra):
            continue
        if not is_secret_name(name):
            chosen[name] = _URL_USERINFO.sub(r"\1", value)
    return dict(sorted(chosen.items()))


# -- hardware --------------------------------------------------------------------------------


def _hardware(torch_site: str | None) -> dict:
    return {
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count() or 0,
        "gpu": _gpus(),
        "cuda": _torch_cuda(torch_site),
    }


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor()


def _gpus() -> list[dict]:
    """NVIDIA GPUs as nvidia-smi reports them; [] without the tool or when it fails."""
    import shutil

    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    query = "--query-gpu=name,driver_version,memory.total"
    try:
        done = subprocess.run(
            [smi, query, "--format=csv,noheader"],
            capture_output=True,
            stdin=subprocess.DEVNULL,
            timeout=NVIDIA_SMI_TIMEOUT,
            text=True,
        )
    except (OSError, subprocess.SubprocessError):
        return []
    if done.returncode != 0:
        return []
    gpus = []
    for line in done.stdout.splitlines():
        fields = [f.strip() for f in line.split(",")]
        if len(fields) == 3:
            gpus.append({"name": fields[0], "driver": fields[1], "memory": fields[2]})
    return gpus


_TORCH_CUDA = re.compile(r"^cuda\s*(?::[^=]*)?=\s*['\"]([^'\"]*)['\"]", re.M)


def _torch_cuda(torch_site: str | None) -> str | None:
    """The CUDA version torch was built for, without importing torch (seconds to import).

    Read from torch/version.py where the torch distribution is installed, so the answer does
    not depend on whether the run has imported torch yet; an imported torch is the fallback.
    """
    if torch_site is not None:
        try:
            with open(os.path.join(torch_site, "torch", "version.py"), encoding="utf-8") as f:
                found = _TORCH_CUDA.search(f.read())
            if found:
                return found.group(1) or None
        except OSError:
            pass
    torch = sys.modules.get("torch")
    cuda = getattr(getattr(torch, "version", None), "cuda", None)
    return cuda if isinstance(cuda, str) else None


# -- differences -----------------------------------------------------------------------------


def env_diff(a: Mapping, b: Mapping) -> dict:
    """What changed from environment a to environment b, section by section.

    ``python`` is None or ``{"old", "new"}`` (the whole python sections); ``packages`` has
    ``added``/``removed`` (name -> version), ``upgraded``/``downgraded`` (name -> [old, new]),
    ``sources`` (name -> [old, new] install source) and ``installers`` (name -> [old, new]
    installer, for packages on both sides); ``requirements`` lists changed
    paths; every other section maps a changed key to [old, new]. Nothing changed: every
    value is empty or None.
    """
    pa, pb = a.get("python"), b.get("python")
    ma, mb = a.get("mlvc"), b.get("mlvc")
    ra, rb = dict(a.get("requirements", {})), dict(b.get("requirements", {}))
    ra.update({k: f"skipped: {v}" for k, v in a.get("requirements_skipped", {}).items()})
    rb.update({k: f"skipped: {v}" for k, v in b.get("requirements_skipped", {}).items()})
    return {
        "python": None if pa == pb else {"old": pa, "new": pb},
        "platform": _changed(a.get("platform", {}), b.get("platform", {})),
        "packages": _package_diff(a, b),
        "variables": _changed(a.get("variables", {}), b.get("variables", {})),
        "requirements": sorted(_changed(ra, rb)),
        "hardware": _changed(a.get("hardware", {}), b.get("hardware", {})),
        "mlvc": None if ma == mb else {"old": ma, "new": mb},
    }


def _changed(a: Mapping, b: Mapping) -> dict[str, list]:
    """key -> [old, new] for every key whose value differs (None where absent)."""
    return {k: [a.get(k), b.get(k)] for k in sorted({*a, *b}) if a.get(k) != b.get(k)}


def _package_diff(a: Mapping, b: Mapping) -> dict:
    old, new = a.get("packages", {}), b.get("packages", {})
    out: dict[str, dict] = {"added": {}, "removed": {}, "upgraded": {}, "downgraded": {}}
    for name in sorted({*old, *new}):
        if name not in old:
            out["added"][name] = new[name]
        elif name not in new:
            out["removed"][name] = old[name]
        elif old[name] != new[name]:
            way = "upgraded" if is_newer(new[name], old[name]) else "downgraded"
            out[way][name] = [old[name], new[name]]
    out["sources"] = _changed(a.get("package_sources", {}), b.get("package_sources", {}))
    installers = _changed(a.get("installers", {}), b.get("installers", {}))
    out["installers"] = {k: v for k, v in installers.items() if k in old and k in new}
    return out


def is_newer(new: str, old: str) -> bool:
    """Whether version ``new`` sorts after ``old``: PEP 440 order when ``packaging`` is
    importable and parses both, else their numbers; text order breaks ties ("1.0" vs "1.0.0")
    so two different strings are never equal."""
    try:
        from packaging.version import InvalidVersion, Version
    except ImportError:  # pragma: no cover - packaging ships with nearly every Python
        pass
    else:
        try:
            vnew, vold = Version(new), Version(old)
        except InvalidVersion:
            pass
        else:
            if vnew != vold:
                return vnew > vold
    nnew, nold = _numbers(new), _numbers(old)
    return nnew > nold if nnew != nold else new > old


def _numbers(version: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", version))
