"""Part D: DCGAN and conditional DCGAN on MNIST."""
from __future__ import annotations

from .base import Answer, Evidence, Figure, Unanswerable, pct, question


def _last(m: dict, key: str) -> float:
    return m["last_epoch_mean"][key]


@question("D1", "Meaning of the D and G objectives; what if only one is used?", ("gan", "gan_only_d", "gan_only_g"))
def d1(ev: Evidence, a: Answer) -> None:
    both, only_d, only_g = (ev.metrics(r) for r in ("gan", "gan_only_d", "gan_only_g"))
    a.explain("D is trained to output 1 on real images and 0 on generated ones (maximise log D(x) + log(1 - D(G(z))))"
          "; G is trained to make D output 1 on its images.")
    a.say(f"Training only D: D wins at once (D(G(z)) = {_last(only_d, 'd_g_z'):.3f}, D(x) = {_last(only_d, 'd_x'):.3f}) "
          f"and G stays random: FID {only_d['fid']:.1f}.", only_d_fid=only_d["fid"], only_d_dgz=_last(only_d, "d_g_z"))
    a.say(f"Training only G against a fixed random D: G finds whatever that D scores high (D(G(z)) = "
          f"{_last(only_g, 'd_g_z'):.3f}), which has nothing to do with digits: FID {only_g['fid']:.1f}, against "
          f"{both['fid']:.1f} when both learn.", only_g_fid=only_g["fid"], both_fid=both["fid"])
    a.table("Who learns", ["training", "D(x)", "D(G(z))", "FID"],
            [[n, _last(m, "d_x"), _last(m, "d_g_z"), m["fid"]] for n, m in
             (("both", both), ("only D", only_d), ("only G", only_g))])
    for r in ("gan_only_d", "gan_only_g"):
        a.show(f"samples, {r.replace('gan_', '').replace('_', ' ')}", ev.figure(r, "samples.png"))


@question("D2", "What should G turn P(z) into?", ("gan",))
def d2(ev: Evidence, a: Answer) -> None:
    m = ev.metrics("gan")
    hist = m.get("class_histogram")
    if not hist:
        raise Unanswerable("the GAN run has no class histogram of its samples")
    a.say(f"Into the data distribution: G(z) for z ~ N(0, I) should be distributed like MNIST digits. Measured "
          f"on the MNIST-classifier features: FID {m['fid']:.1f} against a real-vs-real floor of "
          f"{m['fid_real_baseline']:.1f} (KID {m['kid']:.4f} vs {m['kid_real_baseline']:.4f}).",
          fid=m["fid"], fid_floor=m["fid_real_baseline"], kid=m["kid"])
    if hist["max_share"] > 0.5:  # one class takes most samples: beyond "some digits missing"
        top = max(range(len(hist["counts"])), key=lambda d: hist["counts"][d])
        coverage = (f"draws mostly what the classifier calls the digit {top} (mode collapse, or samples not yet digit-like "
                    f"enough for the classifier to tell apart)")
    elif hist["min_share"] <= 0.03:
        coverage = "under-produces some digits (partial mode collapse)"
    else:
        coverage = "covers every digit"
    a.say(f"Class histogram of the samples: the most frequent digit takes {pct(hist['max_share'])}, the rarest "
          f"{pct(hist['min_share'])} (uniform: 10%); KL to uniform {hist['kl_to_uniform']:.3f}, so G {coverage}.",
          max_share=hist["max_share"], min_share=hist["min_share"], kl_to_uniform=hist["kl_to_uniform"])
    a.table("Samples per predicted digit", [str(i) for i in range(10)], [hist["counts"]])


@question("D3", "The \"true\" generator loss; why the non-saturating one?", ("gan", "gan_minimax"))
def d3(ev: Evidence, a: Answer) -> None:
    ns, mm = ev.metrics("gan"), ev.metrics("gan_minimax")
    g_ns, g_mm = ns.get("g_grad_norm_first_100_mean"), mm.get("g_grad_norm_first_100_mean")
    if g_ns is None or g_mm is None:
        raise Unanswerable("the GAN runs did not record G's gradient norm")
    a.explain("The minimax game's G loss is log(1 - D(G(z))); early on D rejects G's images (D(G(z)) near 0), "
          "where that loss is flat, so G gets almost no gradient; -log D(G(z)) has the same fixed point but a "
          "steep slope there.")
    ratio = g_ns / max(g_mm, 1e-12)
    a.say(f"Measured over the first 100 batches: G's gradient norm averages {g_ns:.3g} with the non-saturating "
          f"loss and {g_mm:.3g} with the minimax one ({ratio:.1f}x); after the same budget FID is {ns['fid']:.1f} vs "
          f"{mm['fid']:.1f}.", g_grad_ns=g_ns, g_grad_minimax=g_mm, fid_ns=ns["fid"], fid_minimax=mm["fid"])


@question("D4", "Training with the defaults: progress, losses, stability, diversity.", ("gan",))
def d4(ev: Evidence, a: Answer) -> None:
    m = ev.metrics("gan")
    curve = m.get("fid_curve") or []
    a.say(f"{m['batches']:,} batches in {m['train_seconds']:.0f} s; at the end D(x) = {_last(m, 'd_x'):.2f} and "
          f"D(G(z)) = {_last(m, 'd_g_z'):.2f}, D loss {_last(m, 'loss_d'):.2f}, G loss {_last(m, 'loss_g'):.2f} "
          f"(last-epoch means); {m['nonfinite_losses']} non-finite losses.", batches=m["batches"],
          d_x=_last(m, "d_x"), d_g_z=_last(m, "d_g_z"), nonfinite=m["nonfinite_losses"])
    if curve:
        a.say(f"FID falls from {curve[0]['fid']:.1f} (batch {curve[0]['batch']}) to {curve[-1]['fid']:.1f} "
              f"(batch {curve[-1]['batch']}).", fid_first=curve[0]["fid"], fid_last=curve[-1]["fid"])
        a.table("FID along training", ["batch", "FID"], [[p["batch"], p["fid"]] for p in curve])
    for name, title in (("curves.png", "losses, D(x), D(G(z))"), ("samples.png", "samples")):
        a.show(title, ev.figure("gan", name))
    a.figures += [Figure("grid over time", f) for f in ev.figures("gan", "grids/epoch_*.png")[-1:]]


@question("D5", "The suggested experiments (ngf/ndf, init, lr, beta1, nz, epochs).", ("gan_compare",))
def d5(ev: Evidence, a: Answer) -> None:
    m = ev.metrics("gan_compare")
    rows = m["variants"]
    best, worst = min(rows, key=lambda r: r["fid"]), max(rows, key=lambda r: r["fid"])
    a.say(f"{len(rows)} variants after the same budget: best FID {best['fid']:.1f} ({best['variant']}), worst "
          f"{worst['fid']:.1f} ({worst['variant']}).", best_fid=best["fid"], worst_fid=worst["fid"])
    a.table("Variants", ["variant", "FID", "KID", "non-finite losses"],
            [[r["variant"], r["fid"], r["kid"], r.get("nonfinite_losses")] for r in rows])


def widths(ev: Evidence, role: str) -> str:
    """The run's network widths as the report states them (profiles may narrow the SPEC's 32)."""
    cfg = ev.config(role)
    return f"ngf = ndf = {cfg['ngf']}" if cfg["ngf"] == cfg["ndf"] else f"ngf {cfg['ngf']}, ndf {cfg['ndf']}"


@question("D6", "The conditional DCGAN: comment.", ("gan_cdcgan", "gan"))
def d6(ev: Evidence, a: Answer) -> None:
    c, u = ev.metrics("gan_cdcgan"), ev.metrics("gan")
    a.say(f"Given the digit as a one-hot y (to G and to D), the cDCGAN ({widths(ev, 'gan_cdcgan')}) draws the "
          f"requested digit {pct(c['conditional_accuracy'])} of the time (as judged by the MNIST classifier), with FID "
          f"{c['fid']:.1f} vs {u['fid']:.1f} for the DCGAN ({widths(ev, 'gan')}) after the same budget.",
          conditional_accuracy=c["conditional_accuracy"], fid_cdcgan=c["fid"], fid_dcgan=u["fid"])
    a.explain("Within a row (fixed y) the columns share z: z then encodes the style (slant, thickness, width) rather "
          "than the class.")
    a.show("rows = digits 0-9, columns = z", ev.figure("gan_cdcgan", "samples.png"))


@question("D7", "Can y be removed from D's input?", ("gan_cdcgan", "gan_cdcgan_no_y"))
def d7(ev: Evidence, a: Answer) -> None:
    c, n = ev.metrics("gan_cdcgan"), ev.metrics("gan_cdcgan_no_y")
    near_chance = n["conditional_accuracy"] < 0.2
    a.say(f"With D blind to y, nothing makes G's image match the requested digit: conditional accuracy falls from "
          f"{pct(c['conditional_accuracy'])} to {pct(n['conditional_accuracy'])}"
          + (" (chance is 10%)" if near_chance else "") + f"; FID {n['fid']:.1f} vs {c['fid']:.1f}: G still draws "
          "digits, just not the asked ones.", with_y=c["conditional_accuracy"], without_y=n["conditional_accuracy"],
          fid_without_y=n["fid"])


@question("D8", "Was it easier than the unconditional case, and why?", ("gan", "gan_cdcgan"))
def d8(ev: Evidence, a: Answer) -> None:
    u, c = ev.metrics("gan"), ev.metrics("gan_cdcgan")
    cu, cc = u.get("fid_curve"), c.get("fid_curve")
    if not cu or not cc:
        raise Unanswerable("the GAN runs have no FID curve (they need --fid-every)")
    threshold = 2 * max(u["fid_real_baseline"], 1.0) + min(cu[-1]["fid"], cc[-1]["fid"])

    def reach(curve):
        return next((p["batch"] for p in curve if p["fid"] <= threshold), None)
    bu, bc = reach(cu), reach(cc)
    a.say(f"FID along training (same budget): DCGAN ({widths(ev, 'gan')}) {cu[0]['fid']:.1f} -> {cu[-1]['fid']:.1f}, "
          f"cDCGAN ({widths(ev, 'gan_cdcgan')}) {cc[0]['fid']:.1f} -> {cc[-1]['fid']:.1f}.",
          dcgan_final=cu[-1]["fid"], cdcgan_final=cc[-1]["fid"])
    if bu is not None and bc is not None:
        easier = "the cDCGAN gets there first" if bc < bu else "the DCGAN gets there first" if bu < bc else "both together"
        a.say(f"To reach FID {threshold:.1f}: DCGAN {bu} batches, cDCGAN {bc}: {easier}.", threshold=threshold,
              dcgan_batches=bu, cdcgan_batches=bc)
    if bu is not None and bc is not None and bc < bu:
        a.explain("Knowing y, G no longer has to learn where the classes lie in z, and D can check each class "
                  "separately: the label splits one hard problem into ten easier ones.")
    a.table("FID vs batches", ["batch", "DCGAN", "cDCGAN"],
            [[p["batch"], p["fid"], q["fid"]] for p, q in zip(cu, cc)])
