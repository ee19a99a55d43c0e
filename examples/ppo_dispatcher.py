"""PPO for the dispatcher, in the PureJaxRL style, on `damdjax.views.DispatcherView`.

The agent chooses a server for each arriving task; the servers order their queues
by SJF (shortest job first). Everything from the environment reset to the last
gradient step is one jitted function, `make_train(config)(rng)`:

    vmapped envs --lax.scan over steps--> trajectory [T, N] --GAE--> advantages
    --> epochs x minibatches of clipped-PPO updates --lax.scan over updates--> trained params

Then the greedy policy (argmax over the valid servers) plays held-out episodes
against heuristic pairs on the same instances with the same keys (paired
comparison, `damdjax.evaluation`): ES = EFT dispatch + SJF, LS = LeastLoad + SDF,
RS = Random + SJF.

The actor scores each server with one small MLP shared by all servers (from the task's
features and that server's row of the observation), so comparing servers, which EFT
does with its finish-time estimate, is easy to learn.

    python examples/ppo_dispatcher.py --env Edge-tasks25-v0 --num-updates 300

Action masking: a server that cannot take the task gets the logit MASKED_LOGIT, a
large negative *finite* number, not -inf, so that the log-probabilities and the
entropy stay finite and the script runs under `jax_debug_infs` / `jax_debug_nans`.
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
from gymnax.wrappers.purerl import LogWrapper

from damdjax.evaluation import (format_paired, generate_held_out, held_out_keys,
                                paired_summary, play_named)
from damdjax.heuristics import pair_from_name
from damdjax.registry import make
from damdjax.views import DispatcherView

MASKED_LOGIT = -1e9          # the logit of an invalid action (finite: see the docstring)
HEURISTICS = ("ES", "LS", "RS")


# --- network --------------------------------------------------------------------------

def mlp(x, hidden: int, out: int, scale: float):
    """Two tanh layers of `hidden`, then a linear layer of `out` (orthogonal init, as in
    PureJaxRL; a small `scale` on the actor's head gives a near-uniform first policy)."""
    for _ in range(2):
        x = nn.tanh(nn.Dense(hidden, kernel_init=orthogonal(math.sqrt(2)),
                             bias_init=constant(0.0))(x))
    return nn.Dense(out, kernel_init=orthogonal(scale), bias_init=constant(0.0))(x)


class ActorCritic(nn.Module):
    """A per-server scoring actor and an MLP critic.

    `__call__(obs [..., F], mask [..., M] bool) -> (logits [..., M], value [...])`, with
    `F = task_size + M * server_size` (the view's layout: the head task's features, then
    each server's row). The actor scores each server from `(task, that server's row)`
    with one shared MLP, so a server's logit does not depend on its slot index and what
    is learnt about one server serves all (a flat MLP over the whole observation must
    learn the same comparison M times; it trains markedly slower here). The logits of
    invalid servers are MASKED_LOGIT.
    """

    num_servers: int
    task_size: int
    hidden: int = 64

    @nn.compact
    def __call__(self, obs, mask):
        task = obs[..., :self.task_size]                                   # [..., F_t]
        servers = obs[..., self.task_size:].reshape(
            obs.shape[:-1] + (self.num_servers, -1))                       # [..., M, F_s]
        pairs = jnp.concatenate(
            [jnp.broadcast_to(task[..., None, :], servers.shape[:-1] + task.shape[-1:]),
             servers], axis=-1)                                            # [..., M, F_t+F_s]
        logits = mlp(pairs, self.hidden, 1, 0.01)[..., 0]                  # [..., M]
        logits = jnp.where(mask, logits, MASKED_LOGIT)
        value = mlp(obs, self.hidden, 1, 1.0)[..., 0]
        return logits, value


def masked_log_probs(logits):
    """log pi(a) [..., A]; the invalid actions get about MASKED_LOGIT (finite)."""
    return jax.nn.log_softmax(logits, axis=-1)


def entropy(logits):
    """[...]: sum over actions of -p log p; invalid actions have p = 0 exactly, so they
    add 0 (and 0 * finite stays finite, which 0 * -inf would not)."""
    logp = masked_log_probs(logits)
    return -jnp.sum(jnp.exp(logp) * logp, axis=-1)


# --- training -------------------------------------------------------------------------

class Transition(NamedTuple):
    """One step of N envs (leaves [N, ...]; stacked by the scan to [T, N, ...])."""
    obs: jax.Array          # [N, F]
    mask: jax.Array         # [N, A] bool
    action: jax.Array       # [N] int32
    log_prob: jax.Array     # [N]
    value: jax.Array        # [N]
    reward: jax.Array       # [N]
    done: jax.Array         # [N] bool (terminated or truncated)
    invalid: jax.Array      # [N] int32: the env replaced our action (must stay 0)
    info: dict


def make_train(config: dict):
    """`(train, network, view, env, params)`; `train(rng) -> {"runner_state", "metrics"}`
    is jittable end to end (`runner_state[0]`: the trained network parameters;
    `metrics`: leaves [NUM_UPDATES])."""
    env, params = make(config["ENV_NAME"])
    view = DispatcherView(env, schedule="sjf")
    wrapped = LogWrapper(view)        # gymnax's: episode returns in info
    num_envs, num_steps = config["NUM_ENVS"], config["NUM_STEPS"]
    batch_size = num_envs * num_steps
    minibatch_size = batch_size // config["NUM_MINIBATCHES"]
    network = ActorCritic(view.num_actions, view.task_size,
                          config["HIDDEN"])

    def lr_schedule(count):
        # linear decay over every minibatch step of the run
        total = config["NUM_UPDATES"] * config["UPDATE_EPOCHS"] * config["NUM_MINIBATCHES"]
        return config["LR"] * (1.0 - count / total)

    tx = optax.chain(optax.clip_by_global_norm(config["MAX_GRAD_NORM"]),
                     optax.adam(lr_schedule if config["ANNEAL_LR"] else config["LR"],
                                eps=1e-5))

    def train(rng):
        rng, k_init, k_reset = jax.random.split(rng, 3)
        net_params = network.init(k_init, jnp.zeros((view.obs_size,)),
                                  jnp.ones((view.num_actions,), bool))
        opt_state = tx.init(net_params)
        obs, env_state = jax.vmap(wrapped.reset, in_axes=(0, None))(
            jax.random.split(k_reset, num_envs), params)
        # the first mask; later ones come from info["action_mask"] (the returned state's)
        mask = jax.vmap(view.action_mask)(env_state.env_state)

        def env_step(carry, _):
            net_params, env_state, obs, mask, rng = carry
            rng, k_act, k_step = jax.random.split(rng, 3)
            logits, value = network.apply(net_params, obs, mask)
            action = jax.random.categorical(k_act, logits).astype(jnp.int32)   # [N]
            log_prob = jnp.take_along_axis(masked_log_probs(logits), action[:, None],
                                           axis=-1)[:, 0]
            next_obs, env_state, reward, terminated, truncated, info = jax.vmap(
                wrapped.step, in_axes=(0, 0, 0, None))(
                    jax.random.split(k_step, num_envs), env_state, action, params)
            # Truncation (the env's step cap) is rare here; as PureJaxRL does, it is
            # treated as an end (no bootstrap from info["final_observation"]).
            done = terminated | truncated
            step = Transition(obs, mask, action, log_prob, value,
                              reward * config["REWARD_SCALE"], done,
                              info["invalid_dispatch"],
                              {"returned_episode": info["returned_episode"],
                               "returned_episode_returns": info["returned_episode_returns"]})
            return (net_params, env_state, next_obs, info["action_mask"], rng), step

        def gae(traj, last_value):
            """Advantages and returns [T, N] (generalised advantage estimation)."""
            def back(carry, t):
                next_adv, next_value = carry
                not_done = 1.0 - t.done.astype(jnp.float32)
                delta = t.reward + config["GAMMA"] * next_value * not_done - t.value
                adv = delta + config["GAMMA"] * config["GAE_LAMBDA"] * not_done * next_adv
                return (adv, t.value), adv
            _, adv = jax.lax.scan(back, (jnp.zeros_like(last_value), last_value), traj,
                                  reverse=True)
            return adv, adv + traj.value

        def loss_fn(net_params, batch, adv, targets):
            logits, value = network.apply(net_params, batch.obs, batch.mask)
            log_prob = jnp.take_along_axis(masked_log_probs(logits), batch.action[:, None],
                                           axis=-1)[:, 0]
            # clipped value loss
            clipped = batch.value + jnp.clip(value - batch.value, -config["CLIP_EPS"],
                                             config["CLIP_EPS"])
            value_loss = 0.5 * jnp.maximum((value - targets) ** 2,
                                           (clipped - targets) ** 2).mean()
            # clipped surrogate objective
            ratio = jnp.exp(log_prob - batch.log_prob)
            adv = (adv - adv.mean()) / (adv.std() + 1e-8)
            actor_loss = -jnp.minimum(
                ratio * adv,
                jnp.clip(ratio, 1 - config["CLIP_EPS"], 1 + config["CLIP_EPS"]) * adv).mean()
            ent = entropy(logits).mean()
            total = actor_loss + config["VF_COEF"] * value_loss - config["ENT_COEF"] * ent
            return total, (value_loss, actor_loss, ent)

        def update(carry, _):
            net_params, opt_state, env_state, obs, mask, rng = carry
            (net_params, env_state, obs, mask, rng), traj = jax.lax.scan(
                env_step, (net_params, env_state, obs, mask, rng), None, num_steps)
            _, last_value = network.apply(net_params, obs, mask)
            advantages, targets = gae(traj, last_value)

            def epoch(carry, _):
                net_params, opt_state, rng = carry
                rng, k_perm = jax.random.split(rng)
                perm = jax.random.permutation(k_perm, batch_size)
                flat = jax.tree.map(lambda x: x.reshape((batch_size,) + x.shape[2:]),
                                    (traj, advantages, targets))
                minibatches = jax.tree.map(
                    lambda x: x[perm].reshape((config["NUM_MINIBATCHES"], minibatch_size)
                                              + x.shape[1:]), flat)

                def minibatch(carry, mb):
                    net_params, opt_state = carry
                    batch, adv, tgt = mb
                    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(
                        net_params, batch, adv, tgt)
                    updates, opt_state = tx.update(grads, opt_state, net_params)
                    return (optax.apply_updates(net_params, updates), opt_state), (loss, *aux)

                (net_params, opt_state), losses = jax.lax.scan(
                    minibatch, (net_params, opt_state), minibatches)
                return (net_params, opt_state, rng), losses

            (net_params, opt_state, rng), losses = jax.lax.scan(
                epoch, (net_params, opt_state, rng), None, config["UPDATE_EPOCHS"])

            ended = traj.info["returned_episode"]
            metrics = {
                "episode_return": jnp.sum(traj.info["returned_episode_returns"] * ended)
                / jnp.maximum(jnp.sum(ended), 1),
                "episodes": jnp.sum(ended),
                "return_sum": jnp.sum(traj.info["returned_episode_returns"] * ended),
                "invalid_actions": jnp.sum(traj.invalid),
                # decisions where the mask excluded some server: where masking matters
                "masked_steps": jnp.sum(jnp.any(~traj.mask, axis=-1)),
                "loss": losses[0].mean(), "value_loss": losses[1].mean(),
                "entropy": losses[3].mean(),
            }
            if config.get("PRINT_EVERY"):
                jax.debug.callback(_print_progress, metrics, config["PRINT_EVERY"],
                                   ordered=True)
            return (net_params, opt_state, env_state, obs, mask, rng), metrics

        rng, k_run = jax.random.split(rng)
        runner_state, metrics = jax.lax.scan(
            update, (net_params, opt_state, env_state, obs, mask, k_run), None,
            config["NUM_UPDATES"])
        return {"runner_state": runner_state, "metrics": metrics}

    return train, network, view, env, params


_progress = {"update": 0}


def _print_progress(metrics, every):
    """Host-side: print one line every `every` updates (called once per update)."""
    _progress["update"] += 1
    u = _progress["update"]
    if u % int(every) == 0 or u == 1:
        print(f"update {u:5d}  episode return {float(metrics['episode_return']):8.3f}  "
              f"episodes {int(metrics['episodes']):4d}  entropy {float(metrics['entropy']):.3f}"
              f"  value loss {float(metrics['value_loss']):.4f}  "
              f"invalid {int(metrics['invalid_actions'])}", flush=True)


# --- evaluation -----------------------------------------------------------------------

def greedy_policy(network, net_params, view, params):
    """The trained dispatcher as a joint policy `(key, state) -> Action` for
    `damdjax.evaluation.play_named`, which plays the env epoch by epoch
    (`DispatcherView.as_policy`: the argmax over the valid servers, read only where a
    dispatch is needed; the picks the view's SJF, as in training)."""
    def dispatch(key, obs, mask):
        logits, _ = network.apply(net_params, obs, mask)
        return jnp.argmax(logits)

    return view.as_policy(dispatch, params)


def evaluate(policy, env, params, seed, episodes, heuristics=HEURISTICS):
    """Paired comparison on held-out instances: the summary with `PPO - other` rows."""
    inst_keys, play_keys = held_out_keys(seed, episodes)
    instances = generate_held_out(env.config, params, inst_keys)
    policies = {"PPO": policy, **{name: pair_from_name(name) for name in heuristics}}
    per = play_named(policies, params, instances, play_keys, env.config.queue_capacity)
    return paired_summary(per, reference="PPO")


# --- command line ---------------------------------------------------------------------

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--env", default="Edge-tasks25-v0", help="registry name (damdjax.registry)")
    p.add_argument("--num-envs", type=int, default=16)
    p.add_argument("--num-steps", type=int, default=128, help="steps per env per update")
    p.add_argument("--num-updates", type=int, default=200)
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
    p.add_argument("--print-every", type=int, default=20, help="updates between progress lines")
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
        # the per-decision reward is about -0.7 (time in system / tau): order one already
        "REWARD_SCALE": 1.0, "PRINT_EVERY": args.print_every,
    }
    if (args.num_envs * args.num_steps) % args.num_minibatches:
        raise SystemExit("--num-envs * --num-steps must be a multiple of --num-minibatches")

    start = time.time()
    train, network, view, env, params = make_train(config)
    out = jax.block_until_ready(jax.jit(train)(jax.random.PRNGKey(args.seed)))
    train_s = time.time() - start
    metrics = jax.tree.map(np.asarray, out["metrics"])
    net_params = out["runner_state"][0]
    invalid = int(metrics["invalid_actions"].sum())
    steps = args.num_updates * args.num_envs * args.num_steps
    print(f"trained {steps} dispatch decisions in {train_s:.1f} s (compile included); "
          f"invalid actions sampled: {invalid}")

    start = time.time()
    summary = evaluate(greedy_policy(network, net_params, view, params), env, params,
                       args.seed, args.episodes, heuristics)
    eval_s = time.time() - start
    print(format_paired(summary, title=f"{args.env}: greedy PPO vs heuristics "
                                       f"({args.episodes} held-out episodes, {eval_s:.1f} s)"))

    if args.out:
        tail = max(1, args.num_updates // 10)      # the first and last tenth of training

        def mean_return(sl):   # per episode, over the updates in the slice
            return float(metrics["return_sum"][sl].sum()
                         / max(1, metrics["episodes"][sl].sum()))
        result = {
            "env": args.env, "config": config, "seed": args.seed, "heuristics": heuristics,
            "train_seconds": train_s, "eval_seconds": eval_s, "decisions": steps,
            "invalid_actions": invalid,
            "masked_steps": int(metrics["masked_steps"].sum()),
            "first_episode_return": mean_return(slice(0, tail)),
            "final_episode_return": mean_return(slice(-tail, None)),
            "evaluation": summary,
        }
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
