"""Part C: unsupervised domain adaptation MNIST -> MNIST-M (DANN)."""
from __future__ import annotations

import statistics

from ...reporting.tables import mean_std
from .base import Answer, Evidence, question


def target(ev: Evidence, role: str, key: str = "target_accuracy") -> tuple[float, float | None, str]:
    """(mean, std or None, text) of a metric over the role's seeds."""
    values = [m[key] for m in ev.all_metrics(role)]
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else None
    return mean, std, mean_std(mean, std, len(values))


def spread(ev: Evidence, role: str, name: str, std: float | None) -> dict[str, float]:
    """The numbers beside a mean over seeds (``std`` from :func:`target`): ``{name}_std`` and
    ``{name}_seeds``; none for one seed."""
    return {} if std is None else {f"{name}_std": std, f"{name}_seeds": ev.seeds(role)}


def first_seed(ev: Evidence, role: str) -> str:
    """' (seed 0)' when the role ran with several seeds and a sentence or table reads only the first."""
    return " (seed 0)" if ev.seeds(role) > 1 else ""


@question("C1", "The three parts without the GRL: what happens?", ("adapt_nogrl", "adapt_source_only", "adapt_dann"))
def c1(ev: Evidence, a: Answer) -> None:
    dom, _, dom_t = target(ev, "adapt_nogrl", "domain_accuracy")
    nogrl, _, nogrl_t = target(ev, "adapt_nogrl")
    so, so_std, so_t = target(ev, "adapt_source_only")
    dann, dann_std, dann_t = target(ev, "adapt_dann")
    a.say(f"Without the gradient reversal the feature extractor helps the domain classifier instead of fooling it: "
          f"the domain classifier reaches {dom_t} test accuracy"
          + (" (it separates the domains perfectly)." if dom >= 0.995 else
             " (it separates the domains almost perfectly)." if dom > 0.95 else "."), nogrl_domain_accuracy=dom)
    verdict = ("no better than" if nogrl <= so + 0.01 else "above")
    conclusion = (": the reversal is what aligns the domains" if dann > max(nogrl, so) + 0.01 else
                  ", so in this run the reversal did not beat both")
    a.say(f"Target accuracy without the GRL is {nogrl_t}, {verdict} source-only training ({so_t}), while DANN "
          f"reaches {dann_t}{conclusion}.", nogrl_target=nogrl, source_only_target=so, dann_target=dann,
          **spread(ev, "adapt_source_only", "source_only_target", so_std),
          **spread(ev, "adapt_dann", "dann_target", dann_std))
    a.table("Target (MNIST-M) accuracy", ["training", "target accuracy", "domain classifier accuracy"],
            [[r, target(ev, r)[2], target(ev, r, "domain_accuracy")[2]]
             for r in ("adapt_source_only", "adapt_dann", "adapt_nogrl")])


@question("C2", "Why can source accuracy drop?", ("adapt_source_only", "adapt_dann"))
def c2(ev: Evidence, a: Answer) -> None:
    so, dann = ev.metrics("adapt_source_only"), ev.metrics("adapt_dann")
    so_mean, _, so_t = target(ev, "adapt_source_only", "source_accuracy")
    dann_mean, _, dann_t = target(ev, "adapt_dann", "source_accuracy")
    drop = so_mean - dann_mean
    worst = min(h["source_accuracy"] for m in ev.all_metrics("adapt_dann") for h in m["history"])
    wording = (f"DANN ends {100 * drop:.1f} points below source-only on the source test set" if drop > 0 else
               f"DANN ends {100 * -drop:.1f} points above source-only on the source test set")
    a.say(f"{wording} ({dann_t} vs {so_t}); its lowest source accuracy over the epochs"
          f"{' of any seed' if first_seed(ev, 'adapt_dann') else ''} is {worst:.4f}.", source_drop=drop,
          dann_min_source=worst, dann_source=dann_mean, source_only_source=so_mean)
    a.explain("The features must now also be domain-invariant: the adversarial term removes information that helped "
          "classify MNIST (e.g. the exact stroke intensity), and the min-max game shakes the features while the "
          "label classifier keeps adapting to them.")
    a.table(f"Source (MNIST) test accuracy per epoch{first_seed(ev, 'adapt_dann')}", ["epoch", "source-only", "DANN"],
            [[i + 1, s["source_accuracy"] if (s := (so["history"][i] if i < len(so["history"]) else None)) else None,
              dann["history"][i]["source_accuracy"]] for i in range(len(dann["history"]))])
    a.show("DANN curves", ev.figure("adapt_dann", "curves.png"))


LAMBDA_ROLES = ("adapt_lambda_0.1", "adapt_lambda_0.3", "adapt_lambda_1", "adapt_dann", "adapt_course")


@question("C3", "Influence of the reversal factor (lambda) and its schedule.", LAMBDA_ROLES)
def c3(ev: Evidence, a: Answer) -> None:
    rows = []
    for role in LAMBDA_ROLES:
        m = ev.metrics(role)
        hp = m["hparams"]
        accs = [h["target_accuracy"] for h in m["history"]]
        swing = max(accs[len(accs) // 2:]) - min(accs[len(accs) // 2:])
        name = (f"constant {hp['lambda_max']:g}" if hp["lambda_schedule"] == "constant" else
                f"{hp['lambda_schedule']} schedule (gamma {hp['gamma'] if hp['gamma'] is not None else (10 if hp['lambda_schedule'] == 'paper' else 2):g})")
        mean, _, text = target(ev, role)
        rows.append([name, text, mean, swing])
    best, worst = max(rows, key=lambda r: r[2]), min(rows, key=lambda r: r[2])
    a.say(f"Target accuracy ranges from {worst[2]:.3f} ({worst[0]}) to {best[2]:.3f} ({best[0]}).",
          best_target=best[2], worst_target=worst[2])
    stable = min(rows, key=lambda r: r[3])
    a.say(f"The most stable setting over the second half of training is {stable[0]} (target accuracy swings by "
          f"{stable[3]:.3f}); a large lambda from the start lets the domain term dominate before the features are "
          f"any good, which is why the schedules ramp lambda up from 0.", most_stable_swing=stable[3])
    a.table("Lambda settings", ["lambda", "target accuracy", "mean", "swing (2nd half)"], rows)


@question("C4", "Pseudo-labelling: what it is, what it adds.", ("adapt_pl", "adapt_dann"))
def c4(ev: Evidence, a: Answer) -> None:
    pl = ev.metrics("adapt_pl")
    rounds = pl["pseudo_label_rounds"]
    pl_mean, pl_std, pl_t = target(ev, "adapt_pl")
    dann_mean, dann_std, dann_t = target(ev, "adapt_dann")
    a.say(f"Pseudo-labelling gives the target images the model is most confident about its own predicted labels "
          f"and trains on them as if labelled, in {len(rounds)} rounds{first_seed(ev, 'adapt_pl')}: "
          f"{rounds[0]['count']:,} labels at "
          f"{rounds[0]['accuracy']:.3f} accuracy first, {rounds[-1]['count']:,} at {rounds[-1]['accuracy']:.3f} last.",
          first_round_count=rounds[0]["count"], first_round_accuracy=rounds[0]["accuracy"],
          last_round_count=rounds[-1]["count"], last_round_accuracy=rounds[-1]["accuracy"])
    gain = pl_mean - dann_mean
    a.say(f"Target accuracy {'rises' if gain > 0 else 'changes'} from {dann_t} (DANN) to {pl_t} with pseudo-labels "
          f"({100 * gain:+.1f} points).", dann_target=dann_mean, pl_target=pl_mean,
          **spread(ev, "adapt_dann", "dann_target", dann_std), **spread(ev, "adapt_pl", "pl_target", pl_std))
    a.table(f"Pseudo-label rounds{first_seed(ev, 'adapt_pl')}", ["round", "epoch", "count", "accuracy (read only for this table)"],
            [[r["round"], r["epoch"], r["count"], r["accuracy"]] for r in rounds])
    a.show("t-SNE of the features before/after", ev.figure("adapt_pl", "tsne.png"))
