"""Params files cannot make mlvc spend unbounded time or memory (issue 9 item 12b)."""

import time

LAUGHS = """\
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""


def test_yaml_billion_laughs_is_refused_quickly(project, repo, cli):
    (project / "params.yaml").write_text(LAUGHS)
    assert len(LAUGHS) < 400
    t = time.monotonic()
    r = cli("commit", "-m", "x", "--params", "params.yaml", ok=False)
    assert time.monotonic() - t < 10
    assert r.exit_code == 2
    assert "params.yaml expands to over 100,000 values through YAML aliases" in r.output
    assert len(r.output.strip().splitlines()) == 1
    assert repo.head() is None  # nothing recorded


def test_yaml_recursive_alias_is_refused(project, cli):
    (project / "params.yaml").write_text("a: &a\n  b: *a\n")
    r = cli("commit", "-m", "x", "--params", "params.yaml", ok=False)
    assert r.exit_code == 2
    assert "params.yaml" in r.output and "Traceback" not in r.output


def test_yaml_with_a_few_aliases_still_loads(project, repo, cli):
    (project / "params.yaml").write_text(
        "base: &base {lr: 0.1, depth: 3}\ntrain: *base\neval: {<<: *base, depth: 5}\n"
    )
    cli("commit", "-m", "x", "--params", "params.yaml")
    params = repo.run("HEAD").params
    assert params["train.lr"] == 0.1 and params["eval.depth"] == 5 and params["base.depth"] == 3
