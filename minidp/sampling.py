"""Sampling a trained model: DDIM chains from a config, the model's conditioned prediction, guidance.

What minidp/evaluate.py (metrics, baselines, figures) and sample.py run: for each validation batch, M ensemble
members x DDIM(N steps) in one batch, in the codec's latents; the task object decodes and merges them. The model's
inputs come from tasks.model_inputs, the function training uses too. The noise comes from a CPU generator, so
results do not depend on the device.

Referring segmentation samples with InstructPix2Pix two-scale guidance (REFERENCE.md §1): three predictions per
step, e(0,0), e(I,0), e(I,D), batched as one forward of 3B; the null image is all zeros, the null text all padding.
ADDP's correctional guidance (its Eqn. 5) adds a fourth prediction e(I,D-) (a forward of 4B) for a correctional
prompt D-: a user's, or with "auto" each of up to k = 3 prompts naming the scene's other visible objects (the
world's stand-in for the paper's GPT-4o guesses of confusing objects), then a pixel-wise strict majority over the k
masks. Every chain of a batch starts from the same noise, so the uncorrected run is the same run without D-.

Letters: M members, B / b batch, C channels, H, W image size, k correctional prompts, L tokens.
"""

import torch

from minidp import ddim, schedules, tasks


def model_fn_for(model, cond, y, task, tokens=None, guidance=None, neg_tokens=None):
    """f(x_t, t) -> prediction for DDIM: prepends the condition latents, keeps the first C output channels.

    guidance = (s_I, s_D) turns on two-scale guidance over the image (cond[0]) and the text (tokens); with
    neg_tokens (B, L), a correctional prompt D-, guidance = (w_I, w_D-, w_D) is ADDP's correctional guidance."""
    def fn(x_t, t):
        C = x_t.shape[1]
        if guidance is None:
            text = {} if tokens is None else {"tokens": tokens}
            return model(torch.cat(cond + [x_t], dim=1), t, y, task=task, **text)[:, :C]
        blank = [torch.zeros_like(cond[0])] + cond[1:]  # the null image (InstructPix2Pix: zero latents)
        null = torch.zeros_like(tokens)
        texts = [null, null, tokens] if neg_tokens is None else [null, null, neg_tokens, tokens]
        x_in = torch.cat([torch.cat(blank + [x_t], 1)] + [torch.cat(cond + [x_t], 1)] * (len(texts) - 1))
        n = len(texts)
        out = model(x_in, t.repeat(n), y.repeat(n), task=task.repeat(n), tokens=torch.cat(texts))
        preds = out[:, :C].chunk(n)  # (B, C, H, W) each, in the order of texts
        if neg_tokens is None:
            return ddim.two_scale_combine(*preds, *guidance)
        return ddim.correctional_combine(*preds, *guidance)

    return fn


def noise_kind(cfg):
    """gaussian or zeros: sample.noise, with auto resolved by the run's objective (zeros for an e2e run, which was
    trained on zeros: E2E-FT's deterministic one-step prediction)."""
    if cfg.sample.noise != "auto":
        return cfg.sample.noise
    return "zeros" if cfg.train.objective == "e2e" else "gaussian"


@torch.no_grad()
def generate(model_fn, cfg, shape, generator, device, steps=None, spacing=None, return_intermediates=False):
    """DDIM from fresh noise of `shape` (drawn from `generator` on the CPU, so results do not depend on the
    device), or from zeros (noise_kind); steps / spacing default to the config's sample section, the schedule is
    sample.schedule's (default: the training one)."""
    s = cfg.sample
    if noise_kind(cfg) == "zeros":
        x_T = torch.zeros(shape, device=device)
    else:
        x_T = torch.randn(shape, generator=generator).to(device)
    clip = s.clip_x0 if cfg.data.codec == "pixel" else 0  # SD latents are unbounded (Marigold does not clip)
    return ddim.ddim_sample(model_fn, x_T, schedules.NoiseSchedule.from_config(cfg.diffusion, s.schedule),
                            steps=steps or s.steps, prediction=cfg.diffusion.prediction, spacing=spacing or s.spacing,
                            eta=s.eta, clip_x0=clip or None, return_intermediates=return_intermediates)


def conditioned_fn(model, cfg, k, batch, repeat=1, neg_tokens=None):
    """The model_fn for a batch (in latents) of the run's task k, each sample repeated `repeat` times
    (member-major); neg_tokens (b, L): a correctional prompt per sample (referring)."""
    rep = {"cond": [c.repeat(repeat, 1, 1, 1) for c in batch["cond"]]}
    if "tokens" in batch:
        rep["tokens"] = batch["tokens"].repeat(repeat, 1)
    n, device = len(rep["cond"][0]), rep["cond"][0].device
    cond, y, task, text = tasks.model_inputs(model, rep, torch.full((n,), k, dtype=torch.long, device=device))
    tokens, s = text.get("tokens"), cfg.sample  # no tokens: the null text (adds 0)
    guidance = (s.image_guidance, s.text_guidance) if tokens is not None else None
    if neg_tokens is not None:
        neg_tokens = neg_tokens.to(device).repeat(repeat, 1)
        guidance = (s.image_guidance, s.correctional_guidance, s.text_guidance)
    return model_fn_for(model, cond, y, task, tokens, guidance, neg_tokens)


def correctional_prompts(cfg, scenes, tokens):
    """The correctional prompts D- of validation scenes (rendered: tokens and ref_masks) whose expressions are
    tokens (b, L): (k, b, L) token ids and (k, b) bool, whether sample i has a j-th prompt. A user's
    sample.correctional is one prompt for every sample; "auto" names up to k of the scene's other visible objects,
    in slot order."""
    s = cfg.sample
    if s.correctional != "auto":
        return tasks.tokenize([s.correctional]).expand(1, len(tokens), -1), torch.ones(1, len(tokens), dtype=torch.bool)
    k, (b, S, L) = s.correctional_prompts, scenes["tokens"].shape
    visible = scenes["ref_masks"].flatten(2).any(-1) & (torch.arange(S)[None] < scenes["num_objects"][:, None])
    other = visible & (scenes["tokens"] != tokens[:, None]).any(-1)  # (b, S): a visible object it does not name
    rank = other.long().cumsum(dim=1) - 1  # (b, S) the slot's place among the sample's other objects
    prompts = torch.zeros(k, b, L, dtype=torch.long)
    valid = torch.zeros(k, b, dtype=torch.bool)
    for j in range(k):
        hit = other & (rank == j)  # (b, S): at most one slot per sample
        valid[j] = hit.any(dim=1)
        prompts[j] = scenes["tokens"][torch.arange(b), hit.float().argmax(dim=1)]
    return prompts, valid


def corrected_batch(model, cfg, k, task, batch, scenes, gen, device, codec):
    """The prediction of one referring batch (in latents) of the run's task k, as the task's merge gives it:
    the two-scale chain, then with sample.correctional one correctional chain per prompt (scenes: the batch's
    rendered scenes), every chain from the same noise, merged by the task's rule and then by a strict majority
    ("mask"; "plain": the two-scale chain's mask)."""
    M, b = cfg.sample.ensemble, len(batch["target"])
    shape, state, query = (M * b, *batch["target"].shape[1:]), gen.get_state(), batch["tokens"].cpu()
    prompts, valid = correctional_prompts(cfg, scenes, query) if cfg.sample.correctional else ([], [])
    # samples without a j-th prompt run with D- = D and do not vote; a prompt no sample has is not run
    preds = []
    for neg in [None] + [torch.where(v[:, None], p, query) for p, v in zip(prompts, valid) if v.any()]:
        gen.set_state(state)  # the same x_T for every chain
        x0 = codec.decode(generate(conditioned_fn(model, cfg, k, batch, M, neg), cfg, shape, gen, device).float())
        preds.append(task.merge(x0.float().view(M, b, *x0.shape[1:]).cpu(), cfg))
    if not cfg.sample.correctional:
        return preds[0]
    masks = torch.stack([pred["mask"] for pred in preds])  # (1 + k, b, H, W): the plain chain's, then each prompt's
    return {"painting": preds[0]["painting"], "mask": majority(masks[1:], valid[valid.any(dim=1)], masks[0]),
            "plain": masks[0], "corrected": True}


def majority(masks, valid, fallback):
    """Pixel-wise strict majority of the valid ones among masks (k, b, H, W) (valid (k, b) bool): more than half
    of a sample's valid masks; a sample with none keeps fallback (b, H, W)."""
    votes = (masks & valid[:, :, None, None]).sum(dim=0)  # (b, H, W)
    count = valid.sum(dim=0)[:, None, None]  # (b, 1, 1)
    return torch.where(count > 0, 2 * votes > count, fallback)
