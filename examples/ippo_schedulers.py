"""IPPO for the servers' schedulers, on `damdjax.views.SchedulersView` (JaxMARL API).

Each edge server is an agent that picks which queued task to run next (or the no-op
`Q` when it has nothing to decide); an EFT rule dispatches the arriving tasks. All
agents share one actor-critic (parameter sharing), told apart by a one-hot agent id
appended to their observation; each critic sees its agent's observation only
(independent PPO; `obs["world_state"]` is there for a MAPPO-style centralised critic).
The whole training is one jitted function, `make_train(config)(rng)`:

    vmapped envs --lax.scan over steps--> trajectory [T, N, M] --GAE--> advantages
    --> epochs x minibatches of clipped-PPO updates --lax.scan over updates--> trained params

Then the greedy schedulers play held-out episodes against EFT dispatch with each
scheduling rule (ES = SJF, EF = FCFS, ED = earliest deadline, EC = critical path,
EX = least laxity) on the same instances with the same keys (`damdjax.evaluation`).

    python examples/ippo_schedulers.py --env Edge-servers2-v0 --num-updates 100

The default setting, Edge-servers2-v0 (100 tasks on 2 servers), is one where the
scheduling rule matters: queues are long, and EFT+FCFS is clearly worse than EFT+SJF.

Action masks come from `get_avail_actions` (then `info["avail_actions"]`, the returned
state's); invalid actions get the logit MASKED_LOGIT, large negative but finite, so
that the script runs under `jax_debug_infs` / `jax_debug_nans`.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.linen.initializers import constant, orthogonal

from damdjax.evaluation import (format_paired, generate_held_out, held_out_keys,
                                paired_summary, play_named)
from damdjax.heuristics import pair_from_name
from damdjax.registry import make
from damdjax.views import SchedulersView

MASKED_LOGIT = -1e9          # the logit of an unavailable action (finite: see the docstring)
HEURISTICS = ("ES", "EF", "ED", "EC", "EX")


# --- network and agent batching -------------------------------------------------------

def mlp(x, hidden: int, out: int, scale: float):
    """Two tanh layers of `hidden`, then a linear layer of `out` (orthogonal init)."""
    for _ in range(2):
        x = nn.tanh(nn.Dense(hidden, kernel_init=orthogonal(math.sqrt(2)),
                             bias_init=constant(0.0))(x))
    return nn.Dense(out, kernel_init=orthogonal(scale), bias_init=constant(0.0))(x)


class ActorCritic(nn.Module):
    """A per-slot scoring actor and an MLP critic, shared by every agent.

    `__call__(obs [..., F + M], avail [..., Q + 1] bool) -> (logits [..., Q + 1],
    value [...])`, with the view's layout `F = 2 own_size + Q slot_size` (the server's
    own features, the mean of the others', then each queue slot's row) and the agent's
    one-hot id [M] appended. The actor scores each slot from `(own, others, id, that
    slot's row)` with one MLP, so what it learns about one slot serves all Q (a flat MLP
    over the whole observation would have to learn the same comparison Q times). The
    no-op's logit is 0: it is available only to a server without a decision, where it
    is the only action. The logits of unavailable actions are MASKED_LOGIT.
    """

    queue_capacity: int
    own_size: int
    num_agents: int
    hidden: int = 64

    @nn.compact
    def __call__(self, obs, avail):
        q, own_end = self.queue_capacity, 2 * self.own_size
        slot_end = obs.shape[-1] - self.num_agents               # the id follows the slots
        context = jnp.concatenate([obs[..., :own_end], obs[..., slot_end:]], axis=-1)
        slots = obs[..., own_end:slot_end].reshape(obs.shape[:-1] + (q, -1))  # [..., Q, F_q]
        pairs = jnp.concatenate(
            [jnp.broadcast_to(context[..., None, :], slots.shape[:-1] + context.shape[-1:]),
             slots], axis=-1)
        slot_logits = mlp(pairs, self.hidden, 1, 0.01)[..., 0]                # [..., Q]
        logits = jnp.concatenate([slot_logits, jnp.zeros_like(slot_logits[..., :1])], -1)
        logits = jnp.where(avail, logits, MASKED_LOGIT)
        return logits, mlp(obs, self.hidden, 1, 1.0)[..., 0]


def stack_agents(view, per_agent: dict) -> jax.Array:
    """A JaxMARL dict `{agent: [..., X]}` as one array [..., M, X] in agent order."""
    return jnp.stack([per_agent[a] for a in view.agents], axis=-2)


def with_agent_ids(obs: jax.Array) -> jax.Array:
    """[..., M, F] -> [..., M, F + M]: each agent's one-hot id appended, so the shared
    network can act differently per server."""
    m = obs.shape[-2]
    ids = jnp.broadcast_to(jnp.eye(m, dtype=obs.dtype), obs.shape[:-2] + (m, m))
    return jnp.concatenate([obs, ids], axis=-1)


def log_prob_of(logits, action):
    """log pi(action) [...] from logits [..., A] and actions [...] int."""
    return jnp.take_along_axis(jax.nn.log_softmax(logits), action[..., None], axis=-1)[..., 0]


def entropy(logits):
    """[...]; unavailable actions have p = 0 and a finite log p, so they add 0."""
    logp = jax.nn.log_softmax(logits)
    return -jnp.sum(jnp.exp(logp) * logp, axis=-1)


# --- training -------------------------------------------------------------------------

class Transition(NamedTuple):
    """One step of N envs and M agents (stacked by the scan to [T, ...])."""
    obs: jax.Array          # [N, M, F + M]
    avail: jax.Array        # [N, M, A] bool
    action: jax.Array       # [N, M] int32
    log_prob: jax.Array     # [N, M]
    value: jax.Array        # [N, M]
    reward: jax.Array       # [N]: the team reward, the same for every agent
    done: jax.Array         # [N] bool
    invalid: jax.Array      # [N] int32: picks the env replaced (must stay 0)
    episode_return: jax.Array   # [N]: the return of the episode that ended here, else 0


def make_train(config: dict):
    """`(train, network, view, env, params)`; `train(rng) -> {"runner_state", "metrics"}`
    is jittable end to end (`runner_state[0]`: the trained network parameters;
    `metrics`: leaves [NUM_UPDATES])."""
    env, params = make(config["ENV_NAME"])
    view = SchedulersView(env, dispatch="eft", params=params)
    num_envs, num_steps, m = config["NUM_ENVS"], config["NUM_STEPS"], view.num_agents
    batch_size = num_envs * num_steps * m            # every agent-step is a sample
    minibatch_size = batch_size // config["NUM_MINIBATCHES"]
    network = ActorCritic(view.noop, view.own_size, view.num_agents,
                          config["HIDDEN"])

    def lr_schedule(count):
        total = config["NUM_UPDATES"] * config["UPDATE_EPOCHS"] * config["NUM_MINIBATCHES"]
        return config["LR"] * (1.0 - count / total)

    tx = optax.chain(optax.clip_by_global_norm(config["MAX_GRAD_NORM"]),
                     optax.adam(lr_schedule if config["ANNEAL_LR"] else config["LR"],
                                eps=1e-5))

    def train(rng):
        rng, k_init, k_reset = jax.random.split(rng, 3)
        net_params = network.init(k_init, jnp.zeros((view.obs_size + m,)),
                                  jnp.ones((view.num_actions,), bool))
        opt_state = tx.init(net_params)
        obs, env_state = jax.vmap(view.reset)(jax.random.split(k_reset, num_envs))
        obs = with_agent_ids(stack_agents(view, obs))                     # [N, M, F+M]
        avail = stack_agents(view, jax.vmap(view.get_avail_actions)(env_state))
        running_return = jnp.zeros((num_envs,))

        def env_step(carry, _):
            net_params, env_state, obs, avail, running_return, rng = carry
            rng, k_act, k_step = jax.random.split(rng, 3)
            logits, value = network.apply(net_params, obs, avail)          # [N, M, A]
            action = jax.random.categorical(k_act, logits).astype(jnp.int32)  # [N, M]
            actions = {a: action[:, i] for i, a in enumerate(view.agents)}
            next_obs, env_state, rewards, dones, info = jax.vmap(view.step)(
                jax.random.split(k_step, num_envs), env_state, actions)
            reward = rewards[view.agents[0]] * config["REWARD_SCALE"]      # team reward
            done = dones["__all__"]
            running_return = running_return + rewards[view.agents[0]]
            step = Transition(obs, avail, action, log_prob_of(logits, action), value,
                              reward, done, info["invalid_picks"].sum(-1),
                              jnp.where(done, running_return, 0.0))
            running_return = jnp.where(done, 0.0, running_return)
            next_obs = with_agent_ids(stack_agents(view, next_obs))
            return (net_params, env_state, next_obs, info["avail_actions"], running_return,
                    rng), step

        def gae(traj, last_value):
            """Advantages and returns [T, N, M]."""
            def back(carry, t):
                next_adv, next_value = carry
                not_done = 1.0 - t.done.astype(jnp.float32)[:, None]       # [N, 1]
                delta = t.reward[:, None] + config["GAMMA"] * next_value * not_done - t.value
                adv = delta + config["GAMMA"] * config["GAE_LAMBDA"] * not_done * next_adv
                return (adv, t.value), adv
            _, adv = jax.lax.scan(back, (jnp.zeros_like(last_value), last_value), traj,
                                  reverse=True)
            return adv, adv + traj.value

        def loss_fn(net_params, batch, adv, targets):
            obs, avail, action, old_log_prob, old_value = batch
            logits, value = network.apply(net_params, obs, avail)
            clipped = old_value + jnp.clip(value - old_value, -config["CLIP_EPS"],
                                           config["CLIP_EPS"])
            value_loss = 0.5 * jnp.maximum((value - targets) ** 2,
                                           (clipped - targets) ** 2).mean()
            # Only agent-steps with a real choice (two or more available actions) train
            # the actor: a server without a decision has only the no-op, whose
            # probability is 1 whatever the parameters.
            decides = (jnp.sum(avail, axis=-1) >= 2).astype(jnp.float32)
            count = jnp.maximum(decides.sum(), 1.0)
            adv_mean = jnp.sum(adv * decides) / count
            adv_std = jnp.sqrt(jnp.sum(decides * (adv - adv_mean) ** 2) / count)
            adv = (adv - adv_mean) / (adv_std + 1e-8)
            ratio = jnp.exp(log_prob_of(logits, action) - old_log_prob)
            surrogate = jnp.minimum(
                ratio * adv,
                jnp.clip(ratio, 1 - config["CLIP_EPS"], 1 + config["CLIP_EPS"]) * adv)
            actor_loss = -jnp.sum(surrogate * decides) / count
            ent = jnp.sum(entropy(logits) * decides) / count
            total = actor_loss + config["VF_COEF"] * value_loss - config["ENT_COEF"] * ent
            return total, (value_loss, actor_loss, ent)

        def update(carry, _):
            net_params, opt_state, env_state, obs, avail, running_return, rng = carry
            (net_params, env_state, obs, avail, running_return, rng), traj = jax.lax.scan(
                env_step, (net_params, env_state, obs, avail, running_return, rng), None,
                num_steps)
            _, last_value = network.apply(net_params, obs, avail)
            advantages, targets = gae(traj, last_value)

            def epoch(carry, _):
                net_params, opt_state, rng = carry
                rng, k_perm = jax.random.split(rng)
                perm = jax.random.permutation(k_perm, batch_size)
                samples = ((traj.obs, traj.avail, traj.action, traj.log_prob, traj.value),
                           advantages, targets)
                flat = jax.tree.map(lambda x: x.reshape((batch_size,) + x.shape[3:]), samples)
                minibatches = jax.tree.map(
                    lambda x: x[perm].reshape((config["NUM_MINIBATCHES"], minibatch_size)
                                              + x.shape[1:]), flat)

                def minibatch(carry, mb):
                    net_params, opt_state = carry
                    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(
                        net_params, *mb)
                    updates, opt_state = tx.update(grads, opt_state, net_params)
                    return (optax.apply_updates(net_params, updates), opt_state), (loss, *aux)

                (net_params, opt_state), losses = jax.lax.scan(
                    minibatch, (net_params, opt_state), minibatches)
                return (net_params, opt_state, rng), losses

            (net_params, opt_state, rng), losses = jax.lax.scan(
                epoch, (net_params, opt_state, rng), None, config["UPDATE_EPOCHS"])
            metrics = {
                "episodes": jnp.sum(traj.done),
                "return_sum": jnp.sum(traj.episode_return),
                "invalid_actions": jnp.sum(traj.invalid),
                # agent-steps with a real choice (two or more available actions)
                "choices": jnp.sum(jnp.sum(traj.avail, axis=-1) >= 2),
                "loss": losses[0].mean(), "value_loss": losses[1].mean(),
                "entropy": losses[3].mean(),
            }
            if config.get("PRINT_EVERY"):
                jax.debug.callback(_print_progress, metrics, config["PRINT_EVERY"],
                                   ordered=True)
            return (net_params, opt_state, env_state, obs, avail, running_return, rng), metrics

        rng, k_run = jax.random.split(rng)
        runner_state, metrics = jax.lax.scan(
            update, (net_params, opt_state, env_state, obs, avail, running_return, k_run),
            None, config["NUM_UPDATES"])
        return {"runner_state": runner_state, "metrics": metrics}

    return train, network, view, env, params


_progress = {"update": 0}


def _print_progress(metrics, every):
    """Host-side: print one line every `every` updates (called once per update)."""
    _progress["update"] += 1
    u = _progress["update"]
    if u % int(every) == 0 or u == 1:
        episodes = int(metrics["episodes"])
        # episodes are long: an update may end none
        ret = (f"{float(metrics['return_sum']) / episodes:8.2f}" if episodes else "       -")
        print(f"update {u:5d}  episode return {ret}  episodes {episodes:4d}  "
              f"entropy {float(metrics['entropy']):.3f}  value loss "
              f"{float(metrics['value_loss']):.4f}  invalid {int(metrics['invalid_actions'])}",
              flush=True)


# --- evaluation -----------------------------------------------------------------------

def greedy_policy(network, net_params, view):
    """The trained schedulers with EFT dispatch as a joint policy `(key, state) -> Action`
    for `damdjax.evaluation.play_named` (which plays the env epoch by epoch;
    `SchedulersView.as_policy`): every server takes its argmax available action (the
    no-op where it has no decision)."""
    def pick(key, agent_obs, avail):
        logits, _ = network.apply(net_params, with_agent_ids(agent_obs), avail)
        return jnp.argmax(logits, axis=-1)

    return view.as_policy(pick)


def evaluate(policy, env, params, seed, episodes, heuristics=HEURISTICS):
    """Paired comparison on held-out instances: the summary with `IPPO - other` rows."""
    inst_keys, play_keys = held_out_keys(seed, episodes)
    instances = generate_held_out(env.config, params, inst_keys)
    policies = {"IPPO": policy, **{name: pair_from_name(name) for name in heuristics}}
    per = play_named(policies, params, instances, play_keys, env.config.queue_capacity)
    return paired_summary(per, reference="IPPO")


# --- command line ---------------------------------------------------------------------

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--env", default="Edge-servers2-v0", help="registry name (damdjax.registry)")
    p.add_argument("--num-envs", type=int, default=16)
    p.add_argument("--num-steps", type=int, default=64, help="steps per env per update")
    p.add_argument("--num-updates", type=int, default=100)
    p.add_argument("--num-minibatches", type=int, default=4)
    p.add_argument("--update-epochs", type=int, default=4)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--ent-coef", type=float, default=0.01, help="entropy bonus")
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--episodes", type=int, default=100, help="held-out evaluation episodes")
    p.add_argument("--heuristics", default=",".join(HEURISTICS),
                   help="comma-separated heuristic pairs to compare with (damdjax.heuristics"
                        ".pair_from_name: ES = EFT+SJF, LS = LeastLoad+SDF, EF = EFT+FCFS, ...)")
    p.add_argument("--print-every", type=int, default=10, help="updates between progress lines")
    p.add_argument("--out", default=None, help="write the results as JSON here")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    heuristics = tuple(name.strip() for name in args.heuristics.split(",") if name.strip())
    for name in heuristics:
        pair_from_name(name)          # fail now, not after training, on a bad name
    config = {
        "ENV_NAME": args.env, "NUM_ENVS": args.num_envs, "NUM_STEPS": args.num_steps,
        "NUM_UPDATES": args.num_updates, "NUM_MINIBATCHES": args.num_minibatches,
        "UPDATE_EPOCHS": args.update_epochs, "LR": args.lr, "ANNEAL_LR": True,
        "HIDDEN": args.hidden, "GAMMA": 0.99, "GAE_LAMBDA": 0.95, "CLIP_EPS": 0.2,
        "ENT_COEF": args.ent_coef, "VF_COEF": 0.5, "MAX_GRAD_NORM": 0.5,
        # episode returns are about -150 (a hundred tasks): scaled to keep the value
        # targets of order ten
        "REWARD_SCALE": 0.1, "PRINT_EVERY": args.print_every,
    }
    start = time.time()
    train, network, view, env, params = make_train(config)
    if (args.num_envs * args.num_steps * view.num_agents) % args.num_minibatches:
        raise SystemExit("--num-envs * --num-steps * agents must be a multiple of "
                         "--num-minibatches")
    out = jax.block_until_ready(jax.jit(train)(jax.random.PRNGKey(args.seed)))
    train_s = time.time() - start
    metrics = jax.tree.map(np.asarray, out["metrics"])
    net_params = out["runner_state"][0]
    invalid = int(metrics["invalid_actions"].sum())
    steps = args.num_updates * args.num_envs * args.num_steps
    print(f"trained {steps} pick epochs ({view.num_agents} agents) in {train_s:.1f} s "
          f"(compile included); invalid actions sampled: {invalid}")

    start = time.time()
    summary = evaluate(greedy_policy(network, net_params, view), env, params, args.seed,
                       args.episodes, heuristics)
    eval_s = time.time() - start
    print(format_paired(summary, title=f"{args.env}: greedy IPPO schedulers (EFT dispatch) "
                                       f"vs heuristics ({args.episodes} held-out episodes, "
                                       f"{eval_s:.1f} s)"))
    if args.out:
        tail = max(1, args.num_updates // 10)      # the first and last tenth of training

        def mean_return(sl):
            return float(metrics["return_sum"][sl].sum()
                         / max(1, metrics["episodes"][sl].sum()))

        result = {
            "env": args.env, "config": config, "seed": args.seed, "heuristics": heuristics,
            "train_seconds": train_s, "eval_seconds": eval_s, "decisions": steps,
            "invalid_actions": invalid,
            "choices": int(metrics["choices"].sum()),
            "first_episode_return": mean_return(slice(0, tail)),
            "final_episode_return": mean_return(slice(-tail, None)),
            "evaluation": summary,
        }
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
