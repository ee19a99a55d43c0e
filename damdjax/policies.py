"""Trained policies as rules, their files, and dispatcher/scheduler names resolved.

A trained dispatcher is saved as a *policy file* (`dispatcher.msgpack` in its
run directory): flax msgpack of `{"meta": JSON text, "params": ...}`, where
meta holds the kind, the network's shape, the observation `time_scale` it
was trained with and, for a dispatcher, `eft_feature` (whether its server features
end with the EFT estimate, `eft_view`; a file without it: false). Loading checks meta's
fields (`check_meta`: `hidden` a list of 1..HIDDEN_MAX_LAYERS integer widths in
1..HIDDEN_MAX_WIDTH, `time_scale` a finite number > 0 within float32's normal range,
the flags booleans, `num_agents` an integer in [1, int32]; one line naming the file and
the field), rebuilds the network's parameter shapes from meta without allocating them
(`jax.eval_shape`), checks every parameter's shape against them (damdjax.checkpoint.restore:
a meta that asks for more than the file holds is refused before anything of that size is
made) and refuses a non-finite parameter (`damdjax.checkpoint.check_finite`; large
finite values load: see damdjax.checkpoint on why only NaN and infinities are refused).

    rule = resolve_dispatcher("least-load")           # a heuristic
    rule = resolve_dispatcher("runs/dqn")             # a trained dispatcher (greedy)
    sched = resolve_scheduler("sdf")                  # (trained schedulers: see train.mdqn)
    policy = heuristics.pair(rule, sched)
"""
from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np

from damdjax.checkpoint import check_finite, read_state_dict, restore, save_tree
from damdjax.envs.config import INT32_MAX
from damdjax.io import json_loads_limited
from damdjax.run_config import HIDDEN_MAX_LAYERS, HIDDEN_MAX_WIDTH, setting_from_json
from damdjax import family
from damdjax.eft import NAMED, WAIT_AHEAD, EftParams, dispatch_params, eft_estimate
from damdjax.heuristics import (
    DISPATCH_RULES, SCHEDULE_RULES, DispatchRule, Policy, ScheduleRule, pair)
from damdjax.networks import (
    DispatchQNetwork, DispatchView, SlotQNetwork, dispatch_inputs, greedy_action)
from damdjax.schedulers import (
    AgentObs, agent_axis, agents_greedy, agents_q, init_agent_params, scheduler_inputs)
from damdjax.envs.observation import (
    OWN_FEATURES, SERVER_FEATURES, SLOT_FEATURES, TASK_FEATURES, observe)

DISPATCHER_FILE = "dispatcher.msgpack"
SCHEDULERS_FILE = "schedulers.msgpack"
DISPATCHER_KIND = "dqn-dispatcher"
SCHEDULERS_KIND = "mdqn-schedulers"


def save_policy(path: str, kind: str, meta: dict, params) -> None:
    """Write a policy file: `{"meta": json(kind + meta), "params": params}`, atomically."""
    save_tree({"meta": json.dumps({"kind": kind, **meta}), "params": params}, path)


def read_policy(path: str, kind: str, filename: str) -> tuple[dict, dict, str]:
    """`(meta, raw params state dict, file path)` of a policy file or of a run directory
    holding `filename`; ValueError naming the path when it is not a `kind` policy or its
    meta's fields are bad (`check_meta`)."""
    file = os.path.join(path, filename) if os.path.isdir(path) else path
    state = read_state_dict(file)
    if not (isinstance(state, dict) and isinstance(state.get("meta"), str)
            and "params" in state):
        raise ValueError(f"{file}: not a policy file (no meta/params)")
    try:
        meta = json_loads_limited(state["meta"], file)
    except ValueError as err:
        raise ValueError(f"{str(err).splitlines()[0]} (in meta)") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{file}: meta must be a JSON object, got {type(meta).__name__}")
    if meta.get("kind") != kind:
        raise ValueError(f"{file}: holds a {_show(meta.get('kind'))} policy, expected {kind!r}")
    check_meta(meta, file)
    return meta, state["params"], file


def _show(value) -> str:
    """A short one-line rendering of a bad value for a message."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def check_meta(meta: dict, file: str) -> None:
    """ValueError naming `file` and the field at a policy meta's first bad field: `hidden`
    a list of 1..HIDDEN_MAX_LAYERS integer widths, each in 1..HIDDEN_MAX_WIDTH (the
    bounds a run's config has: `damdjax.run_config`); `time_scale` a finite number > 0
    within float32's normal range (observations divide times by it, in float32);
    `eft_feature` and `share` booleans where present; `eft_rule` an EFT-family dispatch
    rule without the `ahead` wait (`check_eft_rule`); `num_agents` an integer in [1,
    int32] where present (a schedulers file: required)."""
    def bad(field, want):
        got = f"got {_show(meta[field])}" if field in meta else "it is missing"
        return ValueError(f"{file}: meta field {field!r} must be {want}, {got}")

    hidden = meta.get("hidden")
    widths = f"a list of 1 to {HIDDEN_MAX_LAYERS} integers in [1, {HIDDEN_MAX_WIDTH}]"
    if not (isinstance(hidden, list) and 1 <= len(hidden) <= HIDDEN_MAX_LAYERS
            and all(_is_int(h) and 1 <= h <= HIDDEN_MAX_WIDTH for h in hidden)):
        raise bad("hidden", widths)
    ts, f32 = meta.get("time_scale"), np.finfo(np.float32)
    if not (isinstance(ts, (int, float)) and not isinstance(ts, bool)
            and float(f32.tiny) <= ts <= float(f32.max)):
        raise bad("time_scale", f"a finite number > 0 in float32's normal range "
                                f"[{float(f32.tiny):g}, {float(f32.max):g}]")
    for flag in ("eft_feature", "share"):
        if flag in meta and not isinstance(meta[flag], bool):
            raise bad(flag, "true or false")
    if "eft_rule" in meta:
        try:
            check_eft_rule(meta["eft_rule"])
        except (ValueError, AttributeError) as err:
            raise bad("eft_rule", f"an EFT-family dispatch rule ({err})") from None
    if meta.get("kind") == SCHEDULERS_KIND:
        if "share" not in meta:
            raise bad("share", "true or false")
        agents = meta.get("num_agents")
        if not (_is_int(agents) and 1 <= agents <= INT32_MAX):
            raise bad("num_agents", f"an integer in [1, {INT32_MAX}]")


def load_params(template_of, raw, file: str):
    """The parameters `raw` (a file's state dict) restored into the shapes of
    `template_of(key)` (traced by `jax.eval_shape`: nothing of the meta's size is
    allocated) and checked finite; ValueError naming `file` and the first bad leaf."""
    template = jax.eval_shape(template_of, jax.random.PRNGKey(0))
    params = restore(template, raw, file, root="params")
    check_finite(raw, file, where="params")
    return params


# ---------------------------------------------------------------------------
# The DQN dispatcher
# ---------------------------------------------------------------------------

def dispatcher_network(hidden) -> DispatchQNetwork:
    return DispatchQNetwork(hidden=tuple(int(h) for h in hidden))


def check_eft_rule(rule: str) -> EftParams:
    """The parameters of a dispatcher's EFT rule (`damdjax.eft.dispatch_params`: `eft`,
    `heft`, `peft`, `eft[HOLDERS/WAIT/rR/lL]`); ValueError for a bad name and for the
    `ahead` wait, which follows a scheduling rule the dispatcher's file does not name."""
    params = dispatch_params(rule)
    if int(params.wait) == WAIT_AHEAD:
        raise ValueError(f"{rule!r}: the ahead wait depends on the scheduling rule; use "
                         "chain, load or insert")
    return params


def eft_view(view: DispatchView, state, time_scale, eft_rule: str = "eft") -> DispatchView:
    """`view` (one env's) with an EFT rule's estimate appended to every server's
    features: servers [M, F_s] -> [M, F_s + 1], the new column
    `(eft_estimate(state, eft_rule's parameters) - state.time) / time_scale` (feature
    units) on feasible servers (`view.mask`), 0 elsewhere (where the estimate may be
    far off: none reaches the network). `eft_rule`: `check_eft_rule`'s names."""
    est = (eft_estimate(state, check_eft_rule(eft_rule)) - state.time) / time_scale  # [M]
    col = jnp.where(view.mask, est, 0.0).astype(view.servers.dtype)[:, None]  # [M, 1]
    return view._replace(servers=jnp.concatenate([view.servers, col], axis=-1))


def dispatcher_view(obs, state, time_scale, eft_feature: bool, eft_rule: str = "eft"
                    ) -> DispatchView:
    """The dispatcher's inputs of one env: `dispatch_inputs(obs)` (`obs` the observation,
    or its dispatcher part, of `state`), with `eft_view`'s column of `eft_rule` where
    `eft_feature`."""
    view = dispatch_inputs(obs)
    return eft_view(view, state, time_scale, eft_rule) if eft_feature else view


def init_dispatcher(net: DispatchQNetwork, key: jax.Array, eft_feature: bool = False):
    """Fresh parameters of `net` for server features with (`eft_feature`) or without the
    EFT column (shapes do not depend on the number of servers)."""
    task = jnp.zeros((len(TASK_FEATURES),))
    servers = jnp.zeros((1, len(SERVER_FEATURES) + int(eft_feature)))
    return net.init(key, task, servers, jnp.ones((1,), bool))


def save_dispatcher(path: str, hidden, time_scale: float, params,
                    eft_feature: bool = False, eft_rule: str = "eft") -> None:
    """A dispatcher policy file; `eft_rule` is written where it is not the classic `eft`
    (files without it read as `eft`)."""
    meta = {"hidden": [int(h) for h in hidden], "time_scale": float(time_scale),
            "eft_feature": bool(eft_feature)}
    if eft_rule != "eft":
        meta["eft_rule"] = eft_rule
    save_policy(path, DISPATCHER_KIND, meta, params)


def load_dispatcher(path: str) -> tuple[DispatchQNetwork, dict, dict]:
    """`(network, params, meta)` from a dispatcher policy file or a run directory; meta's
    `eft_feature` is false where the file has none (written before the option)."""
    meta, raw, file = read_policy(path, DISPATCHER_KIND, DISPATCHER_FILE)
    meta = {"eft_feature": False, "eft_rule": "eft", **meta}
    net = dispatcher_network(meta["hidden"])
    params = load_params(lambda key: init_dispatcher(net, key, meta["eft_feature"]), raw, file)
    return net, params, meta


def dqn_dispatch_rule(net: DispatchQNetwork, params, time_scale, *,
                      eft_feature: bool, eft_rule: str = "eft") -> DispatchRule:
    """The greedy dispatcher as a dispatch rule `(key, state) -> server []` (`eft_feature`:
    the network reads `eft_view`'s column of `eft_rule`)."""
    def rule(key, state):
        del key
        view = dispatcher_view(observe(state, time_scale), state, time_scale, eft_feature,
                               eft_rule)
        q = net.apply(params, view.task, view.servers, view.server_mask)
        return greedy_action(q, view.mask)
    return rule


# ---------------------------------------------------------------------------
# The MDQN schedulers
# ---------------------------------------------------------------------------

def scheduler_network(hidden) -> SlotQNetwork:
    return SlotQNetwork(hidden=tuple(int(h) for h in hidden))


def init_schedulers(net: SlotQNetwork, key: jax.Array, num_agents: int, share: bool):
    """Fresh parameters: leaves [M, ...] (one set per agent) or one shared set.

    Shapes depend on neither the queue capacity nor the batch."""
    one = AgentObs(slots=jnp.zeros((1, len(SLOT_FEATURES))), own=jnp.zeros((len(OWN_FEATURES),)),
                   others=jnp.zeros((len(OWN_FEATURES),)), mask=jnp.ones((1,), bool))
    return init_agent_params(net, key, one, num_agents, share)


def save_schedulers(path: str, hidden, share: bool, num_agents: int, time_scale: float,
                    params) -> None:
    save_policy(path, SCHEDULERS_KIND, {"hidden": [int(h) for h in hidden], "share": bool(share),
                                        "num_agents": int(num_agents),
                                        "time_scale": float(time_scale)}, params)


def load_schedulers(path: str) -> tuple[SlotQNetwork, dict, dict]:
    """`(network, params, meta)` from a schedulers policy file or a run directory."""
    meta, raw, file = read_policy(path, SCHEDULERS_KIND, SCHEDULERS_FILE)
    net = scheduler_network(meta["hidden"])
    params = load_params(lambda key: init_schedulers(net, key, meta["num_agents"],
                                                     meta["share"]), raw, file)
    return net, params, meta


def mdqn_schedule_rule(net: SlotQNetwork, params, share: bool, time_scale,
                       num_agents: int | None = None) -> ScheduleRule:
    """The greedy schedulers as a scheduling rule `(key, state) -> slot per server [M]`.

    Per-agent parameters need the env's `M` to equal their agent count
    (`num_agents`, checked when the rule is traced).
    """
    def rule(key, state):
        del key
        view = scheduler_inputs(observe(state, time_scale))        # leaves [M, ...]
        m = view.needed.shape[-1]
        if not share and num_agents is not None and m != num_agents:
            raise ValueError(f"these schedulers are {num_agents} per-server agents; the env "
                             f"has {m} servers")
        q = agents_q(net, params, agent_axis(view), share)         # [M, Q]
        return agents_greedy(q, view.mask, view.needed)
    return rule


def load_schedule_rule(path: str) -> ScheduleRule:
    net, params, meta = load_schedulers(path)
    return mdqn_schedule_rule(net, params, meta["share"], meta["time_scale"],
                              meta["num_agents"])


# ---------------------------------------------------------------------------
# Names -> rules
# ---------------------------------------------------------------------------

def _canonical(name: str) -> str:
    return name.strip().lower().replace("-", "_")


def is_family_dispatch(name: str) -> bool:
    """Whether `name` is spelled as an EFT-family dispatch rule (a name of
    `damdjax.eft.NAMED` or `eft[...]`), which `resolve_dispatcher` reads before any path."""
    spec = name.strip().lower()
    return spec in NAMED or spec.startswith("eft[")


def is_dispatch_rule(name: str) -> bool:
    """Whether `resolve_dispatcher` reads `name` as a rule (classic or EFT-family), not as
    a path."""
    return _canonical(name) in DISPATCH_RULES or is_family_dispatch(name)


def is_schedule_rule(name: str) -> bool:
    """Whether `resolve_scheduler` reads `name` as a rule, not as a path."""
    return _canonical(name) in SCHEDULE_RULES


def resolve_dispatcher(name: str) -> DispatchRule:
    """`nearest`, `random`, `least-load` (or `least_load`), `eft`, an EFT-family rule
    (`heft`, `peft`, `eft[HOLDERS/WAIT/rR/lL]`: `check_eft_rule`'s, so not the `ahead`
    wait), or a trained dispatcher's run directory / policy file (greedy). ValueError
    naming `name` otherwise."""
    if _canonical(name) in DISPATCH_RULES:
        return DISPATCH_RULES[_canonical(name)]
    if is_family_dispatch(name):
        check_eft_rule(name)
        return family.dispatch_rule(name)
    if not os.path.exists(name):
        raise ValueError(f"dispatcher {name!r} is neither nearest, random, least-load, eft, an "
                         "EFT-family rule (heft, peft, eft[HOLDERS/WAIT/rR/lL]) nor an "
                         "existing run directory or policy file")
    net, params, meta = load_dispatcher(name)
    return dqn_dispatch_rule(net, params, meta["time_scale"], eft_feature=meta["eft_feature"],
                             eft_rule=meta["eft_rule"])


def resolve_scheduler(name: str) -> ScheduleRule:
    """`fcfs`, `sjf`, `sdf`, or trained schedulers' run directory / policy file (greedy)."""
    if is_schedule_rule(name):
        return SCHEDULE_RULES[_canonical(name)]
    if not os.path.exists(name):
        raise ValueError(f"scheduler {name!r} is neither fcfs, sjf, sdf, cp, llf nor an existing run "
                         "directory or policy file")
    return load_schedule_rule(name)


DAMD_FILE = "damd.json"   # a train.damd run's index: its final stages and setting


def load_damd(path: str) -> tuple[Policy, dict]:
    """`(DAMD policy (greedy dispatcher + greedy schedulers), setting)` of a train.damd run.

    ValueError naming the path if it is not a finished DAMD run or its setting does not
    read (`damdjax.run_config.setting_from_json`, which also reads damdjax 0.2's flat
    form).
    """
    file = os.path.join(path, DAMD_FILE)
    if not os.path.exists(file):
        raise ValueError(f"{path}: not a train.damd run (no {DAMD_FILE})")
    with open(file) as f:
        info = json.load(f)
    try:
        dispatcher = resolve_dispatcher(os.path.join(path, info["dispatcher"]))
        schedulers = resolve_scheduler(os.path.join(path, info["schedulers"]))
        setting = info["setting"]
    except KeyError as err:
        raise ValueError(f"{file}: missing {err}") from None
    try:
        setting_from_json(setting)
    except (ValueError, TypeError, AttributeError) as err:
        raise ValueError(f"{file}: {err}") from None
    return pair(dispatcher, schedulers), setting
