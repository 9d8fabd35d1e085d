"""ledger.layout is the one place that names files on disk and objects in a store.

* every row of SPEC.md section 8's key table is produced by layout's key builders,
  and the names section 7 gives the hot tier's files are layout's constants;
* the cold tier's historical imports (``ledger.cold.manifest``) are layout's objects;
* no other module of the library spells one of those names itself (a few files being
  restructured in parallel are listed as known exceptions, to be switched over).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from ledger import layout
from ledger.cold import manifest

ROOT = Path(__file__).resolve().parent.parent
SPEC = (ROOT / "SPEC.md").read_text()
NS = "host.example"
SESSION = "20260102T030405.123456Z-ab12"
CAPTURE = "20260102T030405Z-0001"
SIZE = 42


def _section(number: str) -> str:
    start = SPEC.index(f"\n## {number}. ")
    end = SPEC.index("\n## ", start + 1)
    return SPEC[start:end]


def _spec_keys() -> dict[str, str]:
    """object -> key pattern, from the table of SPEC.md section 8."""
    rows = {}
    for line in _section("8").splitlines():
        m = re.match(r"^\| ([^|]+?) \| (`.*`) \|$", line)
        if m and m.group(1) != "object":
            rows[m.group(1)] = m.group(2)
    return rows


def _fill(pattern: str) -> list[str]:
    """The concrete keys a pattern cell names (a cell can hold `a` and `b`)."""
    day = "2026/01/02"
    out = []
    for p in re.findall(r"`([^`]+)`", pattern):
        p = p.replace("<namespace>", NS).replace("YYYY/MM/DD", day)
        p = p.replace("<session>", SESSION).replace("<capture_id>", CAPTURE).replace("<size>", str(SIZE))
        out.append(p)
    # "`... .pcap` and `.pcap.sha256`": the second is a suffix of the first's stem
    if len(out) == 2 and out[1].startswith("."):
        out[1] = out[0].rsplit(".pcap", 1)[0] + out[1]
    return out


def test_spec_table_is_read():
    assert set(_spec_keys()) == {
        "session, gzip",
        "its manifest",
        "sha256 sidecar",
        "RFC 3161 token",
        "capture",
        "checkpoint",
        "namespace owner",
    }


@pytest.mark.parametrize("obj", sorted(_spec_keys()))
def test_every_spec_key_comes_from_layout(obj):
    keys = layout.session_keys(NS, SESSION)
    built = {
        "session, gzip": [keys.gz],
        "its manifest": [keys.manifest],
        "sha256 sidecar": [keys.sha256],
        "RFC 3161 token": [keys.tsr],
        "capture": list(layout.capture_keys(NS, CAPTURE)),
        "checkpoint": [layout.checkpoint_key(NS, SESSION, SIZE)],
        "namespace owner": [layout.owner_key(NS)],
    }[obj]
    assert built == _fill(_spec_keys()[obj])


def test_session_keys_cover_every_object_of_a_session():
    keys = layout.session_keys(NS, SESSION)
    assert keys.all() == [keys.gz, keys.sha256, keys.tsr, keys.manifest]  # SPEC 8.2's upload order


def test_manifest_reexports_layouts_key_builders():
    for name in ("SessionKeys", "session_keys", "capture_keys", "checkpoint_key", "owner_key"):
        assert getattr(manifest, name) is getattr(layout, name), name


def test_hot_tier_names_in_spec():
    s7, s8 = _section("7"), _section("8")
    assert f"<root>/<namespace>/{layout.LOCK_FILE}" in s7
    assert f"<root>/<namespace>/{layout.LAST_SEAL_FILE}" in s7
    assert f"<root>/<namespace>/{layout.DROPS_FILE}" in s7
    assert f"<session>{layout.SESSION_SUFFIX}{layout.QUARANTINE_SUFFIX}" in s7
    assert f"<namespace>/{layout.SEALS_DIR}/" in s8
    assert f"<root>/{layout.ID_FILE}" in s8
    assert f"<namespace dir>/{layout.CAPTURES_DIR}/<capture_id>{layout.PCAP_SUFFIX}" in _section("8")


def test_hot_tier_paths():
    ns_dir = layout.namespace_dir("/r", NS)
    assert ns_dir == Path("/r") / NS
    assert layout.session_path(ns_dir, SESSION) == ns_dir / f"{SESSION}.ndjson"
    assert layout.lock_path(ns_dir).name == ".lock"
    assert layout.last_seal_path(ns_dir).name == ".last-seal.json"
    assert layout.drops_path(ns_dir).name == ".drops"
    assert layout.seal_record_path(ns_dir, SESSION) == ns_dir / ".seals" / f"{SESSION}.json"
    assert layout.views_dir(ns_dir) == ns_dir / ".views"
    assert layout.outbox_gz_path(ns_dir, SESSION) == ns_dir / ".outbox" / f"{SESSION}.ndjson.gz"
    assert layout.captures_dir("/r", NS) == ns_dir / "captures"
    assert layout.capture_path(ns_dir, CAPTURE) == ns_dir / "captures" / f"{CAPTURE}.pcap"
    assert layout.id_path("/r") == Path("/r/.ledger-id")
    s = layout.session_path(ns_dir, SESSION)
    assert layout.quarantine_path(s).name == f"{SESSION}.ndjson.quarantined"
    assert layout.restore_tmp_path(s).name == f"{SESSION}.ndjson.restore.tmp"


def test_session_files_ignore_dot_files_and_other_names(tmp_path):
    for name in ("b.ndjson", "a.ndjson", ".tmp.ndjson", "a.ndjson.quarantined", ".lock", "x.ndjson.gz"):
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in layout.session_files(tmp_path)] == ["a.ndjson", "b.ndjson"]


# ---- nothing else spells these names -------------------------------------------------

# String constants that are one of layout's names (or a key's fixed part).
_NAMES = re.compile(
    r"^\.(lock|last-seal\.json|drops|seals|views|outbox|ledger-id|quarantined|restore\.tmp)$"
    r"|\.ndjson|^\.pcap|owner\.json|/sessions/|/captures/|/checkpoints/|^\.checkpoint$"
)
# Names too common to match everywhere: only when joined onto a path (``x / "captures"``).
_PATH_PARTS = re.compile(r"^(captures|sessions|checkpoints)$")
# Modules restructured in parallel with layout.py (issue 13): they still build some
# paths themselves and adopt layout after the merge. Remove an entry when it is done.
_NOT_YET: set[str] = set()
# Text for people (docstrings, help, messages) may name files; only code is checked.
_DOC_ONLY = {"layout.py"}


def _code_strings(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), str(path))
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
    # Log and exception messages are prose: skip constants inside calls to these.
    prose = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
            if name in {"debug", "info", "warning", "error", "exception", "append"} or name.endswith("Error"):
                for sub in ast.walk(node):
                    prose.add(id(sub))
        if isinstance(node, ast.Raise) and node.exc is not None:
            for sub in ast.walk(node.exc):
                prose.add(id(sub))
    joined = {id(n.right) for n in ast.walk(tree) if isinstance(n, ast.BinOp) and isinstance(n.op, ast.Div)}
    out = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Constant) or not isinstance(node.value, str) or id(node) in docstrings | prose:
            continue
        if _NAMES.search(node.value) or (id(node) in joined and _PATH_PARTS.match(node.value)):
            out.append((node.lineno, node.value))
    return out


def _owned_modules() -> list[Path]:
    lib = ROOT / "ledger"
    out = []
    for path in sorted(lib.rglob("*.py")):
        rel = path.relative_to(lib).as_posix()
        top = rel.split("/")[0] if rel.count("/") == 0 else "/".join(rel.split("/")[:2])
        if rel in _DOC_ONLY or rel in _NOT_YET or top in _NOT_YET or rel.split("/")[0] in _NOT_YET:
            continue
        out.append(path)
    return out


def test_no_module_spells_a_layout_name_itself():
    found = []
    for path in _owned_modules():
        for lineno, text in _code_strings(path):
            found.append(f"{path.relative_to(ROOT)}:{lineno}: {text!r}")
    assert not found, "use ledger.layout instead:\n" + "\n".join(found)
