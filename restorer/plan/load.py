"""Load a plan file; turn every way it can be wrong into messages naming file, line and key."""

from __future__ import annotations

import difflib
import hashlib
import os
import posixpath
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from restorer.errors import PlanError
from restorer.plan import models, yamlsafe
from restorer.plan.problems import Problem, inside, overlaps, same_database
from restorer.plan.secrets import SecretRef, resolve_secret


class PlanProblems(PlanError):
    """All the problems found in one plan file."""

    def __init__(self, problems: list[Problem], plan: LoadedPlan | None = None) -> None:
        self.problems = problems
        self.plan = plan  # when the shape was valid: the plan, for checks that need it
        super().__init__("\n".join(str(p) for p in problems))


def plan_path(base_dir: Path, p: str) -> Path:
    """A plan path made absolute: `~` expanded, relative to the plan's folder."""
    q = Path(os.path.expanduser(p))
    return q if q.is_absolute() else (base_dir / q)


@dataclass
class LoadedPlan:
    """A validated plan with where it came from; relative paths resolve against `base_dir`."""

    plan: models.Plan
    path: Path
    digest: str
    lines: dict[str, int] = field(default_factory=dict)

    @property
    def base_dir(self) -> Path:
        return self.path.parent

    @property
    def name(self) -> str:
        return self.plan.name

    def resolve_path(self, p: str) -> Path:
        return plan_path(self.base_dir, p)

    def secret(self, ref: SecretRef | str | None, where: str) -> str | None:
        """The resolved value of a secret field (PlanError if it cannot be resolved)."""
        if ref is None:
            return None
        return resolve_secret(str(ref), self.base_dir, f"{self.path}: {where}")

    def targets(self, names: tuple[str, ...] | list[str] = ()) -> list[Any]:
        """The plan's targets, or the named ones (PlanError for an unknown name)."""
        if not names:
            return list(self.plan.targets)
        known = {t.name: t for t in self.plan.targets}
        out = []
        for n in names:
            if n not in known:
                close = difflib.get_close_matches(n, known, n=1)
                raise PlanError(
                    f"{self.path}: no target named '{n}' (targets: {', '.join(known)})",
                    hint=f"did you mean '{close[0]}'?" if close else None,
                )
            out.append(known[n])
        return out


# --- YAML with line numbers ---------------------------------------------------------------


def _line_map(node: yaml.Node, prefix: str, out: dict[str, int]) -> None:
    """Record the line of every key path ('targets[0].paths') in the YAML node tree."""
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            key = f"{prefix}.{k.value}" if prefix else str(k.value)
            out[key] = k.start_mark.line + 1
            _line_map(v, key, out)
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            key = f"{prefix}[{i}]"
            out[key] = v.start_mark.line + 1
            _line_map(v, key, out)


def _loc_to_key(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            # pydantic puts union/discriminator tags in the location; they are not keys
            is_tag = part in models.TARGET_KINDS or part in models.CHECK_KINDS or "[" in str(part)
            if is_tag and out.endswith("]"):
                continue
            out += f".{part}" if out else str(part)
    return out


def _model_at(loc: tuple[Any, ...], data: Any) -> type[BaseModel] | None:
    """The model class whose fields the location's last key belongs to (for suggestions)."""
    model: Any = models.Plan
    node = data
    for part in loc[:-1]:
        if isinstance(part, int):
            node = node[part] if isinstance(node, list) and part < len(node) else None
            continue
        if model is None:
            return None
        if part in models.TARGET_KINDS and model is None:
            continue
        fields = getattr(model, "model_fields", {})
        if part in fields:
            ann = fields[part].annotation
            node = node.get(part) if isinstance(node, dict) else None
            model = _inner_model(ann, node)
        elif part in models.TARGET_KINDS or part in models.CHECK_KINDS:
            continue
        else:
            return None
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _inner_model(ann: Any, node: Any) -> Any:
    import typing

    args = typing.get_args(ann)
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann
    if typing.get_origin(ann) is list and args:
        return _inner_model(args[0], None)
    if typing.get_origin(ann) is typing.Annotated:
        return _inner_model(args[0], node)
    for a in args:
        m = _inner_model(a, node)
        if m is not None:
            if isinstance(node, dict) and "kind" in node:
                f = getattr(m, "model_fields", {}).get("kind")
                if f is not None and node["kind"] not in typing.get_args(f.annotation):
                    continue
            return m
    return None


def _problems_from_validation(
    exc: ValidationError, file: str, data: Any, lines: dict[str, int]
) -> list[Problem]:
    problems: list[Problem] = []
    seen: set[tuple[str, str]] = set()
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        # keep only the branch of a union that matches the declared kind
        loc = tuple(p for p in loc if not (isinstance(p, str) and (
            "function-" in p or p in ("ledger-url", "ledger-config"))))
        key = _loc_to_key(loc)
        msg = err["msg"]
        hint = None
        etype = err["type"]
        if etype == "extra_forbidden":
            model = _model_at(loc, data)
            bad = str(loc[-1])
            fields = list(getattr(model, "model_fields", {})) if model else []
            close = difflib.get_close_matches(bad, fields, n=1)
            msg = f"unknown key '{bad}'"
            if close:
                hint = f"did you mean '{close[0]}'?"
            elif fields:
                hint = f"allowed keys here: {', '.join(fields)}"
        elif etype == "union_tag_invalid" or etype == "union_tag_not_found":
            if "kind" in msg or (loc and loc[-1] != "checks" and "targets" in key):
                msg = f"'kind' must be one of: {', '.join(models.TARGET_KINDS)}"
                if isinstance(err.get("input"), dict) and "kind" in err["input"]:
                    msg += f" (got '{err['input']['kind']}')"
                    key = f"{key}.kind"
        elif etype == "missing":
            msg = "this key is required"
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        elif etype == "string_pattern_mismatch" and key.endswith("name"):
            msg = "names use letters, digits, '.', '_' or '-' (at most 64, starting alphanumeric)"
        if (key, msg) in seen:
            continue
        seen.add((key, msg))
        line = lines.get(key)
        probe = key
        while line is None and probe:
            probe = probe.rsplit(".", 1)[0] if "." in probe else probe.rsplit("[", 1)[0]
            line = lines.get(probe)
            if "." not in probe and "[" not in probe:
                line = lines.get(probe)
                break
        problems.append(Problem(file, key, msg, line, hint))
    return problems


PlanCheck = Callable[["LoadedPlan", str], "list[Problem]"]


def load_plan(path: str | os.PathLike[str], checks: Sequence[PlanCheck] = ()) -> LoadedPlan:
    """Read and validate one plan file; PlanProblems lists everything wrong with it.
    `checks` are layers above this one asking more of the plan (the targets layer: what each
    kind can do), passed in so that plan/ never imports upward."""
    p = Path(path)
    shown = str(path)
    try:
        with open(p, "rb") as f:
            raw = f.read(yamlsafe.MAX_BYTES + 1)  # never more: the limit guards memory too
    except OSError as e:
        raise PlanError(
            f"{shown}: cannot read the plan: {e.strerror}",
            hint="check the path; plans are YAML files such as plans/quickstart.yaml",
        ) from None
    try:
        text = raw.decode("utf-8")
        node = yamlsafe.compose(text)
        data = yamlsafe.construct(node)
    except UnicodeDecodeError:
        raise PlanError(f"{shown}: the plan is not UTF-8 text") from None
    except yamlsafe.PlanShapeError as e:
        line = f":{e.line}" if e.line else ""
        raise PlanProblems([Problem(f"{shown}{line}", "", str(e),
                                    hint="write the plan out plainly (no deep nesting, no "
                                    "alias chains), each key once")]) from None
    except RecursionError:
        raise PlanProblems([Problem(shown, "", "the plan is nested too deeply to read",
                                    hint="write the plan out plainly")]) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e)
        raise PlanProblems(
            [Problem(f"{shown}{line}", "", f"invalid YAML: {problem}",
                     hint="check indentation and quoting near that line")]
        ) from None
    lines: dict[str, int] = {}
    if node is not None:
        _line_map(node, "", lines)
    if not isinstance(data, dict):
        raise PlanProblems(
            [Problem(shown, "", "a plan is a YAML mapping with keys version, name, repository, "
                     "targets ...", hint="start from plans/quickstart.yaml")]
        )
    try:
        plan = models.Plan.model_validate(data)
    except ValidationError as e:
        raise PlanProblems(_problems_from_validation(e, shown, data, lines)) from None
    loaded = LoadedPlan(plan=plan, path=p.absolute(), digest=hashlib.sha256(raw).hexdigest(),
                        lines=lines)
    problems = _semantic_problems(loaded, shown)
    for check in checks:
        problems += check(loaded, shown)
    if problems:
        raise PlanProblems(problems, loaded)
    return loaded


def validate_plan(path: str | os.PathLike[str], environment: bool = True,
                  checks: Sequence[PlanCheck] = ()) -> list[Problem]:
    """Every problem of a plan in one pass: its shape, what pydantic cannot know, and
    (with `environment`) secrets and paths on this machine."""
    try:
        lp = load_plan(path, checks)
        problems: list[Problem] = []
    except PlanProblems as e:
        if e.plan is None:
            return e.problems
        lp, problems = e.plan, e.problems
    return problems + (environment_problems(lp) if environment else [])


def _semantic_problems(lp: LoadedPlan, shown: str) -> list[Problem]:
    """What pydantic cannot know: names used twice or not at all, staging that is
    production, checks and staging keys that cannot apply to the target's kind."""
    out: list[Problem] = []
    seen: set[str] = set()
    for i, t in enumerate(lp.plan.targets):
        if t.name in seen:
            key = f"targets[{i}].name"
            out.append(Problem(shown, key, f"two targets are named '{t.name}'; target names "
                               "must be unique", lp.lines.get(key), "rename one of them"))
        seen.add(t.name)
    out += _path_problems(lp, shown)
    for j, name in enumerate(lp.plan.rollback.targets):
        if name not in seen:
            key = f"rollback.targets[{j}]"
            out.append(Problem(shown, key, f"rollback.targets names '{name}', which is not a "
                               f"target of this plan (targets: {', '.join(sorted(seen))})",
                               lp.lines.get(key), "fix the name or remove it"))
    for i, t in enumerate(lp.plan.targets):
        for j, c in enumerate(t.checks):
            if isinstance(c, models.SQLCheck) and not t.takes_sql_checks:
                key = f"targets[{i}].checks[{j}].sql"
                out.append(Problem(
                    shown, key, f"a sql check needs a database target; '{t.name}' is "
                    f"kind {t.kind}", lp.lines.get(key),
                    "use a command or files check here, or move the check to a postgres, "
                    "mysql or sqlite target"))
        out += _staging_key_problems(lp, shown, i, t)
        out += _staging_is_source(lp, shown, i, t, None)
        out += _remote_staging_overlaps(lp, shown, i, t)
        out += t.plan_problems(i, lp, shown)
    return out


def _staging_key_problems(lp: LoadedPlan, shown: str, i: int, t: Any) -> list[Problem]:
    """staging keys the target's kind does not use (a files target given an RDS instance
    class would otherwise be silently ignored)."""
    if t.staging is None:
        return []
    out = []
    for name in sorted(t.staging.model_fields_set - set(t.staging_keys)):
        key = f"targets[{i}].staging.{name}"
        users = [k for k, keys in models.STAGING_KEYS.items() if name in keys]
        allowed = ", ".join(sorted(t.staging_keys)) or "nothing"
        out.append(Problem(
            shown, key, f"a {t.kind} target's staging takes {allowed}; {name} is for "
            f"{', '.join(users) or 'no kind'} targets", lp.lines.get(key),
            f"remove staging.{name}"))
    return out


def _path_problems(lp: LoadedPlan, shown: str) -> list[Problem]:
    """Paths that cannot work together: two paths of a target ending in one name (they
    would land on one folder of a restore), a staging folder inside another target's source
    (a restore test would write into production data that the next backup then takes), a
    repository inside a backed-up source (each backup would copy the repository)."""
    from restorer.sources.excludes import Excluder

    out: list[Problem] = []
    sources: list[tuple[str, Path, Excluder]] = []
    for i, t in enumerate(lp.plan.targets):
        names: dict[str, int] = {}
        for j, rp, exclude in t.local_sources(lp):
            sources.append((t.name, rp, Excluder(exclude)))
            if rp.name in names:
                key = f"targets[{i}].paths[{j}]"
                out.append(Problem(shown, key, f"paths[{names[rp.name]}] and paths[{j}] both "
                                   f"end in '{rp.name}'; a restore puts each path at "
                                   "DEST/<last component>, so they would collide",
                                   lp.lines.get(key), "back them up as separate targets"))
            names.setdefault(rp.name, j)
    for i, t in enumerate(lp.plan.targets):
        st = t.staging.path if t.staging else None
        if not st or (t.staging and t.staging.host):
            continue
        sp = lp.resolve_path(st).resolve()
        for name, src, ex in sources:
            if name != t.name and inside(sp, src, ex):
                key = f"targets[{i}].staging.path"
                out.append(Problem(shown, key, f"staging path {sp} is inside {src}, the source "
                                   f"of target {name}; restore tests would write into it",
                                   lp.lines.get(key), "point staging outside every source"))
    url = lp.plan.repository.url
    if "://" not in url or url.startswith("file://"):
        rest = url.split("://", 1)[1] if "://" in url else url
        repo = lp.resolve_path(os.path.expanduser(rest)).resolve()
        for name, src, ex in sources:
            if inside(repo, src, ex):
                out.append(Problem(shown, "repository.url", f"the repository {repo} is inside "
                                   f"{src}, the source of target {name}; every backup would "
                                   "copy the repository into itself", lp.lines.get(
                                       "repository.url"),
                                   "move the repository out, or exclude it (a repository "
                                   "belongs on another disk or host anyway)"))
    return out


def _remote_staging_overlaps(lp: LoadedPlan, shown: str, i: int, t: Any) -> list[Problem]:
    """A staging host that is the source's own machine, with staging.path overlapping the
    source paths there."""
    st = t.staging
    if st is None or st.host is None:
        return []
    staging = posixpath.normpath(st.path or "/tmp")
    out = []
    for src in t.sources_on(st.host, lp):
        if overlaps(staging, src):
            key = f"targets[{i}].staging.path"
            out.append(Problem(
                shown, key, f"staging path {staging} on {st.host.host} overlaps the target's "
                f"source {src} on the same host; a restore test would write into production "
                "data", lp.lines.get(key), "point staging at a scratch directory elsewhere"))
    return out


def _staging_is_source(lp: LoadedPlan, shown: str, i: int, t: Any,
                       resolved: str | None) -> list[Problem]:
    """A staging DSN that reaches the target's own database: verify would drop production.
    `resolved` is the DSN read from a secret reference (checked when the machine can)."""
    production = t.production_dsn()
    if production is None or not t.staging:
        return []
    dsn = resolved if resolved is not None else t.staging.dsn
    if not isinstance(dsn, str) or isinstance(dsn, SecretRef):
        return []
    if not same_database(dsn, production):
        return []
    key = f"targets[{i}].staging.dsn"
    return [Problem(
        shown, key, f"staging.dsn reaches the target's own database ({production}); verify "
        "creates and drops its staging database, so this would destroy production data",
        lp.lines.get(key), "name a scratch database, e.g. the same server with database "
        f"'{t.name}_restore_test'")]


def secret_refs(lp: LoadedPlan) -> list[tuple[str, SecretRef]]:
    """(key, reference) of every secret reference in the plan."""
    out: list[tuple[str, SecretRef]] = []

    def walk(obj: Any, key: str) -> None:
        if isinstance(obj, SecretRef):
            out.append((key, obj))
        elif isinstance(obj, BaseModel):
            for name in type(obj).model_fields:
                walk(getattr(obj, name), f"{key}.{name}" if key else name)
        elif isinstance(obj, list | tuple):
            for i, v in enumerate(obj):
                walk(v, f"{key}[{i}]")

    walk(lp.plan, "")
    return out


def environment_problems(lp: LoadedPlan) -> list[Problem]:
    """Problems only the machine can show: secrets that do not resolve, unreadable paths."""
    shown = str(lp.path)
    out: list[Problem] = []
    for key, ref in secret_refs(lp):
        try:
            resolve_secret(str(ref), lp.base_dir, key)
        except PlanError as e:
            out.append(Problem(shown, key, e.message.split(": ", 1)[1], lp.lines.get(key),
                               e.hint))
    for i, t in enumerate(lp.plan.targets):
        if t.staging and isinstance(t.staging.dsn, SecretRef):
            try:
                dsn = resolve_secret(str(t.staging.dsn), lp.base_dir, "")
            except PlanError:
                dsn = None
            if dsn is not None:
                out += _staging_is_source(lp, shown, i, t, dsn)
        out += t.environment_problems(i, lp, shown)
    return out
