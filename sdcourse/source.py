"""A function's source as a chapter prints it: the algorithm first, its argument checks left out.

The course's helpers check their arguments (a clear sentence instead of a traceback from deep inside torch),
so ``inspect.getsource`` shows those checks before the idea. ``print(sdcourse.source(fn))`` prints the same
function with its docstring cut to its first paragraph and without the statements that only check
arguments: calls to ``check_*`` functions (``steps = check_steps(steps)`` too) and ``if ...: raise ...``
blocks that raise a new error. A comment where the body begins says how many checks were left out;
``inspect.getsource(fn)`` still shows everything.
"""
from __future__ import annotations

import ast
import inspect
import textwrap

__all__ = ["source"]


def source(obj) -> str:
    """``obj``'s source without its argument checks and with a one-paragraph docstring (see the module)."""
    text = textwrap.dedent(inspect.getsource(obj))
    lines = text.splitlines()
    definition = ast.parse(text).body[0]
    dropped: set[int] = set()  # 0-based line numbers
    docstring = _docstring(definition)
    if docstring is not None:
        kept_end = _first_paragraph_end(lines, docstring)
        if kept_end is not None:
            dropped |= set(range(kept_end + 1, docstring.end_lineno))
            single = lines[docstring.lineno - 1].lstrip().lstrip("rRuU").startswith("'" * 3)
            lines[kept_end] = lines[kept_end].rstrip() + " ..." + ("'" if single else '"') * 3
    checks = 0
    arguments = getattr(definition, "args", None)
    params = frozenset() if arguments is None else frozenset(
        a.arg for a in arguments.posonlyargs + arguments.args + arguments.kwonlyargs
        + [x for x in (arguments.vararg, arguments.kwarg) if x is not None])
    for node in ast.walk(definition):
        for field in ("body", "orelse", "finalbody"):
            statements = getattr(node, field, None)
            for statement in statements if isinstance(statements, list) else []:
                if isinstance(statement, ast.stmt) and _is_check(statement, params):
                    span = set(range(statement.lineno - 1, statement.end_lineno))
                    if not span <= dropped:
                        checks += 1
                        dropped |= span
    note_after = (docstring.end_lineno - 1) if docstring is not None else definition.body[0].lineno - 2
    kept = []
    for i, line in enumerate(lines):
        if i not in dropped:
            kept.append(line)
        if i == note_after and checks:  # the note goes where the body begins
            first = lines[definition.body[-1].lineno - 1]
            indent = first[: len(first) - len(first.lstrip())]
            kept.append(f"{indent}# ({checks} check{'s' if checks > 1 else ''} left out; "
                        f"inspect.getsource shows {'them' if checks > 1 else 'it'})")
    return "\n".join(kept)


def _docstring(definition):
    body = getattr(definition, "body", [])
    if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) \
            and isinstance(body[0].value.value, str):
        return body[0]
    return None


def _first_paragraph_end(lines: list[str], docstring) -> int | None:
    """The 0-based line where the docstring's first paragraph ends, or None when that is all it has."""
    start, end = docstring.lineno - 1, docstring.end_lineno - 1
    for i in range(start, end + 1):
        if i > start and not lines[i].strip():
            return i - 1
    return None


def _called_name(call) -> str:
    func = call.func
    return func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""


def _is_check_call(node) -> bool:
    return isinstance(node, ast.Call) and _called_name(node).lstrip("_").startswith("check_")


def _checks_only(node) -> bool:
    """A call of a check_* function, or a tuple of them."""
    if isinstance(node, ast.Tuple):
        return bool(node.elts) and all(_is_check_call(e) for e in node.elts)
    return _is_check_call(node)


def _names(target) -> list:
    if isinstance(target, ast.Name):
        return [target.id]
    if isinstance(target, (ast.Tuple, ast.List)):
        return [n for e in target.elts for n in _names(e)] if all(isinstance(e, (ast.Name, ast.Tuple, ast.List))
                                                                  for e in target.elts) else [None]
    return [None]


def _is_check(statement, params: frozenset = frozenset()) -> bool:
    """A statement that only checks arguments: check_* calls (alone, in a tuple, or re-binding the function's own
    parameters, as ``steps = check_steps(steps)``; a check whose result gets a new name stays, since the code
    after it uses that name), or ``if bad: raise NewError(...)``."""
    if isinstance(statement, ast.Expr):
        return _checks_only(statement.value)
    if isinstance(statement, (ast.Assign, ast.AnnAssign)) and _checks_only(statement.value):
        targets = statement.targets if isinstance(statement, ast.Assign) else [statement.target]
        return all(name in params for t in targets for name in _names(t))
    if isinstance(statement, ast.If):  # `if bad: raise SomeError(...)`; a bare `raise` (re-raise) is control flow
        return all(_raises_new(s) for s in statement.body) and (
            not statement.orelse or all(_raises_new(s) or _is_check(s, params) for s in statement.orelse))
    return False


def _raises_new(statement) -> bool:
    return isinstance(statement, ast.Raise) and statement.exc is not None
